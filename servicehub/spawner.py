"""Bringing one session up: container, readiness, route, Traefik; and routing a ready one again.

Each step moves the session's state (what the wait page shows). One user's failure ends in
their error page and a log line, never in the daemon's end.
"""

from __future__ import annotations

import asyncio
import logging
import time

from . import metrics
from .backend import Backend, SpawnError
from .config import AppConfig, Config
from .failures import FailureLog
from .locks import LOCK_TIMEOUT, SessionLocks
from .probes import Http, app_answers, poll_until, traefik_has_router
from .routes import RouteStore, SessionRoute
from .session_info import SessionInfo
from .session_state import Session, SessionTable, State

log = logging.getLogger("servicehub.sessions")
ROUTE_TIMEOUT = 15.0  # how long a spawn waits for Traefik to serve the new route


def route_of(session: Session, booting: bool = False) -> SessionRoute:
    assert session.url is not None
    return SessionRoute(
        app=session.app, slug=session.slug, user=session.user, url=session.url, booting=booting
    )


class Spawner:
    def __init__(
        self,
        config: Config,
        backend: Backend,
        routes: RouteStore,
        locks: SessionLocks,
        table: SessionTable,
        http: Http,
        failures: FailureLog | None = None,
    ) -> None:
        self.config = config
        self.backend = backend
        self.routes = routes
        self.locks = locks
        self.table = table
        self.http = http
        self.failures = failures or FailureLog()

    async def spawn(self, session: Session, app: AppConfig) -> None:
        # The reaper holds this lock while it removes the session's old container.
        async with self.locks.hold(*session.key, LOCK_TIMEOUT):
            await self._spawn_locked(session, app)

    async def _spawn_locked(self, session: Session, app: AppConfig) -> None:
        # The route goes live while the container is made and the app boots: Traefik's reload
        # takes longer the more sessions there are (a few hundred ms at 2,000), about what a
        # container's start takes, so waiting for one and then the other would add them up.
        # Until the app listens, Traefik hands its 502 to the daemon's wait page.
        route_live: asyncio.Future[None] | None = None
        metrics.spawn_started(app.name)
        try:
            address = await self.backend.plan_address(app.name)
            if address is not None:
                session.url = f"http://{address}:{app.port}"
                route_live = self._route_booting(session)
            info = await self.backend.spawn(
                app, session.user, session.slug, address, groups=session.groups
            )
            session.container_id = info.container_id
            if not info.running or info.address is None:
                raise SpawnError(await self._exit_reason(info))
            if info.url(app.port) != session.url:  # not as planned, or a running one adopted
                session.url = info.url(app.port)
                if route_live is not None:
                    route_live.cancel()
                route_live = self._route_booting(session)
            log.info(
                "spawned app=%s slug=%s container=%s",
                app.name,
                session.slug,
                info.name,
                extra=session.fields(self.config.hub, "spawned"),
            )
            await session.set(State.STARTING, "Starting the app")
            assert route_live is not None  # written with the planned or the actual address
            await self._wait_ready(session, app, info.address, info.port or app.port)
            await self._confirm_ready(session, app)
            metrics.spawn_ready(session)
            # Ready for its person now. Traefik may still be loading the route (longer the more
            # sessions run): until it serves it, the daemon hands the requests over.
            await self._finish_route(session, route_live)
        except SpawnError as exc:
            await self.fail(session, str(exc))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # one user's failure must never take the daemon down
            log.exception("spawn of app=%s slug=%s failed", app.name, session.slug)
            await self.fail(session, f"an internal error occurred ({type(exc).__name__})")
        finally:
            if route_live is not None:  # a failed step leaves nothing to wait for
                route_live.cancel()

    async def _finish_route(self, session: Session, route_live: asyncio.Future[None]) -> None:
        """Once Traefik serves the route, write it without the wait-page fallback (the app's
        own 5xx are its own now), unless the session ended meanwhile."""
        try:
            await route_live
        except SpawnError as exc:  # the app works through the daemon; say so, do not kill it
            log.error("session app=%s slug=%s: %s", session.app, session.slug, exc)
            return
        if self.table.get(session.key) is session and session.state == State.READY:
            self.routes.write_session(route_of(session))

    def _route_booting(self, session: Session) -> asyncio.Future[None]:
        """Write the session's route with the wait-page fallback; the wait until it is live."""
        self.routes.write_session(route_of(session, booting=True))
        return asyncio.ensure_future(self._route_live(session))

    async def _wait_ready(self, session: Session, app: AppConfig, address: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        last_check = loop.time()

        async def ready() -> bool:
            nonlocal last_check
            if await app_answers(self.http(), address, port, app.readiness):
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
        self.routes.write_session(route_of(session))
        await self._route_live(session)
        await self._confirm_ready(session, app)

    async def _route_live(self, session: Session) -> None:
        name = session.key.provider_router(self.config.hub)
        api = self.config.traefik.api_url
        if not await poll_until(lambda: traefik_has_router(self.http(), api, name), ROUTE_TIMEOUT):
            raise SpawnError("the proxy did not pick up the route to your app")
        metrics.spawn_routed(session)
        session.routed = True

    async def _confirm_ready(self, session: Session, app: AppConfig) -> None:
        """Ready only if the container still runs once the app answers and the route is live."""
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
            extra=session.fields(self.config.hub, "ready", seconds=f"{elapsed:.3f}"),
        )

    async def reroute(self, session: Session, app: AppConfig, may_spawn: bool = True) -> None:
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
                await self.fail(session, str(exc))
        except Exception:
            log.exception("re-route of app=%s slug=%s failed", app.name, session.slug)
            await session.set(State.READY, "Ready")

    async def fail(self, session: Session, reason: str) -> None:
        """Always ends in FAILED, even when Docker cannot be reached to clean up."""
        log.error(
            "session app=%s slug=%s failed: %s",
            session.app,
            session.slug,
            reason,
            extra=session.fields(self.config.hub, "failed", reason=reason),
        )
        metrics.spawn_failed(session.app, reason)
        output = ""
        try:
            self.routes.remove_session(*session.key)
            if session.container_id is not None:
                output = await self.backend.logs_tail(session.container_id)  # for the admin view
                await self.backend.remove(session.container_id)
        except Exception:
            log.exception("cleanup of failed session app=%s slug=%s", session.app, session.slug)
        self.failures.add(session.app, session.slug, session.user, reason, output)
        await session.set(State.FAILED, reason)

    async def _forget(self, session: Session, why: str) -> None:
        log.info("session app=%s slug=%s %s", session.app, session.slug, why)
        self.table.drop(session)
        self.routes.remove_session(*session.key)
        await session.set(State.STOPPED, "Your session has ended")
