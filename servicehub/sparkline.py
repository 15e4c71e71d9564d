"""Small inline SVG line charts (sparklines) for the admin view, drawn on the server.

No JavaScript and no external assets: the page carries the chart itself. The SVG has
``role="img"``, an ``aria-label`` and a ``<title>`` stating the minimum, maximum and latest
value, so a screen reader (or a text browser) gets the figures the line shows.

Escaping: the label may hold Prometheus label values (app names from the config), so it is
escaped by ``Markup.format`` before it goes into the attribute and the title; the numbers are
formatted by us. The result is ``Markup`` so the autoescaping template keeps it as it is.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from markupsafe import Markup

WIDTH = 160
HEIGHT = 32
PAD = 2.0
# Markup.format escapes its arguments: the label in ``text``; the numbers pass unchanged.
_SVG = Markup(
    '<svg class="sparkline" xmlns="http://www.w3.org/2000/svg" role="img" '
    'width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
    'aria-label="{text}"><title>{text}</title>{body}</svg>'
)
_DOT = Markup('<circle cx="{}" cy="{}" r="2" fill="currentColor"/>')
_LINE = Markup(
    '<polyline points="{}" fill="none" stroke="currentColor" '
    'stroke-width="1.5" stroke-linejoin="round"/>'
)


def figure(value: float, unit: str = "") -> str:
    """A value as a person reads it: at most three significant digits, then the unit."""
    text = f"{value:.3g}"
    return f"{text} {unit}".rstrip() if unit else text


def summary(label: str, points: Sequence[tuple[float, float]], unit: str = "") -> str:
    """The text alternative: the label with min, max and latest, or that there is no data."""
    values = [v for _, v in points if math.isfinite(v)]
    if not values:
        return f"{label}: no data"
    lo, hi, last = min(values), max(values), values[-1]
    return f"{label}: min {figure(lo, unit)}, max {figure(hi, unit)}, latest {figure(last, unit)}"


def sparkline(
    label: str,
    points: Sequence[tuple[float, float]],
    unit: str = "",
    width: int = WIDTH,
    height: int = HEIGHT,
) -> Markup:
    """An SVG polyline of ``points`` (time, value); NaN and infinite values are left out."""
    finite = [(t, v) for t, v in points if math.isfinite(t) and math.isfinite(v)]
    body = Markup("")
    if len(finite) == 1:
        body = _DOT.format(width / 2, height / 2)
    elif finite:
        t0, t1 = min(t for t, _ in finite), max(t for t, _ in finite)
        lo, hi = min(v for _, v in finite), max(v for _, v in finite)
        inner_w, inner_h = width - 2 * PAD, height - 2 * PAD

        def xy(t: float, v: float) -> str:
            x = PAD + (t - t0) / (t1 - t0) * inner_w if t1 > t0 else width / 2
            y = PAD + inner_h - (v - lo) / (hi - lo) * inner_h if hi > lo else height / 2
            return f"{x:.1f},{y:.1f}"

        body = _LINE.format(" ".join(xy(t, v) for t, v in finite))
    return _SVG.format(width=width, height=height, text=summary(label, finite, unit), body=body)
