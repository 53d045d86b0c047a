"""Judging every request: fail fast on partial spans, provisional windows measured again,
catch-up after late runs with coverage, and the low-traffic HELD policy."""

from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from reconciler.decide import Decision, decide
from reconciler.gather import MAX_CATCHUP, SAMPLE_PERIOD, spans
from reconciler.model import Outcome, ServiceStatus, SpanKind, WindowStats
from reconciler.plan import Reason
from tests.unit.test_decide import AT_5, CANARY, STABLE, T0, make_spec, status_at

LAG = timedelta(minutes=3)
FIVE = timedelta(minutes=5)


def stats(
    start: datetime,
    end: datetime,
    requests: int,
    errors: int,
    *,
    revision: str = CANARY,
    span: SpanKind = "window",
    provisional: bool = False,
) -> WindowStats:
    return WindowStats(
        "ion-api",
        revision,
        start,
        end,
        requests,
        errors,
        requests - errors,
        p95=0.2,
        span=span,
        provisional=provisional,
    )


def tick(spec: Any, status: ServiceStatus, now: datetime, windows: list[WindowStats]) -> Decision:
    return decide(spec, status, AT_5, now=now, windows=windows)


# --- 1. fail fast, pass slowly ----------------------------------------------------------------
def test_a_blatant_failure_in_a_partial_span_rolls_back_on_the_first_run() -> None:
    """30% of 600 requests in the first minutes of a stage: no whole window yet, and two
    failing windows needed, but the partial span's interval lies wholly above 5%."""
    spec = make_spec()
    now = T0 + timedelta(minutes=7)
    partial = stats(T0, now - LAG, 600, 180, span="partial")
    d = tick(spec, status_at(AT_5), now, [partial])
    assert d.verdict is not None and d.verdict.outcome is Outcome.FAIL
    assert d.plan.reason is Reason.ROLLBACK
    assert "since the last judged window" in d.verdict.reasons[0]
    # Failing evidence only: never kept, never counted, never written to the metrics files.
    assert d.status.windows == () and d.added == ()


def test_a_healthy_partial_span_never_passes_a_gate() -> None:
    spec = make_spec()
    now = T0 + timedelta(minutes=7)
    partial = stats(T0, now - LAG, 600, 0, span="partial")
    d = tick(spec, status_at(AT_5), now, [partial])
    assert d.verdict is not None and d.verdict.outcome is Outcome.INCONCLUSIVE
    assert d.status.passing_since is None


def test_a_partial_span_below_min_requests_is_no_evidence() -> None:
    spec = make_spec()
    now = T0 + timedelta(minutes=7)
    partial = stats(T0, now - LAG, 50, 50, span="partial")
    d = tick(spec, status_at(AT_5), now, [partial])
    assert d.verdict is not None and d.verdict.outcome is Outcome.INCONCLUSIVE


# --- 3. provisional windows -------------------------------------------------------------------
def test_a_provisional_window_is_replaced_by_its_final_numbers_and_counted_once() -> None:
    spec = make_spec(gates={"window": "5m", "min_requests": 100, "error_rate": {"max": "5%"}})
    first = stats(T0, T0 + FIVE, 400, 40, provisional=True)
    d1 = tick(spec, status_at(AT_5), T0 + FIVE + LAG, [first])
    assert d1.added == ()  # not final: not written to the metrics files yet
    assert "error_rate" not in d1.status.streaks or d1.status.streaks["error_rate"].failures == 0
    assert d1.verdict is not None and "1 of 2 windows" in d1.verdict.reasons[0]

    # Late points arrive: the same window, measured again, final.
    final = stats(T0, T0 + FIVE, 1000, 100)
    d2 = tick(spec, d1.status, T0 + FIVE + LAG + SAMPLE_PERIOD, [final])
    assert [w.requests for w in d2.status.windows] == [1000]
    assert d2.added == (final,)
    assert d2.status.streaks["error_rate"].failures == 1

    # Measured again by a confused caller: still counted once, written once.
    d3 = tick(spec, d2.status, T0 + FIVE + LAG + 2 * SAMPLE_PERIOD, [final])
    assert d3.added == ()
    assert d3.status.streaks["error_rate"].failures == 1
    assert d3.status.coverage.judged == 1000


def test_spans_measure_kept_provisional_windows_again() -> None:
    spec = make_spec()
    kept = stats(T0, T0 + FIVE, 400, 4, provisional=True)
    status = status_at(AT_5, windows=(kept,))
    now = T0 + FIVE + LAG + SAMPLE_PERIOD
    assert (T0, T0 + FIVE, "window") in spans(spec, status, AT_5, now, LAG)


# --- 2. no unjudged traffic -------------------------------------------------------------------
def _served(start: datetime, end: datetime) -> int:
    """The canary serves 100 requests a minute, 1% failing."""
    return int((end - start) / timedelta(minutes=1)) * 100


def _run(spec: Any, status: ServiceStatus, now: datetime) -> Decision:
    """One run on a synthetic metrics source: measure what `spans` asks for, then decide."""
    windows = []
    for start, end, kind in spans(spec, status, AT_5, now, LAG):
        n = _served(start, end)
        provisional = end > now - LAG - SAMPLE_PERIOD
        for rev in (CANARY, STABLE):
            windows.append(stats(start, end, n, n // 100, revision=rev, span=kind,
                                 provisional=provisional))  # fmt: skip
    return tick(spec, status, now, windows)


def test_late_and_skipped_runs_leave_no_traffic_unjudged() -> None:
    spec = make_spec(bake="10h")
    status = status_at(AT_5)
    # Runs at +7m, then nothing for 40 minutes (skipped and late runs), then +49m, +53m.
    for minutes in (7, 49, 53):
        status = _run(spec, status, T0 + timedelta(minutes=minutes)).status
    canary = sorted((w for w in status.windows if w.revision == CANARY), key=lambda w: w.end)
    # Back to back from the stage start, no gap, no overlap.
    assert canary[0].start == T0
    assert all(a.end == b.start for a, b in itertools.pairwise(canary))
    final_end = max(w.end for w in canary if not w.provisional)
    assert status.coverage.served == _served(T0, final_end)
    assert status.coverage.share == 1.0
    assert status.coverage.describe().startswith("100% ")
    d = _run(spec, status, T0 + timedelta(minutes=54))
    assert any(n.startswith("coverage: 100% (") for n in d.plan.notes)  # status and plan


def test_catch_up_is_capped_and_the_rest_lowers_coverage() -> None:
    spec = make_spec(bake="10h")
    status = status_at(AT_5)
    now = T0 + FIVE * (MAX_CATCHUP + 4) + LAG + SAMPLE_PERIOD
    measured = spans(spec, status, AT_5, now, LAG)
    assert sum(1 for *_, kind in measured if kind == "window") == MAX_CATCHUP
    assert measured[0] == (T0, T0 + 4 * FIVE, "gap")
    d = _run(spec, status, now)
    assert d.status.coverage.judged == _served(T0, T0 + MAX_CATCHUP * FIVE)
    assert d.status.coverage.served == _served(T0, T0 + (MAX_CATCHUP + 4) * FIVE)
    assert d.status.coverage.share is not None and d.status.coverage.share < 1


# --- 6. low traffic -----------------------------------------------------------------------------
def test_inconclusive_windows_in_a_row_hold_the_service() -> None:
    gates = {"window": "5m", "min_requests": 100, "error_rate": {"max": "5%"}}
    spec = make_spec(gates={**gates, "inconclusive_limit": 3})
    status = status_at(AT_5)
    for i in range(3):
        start = T0 + i * FIVE
        d = tick(
            spec, status, start + FIVE + LAG + SAMPLE_PERIOD, [stats(start, start + FIVE, 20, 4)]
        )
        status = d.status
    assert status.streaks["error_rate"].inconclusive == 3
    assert any(w.startswith("HELD: error_rate inconclusive in 3 windows") for w in d.plan.warnings)
    # A judged window ends the hold.
    start = T0 + 3 * FIVE
    d = tick(spec, status, start + FIVE + LAG + SAMPLE_PERIOD, [stats(start, start + FIVE, 500, 0)])
    assert not any(w.startswith("HELD") for w in d.plan.warnings)
    # Without the setting nothing is held.
    plain = make_spec(gates=gates)
    d = tick(plain, replace(status, streaks={}), T0 + FIVE + LAG, [])
    assert not any(w.startswith("HELD") for w in d.plan.warnings)
