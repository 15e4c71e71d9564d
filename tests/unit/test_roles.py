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


def test_no_role_falls_back_on_another_roles_variable():
    """`| default(...)` of another role's variable would keep a second value: site.yml's play has
    every role, so their defaults are always there."""
    offences = []
    for role in ROLES:
        others = "|".join(re.escape(other) for other in ROLES if other != role)
        fallback = re.compile(rf"(?<![\w.])((?:{others})_\w+)\s*\|\s*default\(")
        for path, number, line in code_lines(role):
            offences += [
                f"{path}:{number}: {m[1]}: {line.strip()}" for m in fallback.finditer(line)
            ]
    assert offences == [], "\n".join(offences)


def account_names(role: str) -> dict[str, str]:
    """The accounts and groups a role creates or runs as: its internal `__<role>_user`/`_group`."""
    internal = load(role, "vars")
    return {
        name: value
        for name, value in internal.items()
        if re.fullmatch(rf"__{role}_(user|group)", name) and isinstance(value, str)
    }


ACCOUNT_KEY = re.compile(r"(user|group|owner|clients)s?$")


def scalars(node, key: str = ""):
    """Every string of a YAML document, with the mapping key it sits under (lists inherit it)."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield from scalars(v, str(k))
    elif isinstance(node, list):
        for item in node:
            yield from scalars(item, key)
    elif isinstance(node, str):
        yield key, node


def test_no_role_spells_another_roles_account():
    """Users and groups are named by the role that creates them (servicehub joins traefik's group,
    the firewall's client lists name Apache's, Traefik's and the daemon's accounts): another role
    takes the name from that role's variable, as an owner, a group, a client or a quoted name
    in an expression."""
    offences = []
    for role in ROLES:
        for name, value in account_names(role).items():
            quoted = re.compile(rf"""['"]{re.escape(value)}['"]""")
            for other in ROLES:
                if other == role:
                    continue
                for directory in ("defaults", "vars", "tasks", "handlers"):
                    for path in sorted((ROOT / "roles" / other / directory).rglob("*.yml")):
                        for key, text in scalars(yaml.safe_load(path.read_text())):
                            if (ACCOUNT_KEY.search(key) and text == value) or quoted.search(text):
                                where = path.relative_to(ROOT)
                                offences.append(f"{where}: {key}: {text} is {name}")
    assert offences == [], "\n".join(offences)


# ---- the tests' own copies: none ---------------------------------------------------------------


def test_scenarios_take_the_hubs_values_from_the_roles():
    """Molecule's playbooks, inventories and checks read ports, paths and header names from the
    roles (role defaults, or the scenario's variables) rather than spelling them out: a check
    with its own copy would keep testing the old value after a change."""
    values = {}
    for role in ROLES:
        values |= literal_values(load(role, "defaults"), f"{role}_")
        # Internal paths too (account names are what the checks expect to find on the host).
        values |= {
            name: value
            for name, value in literal_values(load(role, "vars"), f"__{role}_").items()
            if "/" in str(value)
        }
    files = [ROOT / "site.yml", ROOT / "tests" / "harness.py"]
    files += sorted(
        p
        for p in (ROOT / "molecule").rglob("*")
        if p.suffix in (".py", ".yml", ".j2") and "images" not in p.parts
    )
    files.append(ROOT / ".config" / "molecule" / "config.yml")
    offences = []
    for path in files:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if line.strip().startswith("#"):
                continue
            offences += [
                f"{path.relative_to(ROOT)}:{number}: {name} ({value}): {line.strip()}"
                for name, value in values.items()
                if occurs(value, line)
            ]
    assert offences == [], "\n".join(offences)


def test_the_harness_runs_traefik_with_the_roles_static_config():
    """tests/harness.py renders the traefik role's template of Traefik's static configuration: the
    harness's ports and paths land where the role puts the host's, and nothing else differs."""
    from tests.harness import USER_HEADER, traefik_static_config

    config = traefik_static_config(
        10881, 10899, Path("/t/dynamic"), Path("/t/log/access.json"), metrics_port=10982
    )
    assert config["entryPoints"]["web"]["address"] == "127.0.0.1:10881"
    assert config["entryPoints"]["traefik"]["address"] == "127.0.0.1:10899"
    assert config["entryPoints"]["metrics"]["address"] == "127.0.0.1:10982"
    assert config["providers"]["file"]["directory"] == "/t/dynamic"
    assert config["accessLog"]["filePath"] == "/t/log/access.json"
    assert config["accessLog"]["fields"]["headers"]["names"] == {USER_HEADER: "keep"}
    traefik = load("traefik", "defaults")
    static = load("traefik", "vars")["__traefik_static_config"]
    assert config.keys() == static.keys()
    for key in ("api", "ping", "metrics", "global"):
        assert config[key] == static[key], key
    assert config["log"] == {"level": traefik["traefik_log_level"]}
    # And no value of the host's is left in it.
    text = yaml.safe_dump(config)
    for value in literal_values(traefik, "traefik_").values():
        assert not occurs(value, text), value


@pytest.mark.parametrize("role", ROLES)
def test_no_registered_result_hides_a_role_variable(role):
    """A task's ``register:`` outranks role vars and defaults: registering a result under a
    variable's name silently replaces that variable for the rest of the play."""
    variables = set(load(role, "defaults")) | set(load(role, "vars"))
    registered = set()
    for path in (ROOT / "roles" / role).glob("*/*.yml"):
        registered |= set(re.findall(r"^\s*register:\s*(\S+)", path.read_text(), re.M))
    assert not registered & variables, f"{role}: {sorted(registered & variables)}"
