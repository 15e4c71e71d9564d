"""What the roles of this checkout define, read from their files: one definition each.

The wizard writes only the variables that differ from a role's default, checks answers with the
patterns the roles' preflight uses, and derives the URIs to register at the provider from the
apache_oidc role's own expressions.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml

CHECKOUT = Path(__file__).resolve().parents[2]
ROLES = ("docker", "traefik", "servicehub", "firewall", "certbot", "apache_oidc")


class RoleFiles:
    """The roles' ``defaults/main.yml`` and ``vars/main.yml`` of one checkout."""

    def __init__(self, checkout: Path = CHECKOUT) -> None:
        self.checkout = checkout
        self.roles_dir = checkout / "roles"

    @cache  # noqa: B019 (a handful of instances, each kept for the whole run)
    def _load(self, role: str, kind: str) -> dict[str, Any]:
        path = self.roles_dir / role / kind / "main.yml"
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: not a mapping")
        return data

    def defaults(self, role: str) -> dict[str, Any]:
        return self._load(role, "defaults")

    def internal(self, role: str) -> dict[str, Any]:
        return self._load(role, "vars")

    def default(self, name: str) -> Any:
        """A public variable's default, from the role its prefix names."""
        role = next(r for r in ROLES if name.startswith(r + "_"))
        return self.defaults(role)[name]

    def has_default(self, name: str) -> bool:
        return any(name.startswith(r + "_") and name in self.defaults(r) for r in ROLES)

    def pattern(self, role: str, name: str) -> re.Pattern[str]:
        """A check pattern of a role's preflight (``__<role>_*_pattern`` in its vars)."""
        return re.compile(self.internal(role)[name])

    def registration_uris(self, server_name: str, public_url: str | None = None) -> tuple[str, str]:
        """The redirect URI and the post-logout redirect URI to register at the provider,
        rendered from the apache_oidc role's own expressions (its default public URL, its
        ``__apache_oidc_redirect_uri`` and the logout target that carries the post-logout URI).
        """
        import jinja2  # ansible-core's own dependency

        env = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False)  # noqa: S701
        defaults = self.defaults("apache_oidc")
        internal = self.internal("apache_oidc")
        context: dict[str, Any] = {
            "apache_oidc_server_name": server_name,
            "apache_oidc_redirect_path": defaults["apache_oidc_redirect_path"],
        }
        context["apache_oidc_public_url"] = public_url or env.from_string(
            defaults["apache_oidc_public_url"]
        ).render(context)
        redirect = env.from_string(internal["__apache_oidc_redirect_uri"]).render(context).strip()
        context["__apache_oidc_redirect_uri"] = redirect
        target = env.from_string(internal["__apache_oidc_logout_target"]).render(context).strip()
        post_logout = parse_qs(urlsplit(target).query)["logout"][0]
        return redirect, post_logout
