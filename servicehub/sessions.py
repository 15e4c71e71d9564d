"""The daemon's sessions: spawn on demand, exactly once, and recover after restarts.

``SessionManager`` is the front the web server talks to. It keeps the table of sessions
(``session_state.py``) and hands the work to the spawner (``spawner.py``), the Docker watcher
(``watcher.py``) and the one teardown (``teardown.py``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

import aiohttp

from .admission import Admission
from .backend import Backend
from .config import AppConfig, Config
from .failures import FailureLog
from .locks import SessionLocks
from .probes import Http
from .routes import RouteStore
from .session_info import SessionInfo
from .session_key import SessionKey
from .session_state import Session, SessionTable, State
from .spawner import Spawner, route_of
from .teardown import Ended, Teardown
from .watcher import DockerWatcher

log = logging.getLogger("servicehub.sessions")


class SessionManager:
    def __init__(
        self,
        config: Config,
        backend: Backend,
        routes: RouteStore,
        now: Callable[[], float] = time.monotonic,
        locks: SessionLocks | None = None,
    ) -> None:
        self.config = config
        self.backend = backend
        self.routes = routes
        self.now = now
        self.locks = locks or SessionLocks.of_hub(config.state_dir)
        self.table = SessionTable()
        self.sessions = self.table.sessions
        self.admission = Admission(config.capacity, self.table, self._has_room)
        self._tasks: set[asyncio.Task[None]] = set()
        self._http = Http()
        self.failures = FailureLog()  # recent spawn failures, for the admin view
        self.spawner = Spawner(
            config, backend, routes, self.locks, self.table, self._http, self.failures
        )
        self.watcher = DockerWatcher(config.hub, backend, routes, self.table)
        self.teardown = Teardown(
            config.hub, config.traefik.api_url, backend, routes, self.locks, self._http
        )

    async def _has_room(self, app: str, placing: list[str]) -> bool:
        apps = self.config.apps
        return await self.backend.has_room(apps[app], [apps[a] for a in placing])

    @property
    def http(self) -> aiohttp.ClientSession:
        return self._http()

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._http.close()

    def get(self, app: str, slug: str) -> Session | None:
        return self.table.get(SessionKey(app, slug))

    # --- start-up -----------------------------------------------------------------------
    async def recover(self) -> None:
        """Rebuild sessions from Docker labels and make the route files match them."""
        await self.backend.prepare()
        try:
            self.locks.prepare()
        except OSError as exc:  # spawns still work, only without the reaper's lock
            log.error("cannot create the lock directory %s: %s", self.locks.directory, exc)
        self.routes.write_base()
        routes = []
        # One list call, however many sessions run: only a stopped container, to be removed,
        # is inspected for its exit code.
        for info in await self.backend.list_sessions(detailed=False):
            if info.app not in self.config.apps:
                log.warning(
                    "container %s belongs to unknown app %r: not routed", info.name, info.app
                )
                continue
            if not info.running or info.address is None:
                info = await self.backend.get(info.app, info.slug) or info
                log.info(
                    "removing stopped session container %s (state %s, exit code %s)",
                    info.name,
                    info.state,
                    info.exit_code,
                )
                await self.backend.remove(info.container_id)
                continue
            session = self._session_from(info)
            session.state, session.message = State.READY, "Ready"
            session.routed = True  # its route file is (made) there; else its request re-routes
            self.table.add(session)
            routes.append(route_of(session))
        written, removed = self.routes.reconcile(routes)
        log.info(
            "recovered %d running sessions; route files written %d, orphans removed %d",
            len(routes),
            written,
            removed,
        )

    def _session_from(self, info: SessionInfo) -> Session:
        app = self.config.apps[info.app]
        return Session(
            app=info.app,
            slug=info.slug,
            user=info.user,
            container_id=info.container_id,
            url=info.url(app.port),
        )

    # --- a request's session --------------------------------------------------------------
    async def ensure(
        self,
        app: AppConfig,
        user: str,
        slug: str,
        *,
        groups: frozenset[str] = frozenset(),
        retry: bool = False,
        may_spawn: bool = True,
    ) -> Session | None:
        """The user's session for ``app``, spawning it if there is none. Never waits for it.

        With ``may_spawn`` false (a request no person made: a sub-resource, a poll, a
        WebSocket) an existing session is routed again but nothing new is created: None
        when there is no session, and a ready session whose container is gone is forgotten."""
        key = SessionKey(app.name, slug)
        async with self.table.lock(key):
            session = self.table.get(key)
            if session is not None and session.state == State.FAILED and retry:
                await self._discard(session)
                session = None
            if session is not None:
                if session.state == State.READY and session.routed:
                    # Traefik sent this request to us, so it does not serve the route (yet):
                    # write it again and wait until it does.
                    await session.set(State.ROUTING, "Connecting you to your app")
                    self._start(self.spawner.reroute(session, app, may_spawn))
                return session
            if not may_spawn:
                return None
            self.admission.check_user(slug)  # TooManySessions: the person must stop one first
            session = Session(app=app.name, slug=slug, user=user, groups=groups)
            self.table.add(session)
            self._start(self.admission.run(session, lambda: self.spawner.spawn(session, app)))
            return session

    def _start(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _discard(self, session: Session) -> None:
        self.table.drop(session)
        self.routes.remove_session(*session.key)
        if session.container_id is not None:
            await self.backend.remove(session.container_id)

    async def stop(self, app: str, slug: str) -> bool:
        """End a session (for hub pages): the same teardown as the reaper's and the CLI's.
        False if there was nothing to stop."""
        key = SessionKey(app, slug)
        async with self.table.lock(key):
            session = self.table.pop(key)
            ended = await self.teardown.stop(key)
            if session is not None:
                await session.set(State.STOPPED, "Your session has ended")
            return session is not None or ended is Ended.REMOVED

    async def watch_events(self) -> None:
        """Follow Docker's events for ever (``watcher.py``)."""
        await self.watcher.watch_events()
