"""The side-by-side verdict (`reconciler.sidebyside.judge`): a table of canaries and stables."""

from __future__ import annotations

import math
import random

import pytest

from reconciler.model import Outcome
from reconciler.sidebyside import (
    BaselineRule,
    CompareRule,
    Judgement,
    Sample,
    SideStats,
    compare_verdict,
    judge,
    judge_baseline,
    lower_beyond,
    slower_beyond,
    success_requests,
)

P50, P95 = 0.120, 0.300


def lognormal(n: int, seed: int, scale: float = 1.0) -> tuple[float, ...]:
    """`n` latencies shaped like the emulator's (p50 120 ms, p95 300 ms), reproducibly."""
    rng = random.Random(seed)
    sigma = math.log(P95 / P50) / 1.6449
    return tuple(scale * P50 * math.exp(sigma * rng.gauss(0, 1)) for _ in range(n))


def ok(latencies: tuple[float, ...], failed: int = 0) -> Sample:
    """Every answered request passed, plus `failed` requests that did not."""
    return Sample(len(latencies) + failed, len(latencies), latencies)


# The case: identical revisions whose 10-request p95s read 358 ms against 171 ms.
NOISY_CANARY = (0.09, 0.1, 0.11, 0.12, 0.13, 0.14, 0.15, 0.16, 0.2, 0.45)
NOISY_STABLE = (0.08, 0.1, 0.11, 0.12, 0.125, 0.13, 0.14, 0.15, 0.16, 0.18)

# p50 unchanged, the slowest tenth 5x slower: the U test barely moves, the tail test sees it.
TAIL = tuple(x * 5 if i % 10 == 0 else x for i, x in enumerate(lognormal(100, 1)))

VERDICTS = [
    ("identical-3", ok(lognormal(3, 1)), ok(lognormal(3, 2)), Outcome.INCONCLUSIVE),
    ("three-maxima-apart", ok((0.1, 0.1, 0.9)), ok((0.1, 0.1, 0.2)), Outcome.INCONCLUSIVE),
    ("noisy-p95-10", ok(NOISY_CANARY), ok(NOISY_STABLE), Outcome.INCONCLUSIVE),
    ("identical-100", ok(lognormal(100, 3)), ok(lognormal(100, 4)), Outcome.PASS),
    ("canary-down-3", Sample(3, 0), ok(lognormal(3, 5)), Outcome.FAIL),
    ("canary-down-10", Sample(10, 0), ok(lognormal(10, 5)), Outcome.FAIL),
    ("two-more-failures-10", ok(lognormal(8, 6), 2), ok(lognormal(10, 7)), Outcome.INCONCLUSIVE),
    ("six-more-failures-10", ok(lognormal(4, 6), 6), ok(lognormal(10, 7)), Outcome.FAIL),
    ("ten-points-less-100", ok(lognormal(89, 8), 11), ok(lognormal(99, 9), 1), Outcome.FAIL),
    ("one-point-less-100", ok(lognormal(98, 8), 2), ok(lognormal(99, 9), 1), Outcome.PASS),
    ("both-down", Sample(10, 0), Sample(10, 0), Outcome.INCONCLUSIVE),
    ("no-requests", Sample(0, 0), ok(lognormal(10, 1)), Outcome.INCONCLUSIVE),
    ("ten-times-slower-5", ok(lognormal(5, 1, 10)), ok(lognormal(5, 2)), Outcome.FAIL),
    ("two-times-slower-4", ok(lognormal(4, 1, 2)), ok(lognormal(4, 2)), Outcome.INCONCLUSIVE),
    ("two-times-slower-100", ok(lognormal(100, 1, 2)), ok(lognormal(100, 2)), Outcome.FAIL),
    ("tail-only-slower-100", ok(TAIL), ok(lognormal(100, 2)), Outcome.FAIL),
    ("within-ratio-100", ok(lognormal(100, 1, 1.1)), ok(lognormal(100, 2)), Outcome.PASS),
    ("slower-but-tiny-100", ok((0.008,) * 100), ok((0.005,) * 100), Outcome.PASS),
    ("canary-better-100", ok(lognormal(100, 1, 0.5)), ok(lognormal(100, 2)), Outcome.PASS),
]


@pytest.mark.parametrize(
    ("canary", "stable", "outcome"), [v[1:] for v in VERDICTS], ids=[v[0] for v in VERDICTS]
)
def test_verdict(canary: Sample, stable: Sample, outcome: Outcome) -> None:
    got = judge(canary, stable, CompareRule())
    assert got.outcome is outcome, got.reasons
    assert bool(got.reasons) == (outcome is not Outcome.PASS)
    assert (got.needed is not None) == (
        outcome is Outcome.INCONCLUSIVE
        and bool(canary.requests and stable.requests)
        and bool(canary.successes or stable.successes)
    )


def test_inconclusive_says_how_many_requests_would_decide() -> None:
    got = judge(ok(NOISY_CANARY), ok(NOISY_STABLE))
    assert got == Judgement(
        Outcome.INCONCLUSIVE,
        (
            "10 answered requests per side are too few to tell; about 65 per side would "
            "detect a canary 10 points less successful or clearly slower beyond the margin",
        ),
        65,
        got.success_interval,
        got.latency_p,
    )


def test_fail_reasons_read_well() -> None:
    got = judge(ok(lognormal(4, 1, 10), 6), ok(lognormal(10, 2)))
    assert got.outcome is Outcome.FAIL
    assert got.reasons[0] == (
        "success 40% on canary vs 100% on stable: lower by more than 2% at 95% confidence "
        "(difference -83% to -20%)"
    )
    assert got.reasons[1].startswith(
        "canary slower than 1.2x and 20ms over stable at 95% confidence (p95 "
    )
    assert got.reasons[1].endswith("p=0.002)")  # twice 1 in C(14, 4)


def test_names_label_the_sides() -> None:
    got = judge(Sample(10, 0), ok(lognormal(10, 5)), names=("bench", "baseline"))
    assert got.reasons[0].startswith("success 0% on bench vs 100% on baseline")


def test_compare_verdict_reads_side_stats() -> None:
    def side(sample: Sample) -> SideStats:
        return SideStats("x", "http://h", sample.requests, sample.successes, {}, None, None,
                         latencies=sample.latencies)  # fmt: skip

    outcome, reasons = compare_verdict(side(Sample(10, 0)), side(ok(lognormal(10, 5))))
    assert outcome is Outcome.FAIL and reasons[0].startswith("success 0% on canary")


@pytest.mark.parametrize(
    "fields",
    [
        {"success_margin": -0.01},
        {"success_margin": 0.10},
        {"latency_ratio": 0.9},
        {"latency_slack": -1.0},
        {"confidence": 1.0},
    ],
    ids=["negative-margin", "margin-at-the-sized-drop", "ratio-below-1", "negative-slack", "100%"],
)
def test_rule_refuses_nonsense(fields: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        CompareRule(**fields)


def test_margin_is_exactly_the_null_boundary() -> None:
    # A canary exactly at max(ratio * y, y + slack) of each stable value is "no worse by the
    # margin": brought back, it equals the stable, so the test sees no difference at all.
    stable = lognormal(30, 9)
    boundary = [max(1.2 * y, y + 0.02) for y in stable]
    assert slower_beyond(boundary, stable, 1.2, 0.02) == 1.0
    assert slower_beyond([x * 1.01 for x in boundary], stable, 1.2, 0.02) < 1.0


def test_lower_beyond_for_values_where_higher_is_better() -> None:
    baseline = [0.9, 0.88, 0.91, 0.87, 0.9]
    assert lower_beyond([0.5, 0.52, 0.48, 0.5, 0.51], baseline, 0.05) < 0.01
    assert lower_beyond([0.86, 0.87, 0.88, 0.85, 0.86], baseline, 0.05) > 0.1


@pytest.mark.parametrize(
    ("rate", "needed"), [(1.0, 65), (0.99, 78), (0.9, 143)], ids=["100%", "99%", "90%"]
)
def test_success_requests(rate: float, needed: int) -> None:
    assert success_requests(rate, 0.02, 0.95) == needed


BASE = ok((10.0, 10.5, 11.0, 10.2, 10.8))
CONF = (0.85, 0.86, 0.84, 0.85, 0.87)
BASELINES = [
    ("same", BASE, CONF, Outcome.INCONCLUSIVE),
    ("slower", ok((14.0, 14.5, 15.0, 14.2, 14.8)), CONF, Outcome.FAIL),
    ("less-confident", BASE, (0.7, 0.71, 0.69, 0.7, 0.72), Outcome.FAIL),
    ("a-little-less-confident", BASE, (0.83, 0.84, 0.82, 0.83, 0.85), Outcome.INCONCLUSIVE),
    ("no-confidence", BASE, (), Outcome.INCONCLUSIVE),
    ("all-down", Sample(5, 0), CONF, Outcome.FAIL),
]


@pytest.mark.parametrize(
    ("bench", "confidences", "outcome"),
    [b[1:] for b in BASELINES],
    ids=[b[0] for b in BASELINES],
)
def test_baseline_verdict(bench: Sample, confidences: tuple[float, ...], outcome: Outcome) -> None:
    got = judge_baseline(bench, BASE, BaselineRule(), (confidences, CONF))
    assert got.outcome is outcome, got.reasons


def test_baseline_confidence_reason() -> None:
    got = judge_baseline(BASE, BASE, BaselineRule(), ((0.7,) * 5, CONF))
    assert got.reasons == (
        "confidence 0.70 vs baseline 0.85: lower by more than 0.05 at 95% confidence (p=0.0036)",
    )
