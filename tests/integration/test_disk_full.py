"""A full volumes file system: the hub keeps working, a new user gets a clear error page, the
operator reads why in the log (docs/deployment.md, "Storage")."""

import contextlib
import os
import subprocess

import pytest

from tests.harness import raw_request

pytestmark = pytest.mark.integration


@contextlib.contextmanager
def small_filesystem(path):
    """A 1 MiB tmpfs with few inodes mounted at ``path``: as full as a user can make it."""
    if os.geteuid() != 0:
        pytest.fail("mounting a small file system needs root (CI runs as root)")
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m,nr_inodes=64,mode=0755", "tmpfs", str(path)],
        check=True,
    )
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(path):
    """Write blocks, then files, until the file system refuses both."""
    hog = path / "hog"
    with contextlib.suppress(OSError), hog.open("wb") as f:
        while True:
            f.write(b"\0" * 65536)
            f.flush()
    for i in range(1000):
        try:
            (path / f"f{i}").touch()
        except OSError:
            break
    with pytest.raises(OSError):
        (path / "one-more").mkdir()


def test_a_full_volumes_file_system_does_not_take_the_hub_down(hub):
    before = hub.open("alice", "/whoami", app="whoami")
    assert before.status == 200
    volumes = hub.workdir / "volumes"
    alice_data = list(volumes.iterdir())
    with small_filesystem(volumes):
        fill(volumes)
        # A new user: a clear error page, and the container that could not get its data
        # directory was never started.
        page = hub.open("bob", "/whoami", app="whoami")
        assert page.status == 503
        assert "no room left for your data" in page.text
        assert hub.containers(user="bob") == []
        log = hub.daemon_log.read_text()
        assert "volumes file system full" in log and str(volumes) in log
        # Everything else goes on: the daemon, alice's running session, the reaper's state.
        assert raw_request(hub.web_port, "/_servicehub/healthz").status == 200
        assert hub.get("alice", "/whoami", html=False).json()["header_user"] == "alice"
        reap = hub.cli("reap", "--json")
        assert reap.returncode == 0, reap.stderr
        assert (hub.state_dir / "reaper.json").exists()
    # Space again (the operator cleaned up): "Try again" works.
    assert alice_data  # alice's data directory, under the mount, was never touched
    assert hub.open("bob", "/whoami", app="whoami").status == 503  # still the failed session
    retry = hub.retry("bob", "whoami", "/whoami")
    assert retry.status == 303
    assert hub.open("bob", "/whoami", app="whoami").json()["header_user"] == "bob"
