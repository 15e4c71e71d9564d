#!/usr/bin/env python3
"""Send one raw HTTP/1.1 request to the hub over TLS and print what came back, as JSON.

The attack suite uses it for what no browser or HTTP library will send: folded or duplicated
headers, odd header names, a Connection header naming the identity header, any method.

    hubraw --request-b64 BASE64 [--cookie-file FILE] [--address 127.0.0.1] [--sni hub.test]

"{cookie}" in the request is replaced by the content of --cookie-file (a Cookie header value
saved by `hubclient --save-cookies`).
"""

from __future__ import annotations

import argparse
import base64
import json
import socket
import ssl
import sys


def exchange(address: str, port: int, sni: str, request: bytes, timeout: float) -> bytes:
    context = ssl._create_unverified_context()  # noqa: S323 - the suite checks TLS elsewhere
    with socket.create_connection((address, port), timeout=timeout) as raw:
        with context.wrap_socket(raw, server_hostname=sni) as tls:
            tls.sendall(request)
            answer = b""
            while True:
                try:
                    chunk = tls.recv(65536)
                except (TimeoutError, ssl.SSLError):
                    break
                if not chunk:
                    break
                answer += chunk
                head, sep, body = answer.partition(b"\r\n\r\n")
                if sep and head.split(b" ", 2)[1:2] == [b"101"]:
                    break  # a tunnel: the status line and headers are the answer
                length = [
                    line.split(b":", 1)[1]
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                ]
                if sep and length and len(body) >= int(length[0]):
                    break
            return answer


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--request-b64", required=True)
    parser.add_argument("--cookie-file")
    parser.add_argument("--address", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=443)
    parser.add_argument("--sni", default="hub.test")
    parser.add_argument("--timeout", type=float, default=20)
    args = parser.parse_args()
    request = base64.b64decode(args.request_b64)
    if args.cookie_file:
        with open(args.cookie_file, "rb") as cookies:
            request = request.replace(b"{cookie}", cookies.read().strip())
    answer = exchange(args.address, args.port, args.sni, request, args.timeout)
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1]) if lines and lines[0].startswith("HTTP/") else 0
    headers = [line.split(":", 1) for line in lines[1:] if ":" in line]
    json.dump(
        {
            "status": status,
            "headers": [[k.strip(), v.strip()] for k, v in headers],
            "body": body.decode("utf-8", "replace")[:20000],
        },
        sys.stdout,
    )


if __name__ == "__main__":
    main()
