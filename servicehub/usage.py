"""A running session's memory and CPU use, for the admin view.

CPU comes from the backend's counters (the kernel's files through the container's main
process, ``counters.py``); memory from the same process's cgroup (``memory.current`` on cgroup
v2, ``memory.usage_in_bytes`` on v1). CPU use is the rate between two looks at the admin view,
or the average since the container started on the first look.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .counters import CGROUP_ROOT, PROC, Counters, container_cgroup


@dataclass(frozen=True)
class Usage:
    memory_bytes: int | None
    cpu_cores: float | None  # cores in use (0.5 = half of one core)


def memory_bytes(
    pid: int, container_id: str, proc: Path = PROC, root: Path = CGROUP_ROOT
) -> int | None:
    """The memory of the container's cgroup, through its main process; None if unreadable or
    the process is no longer that container's."""
    try:
        cgroup = container_cgroup(pid, container_id, proc)
        if cgroup is None:
            return None
        for line in cgroup.splitlines():
            _, controllers, path = line.split(":", 2)
            path = path.lstrip("/")
            if controllers == "" and (root / "cgroup.controllers").exists():
                return int((root / path / "memory.current").read_text())
            if "memory" in controllers.split(","):
                return int((root / "memory" / path / "memory.usage_in_bytes").read_text())
    except (OSError, ValueError):
        return None
    return None


class CpuRates:
    """The previous CPU sample per container, to turn cumulative CPU time into a rate."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._last: dict[str, tuple[float, int]] = {}
        self._clock = clock

    def rate(self, container_id: str, counters: Counters, age: float) -> float:
        """Cores used since the last sample, or on average over ``age`` seconds (the first)."""
        now = self._clock()
        previous = self._last.get(container_id)
        self._last[container_id] = (now, counters.cpu_ns)
        if previous is not None and now > previous[0] and counters.cpu_ns >= previous[1]:
            return (counters.cpu_ns - previous[1]) / 1e9 / (now - previous[0])
        return counters.cpu_ns / 1e9 / age if age > 0 else 0.0

    def keep_only(self, container_ids: set[str]) -> None:
        """Forget containers that are gone: the table never outgrows the running sessions."""
        for gone in set(self._last) - container_ids:
            del self._last[gone]
