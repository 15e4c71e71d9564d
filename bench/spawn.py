"""Cold start: first request to the app's first proxied response, next to a plain docker run.

Usage: python bench/spawn.py [--runs N]. Needs the engine and images (make prerequisites).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.harness import EXAMPLE_IMAGE, Hub, bench_apps, running_hub, wait_for


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            return resp.status == 200
    except OSError:
        return False


def plain_docker_run(network: str) -> float:
    start = time.perf_counter()
    cid = subprocess.run(
        [
            "docker",
            "run",
            "-d",
            "--network",
            network,
            "--user",
            "1000:1000",
            "--read-only",
            "--tmpfs",
            "/tmp",
            "--cap-drop",
            "ALL",
            "--security-opt",
            "no-new-privileges",
            "--memory",
            "256m",
            "--pids-limit",
            "64",
            EXAMPLE_IMAGE,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    ip = subprocess.run(
        [
            "docker",
            "inspect",
            "-f",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
            cid,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    wait_for(lambda: answers(f"http://{ip}:8000/healthz"), 30, "plain container", interval=0.005)
    elapsed = time.perf_counter() - start
    subprocess.run(["docker", "rm", "-f", cid], capture_output=True, check=True)
    return elapsed


def hub_first_request(hub: Hub, user: str) -> float:
    start = time.perf_counter()
    resp = hub.open(user, "/healthz", app="whoami")
    elapsed = time.perf_counter() - start
    assert resp.status == 200 and not resp.is_wait, resp.text
    subprocess.run(
        [
            "docker",
            "rm",
            "-f",
            f"{hub.hub_name}-whoami-"
            + hub.containers(user=user)[0]["Config"]["Labels"]["servicehub.slug"],
        ],
        capture_output=True,
        check=True,
    )
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    with running_hub(bench_apps(), "bench") as hub:
        network = f"{hub.hub_name}-whoami"
        hub_first_request(hub, "warmup")  # page cache, image layers
        plain_docker_run(network)
        hub_times, plain_times = [], []
        for i in range(args.runs):
            plain_times.append(plain_docker_run(network))
            hub_times.append(hub_first_request(hub, f"user{i}"))
    ms = lambda xs: round(statistics.median(xs) * 1000, 1)  # noqa: E731
    result = {
        "runs": args.runs,
        "plain_docker_run_ms": ms(plain_times),
        "hub_first_request_ms": ms(hub_times),
        "overhead_ms": round(ms(hub_times) - ms(plain_times), 1),
        "hub_ms_all": [round(t * 1000) for t in hub_times],
        "plain_ms_all": [round(t * 1000) for t in plain_times],
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
