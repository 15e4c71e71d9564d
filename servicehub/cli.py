"""Command line: the daemon and the operator's tools.

Every failure an operator can meet (bad or unreadable config, Docker or Traefik unreachable,
a file the command may not write) ends in one line on stderr and an exit status from
``EXIT_STATUS``; ``-v`` adds the traceback. Read commands take ``--json``: their shapes are
documented in docs/daemon.md ("Operating") and kept stable.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import sys
import traceback
from collections.abc import Coroutine, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from . import __version__
from .activity import Verdict
from .config import DEFAULT_CONFIG_PATH, Config, ConfigError, load_config
from .docker_api import DockerError, DockerUnreachable, get_json
from .identity import make_slug
from .journal import setup_logging
from .reaper_state import ReaperBusy, load_state, state_path
from .session_info import SessionInfo, hub_filter, session_from_engine
from .times import human, iso

if TYPE_CHECKING:
    from .backend import Backend
    from .reaper_report import Row

# The daemon's and the reaper's modules (aiohttp and all it brings) are imported by the
# commands that use them: `servicehub sessions` starts in a fraction of the time without them.

# One meaning per status, whatever the command.
EXIT_OK = 0
EXIT_FAILED = 1  # the operation failed: a removal, no such session, a file not writable
EXIT_USAGE = 2  # bad usage or bad configuration (argparse's own status for bad usage)
EXIT_UNREACHABLE = 3  # Docker or Traefik cannot be reached
EXIT_BUSY = 75  # EX_TEMPFAIL: another reaper run holds the lock, try again later
# EX_NOPERM: set by the host's /usr/local/bin/servicehub wrapper, never by this program: the
# caller is neither root, the daemon's account nor in the operators group.
EXIT_NOT_ALLOWED = 77
EXIT_INTERRUPTED = 130
EXIT_STATUS = {
    EXIT_OK: "success",
    EXIT_FAILED: "the operation failed (a removal, no such session, a file not writable)",
    EXIT_USAGE: "bad usage or bad configuration (the message names the key)",
    EXIT_UNREACHABLE: "Docker or Traefik unreachable (the message names the socket or URL)",
    EXIT_BUSY: "another reaper run is in progress: try again later",
    EXIT_NOT_ALLOWED: "not allowed (host wrapper): only root and the operators group may run it",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C)",
}
CONFIG_ENV = "SERVICEHUB_CONFIG"
T = TypeVar("T")


def _config(args: argparse.Namespace) -> Config:
    return load_config(Path(args.config), os.environ)


def _run_async(work: Coroutine[Any, Any, T]) -> T:
    import asyncio  # here: the read-only commands run without it

    return asyncio.run(work)


def _dump(data: Any) -> None:
    # One write: json.dump would call write() once per token (100,000 at 2,000 sessions).
    sys.stdout.write(json.dumps(data, indent=2) + "\n")


def cmd_check_config(args: argparse.Namespace) -> int:
    try:
        config = _config(args)
    except ConfigError as exc:
        if args.json:
            message = _one_line(str(exc)).removeprefix(f"{exc.key}: ")
            _dump({"config": args.config, "ok": False, "key": exc.key, "error": message})
        raise
    if args.json:
        _dump({"config": args.config, "ok": True, "hub": config.hub, "apps": sorted(config.apps)})
        return EXIT_OK
    print(f"{args.config}: OK ({len(config.apps)} app(s): {', '.join(sorted(config.apps))})")
    return EXIT_OK


def make_backend(config: Config) -> Backend:
    """Where sessions run: this host's engine, or the swarm it manages (``backend.type``)."""
    from .backend import DockerBackend

    if config.backend.type == "swarm":
        from .swarm import SwarmBackend

        return SwarmBackend(config)
    return DockerBackend(config)


def cmd_run(args: argparse.Namespace) -> int:
    # Imported here: the reaper, run every minute, starts faster without the web server.
    from aiohttp import web

    from .metrics import serving
    from .routes import RouteStore
    from .server import make_app
    from .sessions import SessionManager

    config = _config(args)
    # Fail fast, with one line, before the web server starts: without Docker it can do nothing.
    _run_async(_ping(config))
    backend = make_backend(config)
    manager = SessionManager(config, backend, RouteStore(config))
    logging.getLogger("servicehub").info(
        "servicehub %s listening on %s", __version__, config.daemon_url
    )
    app = make_app(config, manager)
    app.cleanup_ctx.append(serving(config, manager))  # /metrics on its own port
    web.run_app(
        app,
        host=config.listen_host,
        port=config.listen_port,
        print=None,
        access_log=None,
        handle_signals=True,
    )
    return EXIT_OK


async def _ping(config: Config) -> None:
    from .docker_client import DockerClient

    client = DockerClient(config.docker_socket)
    try:
        await client.request("GET", "/_ping", timeout=10)
    finally:
        await client.close()


def _list(config: Config) -> list[SessionInfo]:
    """The hub's sessions as the engine lists them: one call, however many sessions. On this
    host's engine through the standard library (no aiohttp to import: docs/daemon.md)."""
    if config.backend.type == "swarm":
        return _run_async(_list_through_backend(config))
    params = {"all": "1", "filters": hub_filter(config.hub)}
    found = get_json(config.docker_socket, "/containers/json", params)
    return [session_from_engine(config.hub, item) for item in found]


async def _list_through_backend(config: Config) -> list[SessionInfo]:
    backend = make_backend(config)
    try:
        return await backend.list_sessions(detailed=False)
    finally:
        await backend.close()


def cmd_sessions(args: argparse.Namespace) -> int:
    config = _config(args)
    sessions = sorted(_list(config), key=lambda s: (s.app, s.user))
    try:
        known = load_state(state_path(config)).sessions
    except OSError:  # not readable by this user: the columns stay empty
        known = {}
    rows = []
    for s in sessions:
        record = known.get(s.key.state_key)
        last = record.last if record and record.container_id == s.container_id else None
        rows.append(
            {
                "user": s.user,
                "slug": s.slug,
                "app": s.app,
                "container": s.name,
                "started": iso(s.created.timestamp()),  # UTC with Z, like last_activity
                "state": s.state,
                # As of the reaper's last run; a session it has not seen yet shows nothing.
                "last_activity": iso(last.time) if last else None,
                "source": last.source if last else None,
            }
        )
    if args.json:
        _dump(rows)
        return EXIT_OK
    _table(rows, ["user", "app", "container", "started", "state", "last_activity", "source"])
    return EXIT_OK


def _table(rows: Sequence[Mapping[str, object]], columns: list[str]) -> None:
    def cell(row: Mapping[str, object], column: str) -> str:
        value = row[column]
        return "-" if value is None else _printable(str(value))

    widths = {c: max([len(c)] + [len(cell(r, c)) for r in rows]) for c in columns}
    print("  ".join(c.upper().replace("_", " ").ljust(widths[c]) for c in columns).rstrip())
    for row in rows:
        print("  ".join(cell(row, c).ljust(widths[c]) for c in columns).rstrip())


async def _reap(config: Config, dry_run: bool) -> list[Row]:
    from .reaper import Reaper
    from .routes import RouteStore

    backend = make_backend(config)
    try:
        return await Reaper(config, backend, RouteStore(config)).run(dry_run=dry_run)
    finally:
        await backend.close()


def cmd_reap(args: argparse.Namespace) -> int:
    config = _config(args)
    # A run lasts a second and frees nothing worth a pass: the collector's passes over the
    # thousands of objects it keeps per run cost about 5% of the run at 2,000 sessions.
    gc.disable()
    try:
        rows = _run_async(_reap(config, args.dry_run))
    finally:
        gc.enable()
    if args.json:
        _dump([r.to_json() for r in rows])
    elif not args.quiet:
        table = [
            {
                "user": r.user,
                "app": r.app,
                "container": r.container,
                "last_activity": iso(r.last_activity) if r.last_activity else None,
                "source": r.source,
                "idle_for": human(r.idle_for),
                "decision": r.shown(args.dry_run),
                "reason": r.reason,
            }
            for r in rows
        ]
        columns = ["user", "app", "container", "last_activity", "source", "idle_for"]
        _table(table, [*columns, "decision", "reason"])
    return EXIT_FAILED if any(r.decision is Verdict.ERROR for r in rows) else EXIT_OK


def _printable(value: str) -> str:
    # A user id may hold anything: never let it move the operator's cursor.
    return value.encode("unicode_escape").decode("ascii") if not value.isprintable() else value


async def _stop(config: Config, user: str, app: str | None) -> int:
    from .locks import SessionLocks
    from .probes import Http
    from .routes import RouteStore
    from .teardown import Teardown

    backend = make_backend(config)
    http = Http()
    teardown = Teardown(
        config.hub,
        config.traefik.api_url,
        backend,
        RouteStore(config),
        SessionLocks.of_hub(config.state_dir),
        http,
    )
    stopped = 0
    try:
        for info in await backend.list_sessions(detailed=False):
            if user not in (info.user, info.slug) or (app is not None and info.app != app):
                continue
            # Whatever container the session has by then: an operator stops the session.
            await teardown.stop(info.key)
            print(f"stopped {info.name}")
            stopped += 1
    finally:
        await http.close()
        await backend.close()
    return stopped


def cmd_stop(args: argparse.Namespace) -> int:
    config = _config(args)
    if args.app is not None and args.app not in config.apps:
        apps = ", ".join(sorted(config.apps))
        _error(f"no app named {args.app!r} in {args.config} (apps: {apps})")
        return EXIT_USAGE
    stopped = _run_async(_stop(config, args.user, args.app))
    if stopped == 0:
        slug = make_slug(config.identity.issuer, args.user)
        _error(f"no session for {args.user!r} (slug {slug})")
        return EXIT_FAILED
    return EXIT_OK


def cmd_dir_helper(args: argparse.Namespace) -> int:
    """Root's directory helper (dir_helper.py): serves the socket systemd hands over."""
    import socket

    from .dir_helper import serve

    _config(args)  # a bad file stops it here, naming the key
    if os.environ.get("LISTEN_PID") != str(os.getpid()) or os.environ.get("LISTEN_FDS") != "1":
        _error("dir-helper runs from servicehub-dirs.socket: systemd passes it one socket")
        return EXIT_USAGE
    serve(lambda: _config(args), socket.socket(fileno=3))  # SD_LISTEN_FDS_START
    return EXIT_OK


def _common_options(*, on_subcommand: bool) -> argparse.ArgumentParser:
    """-c and -v, accepted before and after the subcommand. The subcommand's copy has no
    default (SUPPRESS), so it only overrides the top-level value when given."""
    parent = argparse.ArgumentParser(add_help=False)
    default_config = os.environ.get(CONFIG_ENV) or str(DEFAULT_CONFIG_PATH)
    parent.add_argument(
        "-c",
        "--config",
        metavar="FILE",
        default=argparse.SUPPRESS if on_subcommand else default_config,
        help=f"config file (default: ${CONFIG_ENV}, else {DEFAULT_CONFIG_PATH})",
    )
    parent.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=argparse.SUPPRESS if on_subcommand else False,
        help="debug logging, and the traceback of a failure",
    )
    return parent


def _epilog() -> str:
    codes = "\n".join(f"  {code:<4} {meaning}" for code, meaning in EXIT_STATUS.items())
    return (
        f"exit status:\n{codes}\n\n"
        "Errors are one line on stderr; -v adds the traceback. --json output of the read\n"
        "commands (sessions, reap, check-config) is described in docs/daemon.md."
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="servicehub",
        description="One container of a web app per authenticated user.",
        epilog=_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[_common_options(on_subcommand=False)],
    )
    parser.add_argument("--version", action="version", version=f"servicehub {__version__}")
    common = [_common_options(on_subcommand=True)]
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, summary: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=summary, description=summary, parents=common)

    def json_flag(p: argparse.ArgumentParser, shape: str) -> None:
        p.add_argument("--json", action="store_true", help=f"machine-readable output: {shape}")

    command("run", "run the daemon").set_defaults(func=cmd_run)
    p = command("sessions", "list sessions (from Docker labels)")
    json_flag(p, "a list with one object per session")
    p.set_defaults(func=cmd_sessions)
    p = command("stop", "stop a user's session(s); the persistent volume is kept")
    p.add_argument("user", help="the user id (as in the identity header) or the session slug")
    p.add_argument("app", nargs="?", help="only this app")
    p.set_defaults(func=cmd_stop)
    p = command(
        "reap", "remove idle or expired sessions (the systemd timer runs this); volumes stay"
    )
    p.add_argument("--dry-run", action="store_true", help="decide and report, change nothing")
    json_flag(p, "a list with one object per session and its decision")
    p.add_argument(
        "--quiet",
        action="store_true",
        help="no table (the timer's way: the log has the summary and every changed decision)",
    )
    p.set_defaults(func=cmd_reap)
    p = command("dir-helper", "make users' directories as root for the daemon (a systemd unit)")
    p.set_defaults(func=cmd_dir_helper)
    p = command("check-config", "validate the config file and exit")
    json_flag(p, "one object, ok true or false (then with the key and the error)")
    p.set_defaults(func=cmd_check_config)
    return parser


def _one_line(text: str) -> str:
    """Multi-line messages (a YAML parser's, an engine's) folded into one line; a parser's
    caret lines point at nothing once folded, so they go."""
    lines = [line.strip() for line in text.splitlines()]
    return "; ".join(line for line in lines if line.strip("^ ")).replace(":; ", ": ")


def _error(message: str) -> None:
    print(f"servicehub: {_printable(_one_line(message))}", file=sys.stderr)


def _failure(exc: Exception) -> tuple[int, str]:
    """The exit status and the one line an operator sees for a command that raised."""
    if isinstance(exc, ConfigError):
        return EXIT_USAGE, f"configuration error: {exc}"
    if isinstance(exc, ReaperBusy):
        return EXIT_BUSY, f"{exc}; not started"
    if isinstance(exc, DockerUnreachable):
        return EXIT_UNREACHABLE, str(exc)
    aiohttp = sys.modules.get("aiohttp")  # loaded only by the commands that use HTTP peers
    if aiohttp is not None and isinstance(exc, aiohttp.ClientConnectorError):  # Traefik's API
        from .docker_client import unreachable_reason

        return EXIT_UNREACHABLE, f"cannot reach {exc.host}:{exc.port}: {unreachable_reason(exc)}"
    if isinstance(exc, DockerError):
        return EXIT_FAILED, str(exc)
    if isinstance(exc, OSError) and exc.strerror:
        reason = exc.strerror[:1].lower() + exc.strerror[1:]
        return EXIT_FAILED, f"{exc.filename}: {reason}" if exc.filename else reason
    return EXIT_FAILED, f"{type(exc).__name__}: {exc}"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose, os.environ)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except Exception as exc:
        code, message = _failure(exc)
        if args.verbose:
            traceback.print_exc()
        elif code == EXIT_FAILED and not isinstance(exc, (OSError, DockerError)):
            message += " (-v shows where)"
        _error(message)
        return code
