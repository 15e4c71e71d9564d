"""The hub pages' pure parts: their config, CSRF tokens, the failure ring, the rows."""

from datetime import UTC, datetime

import pytest

from servicehub.config import ConfigError
from servicehub.config_section import Section
from servicehub.csrf import CsrfTokens, derive_key
from servicehub.failures import FailureLog
from servicehub.hub_data import counts, row
from servicehub.pages_config import contrast, parse_app_page, parse_pages
from servicehub.session_info import SessionInfo
from servicehub.session_state import Session, State


def test_pages_defaults_and_branding():
    pages = parse_pages(Section({}, "pages"))
    assert pages.admin_group is None and pages.logout_url == "/logout"
    assert pages.prometheus_url is None
    prom = parse_pages(Section({"prometheus_url": "http://127.0.0.1:9090"}, "pages"))
    assert prom.prometheus_url == "http://127.0.0.1:9090"
    custom = parse_pages(
        Section({"admin_group": "ops", "branding": {"colors": {"accent": "#005a9c"}}}, "pages")
    )
    assert custom.admin_group == "ops" and custom.branding.accent == "#005a9c"


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"branding": {"colors": {"text": "#cccccc"}}}, "pages.branding.colors.text"),
        ({"branding": {"colors": {"accent": "#ffff00"}}}, "pages.branding.colors.accent"),
        ({"branding": {"colors": {"text": "red"}}}, "pages.branding.colors.text"),
        ({"branding": {"logo_url": "javascript:alert(1)"}}, "pages.branding.logo_url"),
        ({"logout_url": "//evil.example/"}, "pages.logout_url"),
        ({"branding": {"footer": {"url": '/a"b'}}}, "pages.branding.footer.url"),
        ({"admin_group": "a,b"}, "pages.admin_group"),
        ({"prometheus_url": "127.0.0.1:9090"}, "pages.prometheus_url"),
        ({"colour": 1}, "pages.colour"),
    ],
)
def test_bad_pages_settings_name_their_key(data, key):
    with pytest.raises(ConfigError) as err:
        parse_pages(Section(data, "pages"))
    assert err.value.key == key


def test_contrast_of_black_on_white_is_21():
    assert contrast("#000000", "#ffffff") == pytest.approx(21)


def test_app_page_keys():
    s = Section({"title": "T", "icon": "/icons/a.svg", "stop_on_logout": True}, "apps.a")
    page = parse_app_page(s)
    assert (page.title, page.icon, page.stop_on_logout) == ("T", "/icons/a.svg", True)


def test_csrf_token_is_per_user_and_stable_for_one_secret():
    tokens = CsrfTokens(derive_key("s" * 20))
    assert tokens.valid("alice", tokens.token("alice"))
    assert not tokens.valid("alice", tokens.token("bob"))
    assert not tokens.valid("alice", None) and not tokens.valid("alice", "")
    assert CsrfTokens(derive_key("s" * 20)).token("alice") == tokens.token("alice")
    assert CsrfTokens(derive_key("t" * 20)).token("alice") != tokens.token("alice")


def test_failure_ring_is_bounded_and_newest_first():
    log = FailureLog(size=3, clock=iter(range(10)).__next__)
    for i in range(5):
        log.add("app", f"s{i}", "u", "boom", "x" * 10_000)
    recent = log.recent()
    assert [f.slug for f in recent] == ["s4", "s3", "s2"]
    assert len(recent[0].output) == 4000


def _info(running: bool) -> SessionInfo:
    return SessionInfo(
        container_id="c1",
        name="hub-app-s",
        app="app",
        slug="s",
        user="alice",
        created=datetime(2026, 1, 1, tzinfo=UTC),
        state="running" if running else "exited",
        exit_code=0,
        address="10.0.0.2",
    )


def test_rows_take_state_from_the_daemon_and_start_from_docker():
    starting = Session(app="app", slug="s", user="alice", state=State.STARTING)
    assert row("app", starting, None, None).state == "starting"
    ready = row("app", None, _info(True), None)
    assert ready.state == "running" and ready.started == "2026-01-01T00:00:00Z"
    assert row("app", None, _info(False), None).state == "not running"
    failed = Session(app="app", slug="s", user="alice", state=State.FAILED, message="no image")
    assert row("app", failed, None, None).message == "no image"
    assert counts([ready, ready, row("b", None, None, None)]) == {
        "app": {"running": 2},
        "b": {"not running": 1},
    }
