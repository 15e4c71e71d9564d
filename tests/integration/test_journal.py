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

    # Written by a process outside any unit (root, here): journald gives it no _SYSTEMD_UNIT,
    # so it is nobody's the reaper believes.
    read = python(
        journald,
        """
        import sys
        sys.path.insert(0, "/tmp")
        import journal
        events, cursor = journal.read_events("h1", None, 0, journal.DaemonSource("x.service", 0))
        print(repr((events, cursor)))
        """,
    )
    assert read.strip() == "([], None)"


@pytest.fixture
def systemd(docker_engine):
    """systemd as PID 1 (so journald attributes entries to units), an account for the daemon."""
    if subprocess.run(["docker", "image", "inspect", IMAGE], capture_output=True).returncode:
        pytest.fail(f"{IMAGE} missing: run scripts/build-test-images.sh")
    flags = ["--cgroupns=host", "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw"]
    flags += ["--tmpfs", "/run", "--tmpfs", "/run/lock", "--cap-add", "SYS_ADMIN"]
    flags += ["--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined"]
    name = subprocess.run(
        ["docker", "run", "-d", "--rm", *flags, IMAGE, "/lib/systemd/systemd"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    try:
        wait_for(
            lambda: (
                subprocess.run(
                    ["docker", "exec", name, "systemctl", "is-system-running"],
                    capture_output=True,
                    text=True,
                ).stdout.strip()
                in ("running", "degraded")
            ),
            60,
            "systemd to boot",
        )
        subprocess.run(["docker", "exec", name, "useradd", "--system", "servicehub"], check=True)
        subprocess.run(["docker", "cp", str(JOURNAL_PY), f"{name}:/opt/journal.py"], check=True)
        yield name
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)


def test_only_the_daemons_unit_and_account_are_believed(systemd):
    """Issue 9.2: `logger --journald` from another account (or another unit of the daemon's
    account) writes the same SERVICEHUB_* fields as the daemon; journald's own _SYSTEMD_UNIT
    and _UID tell them apart, and only the daemon's entries are events."""

    def sh(script):
        done = subprocess.run(
            ["docker", "exec", systemd, "sh", "-c", script], capture_output=True, text=True
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    fields = "SERVICEHUB_EVENT=ready\nSERVICEHUB_HUB=h1\nSERVICEHUB_APP=a\n"
    # Forgers set journald's fields too: journald drops every client field that starts with _.
    forged = fields + "_SYSTEMD_UNIT=servicehub.service\n_UID=$(id -u servicehub)\n"
    sh(
        f'printf "MESSAGE=forged\nSERVICEHUB_SLUG=by-nobody\n{forged}" > /tmp/nobody\n'
        f'printf "MESSAGE=forged\nSERVICEHUB_SLUG=other-unit\n{forged}" > /tmp/other\n'
        "chmod 644 /tmp/nobody /tmp/other\n"
        "runuser -u nobody -- logger --journald=/tmp/nobody\n"
        "systemd-run --quiet --wait --unit=other -p PrivateTmp=no --uid=servicehub "
        "logger --journald=/tmp/other\n"
    )
    # The daemon: journal.py's own handler, run as the servicehub.service unit.
    sh(
        "systemd-run --quiet --wait --unit=servicehub -p PrivateTmp=no --uid=servicehub "
        'python3 -c \'import logging, sys; sys.path.insert(0, "/opt"); import journal; '
        'log = logging.getLogger("d"); log.addHandler(journal.JournalHandler()); '
        'log.warning("ready", extra=journal.event("ready", hub="h1", app="a", slug="daemon"))\''
    )
    wait_for(lambda: sh("journalctl -o cat SERVICEHUB_HUB=h1").count("\n") >= 3, 10, "3 entries")
    out = sh(
        'python3 -c \'import pwd, sys; sys.path.insert(0, "/opt"); import journal; '
        'uid = pwd.getpwnam("servicehub").pw_uid; '
        'source = journal.DaemonSource("servicehub.service", uid); '
        'events, _ = journal.read_events("h1", None, 0, source); '
        "print(sorted(e.slug for e in events))'"
    )
    assert out.strip() == "['daemon']"
    # Control: all three are in the journal, with the SERVICEHUB_* fields the reaper reads.
    slugs = sh("journalctl -o json SERVICEHUB_HUB=h1 SERVICEHUB_EVENT=ready")
    assert {json.loads(line)["SERVICEHUB_SLUG"] for line in slugs.splitlines()} == {
        "by-nobody",
        "other-unit",
        "daemon",
    }
