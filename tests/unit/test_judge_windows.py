"""Judging every request: fail fast on partial spans, provisional windows measured again,
catch-up after late runs with coverage, and the low-traffic HELD policy."""

from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from reconciler.decide import Decision, decide
from reconciler.gather import MAX_CATCHUP, SAMPLE_PERIOD, spans
from reconciler.model import Outcome, ServiceStatus, SpanKind, WindowStats
from reconciler.plan import Reason
from reconciler.state import read_status, write_status
from tests.refs import ION
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


# --- what status.yaml keeps of the stable revision ------------------------------------------
GATES = {"window": "5m", "min_requests": 100, "error_rate": {"max": "5%"}}
VS_STABLE = {**GATES, "vs_stable": {"error_rate_delta": "2%"}}


def _pair(i: int, canary_errors: int, stable_errors: int = 10) -> list[WindowStats]:
    start = T0 + i * FIVE
    return [
        stats(start, start + FIVE, 1000, canary_errors),
        stats(start, start + FIVE, 19000, stable_errors, revision=STABLE),
    ]


def _read_back(tmp_path: Path, status: ServiceStatus) -> ServiceStatus:
    """`status` as the next run reads it: written to status.yaml, read again."""
    write_status(tmp_path, ION, status)
    again = read_status(tmp_path, ION)
    assert again is not None
    return again


@pytest.mark.parametrize(
    "canary_errors",
    [[5, 5, 5], [5, 5, 80], [80, 80, 5], [5, 80, 80]],
    ids=["passing", "one-failing", "failing-then-passing", "failing-streak"],
)
def test_a_status_without_the_stable_windows_judges_the_next_run_alike(
    canary_errors: list[int], tmp_path: Path
) -> None:
    """Without a `vs_stable` gate status.yaml leaves the stable revision's windows out: the
    next run judges exactly as it would from the status in memory, also when it measures
    nothing new (the verdict then rests on the kept windows alone)."""
    spec = make_spec(gates={**GATES, "consecutive_failures": 3})
    status = status_at(AT_5)
    now = T0
    for i, errors in enumerate(canary_errors):
        now = T0 + (i + 1) * FIVE + LAG + SAMPLE_PERIOD
        status = tick(spec, status, now, _pair(i, errors)).status
    read = _read_back(tmp_path, status)
    assert {w.revision for w in read.windows} == {CANARY}  # the stable's were left out
    later = now + timedelta(minutes=1)  # no new whole window: judged on what was kept
    for_memory, for_read = tick(spec, status, later, []), tick(spec, read, later, [])
    assert for_read.verdict == for_memory.verdict
    assert for_read.plan == for_memory.plan


def test_a_vs_stable_gate_added_later_is_inconclusive_for_one_run_then_judged(
    tmp_path: Path,
) -> None:
    """status.yaml written without a `vs_stable` gate holds no stable window; a rollout file
    that adds the gate finds the kept canary window without its twin: INCONCLUSIVE until a
    newer window is measured (no stage advance, no rollback), then judged from it and its
    twin."""
    before, after = make_spec(gates=GATES), make_spec(gates=VS_STABLE, bake="5m")
    now = T0 + FIVE + LAG + SAMPLE_PERIOD
    status = _read_back(tmp_path, tick(before, status_at(AT_5), now, _pair(0, 5)).status)
    assert {w.revision for w in status.windows} == {CANARY}
    d = tick(after, status, now + timedelta(minutes=1), [])
    assert d.verdict is not None
    vs = next(g for g in d.verdict.gates if g.gate == "vs_stable")
    assert vs.outcome is Outcome.INCONCLUSIVE, vs.reason
    assert d.plan.reason not in (Reason.ROLLBACK, Reason.ADVANCE), d.plan.reason
    status = _read_back(tmp_path, d.status)
    # With the gate configured, the stable windows are kept from now on.
    now += FIVE
    d = tick(after, status, now, _pair(1, 5))
    assert d.verdict is not None
    vs = next(g for g in d.verdict.gates if g.gate == "vs_stable")
    assert vs.outcome is Outcome.PASS, vs.reason
    assert STABLE in {w.revision for w in _read_back(tmp_path, d.status).windows}
