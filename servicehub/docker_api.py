"""The Docker Engine API's version and errors, and one blocking GET for short commands.

The daemon and the reaper talk to the engine through ``docker_client`` (asyncio, aiohttp).
An operator's one-shot read such as ``servicehub sessions`` uses ``get_json`` instead: it needs
the standard library only, and importing aiohttp alone takes longer (about 0.3 s) than listing
2,000 containers. Both raise the same errors with the same words.
"""

from __future__ import annotations

import errno
import http.client
import json
import os
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

API_VERSION = "v1.41"  # Debian 12's docker.io (20.10); later engines still accept it


class DockerError(RuntimeError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"Docker API {status}: {message}")
        self.status = status
        self.message = message


class DockerUnreachable(ConnectionError):
    """The engine cannot be reached at all (no socket, no permission, nobody listening).

    An ``OSError`` like the errors it replaces, so code that already treats a failed
    connection as such still does; its text is one line an operator can act on.
    """

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"cannot reach Docker at {url}: {reason}")
        self.url = url
        self.reason = reason


def os_reason(exc: BaseException) -> str | None:
    """A short lower-case reason for an OSError, by its number; None if it has none."""
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, OSError) and (exc.errno or exc.strerror):
        # By number: asyncio words a refused TCP connection "Connect call failed (...)".
        text = os.strerror(exc.errno) if exc.errno else str(exc.strerror)
        return text[:1].lower() + text[1:]
    return None


def engine_unreachable(url: str, reason: str, number: int | None) -> DockerUnreachable:
    """The error for an engine that cannot be reached, with a hint for the usual causes."""
    if number == errno.ENOENT:
        reason = "no such socket (is docker.service running?)"
    elif number == errno.ECONNREFUSED:
        reason += " (is docker.service running?)"
    return DockerUnreachable(url, reason)


def error_message(text: str) -> str:
    """The engine's own message from an error answer's body."""
    try:
        message = json.loads(text).get("message", text)
    except (ValueError, AttributeError):
        message = text
    return str(message).strip()


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: Path, timeout: float) -> None:
        super().__init__("docker", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(str(self._path))
        except BaseException:
            sock.close()
            raise
        self.sock = sock


def get_json(engine: Path, path: str, params: dict[str, str], timeout: float = 60) -> Any:
    """``GET`` one API path and return its JSON answer (blocking, standard library only)."""
    connection = _UnixConnection(engine, timeout)
    try:
        connection.request("GET", f"/{API_VERSION}{path}?{urlencode(params)}")
        response = connection.getresponse()
        status, body = response.status, response.read().decode("utf-8", "replace")
    except (OSError, http.client.HTTPException) as exc:
        reason = os_reason(exc) or "the peer closed the connection"
        number = exc.errno if isinstance(exc, OSError) else None
        raise engine_unreachable(f"unix://{engine}", reason, number) from exc
    finally:
        connection.close()
    if status >= 400:
        raise DockerError(status, error_message(body))
    return json.loads(body)
