"""Interim and final stage reports: markdown under `state/<project>/<region>/<service>/reports/`.

`build_report(...)` is pure: values in (rollout spec, status, events, metric windows, the
baseline, `now`), a `Report` out, whose `markdown` renders on GitHub (tables, and mermaid
`xychart-beta` charts of error rate and p95 per window against their rollback thresholds).
`generate(...)` reads the rollout's state folder and rollout file, asks the metrics provider
for the span (see `measure_span`); `save(...)` writes `reports/<kind>-<UTC time>.md` and
`<kind>-latest.md` there.

Where the figures come from (`Source`): the metrics provider, asked once per metric for the
whole span (every request served in it, whether or not a run recorded a window), or, when it
cannot answer (unreachable, no credentials, span older than its retention, not asked), the
windows the runs recorded in state/; the report says which and why.

How the figures are computed from recorded windows:
- Counts (requests, 5xx, 2xx) are sums over the recorded windows of one length per revision
  (the gates' `window`), so overlapping windows of another length are never counted twice.
  They cover the measured windows, not necessarily every minute of the span. A line of the
  metrics files may sum several consecutive windows (rolled up at a record, see
  `WindowStats.rolled`): it counts as the windows it sums, and belongs to the span when it
  ends inside it, as a single window does.
- P50/P95/P99 over a span: percentiles of windows cannot be averaged. When every window
  carries its latency distribution (`WindowStats.latency_buckets`) the distributions are
  merged (bucket counts summed) and the percentile is interpolated inside the bucket that
  holds its rank: exact to the bucket resolution. Otherwise the report falls back to the
  request-weighted mean of the per-window percentiles and says so.
- Marks compare the span's value with the rollout file: ✅ meets the target (or, without a
  target, stays within the rollback threshold), ⚠️ misses the target but stays within the
  threshold, ❌ beyond the rollback threshold. The rollback itself is the judge's call, per
  window and on confidence intervals; the decision section reports it.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from reconciler import charts
from reconciler.analysis import held_reason, promotion_blockers
from reconciler.errors import ReconcileError
from reconciler.model import Outcome, ServiceRef, Verdict, WindowStats, labels
from reconciler.plan import Phase
from reconciler.sidebyside import BaselineRule, Sample, judge_baseline
from reconciler.spec import Metrics, RolloutSpec, format_duration, format_percent
from reconciler.stats import bucket_percentile, merge_buckets, percentile

if TYPE_CHECKING:
    from reconciler.metrics import MetricsProvider, StatsQuery
    from reconciler.probes import Baseline
    from reconciler.state import Event, ProbeRecord, ServiceStatus

__all__ = [
    "INTERIM_SPAN",
    "KINDS",
    "MAX_CHART_POINTS",
    "Action",
    "Decision",
    "Report",
    "ReportError",
    "ReportKind",
    "RevisionSummary",
    "Source",
    "Span",
    "build_report",
    "decide",
    "generate",
    "mark",
    "measure_span",
    "report_span",
    "save",
    "summarize",
    "summarize_span",
]

ReportKind = Literal["interim", "final"]
KINDS: tuple[ReportKind, ...] = ("interim", "final")
INTERIM_SPAN = timedelta(hours=24)
"""What an interim report covers by default: the last 24 hours."""
MAX_CHART_POINTS = charts.MAX_POINTS
MIN_SPAN_QUERY = timedelta(minutes=1)
"""The shortest span asked of a provider (Cloud Monitoring's smallest alignment period)."""
"""Charts with more windows than this group consecutive windows into one point."""

OK, WARN, BAD = "✅", "⚠️", "❌"


class ReportError(ReconcileError):
    """A report cannot be made (no state yet for the service)."""


# --- values ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Span:
    """The time a report covers, and why it starts where it does."""

    start: datetime
    end: datetime
    basis: str

    @property
    def length(self) -> timedelta:
        """How long the span is."""
        return self.end - self.start

    def holds_window(self, w: WindowStats) -> bool:
        """A window belongs to the span when it ends inside it."""
        return self.start < w.end <= self.end

    def holds_time(self, when: datetime) -> bool:
        """An instant belongs to the span when it is inside it, both ends included."""
        return self.start <= when <= self.end


@dataclass(frozen=True)
class Source:
    """Where a report's traffic figures come from.

    `stats` (revision -> its figures over the span, one aggregated query per metric) when the
    metrics provider answered; None when the report falls back to the windows recorded in
    state/, `reason` saying why. `provider` names what was (or would have been) asked.
    """

    provider: str | None
    stats: Mapping[str, WindowStats] | None = None
    reason: str = ""
    detail: str = ""
    """The provider's error, when it failed (first line, shortened)."""

    @property
    def measured(self) -> bool:
        """True when the figures are the provider's answer for the span."""
        return self.stats is not None


PercentileMethod = Literal["merged", "weighted", "span", "none"]


@dataclass(frozen=True)
class RevisionSummary:
    """One revision's traffic over a span."""

    revision: str
    role: str
    """`canary` or `stable`."""
    window: timedelta | None
    """The length of the windows summed (None without windows)."""
    windows: int
    requests: int
    errors: int
    successes: int
    p50: float | None
    p95: float | None
    p99: float | None
    method: PercentileMethod
    """How p50/p95/p99 were computed: merged distributions, request-weighted, by the
    provider over the whole span (`span`), or no data."""

    @property
    def error_rate(self) -> float | None:
        """5xx share over the span, None without requests."""
        return self.errors / self.requests if self.requests else None

    @property
    def success_rate(self) -> float | None:
        """2xx share over the span, None without requests."""
        return self.successes / self.requests if self.requests else None


class Action(enum.Enum):
    """What the report recommends."""

    ADVANCE = "advance"
    HOLD = "hold"
    ROLL_BACK = "roll back"


@dataclass(frozen=True)
class Decision:
    """The recommendation and why; `next_stage` is the percent to advance to (None: finalize
    or nothing to advance)."""

    action: Action
    reasons: tuple[str, ...]
    next_stage: int | None = None
    held: str | None = None
    """Why the canary is HELD (`gates.inconclusive_limit`: too little traffic to judge)."""

    @property
    def go(self) -> str:
        """The final report's wording: GO, NO-GO, or NO-GO for now."""
        if self.action is Action.ADVANCE:
            return "GO"
        return "NO-GO" if self.action is Action.ROLL_BACK else "NO-GO for now"


@dataclass(frozen=True)
class Report:
    """A built report: its markdown and the figures it shows."""

    service: str
    kind: ReportKind
    generated: datetime
    span: Span
    canary: RevisionSummary | None
    stable: RevisionSummary | None
    decision: Decision
    markdown: str
    source: Source | None = None
    """Where the traffic figures come from (None: recorded windows, no provider asked)."""


# --- the span -------------------------------------------------------------------------------
def status_span(
    kind: ReportKind,
    status: ServiceStatus,
    spec: RolloutSpec | None,
    *,
    now: datetime,
    events: Sequence[Event],
    windows: Sequence[WindowStats],
    since: timedelta | None = None,
) -> Span:
    """`report_span` of a rollout's recorded state: its canary, events, windows and stage."""
    return report_span(
        kind,
        now=now,
        canary=_canary_of(status, spec),
        events=events,
        windows=windows,
        stage_since=status.stage_since,
        since=since,
    )


def report_span(
    kind: ReportKind,
    *,
    now: datetime,
    canary: str | None,
    events: Sequence[Event],
    windows: Sequence[WindowStats],
    stage_since: datetime | None = None,
    since: timedelta | None = None,
) -> Span:
    """The span a report covers.

    `since` overrides: the last `since` up to `now`. Interim: the last `INTERIM_SPAN`.
    Final: the whole rollout, from the first event that names the canary revision (else
    its first recorded window, else the current stage's start, else the last 24 hours).
    """
    if since is not None:
        return Span(now - since, now, f"the last {format_duration(since)} (--since)")
    if kind == "interim":
        return Span(now - INTERIM_SPAN, now, f"the last {format_duration(INTERIM_SPAN)}")
    if canary is not None:
        first = next((e for e in sorted(events, key=lambda e: e.time) if _names(e, canary)), None)
        if first is not None:
            return Span(
                first.time,
                now,
                f"the whole rollout, since the canary's first event ({first.kind.value})",
            )
        starts = [w.start for w in windows if w.revision == canary]
        if starts:
            return Span(min(starts), now, "the whole rollout, since the canary's first window")
    if stage_since is not None:
        return Span(stage_since, now, "since the current stage began (no canary event recorded)")
    return Span(
        now - INTERIM_SPAN,
        now,
        f"the last {format_duration(INTERIM_SPAN)} (no canary event or window recorded)",
    )


def _names(e: Event, revision: str) -> bool:
    texts = [e.before, e.after, e.reason, *(str(v) for v in e.details.values())]
    return any(revision in t for t in texts)


# --- per-revision figures -------------------------------------------------------------------
_series = charts.one_length


def summarize(
    revision: str, role: str, windows: Sequence[WindowStats], preferred: timedelta | None = None
) -> RevisionSummary:
    """Counts and percentiles of `revision` over `windows` (all of one span).

    Uses the windows of length `preferred` (the gates' window) or the shortest recorded, so
    windows of different lengths, which overlap, are not counted twice.
    """
    series = _series([w for w in windows if w.revision == revision], preferred)
    requests = sum(w.requests for w in series)
    p50, p95, p99, method = _percentiles(series)
    return RevisionSummary(
        revision=revision,
        role=role,
        window=series[0].step if series else None,
        windows=sum(w.rolled for w in series),
        requests=requests,
        errors=sum(w.errors for w in series),
        successes=sum(w.successes for w in series),
        p50=p50,
        p95=p95,
        p99=p99,
        method=method,
    )


def summarize_span(revision: str, role: str, stats: WindowStats | None) -> RevisionSummary:
    """Counts and percentiles of `revision` from the provider's answer for the whole span
    (None: the provider knows no request of it). A distribution, when the provider gives
    one (Cloud Monitoring), is interpolated like merged windows; otherwise the provider's
    own span percentiles are taken (Prometheus' `histogram_quantile` over the span)."""
    if stats is None or stats.requests == 0:
        return RevisionSummary(revision, role, None, 0, 0, 0, 0, None, None, None, "none")
    p50, p95, p99, method = _percentiles([stats])
    if method == "weighted":
        method = "span"  # one window: the provider's percentiles are the span's own
    return RevisionSummary(
        revision=revision,
        role=role,
        window=stats.window,
        windows=1,
        requests=stats.requests,
        errors=stats.errors,
        successes=stats.successes,
        p50=p50,
        p95=p95,
        p99=p99,
        method=method,
    )


def _percentiles(
    series: Sequence[WindowStats],
) -> tuple[float | None, float | None, float | None, PercentileMethod]:
    measured = [w for w in series if w.requests > 0]
    if not measured:
        return None, None, None, "none"
    if all(w.latency_buckets is not None for w in measured):
        merged = merge_buckets(w.latency_buckets or () for w in measured)
        if merged is not None and merged:
            return (
                bucket_percentile(merged, 0.50),
                bucket_percentile(merged, 0.95),
                bucket_percentile(merged, 0.99),
                "merged",
            )

    def weighted(get: Callable[[WindowStats], float | None]) -> float | None:
        pairs = [(v, w.requests) for w in measured if (v := get(w)) is not None]
        total = sum(n for _, n in pairs)
        return sum(v * n for v, n in pairs) / total if total else None

    values = (weighted(lambda w: w.p50), weighted(lambda w: w.p95), weighted(lambda w: w.p99))
    if all(v is None for v in values):
        return None, None, None, "none"
    return values[0], values[1], values[2], "weighted"


# --- marks ----------------------------------------------------------------------------------
def mark(
    value: float | None,
    *,
    target: float | None,
    threshold: float | None,
    higher_is_better: bool = False,
) -> str:
    """✅ / ⚠️ / ❌ for a value against a target and a rollback threshold; "" when there is
    nothing to compare (no value, or neither a target nor a threshold).

    A value beyond the threshold (above a max, below a min) is ❌, as the judge's FAIL is
    strictly beyond it; one that misses the target but not the threshold is ⚠️.
    """
    if value is None or (target is None and threshold is None):
        return ""

    def worse(limit: float) -> bool:
        return value < limit if higher_is_better else value > limit

    if threshold is not None and worse(threshold):
        return BAD
    if target is not None and worse(target):
        return WARN
    return OK


@dataclass(frozen=True)
class _Limits:
    target: float | None = None
    threshold: float | None = None
    higher_is_better: bool = False


def _limits(spec: RolloutSpec | None) -> dict[str, _Limits]:
    if spec is None:
        return {}
    g = spec.gates
    out = {}
    if g.error_rate is not None:
        out["error_rate"] = _Limits(g.error_rate.target, g.error_rate.max)
    if g.success_rate is not None:
        out["success_rate"] = _Limits(g.success_rate.target, g.success_rate.min, True)
    if g.latency_p95 is not None:
        out["p95"] = _Limits(g.latency_p95.target, g.latency_p95.max)
    return out


def _span_findings(summary: RevisionSummary | None, limits: dict[str, _Limits]) -> list[str]:
    """The canary's span values beyond a rollback threshold or missing a target."""
    if summary is None:
        return []
    out = []
    checks: list[tuple[str, float | None, Callable[[float], str], Callable[[float], str]]] = [
        ("error_rate", summary.error_rate, _pct, format_percent),
        ("success_rate", summary.success_rate, _pct, format_percent),
        ("p95", summary.p95, _secs, _secs_limit),
    ]
    for key, value, fmt, limit in checks:
        lim = limits.get(key)
        if lim is None or value is None:
            continue
        found = mark(
            value, target=lim.target, threshold=lim.threshold, higher_is_better=lim.higher_is_better
        )
        word = "<" if lim.higher_is_better else ">"
        if found == BAD and lim.threshold is not None:
            out.append(
                f"{_LABEL[key]} over the span {fmt(value)} {word} rollback threshold "
                f"{limit(lim.threshold)}, though the latest windows did not fail"
            )
        elif found == WARN and lim.target is not None:
            out.append(
                f"{_LABEL[key]} over the span {fmt(value)} misses the target {limit(lim.target)}"
            )
    return out


_LABEL = {"error_rate": "error rate", "success_rate": "success rate", "p95": "P95"}


# --- the decision ---------------------------------------------------------------------------
def decide(
    spec: RolloutSpec | None,
    status: ServiceStatus,
    canary: RevisionSummary | None,
    *,
    now: datetime,
) -> Decision:
    """Advance, hold or roll back, and why: from the phase, the last verdict, the bake time
    and the canary's values over the span against the rollback thresholds.

    - rolled back, or a FAIL verdict: roll back (the judge's failing gates are the reasons);
    - no verdict, an INCONCLUSIVE one, a target missed (by the verdict or over the span), a
      span value beyond a rollback threshold that the latest windows have not (yet) failed
      on, or a bake not yet over: hold;
    - a PASS with every target met for at least `bake`: advance to the next stage (at 100%:
      finalize, the canary becomes the stable revision).
    """
    if status.phase is Phase.ROLLED_BACK:
        why = (
            spec.rolled_back.reason
            if spec is not None and spec.rolled_back is not None
            else "; ".join(status.verdict.failures)
            if status.verdict is not None and status.verdict.failures
            else "see the events"
        )
        return Decision(Action.ROLL_BACK, (f"the canary was rolled back: {why}",))
    if status.phase is Phase.PROMOTED:
        return Decision(
            Action.ADVANCE, (f"promoted: {status.stable_revision} serves 100% as the stable",)
        )
    if status.canary_revision is None:
        return Decision(Action.HOLD, ("no canary in progress",))
    verdict = status.verdict
    if verdict is None:
        return Decision(Action.HOLD, ("no verdict yet: the canary has not been judged",))
    if verdict.outcome is Outcome.FAIL:
        return Decision(Action.ROLL_BACK, tuple(verdict.failures) or ("verdict FAIL",))
    # `gates.inconclusive_limit` (the loop's own rule): too little traffic to judge, held.
    held = held_reason(spec.gates, status.streaks) if spec is not None else None
    # The one promotion-readiness rule the planner uses too, then the span's own findings.
    reasons = promotion_blockers(verdict) + _span_findings(canary, _limits(spec))
    if held is not None:
        return Decision(Action.HOLD, (held, *reasons), held=held)
    if reasons:
        return Decision(Action.HOLD, tuple(reasons))
    # PASS, targets met, no breach over the span: only the bake time is left.
    if spec is None:
        return Decision(
            Action.HOLD, ("all gates pass, but the bake time is unknown (no rollout file)",)
        )
    since = status.passing_since or status.stage_since
    passing = [f"all gates pass at {status.stage}%"]
    if since is None or now - since < spec.bake:
        done = timedelta(0) if since is None else max(now - since, timedelta(0))
        left = spec.bake - done
        return Decision(
            Action.HOLD,
            (
                *passing,
                f"bake: passing for {_duration(done)} of {format_duration(spec.bake)} "
                f"({_duration(left)} left)",
            ),
        )
    passing.append(f"passing for {_duration(now - since)} >= bake {format_duration(spec.bake)}")
    nxt = next((s for s in spec.stages if s > status.stage), None)
    if nxt is None:
        passing.append(f"at 100%: finalize, {status.canary_revision} becomes the stable revision")
    return Decision(Action.ADVANCE, tuple(passing), nxt)


# --- formatting -----------------------------------------------------------------------------
def _pct(x: float) -> str:
    """A share: two decimals below 0.1% so small rates do not read as zero, else one."""
    pct = x * 100
    return f"{pct:.2f}%" if 0 < abs(pct) < 0.1 else f"{pct:.1f}%"


def _secs(x: float) -> str:
    """A latency: whole milliseconds below a second, else seconds with two decimals."""
    return f"{x * 1000:.0f}ms" if x < 1 else f"{x:.2f}s"


def _secs_limit(x: float) -> str:
    """A configured latency, as the rollout file writes it: `20s`, `500ms`."""
    return f"{round(x * 1000, 6):g}ms" if x < 1 else f"{round(x, 6):g}s"


def _time(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _duration(d: timedelta) -> str:
    """Human form, to the minute: `2d 3h`, `5h 12m`, `7m`."""
    minutes = int(d.total_seconds() // 60)
    days, rest = divmod(minutes, 24 * 60)
    hours, mins = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h" if hours else f"{days}d"
    if hours:
        return f"{hours}h {mins}m" if mins else f"{hours}h"
    return f"{mins}m"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ").strip() or "–"


def _opt(value: float | None, fmt: Callable[[float], str]) -> str:
    return "no data" if value is None else fmt(value)


def _with_mark(value: float | None, fmt: Callable[[float], str], lim: _Limits | None) -> str:
    if value is None:
        return "no data"
    if lim is None:
        return fmt(value)
    m = mark(
        value, target=lim.target, threshold=lim.threshold, higher_is_better=lim.higher_is_better
    )
    return f"{fmt(value)} {m}".strip()


def _limit_text(lim: _Limits | None, fmt: Callable[[float], str], which: str) -> str:
    if lim is None:
        return "–"
    value = lim.target if which == "target" else lim.threshold
    if value is None:
        return "–"
    if which == "target":
        return f"{'≥' if lim.higher_is_better else '≤'} {fmt(value)}"
    return f"{'<' if lim.higher_is_better else '>'} {fmt(value)}"


# --- charts ---------------------------------------------------------------------------------
def _charts(
    spec: RolloutSpec | None,
    canary: str | None,
    stable: str | None,
    windows: Sequence[WindowStats],
) -> list[str]:
    out = ["## Charts", ""]
    gates = spec.gates if spec is not None else None
    errors, p95 = charts.chart_data(gates, canary, stable, windows, MAX_CHART_POINTS)
    for heading, chart in (("Error rate", errors), ("P95 latency", p95)):
        out += [f"### {heading} per window: canary and stable", "", *charts.mermaid(chart), ""]
    return out


# --- sections -------------------------------------------------------------------------------
_METHOD_NOTE = {
    "merged": (
        "P50/P95/P99 over the span come from the merged latency distributions of its windows "
        "(bucket counts summed, then interpolated inside the bucket that holds the rank): exact "
        "to the bucket resolution."
    ),
    "weighted": (
        "The windows carry no latency distribution, so P50/P95/P99 over the span are the "
        "request-weighted means of the per-window percentiles: an approximation, since "
        "percentiles cannot be averaged exactly. The charts show the per-window values."
    ),
}


_SPAN_NOTE = {
    "merged": (
        "P50/P95/P99 over the span come from each revision's latency distribution over the "
        "whole span, as {provider} aggregates it (one query), interpolated inside the bucket "
        "that holds the rank: exact to the bucket resolution."
    ),
    "span": (
        "P50/P95/P99 over the span are computed by {provider} over the whole span (one query "
        "per percentile, from its latency histogram): exact to its bucket resolution."
    ),
}


def source_text(source: Source | None, measured_to: datetime | None = None) -> str:
    """One line: where the figures come from, and why when it is not the provider."""
    if source is not None and source.measured:
        upto = f" up to {_time(measured_to)}" if measured_to is not None else ""
        return (
            f"{source.provider}, asked for the whole span{upto} (one aggregated query per "
            "metric): every request served in it, whether or not a run recorded it"
        )
    why = f": {source.reason}" if source is not None and source.reason else ""
    detail = f" ({source.detail})" if source is not None and source.detail else ""
    return f"the windows the runs recorded in state/{why}{detail}"


def _traffic_section(
    spec: RolloutSpec | None,
    status: ServiceStatus,
    canary: RevisionSummary | None,
    stable: RevisionSummary | None,
    source: Source | None = None,
    measured_to: datetime | None = None,
) -> list[str]:
    out = ["## Traffic and gates", "", f"Figures: {source_text(source, measured_to)}.", ""]
    summaries = [s for s in (canary, stable) if s is not None]
    measured = source is not None and source.measured
    if not any(s.windows for s in summaries):
        if measured:
            assert source is not None
            return [*out, f"No data: {source.provider} counted no request in the span.", ""]
        return [*out, "No data: no metric window recorded in the span.", ""]
    total = sum(s.requests for s in summaries)
    if canary is not None and total:
        out += [
            f"Live split: `{status.traffic.describe()}`; the canary served "
            f"{canary.requests:,} of {total:,} measured requests "
            f"({_pct(canary.requests / total)}).",
            "",
        ]
    limits = _limits(spec)
    head = "| | " + " | ".join(f"{s.role} `{s.revision}`" for s in summaries)
    out += [head + " | target | rollback threshold |"]
    out += ["|---|" + "---:|" * len(summaries) + "---:|---:|"]

    def row(label: str, cells: list[str], key: str | None = None) -> str:
        lim = limits.get(key) if key else None
        limit = _secs_limit if key == "p95" else format_percent
        return (
            f"| {label} | "
            + " | ".join(cells)
            + f" | {_limit_text(lim, limit, 'target')} | {_limit_text(lim, limit, 'threshold')} |"
        )

    def windows(s: RevisionSummary) -> str:
        if measured:
            return "whole span" if s.windows else "no request"
        return f"{s.windows} × {format_duration(s.window)}" if s.window else "0"

    out += [
        row("windows", [windows(s) for s in summaries]),
        row("requests", [f"{s.requests:,}" for s in summaries]),
        row("errors (5xx)", [f"{s.errors:,}" for s in summaries]),
    ]
    measures: list[
        tuple[str, str | None, Callable[[RevisionSummary], float | None], Callable[[float], str]]
    ] = [
        ("error rate", "error_rate", lambda s: s.error_rate, _pct),
        ("success rate", "success_rate", lambda s: s.success_rate, _pct),
        ("P50", None, lambda s: s.p50, _secs),
        ("P95", "p95", lambda s: s.p95, _secs),
        ("P99", None, lambda s: s.p99, _secs),
    ]
    for label, key, get, fmt in measures:
        lim = limits.get(key) if key else None
        out.append(row(label, [_with_mark(get(s), fmt, lim) for s in summaries], key))
    out.append("")
    out.append(
        f"{OK} meets the target · {WARN} misses the target, within the rollback threshold · "
        f"{BAD} beyond the rollback threshold. Marks compare the span's values; rolling back "
        "is the judge's call per window (see the decision)."
    )
    out.append("")
    methods = {s.method for s in summaries} - {"none"}
    for method in sorted(methods):
        if measured:
            assert source is not None
            out += [_SPAN_NOTE[method].format(provider=source.provider), ""]
        else:
            out += [_METHOD_NOTE[method], ""]
    if spec is None:
        out += ["No rollout file: targets and thresholds unknown.", ""]
    return out


def _decision_section(
    kind: ReportKind, decision: Decision, verdict: Verdict | None, at: datetime | None
) -> list[str]:
    out = ["## Decision", ""]
    head = f"**{decision.action.value.upper()}**"
    if decision.action is Action.ADVANCE and decision.next_stage is not None:
        head += f" to {decision.next_stage}%"
    if kind == "final":
        head = f"**Go/no-go: {decision.go}** ({decision.action.value})"
        if decision.action is Action.ADVANCE and decision.next_stage is not None:
            head += f", next stage {decision.next_stage}%"
    if decision.held:
        head += " · ⏸️ **HELD**: too little traffic to judge (see `gates.inconclusive_limit`)"
    out += [head, ""]
    out += [f"- {_cell(r)}" for r in decision.reasons]
    out.append("")
    if verdict is None:
        out += ["No verdict recorded yet.", ""]
        return out
    when = f" at {_time(at)}" if at is not None else ""
    out += [
        f"Latest verdict{when}: **{verdict.outcome.value}**",
        "",
        "| gate | result | reason |",
        "|---|---|---|",
    ]
    for g in verdict.gates:
        out.append(f"| {g.gate} | {g.outcome.value} | {_cell(g.reason)} |")
    out.append("")
    return out


def _stages_section(spec: RolloutSpec | None, status: ServiceStatus, now: datetime) -> list[str]:
    out = ["## Stages", ""]
    stages = spec.stages if spec is not None else []
    if stages:
        marks = [f"**{s}%**" if s == status.stage else f"{s}%" for s in stages]
        out.append("Stages: " + " → ".join(marks) + f" (live: {status.stage}%)")
    else:
        out.append(f"Live stage: {status.stage}% (no rollout file: stages unknown)")
    out.append("")
    if status.stage_since is not None:
        line = (
            f"At {status.stage}% since {_time(status.stage_since)} "
            f"({_duration(now - status.stage_since)})"
        )
        if spec is not None:
            line += f"; bake {format_duration(spec.bake)}"
            line += ", auto-advance on" if spec.auto_advance else ", advanced by pull request"
        out += [line + ".", ""]
    return out


def _probes_section(
    spec: RolloutSpec | None, records: Sequence[ProbeRecord], span: Span
) -> list[str]:
    out = ["## Probes", ""]
    mine = sorted((r for r in records if span.holds_time(r.at)), key=lambda r: r.at)
    names = list(dict.fromkeys([*(c.name for c in spec.probes)] if spec else []))
    names += [n for n in dict.fromkeys(r.name for r in mine) if n not in names]
    if not names:
        return [*out, "No probes configured or run.", ""]
    out += [
        "| probe | runs | passed | failed | last | last failure |",
        "|---|---:|---:|---:|---|---|",
    ]
    for name in names:
        runs = [r for r in mine if r.name == name]
        if not runs:
            out.append(f"| {name} | 0 | 0 | 0 | not run in the span | – |")
            continue
        passed = sum(r.ok for r in runs)
        last = runs[-1]
        failures = [r for r in runs if not r.ok]
        why = f"{_time(failures[-1].at)}: {failures[-1].reason}" if failures else ""
        out.append(
            f"| {name} | {len(runs)} | {passed} | {len(runs) - passed} | "
            f"{OK if last.ok else BAD} {_time(last.at)} | {_cell(why)} |"
        )
    out.append("")
    return out


def _baseline_section(
    baseline: Baseline | None, records: Sequence[ProbeRecord], span: Span
) -> list[str]:
    out = ["## Baseline", ""]
    if baseline is None:
        return [*out, "No baseline recorded (`reconcile bench SERVICE` takes one).", ""]
    of = f" revision `{baseline.revision}`" if baseline.revision else ""
    rule = BaselineRule()
    out += [
        f"Taken {_time(baseline.taken_at)} by `reconcile bench` on the {baseline.target}{of}. "
        "Like with like: each check's bench is compared with the canary probe runs of the same "
        "check over the span. The verdict is a test, not two point estimates: FAIL (❌) only "
        "when the canary is worse beyond the margin at 95% confidence (success rate more than "
        f"{rule.success_margin:.0%} lower, or answers slower than {rule.latency_ratio:g}x and "
        f"{_secs(rule.latency_slack)} more); INCONCLUSIVE (–) when too few runs to tell.",
        "",
        "| check | iterations | success | P50 | P95 | confidence "
        "| canary runs | canary success | canary P95 | verdict |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    mine = [r for r in records if span.holds_time(r.at)]
    for r in baseline.results:
        conf = f"{r.confidence_mean:.2f}" if r.confidence_mean is not None else "–"
        runs = [p for p in mine if p.name == r.name]
        latencies = tuple(p.latency for p in runs if p.latency is not None)
        canary = Sample(len(runs), sum(p.ok for p in runs), latencies)
        got = judge_baseline(canary, r.sample, rule, names=("canary", "baseline"))
        word = {Outcome.PASS: f"{OK} PASS", Outcome.FAIL: f"{BAD} FAIL"}.get(
            got.outcome, "– INCONCLUSIVE"
        )
        why = f": {_cell('; '.join(got.reasons))}" if got.outcome is Outcome.FAIL else ""
        c_success = canary.success_rate if runs else None
        out.append(
            f"| {r.name} | {len(r.samples)} | {_pct(r.success_rate)} | {_opt(r.p50, _secs)} "
            f"| {_opt(r.p95, _secs)} | {conf} | {len(runs)} | {_opt(c_success, _pct)} "
            f"| {_opt(percentile(latencies, 95), _secs)} | {word}{why} |"
        )
    out.append("")
    return out


def _events_section(events: Sequence[Event], span: Span) -> list[str]:
    out = ["## Events", ""]
    mine = sorted((e for e in events if span.holds_time(e.time)), key=lambda e: e.time)
    if not mine:
        return [*out, "No events in the span.", ""]
    out += ["| time | event | by | before → after | reason |", "|---|---|---|---|---|"]
    for e in mine:
        change = f"{e.before} → {e.after}" if e.before or e.after else ""
        out.append(
            f"| {_time(e.time)} | {e.kind.value} | {_cell(e.actor)} | {_cell(change)} "
            f"| {_cell(e.reason)} |"
        )
    out.append("")
    return out


def _canary_of(status: ServiceStatus, spec: RolloutSpec | None) -> str | None:
    """The canary a report is about: live, named by the rollout file, or rolled back."""
    canary = status.canary_revision or (spec.revisions.canary if spec is not None else None)
    if canary is None and spec is not None and spec.rolled_back is not None:
        canary = spec.rolled_back.revision
    return canary


# --- the report -----------------------------------------------------------------------------
def build_report(
    kind: ReportKind,
    *,
    status: ServiceStatus,
    now: datetime,
    spec: RolloutSpec | None = None,
    events: Sequence[Event] = (),
    windows: Sequence[WindowStats] = (),
    baseline: Baseline | None = None,
    since: timedelta | None = None,
    source: Source | None = None,
    name: str = "",
    span: Span | None = None,
) -> Report:
    """Build the report of `status.service` (pure: values in, a `Report` out).

    `name` names the rollout in the title when not by its service id alone (the service
    in several regions or projects, `model.labels`).

    `windows`: recorded metric windows (any span; those ending inside the report's span
    count): the charts, and the figures unless `source` carries the provider's answer for
    the span. The probe runs are `status.probes`. `span` is the span the report covers, the
    one `source` was asked for; None: `report_span` of these inputs (`since` overrides it).
    """
    if kind not in KINDS:
        raise ValueError(f"report kind must be one of {KINDS}, got {kind!r}")
    canary_rev = _canary_of(status, spec)
    if span is None:
        span = status_span(kind, status, spec, now=now, events=events, windows=windows, since=since)
    inside = [w for w in windows if span.holds_window(w)]
    preferred = spec.gates.window if spec is not None else None
    measured_to: datetime | None = None
    if source is not None and source.stats is not None:
        got = source.stats
        canary = summarize_span(canary_rev, "canary", got.get(canary_rev)) if canary_rev else None
        stable = summarize_span(status.stable_revision, "stable", got.get(status.stable_revision))
        measured_to = max((w.end for w in got.values()), default=None)
    else:
        canary = summarize(canary_rev, "canary", inside, preferred) if canary_rev else None
        stable = summarize(status.stable_revision, "stable", inside, preferred)
    decision = decide(spec, status, canary, now=now)

    title = "Interim report" if kind == "interim" else "Final report"
    revisions = f"stable `{status.stable_revision}`"
    if canary_rev:
        revisions = f"canary `{canary_rev}` · " + revisions
    lines = [
        f"# {name or status.service}: {title.lower()}",
        "",
        "| | |",
        "|---|---|",
        f"| report | {title.lower()}, covering {span.basis} |",
        f"| span | {_time(span.start)} → {_time(span.end)} ({_duration(span.length)}) |",
        f"| generated | {_time(now)} |",
        f"| figures | {_cell(_source_head(source))} |",
        f"| phase | {status.phase.value}, canary at {status.stage}% |",
        *(
            [f"| coverage | {_cell(status.coverage.describe())} at this stage, by the runs |"]
            if status.coverage.served
            else []
        ),
        f"| revisions | {revisions} |",
        f"| live traffic | `{status.traffic.describe()}` |",
        "",
    ]
    lines += _decision_section(kind, decision, status.verdict, status.verdict_at)
    lines += _stages_section(spec, status, now)
    lines += _traffic_section(spec, status, canary, stable, source, measured_to)
    if measured_to is not None and canary is not None and canary.requests and canary_rev:
        recorded = summarize(canary_rev, "canary", inside, preferred)
        lines += [
            f"Judged by the runs: their recorded windows hold {recorded.requests:,} of the "
            f"{canary.requests:,} canary requests served in the span "
            f"({_pct(min(recorded.requests / canary.requests, 1.0))})"
            + (
                "; the rest was served in windows not yet ended or not measured by a run."
                if recorded.requests < canary.requests
                else "."
            ),
            "",
        ]
    lines += _charts(spec, canary_rev, status.stable_revision, inside)
    lines += _probes_section(spec, status.probes, span)
    lines += _baseline_section(baseline, status.probes, span)
    lines += _events_section(events, span)
    markdown = "\n".join(lines).rstrip() + "\n"
    return Report(status.service, kind, now, span, canary, stable, decision, markdown, source)


def _source_head(source: Source | None) -> str:
    if source is not None and source.measured:
        return f"{source.provider}, one query per metric over the span"
    if source is None or not source.reason:
        return "windows recorded in state/"
    return f"windows recorded in state/: {source.reason}"


# --- I/O ------------------------------------------------------------------------------------
def provider_name(metrics: Metrics) -> str:
    """How a report names the metrics provider of a rollout file."""
    from reconciler.spec import PrometheusMetrics

    if isinstance(metrics, PrometheusMetrics):
        return f"Prometheus at {metrics.url}"
    return "Cloud Monitoring"


def measure_span(
    provider: MetricsProvider,
    name: str,
    query: StatsQuery,
    span: Span,
    *,
    now: datetime,
) -> Source:
    """Ask `provider` for the whole span: one aggregated query per metric (a single window
    from the span's start to its end less the provider's ingestion lag).

    Falls back (a `Source` without stats, saying why) when the provider fails (unreachable,
    refused, no credentials), when the span is older than the provider keeps data, or when
    less than a minute of it is readable yet.
    """
    from reconciler.metrics import MetricsError, lag_of, retention_of

    lag = lag_of(provider)
    retention = retention_of(provider)
    if retention is not None and span.start < now - retention:
        return Source(
            name,
            reason=f"the span starts {_time(span.start)}, before {name} keeps data "
            f"({_duration(retention)})",
        )
    # Whole seconds, as an alignment period is; the start stays the span's start.
    window = timedelta(seconds=int((span.end - lag - span.start).total_seconds()))
    if window < MIN_SPAN_QUERY:
        return Source(name, reason=f"less than {_duration(MIN_SPAN_QUERY)} of the span is readable")
    try:
        got = provider.window_stats([query], window, span.start + window + lag)
    except (MetricsError, ReconcileError) as exc:
        return Source(name, reason=f"{name} could not answer", detail=_short(exc))
    stats = {rev: w for (svc, rev), w in got.items() if svc == query.ref.service}
    return Source(name, stats=stats)


def _short(exc: BaseException, limit: int = 200) -> str:
    """An error's first line, cut at `limit` characters (a report cell, not a log)."""
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return first if len(first) <= limit else first[: limit - 1].rstrip() + "…"


def generate(
    root: Path,
    ref: ServiceRef,
    kind: ReportKind,
    *,
    now: datetime,
    since: timedelta | None = None,
    metrics_for: Callable[[Metrics], MetricsProvider] | None = None,
    unasked: str = "the provider was not asked",
) -> Report:
    """Read the rollout's state folder (`state/<project>/<region>/<service>/`), its rollout
    file (if any) and the latest baseline, ask the rollout file's metrics provider (made by
    `metrics_for`; None: ask none, and say `unasked`) for the span, and build the report.
    Raises `ReportError` when the service has no state yet."""
    from reconciler.metrics import StatsQuery
    from reconciler.probes import load_baseline
    from reconciler.state import read_events, read_metrics, read_status, state_dir, status_path

    service = ref.service
    status = read_status(root, ref)
    if status is None:
        raise ReportError(
            f"{status_path(root, ref)}: no state yet for {service} "
            "(nothing reconciled; run `reconcile apply` first)"
        )
    spec, label = _rollout_of(root, ref)
    events = read_events(root, ref)
    # A final report's span starts at the canary's first event or window: read every
    # recorded month (metrics files are bounded); otherwise read from the span's start.
    earliest = None if kind == "final" and since is None else now - (since or INTERIM_SPAN)
    windows = read_metrics(root, ref, since=earliest)
    baseline = load_baseline(state_dir(root, ref).parent, service)
    canary = _canary_of(status, spec)
    # One span: the one the provider is asked for is the one the report says it covers.
    span = status_span(kind, status, spec, now=now, events=events, windows=windows, since=since)
    source: Source
    if spec is None:
        source = Source(None, reason="no rollout file, so no metrics provider to ask")
    elif metrics_for is None:
        source = Source(provider_name(spec.metrics), reason=unasked)
    else:
        revisions = tuple(r for r in (canary, status.stable_revision) if r)
        name = provider_name(spec.metrics)
        try:
            provider = metrics_for(spec.metrics)
        except ReconcileError as exc:
            source = Source(name, reason=f"{name} could not be set up", detail=_short(exc))
        else:
            try:
                source = measure_span(provider, name, StatsQuery(ref, revisions), span, now=now)
            finally:
                close = getattr(provider, "close", None)
                if callable(close):
                    close()  # a Prometheus provider's own HTTP client
    return build_report(
        kind,
        status=status,
        now=now,
        spec=spec,
        events=events,
        windows=windows,
        baseline=baseline,
        source=source,
        name=label,
        span=span,
    )


def _rollout_of(root: Path, ref: ServiceRef) -> tuple[RolloutSpec | None, str]:
    """The spec of `ref` from the rollout files named after its service (in any folder of
    rollout/; a file with `waves:` gives its region's), and how the report names it among
    their rollouts; (None, service id) when no file names it."""
    from reconciler.loader import find_rollout_files, load_spec
    from reconciler.waves import expand

    folder = root / "rollout"
    files = (
        [p for p in find_rollout_files(folder) if p.stem == ref.service] if folder.is_dir() else []
    )
    specs = [s for path in files for s in expand(load_spec(path))]
    refs = [ServiceRef(s.project, s.region, s.service) for s in specs]
    spec = next((s for s, r in zip(specs, refs, strict=True) if r == ref), None)
    return spec, labels([*refs, ref])[ref]


def save(root: Path, ref: ServiceRef, report: Report) -> Path:
    """Write `reports/<kind>-<UTC time>.md` and `<kind>-latest.md` in the state folder of
    `ref`; the path of the first."""
    from reconciler.state import atomic_write_text, state_dir

    if report.service != ref.service:
        raise ValueError(f"report of {report.service} saved as a report of {ref.key}")
    folder = state_dir(root, ref) / "reports"
    stamp = report.generated.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = folder / f"{report.kind}-{stamp}.md"
    atomic_write_text(path, report.markdown)
    atomic_write_text(folder / f"{report.kind}-latest.md", report.markdown)
    return path
