"""A swarm node's counters collector against a stand-in engine (a real HTTP server on a unix
socket) and a /proc and cgroup tree laid out as on a host; the hub's reader of its files."""

from __future__ import annotations

import json
import os
import shutil
import socketserver
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import ClassVar

import pytest

from servicehub import node_counters
from servicehub.counters import Counters
from servicehub.node_counters import (
    FILE_MODE,
    HUB_LABEL,
    SERVICE_LABEL,
    collect,
    hub_containers,
    read_samples,
    write_atomic,
)
from servicehub.session_info import LABEL

ROOT = Path(__file__).resolve().parents[2]
CID = "c" * 64
OTHER = "d" * 64
NET_DEV = (
    "Inter-|   Receive |  Transmit\n face |bytes packets|bytes packets\n"
    "    lo: 500 5 0 0 0 0 0 0 500 5 0 0 0 0 0 0\n"
    "  eth0: 1000 10 0 0 0 0 0 0 234 3 0 0 0 0 0 0\n"
)


def container(cid, service="svc1", hub="h"):
    return {"Id": cid, "Labels": {SERVICE_LABEL: service, HUB_LABEL: hub}}


def test_the_hubs_label_is_the_one_its_sessions_carry():
    assert f"{LABEL}.hub" == HUB_LABEL


def test_only_the_hubs_swarm_tasks_are_collected():
    found = hub_containers(
        [
            container(CID),
            container(OTHER, hub="another-hub"),
            {"Id": "e" * 64, "Labels": {HUB_LABEL: "h"}},  # a single-host session: no service
            {"Id": "f" * 64, "Labels": None},
        ],
        "h",
    )
    assert found == {CID: "svc1"}


def test_the_previous_pid_is_tried_before_the_engine_is_asked():
    reads = []

    def read(pid, cid):
        reads.append((pid, cid))
        return Counters(1.0, 2, 3, pid) if pid in (41, 42) else None

    inspected = []

    def inspect(cid):
        inspected.append(cid)
        return 42

    samples = collect({CID: "svc1", OTHER: "svc2"}, {"svc1": 41, "svc2": 99}, inspect, read)
    assert {s: c.pid for s, c in samples.items()} == {"svc1": 41, "svc2": 42}
    assert inspected == [OTHER]  # svc1's PID was still its container's


def test_one_container_that_fails_leaves_the_others():
    def inspect(cid):
        if cid == CID:
            raise OSError("gone")
        return 42

    samples = collect(
        {CID: "svc1", OTHER: "svc2"},
        {},
        inspect,
        lambda pid, cid: Counters(1, 2, 3, pid) if pid else None,
    )
    assert list(samples) == ["svc2"]


def test_a_write_replaces_the_file_whole_and_readable_by_all(tmp_path):
    path = tmp_path / "node1.json"
    path.write_text("old")
    write_atomic(path, '{"new": 1}', FILE_MODE)
    assert path.read_text() == '{"new": 1}'
    assert path.stat().st_mode & 0o777 == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["node1.json"]  # no temp file left


def node_file(directory, node, written, sessions):
    (directory / f"{node}.json").write_text(
        json.dumps({"node": node, "written": written, "sessions": sessions})
    )


def sample(read=5.0, net=10, cpu=20, boot="b1"):
    return Counters(read, net, cpu, 7, boot=boot).to_json()


def test_the_reader_takes_every_fresh_nodes_samples(tmp_path):
    node_file(tmp_path, "n1", 1000.0, {"svc1": sample(), "svc2": sample(net=11)})
    node_file(tmp_path, "n2", 990.0, {"svc3": sample(boot="b2")})
    found = read_samples(tmp_path, now=1010.0, stale_after=60)
    assert found["svc1"] == Counters(5.0, 10, 20, 7, boot="b1")
    assert (found["svc2"].net_bytes, found["svc3"].boot) == (11, "b2")


def test_the_reader_leaves_out_stale_and_damaged_files(tmp_path):
    node_file(tmp_path, "old", 900.0, {"svc1": sample()})  # its collector stopped
    (tmp_path / "half.json").write_text('{"node": "half", "writ')
    (tmp_path / "list.json").write_text("[1, 2]")
    node_file(tmp_path, "bad", "yesterday", {"svc2": sample()})
    node_file(tmp_path, "good", 1000.0, {"svc3": sample(), "svc4": {"read": "x"}, "svc5": 3})
    node_file(tmp_path, "noboot", 1000.0, {"svc6": sample(boot=None)})  # not a node's clock
    (tmp_path / ".good.json.abc.tmp").write_text("{}")  # a collector's write under way
    assert set(read_samples(tmp_path, now=1010.0, stale_after=60)) == {"svc3"}
    assert read_samples(tmp_path / "missing", now=1010.0) == {}


class Engine(BaseHTTPRequestHandler):
    """The three answers the collector asks a node's engine for."""

    answers: ClassVar[dict[str, object]] = {}
    asked: ClassVar[list[str]] = []

    def do_GET(self):
        path = self.path.split("?")[0]
        self.asked.append(path)
        body = json.dumps(self.answers.get(path, {"message": "no such thing"})).encode()
        self.send_response(200 if path in self.answers else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


@pytest.fixture
def engine(tmp_path):
    path = str(tmp_path / "docker.sock")
    server = UnixServer(path, Engine)
    Engine.asked = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield path
    server.shutdown()
    server.server_close()


def host(tmp_path):
    """PID 42 in container CID, on cgroup v2, with its network namespace's counters."""
    proc = tmp_path / "proc"
    (proc / "42" / "net").mkdir(parents=True)
    (proc / "42" / "net" / "dev").write_text(NET_DEV)
    (proc / "42" / "cgroup").write_text(f"0::/system.slice/docker-{CID}.scope\n")
    root = tmp_path / "cgroup"
    (root / "system.slice" / f"docker-{CID}.scope").mkdir(parents=True)
    (root / "cgroup.controllers").write_text("cpu memory\n")
    (root / "system.slice" / f"docker-{CID}.scope" / "cpu.stat").write_text("usage_usec 1500\n")
    boot = tmp_path / "boot_id"
    boot.write_text("the-boot\n")
    return proc, root, boot


def test_a_run_writes_the_nodes_file_of_its_sessions(tmp_path, engine):
    proc, root, boot = host(tmp_path)
    Engine.answers = {
        "/v1.41/info": {"Swarm": {"NodeID": "node1"}},
        "/v1.41/containers/json": [container(CID), container(OTHER, hub="another-hub")],
        f"/v1.41/containers/{CID}/json": {"State": {"Pid": 42}},
    }
    out = tmp_path / "counters"
    out.mkdir()
    run = node_counters.run
    assert run(out, "h", engine, proc=proc, cgroup_root=root, boot_id_path=str(boot)) == 0
    data = json.loads((out / "node1.json").read_text())
    assert data["node"] == "node1" and set(data["sessions"]) == {"svc1"}
    found = Counters.from_json(data["sessions"]["svc1"])
    assert (found.net_bytes, found.cpu_ns, found.pid, found.boot) == (
        1234,
        1_500_000,
        42,
        "the-boot",
    )
    assert Engine.asked.count(f"/v1.41/containers/{CID}/json") == 1
    # The next run finds the PID in the file: no inspect.
    assert run(out, "h", engine, proc=proc, cgroup_root=root, boot_id_path=str(boot)) == 0
    assert Engine.asked.count(f"/v1.41/containers/{CID}/json") == 1
    assert set(read_samples(out, now=data["written"])) == {"svc1"}


def test_an_engine_in_no_swarm_writes_nothing(tmp_path, engine):
    Engine.answers = {"/v1.41/info": {"Swarm": {"NodeID": ""}}}
    assert node_counters.run(tmp_path, "h", engine) == 0
    assert list(tmp_path.glob("*.json")) == []


def test_no_engine_is_a_failed_run_that_says_why(tmp_path, capsys):
    assert (
        node_counters.main(
            ["--dir", str(tmp_path), "--hub", "h", "--docker-socket", str(tmp_path / "none")]
        )
        == 1
    )
    assert "servicehub node counters:" in capsys.readouterr().err


def test_it_runs_from_the_four_files_a_worker_gets(tmp_path):
    """A worker has no servicehub package and no venv: only these files, the system python."""
    package = tmp_path / "servicehub"
    package.mkdir()
    for name in ("__init__.py", "counters.py", "files.py", "node_counters.py"):
        shutil.copy(ROOT / "servicehub" / name, package / name)
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    python = shutil.which("python3") or sys.executable
    done = subprocess.run(
        [python, "-s", "-m", "servicehub.node_counters", "--help"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "--dir" in done.stdout
