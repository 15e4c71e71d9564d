"""First request, wait page, the app; identity; isolation; concurrency; restarts."""

import concurrent.futures
import subprocess

import pytest

from tests.harness import example_apps, raw_request, wait_for

pytestmark = pytest.mark.integration


def test_first_request_shows_wait_page_then_the_app(hub):
    first = hub.get("alice", "/slow/")
    assert first.status == 200 and first.is_wait
    assert "Starting slow" in first.text and "<progress" in first.text
    assert first.headers["Cache-Control"] == "no-store"
    final = hub.open("alice", "/slow/")
    assert final.status == 200 and not final.is_wait
    assert '<p id="whoami">alice</p>' in final.text


def test_non_html_clients_get_503_with_retry_after_while_it_starts(hub):
    assert hub.get("bob", "/slow/").is_wait  # a page load starts it (a poll would not)
    resp = hub.get("bob", "/slow/whoami", html=False)
    assert resp.status == 503
    assert resp.headers["Retry-After"] == "1"
    assert resp.json()["state"] in {"creating", "starting", "routing"}


def test_the_app_sees_the_identity_in_headers_and_environment(hub):
    resp = hub.open("alice@example.org", "/whoami", app="whoami")
    info = resp.json()
    assert info["header_user"] == "alice@example.org"
    env = info["env"]
    assert env["SERVICEHUB_USER"] == "alice@example.org"
    assert env["SERVICEHUB_APP"] == "whoami"
    assert env["SERVICEHUB_BASE_URL"] == "/"
    assert env["SERVICEHUB_SLUG"].startswith("alice-")
    # The proxy secret proves the request came through Apache; the app never sees it.
    resp = raw_request(hub.web_port, "/whoami", hub.identity_headers("alice@example.org"))
    assert "proxy" not in resp.text.lower()


def test_later_requests_bypass_the_daemon(hub):
    hub.open("carol", "/whoami", app="whoami")
    hub.stop_daemon()
    resp = hub.get("carol", "/whoami", html=False)
    assert resp.status == 200 and resp.json()["header_user"] == "carol"


def test_two_users_get_two_containers_that_cannot_reach_each_other(hub):
    alice = hub.open("alice", "/whoami", app="whoami").json()
    bob = hub.open("bob", "/whoami", app="whoami").json()
    assert alice["hostname"] != bob["hostname"]
    containers = {c["Config"]["Labels"]["servicehub.user"]: c for c in hub.containers(app="whoami")}
    assert set(containers) == {"alice", "bob"}
    network = f"{hub.hub_name}-whoami"
    bob_ip = containers["bob"]["NetworkSettings"]["Networks"][network]["IPAddress"]
    probe = (
        "import socket,sys\n"
        "s=socket.socket(); s.settimeout(2)\n"
        f"sys.exit(0 if s.connect_ex(('{bob_ip}', 8000)) == 0 else 7)"
    )
    reach = subprocess.run(
        ["docker", "exec", containers["alice"]["Id"], "python3", "-c", probe],
        capture_output=True,
        check=False,
    )
    assert reach.returncode == 7, "alice's container reached bob's"
    # Each user is routed to their own container only.
    assert hub.get("bob", "/whoami", html=False).json()["header_user"] == "bob"


def test_twenty_concurrent_first_requests_make_one_container(hub):
    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        statuses = list(pool.map(lambda _: hub.get("dave", "/whoami").status, range(20)))
    assert all(s in (200, 503) for s in statuses), statuses
    hub.open("dave", "/whoami", app="whoami")
    assert len(hub.containers(app="whoami")) == 1


def test_daemon_restart_keeps_sessions_and_reconciles_routes(hub):
    hub.open("erin", "/whoami", app="whoami")
    hub.open("frank", "/whoami", app="whoami")
    before = {c["Config"]["Labels"]["servicehub.user"]: c["Id"] for c in hub.containers()}
    session_files = sorted(p.name for p in hub.routes_dir.glob(f"{hub.hub_name}-session-*"))
    assert len(session_files) == 2
    hub.stop_daemon()
    (hub.routes_dir / session_files[0]).unlink()  # a lost route
    orphan = hub.routes_dir / f"{hub.hub_name}-session-whoami-ghost-aaaaaaaaaaaaaaaa.yml"
    orphan.write_text("{}\n")
    hub.start_daemon()
    wait_for(lambda: (hub.routes_dir / session_files[0]).exists(), 10, "the lost route")
    assert not orphan.exists()
    after = {c["Config"]["Labels"]["servicehub.user"]: c["Id"] for c in hub.containers()}
    assert after == before
    for user in ("erin", "frank"):
        resp = hub.open(user, "/whoami", app="whoami")
        assert resp.json()["header_user"] == user
    assert {c["Id"] for c in hub.containers()} == set(before.values())


def test_a_crashing_app_shows_the_error_page_with_retry(hub):
    final = hub.open("gina", "/crash/", app="crash")
    assert final.status == 503
    assert "could not start" in final.text and "exit code 3" in final.text
    assert 'id="retry"' in final.text
    assert hub.containers(app="crash") == []  # removed; the reason is in the log
    assert "exited with code 3" in hub.daemon_log.read_text()
    retry = hub.retry("gina", "crash", "/crash/")
    assert retry.status == 303 and retry.headers["Location"] == "/crash/"


def test_a_missing_image_shows_the_error_page(hub):
    final = hub.open("hank", "/missing/", app="missing")
    assert final.status == 503
    assert "servicehub-test/not-there:1 is not available" in final.text


def test_container_security_settings_follow_the_config(hub):
    hub.open("ivy", "/whoami", app="whoami")
    (container,) = hub.containers(app="whoami")
    host = container["HostConfig"]
    assert container["Config"]["User"] == "1000:1000"
    assert host["CapDrop"] == ["ALL"] and not host["CapAdd"]
    assert "no-new-privileges:true" in host["SecurityOpt"]
    assert host["ReadonlyRootfs"] is True
    assert host["Memory"] == 256 * 1024**2 and host["MemorySwap"] == 256 * 1024**2
    assert host["NanoCpus"] == 500_000_000 and host["PidsLimit"] == 64
    assert host["PortBindings"] in (None, {})  # nothing published on the host
    assert host["Privileged"] is False
    assert set(container["NetworkSettings"]["Networks"]) == {f"{hub.hub_name}-whoami"}
    network = subprocess.run(
        ["docker", "network", "inspect", f"{hub.hub_name}-whoami"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert '"com.docker.network.bridge.enable_icc": "false"' in network
    (mount,) = container["Mounts"]
    assert mount["Destination"] == "/data" and mount["RW"]
    # The volume belongs to the app user, and the app can write to it through the proxy.
    put = raw_request(
        hub.web_port, "/data/note.txt", hub.identity_headers("ivy"), method="PUT", body=b"kept"
    )
    assert put.status in (200, 201, 204), put.text
    assert hub.get("ivy", "/data/note.txt", html=False).body == b"kept"
    top = subprocess.run(
        ["docker", "exec", container["Id"], "id", "-u"], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert top == "1000"


def test_daemon_and_traefik_listen_on_loopback_only(hub):
    listening = subprocess.run(["ss", "-Hltn"], capture_output=True, text=True, check=True).stdout
    ours = {hub.web_port, hub.api_port, hub.daemon_port}
    seen = {}
    for line in listening.splitlines():
        local = line.split()[3]
        host, _, port = local.rpartition(":")
        if int(port) in ours:
            seen[int(port)] = host
    assert set(seen) == ours
    assert all(host == "127.0.0.1" for host in seen.values()), seen


def test_a_container_that_dies_later_is_replaced_on_the_next_request(hub):
    hub.open("kim", "/whoami", app="whoami")
    (before,) = hub.containers(app="whoami")
    route = next(hub.routes_dir.glob(f"{hub.hub_name}-session-whoami-kim-*"))
    subprocess.run(["docker", "kill", before["Id"]], capture_output=True, check=True)
    router = f"{hub.hub_name}-whoami-{before['Config']['Labels']['servicehub.slug']}@file"
    wait_for(lambda: not route.exists(), 10, "the dead session's route file to go")
    wait_for(
        lambda: raw_request(hub.api_port, f"/api/http/routers/{router}").status == 404,
        10,
        "Traefik to drop the dead session's router",
    )
    assert "exit code 137" in hub.daemon_log.read_text()
    resp = hub.open("kim", "/whoami", app="whoami")
    assert resp.json()["header_user"] == "kim"
    (after,) = hub.containers(app="whoami")
    assert after["Id"] != before["Id"]


def test_a_session_of_one_app_does_not_swallow_another_apps_first_request(hub):
    hub.open("lou", "/whoami", app="whoami")  # the app at "/"
    first = hub.get("lou", "/slow/")
    assert first.is_wait  # reached the daemon, not lou's whoami container
    assert hub.open("lou", "/slow/").text.count('<p id="whoami">lou</p>') == 1
    assert len(hub.containers()) == 2
    bare = hub.get("lou", "/slow", html=False)
    assert bare.status == 301  # lou's slow container adds the slash, not the whoami one
    assert bare.headers["Location"].endswith("/slow/")
    no_session = hub.get("max", "/slow?x=1", html=False)
    assert no_session.status == 308 and no_session.headers["Location"] == "/slow/?x=1"


def test_a_request_while_the_app_boots_gets_the_wait_page_not_a_proxy_error(hub_factory):
    """The route goes live while the app still boots (here for 10 s): a reload in that window
    reaches Traefik's route, meets no listener, and gets the daemon's wait page as a 503."""
    apps = example_apps()
    apps["slow"]["environment"] = {"STARTUP_DELAY": "10"}
    hub = hub_factory(apps)
    assert hub.get("olga", "/slow/").is_wait
    (route,) = wait_for(
        lambda: list(hub.routes_dir.glob(f"{hub.hub_name}-session-slow-*.yml")), 10, "the route"
    )
    assert "booting" in route.read_text()
    router = f"{hub.hub_name}-slow-{route.name.split('-session-slow-')[1][:-4]}@file"

    def live() -> bool:
        resp = raw_request(hub.api_port, f"/api/http/routers/{router}")
        return resp.status == 200 and resp.json()["status"] == "enabled"

    wait_for(live, 10, "Traefik serving the booting route")
    page = hub.get("olga", "/slow/whoami?tab=2")
    assert page.status == 503, page.text
    assert "Starting slow" in page.text and "/slow/whoami?tab=2" in page.text
    poll = hub.get("olga", "/slow/whoami", html=False)
    assert poll.status == 503 and poll.json()["state"] == "starting"
    assert hub.status("olga", "slow")["state"] == "starting"  # the app really still boots
    wait_for(lambda: hub.status("olga", "slow")["state"] == "ready", 30, "olga's app")
    final = hub.get("olga", "/slow/")
    assert final.status == 200 and '<p id="whoami">olga</p>' in final.text
    wait_for(lambda: "booting" not in route.read_text(), 10, "the route without the hand-over")
