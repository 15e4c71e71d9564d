"""What the reaper remembers between runs: one JSON file, replaced atomically.

Written once per run, after the run's decisions and before any removal. A run that crashes
half-way is simply done again by the next one: activity is a maximum (reading a log line twice
changes nothing) and removing a container that is already gone is a no-op.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .accesslog import LogPosition
from .activity import Activity
from .config import Config
from .counters import Counters
from .files import write_atomic

log = logging.getLogger("servicehub.reaper")
STATE_FILE = "reaper.json"
VERSION = 1


class ReaperBusy(RuntimeError):
    """Another reaper run is in progress."""


def state_path(config: Config) -> Path:
    return config.state_dir / STATE_FILE


# Not frozen, though never changed: built thousands of times a reaper run (docs/benchmarks.md).
@dataclass(slots=True)
class SessionRecord:
    """One container as the last run left it. The monotonic times (``*_mono``, the counters'
    ``read`` unless they name another ``boot``: a swarm node's) are seconds of CLOCK_BOOTTIME
    of the state's ``boot``; ``last`` is the same activity on that run's wall clock, for people
    (``servicehub sessions``)."""

    container_id: str
    last: Activity | None  # latest activity seen (not counting the spawn itself)
    counters: Counters | None  # the previous sample, for the next run's difference
    last_mono: float | None = None  # when ``last`` happened, on the monotonic clock
    spawn_mono: float | None = None  # when the container was created, on the monotonic clock
    report: float | None = None  # the app's last activity report as given, to tell a new one
    # The decision and signal of the last row logged for this container (``Row.said``): a run
    # logs a "keep" again only when it differs, so a quiet hub's journal stays small.
    logged: str | None = None
    # Bytes per minute of the container's recent runs: its background level (activity.py).
    rates: tuple[float, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "container_id": self.container_id,
            "last_activity": self.last.to_json() if self.last else None,
            "counters": self.counters.to_json() if self.counters else None,
            "last_mono": self.last_mono,
            "spawn_mono": self.spawn_mono,
            "report": self.report,
            "logged": self.logged,
            "rates": [round(r, 1) for r in self.rates] if self.rates else [],
        }

    @classmethod
    def from_json(cls, data: object) -> SessionRecord | None:
        if not isinstance(data, dict) or not isinstance(data.get("container_id"), str):
            return None
        return cls(
            container_id=data["container_id"],
            last=Activity.from_json(data.get("last_activity")),
            counters=Counters.from_json(data.get("counters")),
            last_mono=_number(data.get("last_mono")),
            spawn_mono=_number(data.get("spawn_mono")),
            report=_number(data.get("report")),
            logged=data["logged"] if isinstance(data.get("logged"), str) else None,
            rates=_rates(data.get("rates")),
        )


def _rates(value: object) -> tuple[float, ...]:
    if not isinstance(value, list):
        return ()
    numbers = [_number(v) for v in value]
    return tuple(n for n in numbers if n is not None and n >= 0)


def _number(value: object) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


@dataclass
class ReaperState:
    position: LogPosition | None = None  # next unread byte of the access log
    journal_cursor: str | None = None
    last_run: float | None = None  # the last run's wall-clock time (unix)
    sessions: dict[str, SessionRecord] = field(default_factory=dict)
    # The last run on the monotonic clock, and the boot it belongs to: every monotonic time in
    # this state is of that boot; after a reboot none of them is used.
    boot: str | None = None
    last_run_mono: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "version": VERSION,
            "access_log": self.position.to_json() if self.position else None,
            "journal_cursor": self.journal_cursor,
            "last_run": self.last_run,
            "boot": self.boot,
            "last_run_mono": self.last_run_mono,
            "sessions": {k: v.to_json() for k, v in sorted(self.sessions.items())},
        }

    @classmethod
    def from_json(cls, data: object) -> ReaperState:
        if not isinstance(data, dict) or data.get("version") != VERSION:
            return cls()
        sessions = {}
        raw = data.get("sessions")
        for key, value in raw.items() if isinstance(raw, dict) else []:
            record = SessionRecord.from_json(value)
            if record is not None:
                sessions[str(key)] = record
        cursor, last_run = data.get("journal_cursor"), data.get("last_run")
        boot = data.get("boot")
        return cls(
            position=LogPosition.from_json(data.get("access_log")),
            journal_cursor=cursor if isinstance(cursor, str) else None,
            last_run=float(last_run) if isinstance(last_run, (int, float)) else None,
            sessions=sessions,
            boot=boot if isinstance(boot, str) else None,
            last_run_mono=_number(data.get("last_run_mono")),
        )


def load_state(path: Path) -> ReaperState:
    """The saved state; a missing file is a first run, a broken one is logged and started over
    (sessions then count from their spawn and the access log is read from its start)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return ReaperState()
    try:
        return ReaperState.from_json(json.loads(text))
    except ValueError as exc:
        log.warning("reaper state %s unreadable (%s); starting over", path, exc)
        return ReaperState()


def save_state(path: Path, state: ReaperState) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Compact: without ``indent`` the json module's C encoder runs, ~10x faster at 2,000 sessions.
    # Unsorted: to_json orders the sessions already, and sorting every record cost a third.
    text = json.dumps(state.to_json(), separators=(",", ":"))
    write_atomic(path, text + "\n", mode=0o640)
