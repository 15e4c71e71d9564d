"""The daemon's view of sessions: spawn on demand, exactly once, and recover after restarts.

Docker is the source of truth. This module keeps only what Docker cannot tell: the progress of
a spawn in flight (for the wait page) and the reason of the last failure (for the error page).
"""

from __future__ import annotations

import asyncio
import enum
import itertools
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from .backend import Backend, SessionEvent, SessionInfo, SpawnError
from .config import AppConfig, Config
from .journal import event
from .locks import LOCK_TIMEOUT, SessionLocks
from .probes import Http, app_answers, poll_until, traefik_has_router
from .routes import RouteStore, SessionRoute
from .session_key import SessionKey
from .teardown import Ended, Teardown

log = logging.getLogger("servicehub.sessions")
ROUTE_TIMEOUT = 15.0
_VERSIONS = itertools.count(1)


class State(enum.StrEnum):
    CREATING = "creating"  # asking Docker for the container
    STARTING = "starting"  # container runs, app not answering yet
    ROUTING = "routing"  # app answers, waiting for Traefik to serve the route
    READY = "ready"
    FAILED = "failed"
    STOPPED = "stopped"  # gone, and only a person opening the app starts it again


PROGRESS = {
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
    state: State = State.CREATING
    message: str = "Creating your container"
    container_id: str | None = None
    url: str | None = None
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
        return {
            "app": self.app,
            "state": str(self.state),
            "message": self.message,
            "progress": PROGRESS[self.state],
            "version": self.version,
            "elapsed": round(time.monotonic() - self.started, 2),
        }


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
        self.sessions: dict[SessionKey, Session] = {}
        self._locks: dict[SessionKey, asyncio.Lock] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._http = Http()
        self.teardown = Teardown(
            config.hub, config.traefik.api_url, backend, routes, self.locks, self._http
        )

    @property
    def http(self) -> aiohttp.ClientSession:
        return self._http()

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._http.close()

    def _lock(self, key: SessionKey) -> asyncio.Lock:
        return self._locks.setdefault(key, asyncio.Lock())

    def get(self, app: str, slug: str) -> Session | None:
        return self.sessions.get(SessionKey(app, slug))

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
        for info in await self.backend.list_sessions():
            if info.app not in self.config.apps:
                log.warning(
                    "container %s belongs to unknown app %r: not routed", info.name, info.app
                )
                continue
            if not info.running or info.address is None:
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
            self.sessions[info.key] = session
            routes.append(self._route(session))
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
            url=f"http://{info.address}:{app.port}",
        )

    def _route(self, session: Session) -> SessionRoute:
        assert session.url is not None
        return SessionRoute(app=session.app, slug=session.slug, user=session.user, url=session.url)

    # --- spawning -----------------------------------------------------------------------
    async def ensure(
        self, app: AppConfig, user: str, slug: str, *, retry: bool = False, may_spawn: bool = True
    ) -> Session | None:
        """The user's session for ``app``, spawning it if there is none. Never waits for it.

        With ``may_spawn`` false (a request no person made: a sub-resource, a poll, a
        WebSocket) an existing session is routed again but nothing new is created: None
        when there is no session, and a ready session whose container is gone is forgotten."""
        key = SessionKey(app.name, slug)
        async with self._lock(key):
            session = self.sessions.get(key)
            if session is not None and session.state == State.FAILED and retry:
                await self._discard(session)
                session = None
            if session is not None:
                if session.state == State.READY:
                    # Traefik sent this request to us, so it does not serve the route (yet):
                    # write it again and wait until it does.
                    await session.set(State.ROUTING, "Connecting you to your app")
                    self._start(self._reroute(session, app, may_spawn))
                return session
            if not may_spawn:
                return None
            session = Session(app=app.name, slug=slug, user=user)
            self.sessions[key] = session
            self._start(self._spawn(session, app))
            return session

    def _start(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _fields(self, name: str, session: Session, **more: object) -> dict[str, Any]:
        """Journal fields of a session event (the reaper reads spawned and ready)."""
        return event(
            name,
            hub=self.config.hub,
            app=session.app,
            slug=session.slug,
            user=session.user,
            container=session.container_id,
            **more,
        )

    async def _spawn(self, session: Session, app: AppConfig) -> None:
        # The reaper holds this lock while it removes the session's old container.
        async with self.locks.hold(*session.key, LOCK_TIMEOUT):
            await self._spawn_locked(session, app)

    async def _spawn_locked(self, session: Session, app: AppConfig) -> None:
        try:
            info = await self.backend.spawn(app, session.user, session.slug)
            session.container_id = info.container_id
            if not info.running or info.address is None:
                raise SpawnError(await self._exit_reason(info))
            session.url = f"http://{info.address}:{app.port}"
            log.info(
                "spawned app=%s slug=%s container=%s",
                app.name,
                session.slug,
                info.name,
                extra=self._fields("spawned", session),
            )
            await session.set(State.STARTING, "Starting the app")
            await self._wait_ready(session, app, info.address)
            await self._route_up(session, app)
        except SpawnError as exc:
            await self._fail(session, str(exc))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # one user's failure must never take the daemon down
            log.exception("spawn of app=%s slug=%s failed", app.name, session.slug)
            await self._fail(session, f"an internal error occurred ({type(exc).__name__})")

    async def _wait_ready(self, session: Session, app: AppConfig, address: str) -> None:
        loop = asyncio.get_running_loop()
        last_check = loop.time()

        async def ready() -> bool:
            nonlocal last_check
            if await app_answers(self.http, address, app.port, app.readiness):
                return True
            if loop.time() - last_check > 0.5 and session.container_id:
                last_check = loop.time()
                info = await self.backend.get(app.name, session.slug)
                if info is None or not info.running:
                    raise SpawnError(await self._exit_reason(info))
            return False

        if not await poll_until(ready, app.start_timeout):
            raise SpawnError(f"the app did not answer within {app.start_timeout:g} s")

    async def _exit_reason(self, info: SessionInfo | None) -> str:
        if info is None:
            return "the container disappeared while starting"
        logs = await self.backend.logs_tail(info.container_id)
        log.warning(
            "container %s exited with code %s; last output:\n%s", info.name, info.exit_code, logs
        )
        return f"the app stopped while starting (exit code {info.exit_code})"

    async def _route_up(self, session: Session, app: AppConfig) -> None:
        """Write the route, wait until Traefik serves it, then (container still up) ready."""
        await session.set(State.ROUTING, "Connecting you to your app")
        self.routes.write_session(self._route(session))
        name = session.key.provider_router(self.config.hub)
        api = self.config.traefik.api_url
        if not await poll_until(lambda: traefik_has_router(self.http, api, name), ROUTE_TIMEOUT):
            raise SpawnError("the proxy did not pick up the route to your app")
        info = await self.backend.get(app.name, session.slug)
        if info is None or not info.running or info.container_id != session.container_id:
            raise SpawnError(await self._exit_reason(info))
        await session.set(State.READY, "Ready")
        elapsed = time.monotonic() - session.started
        log.info(
            "ready app=%s slug=%s after %.3f s",
            app.name,
            session.slug,
            elapsed,
            extra=self._fields("ready", session, seconds=f"{elapsed:.3f}"),
        )

    async def _reroute(self, session: Session, app: AppConfig, may_spawn: bool = True) -> None:
        """A ready session's request reached the daemon: route again, never kill a good app.
        If its container is gone (reaped, removed; the event not handled yet), spawn anew, or,
        for a request no person made, forget the session."""
        async with self.locks.hold(*session.key, LOCK_TIMEOUT):
            try:
                info = await self.backend.get(app.name, session.slug)
                gone = info is None or not info.running or info.container_id != session.container_id
            except Exception:  # Docker unreachable: route again as before, never kill
                log.exception("checking app=%s slug=%s failed", app.name, session.slug)
                gone = False
            if gone and not may_spawn:
                await self._forget(
                    session, "lost its container; a background request does not start it"
                )
                return
            if gone:
                log.info(
                    "session app=%s slug=%s lost its container; spawning a new one",
                    app.name,
                    session.slug,
                )
                self.routes.remove_session(*session.key)
                session.container_id, session.url = None, None
                session.started = time.monotonic()
                await session.set(State.CREATING, "Creating your container")
                await self._spawn_locked(session, app)
                return
            await self._reroute_locked(session, app)

    async def _reroute_locked(self, session: Session, app: AppConfig) -> None:
        try:
            await self._route_up(session, app)
        except SpawnError as exc:
            info = await self.backend.get(app.name, session.slug)
            if info is not None and info.running:
                log.warning(
                    "re-route of app=%s slug=%s failed (%s); keeping the container",
                    app.name,
                    session.slug,
                    exc,
                )
                await session.set(State.READY, "Ready")
            else:
                await self._fail(session, str(exc))
        except Exception:
            log.exception("re-route of app=%s slug=%s failed", app.name, session.slug)
            await session.set(State.READY, "Ready")

    async def _fail(self, session: Session, reason: str) -> None:
        """Always ends in FAILED, even when Docker cannot be reached to clean up."""
        log.error(
            "session app=%s slug=%s failed: %s",
            session.app,
            session.slug,
            reason,
            extra=self._fields("failed", session, reason=reason),
        )
        try:
            self.routes.remove_session(*session.key)
            if session.container_id is not None:
                await self.backend.remove(session.container_id)
        except Exception:
            log.exception("cleanup of failed session app=%s slug=%s", session.app, session.slug)
        await session.set(State.FAILED, reason)

    async def _forget(self, session: Session, why: str) -> None:
        log.info("session app=%s slug=%s %s", session.app, session.slug, why)
        if self.sessions.get(session.key) is session:
            self.sessions.pop(session.key, None)
        self.routes.remove_session(*session.key)
        await session.set(State.STOPPED, "Your session has ended")

    async def _discard(self, session: Session) -> None:
        self.sessions.pop(session.key, None)
        self.routes.remove_session(*session.key)
        if session.container_id is not None:
            await self.backend.remove(session.container_id)

    async def stop(self, app: str, slug: str) -> bool:
        """End a session (for hub pages): the same teardown as the reaper's and the CLI's.
        False if there was nothing to stop."""
        key = SessionKey(app, slug)
        async with self._lock(key):
            session = self.sessions.pop(key, None)
            ended = await self.teardown.stop(key)
            if session is not None:
                await session.set(State.STOPPED, "Your session has ended")
            return session is not None or ended is Ended.REMOVED

    # --- engine events ------------------------------------------------------------------
    async def handle_event(self, event: SessionEvent) -> None:
        key = event.key
        session = self.sessions.get(key)
        if session is None or session.container_id != event.container_id:
            return  # not ours, or an old container of a session that was respawned
        if event.action in ("die", "destroy") and session.state == State.READY:
            # Stopped from outside (operator, reaper) or crashed: either way the route now
            # leads nowhere. Forget the session; the user's next request spawns a fresh one.
            async with self._lock(key):
                if self.sessions.get(key) is not session:
                    return
                self.sessions.pop(key, None)
                self.routes.remove_session(*key)
                log.info(
                    "session app=%s slug=%s container %s",
                    event.app,
                    event.slug,
                    "removed" if event.action == "destroy" else "stopped",
                    extra=self._fields("stopped", session, action=event.action),
                )
                if event.action == "die":
                    logs = await self.backend.logs_tail(event.container_id)
                    log.warning(
                        "session app=%s slug=%s container stopped (exit code %s); last output:\n%s",
                        event.app,
                        event.slug,
                        event.exit_code,
                        logs,
                    )
                    await self.backend.remove(event.container_id)

    async def resync(self) -> None:
        """Forget ready sessions whose container is gone (events missed while disconnected)."""
        for key, session in list(self.sessions.items()):
            if session.state != State.READY:
                continue
            info = await self.backend.get(*key)
            if info is None or not info.running or info.container_id != session.container_id:
                async with self._lock(key):
                    if self.sessions.get(key) is session:
                        self.sessions.pop(key, None)
                        self.routes.remove_session(*key)
                        log.info("session app=%s slug=%s gone while events were missed", *key)

    async def watch_events(self) -> None:
        """Follow the engine's events for ever, reconnecting (and catching up) when it breaks."""
        while True:
            try:
                stream = self.backend.events()
                first = asyncio.ensure_future(anext(stream))
                try:
                    # Subscribe first, then catch up on anything missed before the stream.
                    await asyncio.sleep(0.1)
                    await self.resync()
                    event = await first
                finally:
                    first.cancel()
                while True:
                    try:
                        await self.handle_event(event)
                    except Exception:
                        log.exception("handling %s of %s failed", event.action, event.container_id)
                    event = await anext(stream)
            except asyncio.CancelledError:
                raise
            except StopAsyncIteration:
                log.warning("Docker event stream ended; reconnecting")
            except Exception as exc:
                log.warning("Docker event stream broke (%s); reconnecting", exc)
            await asyncio.sleep(1)
