"""The admission queue: limits on running sessions and starts, the order of those who wait,
and the wait page's words. The session table is the daemon's own; the spawns are stand-ins
that a test finishes when it wants."""

from __future__ import annotations

import asyncio

import pytest

from servicehub.admission import Admission, TooManySessions
from servicehub.capacity_config import CapacityConfig
from servicehub.session_state import Session, SessionTable, State


class Hub:
    """A session table, its admission, and spawns that end when the test says so."""

    def __init__(self, **capacity: object) -> None:
        self.table = SessionTable()
        self.admission = Admission(CapacityConfig(**capacity), self.table)  # type: ignore[arg-type]
        self.started: list[str] = []
        self.finish: dict[str, asyncio.Event] = {}
        self.tasks: list[asyncio.Task[None]] = []

    def open(self, user: str, app: str = "nb") -> Session:
        self.admission.check_user(user)
        session = Session(app=app, slug=user, user=user)
        self.table.add(session)
        done = self.finish[f"{app}/{user}"] = asyncio.Event()

        async def spawn() -> None:
            await session.set(State.CREATING, "Creating your container")
            self.started.append(f"{app}/{user}")
            await done.wait()
            await session.set(State.READY, "Ready")

        self.tasks.append(asyncio.ensure_future(self.admission.run(session, spawn)))
        return session

    async def settle(self) -> None:
        """Let every task run until none can go on."""
        for _ in range(20):
            await asyncio.sleep(0)

    async def ready(self, key: str) -> None:
        self.finish[key].set()
        await self.settle()


def run(test):
    return asyncio.run(test())


def test_over_the_hub_limit_sessions_wait_in_order_and_start_when_a_place_frees():
    async def test():
        hub = Hub(max_sessions=1)
        alice = hub.open("alice")
        await hub.ready("nb/alice")
        bob, carol = hub.open("bob"), hub.open("carol")
        await hub.settle()
        assert hub.started == ["nb/alice"]
        assert (bob.state, carol.state) == (State.QUEUED, State.QUEUED)
        assert bob.message.startswith("Waiting for a free place: 0 ahead of you")
        assert carol.message.startswith("Waiting for a free place: 1 ahead of you")
        hub.table.drop(alice)  # alice's session ends (the reaper, a stop)
        await hub.settle()
        assert hub.started == ["nb/alice", "nb/bob"] and carol.state == State.QUEUED
        assert carol.message.startswith("Waiting for a free place: 0 ahead of you")

    run(test)


def test_an_apps_limit_does_not_hold_up_another_app():
    async def test():
        hub = Hub(per_app={"nb": 1})
        hub.open("alice")
        bob = hub.open("bob")
        carol = hub.open("carol", app="viewer")
        await hub.settle()
        assert hub.started == ["nb/alice", "viewer/carol"] and carol.state == State.CREATING
        assert bob.state == State.QUEUED and "nb runs as many sessions as it may" in bob.message

    run(test)


def test_a_login_storm_starts_at_most_the_cap_at_once():
    async def test():
        hub = Hub(max_concurrent_spawns=2)
        sessions = [hub.open(f"user{i}") for i in range(5)]
        await hub.settle()
        assert hub.started == ["nb/user0", "nb/user1"]
        assert "2 ahead of you (many sessions are starting at once)" in sessions[4].message
        await hub.ready("nb/user0")  # a start finishes: the next one goes, in order
        assert hub.started == ["nb/user0", "nb/user1", "nb/user2"]
        assert sessions[0].state == State.READY

    run(test)


def test_one_person_over_their_limit_is_refused_counting_waiting_sessions():
    async def test():
        hub = Hub(max_sessions=1, max_sessions_per_user=2)
        hub.open("alice", app="nb")
        hub.open("alice", app="viewer")  # waits for a place, but is hers
        await hub.settle()
        with pytest.raises(TooManySessions, match="already have 2 sessions running"):
            hub.open("alice", app="third")
        hub.open("bob")  # others are not affected

    run(test)


def test_a_session_stopped_while_it_waits_never_starts():
    async def test():
        hub = Hub(max_sessions=1)
        alice = hub.open("alice")
        bob = hub.open("bob")
        await hub.settle()
        assert bob.state == State.QUEUED
        hub.table.pop(bob.key)  # bob logs out, or an admin stops the waiting session
        hub.table.drop(alice)
        await hub.settle()
        assert hub.started == ["nb/alice"] and hub.admission.waiting == []

    run(test)


def test_without_limits_nobody_waits():
    async def test():
        hub = Hub()
        for i in range(50):
            hub.open(f"user{i}")
        await hub.settle()
        assert len(hub.started) == 50

    run(test)
