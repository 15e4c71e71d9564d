"""Per-request proxy overhead: a request through Traefik next to one straight to the container.

Usage: python bench/proxy.py [--requests N]. Both sides use one kept-alive connection.
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.harness import bench_apps, running_hub


def latencies(host: str, port: int, headers: dict[str, str], n: int) -> list[float]:
    conn = http.client.HTTPConnection(host, port, timeout=10)
    out = []
    for _ in range(n):
        start = time.perf_counter()
        conn.request("GET", "/healthz", headers=headers)
        resp = conn.getresponse()
        resp.read()
        out.append(time.perf_counter() - start)
        assert resp.status == 200
    conn.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()
    with running_hub(bench_apps(), "benchproxy") as hub:
        hub.open("alice", "/healthz", app="whoami")
        (container,) = hub.containers()
        ip = container["NetworkSettings"]["Networks"][f"{hub.hub_name}-whoami"]["IPAddress"]
        headers = dict(hub.identity_headers("alice"))
        # Warm both paths, then interleave rounds so drift hits both alike.
        latencies(ip, 8000, {}, 200)
        latencies("127.0.0.1", hub.web_port, headers, 200)
        direct, proxied = [], []
        for _ in range(5):
            direct += latencies(ip, 8000, {}, args.requests // 5)
            proxied += latencies("127.0.0.1", hub.web_port, headers, args.requests // 5)
    med = lambda xs: round(statistics.median(xs) * 1000, 3)  # noqa: E731
    print(
        json.dumps(
            {
                "requests": args.requests,
                "direct_median_ms": med(direct),
                "traefik_median_ms": med(proxied),
                "overhead_ms": round(med(proxied) - med(direct), 3),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
