"""The hub's variables as this scenario sets them, read from where they are defined: the roles'
defaults and internal values, then the group_vars molecule.yml links into the inventory
(servicehub-configure's files, written by the dependency step, and the test world's), then the
host_vars of its one host. The checks take ports, paths and names from here, never from a
literal."""

from pathlib import Path

import yaml

SCENARIO = Path(__file__).resolve().parents[1]
ROLES = SCENARIO.parents[1] / "roles"


def _load(path: Path) -> dict:
    text = path.read_text()
    if text.startswith("$ANSIBLE_VAULT;"):
        return {}  # the wizard's Vault file: secrets only, none of the names checked here
    return yaml.safe_load(text) or {}


def _var_files(directory: Path, name: str) -> list[Path]:
    """An inventory's vars for a group or host: NAME.yml, then NAME/*.yml (Ansible's order)."""
    return [p for p in [directory / f"{name}.yml"] if p.is_file()] + sorted(
        (directory / name).glob("*.yml")
    )


def scenario_variables() -> dict:
    roles = ("traefik", "servicehub", "apache_oidc")
    files = [ROLES / role / "defaults" / "main.yml" for role in roles]
    files += [ROLES / role / "vars" / "main.yml" for role in roles]
    molecule = _load(SCENARIO / "molecule.yml")
    links = molecule["provisioner"]["inventory"]["links"]
    group_vars, host_vars = SCENARIO / links["group_vars"], SCENARIO / links["host_vars"]
    files += _var_files(group_vars, "all") + _var_files(group_vars, "hub")
    files += _var_files(host_vars, molecule["platforms"][0]["name"])
    variables: dict = {}
    for path in files:
        variables.update(_load(path))
    return variables


VARIABLES = scenario_variables()


def header_values(echoed: dict, name: str) -> list[str]:
    """The values of header ``name`` (any case) as the example app's /whoami echoed them. Its
    ``header_user`` reads the role's default name only; this scenario names the identity
    headers otherwise (host_vars/), as the roles' variables allow."""
    return [value for key, value in echoed["headers"] if key.lower() == name.lower()]


def seen_user(echoed: dict) -> str | None:
    """The user the hub's identity header gave the app, or None if it gave none."""
    values = header_values(echoed, VARIABLES["servicehub_user_header"])
    return values[-1] if values else None
