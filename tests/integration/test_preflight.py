"""Bad variables stop the play in preflight, with a message that names the variable.

Runs site.yml's own play (the preflight of every role in its pre_tasks, its roles, whose
defaults the whole play sees) with real Ansible against this machine, in check mode, and ends
it right after the pre_tasks: nothing on the machine changes, whether the preflight passes or not.
The hub's cases are one run over an inventory of one host per case, all this machine with the
case's variables: starting Ansible once per case cost three and a half minutes.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
ANSIBLE = Path(sys.executable).parent / "ansible-playbook"

# A valid hub: the variables a real inventory must set (group_vars.example/hub.yml).
GOOD = {
    "servicehub_identity_issuer": "https://id.example.org/realms/lab",
    "servicehub_apps": {"whoami": {"image": "servicehub-example/whoami:latest", "port": 8000}},
    "apache_oidc_server_name": "hub.example.org",
    "apache_oidc_provider_metadata_url": (
        "https://id.example.org/realms/lab/.well-known/openid-configuration"
    ),
    "apache_oidc_client_id": "servicehub",
    "apache_oidc_client_secret": "client-secret-of-the-test",
}
# Header names other than the defaults, consistent with each other.
OWN_HEADERS = {
    "servicehub_user_header": "X-Lab-Identity",
    "servicehub_groups_header": "X-Lab-Teams",
    "servicehub_proxy_secret_header": "X-Lab-Gate",
}


def site_play(name: str, playbook: str = "site.yml") -> dict:
    return next(p for p in yaml.safe_load((ROOT / playbook).read_text()) if p["name"] == name)


PASSED = [
    {"name": "Preflight passed", "ansible.builtin.debug": {"msg": "passed"}},
    {"name": "End here", "ansible.builtin.meta": "end_host"},
]


@dataclass
class Outcome:
    """One case's run: did it reach the end of the preflight, the message of its first failed
    task, and every message it printed (in order)."""

    passed: bool
    error: str
    output: str
    tasks: list[str]  # the names of the tasks it ran, in order


def outcomes(stdout: str) -> dict[str, Outcome]:
    """Each host's outcome from the json callback's report of the run."""
    report = json.loads(stdout[stdout.index("{") :])
    found: dict[str, Outcome] = {}
    for play in report["plays"]:
        for task in play["tasks"]:
            for name, result in task["hosts"].items():
                outcome = found.setdefault(name, Outcome(False, "", "", []))
                text = json.dumps(result, ensure_ascii=False)
                outcome.output += text + "\n"
                if not result.get("skipped"):
                    outcome.tasks.append(task["task"]["name"])
                if result.get("failed") and not outcome.error:
                    outcome.error = text
                if task["task"]["name"] == "Preflight passed" and not result.get("skipped"):
                    outcome.passed = not result.get("failed")
    return found


def run_playbook(tmp_path: Path, play: dict, inventory: dict) -> str:
    """``play`` over ``inventory`` (every host this machine), in check mode; the json report."""
    playbook, hosts = tmp_path / "preflight.yml", tmp_path / "inventory.yml"
    playbook.write_text(yaml.safe_dump([play]))
    hosts.write_text(yaml.safe_dump(inventory))
    env = {
        **os.environ,
        "ANSIBLE_ROLES_PATH": str(ROOT / "roles"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json",
    }
    return subprocess.run(
        [str(ANSIBLE), "-i", str(hosts), "-c", "local", "--check", str(playbook),
         "-e", f"servicehub_source_dir={ROOT}",
         "-e", "ansible_python_interpreter=/usr/bin/python3"],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=600, check=False,
    ).stdout  # fmt: skip


def run_hub_cases(tmp_path: Path, cases: dict[str, dict]) -> dict[str, Outcome]:
    """The hub's play, one inventory host per case with the case's variables over GOOD."""
    hub = site_play("Servicehub hub")
    # The roles stay: their defaults are part of what the preflight checks (one role defines a
    # name, others use it). End each host right after the preflight: the proof that it passed,
    # and a guard that nothing past it (no role, no task) runs from this test.
    play = {**hub, "hosts": "all", "become": False, "tasks": []}
    play["pre_tasks"] = [*hub["pre_tasks"], *PASSED]
    hosts = {f"case-{i}": {**GOOD, **extra} for i, extra in enumerate(cases.values())}
    found = outcomes(run_playbook(tmp_path, play, {"all": {"hosts": hosts}}))
    return {name: found[f"case-{i}"] for i, name in enumerate(cases)}


def run_cluster_case(tmp_path: Path, extra: dict, worker_address: str) -> Outcome:
    """The play site.yml starts with (the workers and the swarm) on an inventory with a hub and
    a worker, both this machine, the worker at ``worker_address``: one outcome for both."""
    first = site_play("Preflight of the workers and the swarm", "playbooks/cluster-preflight.yml")
    play = {**first, "become": False, "tasks": [*first["tasks"], *PASSED]}
    inventory = {
        "all": {"vars": {**GOOD, **extra}},
        "hub": {"hosts": {"hub-host": {"swarm_advertise_address": this_machines_address()}}},
        "workers": {"hosts": {"worker-host": {"swarm_advertise_address": worker_address}}},
    }
    found = outcomes(run_playbook(tmp_path, play, inventory))
    return Outcome(
        passed=all(o.passed for o in found.values()) and len(found) == 2,
        error="".join(o.error for o in found.values()),
        output="".join(o.output for o in found.values()),
        tasks=[t for o in found.values() for t in o.tasks],
    )


def this_machines_address() -> str:
    """An IPv4 address of this machine that is not loopback (Ansible's all_ipv4_addresses)."""
    return subprocess.run(["hostname", "-I"], capture_output=True, text=True).stdout.split()[0]


BAD = [
    ("docker_packages", ["podman"]),
    ("traefik_web_port", 99999),
    ("traefik_api_port", 8099),  # unprivileged: a local account could take it over
    ("servicehub_listen_port", 8090),
    ("traefik_install_source", "curl"),
    ("servicehub_listen_port", "eighty"),
    ("servicehub_proxy_secret", "short"),
    ("servicehub_apps", {}),
    ("firewall_enabled", "perhaps"),
    ("firewall_container_interfaces", ["br-*", "an interface name that is far too long"]),
    ("firewall_container_allowed_tcp_ports", [22, 70000]),
    ("firewall_traefik_web_clients", ["www data"]),
    # Identity header names: one definition, checked for every role (issue 9, item 1).
    ("servicehub_user_header", "X_Hub_User"),  # an alias spelling CGI-style apps read as '-'
    ("servicehub_user_header", "X-Hub-User "),
    ("servicehub_groups_header", "Connection"),  # hop-by-hop: the proxy would drop it
    ("servicehub_user_header", "x-forwarded-user"),  # mod_proxy and Traefik write X-Forwarded-*
    ("servicehub_proxy_secret_header", "Cookie"),
    ("servicehub_proxy_secret_header", "x-servicehub-user"),  # the user header's name
    ("servicehub_groups_header", "X-SERVICEHUB-USER"),
    ("traefik_access_log_headers", ["x-servicehub-proxy-secret"]),  # would log the secret
    ("apache_oidc_proxy_secret", "a-second-secret-for-apache"),  # not the daemon's
    # Roles that checked their variables only after four roles had changed the host.
    ("apache_oidc_scope", "email profile"),
    ("apache_oidc_redirect_path", "/_servicehub/callback"),
    ("certbot_mode", "letsencrypt"),
    ("certbot_domains", ["*.example.org"]),
    ("servicehub_operators_group", "adm"),
    ("servicehub_volumes_separate_filesystem", "maybe"),
]
# Every run of the module, by name: the extra variables over GOOD.
RUNS: dict[str, dict] = {
    "good": {},
    "own headers": {**OWN_HEADERS, "traefik_access_log_headers": ["X-Request-Start"]},
    "inconsistent own headers": {**OWN_HEADERS, "servicehub_groups_header": "x-lab-IDENTITY"},
    "separate filesystem required": {"servicehub_volumes_separate_filesystem": "require"},
    **{f"bad {i}": {variable: value} for i, (variable, value) in enumerate(BAD)},
}

# A cluster's first play: a worker whose address is not one of its own, and one whose is; then
# good addresses with bad shared storage. "{full}": a directory that already holds a user's.
CLUSTER_RUNS: dict[str, tuple[str, dict]] = {
    "cluster bad address": ("192.0.2.254", {}),
    "cluster good": (this_machines_address(), {}),
    "cluster bad storage": (this_machines_address(), {"swarm_shared_storage": "nfs"}),
    "cluster external unmounted": (this_machines_address(), {"swarm_shared_storage": "external"}),
    "cluster data hidden": (this_machines_address(), {"servicehub_volumes_root": "{full}"}),
    "cluster relative bricks": (this_machines_address(), {"swarm_gluster_bricks_dir": "bricks"}),
}


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict[str, Outcome]:
    """All the module's runs: the hub's cases in one run, each cluster case in a run of its own
    (its inventory has the groups), side by side on the machine's cores."""
    full = tmp_path_factory.mktemp("volumes")
    (full / "whoami-alice").mkdir()
    with concurrent.futures.ThreadPoolExecutor(max(2, os.cpu_count() or 1)) as pool:
        futures = {}
        for name, (address, extra) in CLUSTER_RUNS.items():
            extra = {k: v.format(full=full) if isinstance(v, str) else v for k, v in extra.items()}
            futures[name] = pool.submit(
                run_cluster_case, tmp_path_factory.mktemp("cluster"), extra, address
            )
        found = run_hub_cases(tmp_path_factory.mktemp("hub"), RUNS)
        return {**found, **{name: future.result() for name, future in futures.items()}}


def test_a_good_hub_passes_the_preflight(results):
    result = results["good"]
    assert result.passed, result.error or result.output[-3000:]
    # Nothing past the preflight ran: no role's task.
    assert result.tasks[-1] == "Preflight passed", result.tasks[-5:]
    assert not any(" | " in t and "Preflight |" not in t for t in result.tasks), result.tasks


def test_header_names_of_ones_own_pass_the_preflight(results):
    result = results["own headers"]
    assert result.passed, result.error or result.output[-3000:]


@pytest.mark.parametrize(("index", "variable"), [(i, v) for i, (v, _) in enumerate(BAD)])
def test_a_bad_variable_stops_the_play_naming_it(results, index, variable):
    result = results[f"bad {index}"]
    assert not result.passed
    assert variable in result.error, result.error or result.output[-3000:]


def test_header_names_are_checked_with_non_default_names_too(results):
    """Inconsistent names: the groups header renamed to what the user header is renamed to."""
    result = results["inconsistent own headers"]
    assert not result.passed
    assert "servicehub_groups_header" in result.error and "servicehub_user_header" in result.error


def test_volumes_root_sharing_a_filesystem_stops_the_play_when_required(results):
    """The state directory and the volumes root under it are on one filesystem here."""
    warned = results["good"]
    assert warned.passed
    assert "WARNING: servicehub_volumes_root" in warned.output
    required = results["separate filesystem required"]
    assert not required.passed
    assert "servicehub_volumes_root" in required.error


def test_a_cluster_checks_its_machines_before_the_hub_changes(results):
    good = results["cluster good"]
    assert good.passed, good.error or good.output[-3000:]
    bad = results["cluster bad address"]
    assert not bad.passed
    assert "swarm_advertise_address must be one of worker-host's IPv4 addresses" in bad.error


def test_a_cluster_checks_its_shared_storage_before_anything_changes(results):
    bad = results["cluster bad storage"]
    assert not bad.passed
    assert "swarm_shared_storage" in bad.error and "nfs" in bad.error, bad.error
    bricks = results["cluster relative bricks"]
    assert not bricks.passed
    assert "swarm_gluster_bricks_dir must be an absolute path" in bricks.error
    # External storage: the operator's mounts must be there.
    unmounted = results["cluster external unmounted"]
    assert not unmounted.passed
    assert "swarm_shared_storage is external, but /" in unmounted.error
    # A user's directory where a volume would be mounted: stopped, not hidden.
    hidden = results["cluster data hidden"]
    assert not hidden.passed
    assert "already holds 1 entries, which the shared filesystem mounted there" in hidden.error
