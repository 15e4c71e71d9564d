"""Structured events through a real systemd-journald, read back with the real journalctl.

journald runs alone in the project's systemd test image (no privileges needed); the code under
test is servicehub/journal.py (standard library only), run by that image's Python.
"""

import json
import subprocess
import textwrap
from pathlib import Path

import pytest

from tests.harness import wait_for

pytestmark = pytest.mark.integration
IMAGE = "servicehub-test/systemd:12"
JOURNAL_PY = Path(__file__).resolve().parents[2] / "servicehub" / "journal.py"


@pytest.fixture
def journald(docker_engine):
    if subprocess.run(["docker", "image", "inspect", IMAGE], capture_output=True).returncode:
        pytest.fail(f"{IMAGE} missing: run scripts/build-test-images.sh")
    name = subprocess.run(
        ["docker", "run", "-d", "--rm", "--tmpfs", "/run", IMAGE, "/lib/systemd/systemd-journald"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    try:
        wait_for(
            lambda: (
                subprocess.run(
                    ["docker", "exec", name, "test", "-S", "/run/systemd/journal/socket"]
                ).returncode
                == 0
            ),
            30,
            "journald's socket",
        )
        subprocess.run(["docker", "cp", str(JOURNAL_PY), f"{name}:/tmp/journal.py"], check=True)
        yield name
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)


def python(container, code):
    out = subprocess.run(
        ["docker", "exec", container, "python3", "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_events_reach_journald_with_their_fields_and_read_back(journald):
    python(
        journald,
        """
        import logging, sys
        from pathlib import Path
        sys.path.insert(0, "/tmp")
        import journal
        handler = journal.JournalHandler(Path("/run/systemd/journal/socket"))
        log = logging.getLogger("servicehub.sessions")
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        fields = dict(hub="h1", app="whoami", slug="jose-abc", user="jos\\u00e9\\nx")
        log.info("spawned\\nsecond line", extra=journal.event("spawned", **fields))
        log.warning("other hub", extra=journal.event("ready", hub="h2", app="a", slug="b"))
        """,
    )
    raw = subprocess.run(
        ["docker", "exec", journald, "journalctl", "-o", "json", "SERVICEHUB_HUB=h1"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    (entry,) = [json.loads(line) for line in raw.splitlines()]
    assert entry["MESSAGE"] == "spawned\nsecond line"
    assert entry["SERVICEHUB_USER"] == "josé\nx" and entry["SERVICEHUB_SLUG"] == "jose-abc"
    assert entry["PRIORITY"] == "6" and entry["SYSLOG_IDENTIFIER"] == "servicehub"

    first = python(
        journald,
        """
        import sys
        sys.path.insert(0, "/tmp")
        import journal
        events, cursor = journal.read_events("h1", None, 0)
        print(repr([(e.event, e.app, e.slug) for e in events]))
        again, same = journal.read_events("h1", cursor, 0)
        print(repr((again, same == cursor)))
        """,
    )
    assert first.splitlines() == ["[('spawned', 'whoami', 'jose-abc')]", "([], True)"]
