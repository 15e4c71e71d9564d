"""The admin charts' hook: Prometheus's range API, answered by a stand-in server."""

from __future__ import annotations

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from servicehub.metrics_history import SESSIONS_BY_APP, HistoryUnavailable, last_24h


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
