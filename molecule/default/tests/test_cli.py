"""The `servicehub` command on the hub's PATH: root and the operators group may run it, nobody
else, and it always acts as the servicehub account (what it writes stays the daemon's)."""

import json

import pytest
from hub_variables import VARIABLES

CLI = VARIABLES["__servicehub_cli"]
OPERATORS = VARIABLES["servicehub_operators_group"]
OPERATOR = "svh-test-operator"  # a member of the group
OUTSIDER = "svh-test-outsider"  # an ordinary local account
STATE = VARIABLES["__servicehub_home"]


@pytest.fixture(scope="module")
def accounts(host):
    for name, groups in ((OPERATOR, f"--groups {OPERATORS}"), (OUTSIDER, "")):
        host.run_test(
            f"id -u {name} >/dev/null 2>&1 || "
            f"useradd --system --no-create-home --shell /usr/sbin/nologin {groups} {name}"
        )
    yield
    for name in (OPERATOR, OUTSIDER):
        host.run(f"userdel {name}")


def as_user(user: str | None, command: str) -> str:
    """`command` run as `user` (runuser keeps root's PATH; no login shell needed)."""
    return f"runuser -u {user} -- {command}" if user else command


def test_the_command_is_on_roots_path_and_only_root_may_change_it(host):
    assert host.run_test("command -v servicehub").stdout.strip() == CLI
    wrapper = host.file(CLI)
    assert (wrapper.user, wrapper.group, wrapper.mode) == ("root", "root", 0o755)
    sudoers = host.file(VARIABLES["__servicehub_sudoers"])
    assert (sudoers.user, sudoers.mode) == ("root", 0o440)
    assert host.run_test(f"visudo -cf {VARIABLES['__servicehub_sudoers']}").rc == 0


@pytest.mark.parametrize("user", [None, OPERATOR], ids=["root", "operator"])
def test_sessions_json_works_from_path(host, accounts, user):
    out = host.run(as_user(user, "servicehub sessions --json"))
    assert out.rc == 0, out.stderr
    assert isinstance(json.loads(out.stdout), list)


def test_another_account_is_refused(host, accounts):
    out = host.run(as_user(OUTSIDER, "servicehub sessions --json"))
    assert out.rc == 77, (out.rc, out.stdout, out.stderr)  # EX_NOPERM
    assert OPERATORS in out.stderr
    assert out.stdout == ""
    # Nor can it go round the wrapper through sudo.
    direct = host.run(as_user(OUTSIDER, f"sudo -n {CLI} sessions --json"))
    assert direct.rc != 0 and direct.stdout == ""


@pytest.mark.parametrize("user", [None, OPERATOR], ids=["root", "operator"])
def test_it_reads_as_the_servicehub_account_not_as_its_caller(host, accounts, user):
    """A config readable by root only is unreadable to the command, even when root runs it;
    one readable by group servicehub (and not by the operator) is read."""
    config = VARIABLES["__servicehub_config_path"]
    host.run_test(f"install -m 0600 -o root -g root {config} /tmp/root-only.yml")
    host.run_test(f"install -m 0640 -o root -g servicehub {config} /tmp/hub-only.yml")
    refused = host.run(as_user(user, "servicehub -c /tmp/root-only.yml check-config"))
    assert refused.rc != 0 and "Permission denied" in refused.stderr, (refused.rc, refused.stderr)
    accepted = host.run(as_user(user, "servicehub -c /tmp/hub-only.yml check-config"))
    assert accepted.rc == 0, accepted.stderr


@pytest.mark.parametrize("user", [None, OPERATOR], ids=["root", "operator"])
def test_what_it_writes_stays_the_daemons(host, accounts, user):
    """A real reaper run rewrites the reaper's state and takes its lock: both stay owned by the
    servicehub account, so the timer's next run can still write them."""
    for _ in range(10):  # the timer's own run may hold the reaper lock for a moment (75)
        out = host.run(as_user(user, "servicehub reap --json"))
        if out.rc != 75:
            break
        host.run("sleep 3")
    assert out.rc == 0, out.stderr
    assert json.loads(out.stdout) is not None
    strays = host.run_test(
        f"find {STATE} -xdev \\( -path {STATE}/volumes -o -path {STATE}/images \\) -prune "
        "-o ! -user servicehub -print"
    ).stdout
    assert strays == ""
    assert host.file(f"{STATE}/reaper.json").user == "servicehub"
