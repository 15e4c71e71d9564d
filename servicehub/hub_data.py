"""What the home and admin pages show, as plain data: built from the daemon's session table,
Docker's view of the containers and the reaper's state file, without any I/O of its own.

Docker is the source of truth for which sessions exist and since when (their ``created``
label); the table adds what only the daemon knows (starting, failed and why); the reaper's
state adds the last activity and its source, as of its last run.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from .config import AppConfig
from .identity import Identity
from .reaper_state import SessionRecord, load_state
from .session_info import SessionInfo
from .session_state import Session, State
from .times import iso

# The daemon's states in the words the pages use.
_SHOWN = {
    State.QUEUED: "waiting for a place",
    State.CREATING: "starting",
    State.STARTING: "starting",
    State.ROUTING: "starting",
    State.READY: "running",
    State.FAILED: "failed",
    State.STOPPED: "not running",
}


def app_url(app: AppConfig) -> str:
    """Where the app opens: its path, on its own host when it has one."""
    return f"//{app.host}{app.path_prefix}" if app.host else app.path_prefix


def visible_apps(apps: Iterable[AppConfig], identity: Identity) -> list[AppConfig]:
    """The apps this person may open; the others are never named to them."""
    return [a for a in apps if a.allows(identity.user, identity.groups)]


def state_of(session: Session | None, info: SessionInfo | None) -> str:
    if session is not None and session.state != State.STOPPED:
        return _SHOWN[session.state]
    if info is not None and info.running:
        return "running"
    return "not running"


@dataclass(frozen=True)
class Row:
    """One session (or one app without a session, on the home page)."""

    app: str
    state: str
    message: str = ""
    started: str | None = None  # ISO 8601, from Docker's label
    last_activity: str | None = None
    source: str | None = None
    user: str = ""
    slug: str = ""
    container: str = ""

    def to_json(self) -> dict[str, object]:
        return dict(self.__dict__)


def row(
    app: str,
    session: Session | None,
    info: SessionInfo | None,
    record: SessionRecord | None,
) -> Row:
    state = state_of(session, info)
    running = info is not None and state != "not running"
    last = record.last if record and info and record.container_id == info.container_id else None
    return Row(
        app=app,
        state=state,
        message=session.message if session is not None and state == "failed" else "",
        started=iso(info.created.timestamp()) if running and info else None,
        last_activity=iso(last.time) if last else None,
        source=last.source if last else None,
        user=(info.user if info else session.user if session else ""),
        slug=(info.slug if info else session.slug if session else ""),
        container=info.name if info and running else "",
    )


def counts(rows: Iterable[Row]) -> dict[str, dict[str, int]]:
    """Sessions per app and state."""
    tally: dict[str, Counter[str]] = {}
    for r in rows:
        tally.setdefault(r.app, Counter())[r.state] += 1
    return {app: dict(c) for app, c in sorted(tally.items())}


class ReaperRecords:
    """The reaper's state file, parsed again only when it changed (it is rewritten each run)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int] | None = None
        self._records: Mapping[str, SessionRecord] = {}

    def get(self) -> Mapping[str, SessionRecord]:
        try:
            st = os.stat(self.path)
        except OSError:
            return {}
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp != self._stamp:
            try:
                self._records = load_state(self.path).sessions
            except OSError:  # not readable by the daemon: the columns stay empty
                self._records = {}
            self._stamp = stamp
        return self._records
