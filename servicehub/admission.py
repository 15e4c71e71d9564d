"""Who may start a session now: the ``capacity`` limits, and the queue of those who wait.

A new session over the hub's or its app's limit of running sessions, or over the cap on
sessions starting at once, waits in order: its wait page says "waiting for a free place: N
ahead of you", and it starts as soon as a place frees (a session ends, a start finishes).
Earlier waiting sessions count as if they held their places already, so nobody overtakes a
session waiting for the same place. A person already running ``max_sessions_per_user``
sessions is refused at once instead (``TooManySessions``): waiting would not help, stopping a
session does.

On a swarm, a session that passes the limits also waits while no machine has room for it
(``room``: the backend's ``has_room``), so a full cluster means a place in the queue, not an
error page. A smaller session behind it that fits somewhere goes first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from .capacity_config import CapacityConfig
from .session_state import LIVE, Session, SessionTable, State

log = logging.getLogger("servicehub.admission")
NO_ROOM = "no machine of this hub has room for it right now"

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
    def __init__(
        self,
        capacity: CapacityConfig,
        table: SessionTable,
        room: Callable[[str, list[str]], Awaitable[bool]] | None = None,
    ) -> None:
        self.capacity = capacity
        self.table = table
        # (app name, apps still being placed) -> whether a machine could hold one more
        # session of the app besides those
        self.room = room
        self.roomless: set[int] = set()  # ids of the waiting sessions no machine has room for
        # The apps of the sessions let through and still starting: their tasks may not hold
        # their place on a node yet, so the engine's view of room does not show them.
        self.placing: list[str] = []
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
            self.placing.remove(session.app)
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
                if blocked is None and not await self._has_room(session):
                    self.roomless.add(id(session))
                    blocked = _waiting(self.waiting.index(session), NO_ROOM)
                else:
                    self.roomless.discard(id(session))
                if self.table.get(session.key) is not session:
                    return False  # stopped while the engine was asked
                if blocked is None:
                    self.placing.append(session.app)  # until its spawn is over
                    return True
                if session.message != blocked:
                    await session.set(State.QUEUED, blocked)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._news.wait(), RECHECK_SECONDS)
        finally:
            self.roomless.discard(id(session))
            self.waiting.remove(session)
            self.changed()  # the ones behind move up

    async def _has_room(self, session: Session) -> bool:
        if self.room is None:
            return True
        # Behind a session of the same app that has no room: no room either, without asking
        # the engine again (one question per app, however many wait).
        ahead = self.waiting[: self.waiting.index(session)]
        if any(id(s) in self.roomless and s.app == session.app for s in ahead):
            return False
        try:
            return await self.room(session.app, list(self.placing))
        except Exception as exc:  # the spawn meets the same engine and says what is wrong
            log.warning("could not tell whether a machine has room for %s: %s", session.app, exc)
            return True

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
        # Those waiting for room on a machine are not about to start: they hold no start.
        starting_ahead = [s for s in ahead if id(s) not in self.roomless]
        if (
            cap.max_concurrent_spawns
            and self.spawning + len(starting_ahead) >= cap.max_concurrent_spawns
        ):
            return _waiting(len(starting_ahead), "many sessions are starting at once")
        return None


def _waiting(ahead: int, why: str) -> str:
    return f"Waiting for a free place: {ahead} ahead of you ({why})"
