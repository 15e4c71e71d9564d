"""The Swarm backend's pure parts (service spec, task states, listings) and its calls to a
scripted manager: what it asks the API, not what a real swarm does (tests/integration/
test_swarm.py does that)."""

import json
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from servicehub import swarm
from servicehub.backend import SpawnError, container_spec
from servicehub.backend_config import SwarmConfig
from servicehub.config import ConfigError, parse_config
from servicehub.counters import Counters
from servicehub.swarm import Node, SwarmBackend

APP = {"image": "img", "port": 8888, "limits": {"memory": "2g", "cpus": 2, "pids": 300}}
CONFIG = parse_config({"hub": "h", "backend": {"type": "swarm"}, "apps": {"nb": APP}})
NB = CONFIG.apps["nb"]
NODES = {
    "m": Node("m", "manager", "ready", "active", "10.0.0.1"),
    "w1": Node("w1", "worker", "ready", "active", "10.0.0.2"),
    "w2": Node("w2", "worker", "down", "active", "10.0.0.3"),
    "w3": Node("w3", "worker", "unknown", "active", "10.0.0.4"),
}


def spec(**swarm_settings):
    return swarm.service_spec(
        "h", NB, "alice@example.org", "alice-x", SwarmConfig(**swarm_settings), ["c"], []
    )


# --- configuration --------------------------------------------------------------------------
def test_single_host_stays_the_default():
    config = parse_config({"apps": {"nb": APP}})
    assert config.backend.type == "docker"


def test_swarm_settings_are_read_and_checked_by_key():
    config = parse_config(
        {
            "backend": {
                "type": "swarm",
                "swarm": {"sessions_on_manager": True, "cpu_reservation": 0.5},
            },
            "apps": {"nb": APP},
        }
    )
    assert config.backend.swarm.sessions_on_manager
    assert config.backend.swarm.cpu_reservation == 0.5
    with pytest.raises(ConfigError) as bad:
        parse_config({"backend": {"type": "kubernetes"}, "apps": {"nb": APP}})
    assert bad.value.key == "backend.type"
    with pytest.raises(ConfigError) as bad:
        parse_config(
            {"backend": {"type": "swarm", "swarm": {"memory_reservation": 2}}, "apps": {"nb": APP}}
        )
    assert bad.value.key == "backend.swarm.memory_reservation"


@pytest.mark.parametrize(
    ("setting", "key"),
    [
        ({"shm_size": "128m"}, "apps.nb.shm_size"),
        ({"tmpfs": {"/tmp": "rw,exec,size=64m"}}, "apps.nb.tmpfs./tmp"),
        ({"networks": ["extra"]}, "apps.nb.networks"),
    ],
)
def test_settings_a_service_cannot_carry_are_refused_with_swarm_only(setting, key):
    app = APP | setting
    parse_config({"apps": {"nb": app}})  # fine on a single host
    with pytest.raises(ConfigError) as bad:
        parse_config({"backend": {"type": "swarm"}, "apps": {"nb": app}})
    assert bad.value.key == key


# --- the service spec -------------------------------------------------------------------------
def test_a_session_service_keeps_the_containers_isolation_and_identity():
    service = spec()
    container = container_spec("h", NB, "alice@example.org", "alice-x")
    task = service["TaskTemplate"]
    cs = task["ContainerSpec"]
    assert service["Name"] == "h-nb-alice-x"
    assert cs["User"] == container["User"] == "1000:1000"
    assert cs["ReadOnly"] is True
    assert cs["CapabilityDrop"] == ["ALL"] and cs["CapabilityAdd"] == []
    assert cs["Env"] == container["Env"]
    for labels in (service["Labels"], cs["Labels"]):
        assert {k: v for k, v in labels.items() if k != "servicehub.created"} == {
            k: v for k, v in container["Labels"].items() if k != "servicehub.created"
        }
    assert task["Resources"]["Limits"] == {
        "MemoryBytes": 2 * 1024**3,
        "NanoCPUs": 2_000_000_000,
        "Pids": 300,
    }
    tmp = [m for m in cs["Mounts"] if m["Type"] == "tmpfs"]
    assert tmp == [{"Type": "tmpfs", "Target": "/tmp", "TmpfsOptions": {"SizeBytes": 64 << 20}}]


def test_a_session_service_is_one_unrestarted_task_reached_on_its_nodes_port():
    service = spec()
    assert service["Mode"] == {"Replicated": {"Replicas": 1}}
    assert service["TaskTemplate"]["RestartPolicy"]["Condition"] == "none"
    assert service["TaskTemplate"]["Placement"] == {"Constraints": ["c"]}
    assert service["EndpointSpec"] == {
        "Mode": "dnsrr",
        "Ports": [{"Protocol": "tcp", "TargetPort": 8888, "PublishMode": "host"}],
    }
    assert "Networks" not in service["TaskTemplate"]  # no overlay: see docs/cluster.md


def test_reservations_are_shares_of_the_limits():
    reserved = spec(memory_reservation=0.5, cpu_reservation=0.25)["TaskTemplate"]["Resources"]
    assert reserved["Reservations"] == {"MemoryBytes": 1024**3, "NanoCPUs": 500_000_000}


def test_entrypoint_and_command_map_to_command_and_args():
    config = parse_config(
        {
            "backend": {"type": "swarm"},
            "apps": {"nb": APP | {"entrypoint": ["/bin/app"], "command": ["--port", "8888"]}},
        }
    )
    cs = swarm.service_spec("h", config.apps["nb"], "u", "s", SwarmConfig(), [], [])[
        "TaskTemplate"
    ]["ContainerSpec"]
    assert (cs["Command"], cs["Args"]) == (["/bin/app"], ["--port", "8888"])


def test_sessions_stay_off_the_manager_while_a_worker_is_up():
    assert swarm.placement(SwarmConfig(), NODES.values()) == ["node.role==worker"]
    assert swarm.placement(SwarmConfig(sessions_on_manager=True), NODES.values()) == []
    manager_only = [NODES["m"], NODES["w2"]]  # the only worker is down
    assert swarm.placement(SwarmConfig(), manager_only) == []


# --- tasks and sessions -------------------------------------------------------------------------
def task(state, node="w1", desired="running", index=1, service="s1", port=30001, exit_code=0):
    status = {"State": state, "ContainerStatus": {"ExitCode": exit_code}}
    if port:
        status["PortStatus"] = {
            "Ports": [
                {
                    "Protocol": "tcp",
                    "TargetPort": 8888,
                    "PublishedPort": port,
                    "PublishMode": "host",
                }
            ]
        }
    return {
        "ID": f"t{index}",
        "ServiceID": service,
        "NodeID": node,
        "DesiredState": desired,
        "Version": {"Index": index},
        "Status": status,
    }


def service(sid="s1", slug="alice-x"):
    labels = {
        "servicehub.hub": "h",
        "servicehub.app": "nb",
        "servicehub.slug": slug,
        "servicehub.user": "alice@example.org",
        "servicehub.created": "2026-12-01T10:00:00.000Z",
    }
    return {"ID": sid, "Spec": {"Name": f"h-nb-{slug}", "Labels": labels}}


@pytest.mark.parametrize(
    ("state", "node", "expected"),
    [
        ("pending", "w1", "created"),
        ("preparing", "w1", "created"),
        ("running", "w1", "running"),
        ("running", "w2", "lost"),  # its node is down
        ("running", "w3", "running"),  # the manager restarted and has not heard from it yet
        ("complete", "w1", "exited"),
        ("failed", "w1", "exited"),
        ("rejected", "w1", "exited"),
        ("shutdown", "w1", "exited"),
        ("remove", "w1", "removing"),
    ],
)
def test_task_states_map_to_container_states(state, node, expected):
    assert swarm.task_state(task(state, node), NODES)[0] == expected


def test_a_running_session_is_reached_at_its_nodes_address_and_published_port():
    info = swarm.session_info(service(), task("running"), NODES)
    assert (info.container_id, info.name, info.app, info.slug) == (
        "s1",
        "h-nb-alice-x",
        "nb",
        "alice-x",
    )
    assert info.user == "alice@example.org"
    assert info.created == datetime(2026, 12, 1, 10, tzinfo=UTC)
    assert info.running and info.url(8888) == "http://10.0.0.2:30001"


def test_a_session_not_running_has_no_address_but_its_exit_code():
    info = swarm.session_info(service(), task("failed", exit_code=3), NODES)
    assert (info.state, info.exit_code, info.address, info.url(8888)) == ("exited", 3, None, None)
    info = swarm.session_info(service(), None, NODES)
    assert (info.state, info.address) == ("created", None)


def test_the_task_swarm_wants_running_stands_for_the_session():
    old = task("failed", desired="shutdown", index=9)
    new = task("running", index=5)
    assert swarm.current_task([old, new]) is new
    assert swarm.current_task([old]) is old
    assert swarm.current_task([]) is None


def test_one_listing_gives_every_session():
    services = [service("s1", "alice-x"), service("s2", "bob-y")]
    tasks = [task("running", service="s1"), task("pending", service="s2", port=None, index=2)]
    tasks.append(task("running", service="other-hubs", index=3))
    found = {i.slug: i.state for i in swarm.sessions_from(services, tasks, NODES)}
    assert found == {"alice-x": "running", "bob-y": "created"}


def test_changes_between_listings_read_like_container_events():
    before = {
        "s1": swarm.session_info(service("s1", "a"), task("running"), NODES),
        "s2": swarm.session_info(service("s2", "b"), task("running", service="s2"), NODES),
        "s3": swarm.session_info(service("s3", "c"), task("pending", port=None), NODES),
    }
    after = {
        "s1": swarm.session_info(service("s1", "a"), task("running", node="w2"), NODES),
        "s3": swarm.session_info(service("s3", "c"), task("running"), NODES),
    }
    events = {(e.action, e.slug) for e in swarm.session_changes(before, after)}
    assert events == {("die", "a"), ("destroy", "b"), ("start", "c")}


# --- the backend against a scripted manager -------------------------------------------------
class Manager:
    """A swarm manager's API from a script: services, tasks (a sequence per poll), nodes."""

    def __init__(self, services, task_answers, nodes=None):
        self.services = services
        self.task_answers = list(task_answers)
        self.nodes = nodes if nodes is not None else _node_docs()
        self.calls = []
        self.created = []

    async def request(self, method, path, *, params=None, body=None, timeout=60):
        self.calls.append((method, path))
        if path == "/services" and method == "GET":
            return self.services
        if path == "/services/create":
            self.created.append(body)
            self.services = [service("new", body["Labels"]["servicehub.slug"])]
            return {"ID": "new"}
        if path.startswith("/services/") and method == "GET":
            return self.services[0]
        if path == "/tasks":
            return self.task_answers.pop(0) if len(self.task_answers) > 1 else self.task_answers[0]
        if path == "/nodes":
            return self.nodes
        return None

    async def close(self):
        pass


def _node_docs():
    return [
        {
            "ID": n.id,
            "Spec": {"Role": n.role, "Availability": n.availability},
            "Status": {"State": n.state, "Addr": n.address},
        }
        for n in NODES.values()
    ]


async def test_listing_costs_three_calls_however_many_sessions_run():
    services = [service(f"s{i}", f"u{i}-x") for i in range(500)]
    tasks = [task("running", service=f"s{i}", index=i) for i in range(500)]
    manager = Manager(services, [tasks])
    found = await SwarmBackend(CONFIG, client=manager).list_sessions(detailed=True)
    assert len(found) == 500 and all(i.running for i in found)
    assert len(manager.calls) == 3


async def test_spawn_creates_the_service_off_the_manager_and_waits_until_it_runs():
    pending = [task("pending", service="new", port=None)]
    manager = Manager([], [pending, pending, [task("running", service="new")]])
    info = await SwarmBackend(CONFIG, client=manager).spawn(NB, "alice@example.org", "alice-x")
    assert info.running and info.url(8888) == "http://10.0.0.2:30001"
    (created,) = manager.created
    assert created["TaskTemplate"]["Placement"]["Constraints"] == ["node.role==worker"]


async def test_a_full_swarm_is_told_to_the_user_and_the_service_removed(monkeypatch):
    monkeypatch.setattr(swarm, "CAPACITY_WAIT", 0.0)
    waiting = task("pending", service="new", port=None)
    waiting["Status"]["Err"] = "no suitable node (insufficient resources on 2 nodes)"
    manager = Manager([], [[waiting]])
    with pytest.raises(SpawnError, match="room"):
        await SwarmBackend(CONFIG, client=manager).spawn(NB, "alice@example.org", "alice-x")
    assert ("DELETE", "/services/new") in manager.calls


async def test_a_task_that_ends_while_starting_comes_back_with_its_exit_code():
    manager = Manager([], [[task("failed", service="new", exit_code=2, port=None)]])
    info = await SwarmBackend(CONFIG, client=manager).spawn(NB, "alice@example.org", "alice-x")
    assert (info.state, info.exit_code) == ("exited", 2)


async def test_a_task_no_node_could_make_is_an_error_without_host_details():
    rejected = task("rejected", service="new", port=None)
    rejected["Status"]["Err"] = "invalid mount config: bind source path does not exist: /srv/x"
    manager = Manager([], [[rejected]])
    with pytest.raises(SpawnError) as failed:
        await SwarmBackend(CONFIG, client=manager).spawn(NB, "alice@example.org", "alice-x")
    assert "/srv" not in str(failed.value)
    assert ("DELETE", "/services/new") in manager.calls


# --- room on the nodes ----------------------------------------------------------------------
GIB = 1024**3


def node_doc(node_id, role="worker", state="ready", availability="active", cpus=4, memory=8):
    return {
        "ID": node_id,
        "Spec": {"Role": role, "Availability": availability},
        "Status": {"State": state, "Addr": "10.0.0.9"},
        "Description": {"Resources": {"NanoCPUs": cpus * 10**9, "MemoryBytes": memory * GIB}},
    }


def placed(node_id, state="running", cpus=0.5, memory=2):
    held = task(state, node=node_id)
    held["Spec"] = {
        "Resources": {"Reservations": {"NanoCPUs": int(cpus * 1e9), "MemoryBytes": memory * GIB}}
    }
    return held


def test_free_room_is_each_eligible_nodes_resources_less_its_tasks_reservations():
    nodes = [
        node_doc("m", role="manager"),
        node_doc("w1"),
        node_doc("w2", state="down"),
        node_doc("w3", availability="drain"),
        node_doc("w4", memory=4),
    ]
    tasks = [
        placed("w1"),
        placed("w1", state="starting"),
        placed("w1", state="complete"),  # ended: its place is free again
        placed("w4", memory=3),
        {**placed("w4"), "NodeID": ""},  # pending: on no node yet
    ]
    rooms = swarm.free_room(nodes, tasks, ["node.role==worker"])
    assert rooms == [swarm.Room("w1", 3 * 10**9, 4 * GIB), swarm.Room("w4", 3_500_000_000, GIB)]
    with_manager = swarm.free_room(nodes, tasks, [])
    assert [r.node for r in with_manager] == ["m", "w1", "w4"]


def test_a_session_fits_where_one_node_holds_both_its_cpu_and_memory_reservations():
    rooms = [swarm.Room("w1", 10**9, 1 * GIB), swarm.Room("w2", 4 * 10**9, GIB // 2)]
    assert swarm.can_hold(rooms, 10**9, GIB)
    assert not swarm.can_hold(rooms, 2 * 10**9, GIB)  # CPU on w2 only, memory on w1 only
    assert not swarm.can_hold([], 0, 0)


def test_sessions_still_being_placed_take_their_room_where_they_first_fit():
    rooms = [swarm.Room("w1", 10**9, GIB), swarm.Room("w2", 4 * 10**9, 4 * GIB)]
    left = swarm.room_after(rooms, [(10**9, 2 * GIB), (10**9, GIB)])
    assert left == [swarm.Room("w1", 0, 0), swarm.Room("w2", 3 * 10**9, 2 * GIB)]


async def test_room_is_asked_in_two_calls_with_the_apps_reservations():
    # nb reserves all of its 2 GiB and a quarter of its 2 CPUs (the defaults).
    nodes = [node_doc("w1", cpus=2, memory=4)]
    manager = Manager([], [[placed("w1", cpus=1, memory=1)]], nodes=nodes)
    backend = SwarmBackend(CONFIG, client=manager)
    assert await backend.has_room(NB, [])
    assert not await backend.has_room(NB, [NB])  # one more nb on its way takes that room
    manager.task_answers = [[placed("w1", cpus=1, memory=3)]]
    assert not await backend.has_room(NB, [])
    assert manager.calls.count(("GET", "/nodes")) == manager.calls.count(("GET", "/tasks")) == 3


async def test_a_session_no_node_could_ever_hold_does_not_wait_for_room():
    # Waiting would not help: the spawn goes ahead and tells the person (the fallback).
    manager = Manager([], [[]], nodes=[node_doc("w1", memory=1)])
    assert await SwarmBackend(CONFIG, client=manager).has_room(NB, [])
    assert ("GET", "/tasks") not in manager.calls


# --- counters from the nodes' collector files ----------------------------------------------
def test_the_counters_directory_is_an_absolute_path():
    assert CONFIG.backend.swarm.counters_dir == Path("/var/lib/servicehub-counters")
    with pytest.raises(ConfigError) as bad:
        parse_config(
            {
                "backend": {"type": "swarm", "swarm": {"counters_dir": "counters"}},
                "apps": {"nb": APP},
            }
        )
    assert bad.value.key == "backend.swarm.counters_dir"


def write_node(directory, node, sessions, written=None):
    doc = {
        "node": node,
        "written": time.time() if written is None else written,
        "sessions": {
            s: Counters(r, n, 0, 7, boot=node).to_json() for s, (r, n) in sessions.items()
        },
    }
    (directory / f"{node}.json").write_text(json.dumps(doc))


async def test_counters_are_the_nodes_samples_read_once_per_short_period(tmp_path):
    config = parse_config(
        {
            "hub": "h",
            "backend": {"type": "swarm", "swarm": {"counters_dir": str(tmp_path)}},
            "apps": {"nb": APP},
        }
    )
    backend = SwarmBackend(config, client=Manager([], [[]]))
    clock = [100.0]
    backend.clock = lambda: clock[0]
    write_node(tmp_path, "n1", {"s1": (10.0, 1)})
    write_node(tmp_path, "n2", {"s2": (20.0, 2)})
    write_node(tmp_path, "n3", {"s3": (30.0, 3)}, written=time.time() - 3600)  # stale
    assert (await backend.counters("s1", 4242)) == Counters(10.0, 1, 0, 7, boot="n1")
    assert (await backend.counters("s2")).net_bytes == 2
    assert await backend.counters("s3") is None
    write_node(tmp_path, "n1", {"s1": (30.0, 5)})
    clock[0] += swarm.COUNTERS_TTL / 2
    assert (await backend.counters("s1")).net_bytes == 1  # the same reading
    clock[0] += swarm.COUNTERS_TTL
    assert (await backend.counters("s1")).net_bytes == 5
    assert backend.docker.calls == []  # the files only, never the engine
