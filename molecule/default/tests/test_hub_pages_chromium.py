"""The hub pages in a real Chromium, through Apache, mod_auth_openidc and the real test provider.

The hub container has no browser, so Chromium runs where the verify step runs (the Molecule
host, Python Playwright from the project's venv) and reaches the container from outside:

- hub.test is the container's address on the Molecule network (Apache listens on every
  address; the hub's firewall filters only what comes from user containers and loopback).
- idp.test is the test provider, which listens on the container's loopback only
  (test_idp_listen), as mod_auth_openidc reaches it there. Nothing outside can connect to it, so
  a local port on this host carries each of Chromium's connections into the container through
  `docker exec` to the provider's port there. The hub, its firewall and the test world are
  left as they are.

Chromium resolves both names with --host-resolver-rules (idp.test also to the tunnel's port;
the URLs, Host headers and cookies stay the provider's) and accepts the scenario's test CA with
--ignore-certificate-errors. The check saves docs/images/hub-home-molecule.png and
hub-admin-molecule.png.
"""

from __future__ import annotations

import json
import shutil
import socket
import socketserver
import subprocess
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from hub_variables import SCENARIO, VARIABLES
from test_hub_pages import ADMIN, APPS, HOME, HUB, allowed, email, label, running

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# As in tests/integration/test_hub_pages_browser.py: this machine has no outside network.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
IMAGES = SCENARIO.parents[1] / "docs" / "images"
(CONTAINER,) = [
    p["name"] for p in yaml.safe_load((SCENARIO / "molecule.yml").read_text())["platforms"]
]
IDP = urllib.parse.urlsplit(VARIABLES["test_idp_issuer"])
HUB_HOST = urllib.parse.urlsplit(HUB).hostname
UNITS = ["servicehub", "apache2", "traefik", "oidc-provider"]

# Runs in the container for one connection: the provider's socket <-> stdin/stdout.
RELAY = """
import os, socket, sys, threading
s = socket.create_connection((sys.argv[1], int(sys.argv[2])))
def up():
    while data := os.read(0, 65536):
        s.sendall(data)
    s.shutdown(socket.SHUT_WR)
threading.Thread(target=up, daemon=True).start()
while data := s.recv(65536):
    os.write(1, data)
"""


@pytest.fixture(autouse=True)
def journal_on_failure(host, request):
    yield
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        for unit in UNITS:
            print(host.run(f"journalctl -u {unit} -n 60 --no-pager").stdout)


def container_address() -> str:
    networks = json.loads(
        subprocess.run(
            ["docker", "inspect", "-f", "{{json .NetworkSettings.Networks}}", CONTAINER],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    (address,) = [n["IPAddress"] for n in networks.values() if n.get("IPAddress")]
    return address


class _Tunnel(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


class _Connection(socketserver.BaseRequestHandler):
    """One of Chromium's connections, carried to the provider inside the container."""

    def handle(self) -> None:
        target = [VARIABLES["test_idp_listen"], str(IDP.port)]
        relay = ["docker", "exec", "-i", CONTAINER, "python3", "-c", RELAY, *target]
        with subprocess.Popen(relay, stdin=subprocess.PIPE, stdout=subprocess.PIPE) as proc:
            assert proc.stdin is not None and proc.stdout is not None
            stdin, stdout = proc.stdin, proc.stdout

            def down() -> None:
                while data := stdout.read1(65536):
                    self.request.sendall(data)
                try:
                    self.request.shutdown(socket.SHUT_WR)
                except OSError:
                    pass

            answers = threading.Thread(target=down, daemon=True)
            answers.start()
            try:
                while data := self.request.recv(65536):
                    stdin.write(data)
                    stdin.flush()
            except OSError:
                pass
            finally:
                stdin.close()
            answers.join(timeout=30)
            if proc.poll() is None:
                proc.kill()


@pytest.fixture(scope="module")
def provider_tunnel() -> Iterator[int]:
    server = _Tunnel(("127.0.0.1", 0), _Connection)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def browser(provider_tunnel):
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.fail(f"no Chromium at {CHROMIUM}: make prerequisites installs Debian's")
    address = container_address()
    rules = f"MAP {HUB_HOST} {address},MAP {IDP.hostname} 127.0.0.1:{provider_tunnel}"
    args = [*CHROMIUM_ARGS, f"--host-resolver-rules={rules}", "--ignore-certificate-errors"]
    with sync_api.sync_playwright() as p:
        instance = p.chromium.launch(executable_path=CHROMIUM, args=args)
        yield instance
        instance.close()


def log_in(browser, user: str):
    """A new browser window: the hub sends it to the provider's form, the person signs in."""
    context = browser.new_context(viewport={"width": 1100, "height": 700})
    page = context.new_page()
    page.goto(HUB + HOME)
    assert page.url.startswith(IDP.geturl() + "/interaction/"), page.url
    page.get_by_label("User").fill(user)
    page.get_by_label("Password").fill(f"{user}-password")
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(HUB + HOME, timeout=30_000)
    return context, page


def card(page, app: str):
    return page.locator(f'li.app[data-app="{app}"]')


def test_alice_logs_in_opens_and_stops_an_app_in_chromium(host, browser):
    app = "whoami"
    assert app in allowed("alice") and allowed("alice") != set(APPS)
    context, page = log_in(browser, "alice")
    if card(page, app).get_attribute("data-state") != "not running":  # an earlier check's
        card(page, app).get_by_role("button", name=f"Stop {label(app)}", exact=True).click()
        page.wait_for_url(HUB + HOME)
    assert running(host, app, "alice") == []

    # Exactly her apps: the others are not on the page at all.
    shown = page.locator("li.app").evaluate_all("els => els.map(e => e.dataset.app)")
    assert sorted(shown) == sorted(allowed("alice"))
    for hidden in set(APPS) - allowed("alice"):
        assert label(hidden) not in page.content()
    assert card(page, app).get_attribute("data-state") == "not running"

    # Open: the wait page (its script polls the hub), then the app, which knows who she is.
    waits: list[str] = []
    page.on("response", lambda r: r.headers.get("x-servicehub-wait") == "1" and waits.append(r.url))
    card(page, app).get_by_role("link", name=f"Open {label(app)}", exact=True).click()
    page.wait_for_selector("#whoami", timeout=120_000)
    assert waits, "the app opened without the wait page"
    assert page.locator("#whoami").inner_text() == email("alice")
    assert len(running(host, app, "alice")) == 1

    page.goto(HUB + HOME)
    assert card(page, app).get_attribute("data-state") == "running"
    IMAGES.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(IMAGES / "hub-home-molecule.png"), full_page=True)

    # The admin sees alice's session (the screenshot shows it running).
    admin_context, admin = log_in(browser, "carol")
    admin.goto(HUB + ADMIN)
    row = admin.locator(f'tr[data-app="{app}"][data-user="{email("alice")}"]')
    assert "running" in row.inner_text()
    admin.screenshot(path=str(IMAGES / "hub-admin-molecule.png"), full_page=True)
    admin_context.close()

    # Stop, from her home page.
    card(page, app).get_by_role("button", name=f"Stop {label(app)}", exact=True).click()
    page.wait_for_url(HUB + HOME)
    assert card(page, app).get_attribute("data-state") == "not running"
    assert running(host, app, "alice") == []
    context.close()


def test_a_notebook_cell_runs_through_apache_and_traefik_in_chromium(host, browser):
    """JupyterLab as the app contract's recipe sets it up: its page, its API and its kernel
    websocket all go through Apache, mod_auth_openidc and Traefik. The cell's output comes
    back over the websocket, so it shows only if the socket works end to end."""
    app = "notebook"
    context, page = log_in(browser, "alice")
    sockets: list[str] = []
    page.on("websocket", lambda ws: sockets.append(ws.url))
    card(page, app).get_by_role("link", name=f"Open {label(app)}", exact=True).click()
    page.wait_for_selector('.jp-LauncherCard[data-category="Notebook"]', timeout=180_000)
    page.click('.jp-LauncherCard[data-category="Notebook"]')
    page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=120_000)
    editor = page.locator(".jp-Notebook .jp-Cell .cm-content").last
    code = "print(6 * 7)"

    def typed() -> bool:  # a busy machine's notebook may take keys before its editor does
        if editor.text_content() == code:
            return True
        editor.click()
        page.keyboard.press("Control+a")
        page.keyboard.type(code)
        return False

    for _ in range(60):
        if typed():
            break
        page.wait_for_timeout(500)
    page.keyboard.press("Shift+Enter")
    page.wait_for_selector(".jp-OutputArea-output:has-text('42')", timeout=90_000)
    kernel = [u for u in sockets if "/notebook/api/kernels/" in u]
    assert kernel and all(u.startswith(f"wss://{HUB_HOST}/") for u in kernel), sockets
    assert len(running(host, app, "alice")) == 1
    # Stop it again: the container is a gigabyte's limit on a small test machine.
    page.goto(HUB + HOME)
    card(page, app).get_by_role("button", name=f"Stop {label(app)}", exact=True).click()
    page.wait_for_url(HUB + HOME)
    assert running(host, app, "alice") == []
    context.close()
