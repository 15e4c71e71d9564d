"""Following Docker: a ready session whose container dies or is removed loses its route at once.

After the event stream breaks, the watcher reconnects and checks every ready session against
Docker (``resync``) before it follows events again, so no removal is missed.
"""

from __future__ import annotations

import asyncio
import logging

from .backend import Backend, SessionEvent
from .routes import RouteStore
from .session_state import SessionTable, State

log = logging.getLogger("servicehub.sessions")


class DockerWatcher:
    def __init__(self, hub: str, backend: Backend, routes: RouteStore, table: SessionTable) -> None:
        self.hub = hub
        self.backend = backend
        self.routes = routes
        self.table = table

    async def handle_event(self, event: SessionEvent) -> None:
        key = event.key
        session = self.table.get(key)
        if session is None or session.container_id != event.container_id:
            return  # not ours, or an old container of a session that was respawned
        if event.action in ("die", "destroy") and session.state == State.READY:
            # Stopped from outside (operator, reaper) or crashed: either way the route now
            # leads nowhere. Forget the session; the user's next request spawns a fresh one.
            async with self.table.lock(key):
                if not self.table.drop(session):
                    return
                self.routes.remove_session(*key)
                log.info(
                    "session app=%s slug=%s container %s",
                    event.app,
                    event.slug,
                    "removed" if event.action == "destroy" else "stopped",
                    extra=session.fields(self.hub, "stopped", action=event.action),
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
        """Forget ready sessions whose container is gone (events missed while disconnected).
        One list call for all of them: the catch-up must not grow with one call per session."""
        running = {
            info.key: info.container_id
            for info in await self.backend.list_sessions(detailed=False)
            if info.running
        }
        for key, session in list(self.table.sessions.items()):
            if session.state != State.READY or running.get(key) == session.container_id:
                continue
            info = await self.backend.get(*key)  # ready since the list call, perhaps
            if info is not None and info.running and info.container_id == session.container_id:
                continue
            async with self.table.lock(key):
                if self.table.drop(session):
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
