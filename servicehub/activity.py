"""The reaper's judgement: pure functions of the collected signals and ``now``.

Nothing here reads a clock, a file or Docker: tests move time by passing another ``now``, and
can step its wall clock and its monotonic clock separately.

Two clocks (docs/reaper.md, "Clocks"). Log lines, journal entries, container labels and apps'
reports carry wall-clock (unix) times, and the wall clock can step (an operator, a first NTP
sync, a VM restored from a snapshot). Intervals are therefore measured on the monotonic clock
(CLOCK_BOOTTIME): every counter rate, every session's age and idle time. A wall time is turned
into a monotonic one once, when the reaper first sees it (``Timeline.place``), and what it has
seen for the first time in a run happened after the previous run: its age is capped by the
monotonic time since then, so a step can never make fresh activity look old.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from .config import AppConfig
from .counters import Counters
from .times import human, parse_iso


class Verdict(enum.StrEnum):
    """What the reaper does with a session: its report's ``decision``."""

    KEEP = "keep"
    REAP = "reap"
    SKIP = "skip"  # left alone this run: not an app of the config, busy, or replaced
    ERROR = "error"  # the removal failed


class Why(enum.StrEnum):
    """Why ``decide`` kept or reaped, for code (``Decision.reason`` says it for people)."""

    STOPPED = "stopped"
    LIFETIME = "lifetime"
    GRACE = "grace"
    IDLE = "idle"
    ACTIVE = "active"


# Not frozen, though never changed: built thousands of times a reaper run (docs/benchmarks.md).
@dataclass(slots=True)
class Instant:
    """One reading of the host's clocks."""

    wall: float  # unix time (CLOCK_REALTIME): what logs and labels are stamped with; may step
    mono: float  # seconds of CLOCK_BOOTTIME: never steps; one boot's processes all agree on it
    boot: str  # the kernel's boot id: monotonic times of two boots are never compared


@dataclass(frozen=True)
class Timeline:
    """How one reaper run places wall-clock times on the monotonic clock."""

    now: Instant
    # Monotonic seconds since the previous run of this boot; None when there is none (a first
    # run, a reboot, a state file from before this was kept).
    window: float | None

    def place(self, wall: float, *, new: bool) -> float:
        """The monotonic time of something stamped ``wall`` on the wall clock.

        ``new``: seen for the first time in this run (a log line after the saved position, a
        journal entry after the saved cursor, a report that changed), so it happened after the
        previous run whatever the wall clock says: its age is at most ``window``. A time ahead of
        the wall clock (a backward step, another host's clock) counts as now.
        """
        age = max(0.0, self.now.wall - wall)
        if new and self.window is not None:
            age = min(age, self.window)
        return self.now.mono - age

    def wall(self, mono: float) -> float:
        """A monotonic time of this boot, on today's wall clock (for people and for ``decide``)."""
        return self.now.wall - (self.now.mono - mono)


def sample_time(read: float, before: Instant, after: Instant) -> float:
    """The monotonic time of a counter sample that a backend stamped ``read`` on the wall clock,
    taken between the clock readings ``before`` and ``after``: where the wall clock puts it, but
    never outside that interval (a wall-clock step during the call cannot move it)."""
    return min(after.mono, max(before.mono, after.mono - (after.wall - read)))


# Not frozen, though never changed: built thousands of times a reaper run (docs/benchmarks.md).
@dataclass(slots=True)
class Activity:
    time: float  # unix time (the reaper also uses it for a monotonic time, where it says so)
    source: str  # access-log, network, cpu, endpoint, journal, spawn

    def to_json(self) -> dict[str, Any]:
        return {"time": self.time, "source": self.source}

    @classmethod
    def from_json(cls, data: object) -> Activity | None:
        if isinstance(data, dict):
            when, source = data.get("time"), data.get("source")
            if (
                isinstance(when, (int, float))
                and not isinstance(when, bool)
                and isinstance(source, str)
            ):
                return cls(float(when), source)
        return None


def latest(*items: Activity | None) -> Activity | None:
    """The most recent activity; on a tie the first one given wins."""
    best: Activity | None = None
    for item in items:
        if item is not None and (best is None or item.time > best.time):
            best = item
    return best


@dataclass(frozen=True)
class Usage:
    """What a container did between two samples."""

    seconds: float
    net_bytes: int
    cpu_cores: float  # average CPU use in cores (1.0 = one core busy the whole time)


def usage_between(before: Counters | None, after: Counters | None) -> Usage | None:
    """What happened between two samples whose ``read`` times are on one clock: the reaper's
    monotonic clock of one boot, or the monotonic clock of the swarm node that took both
    (their ``boot``). The same sample twice (a node's file not rewritten since) is no interval:
    no usage, rather than an idle one."""
    if before is None or after is None or before.boot != after.boot:
        return None
    seconds = after.read - before.read
    if seconds <= 0 or after.net_bytes < before.net_bytes or after.cpu_ns < before.cpu_ns:
        return None  # same sample again, or counters that went back: another container
    return Usage(
        seconds=seconds,
        net_bytes=after.net_bytes - before.net_bytes,
        cpu_cores=(after.cpu_ns - before.cpu_ns) / (seconds * 1e9),
    )


def per_minute(usage: Usage) -> float:
    """The traffic of one interval in bytes per minute."""
    return usage.net_bytes * 60 / usage.seconds


def background_level(rates: tuple[float, ...]) -> float:
    """What a session's traffic is when nobody acts: its quietest minute (bytes per minute)
    among the previous runs' ``rates``. Keep-alive pings, a tab's polls every few seconds and
    other periodic traffic move about the same bytes every minute, so they are all in it; a
    person's work comes and goes, and its minutes stand out above it. No history: none."""
    return min(rates, default=0.0)


def remember_rate(rates: tuple[float, ...], usage: Usage | None, keep: int) -> tuple[float, ...]:
    """The rates the next run's background level is taken from: the last ``keep``."""
    if keep <= 0:
        return ()
    if usage is None:
        return rates[-keep:]
    return (*rates, per_minute(usage))[-keep:]


def usage_activity(
    app: AppConfig, usage: Usage | None, now: float, rates: tuple[float, ...] = ()
) -> Activity | None:
    """Traffic or CPU between two runs counts as activity at this run's time ``now``.

    Traffic counts when it exceeds the session's background level (``background_level`` of
    ``rates``, the previous runs' bytes per minute) by more than ``activity_bytes`` per minute.
    Both are per minute: after a reaper pause of an hour, an hour of an idle websocket's
    keep-alive pings must not add up to "activity".
    """
    if usage is None:
        return None
    minutes = usage.seconds / 60
    above = usage.net_bytes - background_level(rates) * minutes
    if above > app.activity_bytes * max(1.0, minutes):
        return Activity(now, "network")
    if app.cpu_counts and usage.cpu_cores > app.cpu_threshold:
        return Activity(now, "cpu")
    return None


def background_note(
    usage: Usage | None, rates: tuple[float, ...], requests: bool, counted: Activity | None
) -> str:
    """What this run saw and did not count, for the decision's reason: the page's background
    requests, and traffic that stayed within its background level (``counted``: the traffic
    or CPU activity of this run, if any)."""
    parts = []
    if requests:
        parts.append("background requests")
    if (
        usage is not None
        and usage.net_bytes > 0
        and (counted is None or counted.source != "network")
    ):
        level = f", its level {_kb(background_level(rates))}/min" if rates else ""
        parts.append(f"traffic {_kb(per_minute(usage))}/min{level}")
    return "not counted: " + " and ".join(parts) if parts else ""


def _kb(count: float) -> str:
    return f"{count / 1000:.1f} kB"


# Not frozen, though never changed: built thousands of times a reaper run (docs/benchmarks.md).
@dataclass(slots=True)
class Decision:
    action: Verdict  # KEEP or REAP from ``decide``; the reaper may turn it to SKIP or ERROR
    kind: Why
    reason: str  # why, for people
    last: Activity  # the latest activity, the spawn at least
    idle_for: float
    age: float

    @property
    def reap(self) -> bool:
        return self.action is Verdict.REAP


def decide(
    app: AppConfig, created: float, running: bool, last: Activity | None, now: float
) -> Decision:
    """Keep or reap one session. Idle time counts from the latest activity or the spawn."""
    spawn = Activity(created, "spawn")
    best = latest(last, spawn) or spawn
    if best.time > now:  # a clock ahead of ours (an app's report, a skewed host): not later
        best = Activity(now, best.source)
    age = max(0.0, now - created)
    idle = max(0.0, now - best.time)

    def verdict(action: Verdict, kind: Why, reason: str) -> Decision:
        return Decision(action, kind, reason, last=best, idle_for=idle, age=age)

    if not running:
        return verdict(Verdict.REAP, Why.STOPPED, "container not running")
    if age >= app.max_lifetime:
        return verdict(
            Verdict.REAP,
            Why.LIFETIME,
            f"running {human(age)}, max_lifetime is {human(app.max_lifetime)}",
        )
    if age < app.grace:
        return verdict(
            Verdict.KEEP, Why.GRACE, f"spawned {human(age)} ago, grace is {human(app.grace)}"
        )
    if idle >= app.idle_timeout:
        return verdict(
            Verdict.REAP,
            Why.IDLE,
            f"idle for {human(idle)}, idle_timeout is {human(app.idle_timeout)}",
        )
    return verdict(Verdict.KEEP, Why.ACTIVE, f"active {human(idle)} ago ({best.source})")


def parse_report(data: object, now: float) -> Activity | None:
    """An app's ``{"last_activity": <unix time or ISO 8601>}``; None if it says nothing usable.
    A time in the future is taken as now."""
    if not isinstance(data, dict):
        return None
    value = data.get("last_activity")
    when: float | None = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        when = float(value)
    elif isinstance(value, str):
        parsed = parse_iso(value.strip())
        if parsed is None:
            return None
        when = parsed.timestamp()
    if when is None or when != when or when <= 0:  # NaN or nonsense
        return None
    return Activity(min(when, now), "endpoint")
