"""The idle reaper: one run collects every session's signals, decides, saves, then removes.

A run (``servicehub reap``, started by a systemd timer every minute):
1. read the access log since the saved position (requests per session router);
2. read the daemon's journal events since the saved cursor (spawned, ready);
3. list the hub's containers (after the log, so every logged request belongs to a listed one);
4. sample each running container's counters (network bytes, CPU time) and ask the apps that
   have an ``activity_endpoint``;
5. decide each session with ``activity.decide`` (pure);
6. save the state (atomically), then remove what was decided, each under the session's lock.

One session's failure (Docker error, app not answering) is logged and never stops the others.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import aiohttp

from .accesslog import LogPosition, read_new_requests
from .activity import (
    KEEP,
    REAP,
    Activity,
    Counters,
    Decision,
    decide,
    iso,
    latest,
    parse_report,
    usage_activity,
    usage_between,
)
from .backend import Backend, SessionInfo
from .config import AppConfig, Config
from .journal import ACTIVITY_EVENTS, JournalEvent, event, read_events
from .locks import SessionLocks
from .probes import poll_until, traefik_has_router
from .reaper_state import (
    STATE_FILE,
    ReaperState,
    SessionRecord,
    load_state,
    save_state,
    session_key,
)
from .routes import RouteStore, router_name

log = logging.getLogger("servicehub.reaper")
SKIP, ERROR = "skip", "error"
PARALLEL = 32  # Docker API calls in flight at once
ENDPOINT_TIMEOUT = 2.0
ROUTE_TIMEOUT = 10.0  # how long a removal waits for Traefik to drop the session's router
T = TypeVar("T")

JournalReader = Callable[[str, str | None, float], tuple[list[JournalEvent], str | None]]


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
        now: Callable[[], float] = time.time,
        locks: SessionLocks | None = None,
        http: aiohttp.ClientSession | None = None,
        journal: JournalReader = read_events,
        state_file: Path | None = None,
    ) -> None:
        self.config = config
        self.backend = backend
        self.routes = routes
        self.now = now
        self.locks = locks or SessionLocks(config.state_dir / "locks")
        self.http = http
        self._own_http: aiohttp.ClientSession | None = None
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
        clock = time.perf_counter
        started = clock()
        now = self.now()
        state = load_state(self.state_file)
        seen, position = read_new_requests(self.config.traefik.access_log, state.position)
        log_read = clock() - started
        events, cursor = self._journal(state, now)
        docker_started = clock()
        infos = await self.backend.list_sessions(detailed=False)
        ours = [i for i in infos if i.app in self.config.apps]
        running = [i for i in ours if i.running]
        previous = {r.container_id: r.counters.pid for r in state.sessions.values() if r.counters}

        async def counters(info: SessionInfo) -> Counters | None:
            return await self.backend.counters(
                info.container_id, previous.get(info.container_id, 0)
            )

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
        reports = await self._reports(running, now)

        rows: list[tuple[Row, SessionInfo, Decision]] = []
        new_state = ReaperState(position=position, journal_cursor=cursor, last_run=now)
        for info in sorted(infos, key=lambda i: (i.app, i.user, i.slug)):
            app = self.config.apps.get(info.app)
            if app is None:
                rows.append((_skip(info, now, "app not in the config: left alone"), info, _none))
                continue
            key = session_key(info.app, info.slug)
            record = state.sessions.get(key)
            if record is not None and record.container_id != info.container_id:
                record = None  # an older container of this session: its counters do not apply
            sample = samples.get(info.container_id)
            signals = [
                record.last if record else None,
                _logged(seen, self.config.hub, info),
                _journaled(events, info),
                reports.get(info.container_id),
                usage_activity(
                    app, usage_between(record.counters if record else None, sample), now
                ),
            ]
            found = latest(*[s for s in signals if s is not None and s.time >= _created(info)])
            decision = decide(app, _created(info), info.running, found, now)
            new_state.sessions[key] = SessionRecord(
                container_id=info.container_id,
                last=found,
                counters=sample or (record.counters if record else None),
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
    def _journal(self, state: ReaperState, now: float) -> tuple[list[JournalEvent], str | None]:
        longest = max(a.idle_timeout for a in self.config.apps.values())
        since = state.last_run if state.last_run is not None else now - longest
        try:
            return self.journal(self.config.hub, state.journal_cursor, since)
        except Exception:
            log.exception("reading the journal failed; going on without it")
            return [], state.journal_cursor

    async def _reports(self, running: list[SessionInfo], now: float) -> dict[str, Activity | None]:
        asking = [i for i in running if self.config.apps[i.app].activity_endpoint and i.address]
        if not asking:
            return {}
        http = await self._http()

        async def ask(info: SessionInfo) -> Activity | None:
            return await ask_endpoint(http, self.config.apps[info.app], info, now)

        return await _each(asking, ask)

    # --- removal ------------------------------------------------------------------------
    async def _reap(
        self, row: Row, info: SessionInfo, decision: Decision, position: LogPosition | None
    ) -> None:
        try:
            self.locks.prepare()
            held = self.locks.try_acquire(info.app, info.slug)
        except OSError as exc:
            row.decision, row.reason = ERROR, f"session lock unusable ({exc}); not removed"
            return
        if held is None:
            row.decision, row.reason = SKIP, "the daemon is starting or re-routing it: next run"
            return
        with held:
            try:
                await self._remove_locked(row, info, decision, position)
            except Exception as exc:
                log.exception("removing %s failed", info.name)
                row.decision, row.reason = ERROR, f"removal failed: {exc}"

    async def _remove_locked(
        self, row: Row, info: SessionInfo, decision: Decision, position: LogPosition | None
    ) -> None:
        if decision.kind == "idle":
            # Last look: a request logged while this run was deciding keeps the session.
            late, _ = read_new_requests(self.config.traefik.access_log, position)
            when = late.get(_router(self.config.hub, info))
            if when is not None and when > decision.last.time:
                row.decision, row.reason = KEEP, "a request arrived during this run"
                row.last_activity, row.source, row.idle_for = when, "access-log", 0.0
                return
        current = await self.backend.get(info.app, info.slug)
        if current is not None and current.container_id != info.container_id:
            row.decision, row.reason = SKIP, "replaced by a new container meanwhile"
            return
        # The route first, and until Traefik has dropped it: a request from then on reaches the
        # daemon, which waits for this lock and spawns a fresh container, instead of meeting a
        # dying one (a 502).
        self.routes.remove_session(info.app, info.slug)
        if current is not None and current.running:
            await self._route_gone(_router(self.config.hub, info).removesuffix("@file"))
        if current is not None:
            await self.backend.remove(info.container_id)

    async def _route_gone(self, name: str) -> None:
        http = await self._http()
        api = self.config.traefik.api_url

        async def gone() -> bool:
            return not await traefik_has_router(http, api, name)

        if not await poll_until(gone, ROUTE_TIMEOUT):
            log.warning("Traefik still routes %s after %g s; removing anyway", name, ROUTE_TIMEOUT)

    async def _http(self) -> aiohttp.ClientSession:
        if self.http is None:
            self.http = self._own_http = aiohttp.ClientSession()
        return self.http

    async def close(self) -> None:
        if self._own_http is not None:
            await self._own_http.close()
            self._own_http = self.http = None

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
    """GET the app's own activity report; anything but a usable answer is no signal."""
    url = f"http://{info.address}:{app.port}{app.activity_endpoint}"
    try:
        async with http.get(
            url, allow_redirects=False, timeout=aiohttp.ClientTimeout(total=ENDPOINT_TIMEOUT)
        ) as resp:
            if resp.status != 200:
                log.warning("activity endpoint of %s answered %s", info.name, resp.status)
                return None
            data = await resp.json(content_type=None)
    except (OSError, TimeoutError, aiohttp.ClientError, ValueError) as exc:
        log.warning("activity endpoint of %s failed: %s", info.name, exc or type(exc).__name__)
        return None
    report = parse_report(data, now)
    if report is None:
        log.warning("activity endpoint of %s gave no usable last_activity", info.name)
    return report


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


def _router(hub: str, info: SessionInfo) -> str:
    return router_name(hub, info.app, info.slug) + "@file"


def _created(info: SessionInfo) -> float:
    return info.created.timestamp()


def _logged(seen: dict[str, float], hub: str, info: SessionInfo) -> Activity | None:
    when = seen.get(_router(hub, info))
    return Activity(when, "access-log") if when is not None else None


def _journaled(events: list[JournalEvent], info: SessionInfo) -> Activity | None:
    times = [
        e.time
        for e in events
        if e.event in ACTIVITY_EVENTS and (e.app, e.slug) == (info.app, info.slug)
    ]
    return Activity(max(times), "journal") if times else None


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


def _skip(info: SessionInfo, now: float, reason: str) -> Row:
    return replace(
        _row(info, _none),
        last_activity=None,
        source="-",
        age=max(0.0, now - _created(info)),
        reason=reason,
    )
