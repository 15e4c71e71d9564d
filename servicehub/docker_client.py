"""A thin asyncio client for the Docker Engine API over its unix socket."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp

from .docker_api import (
    API_VERSION,
    DockerError,
    DockerUnreachable,
    engine_unreachable,
    error_message,
    os_reason,
)

__all__ = ["API_VERSION", "DockerClient", "DockerError", "DockerUnreachable", "unreachable_reason"]


# What aiohttp raises when the engine is not there, or goes away mid-answer. A slow answer
# (a read timeout) is not in the list: the engine is there, the operation is slow.
_CONNECT_TIMEOUT: type[Exception] = getattr(  # aiohttp >= 3.10; before, no connect-only type
    aiohttp, "ConnectionTimeoutError", aiohttp.ClientConnectorError
)
_UNREACHABLE = (aiohttp.ClientConnectorError, aiohttp.ServerDisconnectedError, _CONNECT_TIMEOUT)


def unreachable_reason(exc: BaseException) -> str:
    """A short lower-case reason for a failed connection, without aiohttp's wrapping."""
    os_error = getattr(exc, "os_error", None)
    if isinstance(os_error, OSError):
        exc = os_error
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the peer closed the connection"
    return os_reason(exc) or str(exc) or type(exc).__name__


def _errno(exc: BaseException) -> int | None:
    os_error = getattr(exc, "os_error", exc)
    return os_error.errno if isinstance(os_error, OSError) else None


class DockerClient:
    def __init__(self, socket: Path) -> None:
        self._socket = socket
        self._session: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return f"unix://{self._socket}"

    def _unreachable(self, exc: BaseException) -> DockerUnreachable:
        return engine_unreachable(self.url, unreachable_reason(exc), _errno(exc))

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.UnixConnector(path=str(self._socket)),
                base_url="http://docker",
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        body: Any = None,
        timeout: float = 60,
    ) -> Any:
        try:
            async with self._http().request(
                method,
                f"/{API_VERSION}{path}",
                params=params,
                json=body,
                timeout=aiohttp.ClientTimeout(total=timeout),
            ) as resp:
                text = await resp.text()
                status, content_type = resp.status, resp.content_type
        except _UNREACHABLE as exc:
            raise self._unreachable(exc) from exc
        if status >= 400:
            raise DockerError(status, error_message(text))
        if not text:
            return None
        if content_type == "application/json":
            return json.loads(text)
        return text

    async def events(self, filters: dict[str, list[str]]) -> AsyncIterator[dict[str, Any]]:
        """Stream engine events (one JSON object per line) until the connection ends."""
        try:
            async with self._http().get(
                f"/{API_VERSION}/events",
                params={"filters": json.dumps(filters)},
                timeout=aiohttp.ClientTimeout(total=None, sock_read=None),
            ) as resp:
                if resp.status >= 400:
                    raise DockerError(resp.status, await resp.text())
                async for line in resp.content:
                    if line.strip():
                        yield json.loads(line)
        except _UNREACHABLE as exc:
            raise self._unreachable(exc) from exc

    async def logs_tail(self, container: str, lines: int = 20, *, kind: str = "containers") -> str:
        """Last lines of a container's output (demultiplexed), for error reports; with
        ``kind="services"``, a Swarm service's (the manager gathers them from its tasks)."""
        try:
            async with self._http().get(
                f"/{API_VERSION}/{kind}/{quote(container)}/logs",
                params={"stdout": "1", "stderr": "1", "tail": str(lines)},
                timeout=aiohttp.ClientTimeout(total=10),
            ) as resp:
                raw = await resp.read()
        except _UNREACHABLE as exc:
            raise self._unreachable(exc) from exc
        out = bytearray()
        # Without a TTY the stream is framed: 8-byte header (stream, 0, 0, 0, size32).
        while len(raw) >= 8:
            size = int.from_bytes(raw[4:8], "big")
            out += raw[8 : 8 + size]
            raw = raw[8 + size :]
        return out.decode("utf-8", "replace").strip()
