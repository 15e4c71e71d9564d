"""Traefik file-provider routes: one file per session plus one base file, written atomically.

User ids end up in two places here. In the ``Header()`` matcher of a session's rule, always as a
Go double-quoted string in which every character outside [A-Za-z0-9._-] is a ``\\u``/``\\U``
escape, so no backtick, quote, brace or newline can ever change the rule. And as the value of
the session's header middleware, a plain string. The file itself is JSON (a subset of YAML),
produced by ``json.dumps`` and escaped further by ``dump_route_file``: no template renders ids.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import AppConfig, Config
from .files import write_atomic
from .session_key import SessionKey, route_file_prefix

BOOTING_PATH = "/_servicehub/booting"
BOOTING_QUERY = BOOTING_PATH + "?url={url}"  # Traefik fills in the URL first asked for
INTERNAL_PRIORITY = 10_000_000
SESSION_PRIORITY = 10_000
SPAWN_PRIORITY = 1
_SAFE_CHAR = re.compile(r"[A-Za-z0-9._-]")


def go_string_literal(value: str) -> str:
    """``value`` as a Go double-quoted literal with everything but [A-Za-z0-9._-] escaped."""
    out = []
    for char in value:
        if _SAFE_CHAR.fullmatch(char):
            out.append(char)
        elif ord(char) <= 0xFFFF:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(f"\\U{ord(char):08x}")
    return '"' + "".join(out) + '"'


@dataclass(frozen=True)
class SessionRoute:
    app: str
    slug: str
    user: str
    url: str  # http://<container ip>:<port>
    booting: bool = False  # the app may not listen yet: Traefik hands its errors to the daemon

    @property
    def key(self) -> SessionKey:
        return SessionKey(self.app, self.slug)


def session_file_name(hub: str, app: str, slug: str) -> str:
    return SessionKey(app, slug).route_file(hub)


def app_match(app: AppConfig) -> str:
    rule = f"PathPrefix(`{app.path_prefix}`)"
    if app.path_prefix != "/":  # "/nb" belongs to the app at "/nb/" too
        rule = f"(Path(`{app.path_prefix.rstrip('/')}`) || {rule})"
    if app.host:
        rule = f"Host(`{app.host}`) && {rule}"
    return rule


def session_rule(config: Config, app: AppConfig, user: str) -> str:
    rule = f"Header(`{config.identity.user_header}`, {go_string_literal(user)}) && {app_match(app)}"
    if config.proxy_secret:
        rule += f" && Header(`{config.identity.proxy_secret_header}`, `{config.proxy_secret}`)"
    return rule


# What a page's scripts send on their own, never a person's click or page load (Fetch Metadata,
# which every current browser sends): fetch/XHR polls, images and the like, WebSocket
# (re)connects. Only reads: a script's POST or PUT (a save, a kernel start) is a person's act.
BACKGROUND_FETCH_MODES = ("cors", "no-cors", "same-origin", "websocket")
# A page's reads of those modes, its beacons (a write the browser sends as `no-cors`, often as
# the tab closes) and every WebSocket connect: Chromium sends no fetch metadata with those.
# What never starts a session never keeps one (server.starts_session); a socket's messages
# count by their bytes.
BACKGROUND_MATCH = (
    "(((Method(`GET`) || Method(`HEAD`)) && HeaderRegexp(`Sec-Fetch-Mode`, `^("
    + "|".join(BACKGROUND_FETCH_MODES)
    + ")$`)) || Header(`Sec-Fetch-Mode`, `no-cors`) || HeaderRegexp(`Upgrade`, `(?i)^websocket$`))"
)


SESSION_DIAL_TIMEOUT = "5s"  # a worker in the same room answers a SYN within milliseconds


def session_priority(app: AppConfig) -> int:
    # Longer prefixes win, host-specific apps win over path-only ones.
    return SESSION_PRIORITY + len(app.path_prefix) + (5000 if app.host else 0)


def render_session(config: Config, app: AppConfig, route: SessionRoute) -> dict[str, Any]:
    name = route.key.router(config.hub)
    identity = f"{name}-identity"
    router: dict[str, Any] = {
        "rule": session_rule(config, app, route.user),
        "priority": session_priority(app),
        "entryPoints": [config.traefik.entrypoint],
        "service": name,
        "middlewares": [f"{identity}@file"],
    }
    if config.proxy_secret:
        router["middlewares"].insert(0, f"{config.hub}-strip-secret@file")
    if route.booting:
        # First, so the daemon gets the request as Apache sent it (secret and user included).
        router["middlewares"].insert(0, f"{config.hub}-booting@file")
    # The same route for the page's background requests, under its own name: the access log
    # then tells them apart at no cost to the reaper (docs/reaper.md, "What counts as
    # activity"). One above the session's priority: nested prefixes differ by two at least.
    background = {
        **router,
        "rule": f"{router['rule']} && {BACKGROUND_MATCH}",
        "priority": router["priority"] + 1,
        "middlewares": list(router["middlewares"]),
    }
    return {
        "http": {
            "routers": {name: router, route.key.background_router(config.hub): background},
            # Traefik's Header() matches when any one value matches: should a request ever
            # carry the user header twice, the app still gets exactly this route's user.
            "middlewares": {
                identity: {
                    "headers": {"customRequestHeaders": {config.identity.user_header: route.user}}
                }
            },
            "services": {
                name: {
                    "loadBalancer": {
                        "servers": [{"url": route.url}],
                        "serversTransport": f"{sessions_transport(config)}@file",
                    }
                }
            },
        }
    }


def sessions_transport(config: Config) -> str:
    return f"{config.hub}-sessions"


def render_base(config: Config) -> dict[str, Any]:
    """Routes to the daemon: its own pages, and the catch-all that spawns on first request."""
    daemon = f"{config.hub}-daemon"
    entry = [config.traefik.entrypoint]
    http: dict[str, Any] = {
        "routers": {
            f"{config.hub}-internal": {
                "rule": "PathPrefix(`/_servicehub/`)",
                "priority": INTERNAL_PRIORITY,
                "entryPoints": entry,
                "service": daemon,
            },
            f"{config.hub}-spawn": {
                "rule": "PathPrefix(`/`)",
                "priority": SPAWN_PRIORITY,
                "entryPoints": entry,
                "service": daemon,
            },
        },
        "services": {daemon: {"loadBalancer": {"servers": [{"url": config.daemon_url}]}}},
        # How Traefik connects to sessions: a session on a worker whose network died answers
        # no SYN, and Traefik's default would hold the person's request for 30 s before its
        # 502 (until the daemon removes the route, docs/cluster.md "Failures").
        "serversTransports": {
            sessions_transport(config): {
                "forwardingTimeouts": {"dialTimeout": SESSION_DIAL_TIMEOUT}
            }
        },
    }
    for app in config.apps.values():
        # Just below the app's session routers: a user with a session of another app (say at
        # "/") must still reach the daemon for this one's first request.
        http["routers"][f"{config.hub}-spawn-{app.name}"] = {
            "rule": app_match(app),
            "priority": session_priority(app) - 1,
            "entryPoints": entry,
            "service": daemon,
        }
    # A session's route goes live while its app still boots (the spawn does not wait for one
    # and then the other): until the app listens, Traefik's 502 becomes the daemon's wait page.
    http["middlewares"] = {
        f"{config.hub}-booting": {
            "errors": {
                "status": ["502-504"],
                "service": daemon,
                # The route has deleted the secret header before Traefik asks the daemon:
                # the query carries it (Traefik's API shows it, like the session rules).
                "query": BOOTING_QUERY
                + (f"&proof={config.proxy_secret}" if config.proxy_secret else ""),
                "statusRewrites": {"502-504": 503},
            }
        }
    }
    if config.proxy_secret:
        # An empty value makes Traefik delete the header: apps never see the secret.
        http["middlewares"][f"{config.hub}-strip-secret"] = {
            "headers": {"customRequestHeaders": {config.identity.proxy_secret_header: ""}}
        }
    return {"http": http}


class RouteStore:
    """The daemon's files in Traefik's dynamic directory."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.dir = config.traefik.routes_dir

    def _session_path(self, key: SessionKey) -> Path:
        return self.dir / key.route_file(self.config.hub)

    def write_base(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        write_atomic(
            self.dir / f"{self.config.hub}-base.yml", dump_route_file(render_base(self.config))
        )

    def write_session(self, route: SessionRoute) -> bool:
        app = self.config.apps[route.app]
        return write_atomic(
            self._session_path(route.key),
            dump_route_file(render_session(self.config, app, route)),
        )

    def remove_session(self, app: str, slug: str) -> bool:
        path = self._session_path(SessionKey(app, slug))
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        return True

    def session_files(self) -> set[str]:
        prefix = route_file_prefix(self.config.hub)
        return {p.name for p in self.dir.glob(f"{prefix}*.yml")}

    def reconcile(self, routes: Iterable[SessionRoute]) -> tuple[int, int]:
        """Make the files match ``routes`` exactly. Returns (written, removed)."""
        wanted = {r.key.route_file(self.config.hub): r for r in routes}
        written = sum(1 for r in wanted.values() if self.write_session(r))
        removed = 0
        for orphan in self.session_files() - set(wanted):
            (self.dir / orphan).unlink(missing_ok=True)
            removed += 1
        return written, removed


_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_SURROGATE_PAIR = re.compile(r"\\u(d[89ab][0-9a-f]{2})\\u(d[c-f][0-9a-f]{2})")
_BRACES = str.maketrans({"{": "\\u007b", "}": "\\u007d"})


def _astral(match: re.Match[str]) -> str:
    high, low = int(match.group(1), 16), int(match.group(2), 16)
    return f"\\U{0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00):08x}"


def dump_route_file(data: dict[str, Any]) -> str:
    """The file as YAML that Traefik's file provider reads back to exactly ``data``.

    It is JSON (a subset of YAML) with every string ASCII-only, so no character can be folded
    or reinterpreted by the YAML parser (U+2028 or NEL would be line breaks to it). Two more
    escapes: Traefik runs each file through Go's text/template before parsing, so braces inside
    strings (a header value holding a user id) are written as escapes; and characters beyond
    U+FFFF use YAML's \\U escape, not JSON's surrogate pairs, which a YAML parser would not join.
    """
    text = json.dumps(data, indent=2, sort_keys=True, ensure_ascii=True)

    def escape(match: re.Match[str]) -> str:
        return _SURROGATE_PAIR.sub(_astral, match.group(0).translate(_BRACES))

    return _JSON_STRING.sub(escape, text) + "\n"
