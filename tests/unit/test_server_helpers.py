import pytest

from servicehub import pages
from servicehub.config import parse_config
from servicehub.server import match_app, safe_target

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
