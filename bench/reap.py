"""A whole `servicehub reap` run: 1,000,000 access-log lines and 200 sessions, then a run with
100 new lines.

Usage: python bench/reap.py [--lines N] [--sessions S] [--fake | --swarm]

The sessions are real containers carrying the hub's labels (the base image running `sleep`,
not the app, so 200 of them fit on a small machine): Docker's list and per-container stats calls
are the real ones. With --fake (for more sessions than the machine holds) Docker is replaced by
an in-process stand-in that lists the sessions at once, and every session's counters are read
from one real container's kernel files: the reaper's own work per session is the same, only the
engine's list answer is not measured (the output says so). With --swarm the same stand-in list
goes with the swarm backend, whose counters come from node collectors' files (50 sessions a
node, docs/cluster.md): before each run the files are written by the collector's own code, every
sample read from the one real container's kernel files; the time the collector takes for one
node is printed too. Each run is the `servicehub reap` command as a process, timed from start to
exit; every session is active, so nothing is removed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import secrets
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.accesslog import traefik_line  # noqa: E402
from servicehub.docker_client import DockerClient  # noqa: E402

BASE_IMAGE = "servicehub-test/debian:12"
SUFFIX = "abcdefghijklmnop"


def slug(i: int) -> str:
    return f"user{i}-{SUFFIX}"


def log_line(hub: str, i: int, sessions: int, when: str) -> str:
    line = traefik_line(i, sessions).replace("servicehub-whoami-", f"{hub}-whoami-")
    for key in ("StartLocal", "StartUTC", "time"):
        start = line.index(f'"{key}":"') + len(key) + 4
        line = line[:start] + when + line[line.index('"', start) :]
    return line


async def create_containers(hub: str, sessions: int) -> list[str]:
    docker = DockerClient(Path("/var/run/docker.sock"))
    gate = asyncio.Semaphore(4)
    # Spawned an hour ago, so the log's requests (written just now) count as their activity.
    created = (datetime.now(UTC) - timedelta(hours=1)).isoformat().replace("+00:00", "Z")

    async def one(i: int) -> str:
        labels = {
            "servicehub.hub": hub,
            "servicehub.app": "whoami",
            "servicehub.slug": slug(i),
            "servicehub.user": f"user{i}@example.org",
            "servicehub.created": created,
        }
        async with gate:
            made = await docker.request(
                "POST",
                "/containers/create",
                params={"name": f"{hub}-whoami-{slug(i)}"},
                body={
                    "Image": BASE_IMAGE,
                    "Cmd": ["sleep", "infinity"],
                    "Labels": labels,
                    "HostConfig": {"Memory": 16 * 1024**2, "NetworkMode": "none"},
                },
            )
            await docker.request("POST", f"/containers/{made['Id']}/start")
            return str(made["Id"])

    try:
        return list(await asyncio.gather(*(one(i) for i in range(sessions))))
    finally:
        await docker.close()


def run_reap(config: Path, fake: int) -> tuple[float, float, float, list[dict[str, object]]]:
    """Wall time of the command, the run's own total and CPU time from its log, and its rows."""
    env = {**os.environ, "SERVICEHUB_CONFIG": str(config)}
    argv = [sys.executable, "-m", "servicehub", "reap", "--json"]
    if fake:
        argv = [sys.executable, str(Path(__file__).resolve()), "--in-process-fake", str(fake)]
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=ROOT, check=True)
    wall = time.perf_counter() - start
    summary = re.search(r"reaper run: .* total ([\d.]+) s, CPU ([\d.]+) s", done.stderr)
    assert summary is not None, done.stderr[-2000:]
    print(summary.group(0), file=sys.stderr)
    return wall, float(summary.group(1)), float(summary.group(2)), json.loads(done.stdout)


PER_NODE = 50  # sessions per node's counters file with --swarm


def write_node_files(directory: Path, sessions: int) -> float:
    """Each node's collector file, as ``node_counters`` writes it, for sessions ``id0``..: every
    sample read from the one real container. The seconds one node's collection took."""
    from servicehub import node_counters
    from servicehub.counters import Counters, read_counters
    from servicehub.files import write_atomic

    real_id, real_pid = os.environ["BENCH_CONTAINER"], int(os.environ["BENCH_PID"])
    boot = Path(node_counters.BOOT_ID).read_text().strip()

    def read(pid: int, container_id: str) -> Counters | None:
        # Every session's counters are the one real container's, read as the collector does.
        found = read_counters(real_pid, real_id, clock=node_counters.boot_clock)
        if found is not None:
            found.boot = boot
        return found

    took = []
    for first in range(0, sessions, PER_NODE):
        ids = {f"c{i}": f"id{i}" for i in range(first, min(first + PER_NODE, sessions))}
        start = time.perf_counter()
        samples = node_counters.collect(ids, {s: real_pid for s in ids.values()}, int, read)
        text = node_counters.document(f"node{first}", time.time(), samples)
        write_atomic(directory / f"node{first}.json", text, node_counters.FILE_MODE)
        took.append(time.perf_counter() - start)
    return max(took)


def fake_main(sessions: int) -> None:
    """`servicehub reap --json` with Docker replaced by a stand-in that lists the sessions at
    once and reads every session's counters from one real container's kernel files (or, for
    the swarm backend, from the node files ``write_node_files`` left)."""
    from servicehub import backend, cli, swarm
    from servicehub.counters import Counters, read_counters
    from servicehub.session_info import SessionInfo

    hub = yaml.safe_load(Path(os.environ["SERVICEHUB_CONFIG"]).read_text())["hub"]
    real_id, real_pid = os.environ["BENCH_CONTAINER"], int(os.environ["BENCH_PID"])
    spawned = datetime.now(UTC) - timedelta(hours=1)

    def listing() -> list[SessionInfo]:
        return [
            SessionInfo(
                f"id{i}",
                f"{hub}-whoami-{slug(i)}",
                "whoami",
                slug(i),
                f"user{i}",
                spawned,
                "running",
                0,
                None,
            )
            for i in range(sessions)
        ]

    class FakeSwarm(swarm.SwarmBackend):
        async def list_sessions(self, detailed: bool = True) -> list[SessionInfo]:
            return listing()

    class FakeBackend:
        def __init__(self, config: object) -> None:
            pass

        async def list_sessions(self, detailed: bool = True) -> list[SessionInfo]:
            return listing()

        async def counters(self, container_id: str, pid: int = 0) -> Counters | None:
            # Every session's counters are the one real container's: the same kernel files,
            # the same system calls as one container each.
            return read_counters(real_pid, real_id)

        async def close(self) -> None:
            pass

    backend.DockerBackend = FakeBackend  # type: ignore[assignment,misc]
    swarm.SwarmBackend = FakeSwarm  # type: ignore[misc]
    sys.exit(cli.main(["reap", "--json"]))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--sessions", type=int, default=200)
    parser.add_argument("--fake", action="store_true", help="a stand-in engine list")
    parser.add_argument(
        "--swarm", action="store_true", help="--fake, with the swarm backend's node files"
    )
    parser.add_argument("--in-process-fake", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.fake = args.fake or args.swarm
    if args.in_process_fake:
        fake_main(args.in_process_fake)
        return
    hub = "bench" + secrets.token_hex(3)
    ids: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        access_log = work / "access.json"
        config = work / "servicehub.yml"
        counters = work / "counters"
        counters.mkdir()
        swarm_backend = {}
        if args.swarm:
            swarm_backend = {"backend": {"type": "swarm", "swarm": {"counters_dir": str(counters)}}}
        config.write_text(
            yaml.safe_dump(
                {
                    "hub": hub,
                    "state_dir": str(work / "state"),
                    "volumes_root": str(work / "volumes"),
                    "traefik": {"routes_dir": str(work / "dynamic"), "access_log": str(access_log)},
                    "apps": {"whoami": {"image": BASE_IMAGE}},
                    **swarm_backend,
                }
            )
        )
        (work / "dynamic").mkdir()
        now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        try:
            # Containers first: the engine settles while the log is written.
            if args.fake:
                ids = asyncio.run(create_containers(hub, 1))
                inspect = ["docker", "inspect", "-f", "{{.State.Pid}}", ids[0]]
                pid = subprocess.run(inspect, capture_output=True, text=True, check=True)
                os.environ["BENCH_CONTAINER"], os.environ["BENCH_PID"] = ids[0], pid.stdout.strip()
            else:
                start = time.perf_counter()
                ids = asyncio.run(create_containers(hub, args.sessions))
                setup = time.perf_counter() - start
            with access_log.open("w") as fh:
                fh.writelines(log_line(hub, i, args.sessions, now) for i in range(args.lines))
            access_log.read_bytes()  # page cache warm, as on a live host
            if args.swarm:
                write_node_files(counters, args.sessions)
            full, full_run, full_cpu, rows = run_reap(config, args.sessions if args.fake else 0)
            assert len(rows) == args.sessions and {r["decision"] for r in rows} == {"keep"}, rows[
                :3
            ]
            assert {r["source"] for r in rows} == {"access-log"}, {r["source"] for r in rows}
            with access_log.open("a") as fh:
                fh.writelines(log_line(hub, args.lines + i, args.sessions, now) for i in range(100))
            if args.swarm:  # the collectors ran again since: a rate for every session
                collector = write_node_files(counters, args.sessions)
            incremental, incremental_run, incremental_cpu, rows = run_reap(
                config, args.sessions if args.fake else 0
            )
            assert len(rows) == args.sessions
        finally:
            if ids:
                subprocess.run(["docker", "rm", "-f", *ids], capture_output=True, check=False)
    result = {
        "lines": args.lines,
        "sessions": args.sessions,
        "containers": "stand-in list, one real container's counters" if args.fake else "real",
        "backend": f"swarm, {PER_NODE} sessions per node file" if args.swarm else "docker",
        "full_command_s": round(full, 3),
        "full_run_s": round(full_run, 3),
        "full_run_cpu_s": round(full_cpu, 3),
        "incremental_command_s": round(incremental, 3),
        "incremental_run_s": round(incremental_run, 3),
        "incremental_run_cpu_s": round(incremental_cpu, 3),
        "note": "command = process start to exit; run = the reaper's own work, from its log "
        "(wall and CPU time)",
    }
    if not args.fake:
        result["container_setup_s"] = round(setup, 1)
    if args.swarm:
        result[f"collector_one_node_of_{PER_NODE}_s"] = round(collector, 4)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
