"""The Mann-Whitney U test of `reconciler.stats`: exact distribution, p-values, sample sizes.

The exact null distribution is checked against published critical values (two-sided 5%
tables: the largest U with P(U <= u) <= 2.5%) and against brute-force enumeration.
"""

from __future__ import annotations

import itertools
import math
import random

import pytest

from reconciler import stats
from reconciler.stats import (
    midranks,
    rank_test_requests,
    tail_test_greater,
    u_null_counts,
    u_smallest_p,
    u_statistic,
    u_test_greater,
)


@pytest.mark.parametrize(
    ("m", "n", "counts"),
    [
        (1, 1, (1, 1)),
        (2, 2, (1, 1, 2, 1, 1)),
        (3, 3, (1, 1, 2, 3, 3, 3, 3, 2, 1, 1)),
        (4, 4, (1, 1, 2, 3, 5, 5, 7, 7, 8, 7, 7, 5, 5, 3, 2, 1, 1)),
        (0, 5, (1,)),
    ],
    ids=["1x1", "2x2", "3x3", "4x4", "empty"],
)
def test_exact_distribution_small(m: int, n: int, counts: tuple[int, ...]) -> None:
    assert u_null_counts(m, n) == counts


@pytest.mark.parametrize(
    ("m", "n", "critical"),
    [(3, 7, 1), (5, 5, 2), (8, 12, 22), (10, 10, 23), (20, 20, 127)],
    ids=["3x7", "5x5", "8x12", "10x10", "20x20"],
)
def test_exact_distribution_matches_published_critical_values(
    m: int, n: int, critical: int
) -> None:
    counts = u_null_counts(m, n)
    total = math.comb(m + n, m)
    assert sum(counts) == total
    assert counts == counts[::-1]  # U and mn - U are equally likely
    assert sum(counts[: critical + 1]) / total <= 0.025 < sum(counts[: critical + 2]) / total


def test_exact_distribution_equals_enumeration() -> None:
    m, n = 4, 5
    seen = [0] * (m * n + 1)
    for chosen in itertools.combinations(range(m + n), m):
        x = list(chosen)
        y = [i for i in range(m + n) if i not in chosen]
        seen[int(u_statistic(x, y))] += 1
    assert tuple(seen) == u_null_counts(m, n)


@pytest.mark.parametrize(
    ("x", "y", "u"),
    [
        ([1, 2, 3], [1.5, 2.5], 3.0),
        ([5, 6], [1, 2, 3], 6.0),
        ([1, 2], [5, 6, 7], 0.0),
        ([2, 2], [2], 1.0),  # each tie counts one half
    ],
    ids=["interleaved", "all-above", "all-below", "ties"],
)
def test_u_statistic(x: list[float], y: list[float], u: float) -> None:
    assert u_statistic(x, y) == u


def test_midranks_share_ties() -> None:
    assert midranks([3.0, 1.0, 3.0, 2.0]) == ([3.5, 1.0, 3.5, 2.0], [1, 1, 2])


def test_exact_p_value_by_enumeration() -> None:
    x, y = [0.31, 0.52, 0.44], [0.12, 0.35, 0.2, 0.41]
    observed = u_statistic(x, y)
    pooled = x + y
    at_least = total = 0
    for chosen in itertools.combinations(range(7), 3):
        xs = [pooled[i] for i in chosen]
        ys = [pooled[i] for i in range(7) if i not in chosen]
        total += 1
        at_least += u_statistic(xs, ys) >= observed
    assert u_test_greater(x, y) == pytest.approx(at_least / total)


def test_complete_separation_gives_the_smallest_p() -> None:
    assert u_test_greater([4, 5, 6], [1, 2, 3]) == pytest.approx(1 / 20) == u_smallest_p(3, 3)
    assert u_test_greater([1, 2, 3], [4, 5, 6]) == 1.0


def test_normal_approximation_is_close_to_exact(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(3)
    x = [rng.gauss(0.3, 1) for _ in range(25)]
    y = [rng.gauss(0.0, 1) for _ in range(25)]
    exact = u_test_greater(x, y)
    monkeypatch.setattr(stats, "EXACT_U_MAX_PAIRS", 0)
    assert u_test_greater(x, y) == pytest.approx(exact, abs=0.005)


def test_ties_use_the_corrected_normal_approximation() -> None:
    assert u_test_greater([1, 1, 1], [1, 1, 1]) == 1.0  # no evidence at all
    # Ten canary answers at 2 ms against ten at 1 ms: the tie correction shrinks the
    # variance, so the (tied) separation is still significant.
    assert u_test_greater([0.002] * 10, [0.001] * 10) < 1e-4


def test_empty_side_gives_no_evidence() -> None:
    assert u_test_greater([], [1.0]) == 1.0 == u_smallest_p(0, 3)


@pytest.mark.parametrize(
    ("alpha", "power", "effect", "per_side"),
    [(0.025, 0.8, 0.75, 21), (0.05, 0.8, 0.75, 17), (0.025, 0.9, 0.75, 29), (0.025, 0.8, 0.9, 9)],
    ids=["default", "alpha-5%", "power-90%", "large-effect"],
)
def test_rank_test_requests(alpha: float, power: float, effect: float, per_side: int) -> None:
    assert rank_test_requests(alpha, power, effect) == per_side


def test_tail_test_counts_values_above_the_pooled_quantile() -> None:
    # Pooled p80 of ten values is 8; both values above it are x's: 1 way in C(10, 2).
    assert tail_test_greater([10, 11], [1, 2, 3, 4, 5, 6, 7, 8], 0.8) == pytest.approx(1 / 45)
    assert tail_test_greater([1, 2], [3, 4, 5, 6, 7, 8, 10, 11], 0.8) == 1.0
    assert tail_test_greater([], [1.0]) == 1.0
    assert tail_test_greater([1.0, 1.0], [1.0, 1.0]) == 1.0  # nothing above the quantile


def test_tail_test_by_enumeration() -> None:
    x, y = [0.9, 0.2, 0.75], [0.1, 0.3, 0.8, 0.4, 0.5]
    observed = tail_test_greater(x, y, 0.7)
    pooled = x + y
    threshold = sorted(pooled)[math.ceil(0.7 * 8) - 1]
    mine = sum(v > threshold for v in x)
    at_least = total = 0
    for chosen in itertools.combinations(range(8), 3):
        total += 1
        at_least += sum(pooled[i] > threshold for i in chosen) >= mine
    assert observed == pytest.approx(at_least / total)


def test_tail_test_sees_a_slow_tail_the_rank_test_misses() -> None:
    rng = random.Random(5)
    y = [rng.lognormvariate(0, 0.5) for _ in range(200)]
    x = [v * (6 if i % 10 == 0 else 1) for i, v in enumerate(rng.lognormvariate(0, 0.5)
                                                             for _ in range(200))]  # fmt: skip
    assert u_test_greater(x, y) > 0.05
    assert tail_test_greater(x, y, 0.95) < 0.001
