"""An app's extra mounts and Docker settings, as a real container sees them (docker exec)."""

import json
import subprocess

import pytest
import yaml

from tests.harness import EXAMPLE_IMAGE, Hub, role_defaults, wait_for

pytestmark = pytest.mark.integration
SECRET = "s3cret-value-7f1c"


class MountsHub(Hub):
    """The harness's hub with the hub-wide roots this file needs (datasets, secrets, groups)."""

    def write_config(self) -> None:
        super().write_config()
        config = yaml.safe_load(self.config_path.read_text())
        config |= {
            "datasets_roots": [str(self.workdir / "datasets")],
            "secrets_dir": str(self.workdir / "secrets"),
            "groups_root": str(self.workdir / "groups"),
        }
        self.config_path.write_text(yaml.safe_dump(config))


def app(workdir) -> dict:
    return {
        "image": EXAMPLE_IMAGE,
        "limits": {"memory": "256m", "cpus": 0.5, "pids": 64},
        "readiness": {"type": "http", "path": "/healthz"},
        "volume": {},
        "datasets": [{"source": str(workdir / "datasets" / "reference"), "mount": "/reference"}],
        "group_dirs": [{"group": "team-a", "mount": "/shared/team-a"}],
        "secrets": {"API_TOKEN": "api-token"},
        "shm_size": "128m",
        "ulimits": {"nofile": 2048, "nproc": {"soft": 500, "hard": 1000}},
        "labels": {"org.example.course": "101"},
    }


@pytest.fixture
def mhub(request, tmp_path, example_image):
    workdir = tmp_path / "hub"
    (workdir / "datasets" / "reference").mkdir(parents=True)
    (workdir / "datasets" / "reference" / "genome.txt").write_text("ACGT\n")
    (workdir / "secrets").mkdir()
    (workdir / "secrets" / "api-token").write_text(SECRET)
    (workdir / "secrets" / "api-token").chmod(0o600)  # the daemon's to read, not the app's
    instance = MountsHub(workdir=workdir, apps={"whoami": app(workdir)})
    try:
        instance.start()
        yield instance
    finally:
        if any(r.failed for r in request.node.stash.get("reports", {}).values()):
            print(instance.logs())
        instance.stop()
        instance.cleanup_docker()


def sh(container_id: str, script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", "exec", container_id, "sh", "-c", script],
        capture_output=True,
        text=True,
        check=False,
    )


def session(hub: Hub, user: str) -> dict:
    hub.open(user, "/whoami", app="whoami")
    (container,) = [
        c for c in hub.containers(app="whoami") if c["Config"]["Labels"]["servicehub.user"] == user
    ]
    return container


def test_a_shared_dataset_is_readable_and_not_writable(mhub):
    container = session(mhub, "alice")
    assert sh(container["Id"], "cat /reference/genome.txt").stdout == "ACGT\n"
    write = sh(container["Id"], "echo x > /reference/new.txt")
    assert write.returncode != 0 and "Read-only file system" in write.stderr
    assert sh(container["Id"], "rm /reference/genome.txt").returncode != 0
    assert (mhub.workdir / "datasets" / "reference" / "genome.txt").read_text() == "ACGT\n"
    (mount,) = [m for m in container["Mounts"] if m["Destination"] == "/reference"]
    assert mount["RW"] is False


def test_shm_size_and_ulimits_are_what_the_container_sees(mhub):
    container = session(mhub, "alice")
    df = sh(container["Id"], "df -k /dev/shm | tail -1").stdout.split()
    assert df[1] == str(128 * 1024), df  # 1K-blocks
    assert sh(container["Id"], "ulimit -n").stdout.strip() == "2048"
    limits = sh(container["Id"], "cat /proc/self/limits").stdout
    assert limits.count("2048") == 2  # Max open files, soft and hard
    (nproc,) = [line.split()[2:4] for line in limits.splitlines() if "processes" in line]
    assert nproc == ["500", "1000"]
    assert container["Config"]["Labels"]["org.example.course"] == "101"


def test_a_secret_is_readable_in_the_container_and_absent_from_docker_inspect(mhub):
    container = session(mhub, "alice")
    assert sh(container["Id"], 'cat "$API_TOKEN_FILE"').stdout == SECRET
    assert sh(container["Id"], "echo $API_TOKEN_FILE").stdout.strip() == "/run/secrets/API_TOKEN"
    assert sh(container["Id"], "echo x > /run/secrets/API_TOKEN").returncode != 0
    inspect = subprocess.run(
        ["docker", "inspect", container["Id"]], capture_output=True, text=True, check=True
    ).stdout
    assert SECRET not in inspect
    assert not any(e.startswith("API_TOKEN=") for e in json.loads(inspect)[0]["Config"]["Env"])


def _spawn(hub: Hub, user: str, groups: set[str]) -> str:
    """A page load with the user's groups in the groups header, as Apache sends it."""
    groups_header = role_defaults("servicehub")["servicehub_groups_header"]
    first = hub.get(user, "/whoami", extra=[(groups_header, ",".join(sorted(groups)))])
    assert first.is_wait, first.text
    wait_for(lambda: hub.status(user, "whoami")["state"] == "ready", 60, f"{user}'s app")
    (container,) = [
        c for c in hub.containers(app="whoami") if c["Config"]["Labels"]["servicehub.user"] == user
    ]
    return str(container["Id"])


def test_a_group_directory_is_shared_by_members_and_invisible_to_others(mhub):
    alice = _spawn(mhub, "alice", {"team-a", "other"})
    bob = _spawn(mhub, "bob", {"team-a"})
    carol = _spawn(mhub, "carol", {"team-b"})
    assert sh(alice, "echo from-alice > /shared/team-a/note").returncode == 0
    assert sh(bob, "cat /shared/team-a/note").stdout == "from-alice\n"
    assert sh(bob, "echo from-bob >> /shared/team-a/note").returncode == 0
    assert sh(alice, "cat /shared/team-a/note").stdout == "from-alice\nfrom-bob\n"
    # Not even an empty directory for a non-member, and nothing in Docker's view of it.
    assert sh(carol, "test -e /shared/team-a || test -e /shared").returncode == 1
    mounts = json.loads(
        subprocess.run(
            ["docker", "inspect", "-f", "{{json .Mounts}}", carol],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    assert not any("groups" in m["Source"] for m in mounts)
    (group_dir,) = (mhub.workdir / "groups").iterdir()
    assert group_dir.name.startswith("whoami-team-a-") and group_dir.stat().st_mode & 0o777 == 0o700
