"""Day 2 on the converged cluster, with the playbooks an operator runs (playbooks/): drain, add
and remove a worker; then a worker dies. After test_cluster.py (pytest runs the files in name
order): these change the cluster, and the last one kills a worker."""

import json
import os
import re
import subprocess
import time

from test_cluster import (
    ROLES,
    ROOT,
    ROUTES_DIR,
    SHARED_DIRS,
    WORKERS,
    address,
    browse,
    format_arg,
    published_port,
    role_value,
    session_nodes,
    worker,
)

testinfra_hosts = ["ansible://cluster-hub"]
DAEMON_UNIT = role_value("servicehub", "vars", "__servicehub_unit")
COUNTERS_TIMER = role_value("servicehub", "vars", "__servicehub_counters_timer")
RECAP = r"^(\S+)\s+: ok=\d+\s+changed=(\d+)"


def playbook(host, name, worker):
    """Run playbooks/NAME for ``worker``; each host's changed count from the recap."""
    assert os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY"), "run by molecule verify"
    env = {
        **os.environ,
        "ANSIBLE_ROLES_PATH": str(ROLES),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",  # molecule's environment forces colour on
    }
    inventory = host.backend.ansible_inventory
    command = ["ansible-playbook", "-i", inventory, f"playbooks/{name}", "-e", f"worker={worker}"]
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=900)
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-2000:]
    recap = re.sub(r"\x1b\[[0-9;]*m", "", done.stdout)
    return {m[1]: int(m[2]) for m in re.finditer(RECAP, recap, re.M)}


def write_note(host, user, node, text):
    """PUT /data/note to ``user``'s session on ``node`` from the hub, as Traefik reaches it: the
    app writes the file into its /data (the nested containers cannot be entered here)."""
    url = f"http://{address(node)}:{published_port(host, user)}/data/note"
    put = host.run(f"curl -sS --fail -X PUT --data-binary {text} {url}")
    assert put.rc == 0 and put.stdout.startswith("stored"), put.stdout + put.stderr


def read_note(host, user, pebble_root):
    """GET /data/note through Apache and the user's session, wherever it runs."""
    name = user.split("@")[0]
    cmd = host.run(
        f"hubclient --user {name} --password {name}-password --ca {pebble_root} --path /data/note"
    )
    assert cmd.rc == 0, cmd.stderr + cmd.stdout
    result = json.loads(cmd.stdout)
    assert result["status"] == 200, result
    return result["body"].strip()


def availability(host, name):
    template = format_arg("{{ .Spec.Availability }}")
    return host.run_test(f"docker node inspect -f {template} {name}").stdout.strip()


def running_on(host, name):
    return host.run_test(f"docker node ps -q --filter desired-state=running {name}").stdout.split()


def test_drain_ends_a_workers_sessions_and_their_next_request_runs_elsewhere(host, pebble_root):
    browse(host, "alice", pebble_root)
    browse(host, "bob", pebble_root)
    (drained,) = session_nodes(host)["alice@example.org"]
    (other,) = set(WORKERS) - {drained}
    write_note(host, "alice@example.org", drained, "written-on-" + drained)
    assert playbook(host, "drain-worker.yml", drained)["cluster-hub"] > 0
    assert availability(host, drained) == "drain"
    assert running_on(host, drained) == []
    browse(host, "alice", pebble_root)
    assert session_nodes(host)["alice@example.org"] == [other]
    # Her data followed her: the file her session wrote on one worker, read on the other.
    assert read_note(host, "alice@example.org", pebble_root) == "written-on-" + drained
    assert set(playbook(host, "drain-worker.yml", drained).values()) == {0}


def test_add_worker_puts_a_drained_worker_back(host):
    (drained,) = [name for name in WORKERS if availability(host, name) == "drain"]
    assert playbook(host, "add-worker.yml", drained)["cluster-hub"] > 0
    assert availability(host, drained) == "active"
    assert set(playbook(host, "add-worker.yml", drained).values()) == {0}


def members(host):
    return host.run_test("nft list set inet servicehub_swarm members").stdout


def test_remove_worker_then_add_it_again(host, pebble_root):
    gone = "cluster-w2"
    gone_address = address(gone)
    changed = playbook(host, "remove-worker.yml", gone)
    assert changed["cluster-hub"] > 0 and changed[gone] > 0  # it leaves, unmounts; rules stay
    names = host.run_test("docker node ls --format " + format_arg("{{ .Hostname }}")).stdout
    assert sorted(names.split()) == ["cluster-hub", "cluster-w1"]
    state = format_arg("{{ .Swarm.LocalNodeState }}")
    assert worker(gone).run_test(f"docker info -f {state}").stdout.strip() == "inactive"
    assert gone_address not in members(host)
    for path in SHARED_DIRS.values():
        assert worker(gone).run(f"findmnt {path}").rc != 0, path
    assert not worker(gone).service(COUNTERS_TIMER).is_running
    assert set(playbook(host, "remove-worker.yml", gone).values()) == {0}

    assert playbook(host, "add-worker.yml", gone)[gone] > 0
    nodes = host.run_test(
        "docker node ls --format " + format_arg("{{.Hostname}} {{.Status}} {{.Availability}}")
    ).stdout.splitlines()
    assert sorted(nodes) == [
        "cluster-hub Ready Active",
        "cluster-w1 Ready Active",
        "cluster-w2 Ready Active",
    ]
    assert address(gone) in members(host)
    for path in SHARED_DIRS.values():
        assert worker(gone).run_test(f"findmnt -n -o FSTYPE {path}").stdout.strip() == (
            "fuse.glusterfs"
        )
    assert worker(gone).service(COUNTERS_TIMER).is_running


def test_a_dead_worker_loses_its_sessions_and_the_next_request_runs_elsewhere(host, pebble_root):
    """The last check of the scenario: a worker is killed with everything on it."""
    browse(host, "bob", pebble_root)
    (dead,) = session_nodes(host)["bob@example.org"]
    service = host.run_test(
        "docker service ls --filter label=servicehub.user=bob@example.org --format "
        + format_arg("{{ .Name }}")
    ).stdout.strip()

    def routed():  # the service's name is its router's
        return service in host.run_test(f"cat {ROUTES_DIR}/*.yml").stdout

    assert routed()
    subprocess.run(["docker", "kill", dead], check=True, capture_output=True)
    died = time.monotonic()
    while routed():
        if time.monotonic() - died > 60:
            nodes = host.run("docker node ls").stdout
            journal = host.run(f"journalctl -u {DAEMON_UNIT} --no-pager -n 40 -o cat").stdout
            raise AssertionError(
                f"the route of a dead worker's session outlived a minute:\n{nodes}\n{journal}"
            )
        time.sleep(1)
    browse(host, "bob", pebble_root)
    (other,) = set(WORKERS) - {dead}
    assert session_nodes(host)["bob@example.org"] == [other]
