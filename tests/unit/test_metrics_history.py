"""The admin charts' hook: Prometheus's range API, answered by a stand-in server."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from servicehub.metrics_history import (
    CHARTS,
    SESSIONS_BY_APP,
    HistoryCache,
    HistoryUnavailable,
    last_24h,
)


async def serve(answer):
    asked = {}

    async def query_range(request: web.Request) -> web.Response:
        asked.update(request.query)
        return web.json_response(answer)

    app = web.Application()
    app.router.add_get("/api/v1/query_range", query_range)
    server = TestServer(app)
    await server.start_server()
    return server, asked


@pytest.mark.asyncio
async def test_series_by_labels_over_the_last_day():
    answer = {
        "status": "success",
        "data": {
            "resultType": "matrix",
            "result": [{"metric": {"app": "nb"}, "values": [[1000, "2"], [1300, "3"]]}],
        },
    }
    server, asked = await serve(answer)
    try:
        async with aiohttp.ClientSession() as http:
            url = str(server.make_url(""))
            got = await last_24h(http, url, SESSIONS_BY_APP, now=lambda: 86400.0 + 1300)
    finally:
        await server.close()
    assert got == {(("app", "nb"),): [(1000.0, 2.0), (1300.0, 3.0)]}
    assert asked["query"] == SESSIONS_BY_APP
    assert (float(asked["start"]), float(asked["end"]), asked["step"]) == (1300.0, 87700.0, "300")


@pytest.mark.asyncio
async def test_no_prometheus_is_history_unavailable():
    async with aiohttp.ClientSession() as http:
        with pytest.raises(HistoryUnavailable):
            await last_24h(http, "http://127.0.0.1:9", SESSIONS_BY_APP)


ANSWER = {
    "status": "success",
    "data": {
        "resultType": "matrix",
        "result": [{"metric": {"app": "nb"}, "values": [[1000, "2"], [1300, "3"]]}],
    },
}


@pytest.mark.asyncio
async def test_cache_asks_once_a_minute():
    server, _ = await serve(ANSWER)
    clock = [0.0]
    cache = HistoryCache(str(server.make_url("")), now=lambda: clock[0])
    try:
        async with aiohttp.ClientSession() as http:
            first = await cache.charts(http)
            clock[0] = 30.0
            await server.close()  # a second query would now fail
            assert await cache.charts(http) is first
            clock[0] = 61.0
            later = await cache.charts(http)
    finally:
        await server.close()
    assert isinstance(first, list) and [c.title for c in first] == [t for t, _, _ in CHARTS]
    assert first[0].lines == [("nb", [(1000.0, 2.0), (1300.0, 3.0)])]
    assert isinstance(later, str)  # asked again, and told why there is no history


@pytest.mark.asyncio
async def test_cache_without_url_or_with_a_slow_prometheus_gives_a_reason():
    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.json_response(ANSWER)

    app = web.Application()
    app.router.add_get("/api/v1/query_range", slow)
    server = TestServer(app)
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as http:
            assert "no Prometheus" in await HistoryCache(None).charts(http)
            started = time.monotonic()
            got = await HistoryCache(str(server.make_url("")), timeout=0.2).charts(http)
            assert time.monotonic() - started < 1.0
    finally:
        await server.close()
    assert isinstance(got, str) and "did not answer within 0.2 s" in got


@pytest.mark.asyncio
async def test_malformed_answer_is_history_unavailable():
    server, _ = await serve({"status": "success", "data": {"result": [{"metric": {}}]}})
    try:
        async with aiohttp.ClientSession() as http:
            with pytest.raises(HistoryUnavailable):
                await last_24h(http, str(server.make_url("")), SESSIONS_BY_APP)
    finally:
        await server.close()
