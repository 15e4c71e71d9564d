"""Incremental reading of Traefik's JSON access log: the last request time of each router.

The reaper runs every minute and must not re-read the whole log each time, lose lines when the
log is rotated, or count a line twice. It keeps a ``LogPosition`` (inode and byte offset of the
next unread byte) and only ever consumes complete lines.

Rotation by rename (logrotate ``create`` + USR1 to Traefik): the inode at ``path`` changes; the
rest of the old file is read from the rotated copy next to it (found by its inode), then the new
file from the start. Truncation (``copytruncate``): same inode, smaller than the offset: read
from the start.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

CHUNK = 8 * 1024 * 1024
# Go writes JSON object keys sorted: Duration < RouterName < StartUTC < time on every line. Quotes
# inside values are escaped (\"), so request data can never fake a key.
_ROUTER_RE = re.compile(rb',"RouterName":"([^"\n]*)"')
_TIME_RE = re.compile(rb',"time":"([^"\n]*)"')
# "time" has whole seconds only; StartUTC (nanoseconds) + Duration (ns) is the same moment, exact.
_START_RE = re.compile(rb',"StartUTC":"([^"\n]*)"')
_DURATION_RE = re.compile(rb'[{,]"Duration":(\d+)[,}]')


@dataclass(frozen=True)
class LogPosition:
    inode: int
    offset: int

    def to_json(self) -> dict[str, int]:
        return {"inode": self.inode, "offset": self.offset}

    @classmethod
    def from_json(cls, data: object) -> LogPosition | None:
        if (
            isinstance(data, dict)
            and isinstance(data.get("inode"), int)
            and isinstance(data.get("offset"), int)
        ):
            return cls(data["inode"], data["offset"])
        return None


def _parse_time(raw: bytes) -> float | None:
    """An RFC 3339 time as Go writes it (up to nanoseconds), or ``<start>|<duration ns>``."""
    start, _, duration = raw.partition(b"|")
    try:
        text = start.decode("ascii").replace("Z", "+00:00")
        # Python reads at most microseconds.
        text = re.sub(r"(\.\d{6})\d+", r"\1", text)
        when = datetime.fromisoformat(text).timestamp()
    except (UnicodeDecodeError, ValueError):
        return None
    return when + int(duration) / 1e9 if duration else when


def _scan(path: Path, offset: int, last: dict[bytes, bytes]) -> int:
    """Fold complete lines from ``offset`` into ``last`` (router -> raw time). New offset."""
    with path.open("rb") as fh:
        fh.seek(offset)
        carry = b""
        while True:
            block = fh.read(CHUNK)
            if not block:
                break
            data = carry + block
            end = data.rfind(b"\n") + 1  # only complete lines; the rest waits for next time
            # One C-speed pass for router names; the time only of each router's last line.
            ends = {m.group(1): m.end() for m in _ROUTER_RE.finditer(data, 0, end)}
            for router, pos in ends.items():
                eol = data.find(b"\n", pos)
                start = _START_RE.search(data, pos, eol)
                if start is not None:
                    bol = data.rfind(b"\n", 0, pos) + 1
                    duration = _DURATION_RE.search(data, bol, pos)
                    ns = duration.group(1) if duration is not None else b""
                    last[router] = start.group(1) + b"|" + ns
                    continue
                found = _TIME_RE.search(data, pos, eol)
                if found is not None:
                    last[router] = found.group(1)
            offset += end
            carry = data[end:]
        return offset


def _rotated_copy(path: Path, inode: int) -> Path | None:
    """The file next to ``path`` that still has the old inode (access.json.1, ...)."""
    for candidate in sorted(path.parent.glob(path.name + ".*")):
        try:
            if candidate.stat().st_ino == inode and candidate.is_file():
                return candidate
        except OSError:
            continue
    return None


def read_new_requests(
    path: Path, position: LogPosition | None
) -> tuple[dict[str, float], LogPosition | None]:
    """Routers seen since ``position`` with their last request time, and the new position."""
    last: dict[bytes, bytes] = {}
    try:
        current = os.stat(path)
    except FileNotFoundError:
        return {}, position
    offset = 0
    if position is not None:
        if position.inode == current.st_ino:
            offset = position.offset if position.offset <= current.st_size else 0
        else:
            rotated = _rotated_copy(path, position.inode)
            if rotated is not None:
                _scan(rotated, position.offset, last)
    new_offset = _scan(path, offset, last)
    seen = {}
    for router, raw in last.items():
        when = _parse_time(raw)
        if when is not None:
            seen[router.decode("utf-8", "replace")] = when
    return seen, LogPosition(current.st_ino, new_offset)
