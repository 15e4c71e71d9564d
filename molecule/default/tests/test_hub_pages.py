"""The hub pages end to end: through Apache, mod_auth_openidc and the real test provider.

A person's browser is the scripted one the other checks use (hubclient, kept open between
steps by hubpages): it logs in at the provider, presses the pages' buttons (plain forms with
their CSRF token, as without JavaScript) and follows their links. The hub container has no
Chromium; the forms-only pages need none, and tests/integration/test_hub_pages_browser.py
drives them with Chromium against the daemon and Traefik.

The test world (prepare.yml, wizard/): carol is in the admin group (servicehub_admin_group)
and in the group of the only app alice may not see, which is stopped on logout.
"""

import json
import re
import shlex
import time

import pytest
from hub_variables import VARIABLES, seen_user

APPS = VARIABLES["servicehub_apps"]
ADMIN_GROUP = VARIABLES["servicehub_admin_group"]
LOGOUT_PATH = VARIABLES["apache_oidc_logout_path"]
REDIRECT_PATH = VARIABLES["apache_oidc_redirect_path"]
HUB = VARIABLES["test_hub_url"]
IDP = VARIABLES["test_idp_issuer"]
HOME = "/_servicehub/"
ADMIN = "/_servicehub/admin"
# The provider's users of these checks and their groups claim (prepare.yml).
GROUPS = {"alice": ["lab"], "carol": ["lab", "staff", ADMIN_GROUP]}
# The app only some groups see, which logout stops: the test world has exactly one.
(PRIVATE,) = [name for name, app in APPS.items() if app.get("stop_on_logout")]
UNITS = ["servicehub", "apache2", "traefik"]


def email(user: str) -> str:
    return f"{user}@example.org"


def allowed(user: str) -> set[str]:
    """The apps whose allow rules let this user in (no rule: everyone who logs in)."""
    names = set()
    for name, app in APPS.items():
        rule = app.get("allow") or {}
        if not rule or email(user) in rule.get("users", []):
            names.add(name)
        elif set(rule.get("groups", [])) & set(GROUPS[user]):
            names.add(name)
    return names


def label(app: str) -> str:
    return APPS[app].get("title") or app


@pytest.fixture(autouse=True)
def journal_on_failure(host, request):
    yield
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        for unit in UNITS:
            print(host.run(f"journalctl -u {unit} -n 60 --no-pager").stdout)


@pytest.fixture(scope="module")
def pebble_root(host):
    host.run_test("curl -sk https://127.0.0.1:15000/roots/0 -o /tmp/pebble-root.pem")
    host.run_test("curl -sk https://127.0.0.1:15000/intermediates/0 >> /tmp/pebble-root.pem")
    return "/tmp/pebble-root.pem"


class Person:
    """One person at one browser (its cookies in a file on the hub host)."""

    def __init__(self, host, name: str, ca: str, jar: str) -> None:
        self.host, self.name, self.ca, self.jar = host, name, ca, jar
        host.run_test(f"rm -f {jar}")

    def do(self, *args: str, headers: tuple[str, ...] = ()) -> dict:
        argv = ["hubpages", "--jar", self.jar, "--ca", self.ca]
        for header in headers:
            argv += ["--header", header]
        cmd = self.host.run(shlex.join([*argv, *args]))
        assert cmd.rc == 0, cmd.stderr + cmd.stdout
        return json.loads(cmd.stdout)

    def login(self, path: str) -> dict:
        return self.do(
            "login", "--user", self.name, "--password", f"{self.name}-password", "--path", path
        )

    def api(self, path: str) -> tuple[int, dict]:
        result = self.do("get", path, "--json")
        try:
            return result["status"], json.loads(result["body"])
        except ValueError:
            return result["status"], {}


def running(host, app: str, user: str) -> list[str]:
    return host.run_test(
        f"docker ps -q --filter label=servicehub.app={app} "
        f"--filter label=servicehub.user={email(user)}"
    ).stdout.split()


def slug_of(host, container: str) -> str:
    return host.run_test(
        "docker inspect -f '{{ index .Config.Labels \"servicehub.slug\" }}' " + container
    ).stdout.strip()


def cards(page: str) -> dict[str, str]:
    """The home page's apps and their state, as its cards say."""
    return dict(re.findall(r'data-app="([^"]+)" data-state="([^"]+)"', page))


@pytest.fixture
def alice(host, pebble_root):
    person = Person(host, "alice", pebble_root, "/tmp/hubpages-alice.jar")
    home = person.login(HOME)
    assert home["status"] == 200, home["trail"]
    return person


@pytest.fixture
def carol(host, pebble_root):
    person = Person(host, "carol", pebble_root, "/tmp/hubpages-carol.jar")
    home = person.login(HOME)
    assert home["status"] == 200, home["trail"]
    return person


def seen_as(person: Person) -> str | None:
    """Who the example app at / says the person is."""
    answer = person.do("get", "/whoami")
    assert answer["status"] == 200, answer["trail"]
    return seen_user(json.loads(answer["body"]))


def ensure_stopped(person: Person, app: str) -> None:
    if running(person.host, app, person.name):
        person.do("click", HOME, "--button", f"Stop {label(app)}")
    assert running(person.host, app, person.name) == []


def test_home_lists_exactly_the_allowed_apps(host, alice, carol):
    assert allowed("alice") < allowed("carol") and PRIVATE not in allowed("alice")
    for person in (alice, carol):
        page = person.do("get", HOME)
        assert page["status"] == 200
        assert set(cards(page["body"])) == allowed(person.name)
        status, data = person.api("/_servicehub/api/apps")
        assert status == 200 and data["user"] == email(person.name)
        assert {a["app"] for a in data["apps"]} == allowed(person.name)
    # What alice may not open is not even named to her, and its URL starts nothing.
    page = alice.do("get", HOME)["body"]
    assert PRIVATE not in page and label(PRIVATE) not in page
    prefix = APPS[PRIVATE]["route"]["path_prefix"]
    assert alice.do("get", prefix)["status"] == 403
    assert running(host, PRIVATE, "alice") == []


def test_start_restart_and_stop_from_the_home_page(host, alice):
    ensure_stopped(alice, "whoami")
    assert cards(alice.do("get", HOME)["body"])["whoami"] == "not running"

    opened = alice.do("follow", HOME, "--link", f"Open {label('whoami')}")
    assert opened["status"] == 200 and opened["url"] == HUB + "/", opened["trail"]
    assert seen_as(alice) == email("alice")
    (first,) = running(host, "whoami", "alice")
    assert cards(alice.do("get", HOME)["body"])["whoami"] == "running"

    restarted = alice.do("click", HOME, "--button", f"Restart {label('whoami')}")
    assert restarted["status"] == 200 and restarted["url"] == HUB + "/", restarted["trail"]
    assert seen_as(alice) == email("alice")
    (second,) = running(host, "whoami", "alice")
    assert second != first
    assert host.run(f"docker inspect {first}").rc != 0  # the old one is gone, not only stopped

    stopped = alice.do("click", HOME, "--button", f"Stop {label('whoami')}")
    assert stopped["status"] == 200 and stopped["url"] == HUB + HOME, stopped["trail"]
    assert cards(stopped["body"])["whoami"] == "not running"
    assert running(host, "whoami", "alice") == []


def test_cross_site_post_without_the_token_is_refused(host, alice):
    assert alice.do("get", "/")["status"] == 200  # alice's whoami runs
    (container,) = running(host, "whoami", "alice")
    forged = ("Origin: https://evil.example", "Referer: https://evil.example/page")
    for path, fields in (
        ("/_servicehub/stop", ["--field", "app=whoami"]),
        ("/_servicehub/stop", ["--field", "app=whoami", "--field", "csrf=guess"]),
        ("/_servicehub/api/apps/stop?app=whoami", []),
        ("/_servicehub/restart", ["--field", "app=whoami"]),
        ("/_servicehub/logout", []),
    ):
        # The browser sends alice's cookies along (the worst case): only the token counts.
        answer = alice.do("post", path, *fields, headers=forged)
        assert answer["status"] == 403, (path, answer["trail"])
    assert running(host, "whoami", "alice") == [container]
    assert alice.do("get", HOME)["status"] == 200  # and she is still logged in


def test_non_admin_gets_403_on_the_admin_view_and_its_api(host, alice):
    assert ADMIN_GROUP not in GROUPS["alice"]
    assert alice.do("get", ADMIN)["status"] == 403
    assert alice.api("/_servicehub/api/sessions")[0] == 403
    assert alice.do("get", HOME)["body"].count(f'href="{ADMIN}"') == 0
    # Her own valid token does not make her an admin.
    assert alice.do("get", "/")["status"] == 200
    (container,) = running(host, "whoami", "alice")
    token = alice.api("/_servicehub/api/apps")[1]["csrf"]
    fields = ["--field", "app=whoami", "--field", f"slug={slug_of(host, container)}"]
    for path in ("/_servicehub/admin/stop", "/_servicehub/api/sessions/stop"):
        answer = alice.do("post", path, *fields, "--field", f"csrf={token}")
        assert answer["status"] == 403, (path, answer["trail"])
    assert running(host, "whoami", "alice") == [container]


def test_admin_sees_and_stops_another_users_session(host, alice, carol):
    assert alice.do("get", "/")["status"] == 200
    (container,) = running(host, "whoami", "alice")
    slug = slug_of(host, container)

    page = carol.do("get", ADMIN)
    assert page["status"] == 200, page["trail"]
    assert re.search(
        rf'<tr data-app="whoami" data-slug="{slug}" data-user="{re.escape(email("alice"))}"',
        page["body"],
    )
    status, data = carol.api("/_servicehub/api/sessions")
    assert status == 200
    mine = [s for s in data["sessions"] if s["slug"] == slug and s["app"] == "whoami"]
    assert mine and mine[0]["user"] == email("alice") and mine[0]["state"] == "running"

    since = host.run_test("date +%s").stdout.strip()
    stopped = carol.do("click", ADMIN, "--button", f"Stop whoami of {email('alice')}")
    assert stopped["status"] == 200, stopped["trail"]
    assert f'data-slug="{slug}"' not in stopped["body"]
    assert running(host, "whoami", "alice") == []

    entries = [
        json.loads(line)
        for line in host.run_test(
            f"journalctl -o json --since @{since} _SYSTEMD_UNIT=servicehub.service "
            f"SERVICEHUB_EVENT=admin-stop SERVICEHUB_SLUG={slug}"
        ).stdout.splitlines()
    ]
    assert entries, "no admin-stop event in the journal"
    assert entries[-1]["SERVICEHUB_ADMIN"] == email("carol")
    assert entries[-1]["SERVICEHUB_APP"] == "whoami"


def test_logout_stops_the_stop_on_logout_apps_and_ends_the_login(host, carol):
    prefix = APPS[PRIVATE]["route"]["path_prefix"]
    assert "stop_on_logout" not in APPS["whoami"]
    opened = carol.do("follow", HOME, "--link", f"Open {label(PRIVATE)}")
    assert opened["status"] == 200 and opened["url"].startswith(HUB + prefix), opened["trail"]
    assert carol.do("get", "/")["status"] == 200
    assert running(host, PRIVATE, "carol") and running(host, "whoami", "carol")
    carol.do("cookies", "/tmp/hubpages-carol.cookie")
    replay = (
        "curl -s -o /dev/null -w '%{http_code} %{redirect_url}' "
        f"--cacert {carol.ca} "
        f'-b "$(cat /tmp/hubpages-carol.cookie)" {HUB}/_servicehub/api/apps'
    )
    assert host.run_test(replay).stdout.startswith("200 ")  # control: the cookie works

    out = carol.do("click", HOME, "--button", "logout")
    redirects = out["redirects"]
    # The daemon sent the browser to the role's logout path, mod_auth_openidc ended the session
    # there and at the provider, which sent it back to the hub: a new login starts.
    assert redirects[0] == HUB + LOGOUT_PATH, out["trail"]
    assert any(r.startswith(f"{HUB}{REDIRECT_PATH}?logout=") for r in redirects), out["trail"]
    assert any(r.startswith(f"{IDP}/session/end") for r in redirects), out["trail"]
    assert out["url"].startswith(IDP) and "/interaction/" in out["url"], out["trail"]

    assert running(host, PRIVATE, "carol") == []  # stop_on_logout
    assert running(host, "whoami", "carol")  # the others keep running
    # The old session cookie is dead at the hub: the login is asked for again.
    code, _, location = host.run_test(replay).stdout.partition(" ")
    assert code in ("302", "401"), (code, location)  # 401: mod_auth_openidc's answer to scripts
    assert code == "401" or location.startswith(IDP), location
    deadline = time.monotonic() + 10
    while not host.run(
        f"journalctl -o cat _SYSTEMD_UNIT=servicehub.service SERVICEHUB_EVENT=logout "
        f"SERVICEHUB_USER={email('carol')}"
    ).stdout.strip():
        assert time.monotonic() < deadline, "no logout event in the journal"
        time.sleep(1)
