"""What the daemon knows of its sessions that Docker cannot tell: each one's progress (for the
wait page) and the reason of its last failure (for the error page).

Docker is the source of truth for which sessions exist; this table holds the ones the daemon
is starting or has seen ready, one asyncio lock per session for the changes it makes.
"""

from __future__ import annotations

import asyncio
import enum
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .journal import event
from .session_key import SessionKey

_VERSIONS = itertools.count(1)


class State(enum.StrEnum):
    QUEUED = "queued"  # waiting for a free place (admission.py)
    CREATING = "creating"  # asking Docker for the container
    STARTING = "starting"  # container runs, app not answering yet
    ROUTING = "routing"  # app answers, waiting for Traefik to serve the route
    READY = "ready"
    FAILED = "failed"
    STOPPED = "stopped"  # gone, and only a person opening the app starts it again


# Running, or about to: the sessions that take a place (admission.py, metrics.py).
LIVE = (State.CREATING, State.STARTING, State.ROUTING, State.READY)

PROGRESS = {
    State.QUEUED: 0.05,
    State.CREATING: 0.2,
    State.STARTING: 0.5,
    State.ROUTING: 0.85,
    State.READY: 1.0,
    State.FAILED: 1.0,
    State.STOPPED: 0.0,
}


@dataclass
class Session:
    app: str
    slug: str
    user: str
    groups: frozenset[str] = frozenset()  # from the request that started it: group directories
    state: State = State.CREATING
    message: str = "Creating your container"
    container_id: str | None = None
    url: str | None = None
    # Traefik serves the session's route. Until then the daemon hands a ready session's
    # requests to its app (handover.py).
    routed: bool = False
    started: float = field(default_factory=time.monotonic)
    # One counter for all sessions: a wait page polling with the version of a replaced session
    # must see the new one as newer at once.
    version: int = field(default_factory=lambda: next(_VERSIONS))
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    @property
    def key(self) -> SessionKey:
        return SessionKey(self.app, self.slug)

    async def set(self, state: State, message: str) -> None:
        async with self.changed:
            self.state, self.message = state, message
            self.version = next(_VERSIONS)
            self.changed.notify_all()

    def status(self) -> dict[str, object]:
        """What the wait page's status API answers."""
        return {
            "app": self.app,
            "state": str(self.state),
            "message": self.message,
            "progress": PROGRESS[self.state],
            "version": self.version,
            "elapsed": round(time.monotonic() - self.started, 2),
        }

    def fields(self, hub: str, name: str, **more: object) -> dict[str, Any]:
        """Journal fields of an event of this session (the reaper reads spawned and ready)."""
        return event(
            name,
            hub=hub,
            app=self.app,
            slug=self.slug,
            user=self.user,
            container=self.container_id,
            **more,
        )


class SessionTable:
    """The daemon's sessions by key, and one asyncio lock per key for changing them."""

    def __init__(self) -> None:
        self.sessions: dict[SessionKey, Session] = {}
        self._locks: dict[SessionKey, asyncio.Lock] = {}
        # Called when a session leaves the table: its place is free (admission.py).
        self.on_leave: Callable[[], None] = lambda: None

    def lock(self, key: SessionKey) -> asyncio.Lock:
        return self._locks.setdefault(key, asyncio.Lock())

    def get(self, key: SessionKey) -> Session | None:
        return self.sessions.get(key)

    def add(self, session: Session) -> None:
        self.sessions[session.key] = session

    def drop(self, session: Session) -> bool:
        """Forget ``session`` if it is still the one of its key (not a newer one)."""
        if self.sessions.get(session.key) is not session:
            return False
        del self.sessions[session.key]
        self.on_leave()
        return True

    def pop(self, key: SessionKey) -> Session | None:
        """Forget the session of ``key``, whichever it is."""
        session = self.sessions.pop(key, None)
        if session is not None:
            self.on_leave()
        return session
