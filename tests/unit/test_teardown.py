"""One teardown for every stop: the route first, the container after, under the session lock."""

import asyncio
from datetime import UTC, datetime

import pytest

from servicehub.locks import SessionLocks
from servicehub.probes import Http
from servicehub.session_info import SessionInfo
from servicehub.session_key import SessionKey
from servicehub.teardown import Ended, LockUnusable, Teardown

KEY = SessionKey("nb", "alice-x")


class Backend:
    def __init__(self, steps, container_id="c1"):
        self.steps, self.container_id = steps, container_id

    async def get(self, app, slug):
        if self.container_id is None:
            return None
        when = datetime.now(UTC)
        return SessionInfo(self.container_id, "n", app, slug, "alice", when, "running", 0, "x")

    async def remove(self, container_id):
        self.steps.append(("container", container_id))


class Routes:
    def __init__(self, steps):
        self.steps = steps

    def remove_session(self, app, slug):
        self.steps.append(("route", (app, slug)))
        return True


def teardown(tmp_path, steps, **backend):
    locks = SessionLocks(tmp_path / "locks")
    # Traefik's API is unreachable here: the router counts as dropped at once.
    http = Http()
    parts = Teardown(
        "hub", "http://127.0.0.1:9", Backend(steps, **backend), Routes(steps), locks, http
    )
    return parts, locks, http


def run(coro_factory):
    async def main():
        return await coro_factory()

    return asyncio.run(main())


def test_the_route_goes_before_the_container(tmp_path):
    steps = []
    parts, _, http = teardown(tmp_path, steps)

    async def stop():
        try:
            return await parts.stop(KEY, "c1")
        finally:
            await http.close()

    assert run(stop) is Ended.REMOVED
    assert steps == [("route", KEY), ("container", "c1")]


def test_a_held_lock_makes_a_no_wait_stop_busy_and_a_replaced_container_stays(tmp_path):
    steps = []
    parts, locks, http = teardown(tmp_path, steps, container_id="c2")

    async def stops():
        try:
            locks.prepare()
            with locks.try_acquire(*KEY):
                busy = await parts.stop(KEY, "c1", wait=None)
            return busy, await parts.stop(KEY, "c1", wait=None)
        finally:
            await http.close()

    assert run(stops) == (Ended.BUSY, Ended.REPLACED)
    assert steps == []


def test_a_last_look_keeps_it_and_a_missing_session_only_loses_its_route(tmp_path):
    steps = []
    parts, _, http = teardown(tmp_path, steps, container_id=None)

    async def keep():
        return True

    async def stops():
        try:
            return await parts.stop(KEY, last_look=keep), await parts.stop(KEY)
        finally:
            await http.close()

    assert run(stops) == (Ended.KEPT, Ended.NO_CONTAINER)
    assert steps == [("route", KEY)]


async def test_an_unusable_lock_directory_stops_a_no_wait_stop(tmp_path):
    (tmp_path / "locks").write_text("not a directory")
    parts, _, _ = teardown(tmp_path, [])
    with pytest.raises(LockUnusable):
        await parts.stop(KEY, wait=None)
