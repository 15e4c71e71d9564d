"""The admin view's inline SVG sparklines: escaping, empty and one-point series."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET

from markupsafe import Markup

from servicehub.sparkline import sparkline, summary

SVG = "{http://www.w3.org/2000/svg}"


def parse(markup: Markup) -> ET.Element:
    return ET.fromstring(str(markup))


def test_line_with_min_max_latest_as_its_text():
    svg = sparkline("nb", [(0, 2.0), (300, 5.0), (600, 3.0)], unit="s")
    assert isinstance(svg, Markup)
    root = parse(svg)
    text = "nb: min 2 s, max 5 s, latest 3 s"
    assert root.get("role") == "img" and root.get("aria-label") == text
    assert root.find(f"{SVG}title").text == text
    points = root.find(f"{SVG}polyline").get("points").split()
    assert len(points) == 3
    ys = [float(p.split(",")[1]) for p in points]
    assert ys[1] < ys[2] < ys[0]  # the highest value is drawn nearest the top


def test_label_is_escaped():
    svg = sparkline('<script>"x"&', [(0, 1.0), (1, 2.0)])
    assert "<script>" not in svg and "&lt;script&gt;" in svg and "&#34;x&#34;" in svg
    root = parse(svg)  # still well-formed
    assert root.get("aria-label").startswith('<script>"x"&: min 1')


def test_empty_series_says_no_data():
    root = parse(sparkline("nb", []))
    assert root.get("aria-label") == "nb: no data"
    assert root.find(f"{SVG}polyline") is None and root.find(f"{SVG}circle") is None


def test_one_point_is_a_dot():
    root = parse(sparkline("nb", [(100, 4.0)]))
    assert root.get("aria-label") == "nb: min 4, max 4, latest 4"
    dot = root.find(f"{SVG}circle")
    assert dot is not None and float(dot.get("cx")) == 80.0


def test_not_a_number_is_left_out():
    # histogram_quantile gives NaN while no spawn happened in the window
    got = summary("p90", [(0, math.nan), (1, 2.5)], "s")
    assert got == "p90: min 2.5 s, max 2.5 s, latest 2.5 s"
    root = parse(sparkline("p90", [(0, math.nan), (1, math.nan)]))
    assert root.get("aria-label") == "p90: no data"
