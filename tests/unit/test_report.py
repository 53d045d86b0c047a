"""Stage reports (pure): marks, the decision, spans, span percentiles, well-formed markdown."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from reconciler.model import (
    GateResult,
    LatencyBucket,
    Outcome,
    Verdict,
    WindowStats,
)
from reconciler.probes import Baseline, BenchResult, BenchSample
from reconciler.report import (
    MAX_CHART_POINTS,
    Action,
    build_report,
    decide,
    mark,
    report_span,
    summarize,
)
from reconciler.spec import RolloutSpec
from reconciler.state import (
    Event,
    EventKind,
    Phase,
    ProbeRecord,
    ServiceStatus,
    append_metrics,
    metrics_path,
    read_metrics,
    read_status,
    with_windows,
    write_status,
)
from reconciler.stats import (
    bucket_percentile,
    buckets_from_counts,
    exponential_bounds,
    merge_buckets,
    percentile_from_buckets,
)
from tests.builders import status_at
from tests.refs import ION, ION_DIR

NOW = datetime(2026, 5, 3, 12, 0, tzinfo=UTC)
STABLE, CANARY = "ion-api-00041-abc", "ion-api-00042-xyz"
FIVE = timedelta(minutes=5)
TEN = timedelta(minutes=10)


def _spec(**changes: Any) -> RolloutSpec:
    data: dict[str, Any] = {
        "service": "ion-api",
        "project": "naeda-genesis",
        "region": "us-central1",
        "revisions": {"stable": STABLE, "canary": CANARY},
        "canary_percent": 5,
        "stages": [5, 10, 25, 50, 100],
        "bake": "24h",
        "gates": {
            "window": "5m",
            "min_requests": 100,
            "error_rate": {"max": "5%", "target": "1%"},
            "latency_p95": {"max": "20s", "target": "15s", "window": "10m"},
            "success_rate": {"min": "90%", "target": "95%"},
        },
        "probes": [{"name": "canary-health", "url": "{canary_url}/api/health"}],
    }
    data.update(changes)
    return RolloutSpec.model_validate(data)


def _gate(name: str, outcome: Outcome, target_met: bool | None = True) -> GateResult:
    return GateResult(
        name, outcome, 0.01, 0.05, 1000, f"{name} {outcome.value.lower()}", 0.01, target_met
    )


PASS = Verdict(
    Outcome.PASS,
    (_gate("error_rate", Outcome.PASS), _gate("latency_p95", Outcome.PASS)),
)


def _status(**changes: Any) -> ServiceStatus:
    base = {
        "generation": 3,
        "observed_generation": 3,
        "last_reconcile": NOW - timedelta(minutes=1),
        "verdict": PASS,
        "verdict_at": NOW - timedelta(minutes=1),
        "passing_since": NOW - timedelta(hours=25),
    }
    return status_at(5, NOW - timedelta(hours=30), **{**base, **changes})


def _window(
    revision: str,
    end: datetime,
    *,
    length: timedelta = FIVE,
    requests: int = 1000,
    errors: int = 5,
    p: tuple[float, float, float] | None = (0.1, 0.3, 0.5),
    buckets: tuple[LatencyBucket, ...] | None = None,
) -> WindowStats:
    return WindowStats(
        service="ion-api",
        revision=revision,
        start=end - length,
        end=end,
        requests=requests,
        errors=errors,
        successes=requests - errors,
        p50=None if p is None else p[0],
        p95=None if p is None else p[1],
        p99=None if p is None else p[2],
        latency_buckets=buckets,
    )


# --- marks ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "target", "threshold", "higher", "expected"),
    [
        (0.005, 0.01, 0.05, False, "✅"),
        (0.01, 0.01, 0.05, False, "✅"),
        (0.02, 0.01, 0.05, False, "⚠️"),
        (0.05, 0.01, 0.05, False, "⚠️"),
        (0.051, 0.01, 0.05, False, "❌"),
        (0.03, None, 0.05, False, "✅"),
        (0.06, None, 0.05, False, "❌"),
        (0.02, 0.01, None, False, "⚠️"),
        (0.99, 0.95, 0.90, True, "✅"),
        (0.95, 0.95, 0.90, True, "✅"),
        (0.92, 0.95, 0.90, True, "⚠️"),
        (0.90, 0.95, 0.90, True, "⚠️"),
        (0.89, 0.95, 0.90, True, "❌"),
        (None, 0.01, 0.05, False, ""),
        (0.5, None, None, False, ""),
    ],
    ids=[
        "err-under-target",
        "err-at-target",
        "err-over-target",
        "err-at-threshold-not-a-breach",
        "err-over-threshold",
        "err-no-target-within",
        "err-no-target-beyond",
        "err-no-threshold-missed",
        "success-over-target",
        "success-at-target",
        "success-under-target",
        "success-at-threshold",
        "success-under-threshold",
        "no-value",
        "nothing-to-compare",
    ],
)
def test_mark(
    value: float | None, target: float | None, threshold: float | None, higher: bool, expected: str
) -> None:
    assert mark(value, target=target, threshold=threshold, higher_is_better=higher) == expected


# --- the decision ---------------------------------------------------------------------------
FAIL = Verdict(
    Outcome.FAIL, (GateResult("error_rate", Outcome.FAIL, 0.07, 0.05, 900, "error_rate 7.0% > 5%"),)
)
INCONCLUSIVE = Verdict(
    Outcome.INCONCLUSIVE,
    (GateResult("error_rate", Outcome.INCONCLUSIVE, None, 0.05, 20, "error_rate low traffic"),),
)
MISSED = Verdict(Outcome.PASS, (_gate("error_rate", Outcome.PASS, target_met=False),))
CASES: list[tuple[str, dict[str, Any], dict[str, Any], Action, int | None, str]] = [
    ("pass-baked", {}, {}, Action.ADVANCE, 10, "passing for 1d 1h >= bake 24h"),
    ("pass-baking", {"passing_since": NOW - timedelta(hours=3)}, {}, Action.HOLD, None, "21h left"),
    ("pass-no-passing-since-uses-stage", {"passing_since": None}, {}, Action.ADVANCE, 10, "bake"),
    (
        "pass-at-100-finalize",
        {"stage": 100},
        {"canary_percent": 100},
        Action.ADVANCE,
        None,
        "finalize",
    ),
    ("fail", {"verdict": FAIL}, {}, Action.ROLL_BACK, None, "error_rate 7.0% > 5%"),
    ("inconclusive", {"verdict": INCONCLUSIVE}, {}, Action.HOLD, None, "low traffic"),
    ("target-missed", {"verdict": MISSED}, {}, Action.HOLD, None, "target missed"),
    ("no-verdict", {"verdict": None}, {}, Action.HOLD, None, "no verdict yet"),
    (
        "no-canary",
        {"canary_revision": None, "phase": Phase.STABLE},
        {},
        Action.HOLD,
        None,
        "no canary",
    ),
    ("promoted", {"phase": Phase.PROMOTED}, {}, Action.ADVANCE, None, "promoted"),
    (
        "rolled-back",
        {"phase": Phase.ROLLED_BACK, "verdict": FAIL},
        {
            "canary_percent": 0,
            "rolled_back": {"revision": CANARY, "at": "2026-05-03T11:00:00Z", "reason": "boom"},
        },
        Action.ROLL_BACK,
        None,
        "rolled back: boom",
    ),
]


@pytest.mark.parametrize(
    ("status_changes", "spec_changes", "action", "next_stage", "why"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_decide(
    status_changes: dict[str, Any],
    spec_changes: dict[str, Any],
    action: Action,
    next_stage: int | None,
    why: str,
) -> None:
    decision = decide(_spec(**spec_changes), _status(**status_changes), None, now=NOW)
    assert decision.action is action
    assert decision.next_stage == next_stage
    assert any(why in r for r in decision.reasons), decision.reasons


@pytest.mark.parametrize(
    ("errors", "p95", "action", "why"),
    [
        (5, 0.3, Action.ADVANCE, "all gates pass"),
        (80, 0.3, Action.HOLD, "error rate over the span 8.0% > rollback threshold 5%"),
        (5, 25.0, Action.HOLD, "P95 over the span 25.00s > rollback threshold 20s"),
        (20, 0.3, Action.HOLD, "error rate over the span 2.0% misses the target 1%"),
    ],
    ids=["within", "span-error-rate-beyond", "span-p95-beyond", "span-target-missed"],
)
def test_decide_holds_on_a_span_breach_the_judge_has_not_failed(
    errors: int, p95: float, action: Action, why: str
) -> None:
    windows = [_window(CANARY, NOW, errors=errors, p=(0.1, p95, p95))]
    canary = summarize(CANARY, "canary", windows, FIVE)
    decision = decide(_spec(), _status(), canary, now=NOW)
    assert decision.action is action
    assert any(why in r for r in decision.reasons), decision.reasons


def test_decide_without_a_rollout_file_holds_on_an_unknown_bake() -> None:
    decision = decide(None, _status(), None, now=NOW)
    assert decision.action is Action.HOLD
    assert "bake time is unknown" in decision.reasons[0]


@pytest.mark.parametrize(
    ("action", "go"),
    [(Action.ADVANCE, "GO"), (Action.HOLD, "NO-GO for now"), (Action.ROLL_BACK, "NO-GO")],
    ids=["advance", "hold", "roll-back"],
)
def test_final_report_says_go_or_no_go(action: Action, go: str) -> None:
    status = {
        Action.ADVANCE: _status(),
        Action.HOLD: _status(verdict=INCONCLUSIVE),
        Action.ROLL_BACK: _status(verdict=FAIL),
    }[action]
    report = build_report("final", status=status, now=NOW, spec=_spec())
    assert report.decision.action is action
    assert f"**Go/no-go: {go}** ({action.value})" in report.markdown


# --- spans ----------------------------------------------------------------------------------
EVENTS = [
    Event(NOW - timedelta(days=9), EventKind.APPLIED, "reconciler", "old=100", "older=100"),
    Event(NOW - timedelta(days=2), EventKind.APPLIED, "reconciler", f"{STABLE}=100", f"{CANARY}=5"),
    Event(NOW - timedelta(hours=1), EventKind.ADVANCED, "reconciler", "5", "10"),
]


@pytest.mark.parametrize(
    ("kind", "since", "events", "windows", "stage_since", "start", "basis"),
    [
        ("interim", None, EVENTS, [], None, NOW - timedelta(hours=24), "the last 24h"),
        ("interim", timedelta(hours=6), EVENTS, [], None, NOW - timedelta(hours=6), "--since"),
        ("final", None, EVENTS, [], None, NOW - timedelta(days=2), "canary's first event"),
        ("final", timedelta(days=7), EVENTS, [], None, NOW - timedelta(days=7), "--since"),
        (
            "final",
            None,
            [],
            [_window(CANARY, NOW - timedelta(hours=5)), _window(STABLE, NOW - timedelta(days=4))],
            None,
            NOW - timedelta(hours=5) - FIVE,
            "canary's first window",
        ),
        ("final", None, [], [], NOW - timedelta(hours=3), NOW - timedelta(hours=3), "stage"),
        ("final", None, [], [], None, NOW - timedelta(hours=24), "no canary event"),
    ],
    ids=[
        "interim-24h",
        "interim-since",
        "final-first-canary-event",
        "final-since",
        "final-first-window",
        "final-stage-since",
        "final-nothing",
    ],
)
def test_report_span(
    kind: Any,
    since: timedelta | None,
    events: list[Event],
    windows: list[WindowStats],
    stage_since: datetime | None,
    start: datetime,
    basis: str,
) -> None:
    span = report_span(
        kind,
        now=NOW,
        canary=CANARY,
        events=events,
        windows=windows,
        stage_since=stage_since,
        since=since,
    )
    assert (span.start, span.end) == (start, NOW)
    assert basis in span.basis


# --- distributions and span percentiles -----------------------------------------------------
BOUNDS = exponential_bounds(40, 1.3, 1.0)  # ms


@pytest.mark.parametrize(
    "counts",
    [[0, 3, 0, 9, 1], [5], [0] * 12 + [7, 7], [1] * 42, [0, 0, 1]],
    ids=["gaps", "underflow-only", "two-buckets", "overflow", "single"],
)
@pytest.mark.parametrize("q", [0.0, 0.05, 0.5, 0.95, 0.99, 1.0], ids=lambda q: f"q{q}")
def test_sparse_buckets_give_the_dense_percentile(counts: list[int], q: float) -> None:
    sparse = buckets_from_counts(BOUNDS, counts)
    assert all(b.count > 0 for b in sparse)
    assert bucket_percentile(sparse, q) == pytest.approx(percentile_from_buckets(BOUNDS, counts, q))


def test_merge_buckets_sums_one_layout_and_refuses_two() -> None:
    a = buckets_from_counts(BOUNDS, [0, 2, 0, 1])
    b = buckets_from_counts(BOUNDS, [0, 1, 4])
    merged = merge_buckets([a, b])
    assert merged == buckets_from_counts(BOUNDS, [0, 3, 4, 1])
    other = buckets_from_counts([1.5, 2.5], [0, 1])
    assert merge_buckets([a, other]) is None
    assert merge_buckets([]) == ()


def test_span_percentiles_merge_distributions_not_per_window_values() -> None:
    # One fast busy window and one slow quiet one: averaging p95s would be far off.
    fast = buckets_from_counts(BOUNDS, [0, 0, 0, 0, 900, 100], scale=0.001)
    slow = buckets_from_counts(BOUNDS, [0] * 30 + [10], scale=0.001)
    windows = [
        _window(CANARY, NOW - FIVE, requests=1000, buckets=fast, p=(0.003, 0.004, 0.004)),
        _window(CANARY, NOW, requests=10, buckets=slow, p=(0.5, 0.5, 0.5)),
    ]
    s = summarize(CANARY, "canary", windows, FIVE)
    merged = merge_buckets([fast, slow])
    assert merged is not None
    assert s.method == "merged"
    assert (s.p50, s.p95, s.p99) == (
        bucket_percentile(merged, 0.5),
        bucket_percentile(merged, 0.95),
        bucket_percentile(merged, 0.99),
    )
    assert s.requests == 1010 and s.errors == 10 and s.windows == 2


def test_span_percentiles_fall_back_to_the_request_weighted_view() -> None:
    fast = buckets_from_counts(BOUNDS, [0, 0, 0, 0, 10], scale=0.001)
    windows = [
        _window(CANARY, NOW - FIVE, requests=300, buckets=fast, p=(0.1, 0.2, 0.3)),
        _window(CANARY, NOW, requests=100, buckets=None, p=(0.5, 0.6, 0.7)),
    ]
    s = summarize(CANARY, "canary", windows, FIVE)
    assert s.method == "weighted"
    assert s.p95 == pytest.approx((0.2 * 300 + 0.6 * 100) / 400)
    report = build_report("interim", status=_status(), now=NOW, spec=_spec(), windows=windows)
    assert "request-weighted means of the per-window percentiles" in report.markdown


def test_summary_counts_one_window_length_only() -> None:
    windows = [
        _window(CANARY, NOW - FIVE),
        _window(CANARY, NOW),
        _window(CANARY, NOW, length=TEN, requests=2000, errors=10),
    ]
    s = summarize(CANARY, "canary", windows, FIVE)
    assert (s.windows, s.requests, s.window) == (2, 2000, FIVE)
    only_ten = summarize(CANARY, "canary", windows[2:], FIVE)
    assert (only_ten.windows, only_ten.window) == (1, TEN)


def test_summary_without_windows_is_no_data() -> None:
    s = summarize(CANARY, "canary", [], FIVE)
    assert (s.requests, s.error_rate, s.p95, s.method) == (0, None, None, "none")


# --- the distribution in state files --------------------------------------------------------
def test_metrics_lines_keep_the_distribution_and_old_lines_still_read(tmp_path: Path) -> None:
    buckets = buckets_from_counts(BOUNDS, [0, 2, 0, 5, 1], scale=0.001)
    w = _window(CANARY, NOW, buckets=buckets)
    old = _window(STABLE, NOW)
    append_metrics(tmp_path, ION, [w, old])
    text = metrics_path(tmp_path, ION, NOW).read_text()
    # One distribution (Cloud Monitoring's exponential layout: `g`); none writes no key.
    assert text.count('"g":') == 1 and '"b":' not in text
    # Bounds are kept to 10 significant digits (no float noise), counts exactly.
    kept = tuple(replace(b, lower=round(b.lower, 9), upper=b.upper and round(b.upper, 9))
                 for b in buckets)  # fmt: skip
    assert read_metrics(tmp_path, ION) == sorted(
        [replace(w, latency_buckets=kept), old], key=lambda s: s.revision
    )
    # status.yaml's windows serve the judge: no distribution there (nor p50 and p99, which
    # it never reads), so it stays small.
    write_status(tmp_path, ION, with_windows(_status(), [w]))
    assert "latency_buckets" not in (tmp_path / ION_DIR / "status.yaml").read_text()
    back = read_status(tmp_path, ION)
    expected = replace(w, latency_buckets=None, p50=None, p99=None)
    assert back is not None and back.windows == (expected,)


# --- markdown -------------------------------------------------------------------------------
def _mermaid_blocks(markdown: str) -> list[list[str]]:
    return [
        block.strip().splitlines() for block in re.findall(r"```mermaid\n(.*?)```", markdown, re.S)
    ]


def _check_xychart(lines: list[str]) -> list[list[float]]:
    """Assert an xychart-beta block is well-formed; return its line series."""
    assert re.fullmatch(r"%%\{init: \{.*\}\}%%", lines[0]), lines[0]  # the line colours
    assert lines[1] == "xychart-beta"
    title = re.fullmatch(r'    title "([^"]*)"', lines[2])
    assert title, lines[2]
    xaxis = re.fullmatch(r"    x-axis \[(.*)\]", lines[3])
    assert xaxis, lines[3]
    labels = re.findall(r'"([^"]*)"', xaxis.group(1))
    assert labels and xaxis.group(1) == ", ".join(f'"{x}"' for x in labels)
    yaxis = re.fullmatch(r'    y-axis "[^"]*" 0 --> ([0-9.]+)', lines[4])
    assert yaxis, lines[4]
    top = float(yaxis.group(1))
    series = []
    for line in lines[5:]:
        m = re.fullmatch(r"    line \[(.*)\]", line)
        assert m, line
        values = [float(v) for v in m.group(1).split(", ")]
        assert len(values) == len(labels)
        assert all(0 <= v <= top for v in values)
        series.append(values)
    assert 1 <= len(series) <= 3
    return series


def _check_tables(markdown: str) -> None:
    """Every table row has as many cells as its header (escaped pipes are not separators)."""
    width = None
    for line in markdown.splitlines():
        if not line.startswith("|"):
            width = None
            continue
        cells = len(re.split(r"(?<!\\)\|", line)) - 2
        if width is None:
            width = cells
        assert cells == width, line


def _busy(n: int, *, errors: int = 5) -> list[WindowStats]:
    out = []
    for i in range(n):
        end = NOW - FIVE * i
        out += [_window(CANARY, end, errors=errors), _window(STABLE, end, requests=19000, errors=0)]
        if i % 2 == 0:
            out.append(_window(CANARY, end, length=TEN, p=(0.1, 0.4 + i / 100, 0.9)))
    return out


def test_charts_are_well_formed_canary_and_stable_together() -> None:
    report = build_report("interim", status=_status(), now=NOW, spec=_spec(), windows=_busy(12))
    blocks = _mermaid_blocks(report.markdown)
    assert len(blocks) == 2
    errors, p95 = (_check_xychart(b) for b in blocks)
    # Canary 0.5%, stable 0%; the 5% threshold is far above the axis (0 to 0.6): not drawn.
    assert errors == [[0.5] * 12, [0.0] * 12]
    assert 'y-axis "Error rate (%)" 0 --> 0.6' in report.markdown
    assert "The rollback threshold, 5%, is above every value (axis up to 0.6%)." in report.markdown
    assert "Lines: 1. canary, 2. stable." in report.markdown
    # The latency gate's 10m windows: the stable revision has none of that length.
    assert len(p95) == 1 and len(p95[0]) == 6
    _check_tables(report.markdown)


def test_threshold_is_drawn_when_inside_the_axis() -> None:
    windows = [_window(CANARY, NOW - FIVE * i, errors=45) for i in range(4)]
    report = build_report("interim", status=_status(), now=NOW, spec=_spec(), windows=windows)
    errors, _ = (_check_xychart(b) for b in _mermaid_blocks(report.markdown))
    assert errors == [[4.5] * 4, [5.0] * 4]
    assert "Lines: 1. canary, 2. threshold. " in report.markdown
    assert "The threshold line: the rollback threshold, 5%." in report.markdown


def test_long_spans_group_windows_into_at_most_max_chart_points() -> None:
    report = build_report(
        "final",
        status=_status(),
        now=NOW,
        spec=_spec(),
        windows=_busy(200),
        since=timedelta(days=1),
    )
    for block in _mermaid_blocks(report.markdown):
        series = _check_xychart(block)
        assert len(series[0]) <= MAX_CHART_POINTS
    assert "each point is 5 windows, pooled over its windows" in report.markdown
    assert "the worst of its windows" in report.markdown


def test_chart_without_a_threshold_has_no_threshold_line() -> None:
    spec = _spec(gates={"window": "5m", "error_rate": {"max": "5%"}})
    report = build_report("interim", status=_status(), now=NOW, spec=spec, windows=_busy(3))
    errors, p95 = (_check_xychart(b) for b in _mermaid_blocks(report.markdown))
    assert len(errors) == 2 and len(p95) == 2  # no latency gate: the 5m windows, both revisions
    assert p95 == [[0.3] * 3, [0.3] * 3]
    assert "No rollback threshold configured." in report.markdown


@pytest.mark.parametrize("kind", ["interim", "final"])
@pytest.mark.parametrize("with_spec", [True, False], ids=["spec", "no-spec"])
def test_empty_state_says_no_data(kind: Any, with_spec: bool) -> None:
    status = _status(verdict=None, passing_since=None, stage_since=None)
    report = build_report(kind, status=status, now=NOW, spec=_spec() if with_spec else None)
    md = report.markdown
    assert "No data: no metric window recorded in the span." in md
    assert "No data: no canary window with requests in the span." in md
    assert "No data: no canary window with a measured P95 in the span." in md
    assert "No events in the span." in md
    assert "No baseline recorded" in md
    assert "No verdict recorded yet." in md
    assert _mermaid_blocks(md) == []
    _check_tables(md)
    assert report.decision.action is Action.HOLD


def test_report_sections_show_values_marks_probes_baseline_and_events() -> None:
    windows = [
        _window(CANARY, NOW, errors=20, p=(0.2, 16.0, 18.0)),
        _window(STABLE, NOW, requests=19000, errors=0),
    ]
    probes = (
        ProbeRecord("canary-health", True, NOW - timedelta(hours=2)),
        ProbeRecord("canary-health", False, NOW - timedelta(hours=1), "status 500 | boom"),
        ProbeRecord("canary-health", True, NOW - timedelta(minutes=5)),
        ProbeRecord("canary-health", False, NOW - timedelta(days=3), "outside the span"),
    )
    baseline = Baseline(
        "ion-api",
        NOW - timedelta(days=3),
        "stable",
        STABLE,
        (
            BenchResult(
                "chat-smoke",
                "http://x/chat",
                tuple(BenchSample(True, 200, 10.0 + i / 10, 0.85) for i in range(5)),
            ),
        ),
    )
    events = [
        *EVENTS,
        Event(NOW - timedelta(minutes=30), EventKind.PROBE_FAILED, "reconciler", reason="a|b\nc"),
    ]
    report = build_report(
        "interim",
        status=_status(probes=probes),
        now=NOW,
        spec=_spec(),
        windows=windows,
        events=events,
        baseline=baseline,
    )
    md = report.markdown
    _check_tables(md)
    assert "| error rate | 2.0% ⚠️ | 0.0% ✅ | ≤ 1% | > 5% |" in md
    assert "| success rate | 98.0% ✅ | 100.0% ✅ | ≥ 95% | < 90% |" in md
    assert "| P95 | 16.00s ⚠️ | 300ms ✅ | ≤ 15s | > 20s |" in md
    assert "| P99 | 18.00s | 500ms | – | – |" in md
    assert "the canary served 1,000 of 20,000 measured requests (5.0%)" in md
    assert (
        "| canary-health | 3 | 2 | 1 | ✅ 2026-05-03 11:55 UTC "
        "| 2026-05-03 11:00 UTC: status 500 \\| boom |" in md
    )
    assert "| chat-smoke | 5 | 100.0% |" in md
    assert "a\\|b c" in md  # a pipe and a newline in a reason do not break the table
    assert "old=100" not in md  # an event before the span
    assert "Stages: **5%** → 10% → 25% → 50% → 100%" in md
    # The latest verdict passes, but over the span the canary misses two targets.
    assert report.decision.action is Action.HOLD
    assert report.decision.reasons == (
        "error rate over the span 2.0% misses the target 1%",
        "P95 over the span 16.00s misses the target 15s",
    )


def test_a_gate_that_did_not_pass_is_listed_once() -> None:
    gate = GateResult(
        "error_rate", Outcome.INCONCLUSIVE, 0.03, 0.05, 50, "error_rate 3.0% straddles", 0.01, False
    )
    decision = decide(
        _spec(), _status(verdict=Verdict(Outcome.INCONCLUSIVE, (gate,))), None, now=NOW
    )
    assert decision.reasons == ("inconclusive: error_rate 3.0% straddles",)


def _bench(name: str, latencies: list[float]) -> BenchResult:
    return BenchResult(
        name, "http://x/", tuple(BenchSample(True, 200, lat, None) for lat in latencies)
    )


def test_baseline_compares_probe_runs_with_the_bench_of_the_same_check() -> None:
    # Like with like: canary probe runs of each check against that check's bench; a canary
    # whose all-traffic P95 is slower (16 s) does not mark the probe comparison.
    minutes = [NOW - timedelta(minutes=5 * i) for i in range(1, 11)]
    probes = (
        *(ProbeRecord("canary-health", True, at, latency=0.2 + i / 1000) for i, at in
          enumerate(minutes)),
        *(ProbeRecord("chat-smoke", False, at, "HTTP 500", latency=0.1) for at in minutes),
        ProbeRecord("slow", True, minutes[0], latency=3.0),
    )  # fmt: skip
    baseline = Baseline(
        "ion-api",
        NOW - timedelta(days=3),
        "stable",
        STABLE,
        (
            _bench("canary-health", [0.2 + i / 1000 for i in range(10)]),
            _bench("chat-smoke", [0.1] * 10),
            _bench("slow", [0.2] * 5),
        ),
    )
    windows = [_window(CANARY, NOW, p=(0.2, 16.0, 18.0)), _window(STABLE, NOW)]
    md = build_report(
        "interim", status=_status(probes=probes), now=NOW, spec=_spec(), windows=windows,
        baseline=baseline,
    ).markdown  # fmt: skip
    _check_tables(md)
    rows = {line.split(" | ")[0][2:]: line for line in md.splitlines() if line.startswith("| ")}
    assert rows["canary-health"].endswith("| 10 | 100.0% | 209ms | – INCONCLUSIVE |")
    assert (
        "| 10 | 0.0% | 100ms | ❌ FAIL: success 0% on canary vs 100% on baseline"
        in (rows["chat-smoke"])
    )
    assert rows["slow"].endswith("| 1 | 100.0% | 3.00s | – INCONCLUSIVE |")
    assert "compared with the canary probe runs of the same check" in md


# --- coverage, HELD and the provider's figures ---------------------------------------------------
def test_held_canary_is_said_in_the_decision() -> None:
    from reconciler.model import Streak

    spec = _spec(gates={"window": "5m", "min_requests": 100, "inconclusive_limit": 3,
                        "error_rate": {"max": "5%"}})  # fmt: skip
    quiet = Verdict(Outcome.INCONCLUSIVE, (_gate("error_rate", Outcome.INCONCLUSIVE, None),))
    status = _status(verdict=quiet, streaks={"error_rate": Streak(inconclusive=4)})
    report = build_report("interim", status=status, now=NOW, spec=spec)
    assert report.decision.action is Action.HOLD
    assert report.decision.held is not None and report.decision.held.startswith("HELD: ")
    assert report.decision.reasons[0] == report.decision.held
    assert "**HOLD** · ⏸️ **HELD**: too little traffic to judge" in report.markdown
    # Below the limit: an ordinary hold.
    calm = _status(verdict=quiet, streaks={"error_rate": Streak(inconclusive=2)})
    assert build_report("interim", status=calm, now=NOW, spec=spec).decision.held is None


def test_coverage_of_the_stage_is_in_the_header() -> None:
    from reconciler.model import Coverage

    status = _status(coverage=Coverage(1_176, 1_200))
    md = build_report("interim", status=status, now=NOW, spec=_spec()).markdown
    assert "| coverage | 98% (1,176 of 1,200 requests judged) at this stage, by the runs |" in md
    assert "| coverage |" not in build_report("interim", status=_status(), now=NOW).markdown


def test_provider_figures_say_how_much_the_runs_judged() -> None:
    from reconciler.report import Source

    windows = [_window(CANARY, NOW - FIVE * i, requests=100, errors=0) for i in range(3)]
    span_stats = {
        CANARY: WindowStats("ion-api", CANARY, NOW - timedelta(hours=24), NOW, 400, 4, 396,
                            p50=0.1, p95=0.3, p99=0.5),
        STABLE: WindowStats("ion-api", STABLE, NOW - timedelta(hours=24), NOW, 7_600, 8, 7_592,
                            p50=0.1, p95=0.2, p99=0.4),
    }  # fmt: skip
    report = build_report(
        "interim",
        status=_status(),
        now=NOW,
        spec=_spec(),
        windows=windows,
        source=Source("Prometheus at http://prometheus:9090", stats=span_stats),
    )
    assert report.canary is not None and report.canary.requests == 400
    assert report.canary.method == "span"
    md = report.markdown
    assert "| requests | 400 | 7,600 |" in md
    assert "computed by Prometheus at http://prometheus:9090 over the whole span" in md
    assert (
        "their recorded windows hold 300 of the 400 canary requests served in the span (75.0%)"
        in md
    )


def test_a_report_from_rolled_up_lines_matches_one_from_per_window_lines(tmp_path: Path) -> None:
    # 200 5-minute windows (across midnight), recorded once per window (older versions) or
    # rolled up at a record every 50 minutes: the same counts and percentiles.
    windows = [
        _window(
            rev,
            NOW - FIVE * k,
            requests=900 + 13 * k,
            errors=k % 7,
            buckets=buckets_from_counts(
                BOUNDS, [0, 0, k % 5, 40 + k, 30, 3 * (k % 4)], scale=0.001
            ),
        )
        for k in range(200)
        for rev in (CANARY, STABLE)
    ]
    per_window, rolled = tmp_path / "per-window", tmp_path / "rolled"
    for w in windows:
        append_metrics(per_window, ION, [w])
    ordered = sorted(windows, key=lambda w: w.end)
    for i in range(0, len(ordered), 20):  # a record every 10 windows of each revision
        append_metrics(rolled, ION, ordered[i : i + 20])
    files = list(metrics_path(rolled, ION, NOW).parent.iterdir())
    assert len(files) == 2 and sum(len(p.read_text().splitlines()) for p in files) == 40
    for revision in (CANARY, STABLE):
        old = summarize(revision, "canary", read_metrics(per_window, ION), FIVE)
        new = summarize(revision, "canary", read_metrics(rolled, ION), FIVE)
        counts = (new.requests, new.errors, new.successes)
        assert counts == (old.requests, old.errors, old.successes)
        assert (new.windows, new.window, new.method) == (200, FIVE, "merged")
        # The lines keep bucket bounds to 10 digits; within one bucket is the promise.
        for a, b in ((new.p50, old.p50), (new.p95, old.p95), (new.p99, old.p99)):
            assert a == pytest.approx(b, rel=1e-6)
    report = build_report(
        "final", status=_status(), now=NOW, spec=_spec(), windows=read_metrics(rolled, ION)
    )
    assert "| windows | 200 × 5m | 200 × 5m |" in report.markdown
    assert "rolled up" in report.markdown  # the charts say what a wide step is


def test_weighted_percentiles_survive_a_roll_up(tmp_path: Path) -> None:
    windows = [
        _window(CANARY, NOW - FIVE * k, requests=100 * (k + 1), p=(0.1 * k, 0.2 * k, 0.3 * k))
        for k in range(6)
    ]
    append_metrics(tmp_path, ION, windows)
    (line,) = read_metrics(tmp_path, ION)
    old, new = summarize(CANARY, "c", windows, FIVE), summarize(CANARY, "c", [line], FIVE)
    assert new.method == old.method == "weighted"
    assert new.p95 == pytest.approx(old.p95, abs=1e-4) and new.requests == old.requests
