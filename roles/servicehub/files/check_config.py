"""Validate a servicehub configuration (JSON on stdin) with the daemon's own parser.

Run on the Ansible controller during the servicehub role's preflight, before anything on the
host changes: ``python check_config.py SOURCE_DIR < config.json``. It imports only
``servicehub.config`` from SOURCE_DIR (standard library + PyYAML, which Ansible itself needs).
Exit 0 when valid; 2 when not, with the role variable that holds the bad key on stdout
(``servicehub_apps.notebook.limits.memory: ...``); 3 when the parser cannot be loaded at all.
"""

import json
import sys

# Configuration keys and the role variables they come from (see the role's vars/main.yml).
VARIABLES = {
    "hub": "servicehub_hub",
    "listen.port": "servicehub_listen_port",
    "volumes_root": "servicehub_volumes_root",
    "datasets_roots": "servicehub_datasets_roots",
    "groups_root": "servicehub_groups_root",
    "secrets_dir": "servicehub_secrets_dir",
    "identity.user_header": "servicehub_user_header",
    "identity.groups_header": "servicehub_groups_header",
    "identity.issuer": "servicehub_identity_issuer",
    "identity.proxy_secret_header": "servicehub_proxy_secret_header",
    "traefik.routes_dir": "servicehub_traefik_routes_dir",
    "traefik.entrypoint": "servicehub_traefik_entrypoint",
    "traefik.api_url": "servicehub_traefik_api_url",
    "traefik.access_log": "servicehub_traefik_access_log",
    "apps": "servicehub_apps",
}


def variable_for(key: str) -> str:
    if key in VARIABLES:
        return VARIABLES[key]
    if key.split("[", 1)[0] in VARIABLES:  # datasets_roots[0]
        name, index = key.split("[", 1)
        return f"{VARIABLES[name]}[{index}"
    if key.startswith("apps."):
        return "servicehub_apps." + key[len("apps.") :]
    return key


sys.path.insert(0, sys.argv[1])
try:
    from servicehub.config import ConfigError, parse_config
except Exception as exc:  # any import failure means "cannot check"
    print(f"cannot load servicehub.config from {sys.argv[1]}: {exc!r}")
    sys.exit(3)

try:
    config = parse_config(json.load(sys.stdin))
except ConfigError as exc:
    message = str(exc).removeprefix(f"{exc.key}: ")
    print(f"{variable_for(exc.key)}: {message}")
    sys.exit(2)
print(f"OK ({len(config.apps)} app(s): {', '.join(sorted(config.apps))})")
