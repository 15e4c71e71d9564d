"""Who may start a session now: the ``capacity`` limits, and the queue of those who wait.

A new session over the hub's or its app's limit of running sessions, or over the cap on
sessions starting at once, waits in order: its wait page says "waiting for a free place: N
ahead of you", and it starts as soon as a place frees (a session ends, a start finishes).
Earlier waiting sessions count as if they held their places already, so nobody overtakes a
session waiting for the same place. A person already running ``max_sessions_per_user``
sessions is refused at once instead (``TooManySessions``): waiting would not help, stopping a
session does.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from .capacity_config import CapacityConfig
from .session_state import LIVE, Session, SessionTable, State

# A waiting session looks again this often even without news: a missed notification (a
# session dropped by a path that does not tell) costs at most this long.
RECHECK_SECONDS = 5.0


class TooManySessions(Exception):
    """The person runs as many sessions as one person may."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__(
            f"You already have {limit} session{'s' if limit != 1 else ''} running, the most "
            "this hub allows one person. Stop one on the hub's home page, then open this app "
            "again."
        )


class Admission:
    def __init__(self, capacity: CapacityConfig, table: SessionTable) -> None:
        self.capacity = capacity
        self.table = table
        self.waiting: list[Session] = []  # in order of arrival
        self.spawning = 0
        self._news = asyncio.Event()  # replaced at each news: waiters hold the one they wait on
        table.on_leave = self.changed

    def check_user(self, slug: str) -> None:
        """Raise ``TooManySessions`` if this person may not have one more session."""
        limit = self.capacity.max_sessions_per_user
        if not limit:
            return
        mine = sum(
            1
            for s in self.table.sessions.values()
            if s.slug == slug and (s.state in LIVE or s.state == State.QUEUED)
        )
        if mine >= limit:
            raise TooManySessions(limit)

    def run(
        self, session: Session, spawn: Callable[[], Awaitable[None]]
    ) -> Coroutine[Any, Any, None]:
        """The session's start: wait for its turn, then ``spawn``; nothing if it ended while
        waiting. It joins the queue now, when its request is served, not when the task runs:
        a session must never count as running before it has been given a place."""
        self.waiting.append(session)
        return self._run(session, spawn)

    async def _run(self, session: Session, spawn: Callable[[], Awaitable[None]]) -> None:
        if not await self._wait_turn(session):
            return
        if session.state == State.QUEUED:
            await session.set(State.CREATING, "Creating your container")
        self.spawning += 1
        try:
            await spawn()
        finally:
            self.spawning -= 1
            self.changed()

    def changed(self) -> None:
        """Something that frees a place happened: waiting sessions look again."""
        news, self._news = self._news, asyncio.Event()
        news.set()

    async def _wait_turn(self, session: Session) -> bool:
        try:
            while True:
                if self.table.get(session.key) is not session:
                    return False  # stopped (logout, an admin) while it waited
                blocked = self.blocked(session)
                if blocked is None:
                    return True
                if session.message != blocked:
                    await session.set(State.QUEUED, blocked)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._news.wait(), RECHECK_SECONDS)
        finally:
            self.waiting.remove(session)
            self.changed()  # the ones behind move up

    def blocked(self, session: Session) -> str | None:
        """Why the session must wait (the wait page's words), or None if it may start."""
        ahead = self.waiting[: self.waiting.index(session)]
        ahead_same_app = [s for s in ahead if s.app == session.app]
        # A new session is CREATING until it waits: the waiting ones hold no place yet.
        waiting = {id(s) for s in self.waiting}
        live = [s for s in self.table.sessions.values() if s.state in LIVE and id(s) not in waiting]
        cap = self.capacity
        if cap.max_sessions and len(live) + len(ahead) >= cap.max_sessions:
            return _waiting(len(ahead), "this hub runs as many sessions as it may")
        app_limit = cap.app_limit(session.app)
        app_live = sum(1 for s in live if s.app == session.app)
        if app_limit and app_live + len(ahead_same_app) >= app_limit:
            return _waiting(len(ahead_same_app), f"{session.app} runs as many sessions as it may")
        if cap.max_concurrent_spawns and self.spawning + len(ahead) >= cap.max_concurrent_spawns:
            return _waiting(len(ahead), "many sessions are starting at once")
        return None


def _waiting(ahead: int, why: str) -> str:
    return f"Waiting for a free place: {ahead} ahead of you ({why})"
