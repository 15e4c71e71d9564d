"""Capacity limits through the real daemon, Traefik and Docker: a session over the hub's
limit waits on its wait page with its place in the queue and starts when a place frees; a
person over the per-user limit is refused with a page that says what to do."""

from __future__ import annotations

import pytest

from tests.harness import Hub, example_apps

pytestmark = pytest.mark.integration


@pytest.fixture
def small_hub(hub_factory):
    """One place on the hub, one session per person."""
    apps = {name: example_apps()[name] for name in ("whoami", "slow")}
    return hub_factory(apps, settings={"capacity": {"max_sessions": 1, "max_sessions_per_user": 1}})


def wait_for_state(hub: Hub, user: str, app: str, state: str) -> dict:
    """Long-poll the status API (as the wait page does) until the session is in ``state``."""
    version = -1
    for _ in range(60):
        status = hub.status(user, app, version)
        if status["state"] == state:
            return status
        assert status["state"] not in ("failed", "stopped"), status
        version = int(status["version"])
    raise AssertionError(f"{user}'s {app} never reached {state}: {status}\n{hub.logs()}")


def test_over_the_hub_limit_a_session_waits_its_turn_then_starts(small_hub):
    hub = small_hub
    assert hub.open("alice", "/whoami", app="whoami").status == 200
    first = hub.get("bob", "/whoami")
    assert first.is_wait and first.status == 200  # the wait page, not an error
    queued = wait_for_state(hub, "bob", "whoami", "queued")
    assert queued["message"].startswith("Waiting for a free place: 0 ahead of you")
    assert hub.containers(user="bob") == []  # nothing started for bob yet
    stopped = hub.cli("stop", "alice")  # alice's session ends: her place is free
    assert stopped.returncode == 0, stopped.stderr
    wait_for_state(hub, "bob", "whoami", "ready")
    assert hub.open("bob", "/whoami", app="whoami").status == 200
    assert len(hub.containers(user="bob")) == 1


def test_a_person_at_the_per_user_limit_is_told_to_stop_a_session(small_hub):
    hub = small_hub
    assert hub.open("carol", "/whoami", app="whoami").status == 200
    refused = hub.get("carol", "/slow/")
    assert refused.status == 429
    assert "already have 1 session running" in refused.text and "home page" in refused.text
    assert [c["Config"]["Labels"]["servicehub.app"] for c in hub.containers(user="carol")] == [
        "whoami"
    ]
