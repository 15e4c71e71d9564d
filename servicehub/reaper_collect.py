"""The reaper's collection: what every session did since the previous run, gathered once.

In this order, so that nothing the hub itself causes counts as a session's activity:
1. the access log since the saved position (the latest request per session router);
2. the daemon's journal events since the saved cursor (spawned, ready), only the entries
   journald itself attributes to the daemon's unit and uid;
3. the hub's containers (after the log, so every logged request belongs to a listed one);
4. each running container's counters (network bytes, CPU time), then the answers of the apps
   that have an ``activity_endpoint``, then those containers' counters again: the next run's
   difference starts after the reaper's own request.

One container's failure (Docker error, app not answering) is logged and gives no signal.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import pwd
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import cached_property
from typing import TypeVar

import aiohttp

from .accesslog import LogPosition, read_new_requests
from .activity import Activity, Instant, parse_report, sample_time
from .backend import Backend
from .config import AppConfig, Config
from .counters import Counters
from .journal import ACTIVITY_EVENTS, DaemonSource, JournalEvent
from .probes import Http
from .reaper_state import ReaperState
from .session_info import SessionInfo
from .session_key import SessionKey

log = logging.getLogger("servicehub.reaper")
PARALLEL = 32  # Docker API calls in flight at once
ENDPOINT_TIMEOUT = 2.0
ENDPOINT_MAX_BYTES = 64 * 1024  # an activity report is a few bytes; more is no signal
T = TypeVar("T")

JournalReader = Callable[
    [str, str | None, float, DaemonSource], tuple[list[JournalEvent], str | None]
]


@dataclass(frozen=True)
class Collected:
    """What one run gathered. Counter samples are on the monotonic clock (the reaper's, or
    their node's: ``Counters.boot``); the rest is as its source stamped it (wall clock), to be
    placed by the decision."""

    requests: dict[str, float]  # latest request per router (``name@file``), from the access log
    position: LogPosition | None  # the access log's position after this run
    source: DaemonSource | None  # whose journal entries count; None: the journal is not read
    events: list[JournalEvent]
    cursor: str | None  # the journal's cursor after this run
    sessions: list[SessionInfo]  # every container of the hub, its apps or not
    samples: dict[str, Counters | None]  # by container id: counters before the endpoint request
    reports: dict[str, Activity | None]  # by container id: the apps' own activity reports
    after_asking: dict[str, Counters | None]  # counters after the reaper's endpoint request
    log_seconds: float  # for the run's summary line
    docker_seconds: float

    @cached_property
    def journaled(self) -> dict[SessionKey, float]:
        """Each session's latest spawned/ready event, counting only the entries journald
        attributes to the daemon (its unit and uid): anyone can write the SERVICEHUB_* fields,
        nobody those two. Indexed once per run, not searched once per session."""
        latest: dict[SessionKey, float] = {}
        if self.source is None:
            return latest
        writer = (self.source.unit, self.source.uid)
        for e in self.events:
            if e.event in ACTIVITY_EVENTS and (e.unit, e.uid) == writer:
                key = SessionKey(e.app, e.slug)
                if e.time > latest.get(key, float("-inf")):
                    latest[key] = e.time
        return latest


class Collector:
    def __init__(
        self,
        config: Config,
        backend: Backend,
        now: Callable[[], Instant],
        journal: JournalReader,
        http: Http,
    ) -> None:
        self.config = config
        self.backend = backend
        self.now = now
        self.journal = journal
        self.http = http

    async def collect(self, state: ReaperState, now: Instant) -> Collected:
        started = time.perf_counter()  # durations for the summary line only
        requests, position = read_new_requests(self.config.traefik.access_log, state.position)
        log_seconds = time.perf_counter() - started
        source, events, cursor = self._journal(state, now)
        docker_started = time.perf_counter()
        infos = await self.backend.list_sessions(detailed=False)
        running = [i for i in infos if i.app in self.config.apps and i.running]
        previous = {r.container_id: r.counters.pid for r in state.sessions.values() if r.counters}

        async def counters(info: SessionInfo) -> Counters | None:
            return await self._sample(info, previous.get(info.container_id, 0))

        samples = await self._samples(running, previous)
        _warn_blind([i.name for i in running if samples.get(i.container_id) is None])
        docker_seconds = time.perf_counter() - docker_started
        asked, reports = await self._reports(running, now)
        # The next run's difference starts after the reaper's own request to the endpoint.
        after_asking = await _each(asked, counters)
        return Collected(
            requests,
            position,
            source,
            events,
            cursor,
            infos,
            samples,
            reports,
            after_asking,
            log_seconds,
            docker_seconds,
        )

    def _journal(
        self, state: ReaperState, now: Instant
    ) -> tuple[DaemonSource | None, list[JournalEvent], str | None]:
        source = daemon_source(self.config)
        if source is None:
            return None, [], state.journal_cursor
        longest = max(a.idle_timeout for a in self.config.apps.values())
        since = state.last_run if state.last_run is not None else now.wall - longest
        try:
            return source, *self.journal(self.config.hub, state.journal_cursor, since, source)
        except Exception:
            log.exception("reading the journal failed; going on without it")
            return source, [], state.journal_cursor

    async def _samples(
        self, running: list[SessionInfo], previous: dict[str, int]
    ) -> dict[str, Counters | None]:
        """Every running session's counters. A session with the PID of its last sample is read
        in turn: the backend then reads kernel files and never waits, and a task per session
        cost more than the reads at 2,000 sessions. The others (new sessions, a PID gone) ask
        the engine, PARALLEL at a time."""
        samples: dict[str, Counters | None] = {}
        for info in running:
            pid = previous.get(info.container_id, 0)
            if pid:
                try:  # _guarded's handling, without two more coroutines per session
                    samples[info.container_id] = await self._sample(info, pid)
                except Exception as exc:
                    _failed(info, exc)
                    samples[info.container_id] = None
        rest = [i for i in running if samples.get(i.container_id) is None]
        samples.update(await _each(rest, lambda info: self._sample(info, 0)))
        return samples

    async def _sample(self, info: SessionInfo, pid: int) -> Counters | None:
        """The container's counters, their time re-stamped on the monotonic clock. A swarm
        node's sample is already on its node's (``boot``) and may be up to a collector period
        old: re-stamped, it would take the time of this call, and a rate the wrong interval."""
        before = self.now()
        found = await self.backend.counters(info.container_id, pid)
        after = self.now()
        if found is None or found.boot is not None:
            return found
        read = sample_time(found.read, before, after)
        return Counters(read, found.net_bytes, found.cpu_ns, found.pid, found.memory_bytes)

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


def daemon_source(config: Config) -> DaemonSource | None:
    """The daemon's unit and uid, the only writer whose journal events count."""
    user = config.reaper.daemon_user
    if user is None:  # both units run as the same account on an installed hub
        return DaemonSource(config.reaper.daemon_unit, os.getuid())
    if user.isdigit():
        return DaemonSource(config.reaper.daemon_unit, int(user))
    try:
        return DaemonSource(config.reaper.daemon_unit, pwd.getpwnam(user).pw_uid)
    except KeyError:
        log.warning("reaper.daemon_user %r: no such account; journal events not read", user)
        return None


def _warn_blind(names: list[str]) -> None:
    if names:
        log.warning(
            "no network or CPU counters (neither /proc nor Docker's stats API) for %d running "
            "container(s) (%s): only the access log, the journal and activity endpoints "
            "count for them",
            len(names),
            ", ".join(names[:3]) + (", ..." if len(names) > 3 else ""),
        )


async def ask_endpoint(
    http: aiohttp.ClientSession, app: AppConfig, info: SessionInfo, now: float
) -> Activity | None:
    """GET the app's own activity report; anything but a usable answer is no signal. The body is
    read up to ENDPOINT_MAX_BYTES: a bigger one is no signal either (and a warning)."""
    url = f"{info.url(app.port)}{app.activity_endpoint}"
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
            return await _guarded(info, fetch)

    results = await asyncio.gather(*(one(i) for i in infos))
    return {i.container_id: r for i, r in zip(infos, results, strict=True)}


async def _guarded(
    info: SessionInfo, fetch: Callable[[SessionInfo], Awaitable[T | None]]
) -> T | None:
    """``fetch(info)``; a failure is logged and gives None."""
    try:
        return await fetch(info)
    except Exception as exc:
        _failed(info, exc)
        return None


def _failed(info: SessionInfo, exc: Exception) -> None:
    """One container's failure is logged; it gives no signal."""
    log.warning("collecting from %s failed: %s", info.name, exc)
