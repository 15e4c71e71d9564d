"""The default Molecule scenario deploys servicehub-configure's files (its dependency step).

Without running Molecule: the dependency step's exact command (read from molecule.yml) writes
the files, and they plus the committed test-world file give the hub every variable, with every
value, that the shared test group_vars (whose common part the demo scenario uses) give it.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import yaml

from servicehub.configure.cli import main
from servicehub.configure.vault import decrypt

ROOT = Path(__file__).resolve().parents[2]
SCENARIO = ROOT / "molecule" / "default"
SHARED = ROOT / "molecule" / "resources" / "test_group_vars" / "hub"
HELPERS = {"servicehub_whoami_app", "servicehub_short_idle_app"}  # parts of servicehub_apps
# What only this scenario has: its hub pages' checks (molecule/default/tests/test_hub_pages.py)
# need an app that some groups do not see and that stops on logout, and an admin group; its
# Chromium checks run JupyterLab, whose image travels as a second tarball.
PAGES_ONLY_APPS = {"notes", "notebook"}
PAGES_ONLY_VARIABLES = {"servicehub_admin_group", "servicehub_test_jupyterlab_tarball"}


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text()) or {}


def dependency_step(output: Path) -> list[str]:
    """molecule.yml's dependency command, its Molecule variables filled in, into ``output``."""
    molecule = load(SCENARIO / "molecule.yml")
    assert molecule["dependency"]["name"] == "shell"
    assert molecule["scenario"]["test_sequence"][0] == "dependency"
    command = molecule["dependency"]["command"]
    command = command.replace("${MOLECULE_SCENARIO_DIRECTORY}", str(SCENARIO))
    command = command.replace("${MOLECULE_PROJECT_DIRECTORY}", str(ROOT))
    argv = shlex.split(command)
    assert argv[0] == "servicehub-configure"
    argv[argv.index("--dir") + 1] = str(output)
    return argv[1:]


def test_the_wizard_gives_the_scenario_the_variables_it_had(tmp_path, capsys):
    output = tmp_path / "wizard"
    assert main(dependency_step(output)) == 0, capsys.readouterr().out
    generated = load(output / "group_vars" / "hub" / "main.yml")
    world = load(SCENARIO / "wizard" / "group_vars" / "hub" / "test-world.yml")
    assert not set(generated) & set(world), "the test world repeats a wizard answer"
    password = (SCENARIO / "wizard-vault-password").read_text().strip()
    vault = yaml.safe_load(decrypt((output / "group_vars/hub/vault.yml").read_text(), password))

    before: dict = {}
    for path in sorted(SHARED.glob("*.yml")):
        before |= load(path)
    before["servicehub_apps"] = (
        before["servicehub_whoami_app"] | before["servicehub_short_idle_app"]
    )
    for name in HELPERS:
        del before[name]
    # The wizard writes the issuer it was given (the shared files derive it from test_idp_issuer).
    for name, value in before.items():
        if isinstance(value, str) and "{{ test_idp_issuer }}" in value:
            before[name] = value.replace("{{ test_idp_issuer }}", before["test_idp_issuer"])
    now = {**generated, **world}
    assert PAGES_ONLY_APPS <= set(now["servicehub_apps"])
    assert PAGES_ONLY_VARIABLES <= set(now)
    now["servicehub_apps"] = {
        name: app for name, app in now["servicehub_apps"].items() if name not in PAGES_ONLY_APPS
    }
    for name in PAGES_ONLY_VARIABLES:
        del now[name]
    now["servicehub_image_tarballs"].remove("{{ servicehub_test_jupyterlab_tarball }}")
    assert now.pop("apache_oidc_client_secret") == "{{ vault_apache_oidc_client_secret }}"
    assert vault == {"vault_apache_oidc_client_secret": before.pop("apache_oidc_client_secret")}
    assert now == before


def test_the_scenario_reads_the_wizards_files_with_its_vault_password():
    molecule = load(SCENARIO / "molecule.yml")
    assert molecule["provisioner"]["inventory"]["links"]["group_vars"] == "wizard/group_vars/"
    password_file = molecule["provisioner"]["env"]["ANSIBLE_VAULT_PASSWORD_FILE"]
    assert os.path.basename(password_file) == "wizard-vault-password"
    assert "--vault-password-file" in molecule["dependency"]["command"]
