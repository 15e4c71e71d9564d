"""A hub and two workers converged by site.yml: the swarm they form, where people's sessions run,
and what a session on a worker can reach (docs/cluster.md)."""

import json
import shlex
from pathlib import Path

import pytest
import testinfra
import yaml

# Everything is checked from the hub, or from a worker named explicitly.
testinfra_hosts = ["ansible://cluster-hub"]
WORKERS = ("cluster-w1", "cluster-w2")
IMAGE = "servicehub-example/whoami:latest"
ROOT = Path(__file__).resolve().parents[3]
ROLES = ROOT / "roles"


def role_value(role, kind, name):
    """A role's default (kind "defaults") or internal value ("vars"), which this scenario keeps."""
    return yaml.safe_load((ROLES / role / kind / "main.yml").read_text())[name]


TRAEFIK_WEB_PORT = role_value("traefik", "defaults", "traefik_web_port")
DAEMON_PORT = role_value("servicehub", "defaults", "servicehub_listen_port")
CONFIG_PATH = role_value("servicehub", "vars", "__servicehub_config_path")
ROUTES_DIR = role_value("traefik", "defaults", "traefik_dynamic_dir")
# The daemon's directories every member mounts (roles/servicehub/tasks/shared_dirs.yml).
SHARED_DIRS = {
    "volumes": role_value("servicehub", "defaults", "servicehub_volumes_root"),
    "groups": role_value("servicehub", "defaults", "servicehub_groups_root"),
    "counters": role_value("servicehub", "defaults", "servicehub_swarm_counters_dir"),
}
GLUSTER_PREFIX = role_value("swarm", "vars", "__swarm_gluster_volume_prefix")
GLUSTERD_PORT = role_value("swarm", "vars", "__swarm_gluster_tcp_ports")[0]


def format_arg(template):
    return shlex.quote(template)


def worker(name):
    return testinfra.get_host(f"docker://{name}")


def address(name):
    """The member's address in the swarm, as the manager reports it."""
    template = format_arg("{{ .Status.Addr }}")
    return (
        worker("cluster-hub").run_test(f"docker node inspect -f {template} {name}").stdout.strip()
    )


def browse(host, user, ca):
    cmd = host.run(f"hubclient --user {user} --password {user}-password --ca {ca}")
    assert cmd.rc == 0, cmd.stderr + cmd.stdout
    result = json.loads(cmd.stdout)
    assert result["status"] == 200, result["trail"]
    return json.loads(result["body"])


def session_nodes(host):
    """Each running session's user and the node its task runs on."""
    services = host.run_test(
        "docker service ls -q --filter label=servicehub.app=whoami"
    ).stdout.split()
    nodes = {}
    for service in services:
        user = host.run_test(
            "docker service inspect -f "
            + format_arg('{{ index .Spec.Labels "servicehub.user" }}')
            + f" {service}"
        ).stdout.strip()
        placed = host.run_test(
            f"docker service ps --filter desired-state=running --format '{{{{.Node}}}}' {service}"
        ).stdout.split()
        nodes[user] = placed
    return nodes


def test_the_hub_manages_a_swarm_of_two_ready_workers(host):
    rows = host.run_test(
        "docker node ls --format " + format_arg("{{.Hostname}} {{.Status}} {{.ManagerStatus}}")
    ).stdout.splitlines()
    assert sorted(rows) == ["cluster-hub Ready Leader", "cluster-w1 Ready ", "cluster-w2 Ready "]
    config = host.file(CONFIG_PATH).content_string
    assert "type: swarm" in config and "sessions_on_manager: false" in config


@pytest.mark.parametrize("name", ["cluster-hub", *WORKERS])
def test_every_engine_runs_as_a_member_must(name):
    node = worker(name)
    daemon_json = json.loads(node.file("/etc/docker/daemon.json").content_string)
    assert daemon_json["live-restore"] is False  # Docker refuses a swarm with it on
    assert daemon_json["icc"] is False
    environment = node.run_test("systemctl show docker -p Environment").stdout
    assert "DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1" in environment
    # No engine listens on TCP: the daemon uses the hub's unix socket, workers need none.
    listening = node.run_test("ss -Hltn").stdout
    assert ":2375 " not in listening and ":2376 " not in listening
    assert node.run_test("nft list table inet servicehub_swarm").rc == 0


@pytest.mark.parametrize("name", WORKERS)
def test_workers_hold_the_apps_image(name):
    assert worker(name).run(f"docker image inspect {IMAGE}").rc == 0


@pytest.mark.parametrize("name", ["cluster-hub", *WORKERS])
def test_the_join_token_is_in_no_log(name):
    # Ansible logs each module's arguments to the target's journal, except under no_log.
    found = worker(name).run("journalctl --no-pager -o cat | grep -c SWMTKN-")
    assert found.stdout.strip() == "0", found.stdout


@pytest.mark.parametrize("name", ["cluster-hub", *WORKERS])
def test_every_member_mounts_the_shared_directories_from_the_hub(name):
    hub = address("cluster-hub")
    for dir_name, path in SHARED_DIRS.items():
        mounted = worker(name).run_test(f"findmnt -n -o FSTYPE,SOURCE {path}").stdout.split()
        assert mounted == ["fuse.glusterfs", f"{hub}:/{GLUSTER_PREFIX}{dir_name}"], (path, mounted)


def test_the_bricks_are_roots_alone(host):
    """The users' files are on the hub under the bricks' directory: only through the mounts."""
    storage = Path(__file__).parents[1] / "host_vars" / "cluster-hub" / "storage.yml"
    bricks = host.file(yaml.safe_load(storage.read_text())["swarm_gluster_bricks_dir"])
    assert (bricks.user, bricks.group, bricks.mode) == ("root", "root", 0o700)


def test_the_shared_volumes_accept_the_members_only(host):
    members = sorted(address(name) for name in ("cluster-hub", *WORKERS))
    for dir_name in SHARED_DIRS:
        answer = host.run_test(f"gluster volume get {GLUSTER_PREFIX}{dir_name} auth.allow")
        assert answer.stdout.splitlines()[-1].split()[-1] == ",".join(members)


def test_logins_spread_sessions_over_both_workers(host, pebble_root):
    alice = browse(host, "alice", pebble_root)
    bob = browse(host, "bob", pebble_root)
    assert alice["env"]["SERVICEHUB_USER"] == "alice@example.org"
    assert bob["env"]["SERVICEHUB_USER"] == "bob@example.org"
    nodes = session_nodes(host)
    assert sorted(nodes) == ["alice@example.org", "bob@example.org"], nodes
    placed = {n for placements in nodes.values() for n in placements}
    assert placed == set(WORKERS), nodes


def connects(name, target, port):
    """Whether a container on worker ``name``'s default bridge, as a session sits, opens a TCP
    connection to ``target:port`` (a fresh container: nested ones cannot be entered here)."""
    probe = (
        "import socket; s = socket.socket(); s.settimeout(3); "
        f"print('reached' if s.connect_ex(({target!r}, {port})) == 0 else 'blocked')"
    )
    out = worker(name).run(
        f"docker run --rm --user 1000:1000 {IMAGE} python3 -c {shlex.quote(probe)}"
    )
    assert out.rc == 0, out.stderr
    return out.stdout.strip() == "reached"


def published_port(host, user):
    """The port the session's task publishes on its worker, as the manager reports it."""
    service = host.run_test(
        f"docker service ls -q --filter label=servicehub.user={user}"
    ).stdout.split()[0]
    task = host.run_test(
        f"docker service ps -q --filter desired-state=running {service}"
    ).stdout.split()[0]
    template = "{{ (index .Status.PortStatus.Ports 0).PublishedPort }}"
    return int(host.run_test(f"docker inspect -f {format_arg(template)} {task}").stdout)


def test_a_session_on_a_worker_reaches_no_other_session_nor_any_members_service(host, pebble_root):
    browse(host, "alice", pebble_root)
    browse(host, "bob", pebble_root)
    nodes = session_nodes(host)
    (alice_node,) = nodes["alice@example.org"]
    (bob_node,) = nodes["bob@example.org"]
    hub = address("cluster-hub")
    bob_port = published_port(host, "bob@example.org")
    # The hub reaches bob's session at its worker's published port (Traefik's route does).
    assert host.run(f"curl -sf -o /dev/null http://{address(bob_node)}:{bob_port}/healthz").rc == 0
    # A session on alice's worker does not: not bob's session, not the Swarm ports of the
    # manager or of any worker, not the hub's own services.
    assert not connects(alice_node, address(bob_node), bob_port)
    assert not connects(alice_node, hub, 2377)
    assert not connects(alice_node, address(bob_node), 7946)
    assert not connects(alice_node, address(alice_node), 7946)
    assert not connects(alice_node, hub, TRAEFIK_WEB_PORT)
    assert not connects(alice_node, hub, DAEMON_PORT)
    assert not connects(alice_node, hub, GLUSTERD_PORT)  # users' data: through its mount only


def test_only_members_reach_the_swarm_ports(host):
    # This controller is on the cluster's network but no member: refused at every node.
    import socket

    for name in ("cluster-hub", *WORKERS):
        with socket.socket() as s:
            s.settimeout(3)
            assert s.connect_ex((address(name), 2377 if name == "cluster-hub" else 7946)) != 0
    # GlusterFS, which serves the users' directories: a worker reaches it, this machine not.
    hub = address("cluster-hub")
    assert worker(WORKERS[0]).run(f"timeout 3 bash -c '</dev/tcp/{hub}/{GLUSTERD_PORT}'").rc == 0
    with socket.socket() as s:
        s.settimeout(3)
        assert s.connect_ex((hub, GLUSTERD_PORT)) != 0
