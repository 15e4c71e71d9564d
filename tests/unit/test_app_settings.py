"""An app's mounts and Docker settings: what the parser refuses (naming the key), what the host
check refuses (symlinks, kinds), and the container spec sent to Docker."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from servicehub.backend import container_spec
from servicehub.config import ConfigError, load_config, parse_config
from servicehub.host_mounts import session_mounts

IMAGE = "servicehub-example/whoami:latest"


def hub(roots=(), **app):
    return {"datasets_roots": list(roots), "apps": {"nb": {"image": IMAGE, **app}}}


@pytest.mark.parametrize(
    ("data", "key", "words"),
    [
        (hub(privileged=True), "apps.nb.privileged", "every device"),
        (hub(network_mode="host"), "apps.nb.network_mode", "host networking"),
        (hub(pid_mode="host"), "apps.nb.pid_mode", "PID namespace"),
        (hub(ipc_mode="host"), "apps.nb.ipc_mode", "IPC namespace"),
        (hub(security_opt=["seccomp=unconfined"]), "apps.nb.security_opt", "hub's"),
        (hub(binds=["/:/host"]), "apps.nb.binds", "datasets"),
        (hub(networks=["lab-db", "host"]), "apps.nb.networks[1]", "refused"),
        (hub(networks=["bridge"]), "apps.nb.networks[0]", "refused"),
        (hub(cap_add=["SYS_ADMIN"]), "apps.nb.cap_add[0]", "not allowed"),
        (hub(cap_add=["CHOWN", "CAP_NET_RAW"]), "apps.nb.cap_add[1]", "not allowed"),
        (hub(labels={"servicehub.user": "mallory"}), "apps.nb.labels.servicehub.user", "reserved"),
        (hub(labels={"servicehub.hub": "x"}), "apps.nb.labels.servicehub.hub", "reserved"),
        (hub(labels={"traefik.enable": "true"}), "apps.nb.labels.traefik.enable", "reserved"),
        (hub(labels={"com.docker.x": "1"}), "apps.nb.labels.com.docker.x", "reserved"),
        (hub(sysctls={"kernel.shmmax": 1}), "apps.nb.sysctls.kernel.shmmax", "not in the allowed"),
        (hub(sysctls={"net.ipv4.ip_forward": 1}), "apps.nb.sysctls.net.ipv4.ip_forward", "allowed"),
        (
            hub(sysctls={"net.core.somaxconn": "1; x"}),
            "apps.nb.sysctls.net.core.somaxconn",
            "number",
        ),
        (hub(ulimits={"core": 0}), "apps.nb.ulimits.core", "only nofile, nproc"),
        (hub(ulimits={"nofile": {"soft": 9, "hard": 8}}), "apps.nb.ulimits.nofile.soft", "hard"),
        (hub(ulimits={"nofile": 1 << 30}), "apps.nb.ulimits.nofile", "between"),
        (hub(shm_size="2g"), "apps.nb.shm_size", "limits.memory"),
        (hub(devices=[{"path": "/dev/sda"}]), "apps.nb.devices[0].path", "not an allowed device"),
        (hub(devices=[{"path": "/dev/mem"}]), "apps.nb.devices[0].path", "not an allowed device"),
        (hub(gpus={"count": 1, "device_ids": ["0"]}), "apps.nb.gpus.count", "not both"),
        (hub(gpus={"capabilities": ["sys_admin"]}), "apps.nb.gpus.capabilities[0]", "unknown"),
        # Mounts: host paths only from allowed roots, never the socket, never over reserved paths.
        (hub(datasets=[{"source": "/srv/d", "mount": "/d"}]), "apps.nb.datasets[0].source", "none"),
        (
            hub(["/srv/data"], datasets=[{"source": "/srv/other", "mount": "/d"}]),
            "apps.nb.datasets[0].source",
            "not inside datasets_roots",
        ),
        (
            hub(["/srv/data"], datasets=[{"source": "/srv/data/../etc", "mount": "/d"}]),
            "apps.nb.datasets[0].source",
            "plain absolute path",
        ),
        (
            hub(
                ["/srv/data"],
                datasets=[{"source": "/srv/data/x", "mount": "/d", "read_only": False}],
            ),
            "apps.nb.datasets[0].read_only",
            "group_dirs",
        ),
        (hub(["/var/run"]), "datasets_roots[0]", "system files"),
        (hub(["/srv"]) | {"docker": {"socket": "/srv/docker.sock"}}, "datasets_roots[0]", "socket"),
        (hub(["/var/lib/servicehub"]), "datasets_roots[0]", "hub's own files"),
        (hub(["/"]), "datasets_roots[0]", "below /"),
        (
            hub(["/srv/data"], datasets=[{"source": "/srv/data/x", "mount": "/proc/x"}]),
            "apps.nb.datasets[0].mount",
            "/proc",
        ),
        (
            hub(["/srv/data"], datasets=[{"source": "/srv/data/x", "mount": "/run/secrets"}]),
            "apps.nb.datasets[0].mount",
            "/run/secrets",
        ),
        (
            hub(
                ["/srv/data"], datasets=[{"source": "/srv/data/x", "mount": "/data/ref"}], volume={}
            ),
            "apps.nb.datasets[0].mount",
            "overlaps volume.mount",
        ),
        (
            hub(group_dirs=[{"group": "lab", "mount": "/tmp/lab"}]),
            "apps.nb.group_dirs[0].mount",
            "tmpfs",
        ),
        (
            hub(group_dirs=[{"group": "a,b", "mount": "/g"}]),
            "apps.nb.group_dirs[0].group",
            "invalid",
        ),
        (
            hub(group_dirs=[{"group": "lab", "mount": "/etc/hosts"}]),
            "apps.nb.group_dirs[0].mount",
            "Docker",
        ),
        (hub(secrets={"TOKEN": "../token"}), "apps.nb.secrets.TOKEN", "file name"),
        (hub(secrets={"SERVICEHUB_X": "x"}), "apps.nb.secrets.SERVICEHUB_X", "hub"),
        (
            hub(secrets={"TOKEN": "token"}, environment={"TOKEN_FILE": "/x"}),
            "apps.nb.environment.TOKEN_FILE",
            "secrets.TOKEN",
        ),
        (hub() | {"groups_root": "/var/lib/servicehub/volumes/g"}, "groups_root", "volumes_root"),
    ],
)
def test_settings_that_weaken_isolation_are_refused_naming_the_key(data, key, words):
    with pytest.raises(ConfigError) as err:
        parse_config(data)
    assert err.value.key == key
    assert words in str(err.value)


def test_every_setting_parses_into_the_spec_sent_to_docker():
    data = hub(
        ["/srv/data"],
        datasets=[{"source": "/srv/data/genomes", "mount": "/datasets/genomes"}],
        group_dirs=[{"group": "/course/101", "mount": "/shared/course"}],
        secrets={"DB_PASSWORD": "db-password"},
        shm_size="256m",
        ulimits={"nofile": 4096, "nproc": {"soft": 100, "hard": 200}},
        sysctls={"net.ipv4.ip_unprivileged_port_start": 80},
        devices=[{"path": "/dev/dri/renderD128", "permissions": "rw"}],
        gpus={"count": 2, "capabilities": ["gpu", "compute"], "driver": "nvidia"},
        cap_add=["cap_net_bind_service"],
        labels={"org.example.course": "101"},
    )
    app = parse_config(data).apps["nb"]
    spec = container_spec("hub", app, "alice", "alice-x")
    host = spec["HostConfig"]
    assert host["DeviceRequests"] == [
        {
            "Driver": "nvidia",
            "Count": 2,
            "DeviceIDs": [],
            "Capabilities": [["gpu", "compute"]],
            "Options": {},
        }
    ]
    assert host["ShmSize"] == 256 * 1024**2
    assert host["Ulimits"] == [
        {"Name": "nofile", "Soft": 4096, "Hard": 4096},
        {"Name": "nproc", "Soft": 100, "Hard": 200},
    ]
    assert host["Sysctls"] == {"net.ipv4.ip_unprivileged_port_start": "80"}
    assert host["Devices"] == [
        {
            "PathOnHost": "/dev/dri/renderD128",
            "PathInContainer": "/dev/dri/renderD128",
            "CgroupPermissions": "rw",
        }
    ]
    assert host["CapAdd"] == ["NET_BIND_SERVICE"]
    # What no setting reaches stays as it always was.
    assert host["CapDrop"] == ["ALL"] and host["SecurityOpt"] == ["no-new-privileges:true"]
    assert host["ReadonlyRootfs"] is True and host["NetworkMode"] == "hub-nb"
    assert not {"Privileged", "PidMode", "IpcMode", "Binds"} & set(host)
    assert spec["Labels"]["org.example.course"] == "101"
    assert spec["Labels"]["servicehub.user"] == "alice"
    # The secret's place, never its value.
    assert "DB_PASSWORD_FILE=/run/secrets/DB_PASSWORD" in spec["Env"]
    assert not any(e.startswith("DB_PASSWORD=") for e in spec["Env"])


def test_gpus_by_device_ids_or_all():
    by_id = parse_config(hub(gpus={"device_ids": ["0", "GPU-3f2a"]})).apps["nb"]
    (request,) = container_spec("h", by_id, "u", "s")["HostConfig"]["DeviceRequests"]
    assert (request["Count"], request["DeviceIDs"]) == (0, ["0", "GPU-3f2a"])
    assert request["Capabilities"] == [["gpu"]]
    every = parse_config(hub(gpus={})).apps["nb"]
    (request,) = container_spec("h", every, "u", "s")["HostConfig"]["DeviceRequests"]
    assert request["Count"] == -1
    none = parse_config(hub()).apps["nb"]
    assert "DeviceRequests" not in container_spec("h", none, "u", "s")["HostConfig"]


def test_defaults_change_nothing_but_state_dockers_own_shm_size():
    app = parse_config(hub()).apps["nb"]
    host = container_spec("h", app, "u", "s")["HostConfig"]
    assert host["ShmSize"] == 64 * 1024**2
    assert (host["Ulimits"], host["Sysctls"], host["Devices"], host["CapAdd"]) == ([], {}, [], [])


def write_config(tmp_path: Path, roots, secrets_dir=None, **app) -> Path:
    data = hub(roots, **app) | {
        "volumes_root": str(tmp_path / "volumes"),
        "state_dir": str(tmp_path / "state"),
        "groups_root": str(tmp_path / "groups"),
        "secrets_dir": str(secrets_dir or tmp_path / "secrets"),
    }
    path = tmp_path / "servicehub.yml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_a_symlink_out_of_the_datasets_root_is_refused(tmp_path: Path):
    root = tmp_path / "datasets"
    (root / "real").mkdir(parents=True)
    (tmp_path / "private").mkdir()
    (root / "escape").symlink_to(tmp_path / "private")
    (root / "inside").symlink_to(root / "real")
    mount = {"mount": "/datasets/x"}
    ok = write_config(tmp_path, [str(root)], datasets=[{"source": str(root / "inside"), **mount}])
    assert load_config(ok).apps["nb"].mounts.datasets[0].source == str(root / "inside")
    bad = write_config(tmp_path, [str(root)], datasets=[{"source": str(root / "escape"), **mount}])
    with pytest.raises(ConfigError) as err:
        load_config(bad)
    assert err.value.key == "apps.nb.datasets[0].source"
    assert "leads out of its datasets_roots entry" in str(err.value)


def test_a_symlink_to_the_docker_socket_or_the_volumes_is_refused(tmp_path: Path):
    root = tmp_path / "datasets"
    root.mkdir()
    (root / "vols").symlink_to(tmp_path / "volumes")
    (tmp_path / "volumes").mkdir()
    (root / "sock").symlink_to("/var/run/docker.sock")
    for name in ("vols", "sock"):
        path = write_config(
            tmp_path, [str(root)], datasets=[{"source": str(root / name), "mount": "/d"}]
        )
        with pytest.raises(ConfigError) as err:
            load_config(path)
        assert err.value.key == "apps.nb.datasets[0].source"


def test_secrets_are_checked_on_the_host(tmp_path: Path):
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (tmp_path / "outside").write_text("x")
    (secrets / "escape").symlink_to(tmp_path / "outside")
    path = write_config(tmp_path, [], secrets={"TOKEN": "escape"})
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert err.value.key == "apps.nb.secrets.TOKEN" and "leads out" in str(err.value)
    path = write_config(tmp_path, [], secrets={"TOKEN": "missing"})
    with pytest.raises(ConfigError, match=r"apps\.nb\.secrets\.TOKEN: missing is not a file"):
        load_config(path)


def test_check_config_names_the_key_of_a_symlink_escape(tmp_path: Path):
    root = tmp_path / "datasets"
    root.mkdir()
    (root / "etc").symlink_to("/etc")
    path = write_config(
        tmp_path, [str(root)], datasets=[{"source": str(root / "etc"), "mount": "/d"}]
    )
    run = subprocess.run(
        [sys.executable, "-m", "servicehub", "-c", str(path), "check-config"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 2
    assert "apps.nb.datasets[0].source: " in run.stderr and "leads out" in run.stderr


def test_group_dirs_are_mounted_for_members_only(tmp_path: Path):
    path = write_config(
        tmp_path,
        [],
        group_dirs=[
            {"group": "/course/101", "mount": "/shared/course"},
            {"group": "staff", "mount": "/shared/staff", "read_only": True},
        ],
    )
    config = load_config(path)
    app = config.apps["nb"]
    uid = os.getuid()
    app = app.__class__(**{**app.__dict__, "uid": uid, "gid": os.getgid()})
    member = session_mounts(config, app, "alice-x", frozenset({"/course/101", "other"}))
    assert [(m["Target"], m["ReadOnly"]) for m in member] == [("/shared/course", False)]
    source = Path(member[0]["Source"])
    assert source.parent == tmp_path / "groups" and source.name.startswith("nb-course-101-")
    assert (source.stat().st_mode & 0o777, source.stat().st_uid) == (0o700, uid)
    assert session_mounts(config, app, "bob-x", frozenset({"course/101"})) == []
    both = session_mounts(config, app, "carol-x", frozenset({"/course/101", "staff"}))
    assert [m["ReadOnly"] for m in both] == [False, True]


def test_the_roles_preflight_names_the_variable_of_a_bad_root():
    root = Path(__file__).resolve().parents[2]
    run = subprocess.run(
        [sys.executable, str(root / "roles/servicehub/files/check_config.py"), str(root)],
        input='{"apps": {"a": {"image": "x"}}, "datasets_roots": ["/srv", "/proc/x"]}',
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 2
    assert run.stdout.startswith("servicehub_datasets_roots[1]: /proc/x overlaps /proc")
