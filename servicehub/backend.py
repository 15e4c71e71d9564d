"""Where user containers run. The rest of servicehub only talks to ``Backend``.

Docker labels are the session state: everything ``SessionInfo`` holds is read back from the
engine, so a restarted daemon (or the CLI) sees exactly what is running. A Swarm backend
implements the same protocol with services instead of containers (``swarm.py``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote

from .addresses import AddressBook
from .config import AppConfig, Config
from .counters import Counters, read_counters
from .docker_client import DockerClient, DockerError
from .host_mounts import MountError, session_mounts
from .session_info import LABEL, SessionInfo, hub_filter, session_from_engine
from .session_key import SessionKey, app_network
from .times import iso_now_ms, parse_iso

log = logging.getLogger("servicehub.backend")
# How long a spawn waits for an old container of the same session to finish being removed
# (the reaper, an operator's `docker rm -f`) before it gives up with an error page.
CONFLICT_WAIT = 15.0


@dataclass(frozen=True)
class SessionEvent:
    action: str  # start, die, destroy
    container_id: str
    app: str
    slug: str
    exit_code: int | None

    @property
    def key(self) -> SessionKey:
        return SessionKey(self.app, self.slug)


class SpawnError(RuntimeError):
    """The container could not be created or started; the text is safe to show the user."""


class Backend(Protocol):
    async def prepare(self) -> None: ...
    async def plan_address(self, app: str) -> str | None: ...
    async def has_room(self, app: AppConfig, placing: list[AppConfig]) -> bool: ...
    async def list_sessions(self, detailed: bool = True) -> list[SessionInfo]: ...
    async def get(self, app: str, slug: str) -> SessionInfo | None: ...
    async def spawn(
        self,
        app: AppConfig,
        user: str,
        slug: str,
        address: str | None = None,
        groups: frozenset[str] = frozenset(),
    ) -> SessionInfo: ...
    async def remove(self, container_id: str) -> None: ...
    async def logs_tail(self, container_id: str) -> str: ...
    async def counters(self, container_id: str, pid: int = 0) -> Counters | None: ...
    def events(self) -> AsyncIterator[SessionEvent]: ...
    async def close(self) -> None: ...


def counters_from_stats(data: Any) -> Counters | None:
    """The parts of Docker's stats document the reaper uses. A stopped container reports a zero
    read time and no CPU: None then."""
    if not isinstance(data, dict):
        return None
    read = parse_iso(str(data.get("read") or ""))
    if read is None or read.year < 2000:
        return None
    networks = data.get("networks") or {}
    net = sum(
        int(n.get("rx_bytes", 0)) + int(n.get("tx_bytes", 0))
        for n in networks.values()
        if isinstance(n, dict)
    )
    cpu = int(((data.get("cpu_stats") or {}).get("cpu_usage") or {}).get("total_usage", 0))
    return Counters(
        read=read.timestamp(), net_bytes=net, cpu_ns=cpu, memory_bytes=memory_in_use(data)
    )


def memory_in_use(data: dict[str, Any]) -> int | None:
    """Memory as ``docker stats`` shows it: usage less the page cache the kernel can drop."""
    memory = data.get("memory_stats") or {}
    usage = memory.get("usage")
    if not isinstance(usage, int):
        return None
    stats = memory.get("stats") or {}
    inactive = stats.get("inactive_file", stats.get("total_inactive_file", 0))
    return max(0, usage - int(inactive or 0))


def session_environment(app: AppConfig, user: str, slug: str) -> dict[str, str]:
    """A session's environment, whichever backend runs it (docs/app-contract.md)."""
    env = dict(app.environment) | app.mounts.environment()
    env.update(
        {
            "SERVICEHUB_USER": user,
            "SERVICEHUB_SLUG": slug,
            "SERVICEHUB_APP": app.name,
            "SERVICEHUB_BASE_URL": app.path_prefix,
            "SERVICEHUB_PORT": str(app.port),
        }
    )
    if app.volume is not None:
        env["SERVICEHUB_DATA_DIR"] = app.volume.mount
    return env


def session_labels(hub: str, app: AppConfig, user: str, slug: str) -> dict[str, str]:
    """The labels that make a container (or a service) a session of the hub: its state."""
    return {
        **app.docker.labels,  # none of them servicehub.* (config): the hub's come last
        f"{LABEL}.hub": hub,
        f"{LABEL}.app": app.name,
        f"{LABEL}.slug": slug,
        f"{LABEL}.user": user,
        f"{LABEL}.created": iso_now_ms(),
    }


def container_spec(
    hub: str, app: AppConfig, user: str, slug: str, address: str | None = None
) -> dict[str, Any]:
    """The Docker create request of a session's container (docs/daemon.md, "User containers")."""
    network = app_network(hub, app.name)
    env = session_environment(app, user, slug)
    host_config: dict[str, Any] = {
        "NetworkMode": network,
        "Memory": app.limits.memory_bytes,
        "MemorySwap": app.limits.memory_bytes,  # no swap on top of the cap
        "NanoCpus": int(app.limits.cpus * 1e9),
        "PidsLimit": app.limits.pids,
        "ReadonlyRootfs": app.read_only,
        "Tmpfs": dict(app.tmpfs),
        "CapDrop": ["ALL"],
        "SecurityOpt": ["no-new-privileges:true"],
        "RestartPolicy": {"Name": "no"},
        "Mounts": [],
        **app.docker.host_config(),  # shm, ulimits, sysctls, devices, GPUs, allowed caps
    }
    # The address its route was written with, before the container existed (addresses.py).
    endpoint = {"IPAMConfig": {"IPv4Address": address}} if address else {}
    spec: dict[str, Any] = {
        "Image": app.image,
        "User": f"{app.uid}:{app.gid}",
        "Env": [f"{k}={v}" for k, v in sorted(env.items())],
        "Labels": session_labels(hub, app, user, slug),
        "ExposedPorts": {f"{app.port}/tcp": {}},
        "HostConfig": host_config,
        "NetworkingConfig": {"EndpointsConfig": {network: endpoint}},
    }
    if app.entrypoint is not None:
        spec["Entrypoint"] = app.entrypoint
    if app.command is not None:
        spec["Cmd"] = app.command
    return spec


class DockerBackend:
    def __init__(self, config: Config, client: DockerClient | None = None) -> None:
        self.config = config
        self.docker = client or DockerClient(config.docker_socket)
        self.addresses = AddressBook(self.docker)

    def _hub_filter(self, **extra: str) -> str:
        return hub_filter(self.config.hub, **extra)

    async def prepare(self) -> None:
        """One network per app with inter-container traffic off: users cannot reach each other."""
        for app in self.config.apps:
            labels = {f"{LABEL}.hub": self.config.hub, f"{LABEL}.app": app}
            await self.addresses.prepare(app_network(self.config.hub, app), labels)

    async def plan_address(self, app: str) -> str | None:
        """The address the next container of ``app`` gets (``addresses.py``), if plannable."""
        return await self.addresses.take(app_network(self.config.hub, app))

    async def has_room(self, app: AppConfig, placing: list[AppConfig]) -> bool:
        # One machine: the capacity limits (admission.py) are the operator's word on room.
        return True

    def _info(self, data: dict[str, Any]) -> SessionInfo:
        return session_from_engine(self.config.hub, data)

    async def list_sessions(self, detailed: bool = True) -> list[SessionInfo]:
        """The hub's containers. ``detailed=False`` skips one inspect per container (exit codes
        stay 0): one API call for the reaper, however many sessions there are."""
        found = await self.docker.request(
            "GET", "/containers/json", params={"all": "1", "filters": self._hub_filter()}
        )
        if not detailed:
            return [self._info(item) for item in found]
        # The list view lacks exit codes; inspect each for the full picture.
        sessions = []
        for item in found:
            info = await self.inspect(item["Id"])
            if info is not None:
                sessions.append(info)
        return sessions

    async def inspect(self, container_id: str) -> SessionInfo | None:
        try:
            data = await self.docker.request("GET", f"/containers/{quote(container_id)}/json")
        except DockerError as exc:
            if exc.status == 404:
                return None
            raise
        return self._info(data)

    async def get(self, app: str, slug: str) -> SessionInfo | None:
        return await self.inspect(SessionKey(app, slug).container(self.config.hub))

    async def spawn(
        self,
        app: AppConfig,
        user: str,
        slug: str,
        address: str | None = None,
        groups: frozenset[str] = frozenset(),
    ) -> SessionInfo:
        """Create and start the user's container (at ``address`` if given); a running one of
        this session is reused, whatever its address. ``groups``: the user's, from the request
        that spawns it; the container gets the directories of those among ``group_dirs``."""
        name = SessionKey(app.name, slug).container(self.config.hub)
        spec = container_spec(self.config.hub, app, user, slug, address)
        try:
            # A thread: the root helper may make a directory on a slow shared filesystem.
            spec["HostConfig"]["Mounts"] = await asyncio.to_thread(
                session_mounts, self.config, app, slug, groups
            )
        except MountError as exc:
            raise SpawnError(str(exc)) from exc
        container_id = await self._create(app, slug, name, spec)
        for network in app.networks:
            try:
                await self.docker.request(
                    "POST", f"/networks/{quote(network)}/connect", body={"Container": container_id}
                )
            except DockerError as exc:
                if "already exists" not in exc.message:
                    raise SpawnError(f"could not join network {network} ({exc.message})") from exc
        try:
            await self.docker.request("POST", f"/containers/{quote(container_id)}/start")
        except DockerError as exc:
            if exc.status != 304:  # 304: already started
                raise SpawnError(f"the container could not start ({exc.message})") from exc
        info = await self.inspect(container_id)
        if info is None:
            raise SpawnError("the container vanished right after it started")
        return info

    async def _create(self, app: AppConfig, slug: str, name: str, spec: dict[str, Any]) -> str:
        """Create the container; on a name conflict adopt a running one of this very session,
        remove a stopped one, and wait out one that is being removed (then create again)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CONFLICT_WAIT
        delay = 0.05
        while True:
            try:
                created = await self.docker.request(
                    "POST", "/containers/create", params={"name": name}, body=spec
                )
                return str(created["Id"])
            except DockerError as exc:
                if exc.status == 404:
                    raise SpawnError(f"the image {app.image} is not available on this hub") from exc
                if exc.status != 409:
                    raise SpawnError(f"the container could not be created ({exc.message})") from exc
                existing = await self.inspect(name)
                if existing is not None and (
                    existing.key != (app.name, slug)
                    or name != existing.key.container(self.config.hub)
                ):
                    raise SpawnError("a container with this session's name is in the way") from exc
                if existing is not None and existing.running:
                    return existing.container_id  # spawned meanwhile by another process
                if existing is not None and existing.state not in ("removing", "dead"):
                    # A stopped container of this session: start fresh (new created label).
                    await self.remove(existing.container_id)
                if loop.time() >= deadline:
                    raise SpawnError(
                        "your previous container is still being removed; try again shortly"
                    ) from exc
            await asyncio.sleep(delay)  # back-off between create attempts, not a wait for a state
            delay = min(delay * 2, 0.5)

    async def counters(self, container_id: str, pid: int = 0) -> Counters | None:
        """Network bytes and CPU time so far; None if not running.

        From the kernel's files through the container's main process (``pid``, the one of the
        last sample, or asked from the engine), else from Docker's stats API (which answers on
        its collector's one-second tick).
        """
        found = read_counters(pid, container_id) if pid else None
        if found is None:
            found = read_counters(await self._pid(container_id), container_id)
        return found if found is not None else await self._stats(container_id)

    async def _pid(self, container_id: str) -> int:
        try:
            data = await self.docker.request("GET", f"/containers/{quote(container_id)}/json")
        except DockerError as exc:
            if exc.status == 404:
                return 0
            raise
        return int((data.get("State") or {}).get("Pid") or 0)

    async def _stats(self, container_id: str) -> Counters | None:
        try:
            data = await self.docker.request(
                "GET",
                f"/containers/{quote(container_id)}/stats",
                params={"stream": "false", "one-shot": "true"},
                timeout=20,
            )
        except DockerError as exc:
            if exc.status in (404, 409):
                return None
            raise
        return counters_from_stats(data)

    async def remove(self, container_id: str) -> None:
        try:
            await self.docker.request(
                "DELETE", f"/containers/{quote(container_id)}", params={"force": "1"}
            )
        except DockerError as exc:
            if exc.status not in (404, 409):  # gone, or removal already in progress
                raise

    async def logs_tail(self, container_id: str) -> str:
        try:
            return await self.docker.logs_tail(container_id)
        except Exception as exc:  # diagnostics only: never fail the caller
            return f"(no logs: {exc})"

    async def events(self) -> AsyncIterator[SessionEvent]:
        filters = {
            "type": ["container"],
            "event": ["start", "die", "destroy"],
            "label": [f"{LABEL}.hub={self.config.hub}"],
        }
        async for event in self.docker.events(filters):
            attrs = (event.get("Actor") or {}).get("Attributes") or {}
            exit_code = attrs.get("exitCode")
            yield SessionEvent(
                action=event.get("Action", ""),
                container_id=event.get("id", ""),
                app=attrs.get(f"{LABEL}.app", ""),
                slug=attrs.get(f"{LABEL}.slug", ""),
                exit_code=int(exit_code) if exit_code is not None else None,
            )

    async def close(self) -> None:
        await self.docker.close()
