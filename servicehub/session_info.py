"""A session as the engine reports it: ``SessionInfo``, read back from a container's labels.

Docker labels are the session state: everything ``SessionInfo`` holds comes from the engine's
answer, so a restarted daemon (or the CLI) sees exactly what is running. The standard library
only: the operator's commands import it without the daemon's HTTP stack (``docker_api.py``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .session_key import SessionKey, app_network
from .times import parse_iso

LABEL = "servicehub"
EPOCH = datetime.fromtimestamp(0, UTC)  # a container without a readable created label


# Not frozen, though never changed: built thousands of times a reaper run (docs/benchmarks.md).
@dataclass
class SessionInfo:
    container_id: str
    name: str
    app: str
    slug: str
    user: str
    created: datetime
    state: str  # Docker's: created, running, exited, ...
    exit_code: int
    address: str | None  # IP on the app's network, or the node's (Swarm: docs/cluster.md)
    # Where the app listens at ``address`` when it is not the app's own port: the host port a
    # Swarm task publishes on its node. None: the app's port, on the app's network.
    port: int | None = None

    @property
    def running(self) -> bool:
        return self.state == "running"

    def url(self, app_port: int) -> str | None:
        """Where Traefik, the probes and the hand-over reach the app; None without an address."""
        if self.address is None:
            return None
        return f"http://{self.address}:{self.port or app_port}"

    @property
    def key(self) -> SessionKey:
        return SessionKey(self.app, self.slug)


def hub_filter(hub: str, **extra: str) -> str:
    """The engine's ``filters`` for this hub's containers (and ``extra`` labels)."""
    labels = [f"{LABEL}.hub={hub}"] + [f"{LABEL}.{k}={v}" for k, v in extra.items()]
    return json.dumps({"label": labels})


def identity_from_labels(labels: dict[str, str]) -> dict[str, Any]:
    """The session's app, slug, user and spawn time from the hub's labels (on a container or
    a Swarm service alike)."""
    return {
        "app": labels.get(f"{LABEL}.app", ""),
        "slug": labels.get(f"{LABEL}.slug", ""),
        "user": labels.get(f"{LABEL}.user", ""),
        "created": parse_iso(labels.get(f"{LABEL}.created", "")) or EPOCH,
    }


def session_from_engine(hub: str, data: dict[str, Any]) -> SessionInfo:
    """A session from a container's inspect answer or its entry in the engine's list."""
    labels = data.get("Config", {}).get("Labels") or data.get("Labels") or {}
    app = labels.get(f"{LABEL}.app", "")
    networks = (data.get("NetworkSettings") or {}).get("Networks") or {}
    address = (networks.get(app_network(hub, app)) or {}).get("IPAddress") or None
    state = data.get("State")
    if isinstance(state, dict):
        status, exit_code = state.get("Status", ""), int(state.get("ExitCode", 0))
    else:
        status, exit_code = str(state or ""), 0
    name = data.get("Name") or (data.get("Names") or [""])[0]
    return SessionInfo(
        container_id=data["Id"],
        name=name.lstrip("/"),
        **identity_from_labels(labels),
        state=status,
        exit_code=exit_code,
        address=address,
    )
