"""The idle reaper: one run collects every session's signals, decides, saves, then removes.

A run (``servicehub reap``, started by a systemd timer every minute):
1. read the access log since the saved position (requests per session router);
2. read the daemon's journal events since the saved cursor (spawned, ready), only the entries
   journald itself attributes to the daemon's unit and uid;
3. list the hub's containers (after the log, so every logged request belongs to a listed one);
4. sample each running container's counters (network bytes, CPU time), then ask the apps that
   have an ``activity_endpoint``, then sample those again: the next run's difference starts
   after the reaper's own request, so its traffic never counts as the container's;
5. place every signal on the monotonic clock and decide each session with ``activity.decide``
   (pure);
6. save the state (atomically), then remove what was decided, each under the session's lock.

Time comes from one injectable ``now()`` that reads both clocks (``activity.Instant``): intervals
and idle times are monotonic, so a wall-clock step never makes an active session look idle.
One session's failure (Docker error, app not answering) is logged and never stops the others.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import pwd
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, TypeVar, overload

import aiohttp

from .accesslog import LogPosition, read_new_requests
from .activity import (
    KEEP,
    REAP,
    Activity,
    Decision,
    Instant,
    Timeline,
    decide,
    latest,
    parse_report,
    sample_time,
    usage_activity,
    usage_between,
)
from .backend import Backend, SessionInfo
from .config import AppConfig, Config
from .counters import Counters
from .journal import ACTIVITY_EVENTS, DaemonSource, JournalEvent, event, read_events
from .locks import SessionLocks
from .probes import Http
from .reaper_state import (
    STATE_FILE,
    ReaperState,
    SessionRecord,
    load_state,
    save_state,
)
from .routes import RouteStore
from .teardown import Ended, LockUnusable, Teardown
from .times import iso

log = logging.getLogger("servicehub.reaper")
SKIP, ERROR = "skip", "error"
PARALLEL = 32  # Docker API calls in flight at once
ENDPOINT_TIMEOUT = 2.0
ENDPOINT_MAX_BYTES = 64 * 1024  # an activity report is a few bytes; more is no signal
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
T = TypeVar("T")

JournalReader = Callable[
    [str, str | None, float, DaemonSource], tuple[list[JournalEvent], str | None]
]


@functools.cache
def boot_id() -> str:
    try:
        return BOOT_ID.read_text().strip()
    except OSError:  # not Linux: a reboot then shows as the monotonic clock going back
        return "unknown"


def system_now() -> Instant:
    """The host's clocks: wall (unix time) and CLOCK_BOOTTIME, which never steps, counts the
    time the machine was suspended, and is the same for every process of one boot."""
    return Instant(time.time(), time.clock_gettime(time.CLOCK_BOOTTIME), boot_id())


class ReaperBusy(RuntimeError):
    """Another reaper run is in progress."""


@dataclass
class Row:
    """One session's line in the run's report (and in the journal)."""

    user: str
    app: str
    slug: str
    container: str
    container_id: str
    last_activity: float | None
    source: str
    idle_for: float
    age: float
    decision: str  # keep, reap, skip, error
    reason: str

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["last_activity"] = iso(self.last_activity) if self.last_activity else None
        data["idle_for"] = round(self.idle_for, 1)
        data["age"] = round(self.age, 1)
        return data


def state_path(config: Config) -> Path:
    return config.state_dir / STATE_FILE


class Reaper:
    def __init__(
        self,
        config: Config,
        backend: Backend,
        routes: RouteStore,
        *,
        now: Callable[[], Instant] = system_now,
        locks: SessionLocks | None = None,
        http: aiohttp.ClientSession | None = None,
        journal: JournalReader = read_events,
        state_file: Path | None = None,
    ) -> None:
        self.config = config
        self.backend = backend
        self.routes = routes
        self.now = now
        self.locks = locks or SessionLocks.of_hub(config.state_dir)
        self.http = Http(http)
        self.teardown = Teardown(
            config.hub, config.traefik.api_url, backend, routes, self.locks, self.http
        )
        self.journal = journal
        self.state_file = state_file or state_path(config)

    async def run(self, dry_run: bool = False) -> list[Row]:
        """One run. Two runs never overlap (the timer's and an operator's): the second one
        raises ``ReaperBusy``. A dry run changes nothing and needs no lock."""
        held = None
        if not dry_run:
            self.state_file.parent.mkdir(parents=True, exist_ok=True)
            held = SessionLocks(self.state_file.parent).try_acquire("reaper", "run")
            if held is None:
                raise ReaperBusy(
                    f"another reaper run holds {self.state_file.parent}/reaper.run.lock"
                )
        try:
            return await self._run(dry_run)
        finally:
            await self.close()
            if held is not None:
                held.release()

    async def _run(self, dry_run: bool) -> list[Row]:
        clock = time.perf_counter  # durations for the summary line only
        started = clock()
        now = self.now()
        state = load_state(self.state_file)
        timeline = Timeline(now, _window(state, now))
        seen, position = read_new_requests(self.config.traefik.access_log, state.position)
        log_read = clock() - started
        source, events, cursor = self._journal(state, now)
        docker_started = clock()
        infos = await self.backend.list_sessions(detailed=False)
        ours = [i for i in infos if i.app in self.config.apps]
        running = [i for i in ours if i.running]
        previous = {r.container_id: r.counters.pid for r in state.sessions.values() if r.counters}

        async def counters(info: SessionInfo) -> Counters | None:
            return await self._sample(info, previous.get(info.container_id, 0))

        samples = await _each(running, counters)
        blind = [i.name for i in running if samples.get(i.container_id) is None]
        if blind:
            log.warning(
                "no network or CPU counters (neither /proc nor Docker's stats API) for %d running "
                "container(s) (%s): only the access log, the journal and activity endpoints "
                "count for them",
                len(blind),
                ", ".join(blind[:3]) + (", ..." if len(blind) > 3 else ""),
            )
        docker = clock() - docker_started
        asked, reports = await self._reports(running, now)
        # The next run's difference starts after the reaper's own request to the endpoint.
        after_asking = await _each(asked, counters)

        rows: list[tuple[Row, SessionInfo, Decision]] = []
        new_state = ReaperState(
            position=position,
            journal_cursor=cursor,
            last_run=now.wall,
            boot=now.boot,
            last_run_mono=now.mono,
        )
        for info in sorted(infos, key=lambda i: (i.app, i.user, i.slug)):
            key = info.key.state_key
            record = state.sessions.get(key)
            if record is not None and record.container_id != info.container_id:
                record = None  # an older container of this session: its counters do not apply
            # The record's monotonic times count only on the boot (and clock) they were read on.
            kept = record if record is not None and timeline.window is not None else None
            spawn = (
                kept.spawn_mono
                if kept is not None and kept.spawn_mono is not None
                else timeline.place(_created(info), new=record is None)
            )
            app = self.config.apps.get(info.app)
            if app is None:
                age = now.mono - spawn
                rows.append((_skip(info, age, "app not in the config: left alone"), info, _none))
                new_state.sessions[key] = SessionRecord(info.container_id, None, None, None, spawn)
                continue
            sample = samples.get(info.container_id)
            report = reports.get(info.container_id)
            signals = [
                _remembered(record, kept, timeline),
                _placed(_logged(seen, self.config.hub, info), timeline, state.position is not None),
                _placed(
                    _journaled(events, info, source), timeline, state.journal_cursor is not None
                ),
                _reported(report, record, kept, timeline),
                usage_activity(
                    app, usage_between(kept.counters if kept else None, sample), now.mono
                ),
            ]
            # All monotonic; activity before the spawn was an older container's.
            found = latest(*[s for s in signals if s is not None and s.time >= spawn])
            decision = decide(app, spawn, info.running, found, now.mono)
            # For people (the table, the journal, ``servicehub sessions``): today's wall clock.
            shown = _on_wall_clock(found, timeline)
            decision = replace(decision, last=_on_wall_clock(decision.last, timeline))
            if info.container_id in after_asking:
                # Sampled after the reaper's request; if that failed, no baseline (one run
                # without a rate) rather than one that would count the request.
                baseline = after_asking[info.container_id]
            else:
                baseline = sample or (kept.counters if kept else None)
            new_state.sessions[key] = SessionRecord(
                container_id=info.container_id,
                last=shown,
                counters=baseline,
                last_mono=found.time if found else None,
                spawn_mono=spawn,
                report=report.time if report else (record.report if record else None),
            )
            rows.append((_row(info, decision), info, decision))

        if not dry_run:
            try:
                save_state(self.state_file, new_state)
            except OSError as exc:
                # Without saved state the next run would read the log again: harmless. Go on.
                log.error("cannot save reaper state %s: %s", self.state_file, exc)
            for row, info, decision in rows:
                if row.decision == REAP:
                    await self._reap(row, info, decision, position)
        for row, _, _ in rows:
            self._log(row, dry_run)
        log.info(
            "reaper run%s: %d session(s), %d reaped; access log %.3f s (%d routers), "
            "Docker %.3f s, total %.3f s",
            " (dry run)" if dry_run else "",
            len(rows),
            sum(1 for row, _, _ in rows if row.decision == REAP and not dry_run),
            log_read,
            len(seen),
            docker,
            clock() - started,
        )
        return [row for row, _, _ in rows]

    # --- collectors ---------------------------------------------------------------------
    def daemon_source(self) -> DaemonSource | None:
        """The daemon's unit and uid, the only writer whose journal events count."""
        user = self.config.reaper.daemon_user
        if user is None:  # both units run as the same account on an installed hub
            return DaemonSource(self.config.reaper.daemon_unit, os.getuid())
        if user.isdigit():
            return DaemonSource(self.config.reaper.daemon_unit, int(user))
        try:
            return DaemonSource(self.config.reaper.daemon_unit, pwd.getpwnam(user).pw_uid)
        except KeyError:
            log.warning("reaper.daemon_user %r: no such account; journal events not read", user)
            return None

    def _journal(
        self, state: ReaperState, now: Instant
    ) -> tuple[DaemonSource | None, list[JournalEvent], str | None]:
        source = self.daemon_source()
        if source is None:
            return None, [], state.journal_cursor
        longest = max(a.idle_timeout for a in self.config.apps.values())
        since = state.last_run if state.last_run is not None else now.wall - longest
        try:
            return source, *self.journal(self.config.hub, state.journal_cursor, since, source)
        except Exception:
            log.exception("reading the journal failed; going on without it")
            return source, [], state.journal_cursor

    async def _sample(self, info: SessionInfo, pid: int) -> Counters | None:
        """The container's counters, their time re-stamped on the monotonic clock."""
        before = self.now()
        found = await self.backend.counters(info.container_id, pid)
        after = self.now()
        if found is None:
            return None
        return replace(found, read=sample_time(found.read, before, after))

    async def _reports(
        self, running: list[SessionInfo], now: Instant
    ) -> tuple[list[SessionInfo], dict[str, Activity | None]]:
        asking = [i for i in running if self.config.apps[i.app].activity_endpoint and i.address]
        if not asking:
            return [], {}
        http = self.http()

        async def ask(info: SessionInfo) -> Activity | None:
            return await ask_endpoint(http, self.config.apps[info.app], info, now.wall)

        return asking, await _each(asking, ask)

    # --- removal ------------------------------------------------------------------------
    async def _reap(
        self, row: Row, info: SessionInfo, decision: Decision, position: LogPosition | None
    ) -> None:
        async def request_arrived() -> bool:
            """Last look: a request logged while this run was deciding keeps the session. Every
            line after this run's position is such a request, whatever its wall-clock time."""
            if decision.kind != "idle":
                return False
            late, _ = read_new_requests(self.config.traefik.access_log, position)
            when = late.get(info.key.provider_router(self.config.hub))
            if when is not None and (position is not None or when > decision.last.time):
                row.last_activity, row.source, row.idle_for = when, "access-log", 0.0
                return True
            return False

        try:
            ended = await self.teardown.stop(
                info.key, info.container_id, wait=None, last_look=request_arrived
            )
        except LockUnusable as exc:
            row.decision, row.reason = ERROR, f"session lock unusable ({exc}); not removed"
            return
        except Exception as exc:
            log.exception("removing %s failed", info.name)
            row.decision, row.reason = ERROR, f"removal failed: {exc}"
            return
        if ended is Ended.BUSY:
            row.decision, row.reason = SKIP, "the daemon is starting or re-routing it: next run"
        elif ended is Ended.KEPT:
            row.decision, row.reason = KEEP, "a request arrived during this run"
        elif ended is Ended.REPLACED:
            row.decision, row.reason = SKIP, "replaced by a new container meanwhile"

    async def close(self) -> None:
        await self.http.close()

    def _log(self, row: Row, dry_run: bool) -> None:
        verb = {KEEP: "keep", REAP: "reaped", SKIP: "skipped", ERROR: "error"}[row.decision]
        if dry_run and row.decision == REAP:
            verb = "would reap"
        log.log(
            logging.ERROR if row.decision == ERROR else logging.INFO,
            "%s app=%s slug=%s container=%s: %s",
            verb,
            row.app,
            row.slug,
            row.container,
            row.reason,
            extra=event(
                "reap-decision",
                hub=self.config.hub,
                app=row.app,
                slug=row.slug,
                user=row.user,
                container=row.container,
                decision=row.decision,
                reason=row.reason,
                signal=row.source,
                last_activity=iso(row.last_activity) if row.last_activity else None,
                idle_seconds=int(row.idle_for),
                age_seconds=int(row.age),
                dry_run="1" if dry_run else "0",
            ),
        )


async def ask_endpoint(
    http: aiohttp.ClientSession, app: AppConfig, info: SessionInfo, now: float
) -> Activity | None:
    """GET the app's own activity report; anything but a usable answer is no signal. The body is
    read up to ENDPOINT_MAX_BYTES: a bigger one is no signal either (and a warning)."""
    url = f"http://{info.address}:{app.port}{app.activity_endpoint}"
    try:
        async with http.get(
            url,
            allow_redirects=False,
            # Closed when answered, so its teardown too is over before the second sample.
            headers={"Accept-Encoding": "identity", "Connection": "close"},
            timeout=aiohttp.ClientTimeout(total=ENDPOINT_TIMEOUT),
        ) as resp:
            if resp.status != 200:
                log.warning("activity endpoint of %s answered %s", info.name, resp.status)
                return None
            body = await _read_at_most(resp, ENDPOINT_MAX_BYTES)
            if body is None:
                resp.close()  # the rest is never read: the connection goes
                log.warning(
                    "activity endpoint of %s answered more than %d bytes: ignored",
                    info.name,
                    ENDPOINT_MAX_BYTES,
                )
                return None
        data = json.loads(body)
    except (OSError, TimeoutError, aiohttp.ClientError, ValueError) as exc:
        log.warning("activity endpoint of %s failed: %s", info.name, exc or type(exc).__name__)
        return None
    report = parse_report(data, now)
    if report is None:
        log.warning("activity endpoint of %s gave no usable last_activity", info.name)
    return report


async def _read_at_most(resp: aiohttp.ClientResponse, limit: int) -> bytes | None:
    """The body, or None as soon as it is known to be longer than ``limit`` bytes."""
    if resp.content_length is not None and resp.content_length > limit:
        return None
    body = bytearray()
    async for chunk in resp.content.iter_chunked(16 * 1024):
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


async def _each(
    infos: list[SessionInfo], fetch: Callable[[SessionInfo], Awaitable[T | None]]
) -> dict[str, T | None]:
    """``fetch`` for every session, PARALLEL at a time; a failure is logged and gives None."""
    gate = asyncio.Semaphore(PARALLEL)

    async def one(info: SessionInfo) -> T | None:
        async with gate:
            try:
                return await fetch(info)
            except Exception as exc:
                log.warning("collecting from %s failed: %s", info.name, exc)
                return None

    results = await asyncio.gather(*(one(i) for i in infos))
    return {i.container_id: r for i, r in zip(infos, results, strict=True)}


def _created(info: SessionInfo) -> float:
    return info.created.timestamp()


def _logged(seen: dict[str, float], hub: str, info: SessionInfo) -> Activity | None:
    when = seen.get(info.key.provider_router(hub))
    return Activity(when, "access-log") if when is not None else None


def _journaled(
    events: list[JournalEvent], info: SessionInfo, source: DaemonSource | None
) -> Activity | None:
    """The session's latest spawned/ready event, counted only if journald attributes it to the
    daemon (its unit and uid): anyone can write the SERVICEHUB_* fields, nobody those two."""
    if source is None:
        return None
    times = [
        e.time
        for e in events
        if e.event in ACTIVITY_EVENTS
        and e.key == info.key
        and (e.unit, e.uid) == (source.unit, source.uid)
    ]
    return Activity(max(times), "journal") if times else None


def _window(state: ReaperState, now: Instant) -> float | None:
    """Monotonic seconds since the previous run, if it ran on this boot (and its clock)."""
    if state.boot != now.boot or state.last_run_mono is None or state.last_run_mono > now.mono:
        return None
    return now.mono - state.last_run_mono


def _placed(found: Activity | None, timeline: Timeline, new: bool) -> Activity | None:
    """A wall-clock signal on the monotonic clock (see ``Timeline.place``)."""
    if found is None:
        return None
    return Activity(timeline.place(found.time, new=new), found.source)


def _remembered(
    record: SessionRecord | None, kept: SessionRecord | None, timeline: Timeline
) -> Activity | None:
    """The last activity of earlier runs: its monotonic time when it is of this boot, else
    its wall-clock time (a reboot, a state from before monotonic times were kept)."""
    if kept is not None and kept.last is not None and kept.last_mono is not None:
        return Activity(kept.last_mono, kept.last.source)
    if record is not None and record.last is not None:
        return Activity(timeline.place(record.last.time, new=False), record.last.source)
    return None


def _reported(
    report: Activity | None,
    record: SessionRecord | None,
    kept: SessionRecord | None,
    timeline: Timeline,
) -> Activity | None:
    """The app's report. The same report as the previous run's is no news: its time is already
    in the record. A report is known to be from after the previous run when the container is
    new since then or the report changed."""
    if report is None:
        return None
    previous = record.report if record is not None else None
    if kept is not None and previous == report.time:
        return None
    new = record is None or (previous is not None and previous != report.time)
    return Activity(timeline.place(report.time, new=new), report.source)


@overload
def _on_wall_clock(found: Activity, timeline: Timeline) -> Activity: ...
@overload
def _on_wall_clock(found: None, timeline: Timeline) -> None: ...
def _on_wall_clock(found: Activity | None, timeline: Timeline) -> Activity | None:
    return Activity(timeline.wall(found.time), found.source) if found is not None else None


def _row(info: SessionInfo, decision: Decision) -> Row:
    return Row(
        user=info.user,
        app=info.app,
        slug=info.slug,
        container=info.name,
        container_id=info.container_id,
        last_activity=decision.last.time,
        source=decision.last.source,
        idle_for=decision.idle_for,
        age=decision.age,
        decision=decision.action,
        reason=decision.reason,
    )


_none = Decision(action=SKIP, kind="skip", reason="", last=Activity(0, "none"), idle_for=0, age=0)


def _skip(info: SessionInfo, age: float, reason: str) -> Row:
    return replace(
        _row(info, _none), last_activity=None, source="-", age=max(0.0, age), reason=reason
    )
