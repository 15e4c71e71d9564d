"""The idle reaper against real parts: Docker containers, the Traefik binary and its access log,
the daemon. Where the real wait would be an hour, the reaper's clock (``now``) is moved instead:
both its wall clock and its monotonic clock, by the same amount (``reap(at=...)``), so the
reaper sees an hour pass, counter rates included.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
import uuid
from datetime import datetime

import pytest

from servicehub import backend as backend_module
from servicehub.activity import Instant
from servicehub.backend import DockerBackend
from servicehub.config import load_config
from servicehub.locks import SessionLocks
from servicehub.reaper import Reaper
from servicehub.reaper_report import Row
from servicehub.routes import RouteStore
from tests.harness import EXAMPLE_IMAGE, Hub, raw_request, wait_for
from tests.wsclient import WebSocket

pytestmark = pytest.mark.integration
HOUR = 3600.0


def reaper_apps():
    common = {
        "image": EXAMPLE_IMAGE,
        "limits": {"memory": "256m", "cpus": 0.5, "pids": 64},
        "readiness": {"type": "http", "path": "/healthz"},
        "idle_timeout": "1h",
        "max_lifetime": "1d",
        "grace": "5m",
    }
    return {
        "whoami": {**common, "volume": {"name": "{app}-{slug}", "mount": "/data"}},
        "nocpu": {
            **common,
            "route": {"path_prefix": "/nocpu/"},
            "readiness": {"type": "http", "path": "/nocpu/healthz"},
            "cpu_counts": False,
        },
        "reported": {
            **common,
            "route": {"path_prefix": "/reported/"},
            "readiness": {"type": "http", "path": "/reported/healthz"},
            "activity_endpoint": "/reported/activity",
            "activity_bytes": "1g",  # only the app's own report counts here
        },
    }


@pytest.fixture
def rhub(hub_factory):
    return hub_factory(reaper_apps())


def reap(hub: Hub, at: float, *, dry_run=False, backend_class=DockerBackend, journal=None):
    """One reaper run in this process, its clock set to ``at``: the wall clock, and the
    monotonic clock as if it had run alongside. Rows by (user, app)."""

    async def run() -> list[Row]:
        config = load_config(hub.config_path, hub.env())
        backend = backend_class(config)
        extra = {"journal": journal} if journal else {}
        try:
            reaper = Reaper(
                config, backend, RouteStore(config), now=lambda: Instant(at, at, "test"), **extra
            )
            return await reaper.run(dry_run=dry_run)
        finally:
            await backend.close()

    return {(r.user, r.app): r for r in asyncio.run(run())}


def router(hub: Hub, user: str, app: str = "whoami") -> str:
    (container,) = hub.containers(user=user, app=app)
    return f"{hub.hub_name}-{app}-{container['Config']['Labels']['servicehub.slug']}@file"


def lines_of(hub: Hub, user: str, app: str = "whoami") -> int:
    name = f'"RouterName":"{router(hub, user, app)}"'
    return hub.access_log.read_text().count(name) if hub.access_log.exists() else 0


def logged(hub: Hub, user: str, app: str = "whoami", count: int = 1) -> None:
    """Wait until Traefik's access log holds ``count`` lines of this session's router."""
    wait_for(lambda: lines_of(hub, user, app) >= count, 10, f"{count} access-log line(s) of {user}")


def visit(hub: Hub, user: str, path: str = "/whoami") -> str:
    """A GET marked so that its own access-log line can be waited for: that line's router."""
    mark = f"mark={uuid.uuid4().hex}"
    assert hub.get(user, f"{path}?{mark}", html=False).status == 200

    def line() -> dict | None:
        text = hub.access_log.read_text() if hub.access_log.exists() else ""
        return next((json.loads(raw) for raw in text.splitlines() if mark in raw), None)

    return str(wait_for(line, 10, f"the access-log line of {user}'s {path}")["RouterName"])


def opened(hub: Hub, user: str, path: str = "/whoami", app: str = "whoami") -> None:
    """``hub.open``, then one request through the session's own route, its line logged.

    The page open() ends on may have been handed over by the daemon while Traefik still loaded
    the route (servicehub/handover.py), and so be logged under the daemon's router. When this
    returns, the route is live and the lines of every earlier request are written: none comes
    late to keep a session at a run's last look (reaper_removal.py)."""
    hub.open(user, path, app=app)
    own = router(hub, user, app)
    wait_for(lambda: visit(hub, user, path) == own, 10, f"{user}'s requests to take {own}")


def route_file_gone(hub: Hub, user: str) -> bool:
    return not list(hub.routes_dir.glob(f"{hub.hub_name}-session-*-{user}-*"))


def test_requests_inside_the_window_keep_a_session_none_reap_it(rhub):
    opened(rhub, "alice")
    before = time.time()
    assert visit(rhub, "alice") == router(rhub, "alice")

    kept = reap(rhub, at=before + 59 * 60)[("alice", "whoami")]
    assert (kept.decision, kept.source) == ("keep", "access-log")
    assert kept.last_activity >= before

    reaped = reap(rhub, at=kept.last_activity + HOUR)[("alice", "whoami")]
    assert reaped.decision == "reap" and reaped.reason.startswith("idle for 1h00m")
    assert rhub.containers(user="alice") == []
    assert route_file_gone(rhub, "alice")
    state = json.loads((rhub.state_dir / "reaper.json").read_text())
    assert state["access_log"]["offset"] == rhub.access_log.stat().st_size


def test_a_pages_reads_beacons_and_sockets_never_count_its_clicks_writes_do(rhub):
    """What starts a session is what keeps one (docs/daemon.md, "What starts a session")."""
    opened(rhub, "frank")
    page = [*rhub.identity_headers("frank"), ("Sec-Fetch-Site", "same-origin")]
    poll = raw_request(rhub.web_port, "/whoami", [*page, ("Sec-Fetch-Mode", "cors")])
    beacon = raw_request(
        rhub.web_port, "/data/beacon", [*page, ("Sec-Fetch-Mode", "no-cors")], "PUT", b"x"
    )
    assert (poll.status, beacon.status) == (200, 201)
    # A socket connects as Chromium connects one: no fetch metadata. Logged when it closes.
    WebSocket(rhub.web_port, "/ws", rhub.identity_headers("frank")).close()
    background = f'"RouterName":"{router(rhub, "frank").replace("@file", "-background@file")}"'
    wait_for(lambda: rhub.access_log.read_text().count(background) >= 3, 10, "the background lines")
    start = time.time()
    idle = reap(rhub, at=start + HOUR)[("frank", "whoami")]
    assert (idle.decision, idle.source) == ("reap", "access-log"), idle
    assert idle.last_activity < start

    opened(rhub, "frank")
    lines = lines_of(rhub, "frank")
    start = time.time()
    save = [*page, ("Sec-Fetch-Mode", "cors")]
    assert raw_request(rhub.web_port, "/data/note", save, "PUT", b"x").status == 201
    logged(rhub, "frank", count=lines + 1)
    kept = reap(rhub, at=start + HOUR - 60)[("frank", "whoami")]
    assert (kept.decision, kept.source) == ("keep", "access-log"), kept
    assert kept.last_activity >= start


def test_the_volume_survives_and_the_respawned_container_sees_the_same_data(rhub):
    opened(rhub, "bob")
    (old,) = rhub.containers(user="bob")
    lines = lines_of(rhub, "bob")
    put = raw_request(
        rhub.web_port, "/data/note.txt", rhub.identity_headers("bob"), method="PUT", body=b"kept"
    )
    assert put.status == 201
    # The write in the log first: a line written after the run's read would keep the session
    # at the run's last look (reaper_removal.py), as it should.
    logged(rhub, "bob", count=lines + 1)
    assert reap(rhub, at=time.time() + 2 * HOUR)[("bob", "whoami")].decision == "reap"
    assert rhub.containers(user="bob") == []
    (volume,) = (rhub.workdir / "volumes").iterdir()
    assert (volume / "note.txt").read_bytes() == b"kept"
    # The next request is a first request again: the wait page, then the app, no error.
    first = rhub.get("bob", "/data/note.txt")
    assert first.is_wait and first.status == 200, first.text
    assert rhub.open("bob", "/data/note.txt", app="whoami").body == b"kept"
    (new,) = rhub.containers(user="bob")
    assert new["Id"] != old["Id"]


@pytest.mark.parametrize("source", ["kernel", "docker-stats-api"])
def test_a_websocket_that_keeps_exchanging_messages_keeps_its_session(rhub, source, monkeypatch):
    if source == "docker-stats-api":  # as where /proc or the cgroup files cannot be read
        monkeypatch.setattr(backend_module, "read_counters", lambda *args, **kwargs: None)
    opened(rhub, "carol")  # else the socket may come while Traefik loads the route: a 503
    ws = WebSocket(rhub.web_port, "/ws", rhub.identity_headers("carol"))
    try:
        assert ws.echo(b"hello") == b"hello"
        # The first sample of the container's counters, 59 minutes after its last request.
        start = time.time() + 59 * 60
        reap(rhub, at=start)
        for i in range(40):  # 40 KiB each way in the next two minutes: above 8 KiB a minute
            assert ws.echo(bytes([i]) * 1024) == bytes([i]) * 1024
        later = start + 120  # an hour and a minute without a request in the access log
        kept = reap(rhub, at=later)[("carol", "whoami")]
        assert (kept.decision, kept.source, kept.last_activity) == ("keep", "network", later)
        (record,) = json.loads((rhub.state_dir / "reaper.json").read_text())["sessions"].values()
        assert (record["counters"]["pid"] > 0) == (source == "kernel")
        # The conversation stops: an hour later the session goes, and the socket with it.
        reaped = reap(rhub, at=later + HOUR)[("carol", "whoami")]
        assert reaped.decision == "reap"
        assert ws.closed_by_peer()
    finally:
        ws.close()
    assert rhub.containers(user="carol") == []


def test_an_idle_open_websocket_does_not_keep_its_session(rhub):
    opened(rhub, "dave")
    ws = WebSocket(rhub.web_port, "/ws", rhub.identity_headers("dave"))
    try:
        assert ws.echo(b"hello") == b"hello"
        start = time.time()
        reap(rhub, at=start)
        row = reap(rhub, at=start + HOUR)[("dave", "whoami")]
        assert (row.decision, row.source) == ("reap", "access-log"), row
        assert ws.closed_by_peer()
    finally:
        ws.close()


def test_a_cpu_busy_container_is_kept_when_cpu_counts_and_reaped_when_not(rhub):
    for app, prefix in (("whoami", "/"), ("nocpu", "/nocpu/")):
        rhub.open("erin", prefix, app=app)
        burn = rhub.get("erin", f"{prefix}burn?seconds=120", html=False, method="POST")
        assert burn.status == 202, burn.text
    # First samples of both containers, almost an hour after the requests.
    first_run = time.time() + HOUR - 30
    reap(rhub, at=first_run)
    sessions = json.loads((rhub.state_dir / "reaper.json").read_text())["sessions"]
    first = {key: record["counters"]["cpu_ns"] for key, record in sessions.items()}
    # Until Docker's counters show CPU time spent since that sample (no traffic meanwhile).
    config = load_config(rhub.config_path, rhub.env())

    async def cpu_now() -> dict[str, int]:
        backend = DockerBackend(config)
        try:
            out = {}
            for info in await backend.list_sessions(detailed=False):
                counters = await backend.counters(info.container_id)
                out[f"{info.app}/{info.slug}"] = counters.cpu_ns if counters else 0
            return out
        finally:
            await backend.close()

    # The next run 35 s later (an hour and 5 s after the requests): 6 s of CPU time (12 s at
    # the 0.5 core cap) average 0.17 cores over those 35 s, above cpu_threshold (0.1).
    wait_for(
        lambda: all(v > first[k] + 6_000_000_000 for k, v in asyncio.run(cpu_now()).items()),
        40,
        "both containers to burn CPU",
        interval=0.5,
    )
    rows = reap(rhub, at=first_run + 35)
    assert (rows[("erin", "whoami")].decision, rows[("erin", "whoami")].source) == ("keep", "cpu")
    assert rows[("erin", "nocpu")].decision == "reap"
    assert [c["Config"]["Labels"]["servicehub.app"] for c in rhub.containers()] == ["whoami"]


def test_the_apps_own_report_keeps_it_but_max_lifetime_is_enforced(rhub):
    rhub.open("gina", "/reported/", app="reported")
    (container,) = rhub.containers(user="gina")
    created = container["Config"]["Labels"]["servicehub.created"]
    spawned = datetime.fromisoformat(created.replace("Z", "+00:00")).timestamp()

    def report(when: float) -> None:
        resp = raw_request(
            rhub.web_port,
            "/reported/activity",
            rhub.identity_headers("gina"),
            method="PUT",
            body=json.dumps({"last_activity": when}).encode(),
        )
        assert resp.status == 200, resp.text

    report(spawned + 3 * HOUR)
    kept = reap(rhub, at=spawned + 3 * HOUR)[("gina", "reported")]
    assert (kept.decision, kept.source, kept.idle_for) == ("keep", "endpoint", 0)
    # Busy to the last second, but a day old: it goes.
    report(spawned + 24 * HOUR)
    ended = reap(rhub, at=spawned + 24 * HOUR + 1)[("gina", "reported")]
    assert ended.decision == "reap" and "max_lifetime is 1d00h" in ended.reason, ended
    assert rhub.containers(user="gina") == []


def test_log_rotation_mid_run_loses_no_line(rhub):
    opened(rhub, "hank")
    opened(rhub, "ivan")
    reap(rhub, at=time.time())
    marks = {}

    def rotate_during_the_run(hub_name, cursor, since, source):
        # Called by the run after it has read the access log: a request lands in the old file,
        # logrotate renames it, Traefik reopens (USR1), the next request lands in the new file.
        marks["hank"] = time.time()
        lines = lines_of(rhub, "hank")
        assert rhub.get("hank", "/whoami", html=False).status == 200
        logged(rhub, "hank", count=lines + 1)
        os.rename(rhub.access_log, rhub.access_log.with_name("access.json.1"))
        rhub.traefik.send_signal(signal.SIGUSR1)
        marks["ivan"] = time.time()
        assert rhub.get("ivan", "/whoami", html=False).status == 200
        logged(rhub, "ivan", count=1)  # in the new file
        return [], cursor

    during = reap(rhub, at=time.time(), journal=rotate_during_the_run)
    assert during[("hank", "whoami")].last_activity < marks["hank"]
    after = reap(rhub, at=time.time())
    assert after[("hank", "whoami")].last_activity >= marks["hank"]
    assert after[("ivan", "whoami")].last_activity >= marks["ivan"]
    assert {r.source for r in after.values()} == {"access-log"}


def test_log_renamed_without_reopen_loses_no_line(rhub):
    # logrotate renamed the log and created a new one; the reaper ran before postrotate's USR1
    # reached Traefik (or it never does): Traefik keeps writing to access.json.1.
    opened(rhub, "lena")
    reap(rhub, at=time.time())
    rotated = rhub.access_log.with_name("access.json.1")
    os.rename(rhub.access_log, rotated)
    rhub.access_log.touch()
    reap(rhub, at=time.time())
    name = f'"RouterName":"{router(rhub, "lena")}"'

    def lines(path):
        return path.read_text().count(name)

    for _ in range(2):  # the run in between has already seen the new, empty access.json
        mark, before = time.time(), lines(rotated)
        assert rhub.get("lena", "/whoami", html=False).status == 200
        wait_for(lambda: lines(rotated) > before, 10, "lena's request in access.json.1")  # noqa: B023
        row = reap(rhub, at=time.time())[("lena", "whoami")]
        assert (row.source, row.last_activity >= mark) == ("access-log", True), row
    rhub.traefik.send_signal(signal.SIGUSR1)
    mark = time.time()
    wait_for(
        lambda: rhub.get("lena", "/whoami", html=False).status == 200 and lines(rhub.access_log),
        10,
        "Traefik to reopen its access log",
    )
    row = reap(rhub, at=time.time())[("lena", "whoami")]
    assert row.last_activity >= mark, row


def test_reaper_and_daemon_share_the_session_lock(rhub):
    rhub.open("kim", "/whoami", app="whoami")
    (old,) = rhub.containers(user="kim")
    slug = old["Config"]["Labels"]["servicehub.slug"]
    locks = SessionLocks(rhub.state_dir / "locks")
    held = locks.try_acquire("whoami", slug)
    assert held is not None
    try:
        # The daemon is spawning (or the operator removing): the reaper leaves the session.
        row = reap(rhub, at=time.time() + 2 * HOUR)[("kim", "whoami")]
        assert row.decision == "skip" and "next run" in row.reason
        assert [c["Id"] for c in rhub.containers(user="kim")] == [old["Id"]]
        # Now play the reaper half-way through a removal: route and container gone, lock held.
        (route,) = rhub.routes_dir.glob(f"{rhub.hub_name}-session-whoami-kim-*")
        name = router(rhub, "kim")
        route.unlink()
        wait_for(
            lambda: raw_request(rhub.api_port, f"/api/http/routers/{name}").status == 404,
            10,
            "Traefik to drop kim's router",
        )
        subprocess.run(["docker", "rm", "-f", old["Id"]], capture_output=True, check=True)
        first = rhub.get("kim", "/whoami")
        assert first.is_wait and first.status == 200
        wait_for(
            lambda: f"slug={slug} is locked" in rhub.daemon_log.read_text(),
            10,
            "the daemon to wait for the lock",
        )
        assert rhub.containers(user="kim") == []
    finally:
        held.release()
    resp = rhub.open("kim", "/whoami", app="whoami")
    assert resp.json()["header_user"] == "kim"
    (new,) = rhub.containers(user="kim")
    assert new["Id"] != old["Id"]
    assert "failed" not in rhub.daemon_log.read_text()


class Crash(BaseException):
    """Stands for the reaper process dying (power cut, OOM kill) in the middle of a removal."""


class CrashingBackend(DockerBackend):
    async def remove(self, container_id: str) -> None:
        raise Crash


def test_a_run_that_dies_mid_removal_is_finished_by_the_next_run(rhub):
    opened(rhub, "leo")
    later = time.time() + 2 * HOUR
    with pytest.raises(Crash):
        reap(rhub, at=later, backend_class=CrashingBackend)
    state = json.loads((rhub.state_dir / "reaper.json").read_text())
    assert list(state["sessions"]) == [f"whoami/{router(rhub, 'leo').split('-whoami-')[1][:-5]}"]
    assert route_file_gone(rhub, "leo") and len(rhub.containers(user="leo")) == 1
    row = reap(rhub, at=later)[("leo", "whoami")]
    assert row.decision == "reap"
    assert rhub.containers(user="leo") == []


def test_reap_command_and_sessions_show_last_activity(rhub):
    opened(rhub, "nora")
    dry = rhub.cli("reap", "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    (row,) = json.loads(dry.stdout)
    assert (row["user"], row["decision"]) == ("nora", "keep")
    assert row["reason"].startswith("spawned") and "grace is 5m00s" in row["reason"]
    assert not (rhub.state_dir / "reaper.json").exists()  # a dry run changes nothing
    table = rhub.cli("reap")
    assert table.returncode == 0, table.stderr
    header = table.stdout.splitlines()[0].split()
    assert header == [
        *("USER", "APP", "CONTAINER", "LAST", "ACTIVITY", "SOURCE", "IDLE", "FOR"),
        *("DECISION", "REASON"),
    ]
    assert "keep" in table.stdout and "access-log" in table.stdout
    assert "keep app=whoami" in table.stderr  # a session new to the reaper is logged
    (session,) = json.loads(rhub.cli("sessions", "--json").stdout)
    assert session["source"] == "access-log" and session["last_activity"].endswith("Z")
    assert rhub.containers(user="nora") != []
    # Never two runs at once (the timer's and an operator's).
    with SessionLocks(rhub.state_dir).try_acquire("reaper", "run"):
        busy = rhub.cli("reap")
    assert busy.returncode == 75 and "another reaper run" in busy.stderr
    assert rhub.cli("reap", "--dry-run").returncode == 0
