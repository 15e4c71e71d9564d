"""The spawn's name-conflict path, driven by a scripted engine: adopt, replace or wait out."""

import pytest

from servicehub.backend import DockerBackend, SpawnError, counters_from_stats
from servicehub.config import parse_config
from servicehub.docker_client import DockerError

CONFIG = parse_config({"hub": "h", "apps": {"a": {"image": "img"}}})
NAME = "h-a-alice-x"


def container(state, app="a", slug="alice-x", cid="old"):
    labels = {"servicehub.hub": "h", "servicehub.app": app, "servicehub.slug": slug}
    return {"Id": cid, "Name": "/" + NAME, "Config": {"Labels": labels}, "State": {"Status": state}}


class Engine:
    """Answers create and inspect from a script; records every call."""

    def __init__(self, creates, inspects):
        self.creates, self.inspects, self.calls = list(creates), list(inspects), []

    async def request(self, method, path, *, params=None, body=None, timeout=60):
        self.calls.append((method, path))
        if path == "/containers/create":
            answer = self.creates.pop(0)
        elif method == "GET" and path.endswith("/json"):
            answer = self.inspects.pop(0)
        else:
            return None
        if isinstance(answer, Exception):
            raise answer
        return answer


def conflict():
    return DockerError(409, f'Conflict. The container name "/{NAME}" is already in use')


async def create(engine):
    backend = DockerBackend(CONFIG, client=engine)
    return await backend._create(CONFIG.apps["a"], "alice-x", NAME, {})


async def test_waits_while_the_old_container_is_being_removed_then_creates():
    engine = Engine(
        creates=[conflict(), conflict(), {"Id": "new"}],
        inspects=[container("removing"), DockerError(404, "gone")],
    )
    assert await create(engine) == "new"
    assert ("DELETE", "/containers/old") not in engine.calls


async def test_adopts_a_running_container_of_the_same_session():
    engine = Engine(creates=[conflict()], inspects=[container("running")])
    assert await create(engine) == "old"


async def test_replaces_a_stopped_container_of_the_same_session():
    engine = Engine(creates=[conflict(), {"Id": "new"}], inspects=[container("exited")])
    assert await create(engine) == "new"
    assert ("DELETE", "/containers/old") in engine.calls


async def test_refuses_a_foreign_container_with_the_name():
    engine = Engine(creates=[conflict()], inspects=[container("running", slug="mallory-y")])
    with pytest.raises(SpawnError, match="in the way"):
        await create(engine)


def test_counters_from_docker_stats():
    stats = {
        "read": "2026-11-26T12:57:26.525373531Z",
        "networks": {"eth0": {"rx_bytes": 100, "tx_bytes": 20}, "eth1": {"rx_bytes": 3}},
        "cpu_stats": {"cpu_usage": {"total_usage": 5_000_000_000}},
    }
    counters = counters_from_stats(stats)
    assert counters is not None
    assert (counters.net_bytes, counters.cpu_ns) == (123, 5_000_000_000)
    assert counters.read == pytest.approx(1795697846.525373)
    stopped = {"read": "0001-01-01T00:00:00Z", "cpu_stats": {"cpu_usage": {"total_usage": 0}}}
    assert counters_from_stats(stopped) is None


def test_memory_from_docker_stats_leaves_out_the_droppable_page_cache():
    """Where the daemon's sandbox hides the container's processes (ProtectProc=invisible), the
    admin view's memory comes from Docker's stats; cgroup v2 and v1 name the cache differently."""
    base = {"read": "2026-11-26T12:57:26Z", "cpu_stats": {"cpu_usage": {"total_usage": 1}}}
    v2 = {**base, "memory_stats": {"usage": 50_000_000, "stats": {"inactive_file": 8_000_000}}}
    v1 = {**base, "memory_stats": {"usage": 50_000_000, "stats": {"total_inactive_file": 1000}}}
    assert counters_from_stats(v2).memory_bytes == 42_000_000
    assert counters_from_stats(v1).memory_bytes == 49_999_000
    assert counters_from_stats(base).memory_bytes is None
