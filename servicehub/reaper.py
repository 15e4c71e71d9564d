"""The idle reaper: one run collects every session's signals, decides, saves, then removes.

A run (``servicehub reap``, started by a systemd timer every minute):
1. collect what every session did since the previous run (``reaper_collect.py``): the access
   log, the daemon's journal events, the containers' counters and the apps' own reports;
2. decide each session (``reaper_decision.py``): its signals placed on the monotonic clock,
   then ``activity.decide`` (pure);
3. save the state (atomically), then remove what was decided (``reaper_removal.py``), each
   through the one teardown under the session's lock;
4. report one row per session (``reaper_report.py``): the table, ``--json`` and the journal.

Time comes from one injectable ``now()`` that reads both clocks (``activity.Instant``): intervals
and idle times are monotonic, so a wall-clock step never makes an active session look idle.
One session's failure (Docker error, app not answering) is logged and never stops the others.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp

from .activity import Instant, Timeline, Verdict
from .backend import Backend
from .config import Config
from .journal import DaemonSource, read_events
from .locks import SessionLocks
from .probes import Http
from .reaper_collect import Collected, Collector, JournalReader, daemon_source
from .reaper_decision import Judged, judge, window
from .reaper_metrics import publish
from .reaper_removal import remove
from .reaper_report import Row, log_row, worth_logging
from .reaper_state import ReaperBusy, ReaperState, load_state, save_state, state_path
from .routes import RouteStore
from .teardown import Teardown

__all__ = ["Reaper", "ReaperBusy", "state_path", "system_now"]
log = logging.getLogger("servicehub.reaper")
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


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
        self.now = now
        self.http = Http(http)
        self.state_file = state_file or state_path(config)
        self.collector = Collector(config, backend, now, journal, self.http)
        self.teardown = Teardown(
            config.hub,
            config.traefik.api_url,
            backend,
            routes,
            locks or SessionLocks.of_hub(config.state_dir),
            self.http,
        )

    def daemon_source(self) -> DaemonSource | None:
        """The daemon's unit and uid, the only writer whose journal events count."""
        return daemon_source(self.config)

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
        started = time.perf_counter()  # durations for the summary line only
        cpu_started = time.process_time()  # this process's own work, whatever the engine takes
        now = self.now()
        state = load_state(self.state_file)
        timeline = Timeline(now, window(state, now))
        collected = await self.collector.collect(state, now)
        results = [
            judge(self.config, info, state, collected, timeline)
            for info in sorted(collected.sessions, key=lambda i: (i.app, i.user, i.slug))
        ]
        logged_before = [_logged_before(state, r) for r in results]
        if not dry_run:
            self._save(collected, results, now)
            results = [await self._remove(r, collected) for r in results]
        rows = [Row.of(r) for r in results]
        for row, before in zip(rows, logged_before, strict=True):
            if worth_logging(row, before, dry_run):
                log_row(self.config.hub, row, dry_run)
        log.info(
            "reaper run%s: %d session(s), %d reaped; access log %.3f s (%d routers), "
            "Docker %.3f s, total %.3f s, CPU %.3f s",
            " (dry run)" if dry_run else "",
            len(rows),
            sum(1 for row in rows if row.decision is Verdict.REAP and not dry_run),
            collected.log_seconds,
            len(collected.requests),
            collected.docker_seconds,
            time.perf_counter() - started,
            time.process_time() - cpu_started,
        )
        if not dry_run:  # for node-exporter: a oneshot cannot be scraped (reaper_metrics.py)
            took = time.perf_counter() - started
            publish(self.config, rows, collected, now, state.last_run, took)
        return rows

    def _save(self, collected: Collected, results: list[Judged], now: Instant) -> None:
        """Saved once, after all decisions and before any removal (docs/reaper.md, "State")."""
        new_state = ReaperState(
            position=collected.position,
            journal_cursor=collected.cursor,
            last_run=now.wall,
            boot=now.boot,
            last_run_mono=now.mono,
            sessions={r.info.key.state_key: r.record for r in results},
        )
        try:
            save_state(self.state_file, new_state)
        except OSError as exc:
            # Without saved state the next run would read the log again: harmless. Go on.
            log.error("cannot save reaper state %s: %s", self.state_file, exc)

    async def _remove(self, judged: Judged, collected: Collected) -> Judged:
        if judged.decision is None or judged.decision.action is not Verdict.REAP:
            return judged
        access_log = self.config.traefik.access_log
        return await remove(self.teardown, access_log, judged, collected.position)

    async def close(self) -> None:
        await self.http.close()


def _logged_before(state: ReaperState, judged: Judged) -> str | None:
    """What the last logged row of this very container said (None: never logged)."""
    record = state.sessions.get(judged.info.key.state_key)
    if record is None or record.container_id != judged.info.container_id:
        return None
    return record.logged
