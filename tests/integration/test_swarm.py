"""The Swarm backend on a real swarm: a hub (manager) and two workers, each a systemd container
with its own Docker Engine, as docs/cluster.md lays a cluster out.

Slow (the nodes boot, form a swarm and load the app image: tests/swarm_cluster.py):
``make cluster-test`` runs it, the main integration suite does not
(``-m "integration and not cluster"``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import shutil
import subprocess
import tempfile
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest

from servicehub import swarm
from servicehub.backend import SpawnError
from servicehub.config import parse_config
from servicehub.swarm import SwarmBackend
from tests.harness import EXAMPLE_IMAGE, Hub, raw_request, wait_for
from tests.swarm_cluster import (
    NODE_IMAGE,
    PREFIX,
    WHOAMI,
    Cluster,
    node,
    remove_services,
    sh,
    swarm_cluster,
    swarm_settings,
    task_node,
)

pytestmark = [pytest.mark.integration, pytest.mark.cluster]
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def cluster(docker_engine, example_image) -> Iterator[Cluster]:
    found = subprocess.run(["docker", "image", "inspect", NODE_IMAGE], capture_output=True)
    if found.returncode != 0:
        pytest.skip(f"{NODE_IMAGE} missing: `make cluster-test` builds it")
    with swarm_cluster() as built:
        yield built


def hub_config(cluster: Cluster, tmp_path: Path):
    return parse_config(
        {
            "hub": "swarmtest",
            "volumes_root": str(tmp_path / "volumes"),
            "state_dir": str(tmp_path / "state"),
            "traefik": {"routes_dir": str(tmp_path / "routes")},
            "apps": {"whoami": WHOAMI},
            **swarm_settings(cluster),
        }
    )


def firewall_workers(cluster: Cluster, action: str = "-I") -> None:
    """The rules the docker role is to set on every worker (docs/cluster.md, "Routing"): a new
    connection forwarded to a session's container must come from the hub, and the sessions'
    containers reach nothing on their worker itself (not its services, not the userland proxy
    of another session's published port)."""
    for name in ("w1", "w2"):
        node(
            name, "iptables", action, "DOCKER-USER", "-o", "docker0",
            "-m", "conntrack", "--ctstate", "NEW",
            "!", "-s", cluster.addresses["hub"], "-j", "DROP", check=action == "-I",
        )  # fmt: skip
        rule = ["INPUT", "-i", "docker0", "-j", "DROP"]
        node(name, "iptables", action, *rule, check=action == "-I")
        # A session's connection leaves its worker with the worker's address: without this,
        # it could talk to the Swarm ports of the hub and the other workers like a member.
        for address in cluster.addresses.values():
            rule = ["DOCKER-USER", "-i", "docker0", "-d", address]
            rule += ["-m", "conntrack", "--ctstate", "NEW", "-j", "DROP"]  # answers go through
            node(name, "iptables", action, *rule, check=action == "-I")


def outside_reaches(url: str) -> bool:
    """Whether this host (on the cluster's network, not the hub) gets an answer at ``url``."""
    probe = ["curl", "-sS", "-o", "/dev/null", "--max-time", "3", url + "/healthz"]
    return subprocess.run(probe, capture_output=True).returncode == 0


def test_a_session_runs_on_a_worker_and_the_hub_reaches_it(cluster, tmp_path):
    config = hub_config(cluster, tmp_path)
    app = config.apps["whoami"]

    async def scenario():
        backend = SwarmBackend(config)
        try:
            await backend.prepare()
            start = time.monotonic()
            info = await backend.spawn(app, "alice@example.org", "alice-x")
            cluster.timings["spawn until running"] = time.monotonic() - start
            assert info.running, (info, await backend.logs_tail(info.container_id))
            url = info.url(app.port)
            assert url is not None
            assert task_node(info.name) in ("w1", "w2")
            assert info.address in (cluster.addresses["w1"], cluster.addresses["w2"])

            # The hub reaches the app at the node's published port; once the workers have
            # their firewall, nobody else does (before it, this host does: the rule is why).
            deadline = time.monotonic() + 30
            body = cluster.hub_fetch(url + "/whoami")
            while '"env"' not in body and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
                body = cluster.hub_fetch(url + "/whoami")
            cluster.timings["spawn until the hub reaches it"] = time.monotonic() - start
            env = json.loads(body)["env"]
            assert env["SERVICEHUB_USER"] == "alice@example.org"
            assert env["SERVICEHUB_SLUG"] == "alice-x"
            assert outside_reaches(url), "this host could not reach the session even unfirewalled"
            firewall_workers(cluster)
            try:
                assert not outside_reaches(url), "a host other than the hub reached a session"
                assert '"env"' in cluster.hub_fetch(url + "/whoami")
            finally:  # the next test plays the hub from this host
                firewall_workers(cluster, "-D")

            # The session's container runs as on a single host: user, read-only root, caps.
            worker = task_node(info.name)
            container = json.loads(
                node(worker, "docker", "inspect", node(worker, "docker", "ps", "-q"))
            )[0]
            assert container["Config"]["User"] == "1000:1000"
            assert container["HostConfig"]["ReadonlyRootfs"] is True
            assert container["HostConfig"]["CapDrop"] == ["ALL"]
            assert container["HostConfig"]["Memory"] == 256 * 1024**2
            assert container["Config"]["Labels"]["servicehub.slug"] == "alice-x"
            # On the worker's default bridge (docker0), which the firewall rules name.
            assert set(container["NetworkSettings"]["Networks"]) == {"bridge"}

            # State: one listing, the single session by name, then its removal.
            (listed,) = await backend.list_sessions(detailed=False)
            assert (listed.container_id, listed.url(app.port)) == (info.container_id, url)
            got = await backend.get("whoami", "alice-x")
            assert got is not None and got.running and got.url(app.port) == url
            await backend.remove(info.container_id)
            assert await backend.get("whoami", "alice-x") is None
            assert await backend.list_sessions() == []
            deadline = time.monotonic() + 30
            while node(worker, "docker", "ps", "-aq") and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
            assert node(worker, "docker", "ps", "-aq") == "", "the task's container stayed"
        finally:
            await backend.close()

    asyncio.run(scenario())


def test_a_session_no_node_can_hold_is_refused_with_a_reason(cluster, tmp_path, monkeypatch):
    """Swarm keeps a task no node has room for pending; the user is told, nothing is left."""
    monkeypatch.setattr(swarm, "CAPACITY_WAIT", 1.0)
    config = hub_config(cluster, tmp_path)
    huge = dataclasses.replace(
        config.apps["whoami"],
        limits=dataclasses.replace(config.apps["whoami"].limits, memory_bytes=1024**5),
    )

    async def scenario():
        backend = SwarmBackend(config)
        try:
            await backend.prepare()
            with pytest.raises(SpawnError, match="no machine of this hub has room"):
                await backend.spawn(huge, "bob@example.org", "bob-y")
            assert await backend.list_sessions() == []
        finally:
            await backend.close()

    asyncio.run(scenario())


def container_of(worker: str, service: str) -> str:
    label = f"label=com.docker.swarm.service.name={service}"
    return node(worker, "docker", "ps", "-q", "--filter", label)


def session_connects(worker: str, address: str, port: int) -> bool:
    """Whether a session on ``worker`` opens a TCP connection to ``address:port``: a container
    of the app's image, as its user, on the worker's default bridge like every session there.
    Any failure but the connection's own fails the test."""
    probe = f"import socket; socket.create_connection(({address!r}, {port}), 3)"
    command = ["docker", "run", "--rm", "--user", "1000:1000", EXAMPLE_IMAGE, "python3", "-c"]
    done = subprocess.run(
        ["docker", "exec", f"{PREFIX}-{worker}", *command, probe], capture_output=True, timeout=60
    )
    err = done.stderr.decode(errors="replace")
    if done.returncode != 0 and not any(
        e in err for e in ("TimeoutError", "ConnectionRefusedError", "timed out", "unreachable")
    ):
        out = done.stdout.decode(errors="replace")
        raise AssertionError(f"probe on {worker}: {done.returncode} {out} {err}")
    return done.returncode == 0


def test_sessions_cannot_reach_each_other_on_one_worker_or_across(cluster, tmp_path):
    """With the workers' rules, a session reaches no other session: not at its node's published
    port (on its own worker or another), not at its address on the worker's bridge."""
    config = hub_config(cluster, tmp_path)
    app = config.apps["whoami"]

    async def scenario():
        backend = SwarmBackend(config)
        try:
            await backend.prepare()
            users = ("alice", "bob", "carol")
            infos = [await backend.spawn(app, f"{u}@example.org", f"{u}-x") for u in users]
            assert all(i.running and i.address for i in infos)
            where = {i.name: task_node(i.name) for i in infos}
            assert set(where.values()) == {"w1", "w2"}, where  # spread over both workers
            for info in infos:  # running is not listening yet: the spawner's probe waits too
                wait_for(
                    lambda info=info: '"env"' in cluster.hub_fetch(f"{info.url(app.port)}/whoami"),
                    30,
                    f"{info.name} to answer",
                    interval=0.2,
                )
            worker = where[infos[0].name]  # the sessions' neighbour, and the others
            far = next(i for i in infos if where[i.name] != worker)
            assert far.address and far.port
            # Without the rules a session reaches another worker's published ports and the
            # nodes' Swarm ports (the manager's 2377, another worker's gossip on 7946): the
            # rules are what stops it below.
            other_worker = "w2" if worker == "w1" else "w1"
            swarm_ports = [
                (cluster.addresses["hub"], 2377),
                (cluster.addresses[other_worker], 7946),
            ]
            assert session_connects(worker, far.address, far.port)
            assert all(session_connects(worker, a, p) for a, p in swarm_ports)
            firewall_workers(cluster)
            for address, port in swarm_ports:
                assert not session_connects(worker, address, port), f"{address}:{port}"
            for other in infos:
                assert other.address and other.port
                assert not session_connects(worker, other.address, other.port), (
                    f"a session on {worker} reached {other.name} on {where[other.name]}"
                )
                if where[other.name] == worker:  # neighbours on the bridge
                    container = json.loads(
                        node(worker, "docker", "inspect", container_of(worker, other.name))
                    )[0]
                    bridge = container["NetworkSettings"]["Networks"]["bridge"]["IPAddress"]
                    assert not session_connects(worker, bridge, app.port)
            for info in infos:
                await backend.remove(info.container_id)
        finally:
            await backend.close()
            firewall_workers(cluster, "-D")

    asyncio.run(scenario())


NODE_FILES = ("__init__.py", "counters.py", "files.py", "node_counters.py")
NODE_LIB = "/usr/local/lib/servicehub-node"


def collect_on(worker: str, hub: str, into: Path) -> None:
    """The counters collector as the role runs it on a worker: the four files it copies, the
    worker's own python3; then its file into ``into``, as the shared directory would carry it."""
    with tempfile.TemporaryDirectory() as tmp:
        package = Path(tmp) / "servicehub"
        package.mkdir()
        for name in NODE_FILES:
            shutil.copy(ROOT / "servicehub" / name, package / name)
        node(worker, "mkdir", "-p", NODE_LIB, "/tmp/counters")
        sh("docker", "cp", str(package), f"{PREFIX}-{worker}:{NODE_LIB}/")
    run = ["env", f"PYTHONPATH={NODE_LIB}", "python3", "-s", "-m", "servicehub.node_counters"]
    node(worker, *run, "--dir", "/tmp/counters", "--hub", hub)
    sh("docker", "cp", f"{PREFIX}-{worker}:/tmp/counters/.", str(into))


def test_a_workers_collector_gives_the_hub_its_sessions_counters(cluster, tmp_path):
    """The collector on the session's worker reads its counters there; the hub's backend reads
    them from its file, and they grow with the traffic the hub sends to the session."""
    counters_dir = tmp_path / "counters"
    counters_dir.mkdir()
    config = hub_config(cluster, tmp_path)
    settings = dataclasses.replace(config.backend.swarm, counters_dir=counters_dir)
    config = dataclasses.replace(
        config, backend=dataclasses.replace(config.backend, swarm=settings)
    )
    app = config.apps["whoami"]

    async def scenario():
        backend = SwarmBackend(config)
        try:
            await backend.prepare()
            info = await backend.spawn(app, "alice@example.org", "alice-x")
            worker, url = task_node(info.name), info.url(app.port)
            assert url is not None
            wait_for(lambda: '"env"' in cluster.hub_fetch(f"{url}/whoami"), 30, "the app")
            assert await backend.counters(info.container_id) is None  # nothing collected yet

            collect_on(worker, config.hub, counters_dir)
            backend.clock = lambda: time.monotonic() + 3600  # past the cache: read again
            first = await backend.counters(info.container_id)
            assert first is not None and first.boot, sorted(counters_dir.iterdir())
            for _ in range(20):
                assert '"env"' in cluster.hub_fetch(f"{url}/whoami")
            collect_on(worker, config.hub, counters_dir)
            backend.clock = lambda: time.monotonic() + 7200
            second = await backend.counters(info.container_id)
            assert second is not None and second.boot == first.boot
            assert second.read > first.read
            assert second.net_bytes > first.net_bytes, (first, second)
            assert second.cpu_ns > first.cpu_ns, (first, second)
            await backend.remove(info.container_id)
        finally:
            await backend.close()

    asyncio.run(scenario())


def worker_memory() -> int:
    """What a worker's engine reports as its memory (the machine's: the nodes share it)."""
    return int(node("w1", "docker", "info", "--format", "{{.MemTotal}}"))


@pytest.fixture
def swarm_hub(cluster, tmp_path, request) -> Iterator[Hub]:
    """The real daemon and Traefik on this host, as the hub, with the swarm backend; the app
    ``big`` reserves six tenths of a worker's memory, so each worker holds one at a time."""
    big_mib = worker_memory() * 6 // 10 // 1024**2
    big = {
        **WHOAMI,
        "route": {"path_prefix": "/big/"},
        "limits": {"memory": f"{big_mib}m", "cpus": 0.5, "pids": 64},
        "readiness": {"type": "http", "path": "/big/healthz"},
    }
    apps = {"whoami": WHOAMI, "big": big}
    hub = Hub(workdir=tmp_path / "hub", apps=apps, settings=swarm_settings(cluster))
    hub.workdir.mkdir()
    try:
        hub.start()
        yield hub
    finally:
        reports = request.node.stash.get("reports", {})
        if any(r.failed for r in reports.values()):
            print(hub.logs())
        hub.stop()
        remove_services(hub.hub_name)


def test_when_no_worker_has_room_a_session_waits_in_line_and_starts_when_one_ends(swarm_hub):
    """A full swarm is a place in the queue on the wait page, not an error page."""
    hub = swarm_hub
    for user in ("alice", "bob"):
        assert hub.open(user, "/big/whoami", app="big").json()["header_user"] == user
    services = node(
        "hub", "docker", "service", "ls", "--filter", f"label=servicehub.hub={hub.hub_name}",
        "--filter", "label=servicehub.app=big", "--format", "{{.Name}}",
    ).split()  # fmt: skip
    assert sorted(task_node(name) for name in services) == ["w1", "w2"]  # one each: full
    first = hub.get("carol", "/big/whoami")
    assert first.status == 200 and first.is_wait

    def queued() -> bool:
        status = hub.status("carol", "big")
        return status["state"] == "queued" and "no machine of this hub has room" in str(
            status["message"]
        )

    wait_for(queued, 30, "carol's session to wait for room")
    assert "0 ahead of you" in str(hub.status("carol", "big")["message"])
    stopped = hub.cli("stop", "alice")
    assert stopped.returncode == 0, stopped.stderr
    wait_for(lambda: hub.status("carol", "big")["state"] == "ready", 90, "carol's session")
    assert hub.open("carol", "/big/whoami", app="big").json()["header_user"] == "carol"
    assert "has room for your session right now" not in hub.logs()  # no error page on the way


def test_a_session_whose_worker_went_silent_gets_an_answer_in_seconds(cluster, swarm_hub):
    """A worker whose network died answers no SYN: Traefik must give up after the sessions'
    short dial timeout (5 s) with a gateway error, not hold the request for its default 30 s."""
    hub = swarm_hub
    start = raw_request(
        hub.web_port, "/_servicehub/api/start?app=whoami", hub.identity_headers("erin"), "POST"
    )
    assert start.status in (200, 202), start.text
    wait_for(lambda: hub.status("erin", "whoami")["state"] == "ready", 60, "erin's session")
    (route_file,) = hub.routes_dir.glob("*-session-*.yml")
    # Served by Traefik without the start-up middleware (which would turn the gateway error
    # into the daemon's wait answer); and no request went through it yet, so it holds no
    # kept-alive connection to the session.
    routes = json.loads(route_file.read_text())["http"]
    router = f"/api/http/routers/{min(routes['routers'])}@file"

    def final() -> bool:
        served = raw_request(hub.api_port, router)
        return served.status == 200 and not any(
            "booting" in m for m in served.json().get("middlewares", [])
        )

    wait_for(final, 30, "Traefik to serve the route's final form")
    (service,) = routes["services"].values()
    (server,) = service["loadBalancer"]["servers"]
    url = urllib.parse.urlsplit(server["url"])
    address, port = str(url.hostname), str(url.port)
    worker = next(name for name, a in cluster.addresses.items() if a == address)
    # Dropped on the worker, before Docker's port mapping: the SYN goes unanswered, so only
    # the dial timeout ends the wait, within the request's 20 s and not after 30.
    silence = ["PREROUTING", "-p", "tcp", "--dport", port, "-j", "DROP"]
    node(worker, "iptables", "-t", "raw", "-I", *silence)
    try:
        began = time.monotonic()
        answer = raw_request(hub.web_port, "/whoami", hub.identity_headers("erin"), timeout=20)
        cluster.timings["silent worker until the gateway error"] = time.monotonic() - began
        assert answer.status in (502, 504), (answer.status, answer.text)
    finally:
        node(worker, "iptables", "-t", "raw", "-D", *silence, check=False)


def test_restarts_of_the_daemon_and_the_manager_lose_no_session(cluster, swarm_hub):
    """The daemon rebuilds its sessions from the swarm; the manager keeps them in its Raft
    store: after either restarts, the user's session answers as before, not a new one."""
    hub = swarm_hub
    first = hub.open("bob", "/whoami", app="whoami").json()
    hub.restart_daemon()
    assert hub.open("bob", "/whoami", app="whoami").json()["hostname"] == first["hostname"]

    start = time.monotonic()
    node("hub", "systemctl", "restart", "docker")
    wait_for(
        lambda: (
            subprocess.run(
                ["docker", "exec", f"{PREFIX}-hub", "docker", "node", "ls"], capture_output=True
            ).returncode
            == 0
        ),
        60,
        "the manager to answer again",
        interval=0.2,
    )
    cluster.timings["manager restart"] = time.monotonic() - start
    time.sleep(3 * 2)  # three of the daemon's listings (watch_interval 2s) see the swarm again
    again = hub.get("bob", "/whoami", html=False)
    assert again.status == 200 and again.json()["hostname"] == first["hostname"]
    assert len(list(hub.routes_dir.glob("*-session-*.yml"))) == 1
    assert "lost its container" not in hub.logs() and "stopped" not in hub.logs()


def test_a_dead_worker_loses_its_sessions_and_the_next_request_runs_elsewhere(cluster, swarm_hub):
    """Through the daemon and Traefik: a login spawns on a worker; the worker stops answering;
    within a minute the route is gone, and the user's next request gets a session elsewhere."""
    hub = swarm_hub
    start = time.monotonic()
    first = hub.open("alice", "/whoami", app="whoami")
    cluster.timings["first request until the app (daemon)"] = time.monotonic() - start
    assert first.status == 200 and first.json()["header_user"] == "alice"
    service = f"{hub.hub_name}-whoami-" + first.json()["env"]["SERVICEHUB_SLUG"]
    worker = task_node(service)
    assert worker in ("w1", "w2")
    assert len(list(hub.routes_dir.glob("*-session-*.yml"))) == 1
    router = f"/api/http/routers/{service}@file"
    wait_for(lambda: raw_request(hub.api_port, router).status == 200, 30, "the session's route")

    # The machine dies with everything on it (the session's container too: it lives in the
    # node's PID namespace). `docker pause` would not do: it freezes the node's own processes
    # but not its containers, whose cgroups are the host's, so the app would still answer.
    # The last test of the module: the cluster has one worker left afterwards.
    sh("docker", "kill", f"{PREFIX}-{worker}")
    died = time.monotonic()
    wait_for(
        lambda: raw_request(hub.api_port, router).status == 404,
        60,
        "Traefik to drop the dead worker's session",
        interval=0.2,
    )
    cluster.timings["dead worker until Traefik drops its route"] = time.monotonic() - died
    assert not list(hub.routes_dir.glob("*-session-*.yml"))
    again = hub.open("alice", "/whoami", app="whoami")
    cluster.timings["dead worker until the next session answers"] = time.monotonic() - died
    assert again.status == 200 and again.json()["header_user"] == "alice"
    assert again.json()["hostname"] != first.json()["hostname"]
    other = task_node(service)
    assert other in ("w1", "w2") and other != worker
