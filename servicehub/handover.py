"""A ready session's first requests, while Traefik still loads its route: the daemon passes them on.

Traefik rebuilds every router on each route change, and with thousands of sessions that takes a
second or more (docs/benchmarks.md, "Scale"): longer than a container's start. So a session is
ready for its person as soon as its app answers, and until Traefik serves the route, the
requests that reach the daemon through the catch-all router are passed to the session's
container here, with exactly the headers the route would give them: the user header set to the
session's user, the proxy secret deleted. Once Traefik serves the route, requests go straight
to the container and this path is no longer used.

WebSocket upgrades are not carried: they would stay on the daemon for their whole life. One
waits here until the route is live and then gets 503, and the client's reconnect goes straight
to the app.
"""

from __future__ import annotations

import logging

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from .config import Config
from .probes import poll_until
from .session_state import Session

log = logging.getLogger("servicehub.handover")
ROUTE_WAIT = 15.0  # how long a WebSocket upgrade waits for the route (the spawn's own limit)
# Hop-by-hop headers (RFC 9110 7.6.1) belong to one connection, not to the request.
HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
}


def is_websocket(request: web.Request) -> bool:
    return request.headers.get("Upgrade", "").lower() == "websocket"


def upstream_headers(request: web.Request, config: Config, user: str) -> CIMultiDict[str]:
    """The request's headers as the session's route would pass them to the app."""
    dropped = HOP_BY_HOP | {
        config.identity.user_header.lower(),
        config.identity.proxy_secret_header.lower(),
    }
    headers = CIMultiDict((k, v) for k, v in request.headers.items() if k.lower() not in dropped)
    headers[config.identity.user_header] = user
    return headers


def downstream_headers(upstream: aiohttp.ClientResponse) -> CIMultiDict[str]:
    return CIMultiDict((k, v) for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP)


class Handover:
    def __init__(self, config: Config) -> None:
        self.config = config
        self._client: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._client is None or self._client.closed:
            # The app's bytes go to the browser as they came: no decompression, no redirects.
            self._client = aiohttp.ClientSession(
                auto_decompress=False, timeout=aiohttp.ClientTimeout(total=None, connect=5)
            )
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()

    async def forward(self, request: web.Request, session: Session) -> web.StreamResponse:
        assert session.url is not None
        if is_websocket(request):
            return await self._websocket_later(session)
        try:
            upstream = await self._http().request(
                request.method,
                session.url + request.rel_url.path_qs,
                headers=upstream_headers(request, self.config, session.user),
                data=request.content if request.body_exists else None,
                allow_redirects=False,
                skip_auto_headers=("Accept-Encoding", "User-Agent", "Content-Type"),
            )
        except (aiohttp.ClientError, OSError) as exc:
            log.warning("handing over to app=%s slug=%s failed: %s", session.app, session.slug, exc)
            return web.json_response(
                {"state": "ready", "reason": "your app did not answer"}, status=502
            )
        async with upstream:
            response = web.StreamResponse(
                status=upstream.status, reason=upstream.reason, headers=downstream_headers(upstream)
            )
            await response.prepare(request)
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response

    async def _websocket_later(self, session: Session) -> web.Response:
        async def routed() -> bool:
            return session.routed

        await poll_until(routed, ROUTE_WAIT, max_interval=0.05)
        return web.json_response(
            {"state": "ready", "reason": "reconnect: the route to your app is live now"},
            status=503,
            headers={"Retry-After": "0", "Cache-Control": "no-store"},
        )
