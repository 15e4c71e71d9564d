"""The hub pages' render time with many sessions: the daemon's own time per request.

Usage: python bench/home.py [--sessions N] [--requests R]

The daemon's real page handlers, templates, session table and reaper state file (N sessions,
each with a record) serve the home page of one user and the admin view. Docker is replaced by
an in-process stand-in that answers at once, and the time is taken by a middleware inside the
daemon's web application, from the handler's call to its response: the daemon's time, without
Docker's or the network's.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from servicehub.activity import Activity  # noqa: E402
from servicehub.config import parse_config  # noqa: E402
from servicehub.counters import Counters  # noqa: E402
from servicehub.hub_pages import add_hub_routes  # noqa: E402
from servicehub.identity import make_slug  # noqa: E402
from servicehub.reaper import state_path  # noqa: E402
from servicehub.reaper_state import ReaperState, SessionRecord, save_state  # noqa: E402
from servicehub.routes import RouteStore  # noqa: E402
from servicehub.session_info import SessionInfo  # noqa: E402
from servicehub.session_state import Session, State  # noqa: E402
from servicehub.sessions import SessionManager  # noqa: E402

APPS = ("notebook", "rstudio", "whoami")
ISSUER = "https://idp.test"


class StandIn:
    """Docker's answers for N running sessions, at once."""

    def __init__(self, infos: list[SessionInfo]) -> None:
        self.infos = infos
        self.by_key = {(i.app, i.slug): i for i in infos}

    async def get(self, app: str, slug: str) -> SessionInfo | None:
        return self.by_key.get((app, slug))

    async def list_sessions(self, detailed: bool = True) -> list[SessionInfo]:
        return list(self.infos)

    async def counters(self, container_id: str, pid: int = 0) -> Counters | None:
        return Counters(read=time.time(), net_bytes=0, cpu_ns=10**9, pid=0)


def build(workdir: Path, sessions: int) -> tuple[web.Application, list[float]]:
    apps = {name: {"image": "x:1", "route": {"path_prefix": f"/{name}/"}} for name in APPS}
    config = parse_config(
        {
            "hub": "bench",
            "state_dir": str(workdir),
            "traefik": {"routes_dir": str(workdir / "routes")},
            "apps": apps,
            "pages": {"admin_group": "admins"},
        },
        {"SERVICEHUB_PROXY_SECRET": "b" * 24},
    )
    created = datetime(2026, 1, 1, tzinfo=UTC)
    infos, state = [], ReaperState()
    for i in range(sessions):
        app, user = APPS[i % len(APPS)], f"user{i // len(APPS)}@example.org"
        slug = make_slug(ISSUER, user)
        info = SessionInfo(
            f"c{i:060d}", f"bench-{app}-{slug}", app, slug, user, created, "running", 0, "10.0.0.2"
        )
        infos.append(info)
        state.sessions[info.key.state_key] = SessionRecord(
            info.container_id, Activity(time.time() - i, "access-log"), None
        )
    save_state(state_path(config), state)
    manager = SessionManager(config, StandIn(infos), RouteStore(config))  # type: ignore[arg-type]
    for info in infos:
        manager.table.add(Session(app=info.app, slug=info.slug, user=info.user, state=State.READY))
    timings: list[float] = []

    @web.middleware
    async def timed(request: web.Request, handler: Any) -> web.StreamResponse:
        start = time.perf_counter()
        response = await handler(request)
        timings.append(time.perf_counter() - start)
        return response

    application = web.Application(middlewares=[timed])
    add_hub_routes(application, config, manager)
    return application, timings


async def measure(
    application: web.Application, timings: list[float], path: str, user: str, groups: str, n: int
) -> list[float]:
    headers = {
        "X-Servicehub-User": user,
        "X-Servicehub-Groups": groups,
        "X-Servicehub-Proxy-Secret": "b" * 24,
    }
    async with TestClient(TestServer(application)) as client:
        for _ in range(5):  # warm: templates compiled, reaper state parsed
            assert (await client.get(path, headers=headers)).status == 200
        timings.clear()
        for _ in range(n):
            resp = await client.get(path, headers=headers)
            assert resp.status == 200, await resp.text()
            await resp.read()
    return list(timings)


def report(name: str, values: list[float]) -> None:
    ms = sorted(v * 1000 for v in values)
    p95 = ms[int(len(ms) * 0.95) - 1]
    print(
        f"{name}: median {statistics.median(ms):.2f} ms, p95 {p95:.2f} ms, "
        f"max {ms[-1]:.2f} ms ({len(ms)} requests)"
    )


async def run(workdir: Path, sessions: int, requests: int) -> None:
    application, timings = build(workdir, sessions)
    print(f"{sessions} sessions of {len(APPS)} apps; daemon time per request")
    user = "user7@example.org"
    for name, path, who, groups, n in (
        ("home page", "/_servicehub/", user, "", requests),
        ("/api/apps", "/_servicehub/api/apps", user, "", requests),
        ("admin view", "/_servicehub/admin", "root@example.org", "admins", max(requests // 10, 10)),
    ):
        report(name, await measure(application, timings, path, who, groups, n))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=500)
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(run(Path(tmp), args.sessions, args.requests))


if __name__ == "__main__":
    main()
