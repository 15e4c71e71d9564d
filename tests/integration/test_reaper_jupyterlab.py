"""A single-page app (JupyterLab) and websockets in Chromium under the real reaper, on its real
clock and a short timeout.

One hub, one reaper "timer" (a run every PERIOD seconds, as systemd's timer would do every
minute), and the people of the scenarios at the same time, each as another user:

- alice opens JupyterLab and leaves the tab open, untouched: its polls are background, so she
  is reaped idle_timeout after her page load; then the tab's polls do not bring her container
  back, and a click (a new notebook: a write) does;
- bob works in a notebook, running a cell every two reaper periods: kept by his work;
- carol starts a long computation and closes her browser: kept by the kernel's CPU;
- dave chats over a websocket, small messages at irregular times: kept by them;
- erin's page holds many websockets that only the app's pings keep busy: reaped, and a reload
  brings her app back.

The scenarios share one timeout window, so together they cost one of them. Each asserts the
decision and the signal the reaper gave for it.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from servicehub.backend import DockerBackend
from servicehub.config import load_config
from servicehub.reaper import Reaper
from servicehub.reaper_report import Row
from servicehub.routes import RouteStore
from tests.harness import (
    EXAMPLE_IMAGE,
    SECRET_HEADER,
    USER_HEADER,
    Hub,
    jupyterlab_app,
    raw_request,
    wait_for,
)
from tests.integration.conftest import CHROMIUM, CHROMIUM_ARGS

pytestmark = [pytest.mark.integration, pytest.mark.browser]

PERIOD = 10.0  # seconds between two reaper runs
IDLE_TIMEOUT = 60  # seconds: six runs, so a slow cell on a busy machine is not a long pause
APP = "jupyterlab"
LAB = "/notebook/lab"
LAUNCHER = ".jp-LauncherCard"
NEW_NOTEBOOK = f'{LAUNCHER}[data-category="Notebook"]'
KERNEL_IDLE = ".jp-Notebook-ExecutionIndicator[data-status='idle']"
COMPUTATION = "while True: pass"  # at the app's limit of half a core
# dave's chat: bursts of small messages, seconds apart at irregular times (a person's pace,
# compressed as the timer's minute is), under the `activity_bytes: 1k` docs/reaper.md
# recommends for such apps. Each burst: 8 messages of 100 bytes, echoed, about 2.5 kB.
CHAT_GAPS = [7, 18, 4, 23, 11, 15, 6, 21, 9, 13]  # seconds
CHAT_BURST = 8
# erin's page: sockets the app pings every PING seconds (30 s in a real app, against a
# 60-second timer), so every run sees about the same pings.
SOCKETS = 20
PING = 5


def kept(row: Row) -> bool:
    """Kept, or left for the next run while the daemon starts it (a run during the spawn)."""
    return row.decision == "keep" or (row.decision == "skip" and row.source == "spawn")


def table(rows: list[Row]) -> str:
    """Rows as an operator reads them, for the assertion messages."""
    return "\n" + "\n".join(
        f"{r.user} {r.decision} {r.source} idle {r.idle_for:.0f}s: {r.reason}" for r in rows
    )


def reap_once(hub: Hub) -> dict[str, Row]:
    """One `servicehub reap` run on the host's clocks: rows by user."""

    async def run() -> list[Row]:
        config = load_config(hub.config_path, hub.env())
        backend = DockerBackend(config)
        try:
            return await Reaper(config, backend, RouteStore(config)).run()
        finally:
            await backend.close()

    return {row.user: row for row in asyncio.run(run())}


@dataclass
class Timer:
    """The reaper's systemd timer, PERIOD seconds apart. Rows of every run, in order."""

    hub: Hub
    runs: list[dict[str, Row]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    failure: BaseException | None = None

    def loop(self) -> None:
        try:
            while not self.stop.is_set():
                self.runs.append(reap_once(self.hub))
                self.stop.wait(PERIOD)
        except BaseException as exc:  # shown by the test that reads the rows
            self.failure = exc

    def rows(self, user: str, since: int = 0) -> list[Row]:
        """The user's rows of the runs from the ``since``-th on."""
        if self.failure is not None:
            raise AssertionError(f"the reaper run failed: {self.failure!r}")
        return [run[user] for run in list(self.runs)[since:] if user in run]

    def reaped(self, user: str) -> Row | None:
        return next((r for r in self.rows(user) if r.decision == "reap"), None)


@dataclass
class Scenario:
    hub: Hub
    timer: Timer
    loaded: dict[str, int]  # user -> number of reaper runs done when their page had loaded
    left: int  # number of reaper runs done when carol closed her browser
    cells: list[int]  # the number of reaper runs done when each of bob's cells started
    chat_messages: int  # the messages dave sent
    statuses_after_reap: list[int]  # alice's tab's background requests once she was reaped
    click: list[tuple[str, int]]  # alice's writes and their statuses, from her click on
    back_after_click: bool
    back_after_reload: bool


@pytest.fixture(scope="module")
def scenario(tmp_path_factory, jupyterlab_image) -> Iterator[Scenario]:
    sync_api = pytest.importorskip("playwright.sync_api")
    settings = {
        "idle_timeout": f"{IDLE_TIMEOUT}s",
        "grace": "0s",
        "limits": {"memory": "1g", "cpus": 0.5, "pids": 256},
    }
    whoami = {
        "image": EXAMPLE_IMAGE,
        "port": 8000,
        "idle_timeout": f"{IDLE_TIMEOUT}s",
        "grace": "0s",
        "limits": {"memory": "256m", "cpus": 0.5, "pids": 64},
    }
    apps = {
        APP: jupyterlab_app(**settings),
        "chat": {**whoami, "route": {"path_prefix": "/chat/"}, "activity_bytes": "1k"},
        "pings": {**whoami, "route": {"path_prefix": "/pings/"}},
    }
    hub = Hub(workdir=tmp_path_factory.mktemp("jupyterlab"), apps=apps)
    timer = Timer(hub)
    thread = threading.Thread(target=timer.loop, daemon=True)
    try:
        hub.start()
        thread.start()
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            yield _play(hub, timer, browser)
            browser.close()
    except BaseException:
        print(hub.logs())
        print("reaper rows:", *timer.runs, sep="\n")
        raise
    finally:
        timer.stop.set()
        thread.join(timeout=60)
        for user in ("alice", "bob", "carol", "dave", "erin"):  # shown with -s or a failure
            print(table(timer.rows(user)) if timer.failure is None else timer.failure)
        hub.stop()
        hub.cleanup_docker()


def _open(
    hub: Hub, browser, user: str, loaded: dict[str, int], timer: Timer, path=LAB, ready=LAUNCHER
):
    context = browser.new_context(extra_http_headers={USER_HEADER: user, SECRET_HEADER: hub.secret})
    page = context.new_page()
    page.goto(f"http://127.0.0.1:{hub.web_port}{path}")
    page.wait_for_selector(ready, timeout=120_000)
    loaded[user] = len(timer.runs)
    return context, page


WHOAMI_PAGE = "#whoami"

# As apps do, a socket that fails to open is tried again a second later: a page served while
# Traefik still loads its route gets its first upgrade refused (docs/daemon.md, "hand-over").
CONNECT = """async function connect(path) {
    for (;;) {
        const ws = new WebSocket(`ws://${location.host}${path}`);
        const opened = await new Promise((done) => {
            ws.onopen = () => done(true);
            ws.onerror = () => done(false);
        });
        if (opened) return ws;
        await new Promise((later) => setTimeout(later, 1000));
    }
}"""

CHAT = (
    "async ([path, gaps, burst]) => {"
    + CONNECT
    + """
    const ws = await connect(path);
    window.chatSent = 0;
    (async () => {
        for (let i = 0; ws.readyState === WebSocket.OPEN; i++) {
            await new Promise((later) => setTimeout(later, gaps[i % gaps.length] * 1000));
            for (let k = 0; k < burst; k++) { ws.send("m".repeat(100)); window.chatSent++; }
        }
    })();
}"""
)

PING_ONLY = (
    "async ([path, count]) => {"
    + CONNECT
    + """
    window.sockets = [];
    for (let i = 0; i < count; i++) window.sockets.push(await connect(path));
}"""
)


def _new_notebook(page) -> None:
    page.click(f'{LAUNCHER}[data-category="Notebook"]')
    page.wait_for_selector(KERNEL_IDLE, timeout=60_000)


def _run_cell(page, code: str, output: str | None) -> None:
    editor = page.locator(".jp-Notebook .jp-Cell .cm-content").last
    # On a busy machine the notebook may take keys before its editor does: type until the
    # editor shows the code.

    def typed() -> bool:
        if editor.text_content() == code:
            return True
        editor.click()
        page.keyboard.press("Control+a")
        page.keyboard.type(code)
        return False

    wait_for(typed, 60, f"the cell to read {code!r}", interval=0.5)
    page.keyboard.press("Shift+Enter")
    if output is not None:  # the kernel may still be starting, on a busy machine
        page.wait_for_selector(f".jp-OutputArea-output:has-text('{output}')", timeout=90_000)


def _kernel_states(hub: Hub, user: str) -> list[str]:
    """Asked as the page's own poll would be (a background request: it counts for nothing)."""
    headers = [*hub.identity_headers(user), ("Sec-Fetch-Mode", "cors")]
    resp = raw_request(hub.web_port, "/notebook/api/kernels", headers)
    return [k["execution_state"] for k in resp.json()] if resp.status == 200 else []


def _play(hub: Hub, timer: Timer, browser) -> Scenario:
    loaded: dict[str, int] = {}
    _, alice = _open(hub, browser, "alice", loaded, timer)
    alice_statuses: list[int] = []
    alice_writes: list[tuple[str, int]] = []

    def alice_saw(response) -> None:
        alice_statuses.append(response.status)
        if response.request.method not in ("GET", "HEAD"):
            alice_writes.append((response.request.method, response.status))

    alice.on("response", alice_saw)

    _, erin = _open(hub, browser, "erin", loaded, timer, "/pings/", WHOAMI_PAGE)
    erin.evaluate(PING_ONLY, [f"/pings/ws?ping={PING}", SOCKETS])
    _, dave = _open(hub, browser, "dave", loaded, timer, "/chat/", WHOAMI_PAGE)
    dave.evaluate(CHAT, ["/chat/ws", CHAT_GAPS, CHAT_BURST])

    carol_context, carol = _open(hub, browser, "carol", loaded, timer)
    _new_notebook(carol)
    _run_cell(carol, COMPUTATION, None)
    # Computing, not only queued in the page: a queued cell would go with the browser.
    wait_for(lambda: _kernel_states(hub, "carol") == ["busy"], 60, "carol's kernel computing")
    carol_context.close()  # the browser goes; the kernel computes on
    left = len(timer.runs)

    _, bob = _open(hub, browser, "bob", loaded, timer)
    _new_notebook(bob)
    cells: list[int] = []
    runs = int(IDLE_TIMEOUT // PERIOD)
    # Bob runs a cell every two reaper runs until alice and erin, untouched, are due to be
    # reaped (at the first run past idle_timeout after their page load; two runs' margin),
    # carol's computation has run without a browser for a whole idle_timeout and a run more,
    # and bob has worked for longer than idle_timeout: his page load alone cannot keep him.
    until = max(
        loaded["alice"] + runs + 3,
        loaded["erin"] + runs + 3,
        left + runs + 2,
        loaded["bob"] + runs + 2,
    )
    while len(timer.runs) < until:
        if not cells or len(timer.runs) >= cells[-1] + 2:
            cells.append(len(timer.runs))
            # A cell with a page of output (about 20 kB of kernel messages): its traffic stands
            # above the tab's background jitter even when a run boundary splits it in two. A
            # tiny cell (about 10 kB) split that way is two halves under activity_bytes.
            n = len(cells)
            _run_cell(bob, f"print('cell {n} ' + 'x' * 16000)", f"cell {n} ")
        bob.wait_for_timeout(500)  # Playwright's own wait: the tabs go on polling meanwhile
    chat_messages = dave.evaluate("window.chatSent")
    scenario = Scenario(hub, timer, loaded, left, cells, chat_messages, [], [], False, False)
    if timer.reaped("erin") is not None:  # the tests say how she was kept
        # She comes back and reloads the page: that starts it again.
        erin.reload()
        erin.wait_for_selector(WHOAMI_PAGE, timeout=120_000)
        scenario.back_after_reload = len(hub.containers(user="erin")) == 1
    if timer.reaped("alice") is None:
        return scenario

    # Alice's tab polls on; those requests reach the daemon, which starts nothing for them.
    reaped_at = len(alice_statuses)
    wait_for(
        lambda: alice_statuses[reaped_at:].count(409) >= 3 or alice.wait_for_timeout(200),
        60,
        "alice's tab to poll after her session ended",
    )
    scenario.statuses_after_reap = alice_statuses[reaped_at:]
    assert hub.containers(user="alice") == []
    # She comes back and asks for a new notebook: the click's write starts JupyterLab again,
    # waits for it and is answered by it.
    clicked_at = len(alice_writes)
    alice.click(NEW_NOTEBOOK)
    alice.wait_for_selector(KERNEL_IDLE, timeout=120_000)
    scenario.click = alice_writes[clicked_at:]
    scenario.back_after_click = len(hub.containers(user="alice")) == 1
    return scenario


def test_an_open_tab_nobody_touches_is_reaped_idle_timeout_after_its_page_load(scenario):
    rows = scenario.timer.rows("alice")
    reaped = scenario.timer.reaped("alice")
    assert reaped is not None and reaped.reason.startswith("idle for"), table(rows)
    # The page load's requests and traffic are the last activity: from the second run after
    # it, the tab's polls and its traffic at the session's background level never counted.
    until_reap = rows[: rows.index(reaped) + 1]
    settled = scenario.timer.rows("alice", since=scenario.loaded["alice"] + 1)
    settled = [r for r in settled if r in until_reap]
    # (The same moment in every run: monotonic, shown on the wall clock, to the microsecond.)
    moments = {round(r.last_activity or 0, 3) for r in settled}
    assert len(settled) >= 2 and moments == {round(reaped.last_activity or 0, 3)}, table(rows)
    assert reaped.source in {"access-log", "network"}, table([reaped])
    # So it goes at the first run past idle_timeout after the load.
    before = rows[rows.index(reaped) - 1]
    assert before.decision == "keep" and before.idle_for < IDLE_TIMEOUT, table(rows)


def test_a_reaped_tabs_polls_do_not_bring_it_back_a_click_does(scenario):
    assert scenario.statuses_after_reap.count(409) >= 3, scenario.statuses_after_reap
    assert 200 not in scenario.statuses_after_reap
    # The click's first write (the new notebook) was held until JupyterLab was back, and
    # JupyterLab answered it: no error for the person.
    assert scenario.click and scenario.click[0] == ("POST", 201), scenario.click
    assert scenario.back_after_click


def test_a_person_running_a_cell_every_two_runs_is_kept_by_their_work(scenario):
    rows = scenario.timer.rows("bob")
    cells = scenario.cells
    # Every two runs as planned, three where a cell was slow to type on a busy machine.
    assert len(cells) >= 3 and all(b - a <= 3 for a, b in itertools.pairwise(cells)), cells
    assert all(kept(r) for r in rows), table(rows)
    worked = scenario.timer.rows("bob", since=scenario.loaded["bob"] + 1)
    # Kept by what the cells cause: their kernel messages (network), the workspace saves
    # (access-log), or the kernel and server working on a page of output (cpu).
    assert {r.source for r in worked} <= {"network", "access-log", "cpu"}, table(worked)
    assert max(r.idle_for for r in worked) < IDLE_TIMEOUT, table(worked)


def test_a_kernel_computing_with_the_browser_closed_is_kept_by_its_cpu(scenario):
    rows = scenario.timer.rows("carol")
    assert all(kept(r) for r in rows), table(rows)
    # Once her page load is more than idle_timeout ago, only the kernel's CPU can keep her.
    alone = scenario.timer.rows("carol", since=scenario.left + int(IDLE_TIMEOUT // PERIOD) + 1)
    assert alone and {r.source for r in alone} == {"cpu"}, table(rows)


def test_a_websocket_with_small_irregular_messages_is_kept_by_them(scenario):
    rows = scenario.timer.rows("dave")
    assert scenario.chat_messages >= 3 * CHAT_BURST, scenario.chat_messages
    assert all(kept(r) for r in rows), table(rows)
    # Past idle_timeout after the page load, only the messages can keep dave: no request
    # reaches his app's router, and the socket stays open.
    alone = scenario.timer.rows("dave", since=scenario.loaded["dave"] + int(IDLE_TIMEOUT // PERIOD))
    assert alone and {r.source for r in alone} == {"network"}, table(rows)


def test_many_sockets_that_only_ping_are_reaped_and_a_reload_brings_the_app_back(scenario):
    rows = scenario.timer.rows("erin")
    reaped = scenario.timer.reaped("erin")
    assert reaped is not None and reaped.reason.startswith("idle for"), table(rows)
    # Her last activity is the page load and the sockets' opening, never a ping since.
    settled = scenario.timer.rows("erin", since=scenario.loaded["erin"] + 2)
    settled = [r for r in settled if r in rows[: rows.index(reaped) + 1]]
    moments = {round(r.last_activity or 0, 3) for r in settled}
    assert moments == {round(reaped.last_activity or 0, 3)}, table(rows)
    # The pings did move bytes, within the session's background level.
    assert any("traffic" in r.reason and "its level" in r.reason for r in settled), table(rows)
    assert scenario.back_after_reload
