"""The ``backend`` section of the config file: where sessions run (docs/cluster.md).

``docker`` (the default) runs every session as a container on this host. ``swarm`` runs each one
as a service of the Docker Swarm this host manages, so sessions spread over worker machines.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .config_section import ConfigError, Section

if TYPE_CHECKING:
    from .config import AppConfig

BACKENDS = ("docker", "swarm")
# Docker mounts every tmpfs noexec, nosuid and nodev: a service's mount only adds size and mode.
_TMPFS_OPTION_RE = re.compile(r"^(rw|noexec|nosuid|nodev|size=\d+[kmg]?|mode=[0-7]{3,4})$")


@dataclass(frozen=True)
class SwarmConfig:
    # Keep sessions off the manager (the hub) while the swarm has at least one worker.
    sessions_on_manager: bool = False
    # Share of each app's limits that Swarm reserves on the node it places a session on:
    # memory in full (a node never takes more sessions than it can hold), CPU a quarter
    # (sessions are idle most of the time; the limit still caps a busy one).
    memory_reservation: float = 1.0
    cpu_reservation: float = 0.25
    # How often the hub lists the swarm's tasks to notice sessions that ended (a dead worker).
    watch_interval: float = 10.0
    # Where each node's collector writes its sessions' counters (node_counters.py): a
    # directory every member of the swarm mounts at this same path.
    counters_dir: Path = Path("/var/lib/servicehub-counters")


@dataclass(frozen=True)
class BackendConfig:
    type: str = "docker"
    swarm: SwarmConfig = field(default_factory=SwarmConfig)


def parse_backend(section: Section) -> BackendConfig:
    kind = section.text(
        "type", "docker", pattern=re.compile(r"^(docker|swarm)$"), hint=" or ".join(BACKENDS)
    )
    sw = section.section("swarm")
    swarm = SwarmConfig(
        sessions_on_manager=sw.flag("sessions_on_manager", SwarmConfig.sessions_on_manager),
        memory_reservation=_share(sw, "memory_reservation", SwarmConfig.memory_reservation),
        cpu_reservation=_share(sw, "cpu_reservation", SwarmConfig.cpu_reservation),
        watch_interval=sw.duration("watch_interval", SwarmConfig.watch_interval),
        counters_dir=Path(sw.abs_path("counters_dir", str(SwarmConfig.counters_dir))),
    )
    sw.finish()
    section.finish()
    return BackendConfig(type=kind, swarm=swarm)


def _share(section: Section, name: str, default: float) -> float:
    value = section.raw(name, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ConfigError(section.key(name), f"must be a number from 0 to 1, got {value!r}")
    return float(value)


def swarm_unsupported(app: AppConfig) -> list[tuple[str, str]]:
    """The app's settings a Swarm service cannot carry (Docker Engine API 1.41), as (key, why).

    Refused when the file is loaded rather than dropped at spawn: a session must never run
    with less isolation, or fewer resources, than its configuration says.
    """
    key = f"apps.{app.name}"
    found = []
    if app.docker.devices:
        found.append((f"{key}.devices", "devices cannot be given to Swarm services"))
    if app.docker.gpus is not None:
        found.append((f"{key}.gpus", "GPUs are not supported with the swarm backend yet"))
    if app.docker.shm_size != 64 * 1024**2:
        found.append((f"{key}.shm_size", "a Swarm service keeps Docker's 64m /dev/shm"))
    for path, options in app.tmpfs.items():
        bad = [o for o in options.split(",") if o and not _TMPFS_OPTION_RE.match(o)]
        if bad:
            found.append(
                (
                    f"{key}.tmpfs.{path}",
                    f"a Swarm service's tmpfs is noexec, nosuid, nodev, with a size and "
                    f"mode; not {','.join(bad)}",
                )
            )
    if app.networks:
        found.append((f"{key}.networks", "extra networks are not joined on worker nodes yet"))
    if app.mounts.secrets:
        found.append((f"{key}.secrets", "secret files are not carried to worker nodes yet"))
    return found


def check_backend(backend: BackendConfig, apps: Mapping[str, AppConfig]) -> None:
    if backend.type != "swarm":
        return
    for app in apps.values():
        for key, why in swarm_unsupported(app):
            raise ConfigError(key, why)
