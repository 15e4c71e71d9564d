"""A session is ready when its app answers, even while Traefik still loads its route (that takes
seconds with thousands of sessions): the daemon hands the person's requests to the app, with the
headers the route would give them. Traefik is frozen here so its route never goes live."""

import json
import signal

import pytest

from tests.harness import SECRET_HEADER, USER_HEADER, Hub, raw_request, wait_for

pytestmark = pytest.mark.integration


def via_catch_all(hub: Hub, user: str, path: str, extra=()):
    """What Traefik's catch-all router sends the daemon: Apache's headers, unchanged."""
    headers = [(USER_HEADER, user), (SECRET_HEADER, hub.secret), *extra]
    return raw_request(hub.daemon_port, path, headers)


def status(hub: Hub, user: str) -> dict:
    resp = via_catch_all(hub, user, "/_servicehub/api/status?app=whoami")
    return json.loads(resp.text)


@pytest.fixture
def frozen_traefik(hub):
    assert hub.traefik is not None
    hub.traefik.send_signal(signal.SIGSTOP)
    try:
        yield hub
    finally:
        hub.traefik.send_signal(signal.SIGCONT)


def test_the_app_answers_through_the_daemon_until_its_route_is_live(frozen_traefik):
    hub = frozen_traefik
    page = ("Accept", "text/html")
    first = via_catch_all(hub, "ann", "/whoami", [page, ("Sec-Fetch-Mode", "navigate")])
    assert first.status == 200 and first.is_wait
    wait_for(lambda: status(hub, "ann")["state"] == "ready", 60, "ann's app to answer")
    resp = via_catch_all(hub, "ann", "/whoami?x=1", [("X-Test", "kept")])
    assert resp.status == 200 and not resp.is_wait, resp.text
    seen = resp.json()
    assert seen["header_user"] == "ann"
    names = {name.lower() for name in seen["header_names"]}
    assert SECRET_HEADER.lower() not in names  # the app never sees the proxy secret
    assert ["X-Test", "kept"] in seen["headers"]
    # Another person's request never reaches ann's container, handed over or not.
    other = via_catch_all(hub, "bob", "/whoami")
    assert other.status == 409 or other.is_wait


def test_a_websocket_waits_for_the_route_instead_of_staying_on_the_daemon(frozen_traefik):
    hub = frozen_traefik
    via_catch_all(hub, "cy", "/whoami", [("Accept", "text/html"), ("Sec-Fetch-Mode", "navigate")])
    wait_for(lambda: status(hub, "cy")["state"] == "ready", 60, "cy's app to answer")
    assert hub.traefik is not None
    hub.traefik.send_signal(signal.SIGCONT)  # the route goes live while the upgrade waits
    upgrade = [
        ("Connection", "Upgrade"),
        ("Upgrade", "websocket"),
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ]
    resp = via_catch_all(hub, "cy", "/ws", upgrade)
    assert resp.status == 503 and resp.json()["state"] == "ready"
    # The client's reconnect now meets the session's own route in Traefik.
    direct = hub.get("cy", "/whoami", html=False)
    assert direct.status == 200 and direct.json()["header_user"] == "cy"
