"""The operator's command line as an operator meets it: run as a process, errors on one line,
documented exit statuses, -c before or after the subcommand, --json on every read command.

Docker is either absent (a socket path that does not exist, a socket nobody listens on) or a
small stand-in engine on a unix socket that answers the few list/inspect calls these commands
make; the integration tests run the same commands against a real engine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import socketserver
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import pytest

from servicehub import cli
from tests.harness import free_port

ROOT = Path(__file__).resolve().parents[2]
NO_SOCKET = "no such socket (is docker.service running?)"


def servicehub(*args: str, env: dict[str, str] | None = None, prefix: tuple[str, ...] = ()):
    environ = {
        k: v for k, v in os.environ.items() if k not in ("SERVICEHUB_CONFIG", "JOURNAL_STREAM")
    }
    environ.update(env or {})
    return subprocess.run(
        [*prefix, sys.executable, "-m", "servicehub", *args],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def write_config(tmp_path: Path, docker_socket: Path, name: str = "servicehub.yml") -> Path:
    path = tmp_path / name
    path.write_text(
        f"docker: {{socket: {docker_socket}}}\n"
        f"listen: {{port: {free_port()}}}\n"
        f"state_dir: {tmp_path / 'state'}\n"
        f"volumes_root: {tmp_path / 'volumes'}\n"
        f"traefik: {{routes_dir: {tmp_path / 'routes'}, access_log: {tmp_path / 'access.json'}}}\n"
        "apps:\n  whoami: {image: whoami, route: {path_prefix: /whoami/}}\n"
    )
    return path


def one_line(out: subprocess.CompletedProcess[str]) -> str:
    lines = out.stderr.splitlines()
    assert len(lines) == 1, out.stderr
    return lines[0]


# --- Docker unreachable ---------------------------------------------------------------------
DOCKER_COMMANDS = [["sessions"], ["sessions", "--json"], ["stop", "alice"], ["reap"]]
DOCKER_COMMANDS += [["reap", "--dry-run", "--json"], ["run"]]


@pytest.mark.parametrize("command", DOCKER_COMMANDS, ids=" ".join)
def test_docker_socket_missing_is_one_line_naming_it(tmp_path, command):
    missing = tmp_path / "no-docker.sock"
    out = servicehub("-c", str(write_config(tmp_path, missing)), *command)
    assert one_line(out) == f"servicehub: cannot reach Docker at unix://{missing}: {NO_SOCKET}"
    assert out.returncode == cli.EXIT_UNREACHABLE == 3
    assert out.stdout == ""


def test_docker_engine_down_is_one_line(tmp_path):
    dead = tmp_path / "docker.sock"
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(dead))  # the file stays, nobody listens: what a stopped engine leaves
    out = servicehub("-c", str(write_config(tmp_path, dead)), "sessions")
    assert one_line(out) == (
        f"servicehub: cannot reach Docker at unix://{dead}: "
        "connection refused (is docker.service running?)"
    )
    assert out.returncode == 3


def test_docker_permission_denied_is_one_line(tmp_path):
    sock_path = tmp_path / "docker.sock"
    prefix: tuple[str, ...] = ()
    if os.geteuid() == 0:  # root passes file modes: drop the capabilities that let it
        if shutil.which("setpriv") is None:
            pytest.skip("root without setpriv cannot be denied a socket")
        prefix = ("setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--")
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(sock_path))
        s.listen()
        sock_path.chmod(0)
        config = str(write_config(tmp_path, sock_path))
        out = servicehub("-c", config, "reap", "--dry-run", prefix=prefix)
    expected = f"servicehub: cannot reach Docker at unix://{sock_path}: permission denied"
    assert one_line(out) == expected
    assert out.returncode == 3


def test_verbose_adds_the_traceback_before_the_line(tmp_path):
    missing = tmp_path / "no-docker.sock"
    out = servicehub("-v", "-c", str(write_config(tmp_path, missing)), "sessions")
    assert "Traceback (most recent call last)" in out.stderr
    assert out.stderr.splitlines()[-1] == (
        f"servicehub: cannot reach Docker at unix://{missing}: {NO_SOCKET}"
    )
    assert out.returncode == 3


async def test_an_unreachable_http_peer_is_named_with_its_address():
    # Traefik's API is reached over HTTP: a refused connection names host and port, exit 3.
    port = free_port()
    with pytest.raises(aiohttp.ClientConnectorError) as caught:
        async with aiohttp.ClientSession() as http:
            await http.get(f"http://127.0.0.1:{port}/api/rawdata")
    code, message = cli._failure(caught.value)
    assert (code, message) == (3, f"cannot reach 127.0.0.1:{port}: connection refused")


# --- configuration errors -------------------------------------------------------------------
def test_config_errors_are_one_line_naming_the_key_or_file(tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text("apps:\n  whoami:\n    image: x\n    limits: {memory: lots}\n")
    out = servicehub("-c", str(bad), "check-config")
    assert "apps.whoami.limits.memory" in one_line(out) and out.returncode == 2

    missing = tmp_path / "absent.yml"
    out = servicehub("-c", str(missing), "sessions")
    assert one_line(out).startswith(f"servicehub: configuration error: {missing}: cannot read")
    assert out.returncode == 2

    broken = tmp_path / "broken.yml"
    broken.write_text("apps:\n  whoami: {image: x\n  more\n")
    out = servicehub("-c", str(broken), "reap")
    assert f"{broken}: not valid YAML" in one_line(out) and "line 2" in out.stderr
    assert out.returncode == 2


# --- -c and -v on either side of the subcommand ---------------------------------------------
def test_config_and_verbose_work_after_the_subcommand(tmp_path):
    config = write_config(tmp_path, tmp_path / "no-docker.sock")
    after = servicehub("check-config", "--config", str(config), "-v")
    assert after.returncode == 0 and after.stdout.startswith(f"{config}: OK")
    # A positional argument before the option; the socket named comes from that file.
    out = servicehub("stop", "alice", "-c", str(config))
    assert f"unix://{tmp_path / 'no-docker.sock'}" in one_line(out) and out.returncode == 3
    # Given on both sides, the one after the subcommand wins.
    out = servicehub("-c", str(tmp_path / "absent.yml"), "check-config", "-c", str(config))
    assert out.returncode == 0, out.stderr
    # Given nowhere: $SERVICEHUB_CONFIG, then the installed default.
    out = servicehub("check-config", env={"SERVICEHUB_CONFIG": str(config)})
    assert out.returncode == 0 and str(config) in out.stdout
    assert cli.build_parser().parse_args(["sessions"]).config == "/etc/servicehub/servicehub.yml"


# --- --json on every read command -----------------------------------------------------------
LABELS = {
    "servicehub.hub": "servicehub",
    "servicehub.app": "whoami",
    "servicehub.slug": "alice-0123456789",
    "servicehub.user": "alice@example.org",
    "servicehub.created": "2024-05-01T10:00:00.000Z",
}
CONTAINER = {
    "Id": "c0ffee",
    "Name": "/servicehub-whoami-alice-0123456789",
    "State": {"Status": "running", "ExitCode": 0, "Pid": 0},
    "Config": {"Labels": LABELS},
    "NetworkSettings": {"Networks": {"servicehub-whoami": {"IPAddress": "172.30.0.2"}}},
}


class _Engine(BaseHTTPRequestHandler):
    """Just enough of the Engine API for listing: one running session container."""

    def do_GET(self) -> None:
        path = urlsplit(self.path).path.removeprefix("/v1.41")
        if path == "/containers/json":
            listed = {
                **CONTAINER,
                "Names": [CONTAINER["Name"]],
                "State": "running",
                "Labels": LABELS,
            }
            self._send(200, [listed])
        elif path == f"/containers/{CONTAINER['Id']}/json":
            self._send(200, CONTAINER)
        else:  # no stats, no networks: the commands must cope
            self._send(404, {"message": f"no such thing: {path}"})

    def _send(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def address_string(self) -> str:
        return "unix"

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def engine(tmp_path) -> Iterator[Path]:
    path = tmp_path / "engine.sock"
    server = socketserver.ThreadingUnixStreamServer(str(path), _Engine)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield path
    server.shutdown()
    server.server_close()


SESSION_KEYS = {"user", "slug", "app", "container", "started", "state", "last_activity", "source"}
REAP_KEYS = {"user", "app", "slug", "container", "container_id", "last_activity", "source"}
REAP_KEYS |= {"idle_for", "age", "decision", "reason"}


def test_every_read_command_has_json():
    parser = cli.build_parser()
    subcommands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name in ("sessions", "reap", "check-config"):
        options = {o for a in subcommands.choices[name]._actions for o in a.option_strings}
        assert "--json" in options, name


def test_json_output_of_each_read_command_parses_with_its_documented_shape(tmp_path, engine):
    config = str(write_config(tmp_path, engine))
    sessions = servicehub("-c", config, "sessions", "--json")
    assert sessions.returncode == 0, sessions.stderr
    (row,) = json.loads(sessions.stdout)
    assert set(row) == SESSION_KEYS
    assert (row["user"], row["app"], row["state"]) == ("alice@example.org", "whoami", "running")
    assert row["started"] == "2024-05-01T10:00:00Z"

    reap = servicehub("-c", config, "reap", "--dry-run", "--json")
    assert reap.returncode == 0, reap.stderr
    (row,) = json.loads(reap.stdout)
    assert set(row) == REAP_KEYS and row["decision"] in ("keep", "reap", "skip", "error")

    check = servicehub("-c", config, "check-config", "--json")
    assert check.returncode == 0, check.stderr
    assert json.loads(check.stdout) == {
        "config": config,
        "ok": True,
        "hub": "servicehub",
        "apps": ["whoami"],
    }


def test_sessions_answers_without_the_daemons_http_stack(tmp_path, engine):
    """`servicehub sessions` is an operator's quick look: importing aiohttp and asyncio alone
    took longer than listing 2,000 sessions (docs/benchmarks.md, "Scale")."""
    config = str(write_config(tmp_path, engine))
    probe = (
        "import sys\n"
        "from servicehub import cli\n"
        f"code = cli.main(['-c', {config!r}, 'sessions', '--json'])\n"
        "loaded = sorted(m for m in ('aiohttp', 'asyncio', 'yarl') if m in sys.modules)\n"
        "print('exit', code, 'loaded', loaded, file=sys.stderr)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert out.stderr.strip().splitlines()[-1] == "exit 0 loaded []", out.stderr
    (row,) = json.loads(out.stdout)
    assert row["user"] == "alice@example.org"


def test_check_config_json_reports_the_bad_key(tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text("apps:\n  whoami:\n    image: x\n    limits: {memory: lots}\n")
    out = servicehub("-c", str(bad), "check-config", "--json")
    assert out.returncode == 2
    report = json.loads(out.stdout)
    assert (report["ok"], report["key"]) == (False, "apps.whoami.limits.memory")
    assert "lots" in report["error"] and not report["error"].startswith("apps.")
    assert "apps.whoami.limits.memory" in one_line(out)


# --- exit statuses ------------------------------------------------------------------------
def test_help_lists_the_exit_statuses():
    out = servicehub("--help")
    assert out.returncode == 0
    epilog = out.stdout.split("exit status:", 1)[1]
    listed = {int(line.split()[0]) for line in epilog.splitlines() if line[:3].strip().isdigit()}
    assert listed == {0, 1, 2, 3, 75, 77, 130} == set(cli.EXIT_STATUS)
    assert "Docker or Traefik unreachable" in epilog and "another reaper run" in epilog


def test_usage_errors_exit_2(tmp_path):
    assert servicehub("sessions", "--bogus").returncode == 2
    assert servicehub().returncode == 2
    out = servicehub("-c", str(write_config(tmp_path, tmp_path / "d")), "stop", "alice", "nope")
    assert one_line(out).endswith(
        "no app named 'nope' in " + str(tmp_path / "servicehub.yml") + " (apps: whoami)"
    )
    assert out.returncode == 2
