"""Only a person's action starts a container (opening a page, or a click's write): favicons,
polls, WebSockets, beacons and prefetches for a session that does not exist get a 409 and never
spawn (docs/daemon.md, "What starts a session")."""

from urllib.parse import quote

import pytest

from tests.harness import raw_request, wait_for

pytestmark = pytest.mark.integration

NAVIGATE = [
    ("Sec-Fetch-Mode", "navigate"),
    ("Sec-Fetch-Dest", "document"),
    ("Sec-Fetch-User", "?1"),
]
BACKGROUND = {
    # What Chromium sends for /favicon.ico: the app at "/" must not start for it.
    "favicon": ([("Sec-Fetch-Mode", "no-cors"), ("Sec-Fetch-Dest", "image")], "GET"),
    "fetch poll": ([("Sec-Fetch-Mode", "cors"), ("Sec-Fetch-Dest", "empty")], "GET"),
    "same-origin XHR": (
        [("Sec-Fetch-Mode", "same-origin"), ("Accept", "text/html"), ("Sec-Fetch-Dest", "empty")],
        "GET",
    ),
    "websocket": (
        [
            ("Sec-Fetch-Mode", "websocket"),
            ("Connection", "Upgrade"),
            ("Upgrade", "websocket"),
            ("Sec-WebSocket-Version", "13"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ],
        "GET",
    ),
    "websocket, no fetch metadata": (
        [("Connection", "Upgrade"), ("Upgrade", "websocket"), ("Accept", "text/html")],
        "GET",
    ),
    "prefetch": ([*NAVIGATE, ("Sec-Purpose", "prefetch")], "GET"),
    "beacon": ([("Sec-Fetch-Mode", "no-cors"), ("Sec-Fetch-Site", "same-origin")], "POST"),
    "another site's fetch post": (
        [("Sec-Fetch-Mode", "cors"), ("Sec-Fetch-Site", "cross-site")],
        "POST",
    ),
    "script without Accept": ([], "GET"),
    "script asking for JSON": ([("Accept", "application/json")], "GET"),
}


@pytest.mark.parametrize("kind", list(BACKGROUND))
def test_background_requests_never_start_a_session(hub, kind):
    headers, method = BACKGROUND[kind]
    resp = raw_request(
        hub.web_port, "/favicon.ico", [*hub.identity_headers("alice"), *headers], method=method
    )
    assert resp.status == 409, (resp.status, resp.text)
    assert resp.headers["X-Servicehub-Session"] == "none"
    assert hub.containers() == []


def test_a_no_session_answer_says_how_to_start_one(hub):
    resp = hub.get("alice", "/api/kernels", html=False)
    assert resp.status == 409
    body = resp.json()
    assert body["state"] == "stopped" and body["app"] == "whoami"
    assert "POST /_servicehub/api/start?app=whoami" in body["reason"]


def test_a_navigation_starts_a_session(hub):
    headers = [*hub.identity_headers("alice"), *NAVIGATE, ("Accept", "text/html")]
    resp = raw_request(hub.web_port, "/", headers)
    assert resp.status == 200 and resp.is_wait
    wait_for(lambda: len(hub.containers(app="whoami")) == 1, 30, "alice's container")


def test_scripts_start_a_session_explicitly(hub):
    start = raw_request(
        hub.web_port, "/_servicehub/api/start?app=whoami", hub.identity_headers("bob"), "POST"
    )
    assert start.status == 202, start.text
    assert start.json()["state"] in {"creating", "starting", "routing"}
    wait_for(lambda: hub.status("bob", "whoami")["state"] == "ready", 60, "bob's session")
    assert hub.get("bob", "/whoami", html=False).json()["header_user"] == "bob"
    again = raw_request(
        hub.web_port, "/_servicehub/api/start?app=whoami", hub.identity_headers("bob"), "POST"
    )
    assert again.status == 200 and again.json()["state"] == "ready"
    assert len(hub.containers(app="whoami")) == 1


def test_the_start_api_checks_the_app_and_the_user(hub):
    for query in ("app=nope", "app=" + quote("../whoami")):
        resp = raw_request(
            hub.web_port, f"/_servicehub/api/start?{query}", hub.identity_headers("bob"), "POST"
        )
        assert resp.status == 404
    resp = raw_request(hub.web_port, "/_servicehub/api/start?app=whoami", [], "POST")
    assert resp.status == 403
    assert hub.containers() == []


def test_a_stopped_session_is_not_brought_back_by_its_open_tab(hub):
    """A forgotten tab keeps polling after the reaper (here: an operator) removed its
    container: the polls get 409 and the status API says stopped; only a page load restarts."""
    hub.open("carol", "/whoami", app="whoami")
    stopped = hub.cli("stop", "carol")
    assert stopped.returncode == 0, stopped.stderr
    wait_for(lambda: hub.containers(app="whoami") == [], 30, "carol's container removed")
    poll = [*hub.identity_headers("carol"), ("Sec-Fetch-Mode", "cors")]

    def refused() -> bool:  # until Traefik has dropped the route, the poll may meet a 502
        return raw_request(hub.web_port, "/whoami", poll).status == 409

    wait_for(refused, 30, "the poll to reach the daemon")
    assert hub.status("carol", "whoami")["state"] == "stopped"
    ws = raw_request(
        hub.web_port,
        "/ws",
        [*hub.identity_headers("carol"), ("Connection", "Upgrade"), ("Upgrade", "websocket")],
    )
    assert ws.status == 409
    assert hub.containers(app="whoami") == []
    # The person comes back and reloads the page: that starts it again.
    assert hub.open("carol", "/whoami", app="whoami").json()["header_user"] == "carol"


def test_a_clicks_write_starts_the_session_and_is_answered_by_the_app(hub):
    """A single-page app's click (here: saving a file) on a tab whose session ended: the
    write waits for the new container and reaches it, body and all, instead of an error."""
    click = [
        *hub.identity_headers("erin"),
        ("Sec-Fetch-Mode", "cors"),
        ("Sec-Fetch-Site", "same-origin"),
    ]
    saved = raw_request(hub.web_port, "/data/note", click, "PUT", body=b"kept\n", timeout=90)
    assert saved.status in (200, 201), (saved.status, saved.text)
    assert "X-Servicehub-Session" not in saved.headers
    assert len(hub.containers(user="erin")) == 1
    assert hub.get("erin", "/data/note", html=False).text == "kept\n"
