"""The Docker settings an app may tune, and the ones no configuration can reach.

Each setting is checked here and turned into its part of the container's ``HostConfig``
(docs/app-contract.md, "Docker settings"). Read-only root, ``cap-drop ALL`` and
``no-new-privileges`` are the backend's and cannot be changed; what would weaken the isolation
between users or from the host is refused by name (``FORBIDDEN``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from .config_section import ConfigError, Section, parse_size

# Keys refused outright, with the reason the error gives.
FORBIDDEN = {
    "privileged": "a privileged container has every device and capability of the host",
    "network_mode": "containers stay on the app's own network (host networking would expose "
    "the hub's loopback services)",
    "pid_mode": "a shared PID namespace lets a container see and signal host processes",
    "ipc_mode": "a shared IPC namespace lets a container reach host shared memory",
    "uts_mode": "the host's UTS namespace lets a container rename the host",
    "userns_mode": "the host's user namespace cannot be chosen per app",
    "security_opt": "seccomp, AppArmor and no-new-privileges are the hub's, not the app's",
    "cap_drop": "every capability is dropped; cap_add (from a short allow-list) adds some back",
    "binds": "host directories come from datasets and group_dirs only",
    "volumes": "host directories come from datasets and group_dirs only",
}
# Capabilities an app may add back: a subset of Docker's own default set. None of them
# reaches the kernel, another container, the bridge's traffic (NET_RAW) or device nodes (MKNOD).
CAPABILITIES = frozenset(
    {"CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "NET_BIND_SERVICE", "SETGID", "SETUID"}
)
# Namespaced sysctls (the container's own network namespace) an app may set.
SYSCTLS = frozenset(
    {
        "net.ipv4.ip_unprivileged_port_start",
        "net.ipv4.ping_group_range",
        "net.core.somaxconn",
        "net.ipv4.tcp_keepalive_time",
        "net.ipv4.tcp_keepalive_intvl",
        "net.ipv4.tcp_keepalive_probes",
    }
)
_SYSCTL_VALUE_RE = re.compile(r"^\d{1,10}( \d{1,10})?$")
ULIMITS = {"nofile": 1 << 20, "nproc": 1 << 22}  # the kernel's nr_open default; pid_max limit
# Device nodes an app may be given: GPUs and accelerators, cameras, sound, serial adapters.
_DEVICE_RE = re.compile(
    r"^/dev/(dri/(card|renderD)\d+|nvidia(\d+|ctl|-uvm|-uvm-tools|-modeset)|kfd"
    r"|video\d+|snd/[A-Za-z0-9]+|ttyUSB\d+|ttyACM\d+)$"
)
_GPU_CAPABILITIES = frozenset(
    {"gpu", "compute", "utility", "graphics", "video", "display", "compat32"}
)
# Label prefixes that belong to the hub, Docker and Traefik (which would route on them).
RESERVED_LABELS = ("servicehub.", "com.docker.", "io.docker.", "org.dockerproject.", "traefik.")
_LABEL_RE = re.compile(r"^[a-z0-9]([a-z0-9._/-]{0,126}[a-z0-9])?$")


@dataclass(frozen=True)
class Device:
    host: str
    container: str
    permissions: str  # cgroup permissions: r, w, m


@dataclass(frozen=True)
class GpuRequest:
    count: int  # -1: all; 0 when device_ids are given
    device_ids: tuple[str, ...]
    capabilities: tuple[str, ...]
    driver: str


@dataclass(frozen=True)
class DockerSettings:
    shm_size: int = 64 * 1024**2  # Docker's own default, stated
    ulimits: dict[str, tuple[int, int]] = field(default_factory=dict)  # name: (soft, hard)
    sysctls: dict[str, str] = field(default_factory=dict)
    devices: tuple[Device, ...] = ()
    gpus: GpuRequest | None = None
    cap_add: tuple[str, ...] = ()
    labels: dict[str, str] = field(default_factory=dict)

    def host_config(self) -> dict[str, Any]:
        """This app's part of the container's ``HostConfig`` (Docker Engine API names)."""
        config: dict[str, Any] = {
            "ShmSize": self.shm_size,
            "Ulimits": [
                {"Name": name, "Soft": soft, "Hard": hard}
                for name, (soft, hard) in sorted(self.ulimits.items())
            ],
            "Sysctls": dict(self.sysctls),
            "Devices": [
                {
                    "PathOnHost": d.host,
                    "PathInContainer": d.container,
                    "CgroupPermissions": d.permissions,
                }
                for d in self.devices
            ],
            "CapAdd": list(self.cap_add),
        }
        if self.gpus is not None:
            config["DeviceRequests"] = [
                {
                    "Driver": self.gpus.driver,
                    "Count": self.gpus.count,
                    "DeviceIDs": list(self.gpus.device_ids),
                    "Capabilities": [list(self.gpus.capabilities)],
                    "Options": {},
                }
            ]
        return config


def parse_docker_settings(s: Section, memory_bytes: int) -> DockerSettings:
    """An app's Docker settings; ``memory_bytes`` (its memory limit) caps ``shm_size``."""
    for key, reason in FORBIDDEN.items():
        if key in s.data:
            raise ConfigError(s.key(key), f"refused: {reason}")
    shm_size = parse_size(s.raw("shm_size", "64m"), s.key("shm_size"))
    if shm_size > memory_bytes:  # /dev/shm is memory the container is charged for
        raise ConfigError(s.key("shm_size"), "must not exceed limits.memory")
    return DockerSettings(
        shm_size=shm_size,
        ulimits=_ulimits(s.section("ulimits")),
        sysctls=_sysctls(s.section("sysctls")),
        devices=tuple(_device(d) for d in s.sections("devices")),
        gpus=_gpus(s),
        cap_add=_cap_add(s),
        labels=_labels(s.section("labels")),
    )


def _ulimits(u: Section) -> dict[str, tuple[int, int]]:
    found = {}
    for name in list(u.data):
        if name not in ULIMITS:
            raise ConfigError(u.key(str(name)), f"only {', '.join(sorted(ULIMITS))} may be set")
        if isinstance(u.data[name], dict):
            pair = u.section(name)
            soft = pair.integer("soft", low=1, high=ULIMITS[name])
            hard = pair.integer("hard", low=1, high=ULIMITS[name])
            pair.finish()
            if soft > hard:
                raise ConfigError(pair.key("soft"), "must not exceed hard")
        else:
            soft = hard = u.integer(name, low=1, high=ULIMITS[name])
        found[name] = (soft, hard)
    return found


def _sysctls(sc: Section) -> dict[str, str]:
    found = {}
    for name, value in sc.data.items():
        key = sc.key(str(name))
        if name not in SYSCTLS:
            raise ConfigError(key, f"not in the allowed sysctls: {', '.join(sorted(SYSCTLS))}")
        text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
        if not isinstance(text, str) or not _SYSCTL_VALUE_RE.match(text):
            raise ConfigError(key, f"must be a number or two separated by a space, got {value!r}")
        found[str(name)] = text
    return found


def _device(d: Section) -> Device:
    host = d.text("path", hint="a device node like /dev/dri/renderD128")
    if not _DEVICE_RE.match(host):
        raise ConfigError(
            d.key("path"), f"{host} is not an allowed device (GPUs, video, sound, serial)"
        )
    container = d.text("container_path", host, pattern=_DEVICE_RE, hint="a /dev path")
    permissions = d.text(
        "permissions", "rw", pattern=re.compile(r"^(r|rw|rwm)$"), hint="r, rw or rwm"
    )
    d.finish()
    return Device(host=host, container=container, permissions=permissions)


def _gpus(s: Section) -> GpuRequest | None:
    if s.raw("gpus", None) is None:
        return None
    g = s.section("gpus")
    device_ids = tuple(g.str_list("device_ids", pattern=re.compile(r"^[A-Za-z0-9:_.-]{1,64}$")))
    count_raw = g.raw("count", None if device_ids else "all")
    if count_raw is not None and device_ids:
        raise ConfigError(g.key("count"), "give count or device_ids, not both")
    count = 0 if device_ids else (-1 if count_raw == "all" else g.integer("count", low=1, high=64))
    capabilities = tuple(g.str_list("capabilities") or ["gpu"])
    for index, cap in enumerate(capabilities):
        if cap not in _GPU_CAPABILITIES:
            raise ConfigError(f"{g.key('capabilities')}[{index}]", f"unknown capability {cap!r}")
    driver = g.text("driver", "", pattern=re.compile(r"^[a-z0-9.-]{0,32}$"), hint="like nvidia")
    g.finish()
    return GpuRequest(count, device_ids, capabilities, driver)


def _cap_add(s: Section) -> tuple[str, ...]:
    found = []
    for index, cap in enumerate(s.str_list("cap_add")):
        name = cap.upper().removeprefix("CAP_")
        if name not in CAPABILITIES:
            raise ConfigError(
                f"{s.key('cap_add')}[{index}]",
                f"{cap} is not allowed; only {', '.join(sorted(CAPABILITIES))}",
            )
        found.append(name)
    return tuple(found)


def _labels(lab: Section) -> dict[str, str]:
    found = {}
    for name, value in lab.data.items():
        key = lab.key(str(name))
        if not isinstance(name, str) or not _LABEL_RE.match(name):
            raise ConfigError(key, "label keys are lower-case, like org.example.course")
        if name.startswith(RESERVED_LABELS):
            raise ConfigError(key, f"{name} is reserved: the hub's, Docker's or Traefik's")
        if not isinstance(value, (str, int, float, bool)) or len(str(value)) > 4096:
            raise ConfigError(key, "must be a string of at most 4096 characters")
        found[name] = str(value)
    return found
