"""Static checks of the Ansible roles: documented twice and in sync, reference up to date."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
ROLES = sorted(p.name for p in (ROOT / "roles").iterdir() if (p / "tasks").is_dir())


def test_roles_exist():
    assert {"docker", "traefik", "servicehub", "firewall", "certbot", "apache_oidc"} <= set(ROLES)


@pytest.mark.parametrize("role", ROLES)
def test_defaults_and_argument_specs_name_the_same_variables(role):
    defaults = yaml.safe_load((ROOT / "roles" / role / "defaults" / "main.yml").read_text()) or {}
    spec = yaml.safe_load((ROOT / "roles" / role / "meta" / "argument_specs.yml").read_text())
    options = spec["argument_specs"]["main"].get("options", {})
    public_defaults = {k for k in defaults if not k.startswith("__")}
    # Required variables have no default; everything with a default is specified.
    assert public_defaults <= set(options), public_defaults - set(options)
    undocumented = {k for k, v in options.items() if not v.get("required")} - public_defaults
    assert not undocumented, f"optional but no default: {undocumented}"
    assert all(k.startswith(f"{role}_") for k in options), [
        k for k in options if not k.startswith(f"{role}_")
    ]


def test_variable_reference_is_current():
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "variable-reference.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr
