"""The daemon's recent spawn failures, for the admin view: a bounded ring in memory.

Bounded so a crashing app that every user retries cannot grow the daemon; in memory only,
because the journal keeps the full history (``journalctl SERVICEHUB_EVENT=failed``).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

MAX_FAILURES = 50
MAX_OUTPUT = 4000  # characters of the app's last output kept per failure


@dataclass(frozen=True)
class Failure:
    time: float  # unix time
    app: str
    slug: str
    user: str
    reason: str
    output: str  # the container's last output, "" when there was no container

    def to_json(self) -> dict[str, object]:
        return {
            "time": self.time,
            "app": self.app,
            "slug": self.slug,
            "user": self.user,
            "reason": self.reason,
            "output": self.output,
        }


class FailureLog:
    def __init__(self, size: int = MAX_FAILURES, clock: Callable[[], float] = time.time) -> None:
        self._ring: deque[Failure] = deque(maxlen=size)
        self._clock = clock

    def add(self, app: str, slug: str, user: str, reason: str, output: str) -> None:
        self._ring.append(Failure(self._clock(), app, slug, user, reason, output[-MAX_OUTPUT:]))

    def recent(self) -> list[Failure]:
        """Newest first."""
        return list(reversed(self._ring))
