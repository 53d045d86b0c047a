"""The anytime-valid stream test: table rows, then its guarantee checked by simulation."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta

import pytest

from reconciler.sequential import (
    LATENCY_TAIL,
    SEGMENT_NORM,
    Evidence,
    Tally,
    judge_stream,
    log_evidence,
    lower_bound,
    observe,
    segment_alpha,
    upper_bound,
)
from reconciler.spec import ErrorRateGate, Gates, LatencyGate, VsStableGate

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
MAX5 = Gates(error_rate=ErrorRateGate(max=0.05))
DELTA2 = Gates(vs_stable=VsStableGate(error_rate_delta=0.02))
BOTH = Gates(error_rate=ErrorRateGate(max=0.05), vs_stable=VsStableGate(error_rate_delta=0.02))
LAT20 = Gates(latency_p95=LatencyGate(max=20.0))
ALL = Gates(error_rate=ErrorRateGate(max=0.05), latency_p95=LatencyGate(max=20.0))


NONE = Tally()


def evidence(canary: Tally, stable: Tally = NONE) -> Evidence:
    return observe(Evidence(), canary, stable, T0)


@pytest.mark.parametrize(
    ("gates", "canary", "stable", "fail", "words"),
    [
        (MAX5, Tally(0, 0), Tally(), False, ""),
        (MAX5, Tally(10, 3), Tally(), False, ""),  # 30% on 10 requests: not enough yet
        (MAX5, Tally(60, 18), Tally(), True, "error_rate above 5%"),
        (MAX5, Tally(100, 6), Tally(), False, ""),  # 6% on 100: consistent with <= 5%
        (MAX5, Tally(10_000, 700), Tally(), True, "at least"),
        (MAX5, Tally(100_000, 500), Tally(), False, ""),  # a good canary, however long
        (MAX5, Tally(5, 5), Tally(), True, "5 of 5 requests failed"),
        (Gates(), Tally(100, 100), Tally(), False, ""),  # no error gate: never fails
        (DELTA2, Tally(200, 30), Tally(2000, 10), True, "above stable"),
        (DELTA2, Tally(200, 30), Tally(2000, 300), False, ""),  # stable as bad: no breach
        (DELTA2, Tally(200, 30), Tally(0, 0), False, ""),  # no stable traffic: no comparison
        (BOTH, Tally(1000, 60), Tally(5000, 5), True, "above stable"),  # 6%: max unsure
        (Gates(error_rate=ErrorRateGate(max=0.0)), Tally(1000, 1), Tally(), True, "above 0%"),
        (Gates(error_rate=ErrorRateGate(max=1.0)), Tally(10, 10), Tally(), False, ""),
        (LAT20, Tally(60, 0, 20), Tally(), True, "latency_p95 above 20s"),
        (LAT20, Tally(60, 0, 20), Tally(), True, "20 of 60 requests slower"),
        (LAT20, Tally(100, 0, 6), Tally(), False, ""),  # 6% slower: p95 may still be <= 20s
        (LAT20, Tally(100_000, 0, 1000), Tally(), False, ""),  # 1% slower, however long
        (LAT20, Tally(60, 60, 0), Tally(), False, ""),  # errors are not slow requests
        (MAX5, Tally(60, 0, 60), Tally(), False, ""),  # no latency gate: slowness not judged
        (ALL, Tally(60, 1, 30), Tally(), True, "latency_p95 above 20s"),
        (ALL, Tally(60, 18, 30), Tally(), True, "error_rate above 5%"),  # errors said first
    ],
    ids=[
        "no-data",
        "too-few",
        "clear-breach",
        "near-limit",
        "large-breach",
        "good-long",
        "all-fail",
        "no-gate",
        "vs-stable-breach",
        "vs-stable-both-bad",
        "vs-stable-no-stable",
        "both-gates-vs-stable-decides",
        "limit-zero",
        "limit-hundred",
        "latency-breach",
        "latency-breach-counts",
        "latency-near-limit",
        "latency-good-long",
        "latency-errors-not-slow",
        "latency-no-gate",
        "both-latency-decides",
        "both-errors-first",
    ],
)
def test_judge_stream(gates: Gates, canary: Tally, stable: Tally, fail: bool, words: str) -> None:
    verdict = judge_stream(evidence(canary, stable), gates)
    assert verdict.fail is fail
    assert words in verdict.reason


@pytest.mark.parametrize(
    ("steps", "segments", "numbers"),
    [(0, 1, [1]), (1, 2, [1, 2]), (5, 6, [1, 2, 3, 4, 5, 6])],
    ids=["first", "second", "full"],
)
def test_observe_restarts_segments(steps: int, segments: int, numbers: list[int]) -> None:
    ev = Evidence()
    for m in range(steps + 1):  # one batch per restart (10 s)
        ev = observe(ev, Tally(10, 1), Tally(), T0 + timedelta(seconds=10 * m))
    assert len(ev.segments) == segments
    assert [s.number for s in ev.segments] == numbers
    assert ev.segments[0].canary == Tally(10 * (steps + 1), steps + 1)
    assert ev.segments[-1].canary == Tally(10, 1)


def test_kept_segments_cover_every_age_of_a_day() -> None:
    # 24 h of 5 s batches: a bounded number of segments, always the first, and for a breach
    # any time ago one that started before it with at most a few times its age of old traffic.
    ev, now = Evidence(), T0
    for b in range(24 * 720):
        now = T0 + timedelta(seconds=5 * (b + 1))
        ev = observe(ev, Tally(2, 0), Tally(1, 0), now)
        assert len(ev.segments) <= 20
        if b % 97 == 0:
            ages = [(now - seg.start).total_seconds() for seg in ev.segments[1:]]
            for ago in (30, 60, 300, 3600, 6 * 3600):
                if (now - T0).total_seconds() >= 4 * ago:
                    assert any(ago <= age <= 4 * ago for age in ages), (b, ago, ages)
    first = ev.segments[0]
    assert (first.number, first.start, first.canary) == (1, T0 + timedelta(seconds=5), Tally(34560))
    last = ev.segments[-1]
    assert last.canary == Tally(2 * int((now - last.start).total_seconds() / 5 + 1))
    assert last.stable == Tally(int((now - last.start).total_seconds() / 5 + 1))


def test_late_breach_is_not_diluted_by_old_good_traffic() -> None:
    ev = Evidence()
    for m in range(12 * 60):  # 12 good hours at 100 requests a minute
        ev = observe(ev, Tally(100, 0), Tally(), T0 + timedelta(minutes=m))
    assert not judge_stream(ev, MAX5).fail
    at = T0 + timedelta(hours=12)
    for s in range(0, 180, 5):  # then 30% errors, batches every 5 s
        ev = observe(ev, Tally(8, 3), Tally(), at + timedelta(seconds=s))
        if judge_stream(ev, MAX5).fail:
            break
    assert judge_stream(ev, MAX5).fail
    assert s < 120


def test_segment_alphas_sum_to_at_most_alpha() -> None:
    # The first 10^6 shares plus a bound of the rest (the tail of 1/(n ln^2 n) is below
    # 1/ln N): never more than alpha, and not much less (alpha is not wasted).
    n = 1_000_000
    total = math.fsum(segment_alpha(0.01, j) for j in range(1, n + 1))
    rest = 0.01 / SEGMENT_NORM / math.log(n + 1)
    assert 0.0099 < total + rest <= 0.01
    assert segment_alpha(0.01, 1) > segment_alpha(0.01, 2) > segment_alpha(0.01, 8640) > 0


@pytest.mark.parametrize(
    ("tally", "low", "high"),
    [(Tally(0, 0), 0.0, 1.0), (Tally(1000, 100), 0.06, 0.16), (Tally(1000, 0), 0.0, 0.01)],
    ids=["nothing", "ten-percent", "no-errors"],
)
def test_bounds_bracket_the_rate(tally: Tally, low: float, high: float) -> None:
    lo, hi = lower_bound(tally, 0.01), upper_bound(tally, 0.01)
    assert lo <= tally.errors / max(tally.requests, 1) <= hi or tally.requests == 0
    assert lo >= low * 0.999 or lo == 0.0
    assert hi <= high or tally.requests == 0


def test_log_evidence_grows_with_errors_and_falls_with_successes() -> None:
    assert log_evidence(Tally(100, 20), 0.05) > log_evidence(Tally(100, 10), 0.05)
    assert log_evidence(Tally(200, 10), 0.05) < log_evidence(Tally(100, 10), 0.05)
    assert log_evidence(Tally(10, 1), 0.0) == math.inf


def test_false_alarms_under_continuous_looking_stay_below_alpha() -> None:
    # A canary exactly at the limit (the worst case for the guarantee), looked at after every
    # request: the share of runs that ever say FAIL must stay near or below alpha.
    rng = random.Random(7)
    runs, fails = 300, 0
    for _ in range(runs):
        k = 0
        for n in range(1, 2001):
            if rng.random() < 0.05:
                k += 1
                if log_evidence(Tally(n, k), 0.05) >= math.log(1 / 0.05):
                    fails += 1
                    break
    assert fails / runs <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / runs)


def test_latency_false_alarms_under_continuous_looking_stay_below_alpha() -> None:
    # A canary whose p95 is exactly at max (5% of requests slower, the worst case for the
    # guarantee), judged by judge_stream after every request: the share of runs that ever say
    # FAIL must stay near or below alpha.
    rng = random.Random(11)
    runs, fails, alpha = 300, 0, 0.05
    start = Evidence()
    for _ in range(runs):
        ev = start
        for _ in range(2000):
            slow = int(rng.random() < LATENCY_TAIL)
            ev = observe(ev, Tally(1, 0, slow), NONE, T0, restart=timedelta(days=1))
            if slow and judge_stream(ev, LAT20, alpha).fail:
                fails += 1
                break
    assert fails / runs <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / runs)


def test_the_latency_test_only_ever_fails_or_waits() -> None:
    # A fast canary never earns a verdict of its own: promotion stays with the windowed gates.
    ev = evidence(Tally(100_000, 0, 0))
    verdict = judge_stream(ev, ALL)
    assert (verdict.fail, verdict.reason) == (False, "")
