"""The ``capacity`` section of the config file: how many sessions may run, and start, at once.

Every limit is off (0) by default. A session over a hub-wide or per-app limit waits in order
on its wait page; a person over the per-user limit is told to stop a session first
(``admission.py``, docs/daemon.md "Capacity").
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field

from .config_section import ConfigError, Section


@dataclass(frozen=True)
class CapacityConfig:
    max_sessions: int = 0  # running sessions on the hub, all apps together
    max_sessions_per_user: int = 0  # one person's sessions, all apps together
    max_concurrent_spawns: int = 0  # sessions starting at once (a login storm waits in order)
    per_app: dict[str, int] = field(default_factory=dict)  # one app's running sessions

    def app_limit(self, app: str) -> int:
        return self.per_app.get(app, 0)


def parse_capacity(section: Section, apps: Collection[str]) -> CapacityConfig:
    max_sessions = section.integer("max_sessions", 0)
    per_user = section.integer("max_sessions_per_user", 0)
    spawns = section.integer("max_concurrent_spawns", 0)
    per_app_section = section.section("per_app")
    per_app = {}
    for name in [str(k) for k in per_app_section.data]:
        if name not in apps:
            raise ConfigError(
                per_app_section.key(name), f"no app named {name!r} (apps: {', '.join(apps)})"
            )
        per_app[name] = per_app_section.integer(name, 0)
    per_app_section.finish()
    section.finish()
    return CapacityConfig(max_sessions, per_user, spawns, per_app)
