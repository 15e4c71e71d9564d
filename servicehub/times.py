"""Times for people and from other programs: ISO 8601 in UTC, short durations, parsing.

The reaper's clocks (wall and monotonic) are in ``activity.py``; this module only formats and
parses wall-clock times.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

# Go and Docker write nanoseconds; Python reads at most microseconds.
_BEYOND_MICROSECONDS = re.compile(r"(\.\d{6})\d+")


def iso(when: float) -> str:
    """A unix time as ISO 8601 in UTC with a ``Z``, to the second (tables, JSON, the journal)."""
    return datetime.fromtimestamp(when, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def iso_now_ms() -> str:
    """Now as ISO 8601 in UTC with a ``Z``, to the millisecond (the ``created`` label)."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_iso(text: str) -> datetime | None:
    """An RFC 3339 time as Go, Docker or an app writes it (``Z``, up to nanoseconds); a time
    without a zone is UTC. None if it is not a time."""
    text = _BEYOND_MICROSECONDS.sub(r"\1", text.replace("Z", "+00:00"))
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


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
