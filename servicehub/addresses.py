"""Each session's address, chosen before its container exists, so its route can go live first.

Traefik rebuilds every router on each route change, which takes longer the more sessions run
(docs/benchmarks.md, "Scale"). If the route could only be written once Docker had handed the
container an address, a spawn would pay that rebuild on top of the container's start. With the
address chosen here the route is written first and Traefik loads it while Docker creates and
starts the container.

Docker assigns a requested address only on a network whose subnet was given when it was made,
so ``ensure_network`` asks Docker for a free subnet and then makes the app's network with it.
Addresses are handed out in a rolling sequence: an address is used again only after the pool
has come round, and then only if the network does not hold it. Together with the teardown order
(route removed before the container) no route can lead to another user's container.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote

from .docker_client import DockerClient, DockerError

log = logging.getLogger("servicehub.addresses")
LABEL = "servicehub"
PLANNED_LABEL = f"{LABEL}.addressing"  # "planned": made with a subnet, addresses can be asked for


class AddressPool:
    """The addresses of one app network: rolling, skipping those the network holds."""

    def __init__(self, subnet: str, in_use: Iterable[str] = ()) -> None:
        self.network = ipaddress.IPv4Network(subnet)
        if self.network.num_addresses < 8:
            raise ValueError(f"subnet {subnet} is too small for sessions")
        self._first = int(self.network.network_address) + 2  # .1 is the bridge's gateway
        self._last = int(self.network.broadcast_address) - 1
        self._next = self._first
        self.in_use: set[str] = set()
        self.refresh(in_use)

    def refresh(self, in_use: Iterable[str]) -> None:
        """What the network holds now; the sequence goes on after the highest of it."""
        self.in_use = set(in_use)
        held = [int(ipaddress.IPv4Address(a)) for a in self.in_use]
        if held and max(held) >= self._next:
            self._next = max(held) + 1 if max(held) < self._last else self._first

    def take(self) -> str | None:
        """The next free address, or None once the whole pool has been gone through."""
        for _ in range(self._last - self._first + 1):
            candidate = str(ipaddress.IPv4Address(self._next))
            self._next = self._next + 1 if self._next < self._last else self._first
            if candidate not in self.in_use:
                self.in_use.add(candidate)
                return candidate
        return None

    @property
    def wrapped(self) -> bool:
        return self._next == self._first


def network_addresses(data: dict[str, Any]) -> list[str]:
    """The IPv4 addresses a network inspect shows for its endpoints."""
    found = []
    for endpoint in (data.get("Containers") or {}).values():
        cidr = str(endpoint.get("IPv4Address") or "")
        if cidr:
            found.append(cidr.split("/")[0])
    return found


def planned_subnet(data: dict[str, Any]) -> str | None:
    """The subnet of a network made for planned addresses, else None."""
    if (data.get("Labels") or {}).get(PLANNED_LABEL) != "planned":
        return None
    configs = (data.get("IPAM") or {}).get("Config") or []
    for config in configs:
        subnet = config.get("Subnet")
        if subnet and ":" not in subnet:
            return str(subnet)
    return None


async def ensure_network(docker: DockerClient, name: str, labels: dict[str, str]) -> str | None:
    """Make the app network if missing; its subnet if addresses can be planned on it.

    An older network (made without a subnet) still holding containers is kept as it is: its
    sessions then get their route once Docker has given the container an address."""
    data = await _inspect(docker, name)
    if data is not None:
        subnet = planned_subnet(data)
        if subnet is not None or network_addresses(data):
            if subnet is None:
                log.warning(
                    "network %s was made without a subnet and still has containers: its new "
                    "sessions get their route after their container starts (slower with many "
                    "sessions) until it is empty when the daemon starts",
                    name,
                )
            return subnet
        await docker.request("DELETE", f"/networks/{quote(name)}")
    # Let Docker pick a subnet free of every other network and route, then claim it.
    await _create(docker, name, labels, subnet=None)
    data = await _inspect(docker, name) or {}
    subnet = next(
        (c["Subnet"] for c in (data.get("IPAM") or {}).get("Config") or [] if c.get("Subnet")),
        None,
    )
    if subnet is None:
        return None
    await docker.request("DELETE", f"/networks/{quote(name)}")
    await _create(docker, name, {**labels, PLANNED_LABEL: "planned"}, subnet=subnet)
    return str(subnet)


async def _inspect(docker: DockerClient, name: str) -> dict[str, Any] | None:
    try:
        data = await docker.request("GET", f"/networks/{quote(name)}")
    except DockerError as exc:
        if exc.status == 404:
            return None
        raise
    return dict(data)


async def _create(
    docker: DockerClient, name: str, labels: dict[str, str], subnet: str | None
) -> None:
    body: dict[str, Any] = {
        "Name": name,
        "CheckDuplicate": True,
        "Driver": "bridge",
        # Inter-container traffic off: users cannot reach each other.
        "Options": {"com.docker.network.bridge.enable_icc": "false"},
        "Labels": labels,
    }
    if subnet is not None:
        body["IPAM"] = {"Config": [{"Subnet": subnet}]}
    try:
        await docker.request("POST", "/networks/create", body=body)
    except DockerError as exc:
        if exc.status != 409:  # made meanwhile by another process
            raise


class AddressBook:
    """The planned addresses of every app network of the hub."""

    def __init__(self, docker: DockerClient) -> None:
        self.docker = docker
        self.pools: dict[str, AddressPool] = {}  # network name -> pool

    async def prepare(self, network: str, labels: dict[str, str]) -> None:
        subnet = await ensure_network(self.docker, network, labels)
        if subnet is None:
            self.pools.pop(network, None)
            return
        data = await _inspect(self.docker, network) or {}
        self.pools[network] = AddressPool(subnet, network_addresses(data))

    async def take(self, network: str) -> str | None:
        """An address for a new container on ``network``; None if it cannot be planned."""
        pool = self.pools.get(network)
        if pool is None:
            return None
        if pool.wrapped:  # about to reuse addresses: ask Docker what is held now
            data = await _inspect(self.docker, network) or {}
            pool.refresh(network_addresses(data))
        return pool.take()
