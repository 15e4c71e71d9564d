"""The counters collector on every member (docs/cluster.md, "The reaper across machines"): the
worker that runs a session writes its network and CPU counters to the shared counters
directory, and the hub's reaper reads them there. After test_cluster.py, before test_day2.py
(pytest runs the files in name order)."""

import json
import time

import pytest
from test_cluster import WORKERS, browse, format_arg, role_value, session_nodes, worker

testinfra_hosts = ["ansible://cluster-hub"]
COUNTERS_DIR = role_value("servicehub", "defaults", "servicehub_swarm_counters_dir")
UNIT = role_value("servicehub", "vars", "__servicehub_counters_unit")
TIMER = role_value("servicehub", "vars", "__servicehub_counters_timer")
NODE_LIB = role_value("servicehub", "vars", "__servicehub_node_lib")
REAPER_UNIT = "servicehub-reaper.service"
# The timer runs every 20 s; the shared filesystem carries the file to the hub at once.
WAIT = 90


def journal(node, unit):
    return node.run(f"journalctl -u {unit} -n 40 --no-pager").stdout


@pytest.mark.parametrize("name", ["cluster-hub", *WORKERS])
def test_every_member_runs_the_collector_sandboxed(name):
    node = worker(name)
    assert node.service(TIMER).is_enabled and node.service(TIMER).is_running
    assert node.service(UNIT).is_valid, journal(node, UNIT)
    assert node.file(f"{NODE_LIB}/servicehub/node_counters.py").exists
    shown = node.run_test(
        f"systemctl show {UNIT} -p ProtectSystem -p CapabilityBoundingSet -p PrivateNetwork "
        "-p NoNewPrivileges -p ReadWritePaths"
    ).stdout
    for setting in (
        "ProtectSystem=strict",
        "CapabilityBoundingSet=\n",
        "PrivateNetwork=yes",
        "NoNewPrivileges=yes",
        f"ReadWritePaths={COUNTERS_DIR}",
    ):
        assert setting in shown + "\n", shown
    # Started by its timer at least once since converge, and it ended well.
    poll = time.monotonic() + WAIT
    while node.run(f"systemctl show {UNIT} -p ExecMainStartTimestampMonotonic").stdout.strip() in (
        "ExecMainStartTimestampMonotonic=0",
        "",
    ):
        assert time.monotonic() < poll, journal(node, UNIT)
        time.sleep(1)
    result = node.run_test(f"systemctl show {UNIT} -p Result").stdout.strip()
    assert result == "Result=success", journal(node, UNIT)


def node_file(host, node_id):
    """The node's counters file as the hub sees it on the shared directory; None if absent or
    being replaced."""
    found = host.run(f"cat {COUNTERS_DIR}/{node_id}.json")
    if found.rc != 0:
        return None
    try:
        return json.loads(found.stdout)
    except ValueError:
        return None


def sample_after(host, member, node_id, service_id, read_after):
    """The service's sample in its node's file, once one newer than ``read_after`` is there."""
    deadline = time.monotonic() + WAIT
    while True:
        data = node_file(host, node_id) or {}
        sample = (data.get("sessions") or {}).get(service_id)
        if sample is not None and sample["read"] > read_after:
            return data, sample
        assert time.monotonic() < deadline, (member, data, journal(worker(member), UNIT))
        time.sleep(2)


def test_the_hub_reads_the_counters_of_a_session_on_a_worker(host, pebble_root):
    browse(host, "alice", pebble_root)
    (placed,) = session_nodes(host)["alice@example.org"]
    name = host.run_test(
        "docker service ls --filter label=servicehub.app=whoami "
        "--filter label=servicehub.user=alice@example.org --format " + format_arg("{{.Name}}")
    ).stdout.strip()
    service_id = host.run_test(
        f"docker service inspect -f {format_arg('{{.ID}}')} {name}"
    ).stdout.strip()
    node_id = host.run_test(
        f"docker node inspect -f {format_arg('{{.ID}}')} {placed}"
    ).stdout.strip()

    data, first = sample_after(host, placed, node_id, service_id, float("-inf"))
    assert data["node"] == node_id and first["boot"]
    assert isinstance(first["net_bytes"], int) and isinstance(first["cpu_ns"], int)
    # The next sample counts the traffic of these logins.
    for _ in range(5):
        browse(host, "alice", pebble_root)
    _, second = sample_after(host, placed, node_id, service_id, first["read"])
    assert second["boot"] == first["boot"]
    assert second["net_bytes"] > first["net_bytes"], (first, second)

    # The reaper finds them: alice's session is not among those it has no counters for.
    since = host.run_test("date +%s").stdout.strip()
    host.run_test(f"systemctl start {REAPER_UNIT}")
    said = host.run_test(f"journalctl -u {REAPER_UNIT} --since @{since} -o cat --no-pager").stdout
    blind = [line for line in said.splitlines() if "no network or CPU counters" in line]
    assert not any(name in line for line in blind), said
