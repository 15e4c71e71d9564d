"""The reaper's run with Docker, the journal and the clocks replaced by stand-ins: trusted
journal events, wall-clock steps, reboots, its own activity-endpoint request.

The clock is one ``now()`` that reads both clocks, so a test steps the wall clock and the
monotonic clock separately. The access log is a real file, the activity endpoint a real HTTP
server on loopback.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from aiohttp import web

from servicehub.activity import Instant
from servicehub.config import parse_config
from servicehub.counters import Counters
from servicehub.journal import FIELDS_ATTR, JournalEvent
from servicehub.reaper import Reaper
from servicehub.reaper_collect import ENDPOINT_MAX_BYTES, ENDPOINT_TIMEOUT, ask_endpoint
from servicehub.reaper_state import load_state
from servicehub.session_info import SessionInfo

T0 = 1_800_000_000.0  # the spawn, on the wall clock
MONO0 = 50_000.0  # the spawn, on the monotonic clock
MIN, HOUR = 60.0, 3600.0
HUB = "h"
UNIT = "servicehub.service"


class Clock:
    """The host's two clocks, moved by the test."""

    def __init__(self) -> None:
        self.wall, self.mono, self.boot = T0, MONO0, "boot-1"

    def __call__(self) -> Instant:
        return Instant(self.wall, self.mono, self.boot)

    def advance(self, seconds: float) -> None:
        """Time passes: both clocks move."""
        self.wall += seconds
        self.mono += seconds

    def step_wall(self, seconds: float) -> None:
        """Someone sets the wall clock: only it moves."""
        self.wall += seconds

    def reboot(self) -> None:
        self.boot, self.mono = "boot-2", 30.0


class Backend:
    """The containers and their counters; counters are stamped with the (test's) wall clock, as
    Docker's stats API stamps them."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.sessions: dict[str, SessionInfo] = {}
        self.net: dict[str, int] = {}
        self.removed: list[str] = []

    def add(self, user: str, app: str = "a", created: float = T0) -> SessionInfo:
        slug = f"{user}-x"
        info = SessionInfo(
            container_id=f"id-{user}",
            name=f"{HUB}-{app}-{slug}",
            app=app,
            slug=slug,
            user=user,
            created=datetime.fromtimestamp(created, UTC),
            state="running",
            exit_code=0,
            address="127.0.0.1",
        )
        self.sessions[info.container_id] = info
        self.net[info.container_id] = 0
        return info

    async def list_sessions(self, detailed: bool = True) -> list[SessionInfo]:
        return list(self.sessions.values())

    async def counters(self, container_id: str, pid: int = 0) -> Counters | None:
        if container_id not in self.sessions:
            return None
        return Counters(read=self.clock.wall, net_bytes=self.net[container_id], cpu_ns=0)

    async def get(self, app: str, slug: str) -> SessionInfo | None:
        for info in self.sessions.values():
            if (info.app, info.slug) == (app, slug):
                return info
        return None

    async def remove(self, container_id: str) -> None:
        self.sessions.pop(container_id, None)
        self.removed.append(container_id)


class Routes:
    def remove_session(self, app: str, slug: str) -> bool:
        return True


class Journal:
    """journalctl's answer: the entries a test wrote, each with journald's own fields."""

    def __init__(self) -> None:
        self.events: list[JournalEvent] = []
        self.calls: list[tuple] = []

    def write(self, info: SessionInfo, when: float, *, unit: str, uid: int) -> None:
        self.events.append(JournalEvent(when, "ready", info.app, info.slug, unit=unit, uid=uid))

    def __call__(self, hub, cursor, since, *source):
        self.calls.append((hub, cursor, since, *source))
        events, self.events = self.events, []
        return events, f"cursor-{len(self.calls)}"


def config(tmp_path, port: int = 8000, **app):
    return parse_config(
        {
            "hub": HUB,
            "state_dir": str(tmp_path / "state"),
            # Nothing listens on the discard port: a removal finds no router there at once.
            "traefik": {
                "access_log": str(tmp_path / "access.json"),
                "api_url": "http://127.0.0.1:9",
            },
            "apps": {
                "a": {
                    "image": "x",
                    "port": port,
                    "idle_timeout": "10m",
                    "grace": 0,
                    "max_lifetime": "1d",
                    **app,
                }
            },
        }
    )


def request(tmp_path, info: SessionInfo, when: float) -> None:
    """A line of Traefik's JSON access log for the session's router."""
    stamp = datetime.fromtimestamp(when, UTC).isoformat().replace("+00:00", "Z")
    line = {
        "Duration": 0,
        "RouterName": f"{HUB}-{info.app}-{info.slug}@file",
        "StartUTC": stamp,
        "time": stamp,
    }
    with (tmp_path / "access.json").open("a") as fh:
        fh.write(json.dumps(line, separators=(",", ":"), sort_keys=True) + "\n")


class Hub:
    def __init__(self, tmp_path, **app) -> None:
        self.tmp_path = tmp_path
        self.clock = Clock()
        self.backend = Backend(self.clock)
        self.journal = Journal()
        self.config = config(tmp_path, **app)

    def reap(self) -> dict[str, object]:
        reaper = Reaper(
            self.config,
            self.backend,  # type: ignore[arg-type]
            Routes(),  # type: ignore[arg-type]
            now=self.clock,
            journal=self.journal,
        )
        return {row.user: row for row in asyncio.run(reaper.run())}


# --- 9.2: only the daemon's own journal entries count --------------------------------------
def test_forged_journal_events_never_keep_a_session(tmp_path):
    hub = Hub(tmp_path)
    alice, bob = hub.backend.add("alice"), hub.backend.add("bob")
    hub.clock.advance(30 * MIN)  # both idle since their spawn: past the 10 min timeout
    me = os.getuid()
    # Another account writes ready events for alice; one of the daemon's unit under another uid
    # (a root ExecStartPre, say), one with the right uid but no unit (not the daemon's process).
    hub.journal.write(alice, hub.clock.wall - 5, unit="", uid=65534)
    hub.journal.write(alice, hub.clock.wall - 4, unit=UNIT, uid=me + 1)
    hub.journal.write(alice, hub.clock.wall - 3, unit="", uid=me)
    hub.journal.write(alice, hub.clock.wall - 2, unit="user@1000.service", uid=me)
    # The daemon's own event for bob (control: genuine events still count).
    hub.journal.write(bob, hub.clock.wall - 2, unit=UNIT, uid=me)
    rows = hub.reap()
    assert (rows["alice"].decision, rows["alice"].source) == ("reap", "spawn")
    assert (rows["bob"].decision, rows["bob"].source) == ("keep", "journal")
    # journalctl is asked for the daemon's unit and uid only (the default: the reaper's own).
    (call,) = hub.journal.calls
    assert (call[-1].unit, call[-1].uid) == (UNIT, me)


def test_the_daemon_account_is_the_reapers_own_unless_configured(tmp_path):
    def source(**reaper):
        data = {"apps": {"a": {"image": "x"}}, "reaper": reaper}
        return Reaper(parse_config(data), None, None).daemon_source()  # type: ignore[arg-type]

    assert source() is not None and (source().unit, source().uid) == (UNIT, os.getuid())
    assert (source(daemon_unit="hub.service").unit, source(daemon_user="1234").uid) == (
        "hub.service",
        1234,
    )
    assert source(daemon_user="root").uid == 0
    assert source(daemon_user="no-such-account-here") is None  # warned; journal not read


# --- 9.6a: monotonic intervals; a wall-clock step never reaps an active session -------------
def test_a_wall_clock_step_forward_never_reaps_an_active_session(tmp_path):
    hub = Hub(tmp_path)
    alice = hub.backend.add("alice")
    hub.clock.advance(5 * MIN)
    request(tmp_path, alice, hub.clock.wall - 30)
    assert hub.reap()["alice"].decision == "keep"
    # Alice works on; a request, then the wall clock jumps an hour ahead, a minute passes.
    hub.clock.advance(30)
    request(tmp_path, alice, hub.clock.wall)
    hub.clock.step_wall(HOUR)
    hub.clock.advance(30)
    row = hub.reap()["alice"]
    assert (row.decision, row.source) == ("keep", "access-log"), row
    assert row.idle_for <= 60
    # Without anything new, her idle time grows by the monotonic clock, not by the step.
    hub.clock.advance(5 * MIN)
    row = hub.reap()["alice"]
    assert row.decision == "keep" and 5 * MIN <= row.idle_for <= 6 * MIN, row
    hub.clock.advance(5 * MIN)
    assert hub.reap()["alice"].decision == "reap"


def test_a_wall_clock_step_backward_neither_reaps_an_active_session_nor_keeps_an_idle_one(
    tmp_path,
):
    hub = Hub(tmp_path)
    alice, bob = hub.backend.add("alice"), hub.backend.add("bob")
    hub.clock.advance(MIN)
    request(tmp_path, bob, hub.clock.wall)  # bob's only request
    hub.clock.advance(4 * MIN)
    request(tmp_path, alice, hub.clock.wall)
    hub.reap()
    hub.clock.step_wall(-HOUR)
    bobs = []
    for _ in range(8):  # alice keeps working: a request a minute, on the stepped clock
        hub.clock.advance(MIN)
        request(tmp_path, alice, hub.clock.wall)
        rows = hub.reap()
        assert (rows["alice"].decision, rows["alice"].source) == ("keep", "access-log")
        if "bob" in rows:
            bobs.append((rows["bob"].decision, round(rows["bob"].idle_for, 3)))
    # Bob's request is "in the future" on the stepped wall clock: he still goes 10 minutes
    # (monotonic) after it.
    assert bobs == [("keep", 300 + 60 * i) for i in range(5)] + [("reap", 600)], bobs


def test_counter_rates_are_over_monotonic_seconds(tmp_path):
    hub = Hub(tmp_path, activity_bytes="8k")
    carol = hub.backend.add("carol")
    hub.clock.advance(9 * MIN)
    hub.reap()  # the first sample
    # A minute of websocket traffic (20 KiB: above 8 KiB a minute), while the wall clock jumps
    # an hour ahead. Over the wall-clock interval it would be 20 KiB in 61 minutes: nothing.
    hub.backend.net[carol.container_id] += 20 * 1024
    hub.clock.step_wall(HOUR)
    hub.clock.advance(MIN)
    row = hub.reap()["carol"]
    assert (row.decision, row.source, row.idle_for) == ("keep", "network", 0), row
    saved = load_state(hub.config.state_dir / "reaper.json")
    (record,) = saved.sessions.values()
    assert record.counters.read == hub.clock.mono  # kept on the monotonic clock
    assert (saved.boot, saved.last_run_mono) == ("boot-1", hub.clock.mono)


def test_a_reboot_never_mixes_monotonic_times(tmp_path):
    hub = Hub(tmp_path, activity_bytes="8k")
    dave = hub.backend.add("dave")
    hub.clock.advance(5 * MIN)
    request(tmp_path, dave, hub.clock.wall)
    hub.reap()
    # The host reboots (the container comes back with it); its monotonic clock starts again.
    hub.backend.net[dave.container_id] += 1024 * 1024
    hub.clock.advance(2 * MIN)
    hub.clock.reboot()
    row = hub.reap()["dave"]
    # No rate across two boots; the last activity and the age carry over by the wall clock.
    assert (row.decision, row.source) == ("keep", "access-log"), row
    assert row.idle_for == pytest.approx(2 * MIN) and row.age == pytest.approx(7 * MIN)
    hub.clock.advance(MIN)
    hub.backend.net[dave.container_id] += 20 * 1024
    assert hub.reap()["dave"].source == "network"  # rates again, within the new boot


# --- 9.6b and c: the activity endpoint ------------------------------------------------------
async def serve(handler):
    app = web.Application()
    app.router.add_get("/activity", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, port


def test_the_reapers_own_endpoint_request_is_not_the_containers_traffic(tmp_path):
    """Each request of the reaper moves 10 KiB through the container (above activity_bytes,
    8 KiB a minute); nothing else happens. The session must go after its idle timeout."""
    state: dict[str, object] = {}

    async def activity(request):
        backend = state["backend"]
        backend.net["id-erin"] += 10 * 1024  # the request and its answer, on the wire
        return web.json_response({"last_activity": T0})

    async def scenario():
        runner, port = await serve(activity)
        try:
            hub = Hub(tmp_path, port=port, activity_endpoint="/activity", activity_bytes="8k")
            state["backend"] = hub.backend
            hub.backend.add("erin")
            decisions = []
            for _ in range(15):
                hub.clock.advance(MIN)
                reaper = Reaper(
                    hub.config, hub.backend, Routes(), now=hub.clock, journal=hub.journal
                )
                (row,) = await reaper.run()
                decisions.append((row.decision, row.source))
                if row.decision == "reap":
                    break
            return decisions
        finally:
            await runner.cleanup()

    decisions = asyncio.run(scenario())
    assert ("keep", "network") not in decisions, decisions
    assert decisions[-1] == ("reap", "endpoint") and len(decisions) == 10, decisions


def ask(handler):
    async def scenario():
        runner, port = await serve(handler)
        try:
            app = config_app(port)
            info = Backend(Clock()).add("gina")
            import aiohttp

            async with aiohttp.ClientSession() as http:
                started = time.monotonic()
                found = await ask_endpoint(http, app, info, T0 + HOUR)
                return found, time.monotonic() - started
        finally:
            await runner.cleanup()

    return asyncio.run(scenario())


def config_app(port):
    data = {"apps": {"a": {"image": "x", "port": port, "activity_endpoint": "/activity"}}}
    return parse_config(data).apps["a"]


def test_an_activity_report_within_the_size_limit_counts():
    async def small(request):
        return web.json_response({"last_activity": T0})

    found, _ = ask(small)
    assert found is not None and found.time == T0


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
def test_an_activity_report_above_the_size_limit_is_no_signal(declared, caplog):
    # Valid JSON, padded past 64 KiB: read whole, it would count.
    body = b'{"last_activity": %d}' % T0 + b" " * ENDPOINT_MAX_BYTES

    async def big(request):
        if declared:
            return web.Response(body=body, content_type="application/json")
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for start in range(0, len(body), 4096):
            await resp.write(body[start : start + 4096])
        await resp.write_eof()
        return resp

    found, _ = ask(big)
    assert found is None
    assert "more than 65536 bytes" in caplog.text


def test_an_endless_activity_report_is_cut_short():
    async def endless(request):
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        try:
            while True:
                await resp.write(b" " * 4096)
        except (ConnectionError, RuntimeError):
            return resp

    found, seconds = ask(endless)
    assert found is None
    assert seconds < ENDPOINT_TIMEOUT / 2  # not read until the timeout ends it


# --- issue 16: a quiet hub's journal stays small ------------------------------------------
def decisions_logged(caplog) -> list[tuple[str, str]]:
    """(user, what the row said) for each reap-decision entry of the last run."""
    entries = [getattr(r, FIELDS_ATTR, {}) for r in caplog.records]
    found = [
        (e["USER"], f"{e['DECISION']}:{e['SIGNAL']}")
        for e in entries
        if e.get("EVENT") == "reap-decision"
    ]
    caplog.clear()
    return sorted(found)


def test_a_keep_is_logged_again_only_when_its_signal_changes(tmp_path, caplog):
    caplog.set_level("INFO", logger="servicehub.reaper")
    hub = Hub(tmp_path)
    alice, bob = hub.backend.add("alice"), hub.backend.add("bob")
    hub.clock.advance(MIN)
    request(tmp_path, alice, hub.clock.wall)
    hub.reap()
    # The first run logs every session: each is new to the reaper.
    assert decisions_logged(caplog) == [("alice", "keep:access-log"), ("bob", "keep:spawn")]
    hub.clock.advance(MIN)
    request(tmp_path, alice, hub.clock.wall)
    rows = hub.reap()
    assert rows["alice"].source == "access-log" and rows["bob"].source == "spawn"
    assert decisions_logged(caplog) == []  # nothing changed: nothing logged, both still kept
    hub.clock.advance(MIN)
    hub.backend.net[bob.container_id] += 10**6  # bob's app sends a megabyte: a new signal
    hub.reap()
    assert decisions_logged(caplog) == [("bob", "keep:network")]
    # A removal is always logged.
    hub.clock.advance(30 * MIN)
    rows = hub.reap()
    assert {rows["alice"].decision, rows["bob"].decision} == {"reap"}
    assert decisions_logged(caplog) == [("alice", "reap:access-log"), ("bob", "reap:network")]


def test_a_new_container_of_a_session_is_logged_even_with_the_same_signal(tmp_path, caplog):
    caplog.set_level("INFO", logger="servicehub.reaper")
    hub = Hub(tmp_path)
    first = hub.backend.add("alice")
    hub.reap()
    assert decisions_logged(caplog) == [("alice", "keep:spawn")]
    # Removed by hand and spawned again: the same session, another container.
    del hub.backend.sessions[first.container_id]
    hub.clock.advance(MIN)
    second = replace(
        first, container_id="id-alice-2", created=datetime.fromtimestamp(hub.clock.wall, UTC)
    )
    hub.backend.sessions[second.container_id] = second
    hub.backend.net[second.container_id] = 0
    hub.reap()
    assert decisions_logged(caplog) == [("alice", "keep:spawn")]


def test_what_the_state_remembers_as_logged_is_what_the_row_said(tmp_path):
    hub = Hub(tmp_path)
    hub.backend.add("alice")
    hub.backend.add("bob", app="gone")  # not in the config: skipped
    rows = hub.reap()
    sessions = load_state(tmp_path / "state" / "reaper.json").sessions
    assert {k: r.logged for k, r in sessions.items()} == {
        "a/alice-x": rows["alice"].said,
        "gone/bob-x": rows["bob"].said,
    }
    assert rows["bob"].said == "skip:-"


# --- a swarm node's collector: samples on the node's clock, up to a period old ---------------
class NodeBackend(Backend):
    """Counters as ``SwarmBackend`` gives them: the node collector's last sample, stamped with
    the node's monotonic clock and boot, whenever the node wrote it."""

    def __init__(self, clock: Clock) -> None:
        super().__init__(clock)
        self.samples: dict[str, Counters] = {}

    def collect(self, info: SessionInfo, node_time: float, net: int, cpu_s: float) -> None:
        """The node's collector writes its file."""
        self.samples[info.container_id] = Counters(
            node_time, net, int(cpu_s * 1e9), pid=7, boot="node-boot"
        )

    async def counters(self, container_id: str, pid: int = 0) -> Counters | None:
        return self.samples.get(container_id)


def node_hub(tmp_path, **app) -> Hub:
    hub = Hub(tmp_path, **app)
    hub.backend = NodeBackend(hub.clock)
    return hub


def sampled_once(tmp_path, name: str) -> tuple[Hub, SessionInfo]:
    """A session of a CPU-counting app, 9 min old, whose node wrote one idle sample at its
    1000 s, seen by one reaper run."""
    hub = node_hub(tmp_path, cpu_threshold=0.3)
    info = hub.backend.add(name)
    hub.clock.advance(9 * MIN)
    hub.backend.collect(info, 1000.0, 0, 0.0)
    hub.reap()
    return hub, info


def test_a_nodes_sample_gives_a_rate_over_the_nodes_own_interval(tmp_path):
    hub, erin = sampled_once(tmp_path, "erin")
    # Half a core over the node's 20 s between its two samples. Over the reaper's minute it
    # would be a sixth of a core (below cpu_threshold), over ~0 s a division by nothing.
    hub.backend.collect(erin, 1020.0, 0, 10.0)
    hub.clock.advance(MIN)
    row = hub.reap()["erin"]
    assert (row.decision, row.source, row.idle_for) == ("keep", "cpu", 0), row
    (record,) = load_state(hub.config.state_dir / "reaper.json").sessions.values()
    assert (record.counters.read, record.counters.boot) == (1020.0, "node-boot")  # as taken


def test_a_nodes_file_not_rewritten_since_the_last_run_is_no_interval(tmp_path):
    hub = node_hub(tmp_path, activity_bytes="8k", idle_timeout="3m")
    fay = hub.backend.add("fay")
    hub.clock.advance(MIN)
    request(tmp_path, fay, hub.clock.wall)
    hub.backend.collect(fay, 1000.0, 0, 0.0)
    hub.reap()
    # The node's collector is late: the same sample again. Not a minute without traffic.
    hub.clock.advance(MIN)
    row = hub.reap()["fay"]
    assert (row.decision, row.source) == ("keep", "access-log"), row
    (record,) = load_state(hub.config.state_dir / "reaper.json").sessions.values()
    assert record.rates == () and record.counters.read == 1000.0
    # Its next sample: 20 KiB over the node's 80 s since the first one counts.
    hub.backend.collect(fay, 1080.0, 20 * 1024, 0.0)
    hub.clock.advance(MIN)
    row = hub.reap()["fay"]
    assert (row.decision, row.source, row.idle_for) == ("keep", "network", 0), row


def test_a_sample_of_another_boot_is_no_interval(tmp_path):
    hub, gus = sampled_once(tmp_path, "gus")
    # The node rebooted (the task would be gone with it; a stand-in here): its clock's 1000 s
    # of a busy core are not comparable with the first sample's.
    hub.backend.samples[gus.container_id] = Counters(2000.0, 0, 1000 * 10**9, boot="node-boot-2")
    hub.clock.advance(MIN)
    assert hub.reap()["gus"].source == "spawn"
