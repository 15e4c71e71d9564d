"""The provider's discovery document: where it is, fetching it, and whether the hub can use it.

``check_discovery`` is a pure function of the document and the URL it came from; ``fetch`` is
the only I/O. mod_auth_openidc needs the authorization, token and keys endpoints, and the hub
always uses PKCE with S256 (OpenID Connect Discovery 1.0, section 3).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

WELL_KNOWN = "/.well-known/openid-configuration"
REQUIRED_ENDPOINTS = ("authorization_endpoint", "token_endpoint", "jwks_uri")


class DiscoveryError(ValueError):
    """The document cannot be fetched, or the hub cannot log in with it."""


@dataclass(frozen=True)
class Provider:
    issuer: str
    metadata_url: str
    scopes: tuple[str, ...] = ()  # empty: the provider does not list them
    claims: tuple[str, ...] = ()
    end_session: bool = False
    warnings: tuple[str, ...] = field(default=())

    def offers_claim(self, claim: str) -> bool:
        return not self.claims or claim in self.claims


def metadata_url_for(url: str) -> str:
    """The discovery URL for an issuer or discovery URL as an operator types it."""
    url = url.strip()
    if not url.startswith(("https://", "http://")):
        raise DiscoveryError(f"{url!r} is not an http(s) URL")
    if url.endswith(WELL_KNOWN):
        return url
    return url.rstrip("/") + WELL_KNOWN


def expected_issuer(metadata_url: str) -> str:
    return metadata_url.removesuffix(WELL_KNOWN)


def check_discovery(document: Any, metadata_url: str) -> Provider:
    """Judge a discovery document; raise DiscoveryError naming what is wrong."""
    if not isinstance(document, dict):
        raise DiscoveryError(f"{metadata_url} is not a JSON object")
    issuer = document.get("issuer")
    if not isinstance(issuer, str) or not issuer:
        raise DiscoveryError(f"{metadata_url} has no issuer")
    if issuer.rstrip("/") != expected_issuer(metadata_url).rstrip("/"):
        raise DiscoveryError(
            f"the document's issuer is {issuer}, but it was fetched from {metadata_url}: the "
            f"issuer must be that URL without {WELL_KNOWN} (give the provider's own issuer URL)"
        )
    missing = [name for name in REQUIRED_ENDPOINTS if not document.get(name)]
    if missing:
        raise DiscoveryError(f"the provider's document lacks {', '.join(missing)}")
    methods = document.get("code_challenge_methods_supported") or []
    if "S256" not in methods:
        raise DiscoveryError(
            "the provider does not list PKCE S256 in code_challenge_methods_supported "
            f"({', '.join(methods) or 'nothing'}): the hub always uses PKCE S256"
        )
    scopes = tuple(str(s) for s in document.get("scopes_supported") or ())
    claims = tuple(str(c) for c in document.get("claims_supported") or ())
    if scopes and "openid" not in scopes:
        raise DiscoveryError("the provider does not offer the openid scope")
    warnings = []
    if not claims:
        warnings.append("the provider does not list its claims: claim names cannot be checked")
    if not document.get("end_session_endpoint"):
        warnings.append("no end_session_endpoint: /logout ends the hub's session only")
    return Provider(
        issuer=issuer,
        metadata_url=metadata_url,
        scopes=scopes,
        claims=claims,
        end_session=bool(document.get("end_session_endpoint")),
        warnings=tuple(warnings),
    )


Fetcher = Callable[[str], Any]


def fetch(url: str, timeout: float = 10.0) -> Any:
    """GET a JSON document."""
    request = urllib.request.Request(url, headers={"Accept": "application/json"})  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            body = response.read(1_000_000)
    except urllib.error.HTTPError as exc:
        raise DiscoveryError(f"{url} answered HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DiscoveryError(f"cannot fetch {url}: {reason}") from None
    try:
        return json.loads(body)
    except ValueError:
        raise DiscoveryError(f"{url} did not return JSON") from None


def discover(url: str, fetcher: Fetcher = fetch) -> Provider:
    metadata_url = metadata_url_for(url)
    return check_discovery(fetcher(metadata_url), metadata_url)
