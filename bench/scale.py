"""Does the hub slow down as sessions pile up? Figures for N = 10, 500, 2,000 and 5,000 sessions.

Usage: python bench/scale.py [--sizes 10,500,2000,5000] [--runs 8] [--real 100]

For each N the hub gets N sessions: ``--real`` of them real containers of the benchmark app
(started the way the daemon starts them), the rest as what the hub keeps of a session besides
its container: a route file in Traefik's directory and a labelled container that is created but
never started. Then it prints
- time-to-app: a new user's first request until the app's first proxied response (what the wait
  page does), next to a plain ``docker run`` of the same image in the same run;
- the daemon's restart until it has recovered every session and serves again;
- ``servicehub sessions`` wall time;
- one incremental reaper run (its own figure from its summary line, and the whole command);
- daemon and Traefik memory (RSS).

Needs the engine and images (make prerequisites). Creating 5,000 containers takes a while.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.spawn import hub_first_request, plain_docker_run
from servicehub.config import parse_config
from servicehub.identity import make_slug
from servicehub.routes import RouteStore, SessionRoute
from tests.harness import ROOT, Hub, bench_apps, raw_request, running_hub, wait_for


def docker_json(path: str) -> Any:
    out = subprocess.run(
        ["curl", "-s", "--unix-socket", "/var/run/docker.sock", f"http://docker{path}"],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout)


def use_standin(hub: Hub) -> tuple[subprocess.Popen[bytes], Path]:
    """Start the stand-in engine in front of the real one and point the daemon at it."""
    hub.open("template", "/healthz", app="whoami")  # one real session: the copies' model
    (container,) = hub.containers(user="template")
    listed = docker_json(f"/containers/json?filters=%7B%22id%22%3A%5B%22{container['Id']}%22%5D%7D")
    stats = docker_json(f"/containers/{container['Id']}/stats?stream=false&one-shot=true")
    template = hub.workdir / "template.json"
    template.write_text(json.dumps({"list": listed[0], "inspect": container, "stats": stats}))
    sessions = hub.workdir / "synthetic.json"
    sessions.write_text("[]")
    socket = hub.workdir / "docker.sock"
    standin = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "bench" / "docker_standin.py"),
            str(socket),
            str(sessions),
            str(template),
        ]
    )
    wait_for(socket.exists, 10, "the stand-in engine")
    config = yaml.safe_load(hub.config_path.read_text())
    config["docker"] = {"socket": str(socket)}
    hub.config_path.write_text(yaml.safe_dump(config))
    hub.restart_daemon()
    return standin, sessions


def add_sessions(hub: Hub, sessions_file: Path, count: int) -> float:
    """Sessions 0..count-1 (as the daemon itself would route them): stand-in containers and
    route files. Returns how long Traefik took to serve them all."""
    config = parse_config(yaml.safe_load(hub.config_path.read_text()), hub.env())
    store = RouteStore(config)
    entries = []
    start = time.perf_counter()
    for i in range(count):
        user = f"scale{i}@example.org"
        slug = make_slug(config.identity.issuer, user)
        ip = f"100.{64 + i // 65000}.{i // 250 % 256}.{i % 250 + 2}"
        entries.append({"slug": slug, "user": user, "ip": ip})
        route = SessionRoute("whoami", slug, user, f"http://{ip}:8000")
        store.write_session(route)
    sessions_file.write_text(json.dumps(entries))
    last = f"{route.key.router(config.hub)}@file" if count else None
    if last:
        wait_for(
            lambda: raw_request(hub.api_port, f"/api/http/routers/{last}").status == 200,
            120,
            "Traefik to load the routes",
            interval=0.02,
        )
    return time.perf_counter() - start


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def time_to_app(hub: Hub, runs: int, tag: str) -> tuple[list[float], list[float]]:
    network = f"{hub.hub_name}-whoami"
    plain, through_hub = [], []
    for i in range(runs):
        plain.append(plain_docker_run(network))
        through_hub.append(hub_first_request(hub, f"{tag}-{i}"))
    return plain, through_hub


def restart(hub: Hub) -> tuple[float, str]:
    hub.stop_daemon()
    start = time.perf_counter()
    hub.start_daemon()  # returns once Traefik routes /_servicehub/healthz to it: recovered
    elapsed = time.perf_counter() - start
    found = re.findall(r"recovered \d+ running sessions[^\n]*", hub.daemon_log.read_text())
    return elapsed, found[-1]


def sessions_command(hub: Hub) -> tuple[float, int]:
    start = time.perf_counter()
    out = hub.cli("sessions", "--json")
    elapsed = time.perf_counter() - start
    assert out.returncode == 0, out.stderr
    return elapsed, len(json.loads(out.stdout))


def reap(hub: Hub) -> tuple[float, float, float]:
    """The whole command's wall time, and the run's own total and CPU time from its summary."""
    start = time.perf_counter()
    done = hub.cli("reap", "--json")
    wall = time.perf_counter() - start
    summary = re.search(r"reaper run: .* total ([\d.]+) s, CPU ([\d.]+) s", done.stderr)
    assert done.returncode == 0 and summary is not None, done.stderr[-2000:]
    return wall, float(summary.group(1)), float(summary.group(2))


def measure(hub: Hub, sessions_file: Path, count: int, runs: int) -> dict[str, Any]:
    loaded = add_sessions(hub, sessions_file, count)
    plain, through_hub = time_to_app(hub, runs, f"n{count}")
    restarted, recovered = restart(hub)
    listed, rows = sessions_command(hub)
    reap(hub)  # the first run after new sessions reads their counters for the first time
    reap_wall, reap_run, reap_cpu = reap(hub)
    ms = lambda xs: round(statistics.median(xs) * 1000, 1)  # noqa: E731
    assert hub.daemon is not None and hub.traefik is not None
    return {
        "sessions": count,
        "routes_loaded_s": round(loaded, 2),
        "plain_docker_run_ms": ms(plain),
        "hub_first_request_ms": ms(through_hub),
        "overhead_ms": round(ms(through_hub) - ms(plain), 1),
        "daemon_restart_s": round(restarted, 2),
        "recovered": recovered,
        "sessions_command_s": round(listed, 2),
        "sessions_listed": rows,
        "reaper_incremental_run_s": reap_run,
        "reaper_incremental_run_cpu_s": reap_cpu,
        "reaper_command_s": round(reap_wall, 2),
        "daemon_rss_mb": rss_mb(hub.daemon.pid),
        "traefik_rss_mb": rss_mb(hub.traefik.pid),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="10,500,2000,5000")
    parser.add_argument("--runs", type=int, default=8)
    args = parser.parse_args()
    results = []
    with running_hub(bench_apps(), "scale") as hub:
        standin, sessions_file = use_standin(hub)
        try:
            hub_first_request(hub, "warmup")
            plain_docker_run(f"{hub.hub_name}-whoami")
            for count in (int(n) for n in args.sizes.split(",")):
                results.append(measure(hub, sessions_file, count, args.runs))
                print(json.dumps(results[-1]), file=sys.stderr)
        finally:
            standin.terminate()
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
