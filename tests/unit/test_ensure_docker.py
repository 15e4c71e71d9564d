"""scripts/ensure-docker.sh against a stub engine: the start path CI takes on a bare machine.

The stubs stand in for `docker` and `dockerd` on PATH, so the real engine on this host is not
touched. The stub daemon answers only after a moment, as a real one does, so the script's
startup poll runs at least once while the daemon is alive but not yet up.
"""

import os
import subprocess
import textwrap
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "ensure-docker.sh"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the start path needs root")


def _stub(path: Path, body: str) -> None:
    path.write_text("#!/bin/sh\n" + textwrap.dedent(body))
    path.chmod(0o755)


@pytest.fixture
def stub_engine(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    up = tmp_path / "up"
    # `docker info` fails until the daemon says it is up; `--format` prints a version.
    _stub(
        bin_dir / "docker",
        f"""\
        [ -f {up} ] || exit 1
        echo stub
        """,
    )
    # `ps -p 1 -o comm=` decides between systemctl and a detached daemon: make it the latter.
    _stub(
        bin_dir / "ps",
        """\
        case "$*" in "-p 1 -o comm=") echo init; exit 0 ;; esac
        exec /bin/ps "$@"
        """,
    )
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "DOCKERD_LOG": str(tmp_path / "dockerd.log"),
        "DOCKERD_PIDFILE": str(tmp_path / "docker.pid"),
        "CONTAINERD_PIDFILE": str(tmp_path / "containerd.pid"),
        "DOCKER_START_TIMEOUT": "20",
    }
    return bin_dir, up, env


def _run(env):
    return subprocess.run(
        ["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60
    )


def test_a_daemon_that_comes_up_after_a_moment_is_waited_for(stub_engine, tmp_path):
    bin_dir, up, env = stub_engine
    _stub(
        bin_dir / "dockerd",
        f"""\
        sleep 1
        touch {up}
        exec sleep 30
        """,
    )
    (tmp_path / "docker.pid").write_text("999999\n")  # left by a killed daemon
    result = _run(env)
    subprocess.run(["pkill", "-f", f"{bin_dir}/dockerd"], check=False)
    assert result.returncode == 0, result.stderr
    assert "removing stale" in result.stderr
    assert "docker engine is up" in result.stderr


def test_a_daemon_that_dies_at_start_fails_with_its_log(stub_engine):
    bin_dir, _, env = stub_engine
    _stub(
        bin_dir / "dockerd",
        """\
        echo "failed to start daemon: the stub says no" >&2
        exit 1
        """,
    )
    result = _run(env)
    assert result.returncode == 1
    assert "dockerd exited during startup" in result.stderr
    assert "the stub says no" in result.stderr
