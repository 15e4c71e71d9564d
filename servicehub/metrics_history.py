"""The last 24 hours of the hub's figures, for the admin view's small charts.

Prometheus keeps the history (roles/monitoring, or the operator's own); the daemon keeps none.
``last_24h`` asks Prometheus's HTTP API (``/api/v1/query_range``) for one PromQL query and
returns one series of (unix time, value) points per label set; the queries the admin charts
need are below. Without a Prometheus (monitoring off) the caller gets ``HistoryUnavailable``
and shows no chart.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import aiohttp

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
) -> Series:
    """Each series of ``query`` over the last 24 hours, by its labels (sorted pairs)."""
    end = now()
    params = {"query": query, "start": f"{end - DAY:.3f}", "end": f"{end:.3f}", "step": f"{step:g}"}
    try:
        async with http.get(
            f"{prometheus_url.rstrip('/')}/api/v1/query_range",
            params=params,
            timeout=aiohttp.ClientTimeout(total=5),
        ) as resp:
            data = await resp.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        raise HistoryUnavailable(f"{prometheus_url}: {exc}") from exc
    if not isinstance(data, dict) or data.get("status") != "success":
        raise HistoryUnavailable(f"{prometheus_url}: {data!r:.200}")
    return {
        tuple(sorted(item["metric"].items())): [(float(t), float(v)) for t, v in item["values"]]
        for item in data["data"]["result"]
    }
