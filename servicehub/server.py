"""The daemon's HTTP side: Traefik sends it every request that has no session route yet."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from urllib.parse import quote

from aiohttp import web
from yarl import URL

from . import metrics, pages
from .admission import TooManySessions
from .config import RESERVED_PREFIX, AppConfig, Config
from .handover import Handover
from .identity import Identity, IdentityError, parse_identity, secret_matches
from .routes import BOOTING_PATH
from .session_state import Session, State
from .sessions import SessionManager

log = logging.getLogger("servicehub.server")

STATUS_PATH = "/_servicehub/api/status"
START_PATH = "/_servicehub/api/start"
RETRY_PATH = "/_servicehub/retry"
HEALTH_PATH = "/_servicehub/healthz"
HOME_PATH = "/_servicehub/"
LONG_POLL_SECONDS = 20.0
MANAGER_KEY: web.AppKey[SessionManager] = web.AppKey("manager", SessionManager)
CONFIG_KEY: web.AppKey[Config] = web.AppKey("config", Config)


class Refused(Exception):
    def __init__(self, status: int, title: str, reason: str) -> None:
        super().__init__(reason)
        self.status, self.title, self.reason = status, title, reason


def too_many(exc: TooManySessions) -> Refused:
    """429: the person runs as many sessions as one may (capacity.max_sessions_per_user)."""
    return Refused(429, "Too many sessions", str(exc))


def wants_html(request: web.Request) -> bool:
    return request.method in ("GET", "HEAD") and "text/html" in request.headers.get("Accept", "")


# Fetch metadata that marks a speculative load, not a person: Chromium, older Chromium, Firefox.
_PREFETCH_HEADERS = ("Sec-Purpose", "Purpose", "X-Moz")


def is_write(request: web.Request) -> bool:
    return request.method not in ("GET", "HEAD")


def starts_session(request: web.Request) -> bool:
    """Whether this request may create a container: only a person's action may, which is
    exactly what the reaper counts as activity (docs/reaper.md): opening a page, or a write.

    Browsers say what a request is for in its fetch metadata (sent to every https site):
    ``Sec-Fetch-Mode: navigate`` is a page load in a tab or frame; a favicon, a script, a
    fetch/XHR poll or a WebSocket has another mode. Without fetch metadata (scripts, old
    browsers) a GET that accepts HTML counts as opening a page, so ``curl -H 'Accept:
    text/html'`` starts a session as before; ``POST /_servicehub/api/start`` is the explicit
    way. A write (``POST``, ``PUT``, ...) is a form sent or a click in a single-page app
    (save, create, run), from the app's own pages; a beacon (``no-cors``) is not. A tab left
    open on an app whose container was reaped therefore never brings it back by polling:
    only a reload or a click does.
    """
    if any("prefetch" in request.headers.get(h, "").lower() for h in _PREFETCH_HEADERS):
        return False
    mode = request.headers.get("Sec-Fetch-Mode")
    mode = None if mode is None else mode.strip().lower()
    if is_write(request):
        site = request.headers.get("Sec-Fetch-Site", "same-origin").strip().lower()
        return mode in (None, "navigate", "cors", "same-origin") and site == "same-origin"
    if mode is not None:
        return mode == "navigate"
    if "Upgrade" in request.headers:
        return False
    return wants_html(request)


async def settled(session: Session, timeout: float) -> None:
    """Until ``session`` is ready, failed or stopped, or ``timeout`` seconds have passed."""
    done = (State.READY, State.FAILED, State.STOPPED)
    async with session.changed:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(session.changed.wait_for(lambda: session.state in done), timeout)


def no_session(request: web.Request, app: AppConfig) -> web.Response:
    """The answer to a background request for a session that does not exist: it never spawns."""
    reason = (
        f"You have no running session of {app.name}. Open {app.path_prefix} in your browser "
        f"to start one (scripts: POST {start_url(app.name)})."
    )
    headers = {"Cache-Control": "no-store", "X-Servicehub-Session": "none"}
    metrics.refused(409, "No session")
    if wants_html(request):
        return web.Response(
            status=409,
            text=pages.refusal_page("No session", reason),
            content_type="text/html",
            headers=headers,
        )
    return web.json_response(
        {"error": "no session", "app": app.name, "state": "stopped", "reason": reason},
        status=409,
        headers=headers,
    )


def refusal(request: web.Request, exc: Refused) -> web.Response:
    metrics.refused(exc.status, exc.title)
    if wants_html(request):
        return web.Response(
            status=exc.status,
            text=pages.refusal_page(exc.title, exc.reason),
            content_type="text/html",
            headers={"Cache-Control": "no-store"},
        )
    return web.json_response({"error": exc.title, "reason": exc.reason}, status=exc.status)


def identify(request: web.Request, config: Config, proof: list[str] | None = None) -> Identity:
    """The caller, from the headers Apache set; ``proof`` replaces the proxy secret header
    where Traefik forwards a request without it (``Handlers.booting``)."""
    ident = config.identity
    if proof is None:
        proof = request.headers.getall(ident.proxy_secret_header, [])
    if not secret_matches(proof, config.proxy_secret):
        raise Refused(
            403,
            "Not through the front door",
            "This request did not come through the hub's login proxy.",
        )
    try:
        return parse_identity(
            request.headers.getall(ident.user_header, []),
            request.headers.getall(ident.groups_header, []),
            ident.issuer,
            ident.user_header,
            ident.groups_header,
        )
    except IdentityError as exc:
        log.warning("refused request for %s: %s", request.path, exc)
        raise Refused(400, "Who are you?", str(exc)) from None


def match_app(config: Config, host: str, path: str) -> AppConfig | None:
    """The app whose route serves this request: host match first, then the longest prefix."""
    host = host.split(":", 1)[0].lower()
    candidates = [
        a
        for a in config.apps.values()
        if (a.host is None or a.host == host) and (path + "/").startswith(a.path_prefix)
    ]
    candidates.sort(key=lambda a: (a.host is not None, len(a.path_prefix)), reverse=True)
    return candidates[0] if candidates else None


def authorize(app: AppConfig, identity: Identity) -> None:
    if not app.allows(identity.user, identity.groups):
        log.warning("user slug=%s not allowed to use app %s", identity.slug, app.name)
        raise Refused(403, "Not allowed", f"Your account may not use {app.name}.")


def safe_target(value: str | None, default: str) -> str:
    """Only same-site absolute paths: never an open redirect."""
    if not value or not value.startswith("/") or value.startswith("//"):
        return default
    if "\\" in value or any(ord(c) < 0x21 or ord(c) == 0x7F for c in value):
        return default  # browsers drop tabs and newlines: "/\t/evil" would become "//evil"
    url = URL(value)
    if url.scheme or url.host or not url.path.startswith("/") or url.path.startswith("//"):
        return default
    return value


def status_url(app: str) -> str:
    return f"{STATUS_PATH}?app={quote(app)}"


def start_url(app: str) -> str:
    return f"{START_PATH}?app={quote(app)}"


def stopped_status(app: str) -> dict[str, object]:
    """What the status API says for a session that does not exist (reaped, stopped)."""
    return {
        "app": app,
        "state": str(State.STOPPED),
        "message": "Your session has ended. Start it again to go on.",
        "progress": 0.0,
        "version": 0,
        "elapsed": 0,
    }


def session_response(
    request: web.Request, app: AppConfig, session: Session, asked: str | None = None
) -> web.Response:
    """The wait page (or its JSON) for ``session``; ``asked`` is the URL to go on to, the
    request's own unless Traefik forwarded the request (see ``Handlers.booting``)."""
    target = safe_target(asked or request.path_qs, app.path_prefix)
    headers = {"Cache-Control": "no-store", "X-Servicehub-Wait": "1"}
    if session.state == State.FAILED:
        if wants_html(request):
            return web.Response(
                status=503,
                content_type="text/html",
                headers=headers,
                text=pages.error_page(app.name, session.message, target, RETRY_PATH),
            )
        return web.json_response(
            {"state": "failed", "reason": session.message}, status=503, headers=headers
        )
    if wants_html(request):
        return web.Response(
            status=200,
            content_type="text/html",
            headers=headers,
            text=pages.wait_page(
                app.name, target, status_url(app.name), RETRY_PATH, session.status()
            ),
        )
    headers["Retry-After"] = "1"
    return web.json_response(session.status(), status=503, headers=headers)


class Handlers:
    def __init__(self, config: Config, manager: SessionManager) -> None:
        self.config = config
        self.manager = manager
        self.handover = Handover(config)

    def _named_app(self, request: web.Request, name: str) -> tuple[Identity, AppConfig]:
        """The caller, and the app a daemon API request names, which they may use."""
        identity = identify(request, self.config)
        app = self.config.apps.get(name)
        if app is None:
            raise Refused(404, "Unknown app", "No such app on this hub.")
        authorize(app, identity)
        return identity, app

    async def spawn(self, request: web.Request) -> web.StreamResponse:
        try:
            identity = identify(request, self.config)
            app = match_app(self.config, request.host, request.path)
            if app is None and request.path == "/":  # no app at "/": the hub's home page
                raise web.HTTPFound(location=HOME_PATH)
            if app is None or request.path.startswith(RESERVED_PREFIX):
                raise Refused(404, "Nothing here", "No app is published at this address.")
            authorize(app, identity)
        except Refused as exc:
            return refusal(request, exc)
        if request.path + "/" == app.path_prefix:  # /nb for an app at /nb/
            query = f"?{request.query_string}" if request.query_string else ""
            raise web.HTTPPermanentRedirect(location=app.path_prefix + query)
        try:
            session = await self.manager.ensure(
                app,
                identity.user,
                identity.slug,
                groups=identity.groups,
                may_spawn=starts_session(request),
            )
        except TooManySessions as exc:
            return refusal(request, too_many(exc))
        if session is None:
            return no_session(request, app)
        write = is_write(request)
        if write:
            # A click's write waits for the app and is answered by it: the wait page cannot
            # be shown to a script's request, and an error would lose what the person did.
            await settled(session, app.start_timeout)
        if session.state == State.READY and (write or not session.routed):
            return await self.handover.forward(request, session)  # Traefik may load the route
        return session_response(request, app, session)

    async def booting(self, request: web.Request) -> web.StreamResponse:
        """A request that met a session's app before it listens: its route goes live while
        the app boots, and Traefik's errors middleware hands the 502 here with the original
        headers and ``url``. The person sees the wait page instead of a proxy error. The route
        has already deleted the secret header by then: the middleware's query carries it."""
        original = URL(request.query.get("url", "/"))
        asked = original.raw_path_qs or "/"
        try:
            identity = identify(request, self.config, request.query.getall("proof", []))
            app = match_app(self.config, original.host or request.host, original.path or "/")
            if app is None:
                raise Refused(404, "Nothing here", "No app is published at this address.")
            authorize(app, identity)
        except Refused as exc:
            return refusal(request, exc)
        session = self.manager.get(app.name, identity.slug)
        if session is None:
            return no_session(request, app)
        return session_response(request, app, session, asked)

    async def start(self, request: web.Request) -> web.StreamResponse:
        """The explicit start for scripts and hub pages: ``POST /_servicehub/api/start?app=``."""
        form = await request.post()
        try:
            name = request.query.get("app") or str(form.get("app", ""))
            identity, app = self._named_app(request, name)
        except Refused as exc:
            return refusal(request, exc)
        session = self.manager.get(app.name, identity.slug)
        if session is None or session.state == State.FAILED:
            try:
                session = await self.manager.ensure(
                    app, identity.user, identity.slug, groups=identity.groups, retry=True
                )
            except TooManySessions as exc:
                return refusal(request, too_many(exc))
            assert session is not None  # may_spawn: always a session
        status = 200 if session.state == State.READY else 202
        return web.json_response(
            session.status(), status=status, headers={"Cache-Control": "no-store"}
        )

    async def status(self, request: web.Request) -> web.StreamResponse:
        try:
            identity, app = self._named_app(request, request.query.get("app", ""))
        except Refused as exc:
            return refusal(request, exc)
        session = self.manager.get(app.name, identity.slug)
        if session is None:  # reaped or stopped: a poll never starts it again
            return web.json_response(
                stopped_status(app.name), headers={"Cache-Control": "no-store"}
            )
        since = _int(request.query.get("since"), -1)
        if session.version <= since and session.state not in (
            State.READY,
            State.FAILED,
            State.STOPPED,
        ):
            async with session.changed:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        session.changed.wait_for(lambda: session.version > since), LONG_POLL_SECONDS
                    )
        return web.json_response(session.status(), headers={"Cache-Control": "no-store"})

    async def retry(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        try:
            identity, app = self._named_app(request, str(form.get("app", "")))
        except Refused as exc:
            return refusal(request, exc)
        try:
            await self.manager.ensure(
                app, identity.user, identity.slug, groups=identity.groups, retry=True
            )  # a click
        except TooManySessions as exc:
            return refusal(request, too_many(exc))
        target = safe_target(str(form.get("next", "")), app.path_prefix)
        raise web.HTTPSeeOther(location=target)

    async def health(self, request: web.Request) -> web.StreamResponse:
        return web.Response(text="ok\n")


def _int(value: str | None, default: int) -> int:
    try:
        return int(value) if value is not None else default
    except ValueError:
        return default


def make_app(config: Config, manager: SessionManager) -> web.Application:
    handlers = Handlers(config, manager)
    app = web.Application()
    app[CONFIG_KEY] = config
    app[MANAGER_KEY] = manager
    app.router.add_get(HEALTH_PATH, handlers.health)
    app.router.add_get(STATUS_PATH, handlers.status)
    app.router.add_get(BOOTING_PATH, handlers.booting)
    app.router.add_post(RETRY_PATH, handlers.retry)
    app.router.add_post(START_PATH, handlers.start)
    # Imported here: the hub pages use this module's identify and refusal.
    from .hub_pages import add_hub_routes

    add_hub_routes(app, config, manager)
    app.router.add_route("*", "/{tail:.*}", handlers.spawn)

    async def lifecycle(_: web.Application) -> AsyncIterator[None]:
        await manager.recover()
        watcher = asyncio.create_task(manager.watch_events())
        yield
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        await manager.close()
        await manager.backend.close()
        await handlers.handover.close()

    app.cleanup_ctx.append(lifecycle)
    return app
