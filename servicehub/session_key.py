"""A session's identity, and every name derived from it.

A session is one user's container of one app on one hub: within a hub it is the pair (app,
slug), which the container's labels record. Every name the hub gives a session on disk, in
Docker and in Traefik is derived here and nowhere else, from the hub, app and slug only (all
``[a-z0-9-]``, safe by construction: docs/daemon.md, "Identity and names"). A running hub keeps
these names across upgrades: its containers, route files, lock files and ``reaper.json`` must be
recognised by the next version, so a unit test pins each one to its literal.
"""

from __future__ import annotations

from typing import NamedTuple

# Traefik names a router of its file provider ``<name>@file`` in its API and its access log.
PROVIDER = "file"


def app_network(hub: str, app: str) -> str:
    """The app's Docker network (one per app, shared by its sessions)."""
    return f"{hub}-{app}"


def route_file_prefix(hub: str) -> str:
    """What every session route file of the hub starts with (to find orphans)."""
    return f"{hub}-session-"


class SessionKey(NamedTuple):
    """One session of a hub. A tuple, so it is a dict key and compares with ``(app, slug)``."""

    app: str
    slug: str

    def container(self, hub: str) -> str:
        """The container's name (Docker keeps it unique: a second guard against two spawns)."""
        return f"{hub}-{self.app}-{self.slug}"

    def network(self, hub: str) -> str:
        return app_network(hub, self.app)

    def router(self, hub: str) -> str:
        """The router (and service) name inside the session's route file."""
        return f"{hub}-{self.app}-{self.slug}"

    def provider_router(self, hub: str) -> str:
        """The router as Traefik's API and access log name it: with its provider."""
        return f"{self.router(hub)}@{PROVIDER}"

    def background_router(self, hub: str) -> str:
        """The session's second router, for its pages' background requests (``routes.py``):
        its own name in the access log, so the reaper never counts them as activity."""
        return f"{self.router(hub)}-background"

    def route_file(self, hub: str) -> str:
        """The session's file in Traefik's file-provider directory."""
        return f"{route_file_prefix(hub)}{self.app}-{self.slug}.yml"

    @property
    def lock_file(self) -> str:
        """The session's lock in ``<state_dir>/locks``; app names and slugs have no ".", so
        the file names of two sessions never meet."""
        return f"{self.app}.{self.slug}.lock"

    @property
    def state_key(self) -> str:
        """The session's entry in the reaper's ``reaper.json``."""
        return f"{self.app}/{self.slug}"
