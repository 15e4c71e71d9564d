"""Root's directory helper (servicehub/dir_helper.py): what it makes, what it refuses, and the
daemon asking it over a real unix socket. Run unprivileged: the app's user is this test's own
uid, which may chown to itself."""

import dataclasses
import errno
import os
import socket
import threading
from pathlib import Path

import pytest

from servicehub import dir_helper
from servicehub.config import ConfigError, parse_config
from servicehub.dir_helper import DirHelperError, answer, make_dir, request_dir, serve
from servicehub.host_mounts import MountError, session_mounts

IMAGE = "servicehub-example/whoami:latest"


@pytest.fixture
def config(tmp_path):
    volumes, groups = tmp_path / "volumes", tmp_path / "groups"
    volumes.mkdir()
    groups.mkdir()
    parsed = parse_config(
        {
            "volumes_root": str(volumes),
            "groups_root": str(groups),
            "state_dir": str(tmp_path / "state"),
            "apps": {
                "nb": {
                    "image": IMAGE,
                    "volume": {"name": "{app}-{slug}", "mount": "/data"},
                }
            },
        }
    )
    # The app runs as this test's own user (parsing refuses uid 0, which a root run has).
    app = dataclasses.replace(parsed.apps["nb"], uid=os.getuid(), gid=os.getgid())
    return dataclasses.replace(parsed, apps={"nb": app})


def test_a_new_directory_is_private_and_the_apps(config):
    make_dir(config, "volumes", "nb-alice-x", "nb")
    made = config.volumes_root / "nb-alice-x"
    assert made.is_dir() and not made.is_symlink()
    assert (made.stat().st_mode & 0o777, made.stat().st_uid) == (0o700, os.getuid())
    make_dir(config, "groups", "nb-course", "nb")
    assert (Path(config.roots.groups) / "nb-course").is_dir()


def test_an_existing_directory_is_left_as_it_is(config):
    existing = config.volumes_root / "nb-bob-x"
    existing.mkdir(mode=0o755)
    (existing / "notes.txt").write_text("kept")
    make_dir(config, "volumes", "nb-bob-x", "nb")
    assert existing.stat().st_mode & 0o777 == 0o755
    assert (existing / "notes.txt").read_text() == "kept"


@pytest.mark.parametrize(
    "name", ["", ".", "..", "../x", "a/b", "/etc", ".hidden", "-x", "a\0b", "x" * 256, 7]
)
def test_a_name_that_is_not_one_safe_component_is_refused(config, name):
    with pytest.raises(ValueError, match="one path component"):
        make_dir(config, "volumes", name, "nb")
    assert list(config.volumes_root.iterdir()) == []


def test_only_the_two_roots_and_configured_apps(config):
    with pytest.raises(ValueError, match="root must be one of volumes, groups"):
        make_dir(config, "state", "x", "nb")
    with pytest.raises(ValueError, match="not one of the configured apps"):
        make_dir(config, "volumes", "x", "other")
    assert list(config.volumes_root.iterdir()) == []


def test_a_symlink_in_the_root_is_neither_followed_nor_handed_over(config, tmp_path):
    """A subverted daemon owns the roots: a link planted under the name leads nowhere."""
    outside = tmp_path / "outside"
    outside.mkdir(mode=0o755)
    (config.volumes_root / "nb-eve-x").symlink_to(outside)
    with pytest.raises(ValueError, match="not a directory"):
        make_dir(config, "volumes", "nb-eve-x", "nb")
    assert outside.stat().st_mode & 0o777 == 0o755
    assert list(outside.iterdir()) == []


def test_a_root_that_is_a_symlink_is_refused(config, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    config.volumes_root.rmdir()
    config.volumes_root.symlink_to(elsewhere)
    with pytest.raises(OSError):
        make_dir(config, "volumes", "nb-x", "nb")
    assert list(elsewhere.iterdir()) == []


@pytest.mark.parametrize(
    ("line", "error"),
    [
        (b"not json\n", "Expecting value"),
        (b"[1]\n", "a request is a JSON object"),
        (b'{"root": "volumes", "name": "../etc", "app": "nb"}\n', "one path component"),
    ],
)
def test_answers_name_what_is_wrong(config, line, error):
    reply = answer(config, line)
    assert reply["errno"] is None and error in reply["error"]


def test_an_os_error_keeps_its_errno(config):
    """The daemon tells a full disk from a broken hub by the errno (host_mounts.volume_error)."""
    config.volumes_root.rmdir()
    reply = answer(config, b'{"root": "volumes", "name": "nb-x", "app": "nb"}')
    assert reply["errno"] == errno.ENOENT and reply["error"]


@pytest.fixture
def helper(config, tmp_path):
    """The helper serving a real unix socket in a thread, as systemd's socket would hand it."""
    path = Path(f"/tmp/servicehub-dirs-{os.getpid()}-{id(tmp_path)}.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen()
    threading.Thread(target=serve, args=(lambda: config, listener), daemon=True).start()
    yield path
    listener.close()
    path.unlink(missing_ok=True)


def test_the_daemon_gets_its_directories_from_the_helper(config, helper):
    using = dataclasses.replace(config, dir_helper=helper)
    app = using.apps["nb"]
    (mount,) = session_mounts(using, app, "alice-x", frozenset())
    made = Path(mount["Source"])
    assert made == using.volumes_root / "nb-alice-x"
    assert (made.stat().st_mode & 0o777, made.stat().st_uid) == (0o700, os.getuid())
    request_dir(helper, "volumes", "nb-alice-x", "nb")  # again: nothing changes


def test_a_refusal_or_a_missing_helper_reaches_the_user_without_paths(config, helper, tmp_path):
    with pytest.raises(DirHelperError, match="one path component"):
        request_dir(helper, "volumes", "../escape", "nb")
    gone = dataclasses.replace(config, dir_helper=tmp_path / "no.sock")
    with pytest.raises(MountError) as refused:
        session_mounts(gone, gone.apps["nb"], "bob-x", frozenset())
    assert "could not be created" in str(refused.value)
    assert str(tmp_path) not in str(refused.value)


def test_the_setting_is_an_absolute_path(config):
    apps = {"apps": {"nb": {"image": IMAGE}}}
    set_ = parse_config({**apps, "dir_helper": "/run/servicehub/dirs.sock"})
    assert set_.dir_helper == Path("/run/servicehub/dirs.sock")
    assert parse_config(apps).dir_helper is None
    with pytest.raises(ConfigError, match="dir_helper"):
        parse_config({**apps, "dir_helper": "run/dirs.sock"})
    assert dir_helper.ROOTS == ("volumes", "groups")
