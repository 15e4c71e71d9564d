"""Ending a session: the one order every stop follows (the daemon, the reaper, ``servicehub stop``).

Under the session's lock (the one a spawn of that session takes):
1. remove the route file;
2. wait until Traefik no longer serves the session's router: from then on a request of that
   user reaches the daemon, which waits for this lock and spawns a fresh container, instead
   of meeting a dying one (a 502);
3. remove the container. Its user's volume stays.

Removing what is already gone is a no-op, so a stop that dies half-way is finished by the next.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Awaitable, Callable

from .backend import Backend
from .locks import LOCK_TIMEOUT, SessionLocks
from .probes import Http, poll_until, traefik_has_router
from .routes import RouteStore
from .session_key import SessionKey

log = logging.getLogger("servicehub.teardown")
ROUTE_TIMEOUT = 10.0  # how long a stop waits for Traefik to drop the session's router


class Ended(enum.Enum):
    REMOVED = "removed"  # route and container gone
    NO_CONTAINER = "no container"  # there was none (its route file is gone too)
    REPLACED = "replaced"  # another container has the session now: left alone
    BUSY = "busy"  # someone holds the session's lock and the caller would not wait
    KEPT = "kept"  # the caller's last look, under the lock, said to keep it


class LockUnusable(RuntimeError):
    """The session's lock file cannot be used (its text is the reason)."""


class Teardown:
    def __init__(
        self,
        hub: str,
        traefik_api: str,
        backend: Backend,
        routes: RouteStore,
        locks: SessionLocks,
        http: Http,
    ) -> None:
        self.hub = hub
        self.traefik_api = traefik_api
        self.backend = backend
        self.routes = routes
        self.locks = locks
        self.http = http

    async def stop(
        self,
        key: SessionKey,
        container_id: str | None = None,
        *,
        wait: float | None = LOCK_TIMEOUT,
        last_look: Callable[[], Awaitable[bool]] | None = None,
    ) -> Ended:
        """End the session ``key`` (only if its container is still ``container_id``, when given).

        ``wait``: how long to wait for the lock; past it, go on without (a person asked). With
        ``None`` the lock is tried once: ``BUSY`` if held, ``LockUnusable`` if it cannot be had
        (the reaper never removes a session unlocked). ``last_look``, called under the lock,
        returns True to keep the session after all."""
        if wait is not None:
            async with self.locks.hold(*key, wait):
                return await self._stop_locked(key, container_id, last_look)
        try:
            self.locks.prepare()
            held = self.locks.try_acquire(*key)
        except OSError as exc:
            raise LockUnusable(str(exc)) from exc
        if held is None:
            return Ended.BUSY
        with held:
            return await self._stop_locked(key, container_id, last_look)

    async def _stop_locked(
        self,
        key: SessionKey,
        container_id: str | None,
        last_look: Callable[[], Awaitable[bool]] | None,
    ) -> Ended:
        if last_look is not None and await last_look():
            return Ended.KEPT
        current = await self.backend.get(*key)
        if current is not None and container_id not in (None, current.container_id):
            return Ended.REPLACED
        self.routes.remove_session(*key)
        if current is None:
            return Ended.NO_CONTAINER
        if current.running:
            await self.route_gone(key)
        await self.backend.remove(current.container_id)
        return Ended.REMOVED

    async def route_gone(self, key: SessionKey) -> None:
        """Wait (bounded) until Traefik no longer serves the session's router."""
        http, router = self.http(), key.provider_router(self.hub)

        async def gone() -> bool:
            return not await traefik_has_router(http, self.traefik_api, router)

        if not await poll_until(gone, ROUTE_TIMEOUT):
            log.warning(
                "Traefik still routes %s after %g s; removing anyway",
                key.router(self.hub),
                ROUTE_TIMEOUT,
            )
