"""Users' and groups' directories made by root, for a daemon that may not hand them over itself.

The daemon runs as its own user and gives each new directory to the app's uid with
``CAP_CHOWN``. A shared filesystem (GlusterFS, NFS with root squash) checks a ``chown`` by the
caller's uid, not its capabilities, and refuses it. With ``dir_helper`` set, the daemon asks
``servicehub-dirs.service`` instead: root's, listening on a unix socket only the daemon's user
may open (systemd's ``servicehub-dirs.socket``), one JSON line in, one out:

    {"root": "volumes" | "groups", "name": "<one safe path component>", "app": "<app name>"}
    {"ok": true} | {"error": "<what went wrong>", "errno": <number or null>}

The helper reads the same configuration file and takes the owner from the app's ``user``: the
daemon names neither a path nor an owner, so the most a subverted daemon gets from it is an
empty 0700 directory for a configured app's user inside one of the two roots.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import stat
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .config import Config

log = logging.getLogger("servicehub.dirs")

ROOTS = ("volumes", "groups")
# What app volume names and group directory names are made of (config.volume templates, slugs).
_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,254}$")
_MAX_REQUEST = 4096
TIMEOUT = 10.0


class DirHelperError(OSError):
    """The helper refused or failed; ``errno`` as the helper reported it (None: not an OS
    error), so a full filesystem still reads as one."""


def root_path(config: Config, root: str) -> Path:
    if root == "volumes":
        return config.volumes_root
    if root == "groups":
        return Path(config.roots.groups)
    raise ValueError(f"root must be one of {', '.join(ROOTS)}")


def make_dir(config: Config, root: str, name: str, app_name: str) -> None:
    """``root/name`` as a new directory, mode 0700, owned by the app's uid:gid; an existing
    directory is left as it is. Never follows a symlink: not at the name, not for the owner."""
    if not isinstance(name, str) or not _NAME_RE.match(name) or name in (".", ".."):
        raise ValueError("name must be one path component of letters, digits, '_', '.', '-'")
    app = config.apps.get(app_name) if isinstance(app_name, str) else None
    if app is None:
        raise ValueError("app is not one of the configured apps")
    parent = os.open(root_path(config, root), os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        try:
            os.mkdir(name, 0o700, dir_fd=parent)
        except FileExistsError:
            found = os.stat(name, dir_fd=parent, follow_symlinks=False)
            if not stat.S_ISDIR(found.st_mode):
                raise ValueError(f"{name} exists and is not a directory") from None
            return
        os.chown(name, app.uid, app.gid, dir_fd=parent, follow_symlinks=False)
    finally:
        os.close(parent)


def answer(config: Config, line: bytes) -> dict[str, Any]:
    """The answer to one request line."""
    try:
        request = json.loads(line)
        if not isinstance(request, dict):
            raise ValueError("a request is a JSON object")
        make_dir(config, request.get("root", ""), request.get("name", ""), request.get("app", ""))
    except OSError as exc:
        log.error("cannot make %s: %s", line[:300], exc)
        return {"error": exc.strerror or str(exc), "errno": exc.errno}
    except ValueError as exc:
        log.warning("refused %s: %s", line[:300], exc)
        return {"error": str(exc), "errno": None}
    return {"ok": True}


def serve(load: Callable[[], Config], listener: socket.socket) -> None:
    """Answer connections on ``listener`` for ever, one request each, one at a time: each is
    a mkdir and a chown. The configuration is read for each request (a few milliseconds, once
    per new user): an app added or a user changed counts at once, with no restart."""
    while True:
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(TIMEOUT)
            try:
                line = conn.makefile("rb").readline(_MAX_REQUEST)
                try:
                    reply = answer(load(), line)
                except ValueError as exc:  # ConfigError: the file changed for the worse
                    log.error("cannot read the configuration: %s", exc)
                    reply = {"error": "the hub's configuration is unreadable", "errno": None}
                conn.sendall(json.dumps(reply).encode() + b"\n")
            except OSError as exc:
                log.warning("a request broke off: %s", exc)


def request_dir(socket_path: Path, root: str, name: str, app_name: str) -> None:
    """Ask the helper for ``root/name`` of ``app_name``; DirHelperError when it could not."""
    message = json.dumps({"root": root, "name": name, "app": app_name}).encode() + b"\n"
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(TIMEOUT)
            conn.connect(str(socket_path))
            conn.sendall(message)
            reply = json.loads(conn.makefile("rb").readline(_MAX_REQUEST) or b"{}")
    except (OSError, ValueError) as exc:
        raise DirHelperError(
            None, f"the directory helper at {socket_path} did not answer: {exc}"
        ) from exc
    if not isinstance(reply, dict):
        raise DirHelperError(None, f"the directory helper at {socket_path} answered {reply!r}")
    if reply.get("ok") is not True:
        code = reply.get("errno")
        raise DirHelperError(code if isinstance(code, int) else None, str(reply.get("error")))
