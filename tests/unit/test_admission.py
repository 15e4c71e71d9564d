"""The admission queue: limits on running sessions and starts, the order of those who wait,
and the wait page's words. The session table is the daemon's own; the spawns are stand-ins
that a test finishes when it wants."""

from __future__ import annotations

import asyncio

import pytest

from servicehub.admission import NO_ROOM, Admission, TooManySessions
from servicehub.capacity_config import CapacityConfig
from servicehub.session_state import Session, SessionTable, State


class Hub:
    """A session table, its admission, and spawns that end when the test says so."""

    def __init__(self, room: dict[str, int] | None = None, **capacity: object) -> None:
        """``room``: how many more sessions of each app the machines hold (a swarm), as the
        engine sees it: a session takes its place there when its start finishes."""
        self.table = SessionTable()
        self.room = room
        self.asked: list[str] = []  # the apps the engine was asked about, in order
        self.admission = Admission(
            CapacityConfig(**capacity),  # type: ignore[arg-type]
            self.table,
            self.has_room if room is not None else None,
        )
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
            if self.room is not None:  # its task runs on a machine: the engine shows it
                self.room[app] = self.room.get(app, 0) - 1
            await session.set(State.READY, "Ready")

        self.tasks.append(asyncio.ensure_future(self.admission.run(session, spawn)))
        return session

    async def has_room(self, app: str, placing: list[str]) -> bool:
        assert self.room is not None
        self.asked.append(app)
        return self.room.get(app, 0) - placing.count(app) > 0

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


def test_on_a_full_swarm_a_session_waits_for_room_and_starts_when_a_session_ends():
    async def test():
        hub = Hub(room={"nb": 1, "viewer": 1})
        alice = hub.open("alice")
        await hub.ready("nb/alice")
        bob, carol = hub.open("bob"), hub.open("carol")
        dave = hub.open("dave", app="viewer")
        await hub.settle()
        assert hub.started == ["nb/alice", "viewer/dave"] and dave.state == State.CREATING
        assert (bob.state, carol.state) == (State.QUEUED, State.QUEUED)
        assert bob.message == (
            "Waiting for a free place: 0 ahead of you "
            "(no machine of this hub has room for it right now)"
        )
        assert carol.message.startswith("Waiting for a free place: 1 ahead of you")
        # One question per app however many wait: those behind bob are not asked about.
        asked = len(hub.asked)
        later = [hub.open(f"user{i}") for i in range(5)]
        await hub.settle()
        assert len(hub.asked) == asked and all(s.state == State.QUEUED for s in later)
        hub.room["nb"] += 1  # alice's session ends: its machine has room again
        hub.table.drop(alice)
        await hub.settle()
        assert hub.started == ["nb/alice", "viewer/dave", "nb/bob"]
        # Bob's task is not on a machine yet: the one free place is his all the same.
        assert carol.state == State.QUEUED and NO_ROOM in carol.message
        await hub.ready("nb/bob")
        assert carol.state == State.QUEUED and NO_ROOM in carol.message

    run(test)


def test_sessions_waiting_for_room_hold_up_no_start_of_a_session_that_fits():
    async def test():
        hub = Hub(room={"small": 1}, max_concurrent_spawns=1)
        big = hub.open("alice", app="big")
        small = hub.open("bob", app="small")
        await hub.settle()
        assert hub.started == ["small/bob"] and small.state == State.CREATING
        assert big.state == State.QUEUED

    run(test)


def test_when_the_engine_cannot_tell_about_room_the_spawn_goes_ahead():
    async def test():
        hub = Hub(room={})

        async def broken(app: str, placing: list[str]) -> bool:
            raise OSError("the engine's socket is gone")

        hub.admission.room = broken
        hub.open("alice")
        await hub.settle()
        assert hub.started == ["nb/alice"]  # and the spawn says what is wrong

    run(test)


def test_a_session_stopped_while_the_engine_is_asked_about_room_never_starts():
    async def test():
        hub = Hub(room={"nb": 1})

        async def asked_while_stopped(app: str, placing: list[str]) -> bool:
            hub.table.drop(alice)  # a logout while the engine answers
            return True

        hub.admission.room = asked_while_stopped
        alice = hub.open("alice")
        await hub.settle()
        assert hub.started == [] and hub.admission.placing == []

    run(test)
