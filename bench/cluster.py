"""Scale out on Docker Swarm: time-to-app on a worker, and a login burst, next to plain Swarm.

Usage: python bench/cluster.py [--runs 10] [--users 100] [--single-host]

On a real swarm of three systemd containers (tests/swarm_cluster.py: the hub as manager, two
workers, each with its own engine), with the real daemon and Traefik on this host as the hub:
- time-to-app: a new user's first request until the app's first proxied response (what the
  wait page does), next to a plain ``POST /services/create`` of the same service spec polled
  until its task runs and the app answers, alternating, ``--runs`` times;
- a burst: ``--users`` people's first requests at once: errors, p50/p90/max time-to-app, next
  to as many plain services created at once;
- with ``--single-host``: the same burst on a single-host hub on this machine, next to as many
  plain ``docker run``s at once.

The nodes share this machine's CPUs, so the app's CPU reservation is set to 0.02 of its limit
here: the burst measures spawning, not the capacity queue (docs/cluster.md, "Capacity").
Needs the engine, the example image and the node image (``make cluster-test`` builds it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.spawn import answers, plain_docker_run
from servicehub.config import parse_config
from servicehub.docker_client import DockerClient
from servicehub.swarm import current_task, nodes_from, placement, service_spec
from tests.harness import Hub, bench_apps, running_hub
from tests.swarm_cluster import (
    WHOAMI,
    Cluster,
    node,
    remove_services,
    swarm_cluster,
    swarm_settings,
)

RUNNING = ("--filter", "desired-state=running")
PLAIN_HUB = "benchplain"  # the label of the plain services, so they are removed afterwards


def settings(cluster: Cluster) -> dict[str, Any]:
    base = swarm_settings(cluster)
    base["backend"]["swarm"]["cpu_reservation"] = 0.02
    return base


async def plain_service(client: DockerClient, cluster: Cluster, name: str) -> float:
    """Seconds from ``POST /services/create`` of the session's spec until the app answers,
    polling the task every 20 ms and the app every 5 ms: the best a plain client does."""
    config = parse_config({"hub": PLAIN_HUB, "apps": {"whoami": WHOAMI}, **settings(cluster)})
    app = config.apps["whoami"]
    nodes = nodes_from(await client.request("GET", "/nodes"))
    swarm = config.backend.swarm
    spec = service_spec(PLAIN_HUB, app, name, name, swarm, placement(swarm, nodes.values()))
    start = time.perf_counter()
    service = (await client.request("POST", "/services/create", body=spec))["ID"]
    filters = json.dumps({"service": [service]})
    url = None
    while url is None:
        task = current_task(await client.request("GET", "/tasks", params={"filters": filters}))
        status = (task or {}).get("Status") or {}
        ports = (status.get("PortStatus") or {}).get("Ports") or []
        if status.get("State") == "running" and ports:
            address = nodes[str(task["NodeID"])].address  # type: ignore[index]
            url = f"http://{address}:{ports[0]['PublishedPort']}/healthz"
        else:
            await asyncio.sleep(0.02)
    while not await asyncio.to_thread(answers, url):
        await asyncio.sleep(0.005)
    return time.perf_counter() - start


def plain_services(cluster: Cluster, names: list[str]) -> list[float]:
    """``plain_service`` for each name, all at once."""

    async def run() -> list[float]:
        client = DockerClient(cluster.socket)
        try:
            return list(await asyncio.gather(*(plain_service(client, cluster, n) for n in names)))
        finally:
            await client.close()

    try:
        return asyncio.run(run())
    finally:
        remove_services(PLAIN_HUB)


def first_request(hub: Hub, user: str) -> float:
    """A new user's first request until the app answers, as the wait page does it."""
    start = time.perf_counter()
    resp = hub.open(user, "/whoami", app="whoami", timeout=900)
    elapsed = time.perf_counter() - start
    assert resp.status == 200 and resp.json()["header_user"] == user, resp.text
    return elapsed


def burst(open_one: Callable[[str], float], users: int, prefix: str) -> dict[str, Any]:
    """``users`` first requests at once: errors and the spread of time-to-app."""
    with ThreadPoolExecutor(max_workers=users) as pool:
        futures = [pool.submit(open_one, f"{prefix}{i}") for i in range(users)]
    times, errors = [], []
    for future in futures:
        try:
            times.append(future.result())
        except Exception as exc:  # an error is a result here, counted and shown
            errors.append(repr(exc)[:300])
    return {"users": users, "errors": len(errors), "first_errors": errors[:3], **spread(times)}


def spread(times: list[float]) -> dict[str, float]:
    if not times:
        return {}
    ordered = sorted(times)
    p90 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.9))]
    return {
        "p50_s": round(statistics.median(ordered), 2),
        "p90_s": round(p90, 2),
        "max_s": round(ordered[-1], 2),
    }


def plain_runs_at_once(network: str, count: int) -> dict[str, Any]:
    with ThreadPoolExecutor(max_workers=count) as pool:
        times = list(pool.map(lambda _: plain_docker_run(network), range(count)))
    return {"runs": count, **spread(times)}


def swarm_figures(cluster: Cluster, runs: int, users: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="servicehub-bench-") as tmp:
        hub = Hub(workdir=Path(tmp) / "hub", apps={"whoami": WHOAMI}, settings=settings(cluster))
        hub.workdir.mkdir()
        try:
            hub.start()
            first_request(hub, "warmup")  # page cache, image layers on the worker
            plain_services(cluster, ["warmup"])
            hub_times, plain_times = [], []
            for i in range(runs):
                plain_times += plain_services(cluster, [f"plain{i}"])
                hub_times.append(first_request(hub, f"user{i}"))
            remove_services(hub.hub_name)
            ms = lambda xs: round(statistics.median(xs) * 1000, 1)  # noqa: E731
            single = {
                "runs": runs,
                "plain_service_create_ms": ms(plain_times),
                "hub_first_request_ms": ms(hub_times),
                "ratio": round(ms(hub_times) / ms(plain_times), 2),
                "hub_ms_all": [round(t * 1000) for t in hub_times],
                "plain_ms_all": [round(t * 1000) for t in plain_times],
            }
            print(json.dumps({"time_to_app": single}), flush=True)
            hub_burst = burst(lambda user: first_request(hub, user), users, "burst")
            hub_burst["sessions_per_worker"] = {
                w: len(node("hub", "docker", "node", "ps", "-q", *RUNNING, w).split())
                for w in ("w1", "w2")
            }
            print(json.dumps({"swarm_burst": hub_burst}), flush=True)
        finally:
            hub.stop()
            remove_services(hub.hub_name)
    plain = plain_services(cluster, [f"plainburst{i}" for i in range(users)])
    plain_burst = {"services": users, **spread(plain)}
    print(json.dumps({"plain_service_burst": plain_burst}), flush=True)
    return {"time_to_app": single, "swarm_burst": hub_burst, "plain_service_burst": plain_burst}


def single_host_figures(users: int) -> dict[str, Any]:
    with running_hub(bench_apps(), "benchburst") as hub:
        first_request(hub, "warmup")
        hub_burst = burst(lambda user: first_request(hub, user), users, "burst")
        print(json.dumps({"single_host_burst": hub_burst}), flush=True)
        plain = plain_runs_at_once(f"{hub.hub_name}-whoami", users)
        print(json.dumps({"plain_docker_run_burst": plain}), flush=True)
    return {"single_host_burst": hub_burst, "plain_docker_run_burst": plain}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--single-host", action="store_true")
    args = parser.parse_args()
    results: dict[str, Any] = {}
    with swarm_cluster() as cluster:
        results.update(swarm_figures(cluster, args.runs, args.users))
    if args.single_host:
        results.update(single_host_figures(args.users))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
