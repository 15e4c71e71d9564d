"""What an app's containers see of the host besides their own volume: the configuration.

Three kinds, each from one operator-chosen root (docs/app-contract.md, "Mounts"):
- ``datasets``: read-only directories under one of ``datasets_roots``;
- ``group_dirs``: one directory per (app, group) in ``groups_root``, writable, mounted only into
  containers of the group's members (the groups header of the request that spawned them);
- ``secrets``: files in ``secrets_dir``, mounted read-only at ``/run/secrets/<NAME>`` with
  ``<NAME>_FILE`` in the environment, so a value never shows in ``docker inspect``.

Host paths are a root plus names that cannot climb out of it (a plain relative path for
datasets, a slug for groups, a file name for secrets). This module checks what the file says;
``host_mounts`` checks the host itself (symlinks, file types) at start and at every spawn.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .config_section import ConfigError, Section, plain_abs_path
from .identity import make_slug

SECRETS_DIR = "/run/secrets"
# Container paths no mount may cover: the kernel's and Docker's own files, and the hub's secrets.
RESERVED_TARGETS = ("/proc", "/sys", "/dev", SECRETS_DIR)
DOCKER_FILES = ("/etc/hosts", "/etc/hostname", "/etc/resolv.conf")
# Host trees no dataset root may be in: kernel interfaces, devices, sockets and runtime state.
SYSTEM_TREES = ("/proc", "/sys", "/dev", "/run", "/var/run", "/boot")
_SECRET_FILE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Hashing the group name under its own namespace keeps group slugs apart from user slugs.
_GROUP_NAMESPACE = "servicehub-group"


def inside(path: str, tree: str) -> bool:
    """``path`` is ``tree`` or below it (both plain absolute paths)."""
    return path == tree or path.startswith(tree.rstrip("/") + "/")


def overlaps(a: str, b: str) -> bool:
    return inside(a, b) or inside(b, a)


@dataclass(frozen=True)
class HostRoots:
    """The hub-wide host directories app mounts may come from."""

    datasets: tuple[str, ...] = ()
    groups: str = "/var/lib/servicehub/groups"
    secrets: str = "/etc/servicehub/secrets"


@dataclass(frozen=True)
class Dataset:
    source: str  # absolute host path, inside one of HostRoots.datasets
    mount: str


@dataclass(frozen=True)
class GroupDir:
    group: str  # as the groups header sends it
    mount: str
    read_only: bool

    def host_name(self, app: str) -> str:
        """``<app>-<group slug>``: safe whatever characters the group name has."""
        return f"{app}-{make_slug(_GROUP_NAMESPACE, self.group)}"


@dataclass(frozen=True)
class Secret:
    name: str  # the environment variable the app reads <name>_FILE of
    file: str  # a file name in HostRoots.secrets

    @property
    def mount(self) -> str:
        return f"{SECRETS_DIR}/{self.name}"


@dataclass(frozen=True)
class AppMounts:
    datasets: tuple[Dataset, ...] = ()
    group_dirs: tuple[GroupDir, ...] = ()
    secrets: tuple[Secret, ...] = ()

    def environment(self) -> dict[str, str]:
        """Where each secret is: ``<NAME>_FILE=/run/secrets/<NAME>``, never its value."""
        return {f"{s.name}_FILE": s.mount for s in self.secrets}


def parse_roots(top: Section, hub_paths: dict[str, str]) -> HostRoots:
    """``datasets_roots``, ``groups_root``, ``secrets_dir``. ``hub_paths`` (key: path) are the
    hub's own directories and its Docker socket, which no dataset root may expose."""
    defaults = HostRoots()
    groups = top.abs_path("groups_root", defaults.groups)
    secrets = top.abs_path("secrets_dir", defaults.secrets)
    if overlaps(groups, hub_paths["volumes_root"]):
        raise ConfigError("groups_root", "must not be inside volumes_root, nor contain it")
    hub_paths = {**hub_paths, "groups_root": groups, "secrets_dir": secrets}
    raw = top.raw("datasets_roots", [])
    if not isinstance(raw, list):
        raise ConfigError("datasets_roots", "must be a list of absolute paths")
    roots = []
    for index, value in enumerate(raw):
        key = f"datasets_roots[{index}]"
        root = plain_abs_path(value, key)
        for tree in SYSTEM_TREES:
            if overlaps(root, tree):
                raise ConfigError(key, f"{root} overlaps {tree}: system files, never a dataset")
        for name, path in hub_paths.items():
            if overlaps(root, path):
                raise ConfigError(key, f"{root} overlaps {name} ({path}): the hub's own files")
        roots.append(root)
    return HostRoots(datasets=tuple(roots), groups=groups, secrets=secrets)


def parse_mounts(s: Section, roots: HostRoots) -> AppMounts:
    """An app's ``datasets``, ``group_dirs`` and ``secrets``."""
    return AppMounts(
        datasets=tuple(_dataset(d, roots) for d in s.sections("datasets")),
        group_dirs=tuple(_group_dir(g) for g in s.sections("group_dirs")),
        secrets=_secrets(s.section("secrets")),
    )


def _target(s: Section) -> str:
    mount: str = s.abs_path("mount")
    for reserved in RESERVED_TARGETS:
        if overlaps(mount, reserved):
            raise ConfigError(s.key("mount"), f"{mount} overlaps {reserved}, which the hub keeps")
    if mount in DOCKER_FILES:
        raise ConfigError(s.key("mount"), f"{mount} is written by Docker")
    return mount


def _dataset(d: Section, roots: HostRoots) -> Dataset:
    source: str = d.abs_path("source")
    if not any(inside(source, root) for root in roots.datasets):
        allowed = ", ".join(roots.datasets) or "none: set datasets_roots"
        raise ConfigError(d.key("source"), f"{source} is not inside datasets_roots ({allowed})")
    mount = _target(d)
    # Shared by every user of the app: writable, it would let users change each other's data.
    if d.flag("read_only", True) is not True:
        raise ConfigError(
            d.key("read_only"), "datasets are read-only; use group_dirs for shared writable data"
        )
    d.finish()
    return Dataset(source=source, mount=mount)


def _group_dir(g: Section) -> GroupDir:
    group = g.text("group", hint="a group name as the groups header sends it")
    if not group or group != group.strip() or any(ord(c) < 0x20 or c == "," for c in group):
        raise ConfigError(g.key("group"), f"invalid group name {group!r}")
    found = GroupDir(group=group, mount=_target(g), read_only=g.flag("read_only", False))
    g.finish()
    return found


def _secrets(sec: Section) -> tuple[Secret, ...]:
    found = []
    for name in sec.data:
        key = sec.key(str(name))
        if not isinstance(name, str) or not _ENV_NAME_RE.match(name):
            raise ConfigError(key, "invalid variable name")
        if name.startswith("SERVICEHUB_"):
            raise ConfigError(key, "SERVICEHUB_* is set by the hub")
        file = sec.text(name, pattern=_SECRET_FILE_RE, hint="a file name in secrets_dir")
        found.append(Secret(name=name, file=file))
    return tuple(found)


def check_targets(app_key: str, targets: dict[str, str]) -> None:
    """No two of an app's mounts (key: container path) at or inside one another: the inner one
    would be made inside the outer, e.g. as a root-owned directory in a user's volume."""
    items = sorted(targets.items(), key=lambda kv: kv[1])
    for index, (key, path) in enumerate(items):
        for other_key, other in items[index + 1 :]:
            if overlaps(path, other):
                raise ConfigError(f"{app_key}.{other_key}", f"{other} overlaps {key} ({path})")


def check_environment(app_key: str, mounts: AppMounts, environment: dict[str, str]) -> None:
    """A secret's variable and its ``_FILE`` are the hub's to set, not also ``environment``'s."""
    for secret in mounts.secrets:
        for name in (secret.name, f"{secret.name}_FILE"):
            if name in environment:
                raise ConfigError(
                    f"{app_key}.environment.{name}", f"set by secrets.{secret.name}: remove it"
                )
