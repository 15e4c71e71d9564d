"""Invariant 1 and 2 at the daemon and Traefik: bad identity spawns nothing; nasty ids are safe."""

import re
import subprocess

import pytest

from tests.harness import SECRET_HEADER, USER_HEADER, raw_request, wait_for
from tests.unit.test_identity import NASTY_IDS

pytestmark = pytest.mark.integration

SAFE_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]*$")


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ([], 400),  # no user header at all
        ([(USER_HEADER, "alice"), (USER_HEADER, "bob")], 400),  # twice, different
        ([(USER_HEADER, "alice"), (USER_HEADER, "alice")], 400),  # twice, the same
        ([(USER_HEADER, b"")], 400),
        ([(USER_HEADER, b"al\x01ice")], 400),  # control character
        ([(USER_HEADER, b"\xff\xfe")], 400),  # not UTF-8
        ([(USER_HEADER, b"x" * 2000)], 400),
    ],
)
def test_bad_identity_is_refused_and_spawns_nothing(hub, headers, status):
    for port in (hub.web_port, hub.daemon_port):  # through Traefik, and straight to the daemon
        resp = raw_request(port, "/whoami", [(SECRET_HEADER, hub.secret), *headers])
        assert resp.status == status, resp.text
    assert hub.containers() == []


@pytest.mark.parametrize("secret", [None, "wrong-secret-wrong-secret", "twice"])
def test_requests_not_from_apache_are_refused(hub, secret):
    headers = [(USER_HEADER, "alice")]
    if secret == "twice":
        headers += [(SECRET_HEADER, hub.secret)] * 2
    elif secret:
        headers.append((SECRET_HEADER, secret))
    for port in (hub.web_port, hub.daemon_port):
        resp = raw_request(port, "/whoami", [*headers, ("Accept", "text/html")])
        assert resp.status == 403
        assert "login proxy" in resp.text
    assert hub.containers() == []


def test_a_forged_header_without_the_secret_never_reaches_a_container(hub):
    hub.open("alice", "/whoami", app="whoami")
    resp = raw_request(hub.web_port, "/whoami", [(USER_HEADER, "alice")])
    assert resp.status == 403  # the session route requires the secret too


def test_a_second_user_value_on_a_session_route_never_reaches_the_app(hub):
    """Traefik's Header() matches when any value matches; the route then sets the one user."""
    hub.open("alice", "/whoami", app="whoami")
    for order in (["mallet", "alice"], ["alice", "mallet"]):
        headers = [(USER_HEADER, user) for user in order] + [(SECRET_HEADER, hub.secret)]
        resp = raw_request(hub.web_port, "/whoami", headers)
        assert resp.status == 200, resp.text
        info = resp.json()
        assert info["header_user"] == "alice"
        assert "mallet" not in resp.text


def test_nasty_ids_work_for_exactly_that_user_and_name_nothing(hub):
    for user in NASTY_IDS:
        resp = hub.open(user, "/whoami", app="whoami")
        assert resp.status == 200, (user, resp.text)
        info = resp.json()
        assert info["header_user"] == user
        assert info["env"]["SERVICEHUB_USER"] == user
    containers = hub.containers(app="whoami")
    assert len(containers) == len(NASTY_IDS)  # look-alike ids never share a container
    for container in containers:
        assert SAFE_NAME.match(container["Name"].lstrip("/"))
        assert container["Config"]["Image"] == "servicehub-example/whoami:latest"
    for path in [*hub.routes_dir.iterdir(), *(hub.workdir / "volumes").iterdir()]:
        assert SAFE_NAME.match(path.name), path.name
    # Each id still reaches only its own container.
    for user in NASTY_IDS:
        assert hub.get(user, "/whoami", html=False).json()["header_user"] == user


def test_unknown_reserved_paths_spawn_nothing(hub):
    resp = hub.get("alice", "/_servicehub/anything", html=False)
    assert resp.status == 404
    assert hub.containers() == []


def test_apps_only_run_configured_images(hub):
    hub.open("alice", "/whoami", app="whoami")
    hub.open("alice", "/slow/", app="slow")
    out = subprocess.run(
        [
            "docker",
            "ps",
            "--filter",
            f"label=servicehub.hub={hub.hub_name}",
            "--format",
            "{{.Image}}",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert set(out.stdout.split()) == {"servicehub-example/whoami:latest"}


def test_header_name_aliases_never_reach_the_app(hub):
    hub.open("alice", "/whoami", app="whoami")
    aliases = [
        ("X_Servicehub_User", "mallory"),
        ("X.Servicehub.User", "mallory"),
        ("X_Servicehub_Groups", "admins"),
    ]
    resp = raw_request(hub.web_port, "/whoami", [*hub.identity_headers("alice"), *aliases])
    info = resp.json()
    assert info["header_user"] == "alice"
    assert info["alias_headers"] == []


def test_traefik_access_log_keeps_the_user_header(hub):
    import json

    hub.open("alice@example.org", "/whoami", app="whoami")

    def routed_entries() -> list[dict]:
        # Until Traefik serves the session's route the daemon hands requests over (handover.py).
        hub.get("alice@example.org", "/whoami", html=False)
        entries = [json.loads(line) for line in hub.access_log.read_text().splitlines()]
        return [e for e in entries if e.get("RouterName", "").startswith(f"{hub.hub_name}-whoami-")]

    routed = wait_for(routed_entries, 10, "a request through the session's router")
    assert routed[-1]["request_X-Servicehub-User"] == "alice@example.org"
    assert "request_X-Servicehub-Proxy-Secret" not in hub.access_log.read_text()
