import pytest
from aiohttp.test_utils import make_mocked_request

from servicehub import pages
from servicehub.config import parse_config
from servicehub.server import match_app, safe_target, starts_session

CONFIG = parse_config(
    {
        "apps": {
            "root": {"image": "a"},
            "nb": {"image": "b", "route": {"path_prefix": "/nb/"}},
            "hosted": {"image": "c", "route": {"host": "app.example.org"}},
        }
    }
)


@pytest.mark.parametrize(
    ("host", "path", "app"),
    [
        ("hub", "/", "root"),
        ("hub", "/anything", "root"),
        ("hub", "/nb", "nb"),
        ("hub", "/nb/tree", "nb"),
        ("hub", "/nbx", "root"),
        ("app.example.org:443", "/nb/", "hosted"),
    ],
)
def test_match_app_prefers_host_then_longest_prefix(host, path, app):
    assert match_app(CONFIG, host, path).name == app


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("/nb/?a=1", "/nb/?a=1"),
        ("//evil.org/", "/"),
        ("https://evil.org", "/"),
        ("/\\evil", "/"),
        (None, "/"),
        ("", "/"),
    ],
)
def test_safe_target_never_leaves_the_site(value, expected):
    assert safe_target(value, "/") == expected


def test_pages_escape_everything_from_requests():
    nasty = "</script><script>alert(1)</script>"
    html = pages.wait_page("app", nasty, "/s?app=app", "/r", {"message": nasty, "progress": 0.2})
    assert "<script>alert(1)" not in html
    assert "alert(1)" in html  # present, but inert
    html = pages.error_page("app", nasty, nasty, "/r")
    assert "<script>alert" not in html


NAVIGATE = {"Sec-Fetch-Mode": "navigate", "Sec-Fetch-Site": "none", "Accept": "text/html"}
FETCH = {"Sec-Fetch-Mode": "cors", "Sec-Fetch-Site": "same-origin"}


@pytest.mark.parametrize(
    ("method", "headers", "starts"),
    [
        ("GET", NAVIGATE, True),  # typing the URL, a link, a reload
        ("GET", {**NAVIGATE, "Sec-Fetch-Site": "cross-site"}, True),  # a link from elsewhere
        ("GET", {**NAVIGATE, "Sec-Purpose": "prefetch"}, False),
        ("GET", FETCH, False),  # a page's poll
        ("GET", {"Sec-Fetch-Mode": "no-cors"}, False),  # a favicon
        ("GET", {"Sec-Fetch-Mode": "websocket", "Upgrade": "websocket"}, False),
        ("GET", {"Accept": "text/html"}, True),  # a script that asks for a page
        ("GET", {"Accept": "application/json"}, False),
        ("POST", FETCH, True),  # a click in a single-page app: create, save, run
        ("PUT", {**FETCH, "Sec-Fetch-Mode": "same-origin"}, True),
        ("POST", {**NAVIGATE, "Sec-Fetch-Site": "same-origin"}, True),  # a form sent
        ("DELETE", {}, True),  # a script
        ("POST", {"Sec-Fetch-Mode": "no-cors", "Sec-Fetch-Site": "same-origin"}, False),  # beacon
        ("POST", {**FETCH, "Sec-Fetch-Site": "cross-site"}, False),  # another site's page
        ("POST", {**FETCH, "Sec-Fetch-Site": "same-site"}, False),  # another app of the hub's
        ("POST", {**FETCH, "Sec-Purpose": "prefetch"}, False),
    ],
)
def test_what_starts_a_session_is_what_a_person_does(method, headers, starts):
    request = make_mocked_request(method, "/nb/api/contents", headers=headers)
    assert starts_session(request) is starts
