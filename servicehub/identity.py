"""Who is asking: the trusted identity header, validated, and the slug that names everything.

Apache sets exactly one user header after login. Anything else (no header, two of them, a
value that is not clean UTF-8 text) is refused here, before anything is spawned. The raw id
never names anything: the slug, derived from (issuer, subject), is the only name used for
containers, volumes, routes and files.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Iterable
from dataclasses import dataclass

MAX_USER_BYTES = 1024  # 255 characters of 4-byte UTF-8 still fit
MAX_GROUPS_BYTES = 8192
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_READABLE_RE = re.compile(r"[^a-z0-9]+")


class IdentityError(ValueError):
    """The request's identity headers are missing or malformed; the text is safe to show."""


@dataclass(frozen=True)
class Identity:
    user: str
    groups: frozenset[str]
    slug: str


def make_slug(issuer: str, subject: str) -> str:
    """A name that is safe everywhere (DNS label, Docker name, file name, Traefik rule).

    The readable part only helps operators; uniqueness comes from the hash of the exact
    bytes of (issuer, subject), so ids that look alike (or fold alike) never collide.
    """
    digest = hashlib.sha256(issuer.encode("utf-8") + b"\0" + subject.encode("utf-8")).digest()
    tag = base64.b32encode(digest[:10]).decode("ascii").lower()  # 80 bits, 16 chars
    readable = _READABLE_RE.sub("-", subject.split("@", 1)[0].lower()).strip("-")[:16].strip("-")
    return f"{readable}-{tag}" if readable else tag


def _single_value(values: list[str], name: str) -> str:
    if not values:
        raise IdentityError(f"missing {name} header")
    if len(values) > 1:
        raise IdentityError(f"{name} header sent {len(values)} times")
    return values[0]


def _check_text(value: str, name: str, limit: int) -> None:
    try:
        raw = value.encode("utf-8")  # surrogate escapes (invalid UTF-8 on the wire) fail here
    except UnicodeEncodeError:
        raise IdentityError(f"{name} header is not valid UTF-8") from None
    if len(raw) > limit:
        raise IdentityError(f"{name} header longer than {limit} bytes")
    if _CONTROL_RE.search(value):
        raise IdentityError(f"{name} header contains control characters")


def parse_identity(
    user_values: list[str],
    group_values: list[str],
    issuer: str,
    user_header: str = "X-Servicehub-User",
    groups_header: str = "X-Servicehub-Groups",
) -> Identity:
    user = _single_value(user_values, user_header)
    _check_text(user, user_header, MAX_USER_BYTES)
    if not user.strip() or user != user.strip():
        raise IdentityError(f"{user_header} header is empty or padded with spaces")
    groups: frozenset[str] = frozenset()
    if group_values:
        raw_groups = _single_value(group_values, groups_header)
        _check_text(raw_groups, groups_header, MAX_GROUPS_BYTES)
        groups = frozenset(g.strip() for g in raw_groups.split(",") if g.strip())
    return Identity(user=user, groups=groups, slug=make_slug(issuer, user))


def secret_matches(values: Iterable[str], secret: str | None) -> bool:
    """True when no secret is configured, or exactly one header carries it."""
    if secret is None:
        return True
    values = list(values)
    return len(values) == 1 and hmac.compare_digest(
        values[0].encode("utf-8", "surrogateescape"), secret.encode("utf-8")
    )
