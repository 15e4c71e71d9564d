"""Sessions as Docker Swarm services, spread over the swarm's nodes (docs/cluster.md).

One replicated service of one replica per session, named and labelled like a single-host
session's container, so the labels stay the session state and a restarted daemon rebuilds its
view from the manager alone. Swarm places the task on a node with room for its reservations;
the task publishes the app's port on a free host port of that node (``mode=host``) and Traefik
on the hub reaches the app at ``<node address>:<published port>``. The workers' firewalls let
only the hub reach those ports.

The pure parts (the service spec, a task's state, a session from a service and its task, the
changes between two listings) are functions without I/O, tested with recorded API documents;
``SwarmBackend`` only moves them to and from the manager's API. Listing costs three calls
(services, tasks, nodes) however many sessions run: nothing on a hot path inspects one session
after another.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from .backend import (
    CONFLICT_WAIT,
    SessionEvent,
    SpawnError,
    session_environment,
    session_labels,
)
from .backend_config import SwarmConfig
from .config import AppConfig, Config
from .config_section import parse_size
from .counters import Counters
from .docker_client import DockerClient, DockerError
from .host_mounts import MountError, session_mounts
from .node_counters import read_samples
from .session_info import LABEL, SessionInfo, identity_from_labels
from .session_key import SessionKey

log = logging.getLogger("servicehub.swarm")
# A task waiting for a node with room this long means the swarm is full: the user is told so.
CAPACITY_WAIT = 10.0
# The nodes' counter files are rewritten every 20 s or so: a second-old reading is as fresh.
COUNTERS_TTL = 1.0

# Swarm's task states (swarmkit's api.TaskState) as the Docker container states the rest of
# servicehub knows: only "running" routes; "created" is still on its way.
_STARTING = {
    "new",
    "allocated",
    "pending",
    "assigned",
    "accepted",
    "preparing",
    "ready",
    "starting",
}
_ENDED = {"complete", "shutdown", "failed", "rejected", "orphaned"}
# The states in which a task holds its reservation on its node, as Swarm's scheduler counts.
_HOLDING = _STARTING | {"running"}


@dataclass(frozen=True)
class Node:
    id: str
    role: str  # manager or worker
    state: str  # ready, down, unknown, disconnected
    availability: str  # active, pause, drain
    address: str  # where the hub reaches the node's published ports


def nodes_from(data: Iterable[dict[str, Any]]) -> dict[str, Node]:
    """The swarm's nodes by id, from ``GET /nodes``."""
    nodes = {}
    for item in data:
        spec, status = item.get("Spec") or {}, item.get("Status") or {}
        nodes[str(item.get("ID", ""))] = Node(
            id=str(item.get("ID", "")),
            role=str(spec.get("Role", "")),
            state=str(status.get("State", "")),
            availability=str(spec.get("Availability", "")),
            address=str(status.get("Addr", "")),
        )
    return nodes


def placement(config: SwarmConfig, nodes: Iterable[Node]) -> list[str]:
    """The placement constraints of a new session: off the manager while a worker is up."""
    if config.sessions_on_manager:
        return []
    if any(n.role == "worker" and n.state == "ready" for n in nodes):
        return ["node.role==worker"]
    return []


@dataclass(frozen=True)
class Room:
    """What a node that may take a new session has left unreserved."""

    node: str
    nano_cpus: int
    memory_bytes: int


def reservation(app: AppConfig, config: SwarmConfig) -> tuple[int, int]:
    """What a session of ``app`` reserves on its node: (nano CPUs, memory bytes)."""
    return (
        int(app.limits.cpus * config.cpu_reservation * 1e9),
        int(app.limits.memory_bytes * config.memory_reservation),
    )


def free_room(
    nodes: Iterable[dict[str, Any]], tasks: Iterable[dict[str, Any]], constraints: list[str]
) -> list[Room]:
    """Each node a new session may be placed on (ready, active, and a worker if the placement
    says so), with its resources less the reservations of the tasks it holds: Swarm's own
    arithmetic. A task holds its place from its assignment to a node until it stops running,
    whatever is wanted of it meanwhile (a removed session's task stops first)."""
    held: dict[str, list[int]] = {}
    for task in tasks:
        node_id = str(task.get("NodeID") or "")
        if not node_id or str((task.get("Status") or {}).get("State", "")) not in _HOLDING:
            continue
        resources = ((task.get("Spec") or {}).get("Resources") or {}).get("Reservations") or {}
        cpus_and_memory = held.setdefault(node_id, [0, 0])
        cpus_and_memory[0] += int(resources.get("NanoCPUs") or 0)
        cpus_and_memory[1] += int(resources.get("MemoryBytes") or 0)
    workers_only = "node.role==worker" in constraints
    rooms = []
    for item in nodes:
        spec, status = item.get("Spec") or {}, item.get("Status") or {}
        if status.get("State") != "ready" or spec.get("Availability") != "active":
            continue
        if workers_only and spec.get("Role") != "worker":
            continue
        node_id = str(item.get("ID", ""))
        total = (item.get("Description") or {}).get("Resources") or {}
        cpus, memory = held.get(node_id, (0, 0))
        rooms.append(
            Room(
                node_id,
                int(total.get("NanoCPUs") or 0) - cpus,
                int(total.get("MemoryBytes") or 0) - memory,
            )
        )
    return rooms


def can_hold(rooms: Iterable[Room], nano_cpus: int, memory_bytes: int) -> bool:
    return any(r.nano_cpus >= nano_cpus and r.memory_bytes >= memory_bytes for r in rooms)


def room_after(rooms: list[Room], placing: Iterable[tuple[int, int]]) -> list[Room]:
    """``rooms`` once sessions still being placed took theirs (each where it first fits): a
    task not yet on a node holds nothing in the engine's view. One already on its node counts
    twice for a moment: the next session waits a little, rather than failing for a place taken
    twice."""
    left = list(rooms)
    for cpus, memory in placing:
        for i, room in enumerate(left):
            if room.nano_cpus >= cpus and room.memory_bytes >= memory:
                left[i] = Room(room.node, room.nano_cpus - cpus, room.memory_bytes - memory)
                break
    return left


def _tmpfs_mount(target: str, options: str) -> dict[str, Any]:
    """A tmpfs as a service mount: Docker makes it noexec, nosuid, nodev; size and mode here
    (``backend_config.swarm_unsupported`` refuses any other option when the file is loaded)."""
    tmpfs: dict[str, Any] = {}
    for option in options.split(","):
        name, _, value = option.partition("=")
        if name == "size":
            tmpfs["SizeBytes"] = parse_size(value, target)
        elif name == "mode":
            tmpfs["Mode"] = int(value, 8)
    return {"Type": "tmpfs", "Target": target, "TmpfsOptions": tmpfs}


def service_spec(
    hub: str,
    app: AppConfig,
    user: str,
    slug: str,
    config: SwarmConfig,
    constraints: list[str],
    mounts: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The ``POST /services/create`` body of a session (docs/cluster.md, "Sessions").

    The same user, limits, read-only root, dropped capabilities, labels and environment as
    the single-host container (``backend.container_spec``); in addition reservations, so
    Swarm places it only on a node that can hold it, and the app's port published on the
    node in ``host`` mode. ``dnsrr``: the kernel has no IPVS for a virtual IP, and nothing
    needs one (one replica, reached by its node's address).
    """
    labels = session_labels(hub, app, user, slug)
    env = session_environment(app, user, slug)
    docker = app.docker.host_config()
    cpus, memory = reservation(app, config)
    container: dict[str, Any] = {
        "Image": app.image,
        "Labels": labels,
        "Env": [f"{k}={v}" for k, v in sorted(env.items())],
        "User": f"{app.uid}:{app.gid}",
        "ReadOnly": app.read_only,
        "Mounts": list(mounts or [])
        + [_tmpfs_mount(path, options) for path, options in sorted(app.tmpfs.items())],
        "CapabilityDrop": ["ALL"],
        "CapabilityAdd": list(docker["CapAdd"]),
        "Sysctls": dict(docker["Sysctls"]),
        "Ulimits": list(docker["Ulimits"]),
    }
    if app.entrypoint is not None:
        container["Command"] = app.entrypoint
    if app.command is not None:
        container["Args"] = app.command
    return {
        "Name": SessionKey(app.name, slug).container(hub),
        "Labels": labels,
        "TaskTemplate": {
            "ContainerSpec": container,
            "Resources": {
                "Limits": {
                    "MemoryBytes": app.limits.memory_bytes,
                    "NanoCPUs": int(app.limits.cpus * 1e9),
                    "Pids": app.limits.pids,
                },
                "Reservations": {"NanoCPUs": cpus, "MemoryBytes": memory},
            },
            # The hub decides when a session comes back, as with a container.
            "RestartPolicy": {"Condition": "none", "MaxAttempts": 0},
            "Placement": {"Constraints": constraints},
        },
        "Mode": {"Replicated": {"Replicas": 1}},
        "EndpointSpec": {
            "Mode": "dnsrr",
            # No PublishedPort: the node's engine picks a free one; the task reports it.
            "Ports": [{"Protocol": "tcp", "TargetPort": app.port, "PublishMode": "host"}],
        },
    }


def current_task(tasks: Iterable[dict[str, Any]]) -> dict[str, Any] | None:
    """The task that stands for the session: one Swarm still wants running, else the newest."""

    def order(task: dict[str, Any]) -> tuple[bool, int]:
        index = int((task.get("Version") or {}).get("Index") or 0)
        return task.get("DesiredState") == "running", index

    return max(tasks, key=order, default=None)


def task_state(task: dict[str, Any] | None, nodes: dict[str, Node]) -> tuple[str, int]:
    """A task's state as a container state (``created``, ``running``, ``exited``,
    ``removing``, or ``lost`` when its node is down) and its exit code."""
    if task is None:
        return "created", 0  # the service exists, Swarm has not made its task yet
    status = task.get("Status") or {}
    state = str(status.get("State", ""))
    exit_code = int((status.get("ContainerStatus") or {}).get("ExitCode") or 0)
    if state == "running":
        node = nodes.get(str(task.get("NodeID", "")))
        if node is not None and node.state == "down":
            # The manager keeps the last state a dead node reported: its sessions are gone.
            # Only "down" counts: a manager that restarts shows its nodes "unknown" until
            # they report again, and their sessions are fine.
            return "lost", exit_code
        return "running", 0
    if state in _STARTING:
        return "created", 0
    if state == "remove":
        return "removing", exit_code
    return "exited", exit_code


def published_port(task: dict[str, Any] | None) -> int | None:
    """The host port the task's node gave the app's port (``Status.PortStatus``)."""
    if task is None:
        return None
    ports = ((task.get("Status") or {}).get("PortStatus") or {}).get("Ports") or []
    for port in ports:
        if port.get("PublishMode") == "host" and port.get("PublishedPort"):
            return int(port["PublishedPort"])
    return None


def session_info(
    service: dict[str, Any], task: dict[str, Any] | None, nodes: dict[str, Node]
) -> SessionInfo:
    """A session as the rest of servicehub sees it: the service's labels, its task's state,
    and for a running task the node's address with the port it published."""
    labels = (service.get("Spec") or {}).get("Labels") or {}
    state, exit_code = task_state(task, nodes)
    address = port = None
    if state == "running" and task is not None:
        node = nodes.get(str(task.get("NodeID", "")))
        port = published_port(task)
        if node is not None and node.address and port is not None:
            address = node.address
    return SessionInfo(
        container_id=str(service.get("ID", "")),
        name=str((service.get("Spec") or {}).get("Name", "")),
        **identity_from_labels(labels),
        state=state,
        exit_code=exit_code,
        address=address,
        port=port if address else None,
    )


def sessions_from(
    services: Iterable[dict[str, Any]], tasks: Iterable[dict[str, Any]], nodes: dict[str, Node]
) -> list[SessionInfo]:
    """Every session from one listing of services, tasks and nodes."""
    by_service: dict[str, list[dict[str, Any]]] = {}
    for task in tasks:
        by_service.setdefault(str(task.get("ServiceID", "")), []).append(task)
    return [
        session_info(s, current_task(by_service.get(str(s.get("ID", "")), [])), nodes)
        for s in services
    ]


def session_changes(
    before: dict[str, SessionInfo], after: dict[str, SessionInfo]
) -> list[SessionEvent]:
    """What a container's events would have said between two listings (by service id)."""
    events = []
    for service_id, old in before.items():
        new = after.get(service_id)
        if new is None:
            events.append(SessionEvent("destroy", service_id, old.app, old.slug, None))
        elif old.running and not new.running:
            events.append(SessionEvent("die", service_id, new.app, new.slug, new.exit_code))
    for service_id, started in after.items():
        was = before.get(service_id)
        if started.running and (was is None or not was.running):
            events.append(SessionEvent("start", service_id, started.app, started.slug, None))
    return events


def pending_reason(task: dict[str, Any] | None) -> str:
    """Why Swarm has not started the task yet (its scheduler's words), or ""."""
    if task is None:
        return ""
    return str((task.get("Status") or {}).get("Err") or "")


class SwarmBackend:
    """The ``Backend`` protocol on a Swarm manager's Engine API (the hub's own engine)."""

    def __init__(self, config: Config, client: DockerClient | None = None) -> None:
        self.config = config
        self.docker = client or DockerClient(config.docker_socket)
        self.nodes: dict[str, Node] = {}
        self._collected: dict[str, Counters] = {}
        self._read_at: float | None = None
        self.clock: Callable[[], float] = time.monotonic  # when the samples were last read

    def _hub_filter(self) -> str:
        return json.dumps({"label": [f"{LABEL}.hub={self.config.hub}"]})

    async def prepare(self) -> None:
        """Refuse to run on an engine that does not manage a swarm: nothing could be placed."""
        info = await self.docker.request("GET", "/info")
        swarm = (info or {}).get("Swarm") or {}
        if swarm.get("LocalNodeState") != "active" or not swarm.get("ControlAvailable"):
            raise RuntimeError(
                "backend.type is swarm but this host's Docker Engine is not a swarm manager "
                f"(state {swarm.get('LocalNodeState') or 'unknown'}): see docs/cluster.md"
            )
        await self._refresh_nodes()

    async def _refresh_nodes(self) -> dict[str, Node]:
        self.nodes = nodes_from(await self.docker.request("GET", "/nodes"))
        return self.nodes

    async def plan_address(self, app: str) -> str | None:
        # The node and its port are known only once Swarm has placed and started the task.
        return None

    async def has_room(self, app: AppConfig, placing: list[AppConfig]) -> bool:
        """Whether a node could hold one more session of ``app`` now, besides the sessions
        still ``placing``: two calls (nodes with their resources, tasks with their
        reservations), whatever the number of sessions. True also when no node could ever
        hold it, even empty: waiting would not help, and the spawn says so."""
        settings = self.config.backend.swarm
        nodes = await self.docker.request("GET", "/nodes")
        self.nodes = nodes_from(nodes)
        constraints = placement(settings, self.nodes.values())
        needs = reservation(app, settings)
        if not can_hold(free_room(nodes, [], constraints), *needs):
            return True
        rooms = free_room(nodes, await self.docker.request("GET", "/tasks"), constraints)
        return can_hold(room_after(rooms, (reservation(a, settings) for a in placing)), *needs)

    async def list_sessions(self, detailed: bool = True) -> list[SessionInfo]:
        """The hub's sessions in three calls (services, tasks, nodes), exit codes included:
        ``detailed`` costs nothing more here."""
        services = await self.docker.request(
            "GET", "/services", params={"filters": self._hub_filter()}
        )
        if not services:
            return []
        tasks = await self.docker.request("GET", "/tasks")
        nodes = await self._refresh_nodes()
        return sessions_from(services, tasks, nodes)

    async def _service(self, name_or_id: str) -> dict[str, Any] | None:
        try:
            data = await self.docker.request("GET", f"/services/{quote(name_or_id)}")
        except DockerError as exc:
            if exc.status == 404:
                return None
            raise
        return dict(data)

    async def _tasks(self, service_id: str) -> list[dict[str, Any]]:
        filters = json.dumps({"service": [service_id]})
        return list(await self.docker.request("GET", "/tasks", params={"filters": filters}))

    async def _info(self, service: dict[str, Any]) -> tuple[SessionInfo, dict[str, Any] | None]:
        task = current_task(await self._tasks(str(service["ID"])))
        node_id = str((task or {}).get("NodeID") or "")
        if node_id and node_id not in self.nodes:
            await self._refresh_nodes()  # a node that joined since the last look
        return session_info(service, task, self.nodes), task

    async def get(self, app: str, slug: str) -> SessionInfo | None:
        service = await self._service(SessionKey(app, slug).container(self.config.hub))
        if service is None:
            return None
        info, _ = await self._info(service)
        return info

    async def spawn(
        self,
        app: AppConfig,
        user: str,
        slug: str,
        address: str | None = None,
        groups: frozenset[str] = frozenset(),
    ) -> SessionInfo:
        """Create the session's service and wait until its task runs (or cannot)."""
        try:
            # A thread: the root helper makes the directory on the shared filesystem.
            mounts = await asyncio.to_thread(session_mounts, self.config, app, slug, groups)
        except MountError as exc:
            raise SpawnError(str(exc)) from exc
        if not self.nodes:
            await self._refresh_nodes()
        constraints = placement(self.config.backend.swarm, self.nodes.values())
        spec = service_spec(
            self.config.hub, app, user, slug, self.config.backend.swarm, constraints, mounts
        )
        service_id = await self._create(app, slug, spec)
        return await self._until_placed(app, service_id)

    async def _create(self, app: AppConfig, slug: str, spec: dict[str, Any]) -> str:
        """Create the service; on a name conflict adopt one of this very session that runs or
        starts, and replace one that ended."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CONFLICT_WAIT
        while True:
            try:
                created = await self.docker.request("POST", "/services/create", body=spec)
                return str(created["ID"])
            except DockerError as exc:
                if exc.status != 409:
                    raise SpawnError(f"the session could not be created ({exc.message})") from exc
                service = await self._service(spec["Name"])
                if service is not None:
                    info, _ = await self._info(service)
                    if info.key != (app.name, slug) or info.name != spec["Name"]:
                        raise SpawnError(
                            "a service with this session's name is in the way"
                        ) from exc
                    if info.state in ("running", "created"):
                        return info.container_id  # spawned meanwhile by another process
                    await self.remove(info.container_id)
                if loop.time() >= deadline:
                    raise SpawnError(
                        "your previous session is still being removed; try again shortly"
                    ) from exc
            await asyncio.sleep(0.2)

    async def _until_placed(self, app: AppConfig, service_id: str) -> SessionInfo:
        """Poll the service's task until it runs, ends, or waits too long for a node."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        delay = 0.05
        while True:
            service = await self._service(service_id)
            if service is None:
                raise SpawnError("the session was removed while it started")
            info, task = await self._info(service)
            if info.running and info.address is not None:
                return info
            if info.state in ("exited", "lost", "removing"):
                reason = pending_reason(task)
                log.warning("service %s ended while starting: %s", info.name, reason)
                if (task or {}).get("Status", {}).get("State") == "rejected":
                    # The node could not make the container (an image it lacks, a bind source
                    # missing there): no exit code to show. The reason may name host paths,
                    # so it goes to the log only.
                    await self.remove(service_id)
                    raise SpawnError("the machine chosen for your session could not start it")
                return info  # the app ran and stopped: the spawner reports code and output
            waited = loop.time() - start
            if "no suitable node" in pending_reason(task) and waited > CAPACITY_WAIT:
                await self.remove(service_id)
                raise SpawnError("no machine of this hub has room for your session right now")
            if waited > app.start_timeout:
                await self.remove(service_id)
                raise SpawnError(f"Swarm did not start the session within {app.start_timeout:g} s")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)

    async def remove(self, container_id: str) -> None:
        try:
            await self.docker.request("DELETE", f"/services/{quote(container_id)}")
        except DockerError as exc:
            if exc.status != 404:
                raise

    async def logs_tail(self, container_id: str) -> str:
        try:
            return await self.docker.logs_tail(container_id, kind="services")
        except Exception as exc:  # diagnostics only: never fail the caller
            return f"(no logs: {exc})"

    async def counters(self, container_id: str, pid: int = 0) -> Counters | None:
        """The session's latest sample from its node's collector (``node_counters.py``), on
        that node's clock; None without a fresh one. ``pid`` is the node's: not used here."""
        return (await self._samples()).get(container_id)

    async def _samples(self) -> dict[str, Counters]:
        """Every node's samples, read again at most every ``COUNTERS_TTL``: a reaper run or
        an admin page asks for every session in turn, and costs one read of each node's file.
        Read in a thread: the files are on a network filesystem, which may stall."""
        now = self.clock()
        if self._read_at is None or now - self._read_at >= COUNTERS_TTL:
            directory = self.config.backend.swarm.counters_dir
            self._collected = await asyncio.to_thread(read_samples, directory, time.time())
            self._read_at = now
        return self._collected

    async def events(self) -> AsyncIterator[SessionEvent]:
        """Sessions that start, end or vanish, from a listing every ``watch_interval``: the
        manager's event stream does not carry the containers of other nodes."""
        interval = self.config.backend.swarm.watch_interval
        before = {s.container_id: s for s in await self.list_sessions()}
        while True:
            await asyncio.sleep(interval)
            after = {s.container_id: s for s in await self.list_sessions()}
            for event in session_changes(before, after):
                yield event
            before = after

    async def close(self) -> None:
        await self.docker.close()
