"""The blocking engine call of the operator's commands, against a real HTTP server on a unix
socket: the same answers and the same errors as the daemon's asyncio client."""

from __future__ import annotations

import socketserver
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from servicehub.docker_api import API_VERSION, DockerError, DockerUnreachable, get_json


class _UnixHTTPServer(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True


@contextmanager
def engine(tmp_path: Path, status: int, body: bytes) -> Iterator[tuple[Path, list[str]]]:
    """A stand-in engine answering every request with ``status`` and ``body``; the paths it
    was asked for are in the list."""
    asked: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.append(self.path)
            if status == 0:  # hang up without an answer
                self.close_connection = True
                return
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

        def address_string(self) -> str:  # a unix socket has no client address
            return "engine-client"

    path = tmp_path / "docker.sock"
    server = _UnixHTTPServer(str(path), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield path, asked
    finally:
        server.shutdown()
        server.server_close()


def test_the_answer_is_the_engines_json_for_the_versioned_path(tmp_path):
    with engine(tmp_path, 200, b'[{"Id": "c1"}]') as (path, asked):
        found = get_json(path, "/containers/json", {"all": "1", "filters": '{"label":["a=b"]}'})
    assert found == [{"Id": "c1"}]
    assert asked == [
        f"/{API_VERSION}/containers/json?all=1&filters=%7B%22label%22%3A%5B%22a%3Db%22%5D%7D"
    ]


def test_an_error_answer_carries_the_engines_message(tmp_path):
    with engine(tmp_path, 500, b'{"message": "layer does not exist\\n"}') as (path, _):
        with pytest.raises(DockerError) as caught:
            get_json(path, "/containers/json", {})
    assert (caught.value.status, caught.value.message) == (500, "layer does not exist")


def test_an_engine_that_hangs_up_is_unreachable(tmp_path):
    with engine(tmp_path, 0, b"") as (path, _):
        with pytest.raises(DockerUnreachable) as caught:
            get_json(path, "/containers/json", {})
    assert str(caught.value) == (
        f"cannot reach Docker at unix://{path}: the peer closed the connection"
    )
