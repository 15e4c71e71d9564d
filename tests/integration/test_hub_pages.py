"""The hub pages through the real daemon and Traefik: home, admin, their JSON, CSRF, allow rules."""

from __future__ import annotations

import http.server
import json
import re
import threading
from typing import ClassVar
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest

from servicehub.metrics_history import CHARTS
from tests.harness import (
    EXAMPLE_IMAGE,
    GROUPS_HEADER,
    Hub,
    Response,
    free_port,
    raw_request,
    wait_for,
)

pytestmark = pytest.mark.integration

ADMIN = "root@example.org"


def pages_apps() -> dict:
    return {
        "whoami": {
            "image": EXAMPLE_IMAGE,
            "route": {"path_prefix": "/who/"},
            "readiness": {"type": "http", "path": "/healthz"},
            "title": "Who am I <b>",
            "description": "Shows who you are.",
            "stop_on_logout": True,
        },
        "lab": {
            "image": EXAMPLE_IMAGE,
            "route": {"path_prefix": "/lab/"},
            "readiness": {"type": "http", "path": "/healthz"},
            "allow": {"groups": ["lab"]},
            "title": "Secret lab",
        },
        "crash": {
            "image": EXAMPLE_IMAGE,
            "route": {"path_prefix": "/crash/"},
            "environment": {"CRASH_ON_START": "1"},
        },
    }


PAGES = {
    "pages": {
        "admin_group": "hub-admins",
        "logout_url": "/logout",
        "branding": {"title": "Test Hub", "footer": {"text": "Help", "url": "/help"}},
    }
}


@pytest.fixture
def phub(request, tmp_path, example_image):
    hub = Hub(workdir=tmp_path / "hub", apps=pages_apps(), settings=PAGES)
    hub.workdir.mkdir()
    try:
        hub.start()
        yield hub
    finally:
        reports = request.node.stash.get("reports", {})
        if any(r.failed for r in reports.values()):
            print(hub.logs())
        hub.stop()
        hub.cleanup_docker()


def as_user(hub: Hub, user: str, path: str, groups: str = "", **kw) -> Response:
    extra = [(GROUPS_HEADER, groups)] if groups else []
    return hub.get(user, path, extra=extra + kw.pop("extra", []), **kw)


def token(hub: Hub, user: str, groups: str = "") -> str:
    resp = as_user(hub, user, "/_servicehub/api/apps", groups, html=False)
    assert resp.status == 200, resp.text
    return str(resp.json()["csrf"])


def post(hub: Hub, user: str, path: str, fields: dict, groups: str = "", **kw) -> Response:
    headers = [*hub.identity_headers(user), ("Content-Type", "application/x-www-form-urlencoded")]
    if groups:
        headers.append((GROUPS_HEADER, groups))
    return raw_request(
        hub.web_port, path, headers + kw.get("extra", []), "POST", urlencode(fields).encode()
    )


def running(hub: Hub, app: str, user: str) -> list:
    return [c for c in hub.containers(app=app, user=user) if c["State"]["Running"]]


def test_home_lists_only_allowed_apps_escaped(phub):
    resp = as_user(phub, "alice", "/_servicehub/")
    assert resp.status == 200
    assert resp.headers["Cache-Control"] == "no-store"
    assert 'data-app="whoami"' in resp.text and 'data-app="crash"' in resp.text
    assert "Secret lab" not in resp.text and "/lab/" not in resp.text  # not even named
    assert "Who am I &lt;b&gt;" in resp.text  # autoescaped
    assert "Test Hub" in resp.text and 'href="/help"' in resp.text
    apps = as_user(phub, "alice", "/_servicehub/api/apps", html=False).json()
    assert sorted(a["app"] for a in apps["apps"]) == ["crash", "whoami"]
    member = as_user(phub, "bob", "/_servicehub/api/apps", "lab", html=False).json()
    assert "lab" in [a["app"] for a in member["apps"]]


def test_root_without_app_redirects_to_home(phub):
    resp = as_user(phub, "alice", "/")
    assert resp.status == 302 and resp.headers["Location"] == "/_servicehub/"


def test_outsider_gets_403_for_the_app_and_no_container(phub):
    resp = as_user(phub, "alice", "/lab/")
    assert resp.status == 403
    resp = post(phub, "alice", "/_servicehub/restart", {"app": "lab", "csrf": token(phub, "alice")})
    assert resp.status == 404
    assert phub.containers(app="lab") == []
    # A member of the group gets it.
    assert as_user(phub, "bob", "/lab/", "lab").status == 200


def test_open_stop_restart_from_home(phub):
    assert phub.open("alice", "/who/", app="whoami").status == 200
    apps = {
        a["app"]: a
        for a in as_user(phub, "alice", "/_servicehub/api/apps", html=False).json()["apps"]
    }
    assert apps["whoami"]["state"] == "running" and apps["whoami"]["started"]
    first = running(phub, "whoami", "alice")[0]["Id"]

    csrf = token(phub, "alice")
    resp = post(phub, "alice", "/_servicehub/restart", {"app": "whoami", "csrf": csrf})
    assert resp.status == 303 and resp.headers["Location"] == "/who/"
    wait_for(lambda: phub.status("alice", "whoami")["state"] == "ready", 60, "restart")
    second = running(phub, "whoami", "alice")[0]["Id"]
    assert second != first

    resp = post(phub, "alice", "/_servicehub/stop", {"app": "whoami", "csrf": csrf})
    assert resp.status == 303 and resp.headers["Location"] == "/_servicehub/"
    assert phub.containers(app="whoami", user="alice") == []
    home = as_user(phub, "alice", "/_servicehub/")
    assert re.search(r'data-app="whoami" data-state="not running"', home.text)


def test_post_without_or_with_foreign_token_is_refused(phub):
    assert phub.open("alice", "/who/", app="whoami").status == 200
    for fields in ({"app": "whoami"}, {"app": "whoami", "csrf": token(phub, "mallory")}):
        resp = post(phub, "alice", "/_servicehub/stop", fields)
        assert resp.status == 403, resp.text
    assert len(running(phub, "whoami", "alice")) == 1
    # The header works for scripts.
    resp = post(
        phub,
        "alice",
        "/_servicehub/api/apps/stop?app=whoami",
        {},
        extra=[("X-Servicehub-Csrf", token(phub, "alice"))],
    )
    assert resp.status == 200 and resp.json()["stopped"] is True


def test_admin_view_and_api_only_for_admins(phub):
    for path in ("/_servicehub/admin", "/_servicehub/api/sessions"):
        assert as_user(phub, "alice", path, "lab").status == 403
        assert as_user(phub, ADMIN, path, "hub-admins").status == 200
    # A non-admin's token does not make an admin stop either.
    assert phub.open("alice", "/who/", app="whoami").status == 200
    slug = running(phub, "whoami", "alice")[0]["Config"]["Labels"]["servicehub.slug"]
    resp = post(
        phub,
        "alice",
        "/_servicehub/admin/stop",
        {"app": "whoami", "slug": slug, "csrf": token(phub, "alice")},
    )
    assert resp.status == 403
    assert len(running(phub, "whoami", "alice")) == 1


def test_admin_sees_and_stops_another_users_session(phub):
    assert phub.open("alice", "/who/", app="whoami").status == 200
    phub.open("alice", "/crash/", app="crash")
    data = as_user(phub, ADMIN, "/_servicehub/api/sessions", "hub-admins", html=False).json()
    mine = [s for s in data["sessions"] if s["user"] == "alice" and s["app"] == "whoami"]
    assert mine and mine[0]["state"] == "running"
    assert mine[0]["memory_bytes"] and mine[0]["memory_bytes"] > 0
    assert mine[0]["cpu_cores"] is not None
    assert data["counts"]["whoami"] == {"running": 1}
    failure = data["failures"][0]
    assert failure["app"] == "crash" and "exit code 3" in failure["reason"]
    page = as_user(phub, ADMIN, "/_servicehub/admin", "hub-admins")
    assert "exit code 3" in page.text and 'data-user="alice"' in page.text

    csrf = token(phub, ADMIN, "hub-admins")
    resp = post(
        phub,
        ADMIN,
        "/_servicehub/admin/stop",
        {"app": "whoami", "slug": mine[0]["slug"], "csrf": csrf},
        "hub-admins",
    )
    assert resp.status == 303
    assert phub.containers(app="whoami", user="alice") == []
    assert f"admin {ADMIN} stopped session app=whoami" in phub.logs()


def test_logout_stops_apps_with_stop_on_logout(phub):
    assert phub.open("alice", "/who/", app="whoami").status == 200
    assert phub.open("alice", "/crash/", app="crash").status == 503
    resp = post(phub, "alice", "/_servicehub/logout", {"csrf": token(phub, "alice")})
    assert resp.status == 303 and resp.headers["Location"] == "/logout"
    assert phub.containers(app="whoami", user="alice") == []


class StandInPrometheus:
    """Answers /api/v1/query_range with a canned matrix, on a free loopback port."""

    MATRIX: ClassVar[dict] = {
        "status": "success",
        "data": {
            "resultType": "matrix",
            "result": [{"metric": {"app": "whoami"}, "values": [[1000, "1"], [1300, "3"]]}],
        },
    }

    def __init__(self) -> None:
        self.queries: list[str] = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlsplit(self.path)
                if url.path != "/api/v1/query_range":
                    self.send_error(404)
                    return
                owner.queries.append(parse_qs(url.query)["query"][0])
                body = json.dumps(owner.MATRIX).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        if self.thread.is_alive():
            self.server.shutdown()
            self.server.server_close()


@pytest.fixture
def prometheus():
    stand_in = StandInPrometheus()
    try:
        yield stand_in
    finally:
        stand_in.close()


def hub_with_prometheus(request, tmp_path, url: str):
    settings = {"pages": {**PAGES["pages"], "prometheus_url": url}}
    hub = Hub(workdir=tmp_path / "hub", apps=pages_apps(), settings=settings)
    hub.workdir.mkdir()
    try:
        hub.start()
        yield hub
    finally:
        reports = request.node.stash.get("reports", {})
        if any(r.failed for r in reports.values()):
            print(hub.logs())
        hub.stop()
        hub.cleanup_docker()


@pytest.fixture
def chub(request, tmp_path, example_image, prometheus):
    yield from hub_with_prometheus(request, tmp_path, prometheus.url)


@pytest.fixture
def down_hub(request, tmp_path, example_image):
    # nothing listens there
    yield from hub_with_prometheus(request, tmp_path, f"http://127.0.0.1:{free_port()}")


def test_admin_charts_from_prometheus_cached_then_no_history_when_down(chub, prometheus):
    page = as_user(chub, ADMIN, "/_servicehub/admin", "hub-admins")
    assert page.status == 200
    assert "No history" not in page.text
    charts = page.text[page.text.index('<div id="history">') :]
    assert charts.count('<svg class="sparkline"') == 2  # sessions and spawn p90, app whoami
    assert "<script" not in page.text.lower()
    assert 'aria-label="whoami, Ready sessions: min 1, max 3, latest 3"' in charts
    assert "<title>whoami, Spawn time to ready, p90: min 1 s, max 3 s, latest 3 s</title>" in charts
    assert sorted(prometheus.queries) == sorted(q for _, _, q in CHARTS)

    # A reload within the minute is served from the cache, even with Prometheus gone.
    prometheus.close()
    again = as_user(chub, ADMIN, "/_servicehub/admin", "hub-admins")
    assert again.status == 200 and again.text.count('<svg class="sparkline"') == 2
    assert len(prometheus.queries) == len(CHARTS)


def test_admin_page_says_no_history_when_prometheus_is_down(down_hub):
    page = as_user(down_hub, ADMIN, "/_servicehub/admin", "hub-admins")
    assert page.status == 200
    assert re.search(r'<p id="history">No history: http://127\.0\.0\.1:\d+: ', page.text)
    assert "<svg" not in page.text
    assert 'id="sessions"' in page.text and "Recent spawn failures" in page.text


def test_admin_page_without_prometheus_url_says_so(phub):
    page = as_user(phub, ADMIN, "/_servicehub/admin", "hub-admins")
    assert page.status == 200
    assert "No history: no Prometheus configured (pages.prometheus_url)" in page.text
