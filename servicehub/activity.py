"""The reaper's judgement: pure functions of the collected signals and ``now``.

Nothing here reads a clock, a file or Docker: tests move time by passing another ``now``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .config import AppConfig

KEEP, REAP = "keep", "reap"


@dataclass(frozen=True)
class Activity:
    time: float  # unix time
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
class Counters:
    """One sample of a container's cumulative counters, timed by the host's real clock (not the
    reaper's ``now``: usage is a rate over real seconds)."""

    read: float  # when the sample was taken (unix time, the host's real clock)
    net_bytes: int  # received + sent on all of the container's interfaces
    cpu_ns: int  # CPU time used since the container started
    pid: int = 0  # the container's main process they were read through; 0: Docker's API

    def to_json(self) -> dict[str, Any]:
        return {
            "read": self.read,
            "net_bytes": self.net_bytes,
            "cpu_ns": self.cpu_ns,
            "pid": self.pid,
        }

    @classmethod
    def from_json(cls, data: object) -> Counters | None:
        if isinstance(data, dict):
            read, net, cpu = data.get("read"), data.get("net_bytes"), data.get("cpu_ns")
            pid = data.get("pid", 0)
            if (
                isinstance(read, (int, float))
                and isinstance(net, int)
                and isinstance(cpu, int)
                and isinstance(pid, int)
            ):
                return cls(float(read), net, cpu, pid)
        return None


@dataclass(frozen=True)
class Usage:
    """What a container did between two samples."""

    seconds: float
    net_bytes: int
    cpu_cores: float  # average CPU use in cores (1.0 = one core busy the whole time)


def usage_between(before: Counters | None, after: Counters | None) -> Usage | None:
    if before is None or after is None:
        return None
    seconds = after.read - before.read
    if seconds <= 0 or after.net_bytes < before.net_bytes or after.cpu_ns < before.cpu_ns:
        return None  # same sample again, or counters that went back: another container
    return Usage(
        seconds=seconds,
        net_bytes=after.net_bytes - before.net_bytes,
        cpu_cores=(after.cpu_ns - before.cpu_ns) / (seconds * 1e9),
    )


def usage_activity(app: AppConfig, usage: Usage | None, now: float) -> Activity | None:
    """Traffic or CPU between two runs counts as activity at this run's time ``now``.

    The byte threshold is per minute: after a reaper pause of an hour, an hour of an idle
    websocket's keep-alive pings must not add up to "activity".
    """
    if usage is None:
        return None
    if usage.net_bytes > app.activity_bytes * max(1.0, usage.seconds / 60):
        return Activity(now, "network")
    if app.cpu_counts and usage.cpu_cores > app.cpu_threshold:
        return Activity(now, "cpu")
    return None


@dataclass(frozen=True)
class Decision:
    action: str  # KEEP or REAP
    kind: str  # why, for code: stopped, lifetime, grace, idle, active
    reason: str  # why, for people
    last: Activity  # the latest activity, the spawn at least
    idle_for: float
    age: float

    @property
    def reap(self) -> bool:
        return self.action == REAP


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

    def verdict(action: str, kind: str, reason: str) -> Decision:
        return Decision(action, kind, reason, last=best, idle_for=idle, age=age)

    if not running:
        return verdict(REAP, "stopped", "container not running")
    if age >= app.max_lifetime:
        return verdict(
            REAP, "lifetime", f"running {human(age)}, max_lifetime is {human(app.max_lifetime)}"
        )
    if age < app.grace:
        return verdict(KEEP, "grace", f"spawned {human(age)} ago, grace is {human(app.grace)}")
    if idle >= app.idle_timeout:
        return verdict(
            REAP, "idle", f"idle for {human(idle)}, idle_timeout is {human(app.idle_timeout)}"
        )
    return verdict(KEEP, "active", f"active {human(idle)} ago ({best.source})")


def human(seconds: float) -> str:
    """2h05m, 3m07s, 42s: short and exact enough for a table and a log line."""
    seconds = int(max(0, seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def iso(when: float) -> str:
    return datetime.fromtimestamp(when, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


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
        try:
            parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            return None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        when = parsed.timestamp()
    if when is None or when != when or when <= 0:  # NaN or nonsense
        return None
    return Activity(min(when, now), "endpoint")
