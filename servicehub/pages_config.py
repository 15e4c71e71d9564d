"""The hub pages' settings: the ``pages`` section (admin group, logout, branding) and each app's
entry on the home page (``title``, ``description``, ``icon``, ``stop_on_logout``).

Colours are refused unless the text stays readable on them (WCAG AA contrast, 4.5:1): a
branding choice must not make the pages unusable for people with low vision.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .config_section import ConfigError, Section

COLOR_RE = re.compile(r"^#[0-9a-fA-F]{6}$")
# A link target: a same-site path or an https URL, no spaces, quotes or angle brackets.
URL_RE = re.compile(r"^(/(?!/)|https://)[\x21-\x7e]*$")
_URL_BAD = set("\"'<>\\`")
# Where the admin view asks for its charts' history: Prometheus's base URL, usually loopback.
PROMETHEUS_URL_RE = re.compile(r"^https?://[\x21-\x7e]+$")
MIN_CONTRAST = 4.5


@dataclass(frozen=True)
class AppPage:
    """How an app shows on the home page, and whether a logout stops its sessions."""

    title: str = ""
    description: str = ""
    icon: str | None = None
    stop_on_logout: bool = False


@dataclass(frozen=True)
class Branding:
    title: str = "servicehub"
    logo_url: str | None = None
    background: str = "#ffffff"
    text: str = "#1f1f1f"
    accent: str = "#1a5fb4"  # links, and buttons with white text
    footer_text: str = ""
    footer_url: str | None = None


@dataclass(frozen=True)
class PagesConfig:
    admin_group: str | None = None  # None: nobody sees the admin view
    logout_url: str = "/logout"
    branding: Branding = Branding()
    prometheus_url: str | None = None  # None: the admin view shows no history charts


def _url(section: Section, name: str, default: str | None) -> str | None:
    value: str | None = section.text(
        name, default, pattern=URL_RE, hint="a path starting with / or an https:// URL"
    )
    if value is not None and _URL_BAD & set(value):
        raise ConfigError(section.key(name), "may not contain quotes, '<', '>', '\\' or '`'")
    return value


def parse_app_page(s: Section) -> AppPage:
    """An app's ``title``, ``description``, ``icon`` and ``stop_on_logout``."""
    page = AppPage(
        title=s.text("title", ""),
        description=s.text("description", ""),
        icon=_url(s, "icon", None),
        stop_on_logout=s.flag("stop_on_logout", False),
    )
    for name, value in (("title", page.title), ("description", page.description)):
        if len(value) > 500:
            raise ConfigError(s.key(name), "at most 500 characters")
    return page


def parse_pages(p: Section) -> PagesConfig:
    admin_group = p.text("admin_group", None)
    if admin_group is not None and (not admin_group.strip() or "," in admin_group):
        raise ConfigError(p.key("admin_group"), "a group name: not empty, no ','")
    logout_url = _url(p, "logout_url", PagesConfig.logout_url)
    assert logout_url is not None
    branding = _branding(p.section("branding"))
    prometheus_url = p.text(
        "prometheus_url", None, pattern=PROMETHEUS_URL_RE, hint="an http:// or https:// URL"
    )
    p.finish()
    return PagesConfig(
        admin_group=admin_group,
        logout_url=logout_url,
        branding=branding,
        prometheus_url=prometheus_url,
    )


def _branding(b: Section) -> Branding:
    default = Branding()
    colors = b.section("colors")
    hint = "a colour like #1a5fb4"
    background = colors.text("background", default.background, pattern=COLOR_RE, hint=hint)
    text = colors.text("text", default.text, pattern=COLOR_RE, hint=hint)
    accent = colors.text("accent", default.accent, pattern=COLOR_RE, hint=hint)
    colors.finish()
    footer = b.section("footer")
    branding = Branding(
        title=b.text("title", default.title),
        logo_url=_url(b, "logo_url", None),
        background=background,
        text=text,
        accent=accent,
        footer_text=footer.text("text", ""),
        footer_url=_url(footer, "url", None),
    )
    footer.finish()
    b.finish()
    _check_contrast(colors, "text", text, background)
    _check_contrast(colors, "accent", accent, background)
    _check_contrast(colors, "accent", accent, "#ffffff")  # white button labels on accent
    return branding


def _luminance(color: str) -> float:
    """WCAG 2 relative luminance of a #rrggbb colour."""
    channels = [int(color[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    lin = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]


def contrast(a: str, b: str) -> float:
    high, low = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def _check_contrast(colors: Section, name: str, fg: str, bg: str) -> None:
    ratio = contrast(fg, bg)
    if ratio < MIN_CONTRAST:
        raise ConfigError(
            colors.key(name),
            f"{fg} on {bg} has a contrast of {ratio:.1f}:1, below {MIN_CONTRAST}:1 (WCAG AA)",
        )
