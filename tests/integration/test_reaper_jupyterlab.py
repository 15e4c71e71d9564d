"""JupyterLab in Chromium under the real reaper, on its real clock and a short timeout.

One hub, one reaper "timer" (a run every PERIOD seconds, as systemd's timer would do every
minute), and the people of the scenarios at the same time, each as another user:

- alice opens JupyterLab and leaves the tab open, untouched: its polls are background, so she
  is reaped idle_timeout after her page load; then the tab's polls do not bring her container
  back, and a reload does;
- bob works in a notebook, running a cell every two reaper periods: kept by his work;
- carol starts a long computation and closes her browser: kept by the kernel's CPU.

The scenarios share one timeout window, so together they cost one of them. Each asserts the
decision and the signal the reaper gave for it.
"""

from __future__ import annotations

import asyncio
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
IDLE_TIMEOUT = 40  # seconds
APP = "jupyterlab"
LAB = "/notebook/lab"
LAUNCHER = ".jp-LauncherCard"
KERNEL_IDLE = ".jp-Notebook-ExecutionIndicator[data-status='idle']"
COMPUTATION = "while True: pass"  # at the app's limit of half a core


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
    cells_run: int
    statuses_after_reap: list[int]  # alice's tab's background requests once she was reaped
    back_after_reload: bool


@pytest.fixture(scope="module")
def scenario(tmp_path_factory, jupyterlab_image) -> Iterator[Scenario]:
    sync_api = pytest.importorskip("playwright.sync_api")
    settings = {
        "idle_timeout": f"{IDLE_TIMEOUT}s",
        "grace": "0s",
        "limits": {"memory": "1g", "cpus": 0.5, "pids": 256},
    }
    hub = Hub(workdir=tmp_path_factory.mktemp("jupyterlab"), apps={APP: jupyterlab_app(**settings)})
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
        hub.stop()
        hub.cleanup_docker()


def _open(hub: Hub, browser, user: str, loaded: dict[str, int], timer: Timer):
    context = browser.new_context(extra_http_headers={USER_HEADER: user, SECRET_HEADER: hub.secret})
    page = context.new_page()
    page.goto(f"http://127.0.0.1:{hub.web_port}{LAB}")
    page.wait_for_selector(LAUNCHER, timeout=120_000)
    loaded[user] = len(timer.runs)
    return context, page


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
    alice.on("response", lambda r: alice_statuses.append(r.status))

    carol_context, carol = _open(hub, browser, "carol", loaded, timer)
    _new_notebook(carol)
    _run_cell(carol, COMPUTATION, None)
    # Computing, not only queued in the page: a queued cell would go with the browser.
    wait_for(lambda: _kernel_states(hub, "carol") == ["busy"], 60, "carol's kernel computing")
    carol_context.close()  # the browser goes; the kernel computes on
    left = len(timer.runs)

    _, bob = _open(hub, browser, "bob", loaded, timer)
    _new_notebook(bob)
    cells = 0
    last_cell = -2
    # Bob runs a cell every two reaper runs until alice, untouched, is due to be reaped,
    # carol's computation has run without a browser for a whole idle_timeout and a run more,
    # and bob has worked for longer than idle_timeout.
    enough = left + int(IDLE_TIMEOUT // PERIOD) + 2
    # Alice is due at the first run past idle_timeout after her page load; two runs' margin.
    due = loaded["alice"] + int(IDLE_TIMEOUT // PERIOD) + 3
    # Bob works for longer than idle_timeout: his page load alone cannot keep him.
    worked = loaded["bob"] + int(IDLE_TIMEOUT // PERIOD) + 2
    while len(timer.runs) < max(enough, due, worked):
        if len(timer.runs) >= last_cell + 2:
            cells += 1
            # A cell with a page of output (about 20 kB of kernel messages): its traffic stands
            # above the tab's background jitter even when a run boundary splits it in two. A
            # tiny cell (about 10 kB) split that way is two halves under activity_bytes.
            _run_cell(bob, f"print('cell {cells} ' + 'x' * 16000)", f"cell {cells} ")
            last_cell = len(timer.runs)
        bob.wait_for_timeout(500)  # Playwright's own wait: the tabs go on polling meanwhile
    if timer.reaped("alice") is None:  # the tests say how she was kept
        return Scenario(hub, timer, loaded, left, cells, [], False)

    # Alice's tab polls on; those requests reach the daemon, which starts nothing for them.
    reaped_at = len(alice_statuses)
    wait_for(
        lambda: alice_statuses[reaped_at:].count(409) >= 3 or alice.wait_for_timeout(200),
        60,
        "alice's tab to poll after her session ended",
    )
    statuses = alice_statuses[reaped_at:]
    assert hub.containers(user="alice") == []
    # She comes back and reloads the page: that starts it again.
    alice.reload()
    alice.wait_for_selector(LAUNCHER, timeout=120_000)
    back = len(hub.containers(user="alice")) == 1
    return Scenario(hub, timer, loaded, left, cells, statuses, back)


def test_an_open_tab_nobody_touches_is_reaped_idle_timeout_after_its_page_load(scenario):
    rows = scenario.timer.rows("alice")
    reaped = scenario.timer.reaped("alice")
    assert reaped is not None and reaped.reason.startswith("idle for"), rows
    # The page load's requests and traffic are the last activity: from the second run after
    # it, the tab's polls and its traffic at the session's background level never counted.
    until_reap = rows[: rows.index(reaped) + 1]
    settled = scenario.timer.rows("alice", since=scenario.loaded["alice"] + 1)
    settled = [r for r in settled if r in until_reap]
    # (The same moment in every run: monotonic, shown on the wall clock, to the microsecond.)
    moments = {round(r.last_activity or 0, 3) for r in settled}
    assert len(settled) >= 2 and moments == {round(reaped.last_activity or 0, 3)}, rows
    assert reaped.source in {"access-log", "network"}, reaped
    # So it goes at the first run past idle_timeout after the load.
    before = rows[rows.index(reaped) - 1]
    assert before.decision == "keep" and before.idle_for < IDLE_TIMEOUT, rows


def test_a_reaped_tabs_polls_do_not_bring_it_back_a_reload_does(scenario):
    assert scenario.statuses_after_reap.count(409) >= 3, scenario.statuses_after_reap
    assert 200 not in scenario.statuses_after_reap
    assert scenario.back_after_reload


def test_a_person_running_a_cell_every_two_runs_is_kept_by_their_work(scenario):
    rows = scenario.timer.rows("bob")
    assert scenario.cells_run >= 3
    assert all(r.decision == "keep" for r in rows), rows
    worked = scenario.timer.rows("bob", since=scenario.loaded["bob"] + 1)
    # Kept by what the cells cause: their kernel messages (network), the workspace saves
    # (access-log), or the kernel and server working on a page of output (cpu).
    assert {r.source for r in worked} <= {"network", "access-log", "cpu"}, worked
    assert max(r.idle_for for r in worked) < IDLE_TIMEOUT, worked


def test_a_kernel_computing_with_the_browser_closed_is_kept_by_its_cpu(scenario):
    rows = scenario.timer.rows("carol")
    assert all(r.decision == "keep" for r in rows), rows
    # Once her page load is more than idle_timeout ago, only the kernel's CPU can keep her.
    alone = scenario.timer.rows("carol", since=scenario.left + int(IDLE_TIMEOUT // PERIOD) + 1)
    assert alone and {r.source for r in alone} == {"cpu"}, rows
