"""The daemon's start-up and its catch-up after missed events ask Docker once, not once per
session: with thousands of sessions a call each would take seconds (docs/benchmarks.md)."""

from datetime import UTC, datetime

from servicehub.config import parse_config
from servicehub.locks import SessionLocks
from servicehub.routes import RouteStore
from servicehub.session_info import SessionInfo
from servicehub.session_key import SessionKey
from servicehub.sessions import SessionManager

SESSIONS = 300


class CountingBackend:
    def __init__(self, running: int, stopped: int = 0):
        now = datetime.now(UTC)
        self.infos = [
            SessionInfo(
                f"id{i}",
                f"c{i}",
                "nb",
                f"u{i}-x",
                f"u{i}",
                now,
                "running",
                0,
                f"10.0.{i // 250}.{i % 250 + 2}",
            )
            for i in range(running)
        ] + [
            SessionInfo(f"gone{i}", f"g{i}", "nb", f"g{i}-x", f"g{i}", now, "exited", 0, None)
            for i in range(stopped)
        ]
        self.calls = {"list": 0, "get": 0, "remove": 0}

    async def prepare(self):
        pass

    async def list_sessions(self, detailed=True):
        self.calls["list"] += 1
        assert not detailed, "a detailed list inspects every container"
        return list(self.infos)

    async def get(self, app, slug):
        self.calls["get"] += 1
        return next((i for i in self.infos if i.key == SessionKey(app, slug)), None)

    async def remove(self, container_id):
        self.calls["remove"] += 1
        self.infos = [i for i in self.infos if i.container_id != container_id]


def manager(tmp_path, backend):
    config = parse_config(
        {
            "apps": {"nb": {"image": "a"}},
            "state_dir": str(tmp_path / "state"),
            "traefik": {"routes_dir": str(tmp_path / "routes")},
        }
    )
    locks = SessionLocks(tmp_path / "state" / "locks")
    return SessionManager(config, backend, RouteStore(config), locks=locks)


async def test_recovery_lists_once_and_inspects_only_stopped_containers(tmp_path):
    backend = CountingBackend(SESSIONS, stopped=2)
    mgr = manager(tmp_path, backend)
    await mgr.recover()
    await mgr.close()
    assert len(mgr.sessions) == SESSIONS
    assert len(list((tmp_path / "routes").glob("*-session-*.yml"))) == SESSIONS
    assert backend.calls == {"list": 1, "get": 2, "remove": 2}


async def test_catching_up_lists_once_and_forgets_only_what_is_gone(tmp_path):
    backend = CountingBackend(SESSIONS)
    mgr = manager(tmp_path, backend)
    await mgr.recover()
    gone = backend.infos.pop(7)
    backend.calls = {"list": 0, "get": 0, "remove": 0}
    await mgr.watcher.resync()
    await mgr.close()
    assert mgr.get("nb", gone.slug) is None and len(mgr.sessions) == SESSIONS - 1
    assert backend.calls == {"list": 1, "get": 1, "remove": 0}  # one check of the one gone
