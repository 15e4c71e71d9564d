"""A small blocking websocket client (RFC 6455) for the tests: standard library only."""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import struct

# RFC 6455, section 1.3: the server proves it read the key with SHA-1(key + this), in base64.
HANDSHAKE_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def accept_value(key: str) -> str:
    digest = hashlib.sha1((key + HANDSHAKE_GUID).encode(), usedforsecurity=False).digest()
    return base64.b64encode(digest).decode()


class WebSocket:
    def __init__(self, port: int, path: str, headers: list[tuple[str, str]]) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [
            f"GET {path} HTTP/1.1",
            f"Host: 127.0.0.1:{port}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
            *(f"{name}: {value}" for name, value in headers),
        ]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("utf-8"))
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError(f"closed during the handshake: {self.buffer!r}")
            self.buffer += chunk
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        self.status = int(head.split(b" ", 2)[1])
        if self.status != 101:
            raise ConnectionError(f"no upgrade: {head.decode(errors='replace')}")
        # As a browser does: a wrong accept value fails the handshake.
        expected = f"sec-websocket-accept: {accept_value(key)}".encode().lower()
        if expected not in head.lower():
            raise ConnectionError(f"wrong Sec-WebSocket-Accept: {head.decode(errors='replace')}")

    def _read(self, size: int) -> bytes:
        while len(self.buffer) < size:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("connection closed")
            self.buffer += chunk
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def send(self, data: bytes, opcode: int = 0x2) -> None:
        mask = os.urandom(4)
        size = len(data)
        head = bytes([0x80 | opcode])
        if size < 126:
            head += bytes([0x80 | size])
        elif size < 65536:
            head += bytes([0x80 | 126]) + struct.pack("!H", size)
        else:
            head += bytes([0x80 | 127]) + struct.pack("!Q", size)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
        self.sock.sendall(head + mask + masked)

    def recv(self) -> tuple[int, bytes]:
        first, second = self._read(2)
        size = second & 0x7F
        if size == 126:
            size = struct.unpack("!H", self._read(2))[0]
        elif size == 127:
            size = struct.unpack("!Q", self._read(8))[0]
        return first & 0x0F, self._read(size)

    def echo(self, data: bytes) -> bytes:
        self.send(data)
        opcode, answer = self.recv()
        assert opcode == 0x2, opcode
        return answer

    def closed_by_peer(self) -> bool:
        """True once the server side has gone (close frame or end of stream)."""
        try:
            opcode, _ = self.recv()
        except (ConnectionError, OSError):
            return True
        return opcode == 0x8

    def close(self) -> None:
        self.sock.close()
