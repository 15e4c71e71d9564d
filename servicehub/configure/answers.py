"""The answers: their model, their checks, and their translation to Ansible variables.

Pure logic: nothing here reads a terminal, the network or a file. Every check raises
``AnswerError`` naming the Ansible variable the answer becomes (``apache_oidc_server_name``,
``servicehub_apps.notebook.image``), so the message reads like the preflight's and the
daemon's own. The apps are checked by the daemon's own parser (``servicehub.config``): an app
the hub would refuse is refused here.
"""

from __future__ import annotations

import copy
import socket
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from servicehub.config import ConfigError, parse_config

from .discovery import Provider
from .roles import RoleFiles

# Variable names, not secrets.
SECRET_VAR = "apache_oidc_client_secret"  # noqa: S105
VAULT_SECRET_VAR = "vault_apache_oidc_client_secret"  # noqa: S105
LETS_ENCRYPT_STAGING = "https://acme-staging-v02.api.letsencrypt.org/directory"
CERTIFICATE_MODES = ("production", "staging", "self-signed", "acme")
# The wizard's own keys of an app; any other key of an app is the daemon's, kept as it is.
APP_KEYS = ("image", "pull", "port", "path_prefix", "memory", "cpus", "volume", "allow")


class AnswerError(ValueError):
    """An answer the hub would refuse; ``key`` is the variable it becomes."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key


@dataclass
class Hub:
    server_name: str = ""
    address: str = ""  # where Ansible reaches the host; empty: the server name
    ansible_user: str = "root"


@dataclass
class Login:
    provider: str = ""  # the metadata URL (an issuer URL is turned into it)
    issuer: str = ""  # as the discovery document says
    client_id: str = "servicehub"
    user_claim: str = ""
    groups_claim: str = ""
    require_claims: list[str] = field(default_factory=list)
    require_claims_match: str = "any"
    scope: str = ""


@dataclass
class App:
    image: str = ""
    pull: bool = True  # pulled onto the hub at deploy time (servicehub_images_pull)
    port: int = 8000
    path_prefix: str = "/"
    memory: str = "1g"
    cpus: float = 1.0
    volume: str | None = "/data"  # mount path of the persistent directory; None: none
    allow_users: list[str] = field(default_factory=list)
    allow_groups: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)  # the daemon's other keys, verbatim


@dataclass
class Certificate:
    mode: str = "production"  # one of CERTIFICATE_MODES
    email: str = ""
    acme_server: str = ""  # mode acme only
    acme_ca_bundle: str = ""  # mode acme only: a file on the hub


@dataclass
class Answers:
    hub: Hub = field(default_factory=Hub)
    login: Login = field(default_factory=Login)
    apps: dict[str, App] = field(default_factory=dict)
    certificate: Certificate = field(default_factory=Certificate)
    # Variables of main.yml the wizard does not ask about (hand-added): kept as they are.
    kept: dict[str, Any] = field(default_factory=dict)


# ---- checks of single answers -------------------------------------------------------------


class Checks:
    """The checks, with the roles' own patterns."""

    def __init__(self, roles: RoleFiles) -> None:
        self.roles = roles

    def _match(self, role: str, pattern: str, value: str) -> bool:
        return self.roles.pattern(role, pattern).match(value) is not None

    def server_name(self, name: str) -> str:
        name = name.strip()
        if not name or not self._match("apache_oidc", "__apache_oidc_dns_pattern", name):
            raise AnswerError(
                "apache_oidc_server_name",
                f"{name!r} is not a lower-case DNS name like hub.example.org",
            )
        return name

    def client_id(self, value: str) -> str:
        value = value.strip()
        if not value or self.roles.pattern("apache_oidc", "__apache_oidc_unsafe_chars").search(
            value
        ):
            raise AnswerError(
                "apache_oidc_client_id",
                "must be the client id the provider gave (no quotes, backslashes or control "
                "characters)",
            )
        return value

    def client_secret(self, value: str) -> str:
        # The message never contains the value.
        if not value or self.roles.pattern("apache_oidc", "__apache_oidc_unsafe_chars").search(
            value
        ):
            raise AnswerError(
                SECRET_VAR,
                "must be the client's secret, without quotes, backslashes or control characters",
            )
        return value

    def claim(self, variable: str, value: str, provider: Provider | None) -> str:
        value = value.strip()
        if not self._match("apache_oidc", "__apache_oidc_claim_pattern", value):
            raise AnswerError(variable, f"{value!r} is not a claim name like sub or email")
        if provider is not None and not provider.offers_claim(value):
            raise AnswerError(
                variable,
                f"the provider does not offer the claim {value!r}; it offers "
                f"{', '.join(provider.claims)}",
            )
        return value

    def groups_claim(self, value: str, provider: Provider | None) -> str:
        value = value.strip()
        if value in ("", "-", "none"):
            return ""
        return self.claim("apache_oidc_groups_claim", value, provider)

    def require_claims(self, rules: Iterable[str], provider: Provider | None) -> list[str]:
        checked = []
        for rule in rules:
            rule = rule.strip()
            if not rule:
                continue
            if not self._match("apache_oidc", "__apache_oidc_claim_rule_pattern", rule):
                raise AnswerError(
                    "apache_oidc_require_claims",
                    f"{rule!r} is not a claim:value rule like groups:lab",
                )
            claim = rule.split(":", 1)[0].split(".", 1)[0]
            if provider is not None and not provider.offers_claim(claim):
                raise AnswerError(
                    "apache_oidc_require_claims",
                    f"the provider does not offer the claim {claim!r} of rule {rule!r}; it "
                    f"offers {', '.join(provider.claims)}",
                )
            checked.append(rule)
        return checked

    def require_claims_match(self, value: str) -> str:
        value = value.strip()
        if value not in ("any", "all"):
            raise AnswerError("apache_oidc_require_claims_match", "must be any or all")
        return value

    def scope(self, value: str, provider: Provider | None) -> str:
        value = " ".join(value.split())
        if "openid" not in value.split() or not self._match(
            "apache_oidc", "__apache_oidc_scope_pattern", value
        ):
            raise AnswerError(
                "apache_oidc_scope", f"{value!r}: space-separated scopes including openid"
            )
        if provider is not None and provider.scopes:
            missing = [s for s in value.split() if s not in provider.scopes]
            if missing:
                raise AnswerError(
                    "apache_oidc_scope",
                    f"the provider does not offer {', '.join(missing)}; it offers "
                    f"{', '.join(provider.scopes)}",
                )
        return value

    def email(self, value: str) -> str:
        value = value.strip()
        if value and not self._match("certbot", "__certbot_email_pattern", value):
            raise AnswerError("certbot_email", f"{value!r} is not an e-mail address")
        return value

    def certificate_mode(self, value: str) -> str:
        value = value.strip().replace("_", "-")
        if value not in CERTIFICATE_MODES:
            raise AnswerError("certbot_mode", f"choose one of {', '.join(CERTIFICATE_MODES)}")
        return value

    def acme_server(self, value: str) -> str:
        value = value.strip()
        if not self._match("certbot", "__certbot_url_pattern", value):
            raise AnswerError("certbot_acme_server", f"{value!r} is not an https URL")
        return value

    def acme_ca_bundle(self, value: str) -> str:
        value = value.strip()
        if value and not self._match("certbot", "__certbot_path_pattern", value):
            raise AnswerError(
                "certbot_acme_ca_bundle", f"{value!r} is not an absolute path on the hub"
            )
        return value


Resolver = Callable[[str], list[str]]


def resolve(name: str) -> list[str]:
    """The addresses a DNS name resolves to, here and now."""
    try:
        infos = socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise AnswerError(
            "apache_oidc_server_name",
            f"{name} does not resolve ({exc}): create its A/AAAA record first, pointing at the hub",
        ) from None
    return sorted({str(info[4][0]) for info in infos})


# ---- apps: the daemon's own parser --------------------------------------------------------


def app_config(app: App) -> dict[str, Any]:
    """The app as the daemon's ``apps.<name>`` mapping (servicehub_apps)."""
    config = copy.deepcopy(app.extra)
    config["image"] = app.image
    config["port"] = app.port
    route = dict(config.get("route") or {})
    if app.path_prefix != "/":
        route["path_prefix"] = app.path_prefix
    if route:
        config["route"] = route
    limits = dict(config.get("limits") or {})
    defaults = _daemon_app_defaults()
    if app.memory != defaults.memory:
        limits["memory"] = app.memory
    if app.cpus != defaults.cpus:
        limits["cpus"] = app.cpus
    if limits:
        config["limits"] = limits
    if app.volume:
        volume = dict(config.get("volume") or {})
        volume["mount"] = app.volume
        config["volume"] = {"name": volume.pop("name", "{app}-{slug}"), **volume}
    else:
        config.pop("volume", None)
    allow = {k: v for k, v in (("users", app.allow_users), ("groups", app.allow_groups)) if v}
    if allow:
        config["allow"] = allow
    else:
        config.pop("allow", None)
    return _ordered(config)


_ORDER = ("image", "port", "route", "limits", "volume", "allow")


def _ordered(config: dict[str, Any]) -> dict[str, Any]:
    first = {k: config[k] for k in _ORDER if k in config}
    return first | {k: v for k, v in config.items() if k not in first}


def app_from_config(config: Mapping[str, Any], pulled: Iterable[str]) -> App:
    """The answers of an app found in servicehub_apps (the inverse of ``app_config``)."""
    extra = copy.deepcopy(dict(config))
    defaults = _daemon_app_defaults()
    app = App(
        image=str(extra.pop("image", "")),
        port=extra.pop("port", 8000),
        memory=defaults.memory,
        cpus=defaults.cpus,
    )
    app.pull = app.image in set(pulled)
    route = dict(extra.pop("route", None) or {})
    app.path_prefix = route.pop("path_prefix", "/")
    if route:
        extra["route"] = route
    limits = dict(extra.pop("limits", None) or {})
    app.memory = str(limits.pop("memory", defaults.memory))
    app.cpus = limits.pop("cpus", defaults.cpus)
    if limits:
        extra["limits"] = limits
    volume = extra.pop("volume", None)
    if volume is None:
        app.volume = None
    else:
        volume = dict(volume)
        app.volume = volume.pop("mount", "/data")
        if volume.get("name", "{app}-{slug}") != "{app}-{slug}":
            extra["volume"] = {"name": volume["name"]}
    allow = dict(extra.pop("allow", None) or {})
    app.allow_users = list(allow.get("users") or [])
    app.allow_groups = list(allow.get("groups") or [])
    app.extra = extra
    return app


@dataclass(frozen=True)
class _AppDefaults:
    memory: str
    cpus: float


def _daemon_app_defaults() -> _AppDefaults:
    """The daemon's defaults for an app's limits, from its parser."""
    parsed = parse_config({"apps": {"a": {"image": "a"}}}).apps["a"]
    return _AppDefaults(memory=format_size(parsed.limits.memory_bytes), cpus=parsed.limits.cpus)


def format_size(size: int) -> str:
    for unit, factor in (("g", 1024**3), ("m", 1024**2), ("k", 1024)):
        if size % factor == 0:
            return f"{size // factor}{unit}"
    return str(size)


def check_apps(apps: Mapping[str, App], issuer: str = "default") -> None:
    """Parse the apps as the hub will: refuse what the daemon would, naming the key."""
    if not apps:
        raise AnswerError("servicehub_apps", "at least one app is needed")
    config = {
        "identity": {"issuer": issuer or "default"},
        "apps": {name: app_config(app) for name, app in apps.items()},
    }
    try:
        parse_config(config)
    except ConfigError as exc:
        message = str(exc).removeprefix(f"{exc.key}: ")
        key = "servicehub_" + exc.key if exc.key.startswith("apps") else exc.key
        raise AnswerError(key, message) from None


# ---- answers <-> Ansible variables --------------------------------------------------------

# What each variable of main.yml is, written above it.
COMMENTS = {
    "servicehub_identity_issuer": "The provider's issuer (from its discovery document); part of "
    "every user's id: do not change it later.",
    "servicehub_apps": "The apps: the `apps:` of examples/servicehub.yml, checked by the daemon's "
    "own parser.",
    "servicehub_images_pull": "Images pulled onto the hub when missing there.",
    "apache_oidc_server_name": "The hub's DNS name.",
    "apache_oidc_provider_metadata_url": "The provider's discovery document.",
    "apache_oidc_client_id": "The hub's client at the provider (redirect URI "
    "{redirect}, post-logout redirect URI {post_logout}).",
    SECRET_VAR: "The client's secret, from the Vault file (vault.yml).",
    "apache_oidc_user_claim": "The claim that names a user at the hub.",
    "apache_oidc_groups_claim": "The claim sent to the apps as the user's groups.",
    "apache_oidc_require_claims": "Who may log in: claim:value rules; others get 403.",
    "apache_oidc_require_claims_match": "With several rules: any one, or all of them.",
    "apache_oidc_scope": "Scopes asked for at login (releasing the claims above).",
    "certbot_mode": "Where the certificate comes from: acme (Let's Encrypt) or self_signed.",
    "certbot_email": "Contact address of the ACME account.",
    "certbot_acme_server": "The ACME directory.",
    "certbot_acme_ca_bundle": "The CA bundle on the hub that verifies the ACME server.",
}
MANAGED = (*COMMENTS, "certbot_domains")


def to_variables(answers: Answers, roles: RoleFiles) -> dict[str, Any]:
    """main.yml's variables: the required ones, and the others only where they differ from
    the role's default."""
    login, cert = answers.login, answers.certificate
    values: dict[str, Any] = {
        "servicehub_identity_issuer": login.issuer,
        "servicehub_apps": {name: app_config(app) for name, app in answers.apps.items()},
        "servicehub_images_pull": sorted({a.image for a in answers.apps.values() if a.pull}),
        "apache_oidc_server_name": answers.hub.server_name,
        "apache_oidc_provider_metadata_url": login.provider,
        "apache_oidc_client_id": login.client_id,
        SECRET_VAR: "{{ " + VAULT_SECRET_VAR + " }}",
        "apache_oidc_user_claim": login.user_claim,
        "apache_oidc_groups_claim": login.groups_claim,
        "apache_oidc_require_claims": list(login.require_claims),
        "apache_oidc_require_claims_match": login.require_claims_match,
        "apache_oidc_scope": login.scope,
        "certbot_mode": "self_signed" if cert.mode == "self-signed" else "acme",
        "certbot_email": cert.email,
        "certbot_acme_server": {
            "staging": LETS_ENCRYPT_STAGING,
            "acme": cert.acme_server,
        }.get(cert.mode, roles.default("certbot_acme_server")),
        "certbot_acme_ca_bundle": cert.acme_ca_bundle if cert.mode == "acme" else "",
    }
    result = {
        name: value
        for name, value in values.items()
        if not roles.has_default(name) or value != roles.default(name)
    }
    return result | {k: v for k, v in answers.kept.items() if k not in result}


def from_variables(variables: Mapping[str, Any], roles: RoleFiles) -> Answers:
    """The answers found in an existing main.yml (hand edits included): the next run's
    defaults."""

    def value(name: str) -> Any:
        if name in variables:
            return variables[name]
        return roles.default(name) if roles.has_default(name) else None

    login = Login(
        provider=str(value("apache_oidc_provider_metadata_url") or ""),
        issuer=str(value("servicehub_identity_issuer") or ""),
        client_id=str(value("apache_oidc_client_id") or "servicehub"),
        user_claim=str(value("apache_oidc_user_claim")),
        groups_claim=str(value("apache_oidc_groups_claim")),
        require_claims=list(value("apache_oidc_require_claims") or []),
        require_claims_match=str(value("apache_oidc_require_claims_match")),
        scope=str(value("apache_oidc_scope")),
    )
    server = str(value("certbot_acme_server"))
    if value("certbot_mode") == "self_signed":
        mode = "self-signed"
    elif server == roles.default("certbot_acme_server"):
        mode = "production"
    elif server == LETS_ENCRYPT_STAGING:
        mode = "staging"
    else:
        mode = "acme"
    cert = Certificate(
        mode=mode,
        email=str(value("certbot_email") or ""),
        acme_server=server if mode == "acme" else "",
        acme_ca_bundle=str(value("certbot_acme_ca_bundle") or ""),
    )
    pulled = list(variables.get("servicehub_images_pull") or [])
    apps_raw = variables.get("servicehub_apps")
    apps = {
        str(name): app_from_config(config or {}, pulled)
        for name, config in (apps_raw.items() if isinstance(apps_raw, Mapping) else [])
    }
    kept = {k: v for k, v in variables.items() if k not in MANAGED}
    return Answers(
        hub=Hub(server_name=str(variables.get("apache_oidc_server_name") or "")),
        login=login,
        apps=apps,
        certificate=cert,
        kept=kept,
    )


def new_answers(roles: RoleFiles) -> Answers:
    """A first run's defaults: the roles' own."""
    return from_variables({}, roles)


# ---- an answers file (non-interactive mode) -----------------------------------------------

_SECTIONS: dict[str, tuple[str, ...]] = {
    "hub": ("server_name", "address", "ansible_user"),
    "login": (
        "provider",
        "issuer",
        "client_id",
        "user_claim",
        "groups_claim",
        "require_claims",
        "require_claims_match",
        "scope",
    ),
    "certificate": ("mode", "email", "acme_server", "acme_ca_bundle"),
}


def apply_answers(answers: Answers, data: Any) -> Answers:
    """Answers from a file (docs/configure.md) over the current ones; unknown keys refused."""
    if not isinstance(data, Mapping):
        raise AnswerError("(answers file)", "must be a mapping with hub, login, apps, certificate")
    for section, value in data.items():
        if section == "apps":
            answers.apps = _apps_from_answers(value)
            continue
        if section not in _SECTIONS:
            raise AnswerError(str(section), "unknown section (hub, login, apps, certificate)")
        if not isinstance(value, Mapping):
            raise AnswerError(str(section), "must be a mapping")
        target = getattr(answers, section)
        for key, item in value.items():
            if key not in _SECTIONS[section]:
                raise AnswerError(f"{section}.{key}", "unknown key")
            if key == "require_claims":
                if not isinstance(item, list):
                    raise AnswerError(f"{section}.{key}", "must be a list of claim:value rules")
                item = [str(rule) for rule in item]
            else:
                item = "" if item is None else str(item)
            setattr(target, key, item)
    return answers


def _apps_from_answers(value: Any) -> dict[str, App]:
    if not isinstance(value, Mapping) or not value:
        raise AnswerError("apps", "must be a mapping of app name to its answers")
    apps = {}
    for name, raw in value.items():
        if not isinstance(raw, Mapping):
            raise AnswerError(f"apps.{name}", "must be a mapping")
        raw = dict(raw)
        app = App(pull=bool(raw.pop("pull", True)))
        app.image = str(raw.pop("image", ""))
        app.port = raw.pop("port", app.port)
        app.path_prefix = raw.pop("path_prefix", app.path_prefix)
        app.memory = str(raw.pop("memory", app.memory))
        app.cpus = raw.pop("cpus", app.cpus)
        app.volume = raw.pop("volume", app.volume) or None
        allow = raw.pop("allow", None) or {}
        if not isinstance(allow, Mapping):
            raise AnswerError(f"apps.{name}.allow", "must be a mapping with users and groups")
        app.allow_users = list(allow.get("users") or [])
        app.allow_groups = list(allow.get("groups") or [])
        app.extra = raw  # the daemon's own keys (idle_timeout, readiness...), checked by it
        apps[str(name)] = app
    return apps


def check_all(
    answers: Answers,
    checks: Checks,
    provider: Provider | None,
    resolver: Resolver | None,
) -> list[AnswerError]:
    """Every check of the interactive questions, at once; ``None`` skips the live checks."""
    errors: list[AnswerError] = []

    def attempt(check: Callable[[], object]) -> None:
        try:
            check()
        except AnswerError as exc:
            errors.append(exc)

    hub, login, cert = answers.hub, answers.login, answers.certificate
    attempt(lambda: checks.server_name(hub.server_name))
    if resolver is not None and not errors:
        attempt(lambda: resolver(hub.server_name))
    if not login.provider:
        errors.append(AnswerError("apache_oidc_provider_metadata_url", "is required"))
    if not login.issuer:
        errors.append(AnswerError("servicehub_identity_issuer", "is required"))
    attempt(lambda: checks.client_id(login.client_id))
    attempt(lambda: checks.claim("apache_oidc_user_claim", login.user_claim, provider))
    attempt(lambda: checks.groups_claim(login.groups_claim, provider))
    attempt(lambda: checks.require_claims(login.require_claims, provider))
    attempt(lambda: checks.require_claims_match(login.require_claims_match))
    attempt(lambda: checks.scope(login.scope, provider))
    attempt(lambda: checks.certificate_mode(cert.mode))
    attempt(lambda: checks.email(cert.email))
    if cert.mode == "acme":
        attempt(lambda: checks.acme_server(cert.acme_server))
        attempt(lambda: checks.acme_ca_bundle(cert.acme_ca_bundle))
    attempt(lambda: check_apps(answers.apps, login.issuer))
    return errors
