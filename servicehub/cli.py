"""Command line: the daemon and the operator's tools."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC
from pathlib import Path

from . import __version__
from .activity import human, iso
from .backend import DockerBackend, SessionInfo
from .config import DEFAULT_CONFIG_PATH, Config, ConfigError, load_config
from .identity import make_slug
from .journal import setup_logging
from .locks import SessionLocks
from .reaper import ERROR, Reaper, ReaperBusy, Row, state_path
from .reaper_state import load_state, session_key
from .routes import RouteStore
from .sessions import LOCK_TIMEOUT, SessionManager


def _config(args: argparse.Namespace) -> Config:
    return load_config(Path(args.config), os.environ)


def cmd_check_config(args: argparse.Namespace) -> int:
    config = _config(args)
    print(f"{args.config}: OK ({len(config.apps)} app(s): {', '.join(sorted(config.apps))})")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    # Imported here: the reaper, run every minute, starts faster without the web server.
    from aiohttp import web

    from .server import make_app

    config = _config(args)
    backend = DockerBackend(config)
    manager = SessionManager(config, backend, RouteStore(config))
    logging.getLogger("servicehub").info(
        "servicehub %s listening on %s", __version__, config.daemon_url
    )
    web.run_app(
        make_app(config, manager),
        host=config.listen_host,
        port=config.listen_port,
        print=None,
        access_log=None,
        handle_signals=True,
    )
    return 0


async def _list(config: Config) -> list[SessionInfo]:
    backend = DockerBackend(config)
    try:
        return await backend.list_sessions()
    finally:
        await backend.close()


def cmd_sessions(args: argparse.Namespace) -> int:
    config = _config(args)
    sessions = sorted(asyncio.run(_list(config)), key=lambda s: (s.app, s.user))
    try:
        known = load_state(state_path(config)).sessions
    except OSError:  # not readable by this user: the columns stay empty
        known = {}
    rows = []
    for s in sessions:
        record = known.get(session_key(s.app, s.slug))
        last = record.last if record and record.container_id == s.container_id else None
        rows.append(
            {
                "user": s.user,
                "slug": s.slug,
                "app": s.app,
                "container": s.name,
                "started": s.created.astimezone(UTC).isoformat(timespec="seconds"),
                "state": s.state,
                # As of the reaper's last run; a session it has not seen yet shows nothing.
                "last_activity": iso(last.time) if last else None,
                "source": last.source if last else None,
            }
        )
    if args.json:
        json.dump(rows, sys.stdout, indent=2)
        print()
        return 0
    _table(rows, ["user", "app", "container", "started", "state", "last_activity", "source"])
    return 0


def _table(rows: Sequence[Mapping[str, object]], columns: list[str]) -> None:
    def cell(row: Mapping[str, object], column: str) -> str:
        value = row[column]
        return "-" if value is None else _printable(str(value))

    widths = {c: max([len(c)] + [len(cell(r, c)) for r in rows]) for c in columns}
    print("  ".join(c.upper().replace("_", " ").ljust(widths[c]) for c in columns).rstrip())
    for row in rows:
        print("  ".join(cell(row, c).ljust(widths[c]) for c in columns).rstrip())


async def _reap(config: Config, dry_run: bool) -> list[Row]:
    backend = DockerBackend(config)
    try:
        return await Reaper(config, backend, RouteStore(config)).run(dry_run=dry_run)
    finally:
        await backend.close()


def cmd_reap(args: argparse.Namespace) -> int:
    config = _config(args)
    try:
        rows = asyncio.run(_reap(config, args.dry_run))
    except ReaperBusy as exc:
        print(f"servicehub: {exc}; not started", file=sys.stderr)
        return 75  # EX_TEMPFAIL: try again later
    if args.json:
        json.dump([r.to_json() for r in rows], sys.stdout, indent=2)
        print()
    else:
        table = [
            {
                "user": r.user,
                "app": r.app,
                "container": r.container,
                "last_activity": iso(r.last_activity) if r.last_activity else None,
                "source": r.source,
                "idle_for": human(r.idle_for),
                "decision": ("would reap" if args.dry_run and r.decision == "reap" else r.decision),
                "reason": r.reason,
            }
            for r in rows
        ]
        columns = ["user", "app", "container", "last_activity", "source", "idle_for"]
        _table(table, [*columns, "decision", "reason"])
    return 1 if any(r.decision == ERROR for r in rows) else 0


def _printable(value: str) -> str:
    # A user id may hold anything: never let it move the operator's cursor.
    return value.encode("unicode_escape").decode("ascii") if not value.isprintable() else value


async def _stop(config: Config, user: str, app: str | None) -> int:
    backend = DockerBackend(config)
    routes = RouteStore(config)
    locks = SessionLocks(config.state_dir / "locks")
    stopped = 0
    try:
        for info in await backend.list_sessions():
            if user not in (info.user, info.slug) or (app is not None and info.app != app):
                continue
            # Like the reaper: the route first, under the lock a spawn of this session takes.
            async with locks.hold(info.app, info.slug, LOCK_TIMEOUT):
                routes.remove_session(info.app, info.slug)
                await backend.remove(info.container_id)
            print(f"stopped {info.name}")
            stopped += 1
    finally:
        await backend.close()
    return stopped


def cmd_stop(args: argparse.Namespace) -> int:
    config = _config(args)
    if args.app is not None and args.app not in config.apps:
        raise ConfigError("app", f"no app named {args.app!r} in {args.config}")
    stopped = asyncio.run(_stop(config, args.user, args.app))
    if stopped == 0:
        slug = make_slug(config.identity.issuer, args.user)
        print(f"no session for {args.user!r} (slug {slug})", file=sys.stderr)
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="servicehub", description="One container of a web app per authenticated user."
    )
    parser.add_argument("--version", action="version", version=f"servicehub {__version__}")
    parser.add_argument(
        "-c",
        "--config",
        default=os.environ.get("SERVICEHUB_CONFIG", str(DEFAULT_CONFIG_PATH)),
        help="config file (default: %(default)s)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="run the daemon").set_defaults(func=cmd_run)
    p = sub.add_parser("sessions", help="list sessions (from Docker labels)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_sessions)
    p = sub.add_parser("stop", help="stop a user's session(s); the persistent volume is kept")
    p.add_argument("user", help="the user id (as in the identity header) or the session slug")
    p.add_argument("app", nargs="?", help="only this app")
    p.set_defaults(func=cmd_stop)
    p = sub.add_parser(
        "reap", help="remove idle or expired sessions (the systemd timer runs this); volumes stay"
    )
    p.add_argument("--dry-run", action="store_true", help="decide and report, change nothing")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_reap)
    p = sub.add_parser("check-config", help="validate the config file and exit")
    p.set_defaults(func=cmd_check_config)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose, os.environ)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"servicehub: configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
