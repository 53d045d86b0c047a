"""Charts of canary and stable per window: one chart-data function, two renderers. Pure.

`chart_data(...)` turns recorded windows into `Chart` values (error rate and P95, canary
and stable on one chart, the rollback threshold when it falls inside the axis);
`mermaid(chart)` renders one for the markdown reports (GitHub draws `xychart-beta`), and
`svg(chart)` renders the same chart as inline SVG for the status site.

Rules, the same for both renderers:
- The y axis runs from 0 to a round value just above the data, never to the threshold: a
  threshold far above the values would flatten them into a line at the bottom. The
  threshold is drawn only when it is inside the axis, and the caption says where it is.
- A single window is drawn from its start to its end (two points), so it is never empty;
  so is a rolled-up window (the metrics files keep one line per revision per record, summing
  the windows since the last one): a longer window is a wider flat step, its value still a
  rate or a percentile over its span, never a count. The SVG places points by time.
- Labels carry the date when the points span more than one calendar day (UTC).
- Many windows are grouped into at most `max_points` points: error rates pool requests,
  P95 takes the worst window (what a threshold cares about).
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from reconciler.model import WindowStats
from reconciler.spec import Gates, format_duration

MAX_POINTS = 48
CANARY_COLOUR = "#d9480f"
STABLE_COLOUR = "#1c7ed6"
THRESHOLD_COLOUR = "#868e96"


@dataclass(frozen=True)
class Line:
    """One series of a chart: a name and a value per x label (None: not measured)."""

    name: str
    values: tuple[float | None, ...]


@dataclass(frozen=True)
class Chart:
    """Everything a renderer draws; values are in the chart's `unit` (`%` or `s`)."""

    key: str
    title: str
    unit: str
    labels: tuple[str, ...] = ()
    lines: tuple[Line, ...] = ()
    top: float = 1.0
    threshold: float | None = None
    """The rollback threshold, only when it lies inside the axis (0..top)."""
    caption: str = ""
    empty: str | None = None
    """Why there is nothing to draw (no canary window with data), else None."""
    at: tuple[float, ...] = ()
    """Where each label lies in time, 0 (first) to 1 (last); empty: evenly spaced."""


def one_length(windows: Sequence[WindowStats], preferred: timedelta | None) -> list[WindowStats]:
    """The windows measured in one length, oldest first: `preferred` if recorded, else the
    shortest; a rolled-up line counts as the length of the windows it sums (`step`)."""
    lengths = sorted({w.step for w in windows})
    if not lengths:
        return []
    length = preferred if preferred in lengths else lengths[0]
    return sorted((w for w in windows if w.step == length), key=lambda w: w.end)


def nice_ceiling(x: float) -> float:
    """A round axis maximum at or above `x` (1 for nothing): 1, 1.5, 2, 2.5, 3, 4, 5, 6 or 8
    times a power of ten."""
    if x <= 0:
        return 1.0
    power = 10.0 ** math.floor(math.log10(x))
    for step in (1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10):
        if step * power >= x * (1 - 1e-12):
            return round(step * power, 12)
    raise AssertionError(f"no axis step for {x}")


def number(x: float) -> str:
    """A value as charts print it: at most 4 decimals, no trailing zeros."""
    return f"{x:.4f}".rstrip("0").rstrip(".") or "0"


@dataclass(frozen=True)
class _Measure:
    key: str
    title: str
    unit: str
    keep: Callable[[WindowStats], bool]
    pool: Callable[[Sequence[WindowStats]], float]
    grouped: str
    empty: str


def _error_rate(ws: Sequence[WindowStats]) -> float:
    return 100 * sum(w.errors for w in ws) / sum(w.requests for w in ws)


def _worst_p95(ws: Sequence[WindowStats]) -> float:
    return max(w.p95 for w in ws if w.p95 is not None)


_ERRORS = _Measure(
    "error_rate",
    "Error rate (%)",
    "%",
    lambda w: w.requests > 0,
    _error_rate,
    "pooled over its windows",
    "No data: no canary window with requests in the span.",
)
_P95 = _Measure(
    "latency_p95",
    "P95 latency (s)",
    "s",
    lambda w: w.p95 is not None,
    _worst_p95,
    "the worst of its windows",
    "No data: no canary window with a measured P95 in the span.",
)


def chart_data(
    gates: Gates | None,
    canary: str | None,
    stable: str | None,
    windows: Sequence[WindowStats],
    max_points: int = MAX_POINTS,
) -> tuple[Chart, Chart]:
    """The error-rate and P95 charts of a canary against its stable revision."""
    base = gates.window if gates is not None else None
    err_gate = gates.error_rate if gates is not None else None
    lat_gate = gates.latency_p95 if gates is not None else None
    return (
        _chart(
            _ERRORS,
            (err_gate.window if err_gate is not None else None) or base,
            err_gate.max * 100 if err_gate is not None else None,
            canary,
            stable,
            windows,
            max_points,
        ),
        _chart(
            _P95,
            (lat_gate.window if lat_gate is not None else None) or base,
            lat_gate.max if lat_gate is not None else None,
            canary,
            stable,
            windows,
            max_points,
        ),
    )


def _chart(
    m: _Measure,
    length: timedelta | None,
    threshold: float | None,
    canary: str | None,
    stable: str | None,
    windows: Sequence[WindowStats],
    max_points: int,
) -> Chart:
    mine = [w for w in one_length([w for w in windows if w.revision == canary], length)]
    mine = [w for w in mine if m.keep(w)] if canary is not None else []
    if not mine:
        return Chart(m.key, m.title, m.unit, empty=m.empty)
    theirs = [w for w in windows if stable and w.revision == stable and m.keep(w)]
    theirs = [w for w in theirs if w.step == mine[0].step]
    size = max(1, math.ceil(len(mine) / max(1, max_points)))
    groups = [mine[i : i + size] for i in range(0, len(mine), size)]
    times: list[datetime] = []
    canary_values: list[float | None] = []
    stable_values: list[float | None] = []
    for g in groups:
        value = m.pool(g)
        same = [w for w in theirs if g[0].start < w.end <= g[-1].end]
        pooled = m.pool(same) if same else None
        # One point draws no line, and a rolled-up window spans more than its end: draw
        # either from its start to its end.
        ends = (g[0].start, g[-1].end) if len(groups) == 1 or g[0].rolled > 1 else (g[-1].end,)
        for when in ends:
            times.append(when)
            canary_values.append(value)
            stable_values.append(pooled)
    dated = times[0].astimezone(UTC).date() != times[-1].astimezone(UTC).date()
    labels = tuple(_label(t, dated) for t in times)
    lines = [Line("canary", tuple(canary_values))]
    if any(v is not None for v in stable_values):
        lines.append(Line("stable", tuple(stable_values)))
    values = [v for line in lines for v in line.values if v is not None]
    top = nice_ceiling(max(values) * 1.1)
    shown = threshold if threshold is not None and threshold <= top else None
    caption = _caption(m, mine, groups, lines, threshold, shown, top, dated)
    whole = (times[-1] - times[0]).total_seconds() or 1.0
    at = tuple((t - times[0]).total_seconds() / whole for t in times)
    return Chart(m.key, m.title, m.unit, labels, tuple(lines), top, shown, caption, at=at)


def _label(when: datetime, dated: bool) -> str:
    return when.astimezone(UTC).strftime("%m-%d %H:%M" if dated else "%H:%M")


def _caption(
    m: _Measure,
    series: Sequence[WindowStats],
    groups: Sequence[Sequence[WindowStats]],
    lines: Sequence[Line],
    threshold: float | None,
    shown: float | None,
    top: float,
    dated: bool,
) -> str:
    length = format_duration(series[0].step)
    who = " and stable" if len(lines) > 1 else ""
    text = (
        f"The canary{who} per {length} window (x: window end, UTC{', with dates' if dated else ''})"
    )
    rolled = sum(w.rolled for w in series)
    if len(groups) == 1 and rolled == 1:
        text = f"The canary{who} over its one {length} window (x: window start and end, UTC)"
    elif len(groups) < len(series):
        what = "windows" if rolled == len(series) else "recorded lines"
        text += f"; each point is {len(groups[0])} {what}, {m.grouped}"
    if rolled > len(series):
        text += (
            f"; {rolled} windows recorded in {len(series)} line{'s' if len(series) > 1 else ''}"
            " (the windows measured between two records are rolled up into one), each drawn "
            "from its start to its end"
        )
    if threshold is None:
        text += ". No rollback threshold configured."
    elif shown is not None:
        text += f". The threshold line: the rollback threshold, {number(threshold)}{_unit(m.unit)}."
    else:
        text += (
            f". The rollback threshold, {number(threshold)}{_unit(m.unit)}, is above every "
            f"value (axis up to {number(top)}{_unit(m.unit)})."
        )
    return text


def _unit(unit: str) -> str:
    return unit if unit == "%" else f" {unit}"


# --- mermaid ---------------------------------------------------------------------------------
def mermaid(chart: Chart) -> list[str]:
    """The chart as a fenced mermaid `xychart-beta` block (lines of markdown).

    Mermaid draws no legend and no gaps: lines come in a fixed order and colour (canary,
    stable, threshold); a stable series with a missing point is left out, and the caption
    says which lines are drawn.
    """
    if chart.empty is not None:
        return [chart.empty]
    lines = [ln for ln in chart.lines if all(v is not None for v in ln.values)]
    palette = [CANARY_COLOUR if ln.name == "canary" else STABLE_COLOUR for ln in lines]
    if chart.threshold is not None:
        palette.append(THRESHOLD_COLOUR)
    init = '{"themeVariables": {"xyChart": {"plotColorPalette": "' + ", ".join(palette) + '"}}}'
    out = [
        "```mermaid",
        f"%%{{init: {init}}}%%",
        "xychart-beta",
        f'    title "{chart.title}"',
        "    x-axis [" + ", ".join(f'"{label}"' for label in chart.labels) + "]",
        f'    y-axis "{chart.title}" 0 --> {number(chart.top)}',
    ]
    for ln in lines:
        out.append("    line [" + ", ".join(number(v or 0.0) for v in ln.values) + "]")
    if chart.threshold is not None:
        out.append("    line [" + ", ".join(number(chart.threshold) for _ in chart.labels) + "]")
    out.append("```")
    names = [ln.name for ln in lines] + (["threshold"] if chart.threshold is not None else [])
    legend = "Lines: " + ", ".join(f"{i}. {n}" for i, n in enumerate(names, 1)) + "."
    if len(lines) < len(chart.lines):
        legend += " Stable is left out: not measured in every window."
    return [*out, f"{legend} {chart.caption}"]


# --- svg -------------------------------------------------------------------------------------
WIDTH, HEIGHT = 640, 240
_LEFT, _RIGHT, _TOP, _BOTTOM = 56, 16, 28, 40


def svg(chart: Chart) -> str:
    """The chart as an inline SVG element (no script, no external resources)."""
    title = html.escape(chart.title)
    if chart.empty is not None:
        return (
            f'<svg xmlns="http://www.w3.org/2000/svg" role="img" width="{WIDTH}" height="60" '
            f'viewBox="0 0 {WIDTH} 60" class="chart empty"><title>{title}</title>'
            f'<text x="8" y="34" font-size="13">{html.escape(chart.empty)}</text></svg>'
        )
    plot_w, plot_h = WIDTH - _LEFT - _RIGHT, HEIGHT - _TOP - _BOTTOM
    n = len(chart.labels)

    def x(i: int) -> float:
        if chart.at:
            return _LEFT + plot_w * chart.at[i]
        return _LEFT + (plot_w * i / (n - 1) if n > 1 else plot_w / 2)

    def y(v: float) -> float:
        return _TOP + plot_h * (1 - min(v, chart.top) / chart.top)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" class="chart" data-chart="{chart.key}">',
        f"<title>{title}</title>",
        f'<text x="{_LEFT}" y="16" font-size="13" font-weight="bold">{title}</text>',
    ]
    for frac in (0.0, 0.5, 1.0):
        v = chart.top * frac
        parts.append(
            f'<line x1="{_LEFT}" x2="{WIDTH - _RIGHT}" y1="{y(v):.1f}" y2="{y(v):.1f}" '
            'stroke="#dee2e6"/>'
            f'<text x="{_LEFT - 6}" y="{y(v) + 4:.1f}" font-size="11" text-anchor="end">'
            f"{number(v)}{html.escape(_unit(chart.unit))}</text>"
        )
    for i in sorted({0, n // 2, n - 1}):
        parts.append(
            f'<text x="{x(i):.1f}" y="{HEIGHT - _BOTTOM + 16}" font-size="11" '
            f'text-anchor="middle">{html.escape(chart.labels[i])}</text>'
        )
    if chart.threshold is not None:
        parts.append(
            f'<line class="threshold" x1="{_LEFT}" x2="{WIDTH - _RIGHT}" '
            f'y1="{y(chart.threshold):.1f}" y2="{y(chart.threshold):.1f}" '
            f'stroke="{THRESHOLD_COLOUR}" stroke-dasharray="6 4"/>'
        )
    for ln in chart.lines:
        colour = CANARY_COLOUR if ln.name == "canary" else STABLE_COLOUR
        for run in _runs(ln.values):
            points = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in run)
            parts.append(
                f'<polyline class="{ln.name}" points="{points}" fill="none" '
                f'stroke="{colour}" stroke-width="2"/>'
            )
            parts += [
                f'<circle cx="{x(i):.1f}" cy="{y(v):.1f}" r="2.5" fill="{colour}"/>' for i, v in run
            ]
    legend = [
        (ln.name, CANARY_COLOUR if ln.name == "canary" else STABLE_COLOUR) for ln in chart.lines
    ]
    if chart.threshold is not None:
        legend.append(("threshold", THRESHOLD_COLOUR))
    for k, (name, colour) in enumerate(legend):
        lx = WIDTH - _RIGHT - 90 * (len(legend) - k)
        parts.append(
            f'<rect x="{lx}" y="8" width="10" height="10" fill="{colour}"/>'
            f'<text x="{lx + 14}" y="17" font-size="11">{name}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _runs(values: Sequence[float | None]) -> list[list[tuple[int, float]]]:
    """Consecutive measured points (a missing value breaks the line)."""
    runs: list[list[tuple[int, float]]] = [[]]
    for i, v in enumerate(values):
        if v is None:
            if runs[-1]:
                runs.append([])
            continue
        runs[-1].append((i, v))
    return [r for r in runs if r]
