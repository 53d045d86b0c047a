"""Chart data from windows, and its two renderers (mermaid for reports, SVG for the site)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from reconciler.charts import Chart, chart_data, mermaid, nice_ceiling, svg
from reconciler.model import WindowStats
from reconciler.spec import Gates, parse_latency, parse_percent

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
C, S = "svc-canary", "svc-stable"
FIVE = timedelta(minutes=5)
GATES = Gates.model_validate(
    {"error_rate": {"max": parse_percent("5%")}, "latency_p95": {"max": parse_latency("25s")}}
)
SVG = "{http://www.w3.org/2000/svg}"


def win(rev: str, end: datetime, *, p95: float | None = 0.2, errors: int = 1) -> WindowStats:
    return WindowStats("svc", rev, end - FIVE, end, 1000, errors, 1000 - errors, 0.1, p95, 0.5)


def test_axis_follows_the_data_not_a_far_threshold() -> None:
    windows = [win(C, NOW - FIVE * i, p95=0.05 + i * 0.05) for i in range(8)]  # 0.05..0.4 s
    _, p95 = chart_data(GATES, C, S, windows)
    assert p95.top == 0.5 and p95.threshold is None  # not 0..25 s: a flat line
    assert "25 s, is above every value (axis up to 0.5 s)" in p95.caption


def test_one_window_draws_a_segment() -> None:
    errors, _ = chart_data(GATES, C, S, [win(C, NOW), win(S, NOW, errors=0)])
    assert errors.labels == ("11:55", "12:00")
    assert [ln.values for ln in errors.lines] == [(0.1, 0.1), (0.0, 0.0)]
    assert "over its one 5m window" in errors.caption
    assert "    line [0.1, 0.1]" in mermaid(errors)
    assert svg(errors).count("<polyline") == 2


def test_spans_over_a_day_get_dated_labels() -> None:
    ends = [NOW - timedelta(hours=h) for h in (30, 20, 10, 0)]
    errors, _ = chart_data(GATES, C, S, [win(C, e) for e in ends])
    assert errors.labels == ("12-06 06:00", "12-06 16:00", "12-07 02:00", "12-07 12:00")
    short, _ = chart_data(GATES, C, S, [win(C, NOW - FIVE), win(C, NOW)])
    assert short.labels == ("11:55", "12:00")


def test_canary_and_stable_share_a_chart_with_gaps_where_stable_is_missing() -> None:
    windows = [win(C, NOW - FIVE * i, errors=30) for i in range(4)]
    windows += [win(S, NOW - FIVE * i, errors=0) for i in (0, 1, 3)]
    errors, _ = chart_data(GATES, C, S, windows)
    assert [ln.name for ln in errors.lines] == ["canary", "stable"]
    assert errors.lines[1].values == (0.0, None, 0.0, 0.0)
    assert errors.top == 4.0 and errors.threshold is None  # 3% vs 5%: above the axis
    block = "\n".join(mermaid(errors))
    assert "Stable is left out: not measured in every window." in block  # mermaid has no gaps
    doc = ET.fromstring(svg(errors))
    stable = [p for p in doc.iter(f"{SVG}polyline") if p.get("class") == "stable"]
    assert len(stable) == 2  # the gap splits the stable line


def test_threshold_inside_the_axis_is_drawn_in_both_renderers() -> None:
    windows = [win(C, NOW - FIVE * i, errors=45) for i in range(3)]  # 4.5% against 5%
    errors, _ = chart_data(GATES, C, S, windows)
    assert errors.top == 5.0 and errors.threshold == 5.0
    assert "    line [5, 5, 5]" in mermaid(errors)
    doc = ET.fromstring(svg(errors))
    assert [e.get("class") for e in doc.iter(f"{SVG}line") if e.get("class")] == ["threshold"]


def test_no_canary_data_renders_the_reason() -> None:
    errors, p95 = chart_data(GATES, C, S, [win(S, NOW)])
    assert errors.empty is not None and errors.empty.startswith("No data")
    assert mermaid(errors) == [errors.empty]
    assert "No data" in svg(errors) and ET.fromstring(svg(p95)) is not None


@pytest.mark.parametrize(
    ("x", "top"), [(0, 1), (0.44, 0.5), (0.55, 0.6), (4.95, 5), (11, 15), (0.0011, 0.0015)]
)
def test_nice_ceiling(x: float, top: float) -> None:
    assert nice_ceiling(x) == top


def test_svg_is_well_formed_and_scales_values_into_the_plot() -> None:
    chart = Chart("k", "T <&>", "%", ("a", "b"), (), 2.0)
    doc = ET.fromstring(svg(chart))
    assert doc.find(f"{SVG}title") is not None and doc.find(f"{SVG}title").text == "T <&>"  # type: ignore[union-attr]


def test_rolled_up_windows_are_wide_steps_of_rates() -> None:
    # Two windows recorded one by one, then ten rolled up into one line at a record, then two.
    first = [win(C, NOW - FIVE * (13 - i)) for i in range(2)]
    rolled = replace(
        win(C, NOW - FIVE * 2, errors=30), start=NOW - FIVE * 12, requests=10_000, rolled=10
    )
    stable = replace(rolled, revision=S, errors=10, rolled=10)
    last = [win(C, NOW - FIVE * i) for i in (1, 0)]
    errors, _ = chart_data(GATES, C, S, [*first, rolled, stable, *last])
    assert errors.labels == ("10:55", "11:00", "11:00", "11:50", "11:55", "12:00")
    # The rolled line's value is its rate over its 50 minutes, not a count per 5 minutes.
    assert errors.lines[0].values == (0.1, 0.1, 0.3, 0.3, 0.1, 0.1)
    assert errors.lines[1].values == (None, None, 0.1, 0.1, None, None)
    assert "14 windows recorded in 5 lines" in errors.caption
    # By time: the 50-minute step is ten times as wide as a 5-minute one.
    xs = [0.0, 5.0, 5.0, 55.0, 60.0, 65.0]
    assert errors.at == tuple(x / 65 for x in xs)
    doc = ET.fromstring(svg(errors))
    (line,) = [p for p in doc.iter(f"{SVG}polyline") if p.get("class") == "canary"]
    px = [float(pt.split(",")[0]) for pt in (line.get("points") or "").split()]
    assert px[3] - px[2] == pytest.approx(10 * (px[1] - px[0]), abs=1)  # to 0.1 px


def test_rolled_up_windows_count_as_the_gate_length() -> None:
    ten = replace(win(C, NOW), start=NOW - 2 * FIVE)  # a 10-minute gate window
    rolled = replace(win(C, NOW), start=NOW - 4 * FIVE, rolled=4)
    errors, _ = chart_data(GATES, C, S, [ten, rolled])
    assert errors.caption.startswith("The canary per 5m window")
    assert "4 windows recorded in 1 line " in errors.caption
