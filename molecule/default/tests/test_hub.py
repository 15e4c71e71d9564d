"""End-to-end checks of a converged hub: units, listeners, login, isolation, TLS, logout."""

import json
import time
from datetime import datetime

import pytest
from hub_variables import VARIABLES, header_values, seen_user

USER_HEADER = VARIABLES["servicehub_user_header"]
SECRET_HEADER = VARIABLES["servicehub_proxy_secret_header"]
LOOPBACK_PORTS = (
    VARIABLES["traefik_web_port"],
    VARIABLES["traefik_api_port"],
    VARIABLES["servicehub_listen_port"],
)
UNITS = ["docker", "traefik", "servicehub", "apache2"]


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


def browse(host, user, *extra, ca=None):
    args = ["hubclient", "--user", user, "--password", f"{user}-password"]
    if ca:
        args += ["--ca", ca]
    cmd = host.run(" ".join(f"'{a}'" for a in [*args, *extra]))
    assert cmd.rc == 0, cmd.stderr + cmd.stdout
    return json.loads(cmd.stdout)


@pytest.mark.parametrize("unit", UNITS)
def test_units_are_active_and_valid(host, unit):
    service = host.service(unit)
    assert service.is_running
    assert service.is_enabled
    assert service.is_valid


def test_traefik_came_from_the_checksummed_release_archive(host):
    binary = host.file("/usr/local/bin/traefik")
    assert binary.is_symlink
    version = VARIABLES["traefik_version"]
    assert binary.linked_to.startswith(f"{VARIABLES['__traefik_home']}/{version}/")
    assert version in host.run_test("/usr/local/bin/traefik version").stdout


def test_certbot_timer_is_active(host):
    assert host.service("certbot.timer").is_running


def test_loopback_only_listeners(host):
    for port in LOOPBACK_PORTS:
        assert host.socket(f"tcp://127.0.0.1:{port}").is_listening
        assert not host.socket(f"tcp://0.0.0.0:{port}").is_listening
    assert host.socket("tcp://0.0.0.0:80").is_listening or host.socket("tcp://:::80").is_listening
    assert host.socket("tcp://0.0.0.0:443").is_listening or host.socket("tcp://:::443").is_listening


def test_certificate_was_issued_by_pebble(host):
    out = host.run_test(
        "echo | openssl s_client -connect 127.0.0.1:443 -servername hub.test "
        "2>/dev/null | openssl x509 -noout -issuer"
    ).stdout
    assert "Pebble" in out


def test_login_reaches_own_container_with_identity(host, pebble_root):
    result = browse(host, "alice", ca=pebble_root)
    assert result["status"] == 200, result["trail"]
    info = json.loads(result["body"])
    assert header_values(info, USER_HEADER) == ["alice@example.org"]
    assert info["env"]["SERVICEHUB_USER"] == "alice@example.org"
    # No token or claim header of the login reaches the app.
    leaked = [
        h
        for h in info["header_names"]
        if h.lower().startswith("oidc") or "token" in h.lower() or "secret" in h.lower()
    ]
    assert leaked == []
    session_cookies = [c for c in result["cookies"] if c["domain"].endswith("hub.test")]
    assert session_cookies
    for cookie in session_cookies:
        assert cookie["secure"] and cookie["httponly"]
        assert (cookie["samesite"] or "").lower() == "lax"


def test_second_user_gets_a_second_container(host, pebble_root):
    alice = json.loads(browse(host, "alice", ca=pebble_root)["body"])
    bob = json.loads(browse(host, "bob", ca=pebble_root)["body"])
    assert seen_user(bob) == "bob@example.org"
    assert alice["hostname"] != bob["hostname"]
    names = host.run_test("docker ps --format '{{.Names}}'").stdout.split()
    assert len([n for n in names if "-whoami-" in n]) >= 2
    # And no other user's container can reach alice's over the network either: a container on
    # the same app network as bob's (`docker exec` cannot enter containers nested in this test
    # container, so the probe is a fresh one on that network).
    alice_id = host.run_test(
        "docker ps -q --filter label=servicehub.app=whoami "
        "--filter label=servicehub.user=alice@example.org"
    ).stdout.strip()
    alice_ip = host.run_test(
        "docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' " + alice_id
    ).stdout.strip()
    probe = host.run(
        "docker run --rm --network servicehub-whoami --user 1000:1000 "
        'servicehub-example/whoami:latest python3 -c "import socket; '
        "s=socket.socket(); s.settimeout(3); "
        f"print('reached' if s.connect_ex(('{alice_ip}', 8000)) == 0 else 'blocked')\""
    )
    assert probe.stdout.strip() == "blocked", (probe.stdout, probe.stderr)


def test_client_sent_identity_headers_are_ignored(host, pebble_root):
    result = browse(
        host,
        "bob",
        "--header",
        f"{USER_HEADER}: alice@example.org",
        "--header",
        f"{USER_HEADER.replace('-', '_')}: alice@example.org",
        "--header",
        f"{SECRET_HEADER}: guess",
        ca=pebble_root,
    )
    info = json.loads(result["body"])
    assert header_values(info, USER_HEADER) == ["bob@example.org"]
    assert info["alias_headers"] == []


def test_claim_rule_refuses_other_groups(host, pebble_root):
    cmd = host.run(f"hubclient --user eve --password eve-password --ca {pebble_root}")
    assert cmd.rc == 0, cmd.stderr
    assert json.loads(cmd.stdout)["status"] in (401, 403)
    assert "eve" not in host.run_test("docker ps --format '{{.Labels}}'").stdout


def test_logout_ends_the_session(host, pebble_root):
    result = browse(host, "alice", "--logout", ca=pebble_root)
    assert "idp.test" in result["after_logout_url"], result["trail"]


def test_reaper_timer_removes_an_idle_container_and_keeps_an_active_one(host, pebble_root):
    """App `short` has idle_timeout 30s; the timer runs every minute."""
    assert host.service("servicehub-reaper.timer").is_running
    assert host.service("servicehub-reaper.timer").is_enabled
    alice = browse(host, "alice", "--path", "/short/whoami", ca=pebble_root)
    assert alice["status"] == 200, alice["trail"]
    # bob keeps working: a request every 5 s for 3 minutes, in the background.
    host.run_test(
        f"nohup hubclient --user bob --password bob-password --ca {pebble_root} "
        "--path /short/whoami --repeat 36 --every 5 > /tmp/bob.json 2>&1 &"
    )

    def short_users():
        out = host.run_test(
            "docker ps --filter label=servicehub.app=short "
            "--format '{{.Label \"servicehub.user\"}}'"
        ).stdout
        return set(out.split())

    # Within one timeout plus one timer period (plus slack for the login and the run itself).
    deadline = time.monotonic() + 30 + 60 + 45
    while "alice@example.org" in short_users():
        assert time.monotonic() < deadline, host.run("journalctl -u servicehub-reaper -n 40").stdout
        time.sleep(2)
    assert "bob@example.org" in short_users()
    decisions = host.run("journalctl -u servicehub-reaper -o cat -n 200").stdout
    assert "reap" in decisions


def test_forged_journal_events_do_not_keep_a_session(host, pebble_root):
    """Issue 9.2: another local account (`nobody`) writes the daemon's `ready` event for alice's
    idle `short` session every 3 s with `logger --journald`; the reaper still removes it, as
    journald attributes those entries to nobody, not to servicehub.service."""
    alice = browse(host, "alice", "--path", "/short/whoami", ca=pebble_root)
    assert alice["status"] == 200, alice["trail"]
    hub, slug = host.run_test(
        "docker ps --filter label=servicehub.app=short "
        "--filter label=servicehub.user=alice@example.org "
        '--format \'{{.Label "servicehub.hub"}} {{.Label "servicehub.slug"}}\''
    ).stdout.split()
    uid = host.run_test("id -u servicehub").stdout.strip()
    forged_from = int(host.run_test("date +%s").stdout)
    # The forger names journald's own fields too: journald drops them (they start with _).
    entry = (
        f"MESSAGE=forged\\nSERVICEHUB_EVENT=ready\\nSERVICEHUB_HUB={hub}\\n"
        f"SERVICEHUB_APP=short\\nSERVICEHUB_SLUG={slug}\\n"
        f"_SYSTEMD_UNIT=servicehub.service\\n_UID={uid}\\n"
    )
    host.run_test(f"printf '{entry}' > /tmp/forged-ready && chmod 644 /tmp/forged-ready")
    forger = host.run_test(
        "nohup sh -c 'for i in $(seq 60); do runuser -u nobody -- logger "
        "--journald=/tmp/forged-ready; sleep 3; done' >/dev/null 2>&1 & echo $!"
    ).stdout.strip()
    forged = f"journalctl -o json _UID=65534 SERVICEHUB_SLUG={slug} SERVICEHUB_EVENT=ready"
    try:
        deadline = time.monotonic() + 20
        while not host.run(forged).stdout.strip():  # control: the forgeries are in the journal
            assert time.monotonic() < deadline, "no forged entry in the journal"
            time.sleep(1)

        def alice_short():
            return host.run_test(
                "docker ps -q --filter label=servicehub.app=short "
                f"--filter label=servicehub.slug={slug}"
            ).stdout.strip()

        # idle_timeout is 30 s; a reaper run every 5 s (and the timer's) until it is gone.
        deadline = time.monotonic() + 30 + 60
        while alice_short():
            assert time.monotonic() < deadline, host.run(
                "journalctl -o cat -n 40 _SYSTEMD_UNIT=servicehub-reaper.service "
                f"SERVICEHUB_SLUG={slug}"
            ).stdout
            time.sleep(5)
            host.run("systemctl start servicehub-reaper.service")
    finally:
        host.run(f"kill {forger}")
    decisions = [
        json.loads(line)
        for line in host.run_test(
            "journalctl -o json _SYSTEMD_UNIT=servicehub-reaper.service "
            f"SERVICEHUB_SLUG={slug} SERVICEHUB_DECISION=reap"
        ).stdout.splitlines()
    ]
    assert decisions, "no reap decision logged"
    reaped = decisions[-1]
    last = datetime.fromisoformat(reaped["SERVICEHUB_LAST_ACTIVITY"].replace("Z", "+00:00"))
    assert reaped["SERVICEHUB_SIGNAL"] != "journal", reaped
    assert last.timestamp() <= forged_from, reaped  # no forged event moved the last activity
    # The reaper's journal match is right: the daemon's own events of this session carry it.
    daemon = host.run_test(
        f"journalctl -o json _SYSTEMD_UNIT=servicehub.service _UID={uid} "
        f"SERVICEHUB_SLUG={slug} SERVICEHUB_EVENT=spawned"
    ).stdout
    assert daemon.strip(), "the daemon's spawned event is not attributed to servicehub.service"
