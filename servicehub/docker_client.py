"""A thin asyncio client for the Docker Engine API over its unix socket."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp

API_VERSION = "v1.41"  # Debian 12's docker.io (20.10); later engines still accept it


class DockerError(RuntimeError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"Docker API {status}: {message}")
        self.status = status
        self.message = message


class DockerClient:
    def __init__(self, socket: Path) -> None:
        self._socket = socket
        self._session: aiohttp.ClientSession | None = None

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
        async with self._http().request(
            method,
            f"/{API_VERSION}{path}",
            params=params,
            json=body,
            timeout=aiohttp.ClientTimeout(total=timeout),
        ) as resp:
            text = await resp.text()
            if resp.status >= 400:
                try:
                    message = json.loads(text).get("message", text)
                except ValueError:
                    message = text
                raise DockerError(resp.status, message.strip())
            if not text:
                return None
            if resp.content_type == "application/json":
                return json.loads(text)
            return text

    async def events(self, filters: dict[str, list[str]]) -> AsyncIterator[dict[str, Any]]:
        """Stream engine events (one JSON object per line) until the connection ends."""
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

    async def logs_tail(self, container: str, lines: int = 20) -> str:
        """Last lines of a container's output (demultiplexed), for error reports."""
        async with self._http().get(
            f"/{API_VERSION}/containers/{quote(container)}/logs",
            params={"stdout": "1", "stderr": "1", "tail": str(lines)},
            timeout=aiohttp.ClientTimeout(total=10),
        ) as resp:
            raw = await resp.read()
        out = bytearray()
        # Without a TTY the stream is framed: 8-byte header (stream, 0, 0, 0, size32).
        while len(raw) >= 8:
            size = int.from_bytes(raw[4:8], "big")
            out += raw[8 : 8 + size]
            raw = raw[8 + size :]
        return out.decode("utf-8", "replace").strip()
