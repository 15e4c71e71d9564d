"""The daemon's Prometheus metrics: their definitions, the hooks that update them, /metrics.

Safe to hand to any scraper: labels are the app (from the config), a state, a reason code from
the fixed sets below, and the node, so the number of series is bounded by the config. No user
id appears unless the operator sets ``metrics.per_user`` (then the session's slug, never the
raw id, labels one gauge). No secret is ever a label or a value.

/metrics is served on its own loopback port (``metrics.host``/``metrics.port``), never on the
daemon's port: Traefik routes to the daemon's port only, so no route can reach it.
Sessions and capacity are read from the session table when scraped: the hot path pays only a
counter increment or a histogram observation (a few microseconds) per spawn or refusal.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .config import Config
from .session_state import LIVE, Session, State

if TYPE_CHECKING:
    from .sessions import SessionManager

log = logging.getLogger("servicehub.metrics")
# Fewer series; rate() needs no *_created.
disable_created_metrics()  # type: ignore[no-untyped-call]

REGISTRY = CollectorRegistry()
SPAWN_BUCKETS = (0.25, 0.5, 1, 2, 3, 5, 8, 13, 20, 30, 60, 120, 300)
SPAWNS = Counter("servicehub_spawns", "Spawns started, by app.", ["app"], registry=REGISTRY)
SPAWN_READY = Histogram(
    "servicehub_spawn_ready_seconds",
    "From the first request to the session being ready (app answers, route served), by app.",
    ["app"],
    buckets=SPAWN_BUCKETS,
    registry=REGISTRY,
)
SPAWN_ROUTED = Histogram(
    "servicehub_spawn_routed_seconds",
    "From the first request to Traefik serving the session's route, by app.",
    ["app"],
    buckets=SPAWN_BUCKETS,
    registry=REGISTRY,
)
SPAWN_FAILURES = Counter(
    "servicehub_spawn_failures",
    "Spawns that ended in the error page, by app and reason code.",
    ["app", "reason"],
    registry=REGISTRY,
)
REFUSED = Counter(
    "servicehub_requests_refused",
    "Requests the daemon refused, by reason code.",
    ["reason"],
    registry=REGISTRY,
)

# The start of a spawn failure's text (spawner.py, backend.py, host_mounts.py) -> its code.
# Free text never becomes a label: anything else counts as "other".
FAILURE_REASONS: tuple[tuple[str, str], ...] = (
    ("the image ", "image_missing"),
    ("the container could not be created", "create_failed"),
    ("could not join network", "network"),
    ("the container could not start", "start_failed"),
    ("the container vanished", "vanished"),
    ("the container disappeared", "vanished"),
    ("a container with this session's name", "name_conflict"),
    ("your previous container is still being removed", "name_conflict"),
    ("the app stopped while starting", "app_exited"),
    ("the app did not answer", "start_timeout"),
    ("the proxy did not pick up", "route_timeout"),
    ("an internal error occurred", "internal"),
)
# A refusal's (status, title) in server.py -> its code.
REFUSAL_REASONS: Mapping[tuple[int, str], str] = {
    (403, "Not through the front door"): "proxy_secret",
    (400, "Who are you?"): "identity",
    (404, "Nothing here"): "no_app",
    (404, "Unknown app"): "no_app",
    (403, "Not allowed"): "not_allowed",
    (409, "No session"): "no_session",
    (429, "Too many sessions"): "per_user_limit",
}


def failure_reason(text: str) -> str:
    return next((code for start, code in FAILURE_REASONS if text.startswith(start)), "other")


def spawn_started(app: str) -> None:
    SPAWNS.labels(app).inc()


def spawn_routed(session: Session) -> None:
    """The session's route is live for the first time: a re-route is not a spawn."""
    if not session.routed:
        SPAWN_ROUTED.labels(session.app).observe(time.monotonic() - session.started)


def spawn_ready(session: Session) -> None:
    SPAWN_READY.labels(session.app).observe(time.monotonic() - session.started)


def spawn_failed(app: str, reason: str) -> None:
    SPAWN_FAILURES.labels(app, failure_reason(reason)).inc()


def refused(status: int, title: str) -> None:
    REFUSED.labels(REFUSAL_REASONS.get((status, title), "other")).inc()


def host_memory_bytes(meminfo: str = "/proc/meminfo") -> float | None:
    """The host's MemTotal: what containers' memory reservations are measured against."""
    try:
        with open(meminfo, encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return float(line.split()[1]) * 1024
    except OSError:
        return None
    return None


class SessionCollector(Collector):
    """Sessions by app and state, and memory reserved by them, read at scrape time."""

    def __init__(
        self,
        config: Config,
        sessions: Callable[[], list[Session]],
        node: str,
        available: Callable[[], float | None] = host_memory_bytes,
    ) -> None:
        self.config = config
        self.sessions = sessions
        self.node = node
        self.available = available

    def collect(self) -> Iterator[Metric]:
        sessions = self.sessions()
        count = {(app, str(state)): 0 for app in self.config.apps for state in State}
        reserved = 0
        for s in sessions:
            if s.app in self.config.apps:
                count[(s.app, str(s.state))] += 1
                if s.state in LIVE:
                    reserved += self.config.apps[s.app].limits.memory_bytes or 0
        by_state = GaugeMetricFamily(
            "servicehub_sessions",
            "Sessions the daemon knows, by app and state.",
            labels=["app", "state"],
        )
        for (app, state), n in sorted(count.items()):
            by_state.add_metric([app, state], n)
        yield by_state
        yield from self._capacity(reserved)
        if self.config.metrics.per_user:
            yield self._per_user(sessions)

    def _capacity(self, reserved: int) -> Iterator[Metric]:
        reserved_family = GaugeMetricFamily(
            "servicehub_memory_reserved_bytes",
            "Memory limits of the live sessions on this node, summed.",
            labels=["node"],
        )
        reserved_family.add_metric([self.node], reserved)
        yield reserved_family
        available = self.available()
        if available is not None:
            total = GaugeMetricFamily(
                "servicehub_memory_available_bytes",
                "Memory of this node that sessions may reserve (the host's MemTotal).",
                labels=["node"],
            )
            total.add_metric([self.node], available)
            yield total

    def _per_user(self, sessions: list[Session]) -> Metric:
        family = GaugeMetricFamily(
            "servicehub_user_session",
            "1 per session, by app, the user's slug and state (metrics.per_user is on).",
            labels=["app", "slug", "state"],
        )
        for s in sessions:
            family.add_metric([s.app, s.slug, str(s.state)], 1)
        return family


def metrics_app() -> web.Application:
    async def metrics(_: web.Request) -> web.Response:
        body = generate_latest(REGISTRY)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    return app


def serving(
    config: Config, manager: SessionManager
) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup context for the daemon's web app: /metrics on its own port while it runs."""

    async def serve(_: web.Application) -> AsyncIterator[None]:
        sessions = manager.sessions
        collector = SessionCollector(config, lambda: list(sessions.values()), socket.gethostname())
        REGISTRY.register(collector)
        runner = web.AppRunner(metrics_app(), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, config.metrics.host, config.metrics.port)
        await site.start()
        log.info("metrics on http://%s:%d/metrics", config.metrics.host, config.metrics.port)
        try:
            yield
        finally:
            await runner.cleanup()
            REGISTRY.unregister(collector)

    return serve
