"""The hub pages: a person's home (their apps and sessions: open, stop, restart, log out) and
the admin view (every session, stop any, recent failures, counts), with JSON twins under
``/_servicehub/api/``.

Who may see what comes from the trusted headers only (``server.identify``): the apps an
``allow`` rule keeps from someone are never named to them, and the admin view answers only a
member of ``pages.admin_group`` as Apache states the groups. Every change is a POST that
carries the user's CSRF token (``csrf.py``) and works as a plain form, without JavaScript.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from importlib.resources import files
from typing import Any

import jinja2
from aiohttp import web

from . import csrf
from .config import AppConfig, Config
from .hub_data import ReaperRecords, Row, app_url, counts, row, visible_apps
from .identity import Identity
from .journal import event
from .metrics_history import HistoryCache
from .reaper import state_path
from .server import HOME_PATH, Refused, identify, refusal
from .session_info import SessionInfo
from .sessions import SessionManager
from .sparkline import sparkline
from .times import iso
from .usage import CpuRates, Usage, memory_bytes

log = logging.getLogger("servicehub.pages")

ADMIN_PATH = "/_servicehub/admin"
API = "/_servicehub/api"
USAGE_CONCURRENCY = 16  # Docker calls at once while the admin view reads memory and CPU
_NO_STORE = {"Cache-Control": "no-store"}
_NO_USAGE = Usage(None, None)

_TEMPLATES = jinja2.Environment(
    loader=jinja2.FunctionLoader(
        lambda name: files("servicehub").joinpath("templates", name).read_text("utf-8")
    ),
    autoescape=True,
    trim_blocks=True,
    lstrip_blocks=True,
)
_TEMPLATES.filters["iso"] = iso
_TEMPLATES.globals["sparkline"] = sparkline  # returns escaped Markup (sparkline.py)


def render(name: str, **context: Any) -> web.Response:
    return web.Response(
        text=_TEMPLATES.get_template(name).render(**context),
        content_type="text/html",
        headers=_NO_STORE,
    )


def see_other(location: str) -> web.HTTPSeeOther:
    return web.HTTPSeeOther(location=location, headers=_NO_STORE)


Handler = Callable[["HubPages", web.Request], Awaitable[web.StreamResponse]]


def refused_as_page(handler: Handler) -> Handler:
    """A ``Refused`` becomes the refusal page (a browser) or its JSON (a script)."""

    async def wrapped(self: HubPages, request: web.Request) -> web.StreamResponse:
        try:
            return await handler(self, request)
        except Refused as exc:
            return refusal(request, exc)

    return wrapped


class HubPages:
    def __init__(self, config: Config, manager: SessionManager) -> None:
        self.config = config
        self.manager = manager
        self.tokens = csrf.CsrfTokens(csrf.derive_key(config.proxy_secret))
        self.records = ReaperRecords(state_path(config))
        self.cpu = CpuRates()
        self.history = HistoryCache(config.pages.prometheus_url)

    # --- who is asking ------------------------------------------------------------------
    def is_admin(self, identity: Identity) -> bool:
        group = self.config.pages.admin_group
        return group is not None and group in identity.groups

    def admin(self, request: web.Request) -> Identity:
        identity = identify(request, self.config)
        if not self.is_admin(identity):
            log.warning("admin view refused to slug=%s: not in the admin group", identity.slug)
            raise Refused(403, "Not allowed", "The admin view is for the hub's administrators.")
        return identity

    async def changing(self, request: web.Request) -> tuple[Identity, Mapping[str, str]]:
        """The caller of a POST and its parameters (query and form), once the token checks."""
        identity = identify(request, self.config)
        form = await request.post()
        params = {**request.query, **{k: str(v) for k, v in form.items()}}
        given = request.headers.get(csrf.HEADER) or params.get(csrf.FIELD)
        if not self.tokens.valid(identity.slug, given):
            log.warning(
                "POST %s refused: no valid CSRF token (slug=%s)", request.path, identity.slug
            )
            raise Refused(
                403,
                "Request refused",
                "This form has expired or came from another site. Reload the page and try again.",
            )
        return identity, params

    def own_app(self, identity: Identity, name: str) -> AppConfig:
        app = self.config.apps.get(name)
        if app is None or not app.allows(identity.user, identity.groups):
            raise Refused(404, "Unknown app", "No such app on this hub.")  # never named
        return app

    # --- the home page --------------------------------------------------------------------
    async def user_rows(self, identity: Identity) -> list[tuple[AppConfig, Row]]:
        apps = visible_apps(self.config.apps.values(), identity)
        infos = await asyncio.gather(
            *(self.manager.backend.get(a.name, identity.slug) for a in apps)
        )
        records = self.records.get()
        rows = []
        for app, info in zip(apps, infos, strict=True):
            session = self.manager.get(app.name, identity.slug)
            record = records.get(info.key.state_key) if info else None
            rows.append((app, row(app.name, session, info, record)))
        return rows

    def page_context(self, identity: Identity) -> dict[str, Any]:
        return {
            "brand": self.config.pages.branding,
            "user": identity.user,
            "csrf_field": csrf.FIELD,
            "csrf": self.tokens.token(identity.slug),
            "is_admin": self.is_admin(identity),
            "home_url": HOME_PATH,
            "admin_url": ADMIN_PATH,
        }

    @refused_as_page
    async def home(self, request: web.Request) -> web.StreamResponse:
        identity = identify(request, self.config)
        rows = await self.user_rows(identity)
        entries = [{"app": a, "row": r, "url": app_url(a)} for a, r in rows]
        return render("hub_home.html", entries=entries, **self.page_context(identity))

    @refused_as_page
    async def api_apps(self, request: web.Request) -> web.StreamResponse:
        identity = identify(request, self.config)
        apps = []
        for app, r in await self.user_rows(identity):
            entry = {k: v for k, v in r.to_json().items() if k not in ("user", "slug")}
            entry |= {
                "title": app.page.title or app.name,
                "description": app.page.description,
                "icon": app.page.icon,
                "url": app_url(app),
                "stop_on_logout": app.page.stop_on_logout,
            }
            apps.append(entry)
        body = {"user": identity.user, "csrf": self.tokens.token(identity.slug), "apps": apps}
        return web.json_response(body, headers=_NO_STORE)

    # --- a person's own sessions ------------------------------------------------------------
    @refused_as_page
    async def stop(self, request: web.Request) -> web.StreamResponse:
        identity, params = await self.changing(request)
        app = self.own_app(identity, params.get("app", ""))
        stopped = await self.manager.stop(app.name, identity.slug)
        log.info("slug=%s stopped their session of %s", identity.slug, app.name)
        if request.path.startswith(API):
            return web.json_response({"app": app.name, "stopped": stopped}, headers=_NO_STORE)
        raise see_other(HOME_PATH)

    @refused_as_page
    async def restart(self, request: web.Request) -> web.StreamResponse:
        identity, params = await self.changing(request)
        app = self.own_app(identity, params.get("app", ""))
        await self.manager.stop(app.name, identity.slug)
        session = await self.manager.ensure(
            app, identity.user, identity.slug, groups=identity.groups, retry=True
        )
        assert session is not None  # may_spawn: always a session
        log.info("slug=%s restarted their session of %s", identity.slug, app.name)
        if request.path.startswith(API):
            return web.json_response(session.status(), status=202, headers=_NO_STORE)
        raise see_other(app_url(app))  # the wait page, then the app

    @refused_as_page
    async def logout(self, request: web.Request) -> web.StreamResponse:
        """Stop the sessions of apps with ``stop_on_logout``, then Apache's logout."""
        identity, _ = await self.changing(request)
        for app in visible_apps(self.config.apps.values(), identity):
            if app.page.stop_on_logout:
                await self.manager.stop(app.name, identity.slug)
        log.info(
            "slug=%s logged out",
            identity.slug,
            extra=event("logout", hub=self.config.hub, slug=identity.slug, user=identity.user),
        )
        raise see_other(self.config.pages.logout_url)

    # --- the admin view -----------------------------------------------------------------------
    async def all_rows(self) -> list[tuple[Row, Usage]]:
        """Every session with its memory and CPU use, by app and user."""
        infos = await self.manager.backend.list_sessions(detailed=False)
        records = self.records.get()
        usage = await self.usage([i for i in infos if i.running])
        found = [
            (
                row(i.app, self.manager.sessions.get(i.key), i, records.get(i.key.state_key)),
                usage.get(i.container_id, _NO_USAGE),
            )
            for i in infos
        ]
        # Sessions the daemon is starting before Docker has their container, and failures.
        known = {i.key for i in infos}
        found += [
            (row(s.app, s, None, None), _NO_USAGE)
            for k, s in self.manager.sessions.items()
            if k not in known
        ]
        found.sort(key=lambda pair: (pair[0].app, pair[0].user))
        return found

    async def usage(self, infos: list[SessionInfo]) -> dict[str, Usage]:
        limit = asyncio.Semaphore(USAGE_CONCURRENCY)
        now = time.time()

        async def one(info: SessionInfo) -> Usage:
            async with limit:
                counters = await self.manager.backend.counters(info.container_id)
            if counters is None:
                return _NO_USAGE
            age = now - info.created.timestamp()
            memory = counters.memory_bytes  # from Docker's API, when it gave the sample
            return Usage(
                memory if memory is not None else memory_bytes(counters.pid, info.container_id),
                self.cpu.rate(info.container_id, counters, age),
            )

        found = await asyncio.gather(*(one(i) for i in infos), return_exceptions=True)
        self.cpu.keep_only({i.container_id for i in infos})
        return {
            i.container_id: u if isinstance(u, Usage) else _NO_USAGE
            for i, u in zip(infos, found, strict=True)
        }

    @refused_as_page
    async def admin_page(self, request: web.Request) -> web.StreamResponse:
        identity = self.admin(request)
        found, charts = await asyncio.gather(
            self.all_rows(), self.history.charts(self.manager.http)
        )
        return render(
            "hub_admin.html",
            sessions=found,
            charts=charts if isinstance(charts, list) else [],
            no_history=charts if isinstance(charts, str) else None,
            counts=counts(r for r, _ in found),
            failures=self.manager.failures.recent(),
            **self.page_context(identity),
        )

    @refused_as_page
    async def api_sessions(self, request: web.Request) -> web.StreamResponse:
        self.admin(request)
        found = await self.all_rows()
        body = {
            "sessions": [
                r.to_json() | {"memory_bytes": u.memory_bytes, "cpu_cores": u.cpu_cores}
                for r, u in found
            ],
            "counts": counts(r for r, _ in found),
            "failures": [f.to_json() for f in self.manager.failures.recent()],
        }
        return web.json_response(body, headers=_NO_STORE)

    @refused_as_page
    async def admin_stop(self, request: web.Request) -> web.StreamResponse:
        identity, params = await self.changing(request)
        if not self.is_admin(identity):
            raise Refused(403, "Not allowed", "The admin view is for the hub's administrators.")
        app, slug = params.get("app", ""), params.get("slug", "")
        if app not in self.config.apps or not slug:
            raise Refused(404, "Unknown session", "No such session on this hub.")
        stopped = await self.manager.stop(app, slug)
        log.info(
            "admin %s stopped session app=%s slug=%s",
            identity.user,
            app,
            slug,
            extra=event("admin-stop", hub=self.config.hub, app=app, slug=slug, admin=identity.user),
        )
        if request.path.startswith(API):
            return web.json_response(
                {"app": app, "slug": slug, "stopped": stopped}, headers=_NO_STORE
            )
        raise see_other(ADMIN_PATH)


def add_hub_routes(app: web.Application, config: Config, manager: SessionManager) -> None:
    """The pages and their APIs; before the catch-all route that spawns sessions."""
    pages = HubPages(config, manager)
    app.router.add_get(HOME_PATH, pages.home)
    app.router.add_get(ADMIN_PATH, pages.admin_page)
    app.router.add_get(f"{API}/apps", pages.api_apps)
    app.router.add_get(f"{API}/sessions", pages.api_sessions)
    for path in ("/_servicehub/stop", f"{API}/apps/stop"):
        app.router.add_post(path, pages.stop)
    for path in ("/_servicehub/restart", f"{API}/apps/restart"):
        app.router.add_post(path, pages.restart)
    for path in ("/_servicehub/admin/stop", f"{API}/sessions/stop"):
        app.router.add_post(path, pages.admin_stop)
    app.router.add_post("/_servicehub/logout", pages.logout)
