"""Access-log reading for the reaper: 1,000,000 Traefik lines and 200 sessions, then a few more.

Usage: python bench/accesslog.py [--lines N] [--sessions S]. Lines are shaped like the real
ones (every field Traefik writes, about 700 bytes).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from servicehub.accesslog import read_new_requests


def traefik_line(i: int, sessions: int) -> str:
    router = f"servicehub-whoami-user{i % sessions}-abcdefghijklmnop@file"
    when = f"2026-11-26T12:{(i // 60000) % 60:02d}:{(i // 1000) % 60:02d}.{i % 1000:03d}Z"
    return (
        json.dumps(
            {
                "ClientAddr": "127.0.0.1:36552",
                "ClientHost": "127.0.0.1",
                "ClientPort": "36552",
                "ClientUsername": "-",
                "DownstreamContentSize": 395,
                "DownstreamStatus": 200,
                "Duration": 1093873,
                "OriginContentSize": 395,
                "OriginDuration": 997781,
                "OriginStatus": 200,
                "Overhead": 96092,
                "RequestAddr": "hub.example.org",
                "RequestContentSize": 0,
                "RequestCount": i,
                "RequestHost": "hub.example.org",
                "RequestMethod": "GET",
                "RequestPath": f"/api/contents/file{i}.ipynb",
                "RequestPort": "-",
                "RequestProtocol": "HTTP/1.1",
                "RequestScheme": "http",
                "RetryAttempts": 0,
                "RouterName": router,
                "ServiceAddr": "172.31.0.2:8000",
                "ServiceName": router,
                "ServiceURL": "http://172.31.0.2:8000",
                "StartLocal": when,
                "StartUTC": when,
                "entryPointName": "web",
                "level": "info",
                "msg": "",
                "request_X-Servicehub-User": f"user{i % sessions}@example.org",
                "time": when,
            },
            separators=(",", ":"),
            sort_keys=True,
        )
        + "\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--sessions", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "access.json"
        with log.open("w") as fh:
            fh.writelines(traefik_line(i, args.sessions) for i in range(args.lines))
        size = log.stat().st_size
        log.read_bytes()  # page cache warm, as on a live host
        start = time.perf_counter()
        seen, position = read_new_requests(log, None)
        full = time.perf_counter() - start
        assert len(seen) == args.sessions, len(seen)
        with log.open("a") as fh:
            fh.writelines(traefik_line(args.lines + i, args.sessions) for i in range(100))
        start = time.perf_counter()
        seen, _ = read_new_requests(log, position)
        incremental = time.perf_counter() - start
        assert len(seen) == min(100, args.sessions)
    print(
        json.dumps(
            {
                "lines": args.lines,
                "bytes": size,
                "sessions": args.sessions,
                "full_read_s": round(full, 3),
                "incremental_100_lines_ms": round(incremental * 1000, 2),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
