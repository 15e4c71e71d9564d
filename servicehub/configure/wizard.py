"""The questions, in order: the hub's name, the login, the apps, the certificate.

Each answer is checked as it is given (``answers.Checks``, the live discovery document, DNS,
the daemon's parser for the apps) and asked again when refused. The current answers (from the
files of an earlier run) are the defaults: pressing Enter throughout changes nothing.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from .answers import (
    CERTIFICATE_MODES,
    AnswerError,
    Answers,
    App,
    Checks,
    Resolver,
    check_apps,
)
from .discovery import DiscoveryError, Fetcher, Provider, discover
from .prompt import Prompter
from .roles import RoleFiles


@dataclass
class Result:
    answers: Answers
    secret: str | None  # a new client secret; None keeps the current one
    provider: Provider


def _text(variable: str, allow_empty: bool = False) -> Callable[[str], str]:
    def check(value: str) -> str:
        value = value.strip()
        if not value and not allow_empty:
            raise AnswerError(variable, "an answer is needed")
        return value

    return check


def _list(value: str) -> list[str]:
    if value.strip().lower() in ("", "-", "none"):
        return []
    return [item.strip() for item in value.split(",") if item.strip()]


class Wizard:
    def __init__(
        self,
        prompter: Prompter,
        roles: RoleFiles,
        fetcher: Fetcher,
        resolver: Resolver,
    ) -> None:
        self.p = prompter
        self.roles = roles
        self.checks = Checks(roles)
        self.fetcher = fetcher
        self.resolver = resolver

    def run(self, current: Answers, has_secret: bool) -> Result:
        answers = copy.deepcopy(current)
        self.ask_hub(answers)
        provider, secret = self.ask_login(answers, has_secret)
        self.ask_apps(answers)
        self.ask_certificate(answers)
        return Result(answers, secret, provider)

    # ---- the hub ------------------------------------------------------------------------

    def ask_hub(self, answers: Answers) -> None:
        self.p.section("The hub")
        hub = answers.hub

        def resolving(value: str) -> str:
            name = self.checks.server_name(value)
            addresses = self.resolver(name)
            self.p.say(f"  {name} resolves to {', '.join(addresses)}: that must be the hub.")
            return name

        hub.server_name = self.p.ask(
            "The hub's DNS name (people will open https://NAME/)", hub.server_name, resolving
        )
        address = self.p.ask(
            "Where Ansible reaches the hub over SSH (name or address)",
            hub.address or hub.server_name,
            _text("inventory"),
        )
        hub.address = "" if address == hub.server_name else address
        hub.ansible_user = self.p.ask(
            "The SSH user there (root, or an account with sudo)",
            hub.ansible_user or "root",
            _text("ansible_user"),
        )

    # ---- the login ------------------------------------------------------------------------

    def _discover(self, value: str) -> Provider:
        try:
            return discover(value, self.fetcher)
        except DiscoveryError as exc:
            raise AnswerError("apache_oidc_provider_metadata_url", str(exc)) from None

    def ask_login(self, answers: Answers, has_secret: bool) -> tuple[Provider, str | None]:
        self.p.section("Login (Apache + OpenID Connect)")
        login = answers.login
        provider = self.p.ask(
            "The provider's issuer or discovery URL", login.provider, self._discover
        )
        login.provider, login.issuer = provider.metadata_url, provider.issuer
        self.p.say(f"  Issuer: {provider.issuer}")
        self.p.say(f"  Scopes offered: {', '.join(provider.scopes) or '(not listed)'}")
        self.p.say(f"  Claims offered: {', '.join(provider.claims) or '(not listed)'}")
        for warning in provider.warnings:
            self.p.say(f"  Note: {warning}")
        redirect, post_logout = self.roles.registration_uris(answers.hub.server_name)
        self.p.say()
        self.p.say("Register the hub at the provider as a confidential client (authorization")
        self.p.say("code flow, PKCE S256) with exactly these URIs:")
        self.p.say(f"  redirect URI:             {redirect}")
        self.p.say(f"  post-logout redirect URI: {post_logout}")
        self.p.say()
        login.client_id = self.p.ask(
            "The client id the provider gave", login.client_id, self.checks.client_id
        )
        secret = self.p.ask_secret(
            "The client secret (not shown as you type)", self.checks.client_secret, has_secret
        )
        self._ask_claims(answers, provider)
        return provider, secret

    def _ask_claims(self, answers: Answers, provider: Provider) -> None:
        """The user id and groups claims, who may log in, and the scopes to ask for."""
        login = answers.login
        offered = provider.claims

        def claim(variable: str) -> Callable[[str], str]:
            return lambda value: self.checks.claim(variable, value, provider)

        user_default = login.user_claim if provider.offers_claim(login.user_claim) else "sub"
        self.p.say("The claim that names a user: stable, and not one users can change themselves.")
        usual = [c for c in ("sub", "email", "preferred_username") if c in offered] or ["sub"]
        login.user_claim = self.p.ask(
            f"User id claim ({', '.join(usual)}...)",
            user_default,
            claim("apache_oidc_user_claim"),
        )
        groups_default = login.groups_claim or ("groups" if "groups" in offered else "")
        login.groups_claim = self.p.ask(
            "Groups claim, sent to the apps ('none' for no groups)",
            groups_default,
            lambda value: self.checks.groups_claim(value, provider),
        )
        self.p.say("Who may log in: claim:value rules separated by commas, like groups:lab")
        self.p.say("('none': everyone the provider authenticates).")
        login.require_claims = self.p.ask(
            "Rules",
            ", ".join(login.require_claims) or "none",
            lambda value: self.checks.require_claims(_list(value), provider),
        )
        if len(login.require_claims) > 1:
            login.require_claims_match = self.p.ask(
                "Must any rule hold, or all of them? (any/all)",
                login.require_claims_match,
                self.checks.require_claims_match,
            )
        scopes = login.scope.split()
        if login.groups_claim in provider.scopes and login.groups_claim not in scopes:
            scopes.append(login.groups_claim)  # the scope that releases the groups claim
        login.scope = self.p.ask(
            "Scopes to ask for at login",
            " ".join(scopes),
            lambda value: self.checks.scope(value, provider),
        )

    # ---- the apps -------------------------------------------------------------------------

    def ask_apps(self, answers: Answers) -> None:
        self.p.section("Apps (servicehub)")
        for name in list(answers.apps):
            app = answers.apps[name]
            self.p.say(f"App {name}: {app.image}, at {app.path_prefix}")
            if not self.p.confirm(f"Keep app {name}?", True):
                del answers.apps[name]
                continue
            answers.apps[name] = self.ask_app(name, app, answers)
        adding = not answers.apps or self.p.confirm("Add an app?", False)
        while adding:
            name = self.p.ask("App name (a-z, 0-9, '-')", "", lambda v: self._app_name(v, answers))
            answers.apps[name] = self.ask_app(name, App(), answers)
            adding = self.p.confirm("Add another app?", False)

    def _app_name(self, value: str, answers: Answers) -> str:
        value = value.strip()
        if value in answers.apps:
            raise AnswerError(f"servicehub_apps.{value}", "there is an app of this name already")
        check_apps({value: App(image="image")})
        return value

    def ask_app(self, name: str, app: App, answers: Answers) -> App:
        others = {n: a for n, a in answers.apps.items() if n != name}
        issuer = answers.login.issuer

        def field(convert: Callable[[str], Any], attribute: str) -> Callable[[str], Any]:
            def check(value: str) -> Any:
                converted = convert(value)
                check_apps({**others, name: replace(app, **{attribute: converted})}, issuer)
                return converted

            return check

        def number(kind: type, key: str) -> Callable[[str], Any]:
            def convert(value: str) -> Any:
                try:
                    return kind(value)
                except ValueError:
                    raise AnswerError(
                        f"servicehub_apps.{name}.{key}", f"{value!r} is not a number"
                    ) from None

            return convert

        def ask(question: str, attribute: str, default: str, convert: Callable[[str], Any]) -> None:
            nonlocal app
            value = self.p.ask(question, default, field(convert, attribute))
            app = replace(app, **{attribute: value})

        ask("Docker image", "image", app.image, str.strip)
        app.pull = self.p.confirm(
            f"Pull {app.image} onto the hub from its registry when it is missing there?", app.pull
        )
        ask("Port the app listens on in its container", "port", str(app.port), number(int, "port"))
        ask("Path prefix it is served at (ends with /)", "path_prefix", app.path_prefix, str.strip)
        ask("Memory limit per user (like 512m, 2g)", "memory", app.memory, str.strip)
        cpus = number(float, "limits.cpus")
        ask("CPU limit per user (cores, like 0.5 or 2)", "cpus", f"{app.cpus:g}", cpus)
        ask(
            "Persistent directory in the container, kept per user ('none': nothing kept)",
            "volume",
            app.volume or "none",
            lambda v: None if v.strip().lower() in ("", "none", "-") else v.strip(),
        )
        self.p.say("Who may use it: names separated by commas; both 'none' means everyone who")
        self.p.say("may log in. Groups are the values of the groups claim.")
        ask("Users", "allow_users", ", ".join(app.allow_users) or "none", _list)
        ask("Groups", "allow_groups", ", ".join(app.allow_groups) or "none", _list)
        return app

    # ---- the certificate ------------------------------------------------------------------

    def ask_certificate(self, answers: Answers) -> None:
        self.p.section("Certificate")
        cert = answers.certificate
        self.p.say("production: Let's Encrypt; staging: its test CA (browsers warn, no rate")
        self.p.say("limits); self-signed: for a trial (browsers warn); acme: another ACME server.")
        self.p.say("Let's Encrypt checks the name over port 80: the name must resolve to the hub.")
        cert.mode = self.p.choose("Certificate", CERTIFICATE_MODES, cert.mode)
        if cert.mode == "self-signed":
            return
        cert.email = self.p.ask(
            "Contact e-mail for the ACME account ('none' for none)",
            cert.email or "none",
            lambda v: self.checks.email("" if v.strip() == "none" else v),
        )
        if cert.mode == "acme":
            cert.acme_server = self.p.ask(
                "ACME directory URL", cert.acme_server, self.checks.acme_server
            )
            cert.acme_ca_bundle = self.p.ask(
                "CA bundle on the hub for its HTTPS ('none': the system's)",
                cert.acme_ca_bundle or "none",
                lambda v: self.checks.acme_ca_bundle("" if v.strip() == "none" else v),
            )
