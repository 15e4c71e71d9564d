"""The wait page in a real headless Chromium: progress shown, then the app, no manual reload."""

import pytest

from tests.harness import SECRET_HEADER, USER_HEADER, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.browser]


def test_wait_page_shows_progress_then_lands_on_the_app(hub, browser):
    context = browser.new_context(
        extra_http_headers={USER_HEADER: "alice@example.org", SECRET_HEADER: hub.secret}
    )
    page = context.new_page()
    documents = []
    page.on(
        "response",
        lambda r: documents.append(r.status) if r.request.resource_type == "document" else None,
    )
    page.goto(f"http://127.0.0.1:{hub.web_port}/slow/?tab=1")
    # First the wait page, with its progress bar part-way.
    assert page.title() == "Starting slow"
    progress = page.locator("#progress")
    assert 0 < float(progress.get_attribute("value")) < 1
    # Then the app itself, on the URL that was asked for, with no reload from the test.
    page.wait_for_selector("#whoami", timeout=60_000)
    assert page.title() == "whoami"
    assert page.text_content("#whoami") == "alice@example.org"
    assert page.url.endswith("/slow/?tab=1")
    assert len(documents) == 2  # the wait page, then one navigation to the app
    context.close()


def test_failure_shows_reason_and_retry_button(hub, browser):
    context = browser.new_context(
        extra_http_headers={USER_HEADER: "bob", SECRET_HEADER: hub.secret}
    )
    page = context.new_page()
    page.goto(f"http://127.0.0.1:{hub.web_port}/crash/")
    page.wait_for_selector("#retry", state="visible", timeout=60_000)
    assert "exit code 3" in page.text_content("#reason")
    context.close()


def test_a_tabs_background_requests_never_start_containers(hub, browser):
    """Chromium's own favicon, image, fetch and WebSocket requests for the app at "/" (which
    alice never opened) and a forgotten tab's polls after her session was stopped: none of
    them starts a container; a reload of the tab does."""
    context = browser.new_context(
        extra_http_headers={USER_HEADER: "alice", SECRET_HEADER: hub.secret}
    )
    page = context.new_page()
    page.goto(f"http://127.0.0.1:{hub.web_port}/slow/")
    page.wait_for_selector("#whoami", timeout=60_000)
    background = page.evaluate(
        """async () => {
            const statuses = {};
            statuses.fetch = (await fetch("/api/contents")).status;
            statuses.image = await new Promise((done) => {
                const img = new Image();
                img.onload = () => done("loaded");
                img.onerror = () => done("error");
                img.src = "/favicon.ico";
            });
            statuses.websocket = await new Promise((done) => {
                const ws = new WebSocket(`ws://${location.host}/terminals/websocket/1`);
                ws.onopen = () => done("open");
                ws.onerror = () => done("error");
            });
            statuses.poll = (await fetch("/slow/whoami")).status;
            return statuses;
        }"""
    )
    assert background == {"fetch": 409, "image": "error", "websocket": "error", "poll": 200}
    assert [c["Config"]["Labels"]["servicehub.app"] for c in hub.containers()] == ["slow"]

    assert hub.cli("stop", "alice", "slow").returncode == 0
    wait_for(lambda: hub.containers() == [], 30, "alice's container removed")
    poll = """async () => (await fetch("/slow/whoami", {cache: "no-store"})).status"""
    wait_for(lambda: page.evaluate(poll) == 409, 30, "the tab's poll to reach the daemon")
    assert hub.containers() == []

    page.reload()
    page.wait_for_selector("#whoami", timeout=60_000)
    assert [c["Config"]["Labels"]["servicehub.app"] for c in hub.containers()] == ["slow"]
    context.close()
