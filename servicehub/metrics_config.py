"""The ``metrics`` section of the config file: where the daemon serves /metrics and where the
reaper leaves its figures for node-exporter (docs/operations.md)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from .config_section import ConfigError, Section

DEFAULT_PORT = 9181


@dataclass(frozen=True)
class MetricsConfig:
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    # Label sessions by the user's slug (servicehub_user_session): off, as it names people.
    per_user: bool = False
    # The reaper's textfile for node-exporter's textfile collector; None: not written.
    textfile: Path | None = None


def parse_metrics(section: Section, listen_port: int) -> MetricsConfig:
    host = section.text("host", MetricsConfig.host)
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        raise ConfigError(section.key("host"), f"must be an IP address, got {host!r}") from None
    if not loopback:
        raise ConfigError(section.key("host"), "must be a loopback address")
    port = section.integer("port", DEFAULT_PORT, low=1, high=65535)
    if port == listen_port:
        # Traefik routes to listen.port: /metrics must never be reachable through it.
        raise ConfigError(section.key("port"), "must differ from listen.port")
    textfile = section.abs_path("textfile", None)
    if textfile is not None and not str(textfile).endswith(".prom"):
        raise ConfigError(section.key("textfile"), "must end in .prom (node-exporter reads those)")
    metrics = MetricsConfig(
        host=host,
        port=port,
        per_user=section.flag("per_user", False),
        textfile=Path(textfile) if textfile is not None else None,
    )
    section.finish()
    return metrics
