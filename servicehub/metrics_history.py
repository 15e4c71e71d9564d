"""The last 24 hours of the hub's figures, for the admin view's small charts.

Prometheus keeps the history (roles/monitoring, or the operator's own); the daemon keeps none.
``last_24h`` asks Prometheus's HTTP API (``/api/v1/query_range``) for one PromQL query and
returns one series of (unix time, value) points per label set; the queries the admin charts
need are below. Without a Prometheus (monitoring off) the caller gets ``HistoryUnavailable``
and shows no chart. ``HistoryCache`` is what the admin view calls: a one-second timeout, a
minute's cache, and a reason in place of charts when there are none.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp

log = logging.getLogger("servicehub.pages")

DAY = 24 * 3600.0
SESSIONS_BY_APP = 'sum by (app) (servicehub_sessions{state="ready"})'
SPAWN_P90_BY_APP = (
    "histogram_quantile(0.9, sum by (app, le) (rate(servicehub_spawn_ready_seconds_bucket[15m])))"
)
Series = dict[tuple[tuple[str, str], ...], list[tuple[float, float]]]


class HistoryUnavailable(RuntimeError):
    """Prometheus could not be asked, or refused the query."""


async def last_24h(
    http: aiohttp.ClientSession,
    prometheus_url: str,
    query: str,
    step: float = 300.0,
    now: Callable[[], float] = time.time,
    timeout: float = 5.0,
) -> Series:
    """Each series of ``query`` over the last 24 hours, by its labels (sorted pairs)."""
    end = now()
    params = {"query": query, "start": f"{end - DAY:.3f}", "end": f"{end:.3f}", "step": f"{step:g}"}
    try:
        async with http.get(
            f"{prometheus_url.rstrip('/')}/api/v1/query_range",
            params=params,
            timeout=aiohttp.ClientTimeout(total=timeout),
        ) as resp:
            data = await resp.json(content_type=None)
    except TimeoutError as exc:
        raise HistoryUnavailable(f"{prometheus_url} did not answer within {timeout:g} s") from exc
    except (aiohttp.ClientError, ValueError) as exc:
        raise HistoryUnavailable(f"{prometheus_url}: {exc or type(exc).__name__}") from exc
    if not isinstance(data, dict) or data.get("status") != "success":
        raise HistoryUnavailable(f"{prometheus_url}: {data!r:.200}")
    try:
        return {
            tuple(sorted(item["metric"].items())): [(float(t), float(v)) for t, v in item["values"]]
            for item in data["data"]["result"]
        }
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise HistoryUnavailable(f"{prometheus_url}: unexpected answer: {exc!r}") from exc


@dataclass(frozen=True)
class Chart:
    """One admin chart: a title, the unit of its values, and one line per app."""

    title: str
    unit: str
    lines: list[tuple[str, list[tuple[float, float]]]]


CHARTS = (
    ("Ready sessions", "", SESSIONS_BY_APP),
    ("Spawn time to ready, p90", "s", SPAWN_P90_BY_APP),
)
CACHE_SECONDS = 60.0
TIMEOUT_SECONDS = 1.0


def _line_name(labels: tuple[tuple[str, str], ...]) -> str:
    return ", ".join(v for _, v in labels) or "all"


class HistoryCache:
    """The admin charts' series, asked of Prometheus at most once a minute, within a second.

    ``charts`` returns the charts, or the reason there are none (no URL, Prometheus down or
    slow, a refused query); it never raises, so the admin view renders without them. A failure
    is cached as long as a success: a Prometheus that is down is not asked on every reload.
    """

    def __init__(
        self,
        prometheus_url: str | None,
        now: Callable[[], float] = time.monotonic,
        ttl: float = CACHE_SECONDS,
        timeout: float = TIMEOUT_SECONDS,
    ) -> None:
        self.url = prometheus_url
        self.now = now
        self.ttl = ttl
        self.timeout = timeout
        self._kept: tuple[float, list[Chart] | str] | None = None
        self._lock = asyncio.Lock()

    async def charts(self, http: aiohttp.ClientSession) -> list[Chart] | str:
        if self.url is None:
            return "no Prometheus configured (pages.prometheus_url)"
        async with self._lock:  # concurrent reloads share one query
            if self._kept is not None and self.now() - self._kept[0] < self.ttl:
                return self._kept[1]
            found = await self._ask(http, self.url)
            self._kept = (self.now(), found)
            return found

    async def _ask(self, http: aiohttp.ClientSession, url: str) -> list[Chart] | str:
        try:
            async with asyncio.timeout(self.timeout):
                answers = await asyncio.gather(
                    *(last_24h(http, url, q, timeout=self.timeout) for _, _, q in CHARTS)
                )
        except TimeoutError:
            log.warning("admin history: %s did not answer within %g s", url, self.timeout)
            return f"{url} did not answer within {self.timeout:g} s"
        except HistoryUnavailable as exc:
            log.warning("admin history: %s", exc)
            return str(exc)
        return [
            Chart(title, unit, sorted((_line_name(k), v) for k, v in series.items()))
            for (title, unit, _), series in zip(CHARTS, answers, strict=True)
        ]
