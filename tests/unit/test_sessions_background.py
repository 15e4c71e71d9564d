"""A request no person made never starts a container, even in the race where a ready session's
container was removed a moment ago and the engine's event has not been handled yet."""

import asyncio
from datetime import UTC, datetime

from servicehub.config import parse_config
from servicehub.locks import SessionLocks
from servicehub.routes import RouteStore
from servicehub.session_info import SessionInfo
from servicehub.session_state import Session, State
from servicehub.sessions import SessionManager


class GoneBackend:
    """An engine on which every container has just been removed."""

    def __init__(self):
        self.spawned = []

    async def get(self, app, slug):
        return None

    async def plan_address(self, app):
        return None

    async def spawn(self, app, user, slug, address=None, groups=frozenset()):
        self.spawned.append((app.name, slug))
        return SessionInfo("new", "c", app.name, slug, user, datetime.now(UTC), "running", 0, "x")


def manager(tmp_path):
    config = parse_config(
        {
            "apps": {"nb": {"image": "a"}},
            "state_dir": str(tmp_path / "state"),
            "traefik": {"routes_dir": str(tmp_path / "routes")},
        }
    )
    (tmp_path / "routes").mkdir()
    locks = SessionLocks(tmp_path / "state" / "locks")
    locks.prepare()
    return config, SessionManager(config, GoneBackend(), RouteStore(config), locks=locks)


async def settle(mgr):
    while mgr._tasks:
        await asyncio.gather(*list(mgr._tasks), return_exceptions=True)
    await mgr.close()


async def test_no_session_and_no_person_means_no_container(tmp_path):
    config, mgr = manager(tmp_path)
    assert await mgr.ensure(config.apps["nb"], "alice", "alice-x", may_spawn=False) is None
    assert mgr.backend.spawned == [] and mgr.get("nb", "alice-x") is None


async def test_a_background_request_forgets_a_ready_session_whose_container_is_gone(tmp_path):
    config, mgr = manager(tmp_path)
    ready = Session(
        app="nb", slug="alice-x", user="alice", state=State.READY, container_id="old", routed=True
    )
    mgr.sessions[("nb", "alice-x")] = ready
    session = await mgr.ensure(config.apps["nb"], "alice", "alice-x", may_spawn=False)
    assert session is ready
    await settle(mgr)
    assert mgr.backend.spawned == []
    assert mgr.get("nb", "alice-x") is None and ready.state == State.STOPPED


async def test_a_page_load_in_the_same_race_spawns_anew(tmp_path):
    config, mgr = manager(tmp_path)
    ready = Session(
        app="nb", slug="alice-x", user="alice", state=State.READY, container_id="old", routed=True
    )
    mgr.sessions[("nb", "alice-x")] = ready
    await mgr.ensure(config.apps["nb"], "alice", "alice-x")
    await settle(mgr)
    assert mgr.backend.spawned == [("nb", "alice-x")]
