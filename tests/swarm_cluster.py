"""A real Docker Swarm for the tests and benchmarks: a hub (manager) and two workers, each a
systemd container with its own Docker Engine, as docs/cluster.md lays a cluster out. Every Docker
object is named ``servicehub-swarmtest-*``. Used by tests/integration/test_swarm.py and
bench/cluster.py; needs the image ``make cluster-test`` builds."""

from __future__ import annotations

import contextlib
import json
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.harness import EXAMPLE_IMAGE

PREFIX = "servicehub-swarmtest"
NODE_IMAGE = "servicehub-test/swarm-node:12"
NODES = ("hub", "w1", "w2")
SOCKET_DIR = "/hostsock"  # where the hub node's engine also listens, seen from the host
# The engine of every node: sessions' containers cannot talk to each other on the default
# bridge. Offline: a task uses the image the node holds instead of asking a registry first.
DAEMON_JSON = {"icc": False, "log-level": "warn"}
DOCKER_DEFAULTS = "DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1\n"
SYSTEMD_FLAGS = [
    "--cgroupns=host",
    "-v",
    "/sys/fs/cgroup:/sys/fs/cgroup:rw",
    "--tmpfs",
    "/run",
    "--tmpfs",
    "/run/lock",
    "--cap-add",
    "SYS_ADMIN",
    "--cap-add",
    "NET_ADMIN",
    "--security-opt",
    "seccomp=unconfined",
    "--security-opt",
    "apparmor=unconfined",
]


def sh(*args: str, check: bool = True, timeout: float = 180, stdin: bytes | None = None) -> str:
    done = subprocess.run(args, capture_output=True, check=False, timeout=timeout, input=stdin)
    if check and done.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} failed ({done.returncode}): {done.stderr.decode(errors='replace')}"
        )
    return done.stdout.decode(errors="replace").strip()


def node(name: str, *command: str, check: bool = True, timeout: float = 180) -> str:
    return sh("docker", "exec", f"{PREFIX}-{name}", *command, check=check, timeout=timeout)


def remove_everything() -> None:
    for name in NODES:
        sh("docker", "rm", "-f", "-v", f"{PREFIX}-{name}", check=False)
        sh("docker", "volume", "rm", f"{PREFIX}-{name}-docker", check=False)
    sh("docker", "network", "rm", f"{PREFIX}-net", check=False)


@dataclass
class Cluster:
    socket: Path  # the hub node's engine, for the backend under test
    addresses: dict[str, str]  # node name -> its address on the cluster's network
    timings: dict[str, float]

    def hub_fetch(self, url: str) -> str:
        """GET ``url`` from the hub node (where Traefik runs), the body or the curl error."""
        return node("hub", "curl", "-sS", "--max-time", "5", url, check=False, timeout=30)


def _wait_for_engines() -> None:
    deadline = time.monotonic() + 120
    waiting = set(NODES)
    while waiting:
        for name in sorted(waiting):
            version = ["docker", "version", "-f", "{{.Server.Version}}"]
            if (
                subprocess.run(
                    ["docker", "exec", f"{PREFIX}-{name}", *version], capture_output=True
                ).returncode
                == 0
            ):
                waiting.discard(name)
        if waiting and time.monotonic() > deadline:
            logs = {
                n: node(n, "journalctl", "-u", "docker", "-n", "30", check=False) for n in waiting
            }
            raise AssertionError(f"the engines of {sorted(waiting)} did not start: {logs}")
        time.sleep(0.5)


@contextlib.contextmanager
def swarm_cluster() -> Iterator[Cluster]:
    """A hub (manager) and two workers, each a systemd container with its own engine, with
    the example image on the workers; everything removed afterwards, also after a failure.
    Prints how long each step took."""
    remove_everything()  # a run killed before its cleanup
    timings: dict[str, float] = {}
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=f"{PREFIX}-") as tmp:
        work = Path(tmp)
        (work / "sock").mkdir()
        (work / "daemon.json").write_text(json.dumps(DAEMON_JSON))
        (work / "docker-defaults").write_text(DOCKER_DEFAULTS)
        # Debian's unit runs `dockerd -H fd:// $DOCKER_OPTS`: the hub's engine listens here too.
        (work / "docker-defaults-hub").write_text(
            f'{DOCKER_DEFAULTS}DOCKER_OPTS="-H unix://{SOCKET_DIR}/docker.sock"\n'
        )
        try:
            sh("docker", "network", "create", f"{PREFIX}-net")
            for name in NODES:
                defaults = work / ("docker-defaults-hub" if name == "hub" else "docker-defaults")
                extra = ["-v", f"{work / 'sock'}:{SOCKET_DIR}"] if name == "hub" else []
                sh(
                    "docker", "run", "-d", "--name", f"{PREFIX}-{name}", "--hostname", name,
                    "--network", f"{PREFIX}-net", *SYSTEMD_FLAGS, *extra,
                    "-v", f"{PREFIX}-{name}-docker:/var/lib/docker",
                    "-v", f"{work / 'daemon.json'}:/etc/docker/daemon.json:ro",
                    "-v", f"{defaults}:/etc/default/docker:ro",
                    NODE_IMAGE,
                )  # fmt: skip
            addresses = {
                name: sh(
                    "docker",
                    "inspect",
                    "-f",
                    f'{{{{(index .NetworkSettings.Networks "{PREFIX}-net").IPAddress}}}}',
                    f"{PREFIX}-{name}",
                )
                for name in NODES
            }
            _wait_for_engines()
            timings["nodes up"] = time.monotonic() - start
            _form_swarm(addresses)
            timings["swarm formed"] = time.monotonic() - start
            _load_image(EXAMPLE_IMAGE, ("w1", "w2"))
            timings["image loaded"] = time.monotonic() - start
            yield Cluster(work / "sock" / "docker.sock", addresses, timings)
        finally:
            print("\nswarm test timings (s):", {k: round(v, 1) for k, v in timings.items()})
            remove_everything()


def _form_swarm(addresses: dict[str, str]) -> None:
    hub = addresses["hub"]
    node("hub", "docker", "swarm", "init", "--advertise-addr", hub)
    token = node("hub", "docker", "swarm", "join-token", "-q", "worker")
    join = ["docker", "swarm", "join", "--token", token, f"{hub}:2377"]
    joins = [
        subprocess.Popen(
            ["docker", "exec", f"{PREFIX}-{w}", *join],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for w in ("w1", "w2")
    ]
    for joining in joins:
        _, err = joining.communicate(timeout=120)
        assert joining.returncode == 0, err.decode(errors="replace")


def _load_image(image: str, names: tuple[str, ...]) -> None:
    """No registry: the image goes into each node's engine as ``docker save | docker load``."""
    saved = sh("docker", "image", "inspect", "-f", "{{.Id}}", image)
    assert saved
    archive = subprocess.run(["docker", "save", image], capture_output=True, check=True).stdout
    loads = [
        subprocess.Popen(
            ["docker", "exec", "-i", f"{PREFIX}-{name}", "docker", "load", "-q"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for name in names
    ]
    for load in loads:
        _, err = load.communicate(archive, timeout=300)
        assert load.returncode == 0, err.decode(errors="replace")


# The example app without its volume: user data across nodes needs the shared filesystem,
# which is not built yet (docs/cluster.md).
WHOAMI = {
    "image": EXAMPLE_IMAGE,
    "port": 8000,
    "limits": {"memory": "256m", "cpus": 0.5, "pids": 64},
    "readiness": {"type": "http", "path": "/healthz"},
}


def swarm_settings(cluster: Cluster) -> dict:
    return {
        "docker": {"socket": str(cluster.socket)},
        "backend": {"type": "swarm", "swarm": {"watch_interval": "2s"}},
    }


def remove_services(hub: str) -> None:
    ids = node("hub", "docker", "service", "ls", "-q", "--filter", f"label=servicehub.hub={hub}")
    if ids:
        node("hub", "docker", "service", "rm", *ids.split(), check=False)


def task_node(service: str) -> str:
    return node("hub", "docker", "service", "ps", "-q", "--format", "{{.Node}}", service)
