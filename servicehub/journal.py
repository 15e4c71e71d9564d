"""Structured events in systemd's journal: written through its native socket, read back with
``journalctl -o json``.

Every log record may carry fields (``extra=event("spawned", app=..., slug=...)``); they become
``SERVICEHUB_EVENT=spawned``, ``SERVICEHUB_APP=...`` in the journal, so operators can filter
(``journalctl SERVICEHUB_EVENT=reaped``) and the reaper can read the daemon's events. Without
journald (tests, a terminal) the same records go to stderr as plain lines: nothing is lost, only
the fields are.

This file imports nothing of the package: the journal tests run it alone, with a real journald.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import struct
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

JOURNAL_SOCKET = Path("/run/systemd/journal/socket")
FIELDS_ATTR = "servicehub_fields"
PREFIX = "SERVICEHUB_"
# Events of the daemon that show someone used the session at that moment.
ACTIVITY_EVENTS = frozenset({"spawned", "ready"})
_MAX_DATAGRAM = 128 * 1024


def event(name: str, **fields: object) -> dict[str, Any]:
    """``extra=`` for a log call: ``SERVICEHUB_EVENT=name`` plus ``SERVICEHUB_<KEY>`` fields."""
    values = {"EVENT": name, **{k.upper(): v for k, v in fields.items() if v is not None}}
    return {FIELDS_ATTR: {k: str(v) for k, v in values.items()}}


def encode(fields: Mapping[str, str]) -> bytes:
    """journald's native datagram format: ``KEY=value\\n``, or a length-prefixed binary value
    when the value holds a newline (a user id or a message may)."""
    out = bytearray()
    for key, value in fields.items():
        data = value.encode("utf-8", "replace")
        if b"\n" in data:
            out += key.encode("ascii") + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
        else:
            out += key.encode("ascii") + b"=" + data + b"\n"
    return bytes(out)


_PRIORITY = {
    logging.CRITICAL: "2",
    logging.ERROR: "3",
    logging.WARNING: "4",
    logging.INFO: "6",
    logging.DEBUG: "7",
}


class JournalHandler(logging.Handler):
    """Sends each record to journald with its fields; falls back to ``fallback`` on failure."""

    def __init__(
        self,
        path: Path = JOURNAL_SOCKET,
        identifier: str = "servicehub",
        fallback: logging.Handler | None = None,
    ) -> None:
        super().__init__()
        self.path = path
        self.identifier = identifier
        self.fallback = fallback
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)

    def fields(self, record: logging.LogRecord) -> dict[str, str]:
        fields = {
            "MESSAGE": self.format(record)[: _MAX_DATAGRAM // 2],
            "PRIORITY": _PRIORITY.get(record.levelno, "6"),
            "SYSLOG_IDENTIFIER": self.identifier,
            "LOGGER": record.name,
            "CODE_FILE": record.pathname,
            "CODE_LINE": str(record.lineno),
            "CODE_FUNC": record.funcName or "",
        }
        for key, value in (getattr(record, FIELDS_ATTR, None) or {}).items():
            fields[PREFIX + key] = value
        return fields

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.sock.sendto(encode(self.fields(record)), str(self.path))
        except OSError:
            if self.fallback is not None:
                self.fallback.handle(record)
        except Exception:
            self.handleError(record)

    def close(self) -> None:
        self.sock.close()
        super().close()


def stderr_is_journal(environ: Mapping[str, str]) -> bool:
    """systemd sets JOURNAL_STREAM=<dev>:<inode> when a service's stderr is the journal."""
    try:
        dev, ino = environ.get("JOURNAL_STREAM", "").split(":")
        st = os.fstat(sys.stderr.fileno())
        return (st.st_dev, st.st_ino) == (int(dev), int(ino))
    except (ValueError, OSError):
        return False


def setup_logging(
    verbose: bool, environ: Mapping[str, str], path: Path = JOURNAL_SOCKET
) -> logging.Handler:
    """Native journal records when run by systemd with journald there, stderr lines otherwise."""
    plain = logging.StreamHandler(sys.stderr)
    plain.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler: logging.Handler = plain
    if path.exists() and stderr_is_journal(environ):
        handler = JournalHandler(path, fallback=plain)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    return handler


# --- reading ------------------------------------------------------------------------------
# Any local account can write entries with any SERVICEHUB_* field (``logger --journald``). Only
# fields whose names start with "_" are journald's own: it sets them from the sender's socket
# credentials and cgroup, and drops any a client sends. So an event counts only when its
# ``_SYSTEMD_UNIT`` is the daemon's unit and its ``_UID`` the daemon's uid: asked for in
# journalctl's match, and checked again on every entry read back.
TRUSTED_UNIT = "_SYSTEMD_UNIT"
TRUSTED_UID = "_UID"


@dataclass(frozen=True)
class DaemonSource:
    """Whose entries are believed: the daemon's systemd unit and the uid it runs as."""

    unit: str
    uid: int

    def match(self) -> list[str]:
        return [f"{TRUSTED_UNIT}={self.unit}", f"{TRUSTED_UID}={self.uid}"]

    def wrote(self, entry: Mapping[str, Any]) -> bool:
        return entry.get(TRUSTED_UNIT) == self.unit and entry.get(TRUSTED_UID) == str(self.uid)


@dataclass(frozen=True)
class JournalEvent:
    time: float  # unix time the entry was written
    event: str
    app: str
    slug: str
    unit: str = ""  # journald's _SYSTEMD_UNIT and _UID of the entry: who wrote it
    uid: int = -1


Runner = Callable[[Sequence[str]], "subprocess.CompletedProcess[str]"]


def _run(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, check=False, timeout=60)


def parse_entries(lines: str, source: DaemonSource) -> tuple[list[JournalEvent], str | None]:
    """The daemon's events from ``journalctl -o json`` output, and the cursor of the last entry.

    An entry that journald does not attribute to ``source`` (another unit, another uid, or no
    unit at all) is no event, whatever its SERVICEHUB_* fields say.
    """
    events, cursor = [], None
    for line in lines.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if not isinstance(entry, dict):
            continue
        if isinstance(entry.get("__CURSOR"), str):
            cursor = entry["__CURSOR"]
        if not source.wrote(entry):
            continue
        values = [entry.get(PREFIX + k) for k in ("EVENT", "APP", "SLUG")]
        stamp = entry.get("__REALTIME_TIMESTAMP")
        if not all(isinstance(v, str) for v in values) or not isinstance(stamp, str):
            continue  # binary values come as arrays of bytes: never ours
        try:
            when = int(stamp) / 1e6
        except ValueError:
            continue
        name, app, slug = (str(v) for v in values)
        events.append(
            JournalEvent(
                time=when, event=name, app=app, slug=slug, unit=source.unit, uid=source.uid
            )
        )
    return events, cursor


def read_events(
    hub: str, cursor: str | None, since: float, source: DaemonSource, run: Runner = _run
) -> tuple[list[JournalEvent], str | None]:
    """The daemon's events for ``hub`` after ``cursor`` (or since ``since``), and the new cursor.

    Without journalctl or a readable journal this returns nothing and keeps the cursor: the
    journal is an extra signal, never a reason for a reaper run to fail.
    """
    argv = ["journalctl", "--no-pager", "-o", "json", *source.match(), f"{PREFIX}HUB={hub}"]
    argv.append(f"--after-cursor={cursor}" if cursor else f"--since=@{int(since)}")
    try:
        done = run(argv)
    except (OSError, subprocess.SubprocessError) as exc:
        logging.getLogger("servicehub.journal").debug("journal not read: %s", exc)
        return [], cursor
    if done.returncode != 0:
        logging.getLogger("servicehub.journal").debug(
            "journalctl exited %s: %s", done.returncode, done.stderr.strip()
        )
        return [], cursor
    events, last = parse_entries(done.stdout, source)
    return events, last or cursor
