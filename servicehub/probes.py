"""Readiness: is the app answering, and is Traefik routing to it yet?"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import aiohttp

from .config import Readiness


class Http:
    """One HTTP client for the probes, made on first use (inside the event loop). ``given``
    (a test's, a caller's) is used as is and left open; one made here is closed by ``close``."""

    def __init__(self, given: aiohttp.ClientSession | None = None) -> None:
        self._given = given
        self._own: aiohttp.ClientSession | None = None

    def __call__(self) -> aiohttp.ClientSession:
        if self._given is not None:
            return self._given
        if self._own is None or self._own.closed:
            self._own = aiohttp.ClientSession()
        return self._own

    async def close(self) -> None:
        if self._own is not None:
            await self._own.close()
            self._own = None


async def app_answers(
    session: aiohttp.ClientSession, address: str, port: int, readiness: Readiness
) -> bool:
    try:
        if readiness.kind == "tcp":
            _, writer = await asyncio.wait_for(asyncio.open_connection(address, port), 1)
            writer.close()
            await writer.wait_closed()
            return True
        async with session.get(
            f"http://{address}:{port}{readiness.path}",
            allow_redirects=False,
            timeout=aiohttp.ClientTimeout(total=2),
        ) as resp:
            return resp.status < 500  # any answer from the app itself means it serves
    except (OSError, TimeoutError, aiohttp.ClientError):
        return False


async def traefik_has_router(session: aiohttp.ClientSession, api_url: str, router: str) -> bool:
    """Whether Traefik serves ``router`` (named with its provider: ``name@file``)."""
    try:
        async with session.get(
            f"{api_url}/api/http/routers/{router}", timeout=aiohttp.ClientTimeout(total=2)
        ) as resp:
            if resp.status != 200:
                return False
            data = await resp.json()
            return bool(data.get("status") == "enabled")
    except (OSError, TimeoutError, aiohttp.ClientError, ValueError):
        return False


async def poll_until(
    check: Callable[[], Awaitable[bool]],
    timeout: float,
    first_interval: float = 0.01,
    max_interval: float = 0.2,
) -> bool:
    """Poll ``check`` with a growing interval: fast for quick apps, gentle for slow ones."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    interval = first_interval
    while True:
        if await check():
            return True
        if loop.time() >= deadline:
            return False
        await asyncio.sleep(min(interval, max(0.0, deadline - loop.time())))
        interval = min(interval * 1.5, max_interval)
