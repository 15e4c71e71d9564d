"""The operator's commands against a running hub."""

import json
import os
import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration


def test_help_and_version_smoke():
    for args in (
        ["--help"],
        ["--version"],
        ["run", "--help"],
        ["sessions", "--help"],
        ["reap", "--help"],
    ):
        out = subprocess.run(
            [sys.executable, "-m", "servicehub", *args], capture_output=True, text=True, check=False
        )
        assert out.returncode == 0 and "servicehub" in out.stdout


def test_check_config_accepts_good_and_names_the_bad_key(hub, tmp_path):
    good = hub.cli("check-config")
    assert good.returncode == 0 and "OK" in good.stdout
    bad = tmp_path / "bad.yml"
    bad.write_text("apps:\n  whoami:\n    image: x\n    limits: {memory: lots}\n")
    out = hub.cli("--config", str(bad), "check-config")
    assert out.returncode == 2
    assert "apps.whoami.limits.memory" in out.stderr


def test_sessions_lists_and_stop_removes_but_keeps_the_volume(hub):
    hub.open("alice@example.org", "/whoami", app="whoami")
    hub.open("bob", "/slow/", app="slow")
    rows = json.loads(hub.cli("sessions", "--json").stdout)
    assert {(r["user"], r["app"], r["state"]) for r in rows} == {
        ("alice@example.org", "whoami", "running"),
        ("bob", "slow", "running"),
    }
    table = hub.cli("sessions").stdout
    header = ["USER", "APP", "CONTAINER", "STARTED", "STATE", "LAST ACTIVITY", "SOURCE"]
    assert re.split(r"\s{2,}", table.splitlines()[0]) == header
    assert "alice@example.org" in table
    volume = next((hub.workdir / "volumes").iterdir())
    (volume / "keep.txt").write_text("data")

    stopped = hub.cli("stop", "alice@example.org")
    assert stopped.returncode == 0 and "stopped" in stopped.stdout
    assert [c["Config"]["Labels"]["servicehub.user"] for c in hub.containers()] == ["bob"]
    assert (volume / "keep.txt").read_text() == "data"
    assert hub.cli("stop", "nobody").returncode == 1
    # The next request respawns and sees the same volume.
    resp = hub.open("alice@example.org", "/data/keep.txt", app="whoami")
    assert resp.body == b"data"


def test_the_daemon_refuses_to_start_on_bad_config_naming_the_key(tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text("listen: {host: 0.0.0.0}\napps:\n  whoami: {image: x}\n")
    out = subprocess.run(
        [sys.executable, "-m", "servicehub", "--config", str(bad), "run"],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert out.returncode == 2
    assert "listen.host" in out.stderr and "loopback" in out.stderr


def test_reap_prints_its_table_and_quiet_prints_none(hub):
    """The timer runs ``reap --quiet``: a table of every session, once a minute, would put a
    line per session in the journal beside the decisions that changed."""
    hub.open("alice@example.org", "/whoami", app="whoami")
    table = hub.cli("reap")
    assert table.returncode == 0 and "alice@example.org" in table.stdout
    quiet = hub.cli("reap", "--quiet")
    assert quiet.returncode == 0 and quiet.stdout == ""
    assert "reaper run: 1 session(s), 0 reaped" in quiet.stderr


def test_dir_helper_serves_the_socket_systemd_hands_it(tmp_path):
    """``servicehub dir-helper`` as servicehub-dirs.service runs it: socket activation (here by
    systemd-socket-activate, which passes the socket as systemd does), one request, one
    directory for the app's user; started by hand, it refuses and says why."""
    from servicehub.dir_helper import request_dir
    from tests.harness import wait_for

    uid = os.getuid() or 1000  # root hands it to a user; anyone else only to themselves
    gid = os.getgid() or 1000
    (tmp_path / "volumes").mkdir()
    (tmp_path / "groups").mkdir()
    config = tmp_path / "servicehub.yml"
    config.write_text(
        f"volumes_root: {tmp_path}/volumes\ngroups_root: {tmp_path}/groups\n"
        f"apps:\n  nb: {{image: x, user: '{uid}:{gid}'}}\n"
    )
    command = [sys.executable, "-m", "servicehub", "--config", str(config), "dir-helper"]
    by_hand = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    assert by_hand.returncode == 2 and "servicehub-dirs.socket" in by_hand.stderr
    sock = tmp_path / "dirs.sock"
    helper = subprocess.Popen(["systemd-socket-activate", "-l", str(sock), *command])
    try:
        wait_for(sock.exists, 30, "the helper's socket")
        request_dir(sock, "volumes", "nb-alice-x", "nb")
        made = (tmp_path / "volumes" / "nb-alice-x").stat()
        assert (made.st_uid, made.st_gid, made.st_mode & 0o777) == (uid, gid, 0o700)
    finally:
        helper.terminate()
        helper.wait(timeout=10)
