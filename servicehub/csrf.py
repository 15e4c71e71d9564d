"""Cross-site request forgery tokens for the hub pages' POSTs.

A token is HMAC(key, slug): one per user, so a page of one user never carries another's, and
nothing is stored. The key is derived from the proxy secret (which Apache and the daemon share,
and only they know): tokens stay valid across daemon restarts, and no second secret has to be
deployed. Without a proxy secret (local development only) the key is random per process.

A cross-site page can make a browser POST to the hub with its cookies (SameSite=Lax lets a
top-level form through in some browsers) but cannot read the hub's pages, so it never learns
the token: the POST is refused.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

FIELD = "csrf"  # the form field
HEADER = "X-Servicehub-Csrf"  # the same token, for scripts


def derive_key(proxy_secret: str | None) -> bytes:
    if proxy_secret is None:
        return secrets.token_bytes(32)
    return hmac.new(proxy_secret.encode("utf-8"), b"servicehub csrf v1", hashlib.sha256).digest()


class CsrfTokens:
    def __init__(self, key: bytes) -> None:
        self._key = key

    def token(self, slug: str) -> str:
        digest = hmac.new(self._key, slug.encode("utf-8"), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")

    def valid(self, slug: str, given: str | None) -> bool:
        if not given:
            return False
        return hmac.compare_digest(
            self.token(slug).encode("ascii"), given.encode("utf-8", "replace")
        )
