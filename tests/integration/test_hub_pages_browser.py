"""The hub pages in a real headless Chromium: keyboard-driven open/restart/stop, the admin's stop,
a cross-site form refused. Saves the screenshots docs/hub-pages.md shows."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.harness import GROUPS_HEADER, ROOT, SECRET_HEADER, USER_HEADER, Hub, wait_for
from tests.integration.test_hub_pages import PAGES, pages_apps

pytestmark = [pytest.mark.integration, pytest.mark.browser]

IMAGES = ROOT / "docs" / "images"


@pytest.fixture
def bhub(request, tmp_path, example_image):
    settings = {**PAGES, "pages": {**PAGES["pages"], "branding": {"title": "Lab Hub"}}}
    hub = Hub(workdir=tmp_path / "hub", apps=pages_apps(), settings=settings)
    hub.workdir.mkdir()
    try:
        hub.start()
        yield hub
    finally:
        if any(r.failed for r in request.node.stash.get("reports", {}).values()):
            print(hub.logs())
        hub.stop()
        hub.cleanup_docker()


def person(browser, hub: Hub, user: str, groups: str = ""):
    headers = {USER_HEADER: user, SECRET_HEADER: hub.secret}
    if groups:
        headers[GROUPS_HEADER] = groups
    context = browser.new_context(
        extra_http_headers=headers, viewport={"width": 1100, "height": 700}
    )
    return context, context.new_page()


def card(page, app: str):
    return page.locator(f'li[data-app="{app}"]')


def test_home_open_restart_stop_with_the_keyboard(bhub, browser):
    context, page = person(browser, bhub, "alice@example.org", "lab")
    base = f"http://127.0.0.1:{bhub.web_port}"
    page.goto(f"{base}/")
    assert page.url.endswith("/_servicehub/")
    assert page.title() == "My apps · Lab Hub"
    assert sorted(page.locator("li.app").evaluate_all("els => els.map(e => e.dataset.app)")) == [
        "crash",
        "lab",
        "whoami",
    ]
    # Open: the wait page, then the app.
    card(page, "whoami").get_by_role("link", name="Open Who am I <b>").click()
    page.wait_for_selector("#whoami", timeout=60_000)
    page.goto(f"{base}/_servicehub/")
    assert card(page, "whoami").get_attribute("data-state") == "running"
    first = bhub.containers(app="whoami")[0]["Id"]
    # Restart by keyboard: focus the button, press Enter.
    card(page, "whoami").get_by_role("button", name="Restart Who am I <b>").focus()
    page.keyboard.press("Enter")
    page.wait_for_selector("#whoami", timeout=60_000)
    assert [c["Id"] for c in bhub.containers(app="whoami")] != [first]
    page.goto(f"{base}/_servicehub/")
    IMAGES.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(IMAGES / "hub-home.png"), full_page=True)
    card(page, "whoami").get_by_role("button", name="Stop Who am I <b>").focus()
    # The form posts and comes back to the page it was on: wait for that load, not the URL.
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert card(page, "whoami").get_attribute("data-state") == "not running"
    assert bhub.containers(app="whoami") == []
    context.close()


def test_admin_stops_another_users_session(bhub, browser):
    assert bhub.open("alice@example.org", "/who/", app="whoami").status == 200
    bhub.open("bob@example.org", "/crash/", app="crash")
    context, page = person(browser, bhub, "root@example.org", "hub-admins")
    page.goto(f"http://127.0.0.1:{bhub.web_port}/_servicehub/admin")
    row = page.locator('tr[data-user="alice@example.org"][data-app="whoami"]')
    assert "running" in row.inner_text() and "MiB" in row.inner_text()
    assert "exit code 3" in page.locator("section.failure").first.inner_text()
    page.screenshot(path=str(Path(IMAGES / "hub-admin.png")), full_page=True)
    with page.expect_navigation():  # the form posts and comes back to the admin view
        row.get_by_role("button", name="Stop whoami of alice@example.org").click()
    assert bhub.containers(app="whoami") == []
    wait_for(lambda: "admin root@example.org stopped" in bhub.logs(), 5, "the admin's log line")
    context.close()


def test_cross_site_form_without_token_is_refused(bhub, browser):
    assert bhub.open("alice@example.org", "/who/", app="whoami").status == 200
    context, page = person(browser, bhub, "alice@example.org")
    action = f"http://127.0.0.1:{bhub.web_port}/_servicehub/stop"
    page.set_content(
        f'<form method="post" action="{action}"><input name="app" value="whoami">'
        '<button id="go">go</button></form>'
    )
    with page.expect_navigation() as nav:
        page.click("#go")
    assert nav.value.status == 403
    assert len(bhub.containers(app="whoami")) == 1
    context.close()
