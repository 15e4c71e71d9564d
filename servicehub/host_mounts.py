"""An app's mounts on the host: checked when the configuration is loaded, made at each spawn.

The configuration only says which root and which safe name (``app_mounts``); here the host
answers. Every path is resolved (``realpath``) and must still be inside its root, so a symlink
planted in a dataset root cannot lead a mount out of it, and is resolved again at each spawn
(the bind source is the resolved path: what was checked is what Docker mounts).
"""

from __future__ import annotations

import errno
import logging
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .app_mounts import Dataset, Secret, inside
from .config_section import ConfigError
from .dir_helper import request_dir, root_path
from .journal import event as journal_fields

if TYPE_CHECKING:  # config imports this module to check the host when it loads a file
    from .config import AppConfig, Config

log = logging.getLogger("servicehub.backend")
# Errors that say the volumes file system is out of room (or quota), not that the hub is broken.
_STORAGE_FULL = {errno.ENOSPC, errno.EDQUOT}


class MountError(RuntimeError):
    """A mount cannot be made; the text is safe to show the user (no host paths)."""


def check_host(config: Config) -> None:
    """Refuse, naming the key, a mount whose host path is missing, of the wrong kind, or a
    symlink out of its root. Run where the daemon runs (``load_config``), not on the Ansible
    controller, whose files are not the host's. Device nodes are not looked at: the daemon's
    unit has a private /dev, and their allow-list names only nodes the kernel and udev make."""
    for app in config.apps.values():
        key = f"apps.{app.name}"
        for index, dataset in enumerate(app.mounts.datasets):
            try:
                dataset_source(config, dataset)
            except MountError as exc:
                raise ConfigError(f"{key}.datasets[{index}].source", str(exc)) from None
        for secret in app.mounts.secrets:
            try:
                secret_source(config, secret)
            except MountError as exc:
                raise ConfigError(f"{key}.secrets.{secret.name}", str(exc)) from None


def dataset_source(config: Config, dataset: Dataset) -> str:
    """The dataset's directory, resolved, inside the resolved root it was configured under."""
    found = os.path.realpath(dataset.source)
    roots = [os.path.realpath(r) for r in config.roots.datasets if inside(dataset.source, r)]
    if not any(inside(found, root) for root in roots):
        raise MountError(f"{dataset.source} leads out of its datasets_roots entry (to {found})")
    if _overlaps_hub(config, found):
        raise MountError(f"{dataset.source} leads to the hub's own files ({found})")
    if not os.path.isdir(found):
        raise MountError(f"{dataset.source} is not a directory")
    return found


def secret_source(config: Config, secret: Secret) -> str:
    """The secret's file in ``secrets_dir``, resolved: a regular file, inside it."""
    root = os.path.realpath(config.roots.secrets)
    found = os.path.realpath(os.path.join(config.roots.secrets, secret.file))
    if not inside(found, root):
        raise MountError(f"{secret.file} leads out of secrets_dir (to {found})")
    if not os.path.isfile(found):
        raise MountError(f"{secret.file} is not a file in secrets_dir ({config.roots.secrets})")
    return found


def _overlaps_hub(config: Config, path: str) -> bool:
    """A resolved dataset must not show the hub's own files: its socket, state, volumes."""
    own = [config.docker_socket, config.volumes_root, config.state_dir, config.traefik.routes_dir]
    own += [Path(config.roots.groups), Path(config.roots.secrets)]
    resolved = [os.path.realpath(p) for p in own]
    return any(inside(path, p) or inside(p, path) for p in resolved)


def session_mounts(
    config: Config, app: AppConfig, slug: str, groups: frozenset[str]
) -> list[dict[str, Any]]:
    """The bind mounts of one session's container: volume, datasets, its groups', secrets."""
    mounts = []
    volume = volume_source(config, app, slug)
    if volume is not None and app.volume is not None:
        mounts.append(_bind(volume, app.volume.mount, app.volume.read_only))
    try:
        for dataset in app.mounts.datasets:
            mounts.append(_bind(Path(dataset_source(config, dataset)), dataset.mount, True))
        for secret in app.mounts.secrets:
            mounts.append(_bind(secret_copy(config, app, secret), secret.mount, True))
    except (MountError, OSError) as exc:
        log.error("app %s: a mount is not available: %s", app.name, exc)
        raise MountError("a shared dataset or secret of this app is not available") from exc
    for group_dir in app.mounts.group_dirs:
        if group_dir.group in groups:  # non-members never see it, not even empty
            path = owned_dir(config, "groups", group_dir.host_name(app.name), app)
            mounts.append(_bind(path, group_dir.mount, group_dir.read_only))
    return mounts


def _bind(source: Path, target: str, read_only: bool) -> dict[str, Any]:
    return {"Type": "bind", "Source": str(source), "Target": target, "ReadOnly": read_only}


def volume_source(config: Config, app: AppConfig, slug: str) -> Path | None:
    """The user's data directory on the host, made (owned by the app's user) on first use."""
    name = app.volume_name(slug)
    if name is None:
        return None
    return owned_dir(config, "volumes", name, app)


def owned_dir(config: Config, root: str, name: str, app: AppConfig) -> Path:
    """``name`` in the ``root`` ("volumes" or "groups"), made on first use with mode 0700 and
    owned by the app's uid:gid (every container of an app runs as that user, so all of them,
    and nobody else, may use it): by the daemon with CAP_CHOWN, or by root's ``dir_helper``
    where the filesystem checks a chown by uid (a shared one: docs/cluster.md)."""
    parent = root_path(config, root)
    path = parent / name
    if not path.exists():
        try:
            if config.dir_helper is not None:
                request_dir(config.dir_helper, root, name, app.name)
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                # Create then hand over: the app user must own its data, not root.
                path.mkdir(mode=0o700)
                os.chown(path, app.uid, app.gid)
        except OSError as exc:
            raise volume_error(parent, path, exc) from exc
    return path


def secret_copy(config: Config, app: AppConfig, secret: Secret) -> Path:
    """A copy of the secret only the app's user can read (mode 0400), in the daemon's state.

    The source stays readable by the daemon only; a fresh copy per spawn (renamed into place)
    means a changed secret reaches new containers, while running ones keep the file they got.
    """
    source = secret_source(config, secret)
    directory = config.state_dir / "secrets" / app.name
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    target = directory / secret.name
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{secret.name}.")
    try:
        with os.fdopen(fd, "wb") as out, open(source, "rb") as src:
            out.write(src.read())
            os.fchmod(out.fileno(), 0o400)
            os.fchown(out.fileno(), app.uid, app.gid)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def volume_error(root: Path, path: Path, exc: OSError) -> MountError:
    """A user's or group's directory could not be made: one error line for the operator
    (journal), a reason for the user's error page without the host's paths."""
    if exc.errno in _STORAGE_FULL:
        log.error(
            "volumes file system full: cannot create %s (%s); free space under %s",
            path,
            exc.strerror,
            root,
            extra=journal_fields("storage-full", volumes_root=str(root), path=str(path)),
        )
        return MountError(
            "there is no room left for your data on this hub; its operators have been told"
        )
    log.error("cannot create the data directory %s: %s", path, exc)
    return MountError("your data directory could not be created; its operators have been told")
