"""A container's network and CPU counters, read from the kernel's files.

The same numbers Docker's stats API reports (it reads these very files), without its cost:
the engine's stats collector answers on a one-second tick, so every reaper run would wait about
a second (and more past ~100 containers); reading the files takes microseconds per container.

- network: ``/proc/<pid>/net/dev`` of the container's main process shows its network namespace
  (received + sent bytes of every interface but ``lo``);
- CPU: the cgroup of that process (``/proc/<pid>/cgroup``): ``cpu.stat`` ``usage_usec`` on
  cgroup v2, ``cpuacct.usage`` (nanoseconds) on v1.

A PID is only trusted while its cgroup path names the container's id, so a PID reused by another
process after the container ended is never read as the container's.

The files are read with ``os.read`` on plain strings: through pathlib's objects and text files
the same three reads took ten times the kernel's own work, which at 2,000 sessions was most of
a reaper run.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PROC = Path("/proc")
CGROUP_ROOT = Path("/sys/fs/cgroup")
_CHUNK = 65536


# Not frozen, though never changed: built thousands of times a reaper run (docs/benchmarks.md).
@dataclass(slots=True)
class Counters:
    """One sample of a container's cumulative counters.

    A backend stamps ``read`` with the wall clock (unix time, as Docker's stats API does); the
    reaper re-stamps it on the monotonic clock (``sample_time``) before it computes a rate or
    keeps the sample, so a rate is always over monotonic seconds of one boot. A swarm node's
    collector (``node_counters.py``) stamps it with that node's monotonic clock and names the
    node's ``boot``: the reaper keeps such a time as it is, and compares it only with samples
    of the same boot."""

    read: float  # when the sample was taken: unix time from a backend, monotonic in the reaper
    net_bytes: int  # received + sent on all of the container's interfaces
    cpu_ns: int  # CPU time used since the container started
    pid: int = 0  # the container's main process they were read through; 0: Docker's API
    # Memory in use, when Docker's API gave the sample (the admin view's figure where the
    # daemon's sandbox hides the container's processes); not kept between reaper runs.
    memory_bytes: int | None = None
    # The boot id of the host on whose CLOCK_BOOTTIME ``read`` is; None: the reaper's clocks.
    boot: str | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "read": self.read,
            "net_bytes": self.net_bytes,
            "cpu_ns": self.cpu_ns,
            "pid": self.pid,
        }
        if self.boot is not None:
            data["boot"] = self.boot
        return data

    @classmethod
    def from_json(cls, data: object) -> Counters | None:
        if isinstance(data, dict):
            read, net, cpu = data.get("read"), data.get("net_bytes"), data.get("cpu_ns")
            pid, boot = data.get("pid", 0), data.get("boot")
            if (
                isinstance(read, (int, float))
                and isinstance(net, int)
                and isinstance(cpu, int)
                and isinstance(pid, int)
                and (boot is None or isinstance(boot, str))
            ):
                return cls(float(read), net, cpu, pid, boot=boot)
        return None


def read_small(path: str | Path) -> str:
    """A small kernel file (``/proc``, cgroup) whole, with plain system calls."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        # A read shorter than asked is the end: /proc's and cgroupfs' files hand over all
        # they have up to the size asked, so these small files take one call.
        data = chunk = os.read(fd, _CHUNK)
        while len(chunk) == _CHUNK:
            chunk = os.read(fd, _CHUNK)
            data += chunk
    finally:
        os.close(fd)
    return data.decode("utf-8", "replace")


def net_bytes(net_dev: str) -> int:
    """Received + sent bytes of every interface but loopback, from a ``/proc/net/dev`` text."""
    total = 0
    for line in net_dev.splitlines()[2:]:
        name, _, rest = line.partition(":")
        fields = rest.split()
        if name.strip() == "lo" or len(fields) < 9:
            continue
        total += int(fields[0]) + int(fields[8])
    return total


def cpu_file(cgroup: str, root: Path) -> tuple[str, int] | None:
    """The file with the cgroup's CPU time and its unit in nanoseconds, from a
    ``/proc/<pid>/cgroup`` text. Whether the file is there shows when it is read."""
    v2 = None
    for line in cgroup.splitlines():
        if not line.startswith("0::") and "cpuacct" not in line:
            continue  # cgroup v1 lists a dozen controllers: only these two lines matter
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        controllers, path = parts[1], parts[2].lstrip("/")
        if controllers == "":
            v2 = path
        elif "cpuacct" in controllers.split(","):
            mount = _cpuacct_mount(controllers, str(root))
            return (f"{root}/{mount}/{path}/cpuacct.usage", 1) if mount else None
    if v2 is not None and _unified(str(root)):
        return f"{root}/{v2}/cpu.stat", 1000
    return None


# The host's cgroup mounts, looked up once per process rather than once per container.
@functools.cache
def _cpuacct_mount(controllers: str, root: str) -> str | None:
    """The directory under ``root`` where cgroup v1's cpuacct controller is mounted."""
    for mount in (controllers, "cpuacct", "cpu,cpuacct"):
        if os.path.isdir(f"{root}/{mount}"):
            return mount
    return None


@functools.cache
def _unified(root: str) -> bool:
    """True if ``root`` is a cgroup v2 (unified) hierarchy."""
    return os.path.exists(f"{root}/cgroup.controllers")


def cpu_ns(file: str, unit: int) -> int:
    text = read_small(file)
    if file.endswith("/cpu.stat"):
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "usage_usec":
                return int(value) * unit
        raise ValueError(f"no usage_usec in {file}")
    return int(text.strip()) * unit


def container_cgroup(pid: int, container_id: str, proc: Path = PROC) -> str | None:
    """``/proc/<pid>/cgroup`` if ``pid`` is (still) a process of that container, else None.
    Raises OSError when it cannot be read."""
    if pid <= 0:
        return None
    cgroup = read_small(f"{proc}/{pid}/cgroup")
    return cgroup if container_id in cgroup else None


def read_counters(
    pid: int,
    container_id: str,
    *,
    proc: Path = PROC,
    cgroup_root: Path = CGROUP_ROOT,
    clock: Callable[[], float] = time.time,
) -> Counters | None:
    """The container's counters through its main process, or None if ``pid`` is not (or no
    longer) that container's or the files cannot be read here."""
    try:
        cgroup = container_cgroup(pid, container_id, proc)
        if cgroup is None:
            return None
        found = cpu_file(cgroup, cgroup_root)
        if found is None:
            return None
        read = clock()
        network = net_bytes(read_small(f"{proc}/{pid}/net/dev"))
        cpu = cpu_ns(*found)
    except (OSError, ValueError):
        return None
    return Counters(read=read, net_bytes=network, cpu_ns=cpu, pid=pid)
