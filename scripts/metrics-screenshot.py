#!/usr/bin/env python3
"""Make docs/images/metrics-prometheus.png: a real hub's metrics in a real Prometheus.

A local hub (tests/harness.py: Traefik, the daemon, Docker) with metrics on, a throwaway
Prometheus (Debian's /usr/bin/prometheus, temporary config and storage, scraping the daemon's
/metrics every second), a few spawns, one failed spawn (an image that does not exist), refusals
and stops; then Prometheus's graph page for the sessions by app and state, in headless Chromium.
Everything is stopped and removed afterwards.

Usage: .venv/bin/python scripts/metrics-screenshot.py [--out FILE]
Needs what the integration tests need (make prerequisites), Debian's prometheus and chromium.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.harness import (  # noqa: E402
    EXAMPLE_IMAGE,
    SECRET_HEADER,
    USER_HEADER,
    Hub,
    free_port,
    raw_request,
    running_hub,
    wait_for,
)

PROMETHEUS = "/usr/bin/prometheus"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
QUERY = "sum by (app, state) (servicehub_sessions) > 0"
USERS = ["alice", "bob", "carol", "dave", "erin"]


def apps() -> dict[str, Any]:
    return {
        "whoami": {
            "image": EXAMPLE_IMAGE,
            "limits": {"memory": "128m", "cpus": 0.5, "pids": 64},
            "readiness": {"type": "http", "path": "/healthz"},
        },
        "notebook": {
            "image": EXAMPLE_IMAGE,
            "route": {"path_prefix": "/notebook/"},
            "limits": {"memory": "128m", "cpus": 0.5, "pids": 64},
            "readiness": {"type": "http", "path": "/healthz"},
        },
        "missing": {"image": "servicehub-test/not-there:1", "route": {"path_prefix": "/missing/"}},
    }


def start_prometheus(workdir: Path, target_port: int, port: int) -> subprocess.Popen[bytes]:
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {
                "job_name": "servicehub",
                "static_configs": [{"targets": [f"127.0.0.1:{target_port}"]}],
            }
        ],
    }
    (workdir / "prometheus.yml").write_text(json.dumps(config))  # JSON is YAML
    log = (workdir / "prometheus.log").open("ab")
    return subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def instant(port: int, query: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Prometheus's instant query: {labels: value}, empty while it cannot answer yet."""
    try:
        resp = raw_request(port, "/api/v1/query?" + urlencode({"query": query}), timeout=5)
    except OSError:
        return {}
    if resp.status != 200:
        return {}
    return {
        tuple(sorted(r["metric"].items())): float(r["value"][1])
        for r in resp.json()["data"]["result"]
    }


def sessions(port: int, app: str, state: str) -> float:
    q = f'servicehub_sessions{{app="{app}",state="{state}"}}'
    return sum(instant(port, q).values())


def until_prometheus_sees(port: int, app: str, state: str, count: int) -> None:
    wait_for(
        lambda: sessions(port, app, state) == count,
        30,
        f"Prometheus to see {count} {state} session(s) of {app}",
        interval=0.2,
    )


def activity(hub: Hub, prom: int) -> None:
    """Spawns, a failed spawn, refusals and stops, each one seen by Prometheus before the next."""
    for n, user in enumerate(USERS, 1):
        assert hub.open(user, "/whoami").status == 200, hub.logs()
        until_prometheus_sees(prom, "whoami", "ready", n)
    for n, user in enumerate(USERS[:2], 1):
        assert hub.open(user, "/notebook/").status == 200, hub.logs()
        until_prometheus_sees(prom, "notebook", "ready", n)
    assert hub.open("frank", "/missing/").status == 503  # image_missing
    until_prometheus_sees(prom, "missing", "failed", 1)
    assert hub.get(None, "/whoami").status == 400  # no identity
    wrong_secret: list[tuple[str, bytes | str]] = [
        (USER_HEADER, "mallory"),
        (SECRET_HEADER, "wrong"),
    ]
    assert raw_request(hub.web_port, "/whoami", wrong_secret).status == 403
    wait_for(
        lambda: instant(prom, "sum(servicehub_requests_refused_total) >= 2"),
        30,
        "Prometheus to see the refusals",
        interval=0.2,
    )
    for n, user in enumerate(USERS[:3], 1):
        done = hub.cli("stop", user, "whoami")
        assert done.returncode == 0, done.stderr
        until_prometheus_sees(prom, "whoami", "ready", len(USERS) - n)


def screenshot(prom: int, seconds: int, out: Path) -> None:
    from playwright.sync_api import sync_playwright

    params = {"g0.expr": QUERY, "g0.tab": "0", "g0.range_input": f"{seconds}s"}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 760})
            page.goto(f"http://127.0.0.1:{prom}/graph?{urlencode(params)}")
            # A flat line's box has no height: "attached", not "visible".
            page.wait_for_selector(".graph_area svg path", state="attached", timeout=30_000)
            page.wait_for_selector(".legend li", state="attached", timeout=30_000)
            page.screenshot(path=str(out), full_page=True)
        finally:
            browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs/images/metrics-prometheus.png")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, running_hub(apps(), "metricsshot") as hub:
        prom_port = free_port()
        prometheus = start_prometheus(Path(tmp), hub.metrics_port, prom_port)
        try:
            started = time.monotonic()
            wait_for(
                lambda: (
                    instant(prom_port, 'up{job="servicehub"} == 1')
                    and instant(prom_port, "servicehub_sessions")
                ),
                60,
                "Prometheus to scrape the daemon",
                interval=0.2,
            )
            activity(hub, prom_port)
            # One more scrape after the last change, so the graph ends flat.
            last = instant(prom_port, "timestamp(up)")
            wait_for(lambda: instant(prom_port, "timestamp(up)") != last, 30, "one more scrape")
            seconds = int(time.monotonic() - started) + 5
            screenshot(prom_port, seconds, args.out)
        finally:
            prometheus.terminate()
            try:
                prometheus.wait(timeout=10)
            except subprocess.TimeoutExpired:
                prometheus.kill()
                prometheus.wait()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
