import shutil
import subprocess

import pytest

from tests.harness import EXAMPLE_IMAGE, JUPYTERLAB_IMAGE, Hub, example_apps

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# The machine has no outside network: keep Chromium from trying to reach it.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    if not shutil.which("chromium"):
        pytest.fail("Debian's chromium is missing: make test installs it")
    with sync_api.sync_playwright() as p:
        instance = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield instance
        instance.close()


def _docker_ok() -> bool:
    return subprocess.run(["docker", "info"], capture_output=True, check=False).returncode == 0


@pytest.fixture(scope="session")
def docker_engine():
    if not _docker_ok():
        pytest.fail("no Docker Engine: run scripts/ensure-docker.sh (make test does)")


@pytest.fixture(scope="session")
def example_image(docker_engine):
    found = subprocess.run(
        ["docker", "image", "inspect", EXAMPLE_IMAGE], capture_output=True, check=False
    )
    if found.returncode != 0:
        pytest.fail(f"{EXAMPLE_IMAGE} missing: run scripts/build-test-images.sh (make test does)")
    return EXAMPLE_IMAGE


@pytest.fixture(scope="session")
def jupyterlab_image(docker_engine):
    """The JupyterLab test image; its tests skip, saying so, where it was not built."""
    found = subprocess.run(
        ["docker", "image", "inspect", JUPYTERLAB_IMAGE], capture_output=True, check=False
    )
    if found.returncode != 0:
        pytest.skip(f"{JUPYTERLAB_IMAGE} missing: run scripts/build-test-images.sh")
    return JUPYTERLAB_IMAGE


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    item.stash.setdefault("reports", {})[report.when] = report
    return report


@pytest.fixture
def hub_factory(request, tmp_path, example_image):
    """Start a hub with the given apps; on failure its logs are printed; containers removed."""
    made = []

    def make(apps, name="hub", settings=None):
        instance = Hub(workdir=tmp_path / name, apps=apps, settings=settings or {})
        instance.workdir.mkdir()
        made.append(instance)
        instance.start()
        return instance

    try:
        yield make
    finally:
        reports = request.node.stash.get("reports", {})
        for instance in made:
            if any(r.failed for r in reports.values()) or instance.daemon is None:
                print(instance.logs())
            instance.stop()
            instance.cleanup_docker()


@pytest.fixture
def hub(hub_factory):
    """A running hub (Traefik + daemon) with the example apps."""
    return hub_factory(example_apps())
