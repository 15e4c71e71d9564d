"""The counters of a swarm node's sessions, collected on the node for the hub's reaper.

A session on a worker runs in that worker's kernel, where the hub cannot read its network and
CPU counters. On every worker a systemd timer runs ``python3 -m servicehub.node_counters``
(docs/cluster.md, "The reaper across machines"): it lists the node's session containers through
its Docker Engine, reads each one's counters with ``counters.read_counters`` (as the hub does
for its own containers) and replaces one file per node, ``<dir>/<node id>.json``, on the
filesystem every member mounts at the same path. The hub's ``SwarmBackend.counters`` reads
them with ``read_samples``.

Workers do not have the servicehub package: the role copies this module, ``counters.py``,
``files.py`` and the package's ``__init__.py`` there, so this imports only the standard library,
``.counters`` and ``.files``.

A sample's ``read`` is the node's CLOCK_BOOTTIME and names the node's boot: the reaper takes a
rate over the node's own interval between two samples, whatever the hub's and the node's wall
clocks say, and the same sample read twice (a file not rewritten between two reaper runs) is
no interval at all rather than an idle one.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import socket
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from .counters import CGROUP_ROOT, PROC, Counters, read_counters, read_small
from .files import write_atomic

DOCKER_SOCKET = "/var/run/docker.sock"
API_VERSION = "v1.41"  # Debian 12's docker.io, as docker_api.API_VERSION
# Swarm labels a task's container with its service's id: the hub's id of the session.
SERVICE_LABEL = "com.docker.swarm.service.id"
HUB_LABEL = "servicehub.hub"  # session_info.LABEL + ".hub", on the service's containers
BOOT_ID = "/proc/sys/kernel/random/boot_id"
# A file older than this is a collector (or node) that stopped: its samples are not used.
# Three collector periods (the role's timer writes every 20 s) and a reaper minute's slack.
STALE_AFTER = 120.0
TIMEOUT = 10.0
# The hub's reaper and daemon read the files under their own accounts.
FILE_MODE = 0o644

Reader = Callable[[int, str], Counters | None]


def boot_clock() -> float:
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def hub_containers(containers: Iterable[dict[str, Any]], hub: str) -> dict[str, str]:
    """Container id -> service id of the hub's session tasks among ``GET /containers/json``."""
    found = {}
    for container in containers:
        labels = container.get("Labels") or {}
        service, container_id = labels.get(SERVICE_LABEL), container.get("Id")
        if service and container_id and labels.get(HUB_LABEL) == hub:
            found[str(container_id)] = str(service)
    return found


def collect(
    containers: dict[str, str],
    known_pids: dict[str, int],
    inspect_pid: Callable[[str], int],
    read: Reader,
) -> dict[str, Counters]:
    """Each container's counters by service id. The PID of the previous file is tried first
    (``read_counters`` checks it is still the container's): an inspect per container only for
    new sessions. One container's failure leaves it out; the others go on."""
    samples = {}
    for container_id, service in containers.items():
        try:
            sample = read(known_pids.get(service, 0), container_id)
            if sample is None:
                sample = read(inspect_pid(container_id), container_id)
        except (OSError, ValueError, http.client.HTTPException) as exc:
            print(f"counters of {container_id[:12]} not read: {exc}", file=sys.stderr)
            continue
        if sample is not None:
            samples[service] = sample
    return samples


def document(node: str, written: float, samples: dict[str, Counters]) -> str:
    sessions = {service: c.to_json() for service, c in sorted(samples.items())}
    return json.dumps({"node": node, "written": written, "sessions": sessions})


def known_pids(path: Path) -> dict[str, int]:
    """Service id -> PID from the node's previous file, if any."""
    try:
        sessions = json.loads(path.read_text(encoding="utf-8")).get("sessions") or {}
        return {s: int(c.get("pid") or 0) for s, c in sessions.items() if isinstance(c, dict)}
    except (OSError, ValueError, AttributeError, TypeError):
        return {}


def read_samples(
    directory: Path, now: float, stale_after: float = STALE_AFTER
) -> dict[str, Counters]:
    """Every node's samples by service id, from the files in ``directory``. A file that does
    not parse, or was written more than ``stale_after`` seconds before ``now`` (unix time), is
    left out: its sessions have no counters, as when the hub cannot read them."""
    samples: dict[str, Counters] = {}
    try:
        paths = sorted(directory.glob("*.json"))
    except OSError:
        return samples
    for path in paths:
        try:
            data = json.loads(path.read_bytes())
        except (OSError, ValueError):
            continue
        if not isinstance(data, dict):
            continue
        written, sessions = data.get("written"), data.get("sessions")
        if not isinstance(written, (int, float)) or not isinstance(sessions, dict):
            continue
        if now - written > stale_after:
            continue
        for service, item in sessions.items():
            sample = Counters.from_json(item)
            if sample is not None and sample.boot is not None:
                samples[str(service)] = sample
    return samples


class _UnixConnection(http.client.HTTPConnection):
    """HTTP to the engine's unix socket."""

    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=TIMEOUT)
        self.socket_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.socket_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class Engine:
    """The few GETs the collector needs, on one kept-alive connection."""

    def __init__(self, path: str) -> None:
        self.connection = _UnixConnection(path)

    def get(self, path: str) -> Any:
        self.connection.request("GET", f"/{API_VERSION}{path}")
        response = self.connection.getresponse()
        body = response.read()
        if response.status != 200:
            raise OSError(f"Docker API {response.status} for {path}: {body[:200]!r}")
        return json.loads(body)

    def pid(self, container_id: str) -> int:
        state = self.get(f"/containers/{quote(container_id)}/json").get("State") or {}
        return int(state.get("Pid") or 0)

    def close(self) -> None:
        self.connection.close()


def run(
    directory: Path,
    hub: str,
    docker_socket: str,
    *,
    proc: Path = PROC,
    cgroup_root: Path = CGROUP_ROOT,
    boot_id_path: str = BOOT_ID,
) -> int:
    engine = Engine(docker_socket)
    try:
        node = str((engine.get("/info").get("Swarm") or {}).get("NodeID") or "")
        if not node:
            print("this engine is in no swarm: no sessions to collect", file=sys.stderr)
            return 0
        filters = quote(json.dumps({"label": [f"{HUB_LABEL}={hub}", SERVICE_LABEL]}))
        containers = hub_containers(engine.get(f"/containers/json?filters={filters}"), hub)
        path = directory / f"{node}.json"
        boot = read_small(boot_id_path).strip()

        def read(pid: int, container_id: str) -> Counters | None:
            sample = read_counters(
                pid, container_id, proc=proc, cgroup_root=cgroup_root, clock=boot_clock
            )
            if sample is not None:
                sample.boot = boot
            return sample

        samples = collect(containers, known_pids(path), engine.pid, read)
    finally:
        with contextlib.suppress(OSError):
            engine.close()
    write_atomic(path, document(node, time.time(), samples), FILE_MODE)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python3 -m servicehub.node_counters",
        description="Write the counters of this swarm node's sessions to <dir>/<node id>.json.",
    )
    parser.add_argument("--dir", type=Path, required=True, help="the shared counters directory")
    parser.add_argument("--hub", required=True, help="the hub's name (its sessions' label)")
    parser.add_argument("--docker-socket", default=DOCKER_SOCKET)
    args = parser.parse_args(argv)
    try:
        return run(args.dir, args.hub, args.docker_socket)
    except (OSError, ValueError, http.client.HTTPException) as exc:
        print(f"servicehub node counters: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
