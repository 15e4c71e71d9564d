"""Bad variables stop the play in preflight, with a message that names the variable.

Runs site.yml's own pre_tasks (the preflight of every role that checks before anything changes)
with real Ansible against this machine, in check mode, and stops right after them: nothing on
the machine changes, whether the preflight passes or not.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
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
}


def run_preflight(tmp_path: Path, extra: dict) -> subprocess.CompletedProcess[str]:
    site = yaml.safe_load((ROOT / "site.yml").read_text())
    play = {**site[0], "hosts": "all", "become": False, "roles": [], "tasks": []}
    # End the play right after the preflight: the proof that it passed, and a guard that nothing
    # past it can run from this test.
    play["pre_tasks"] = [
        *site[0]["pre_tasks"],
        {"name": "Preflight passed", "ansible.builtin.meta": "end_play"},
    ]
    playbook = tmp_path / "preflight.yml"
    playbook.write_text(yaml.safe_dump([play]))
    variables = tmp_path / "vars.json"
    variables.write_text(json.dumps({**GOOD, **extra}))
    env = {**os.environ, "ANSIBLE_ROLES_PATH": str(ROOT / "roles"), "ANSIBLE_NOCOLOR": "1"}
    return subprocess.run(
        [str(ANSIBLE), "-i", "localhost,", "-c", "local", "--check", str(playbook),
         "-e", f"@{variables}", "-e", f"servicehub_source_dir={ROOT}",
         "-e", "ansible_python_interpreter=/usr/bin/python3"],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=300, check=False,
    )  # fmt: skip


def test_a_good_hub_passes_the_preflight(tmp_path):
    result = run_preflight(tmp_path, {})
    assert result.returncode == 0, result.stdout[-3000:]
    assert "Preflight passed" in result.stdout


@pytest.mark.parametrize(
    ("variable", "value"),
    [
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
    ],
)
def test_a_bad_variable_stops_the_play_naming_it(tmp_path, variable, value):
    result = run_preflight(tmp_path, {variable: value})
    assert result.returncode != 0
    assert "Preflight passed" not in result.stdout
    first_error = min(
        i for i in (result.stdout.find(m) for m in ("[ERROR]", "fatal:", "failed:")) if i >= 0
    )
    assert variable in result.stdout[first_error:], result.stdout[-3000:]
