"""Static checks of the Ansible roles: documented twice and in sync, reference up to date."""

import re
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


# ---- one source of truth (design.md, invariant 8) ------------------------------------------------

CODE_DIRS = ("defaults", "vars", "tasks", "handlers", "templates")


def code_lines(role: str):
    """Every line of a role's code that is not a comment: (file, line number, text)."""
    for directory in CODE_DIRS:
        for path in sorted((ROOT / "roles" / role / directory).rglob("*")):
            if not path.is_file():
                continue
            for number, line in enumerate(path.read_text().splitlines(), 1):
                stripped = line.strip()
                if stripped.startswith(("#", "{#")) or stripped == "":
                    continue
                yield path.relative_to(ROOT), number, line


def literal_values(variables: dict, prefix: str) -> dict[str, str]:
    """Variables whose value is a literal worth searching for: a string naming a path, a URL or
    a header (no template), or a port number."""
    found = {}
    for name, value in variables.items():
        if not name.startswith(prefix):
            continue
        if isinstance(value, str) and "{{" not in value and len(value) >= 8:
            if re.search(r"[/-]", value) and " " not in value:
                found[name] = value
        elif isinstance(value, int) and not isinstance(value, bool) and name.endswith("_port"):
            found[name] = value
    return found


def occurs(value: str | int, line: str) -> bool:
    if isinstance(value, int):
        return re.search(rf"(?<![\w.]){value}(?![\w.])", line) is not None
    return value in line


def load(role: str, directory: str) -> dict:
    path = ROOT / "roles" / role / directory / "main.yml"
    return (yaml.safe_load(path.read_text()) or {}) if path.is_file() else {}


def test_no_role_repeats_another_roles_public_value():
    """A public variable of one role is taken from that role: no other role hard-codes its value
    or re-defaults it with `| default(<its value>)` (the header names, the ports, the paths)."""
    offences = []
    for role in ROLES:
        values = literal_values(load(role, "defaults"), f"{role}_")
        for other in ROLES:
            if other == role:
                continue
            for path, number, line in code_lines(other):
                offences += [
                    f"{path}:{number}: {name} ({value}) of role {role}: {line.strip()}"
                    for name, value in values.items()
                    if occurs(value, line)
                ]
    assert offences == [], "\n".join(offences)


def test_templates_take_a_roles_own_values_from_its_variables():
    """Unit files and configuration templates name paths through the role's variables, so that
    two units of one role (the daemon's and the reaper's) cannot drift apart."""
    offences = []
    for role in ROLES:
        values = literal_values(load(role, "defaults"), f"{role}_")
        values |= literal_values(load(role, "vars"), f"__{role}_")
        for path, number, line in code_lines(role):
            if path.parts[2] != "templates":
                continue
            offences += [
                f"{path}:{number}: {name} ({value}): {line.strip()}"
                for name, value in values.items()
                if occurs(value, line)
            ]
    assert offences == [], "\n".join(offences)
