"""Confidence intervals and bucket percentiles (`reconciler.stats`)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reconciler.stats import (
    Z95,
    difference_interval,
    exponential_bounds,
    linear_bounds,
    merge_counts,
    percentile_from_buckets,
    wilson_interval,
    z_score,
)

Z2 = Z95 * Z95


# --- z ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("confidence", "z"),
    [(0.95, 1.959964), (0.99, 2.575829), (0.90, 1.644854), (0.6827, 1.0)],
    ids=["95%", "99%", "90%", "one-sigma"],
)
def test_z_score(confidence: float, z: float) -> None:
    assert z_score(confidence) == pytest.approx(z, abs=1e-4)


@pytest.mark.parametrize("confidence", [0.0, 1.0, -0.5, 95.0], ids=["0", "1", "negative", "95"])
def test_z_score_rejects_levels_outside_0_1(confidence: float) -> None:
    with pytest.raises(ValueError, match="confidence"):
        z_score(confidence)


# --- Wilson -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("x", "n", "lo", "hi"),
    [
        (0, 0, 0.0, 1.0),
        # closed forms at the edges: upper = z^2 / (n + z^2) at 0 events, mirrored at n
        (0, 100, 0.0, Z2 / (100 + Z2)),
        (100, 100, 100 / (100 + Z2), 1.0),
        (0, 10, 0.0, Z2 / (10 + Z2)),
        (50, 100, 0.403832, 0.596168),
        (1, 5, 0.036224, 0.624465),
        (80, 1000, 0.064748, 0.098466),
        (1, 100, 0.001767, 0.054486),
    ],
    ids=["no-samples", "0-of-100", "100-of-100", "0-of-10", "half", "1-of-5", "8pct-of-1000",
         "1-of-100"],
)  # fmt: skip
def test_wilson_interval(x: int, n: int, lo: float, hi: float) -> None:
    got = wilson_interval(x, n)
    assert got == pytest.approx((lo, hi), abs=1e-6)


@pytest.mark.parametrize(
    ("x", "n"), [(-1, 10), (11, 10), (0, -1)], ids=["negative-x", "x-over-n", "negative-n"]
)
def test_wilson_interval_rejects_impossible_counts(x: int, n: int) -> None:
    with pytest.raises(ValueError, match="successes"):
        wilson_interval(x, n)


@given(st.integers(0, 5000).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))))
def test_wilson_interval_contains_the_estimate_inside_0_1(xn: tuple[int, int]) -> None:
    x, n = xn
    lo, hi = wilson_interval(x, n)
    p = x / n if n else 0.5
    assert 0.0 <= lo <= p <= hi <= 1.0


@given(st.integers(1, 5000).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))))
def test_wilson_interval_mirrors_for_failures(xn: tuple[int, int]) -> None:
    x, n = xn
    lo, hi = wilson_interval(x, n)
    mlo, mhi = wilson_interval(n - x, n)
    assert (lo, hi) == pytest.approx((1 - mhi, 1 - mlo), abs=1e-12)


@given(st.integers(1, 2000), st.integers(0, 100))
def test_wilson_bounds_grow_with_events(n: int, pct: int) -> None:
    x = min(n - 1, n * pct // 100)
    lo1, hi1 = wilson_interval(x, n)
    lo2, hi2 = wilson_interval(x + 1, n)
    assert lo2 >= lo1
    assert hi2 >= hi1


@given(st.integers(1, 1000), st.integers(2, 50))
def test_wilson_interval_narrows_with_more_samples_at_the_same_rate(n: int, factor: int) -> None:
    x = n // 3
    lo1, hi1 = wilson_interval(x, n)
    lo2, hi2 = wilson_interval(x * factor, n * factor)
    assert hi2 - lo2 < hi1 - lo1


# --- difference of two rates (Newcombe) ---------------------------------------------------
@pytest.mark.parametrize(
    ("args", "lo", "hi"),
    [
        # Newcombe (1998), example (a): 56/70 - 48/80, hybrid score interval
        ((56, 70, 48, 80), 0.0524, 0.3339),
        ((70, 1000, 95, 19000), 0.050733, 0.082538),
        ((5, 1000, 95, 19000), -0.003069, 0.006713),
        ((0, 100, 0, 100), -0.036994, 0.036994),
    ],
    ids=["newcombe-example", "bad-canary", "good-canary", "both-zero"],
)
def test_difference_interval(args: tuple[int, int, int, int], lo: float, hi: float) -> None:
    assert difference_interval(*args) == pytest.approx((lo, hi), abs=1e-4)


@given(
    st.integers(1, 3000).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))),
    st.integers(1, 3000).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))),
)
def test_difference_interval_contains_the_difference_and_is_antisymmetric(
    a: tuple[int, int], b: tuple[int, int]
) -> None:
    lo, hi = difference_interval(*a, *b)
    assert lo <= a[0] / a[1] - b[0] / b[1] <= hi
    rlo, rhi = difference_interval(*b, *a)
    assert (lo, hi) == pytest.approx((-rhi, -rlo), abs=1e-12)


@pytest.mark.parametrize("args", [(0, 0, 1, 10), (1, 10, 0, 0)], ids=["no-canary", "no-stable"])
def test_difference_interval_needs_samples_on_both_sides(args: tuple[int, int, int, int]) -> None:
    with pytest.raises(ValueError, match="samples on both sides"):
        difference_interval(*args)


# --- bucket layouts -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("bounds", "want"),
    [
        (exponential_bounds(3, 2.0, 1.0), [1.0, 2.0, 4.0, 8.0]),
        (exponential_bounds(1, 1.5, 0.01), [0.01, 0.015]),
        (linear_bounds(2, 10.0, 5.0), [5.0, 15.0, 25.0]),
        (linear_bounds(3, 0.5, -1.0), [-1.0, -0.5, 0.0, 0.5]),
    ],
    ids=["exponential", "exponential-one-bucket", "linear", "linear-negative-offset"],
)
def test_bucket_bounds(bounds: list[float], want: list[float]) -> None:
    assert bounds == pytest.approx(want)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: exponential_bounds(0, 2.0, 1.0), "exponential"),
        (lambda: exponential_bounds(3, 1.0, 1.0), "growth_factor"),
        (lambda: exponential_bounds(3, 2.0, 0.0), "scale"),
        (lambda: linear_bounds(0, 1.0, 0.0), "linear"),
        (lambda: linear_bounds(3, 0.0, 0.0), "width"),
    ],
    ids=["exp-no-buckets", "exp-no-growth", "exp-zero-scale", "lin-no-buckets", "lin-zero-width"],
)
def test_bucket_bounds_reject_bad_options(make: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make()  # type: ignore[operator]


@pytest.mark.parametrize(
    ("series", "want"),
    [
        ([], []),
        ([[1, 2, 3]], [1, 2, 3]),
        ([[1, 2], [0, 0, 3], []], [1, 2, 3]),
        ([[0, 5, 1], [2]], [2, 5, 1]),
    ],
    ids=["none", "one", "truncated-trailing-zeros", "shorter-second"],
)
def test_merge_counts(series: list[list[int]], want: list[int]) -> None:
    assert merge_counts(series) == want


# --- percentiles --------------------------------------------------------------------------
# bounds [1, 2, 4] -> buckets (-inf,1) [1,2) [2,4) [4,+inf)
B = [1.0, 2.0, 4.0]


@pytest.mark.parametrize(
    ("bounds", "counts", "q", "want"),
    [
        (B, [0, 10, 0, 0], 0.5, 1.5),
        (B, [0, 10, 0, 0], 0.0, 1.0),
        (B, [0, 10, 0, 0], 1.0, 2.0),
        (B, [0, 10, 10, 0], 0.5, 2.0),
        (B, [0, 10, 10, 0], 0.75, 3.0),
        (B, [0, 10, 10, 0], 0.95, 3.8),
        (B, [0, 0, 10], 0.95, 3.9),
        (B, [10], 0.5, 0.5),
        ([-1.0, 1.0], [10, 0, 0], 0.5, -1.0),
        (B, [0, 0, 0, 5], 0.5, 4.0),
        (B, [0, 95, 0, 5], 0.99, 4.0),
        (B, [0, 95, 0, 5], 0.95, 2.0),
        (B, [], 0.95, None),
        (B, [0, 0, 0, 0], 0.5, None),
    ],
    ids=[
        "middle-of-one-bucket", "q0-lower-bound", "q1-upper-bound", "between-buckets",
        "interpolated", "p95", "truncated-counts", "underflow-from-zero",
        "underflow-negative-bound", "overflow-last-bound", "p99-in-overflow", "p95-before-overflow",
        "no-counts", "all-zero",
    ],
)  # fmt: skip
def test_percentile_from_buckets(
    bounds: list[float], counts: list[int], q: float, want: float | None
) -> None:
    got = percentile_from_buckets(bounds, counts, q)
    if want is None:
        assert got is None
    else:
        assert got == pytest.approx(want)


@pytest.mark.parametrize(
    ("bounds", "counts", "q", "match"),
    [
        (B, [1], 1.5, "quantile"),
        (B, [1], -0.1, "quantile"),
        ([], [1], 0.5, "at least one"),
        ([1.0, 1.0], [1], 0.5, "strictly increasing"),
        ([2.0, 1.0], [1], 0.5, "strictly increasing"),
        (B, [0, 0, 0, 0, 1], 0.5, "5 bucket counts for 3 bounds"),
        (B, [0, -1, 2], 0.5, "negative"),
    ],
    ids=["q-above-1", "q-below-0", "no-bounds", "flat-bounds", "decreasing-bounds",
         "too-many-counts", "negative-count"],
)  # fmt: skip
def test_percentile_from_buckets_rejects_bad_input(
    bounds: list[float], counts: list[int], q: float, match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        percentile_from_buckets(bounds, counts, q)


def test_percentile_of_a_cloud_run_like_exponential_layout() -> None:
    # bounds 1 ms * sqrt(2)^i; 900 requests in [128 ms, 181 ms), 100 in [2.90 s, 4.10 s)
    bounds = exponential_bounds(40, math.sqrt(2), 0.001)
    counts = [0] * (len(bounds) + 1)
    counts[15] = 900  # bucket 15 = [bounds[14], bounds[15])
    counts[24] = 100  # bucket 24 = [bounds[23], bounds[24])
    p50 = percentile_from_buckets(bounds, counts, 0.5)
    p95 = percentile_from_buckets(bounds, counts, 0.95)
    assert p50 == pytest.approx(bounds[14] + (bounds[15] - bounds[14]) * 500 / 900)
    assert p95 == pytest.approx(bounds[23] + (bounds[24] - bounds[23]) * 0.5)
    assert p95 == pytest.approx(3.5, abs=0.01)


_layouts = st.lists(st.integers(0, 50), min_size=1, max_size=12).filter(lambda c: sum(c) > 0)


@given(_layouts, st.floats(0, 1), st.floats(0, 1))
def test_percentile_is_monotone_in_q_and_stays_within_the_bounds(
    counts: list[int], q1: float, q2: float
) -> None:
    bounds = exponential_bounds(len(counts), 2.0, 0.01)
    lo_q, hi_q = sorted((q1, q2))
    a = percentile_from_buckets(bounds, counts, lo_q)
    b = percentile_from_buckets(bounds, counts, hi_q)
    assert a is not None and b is not None
    assert 0.0 <= a <= b <= bounds[-1]


@given(_layouts, st.floats(0, 1))
def test_percentile_lies_between_the_first_and_last_occupied_bucket(
    counts: list[int], q: float
) -> None:
    bounds = linear_bounds(max(1, len(counts) - 2), 1.0, 1.0)  # counts may reach overflow
    got = percentile_from_buckets(bounds, counts, q)
    occupied = [i for i, c in enumerate(counts) if c]
    lowest = 0.0 if occupied[0] == 0 else bounds[occupied[0] - 1]
    highest = bounds[min(occupied[-1], len(bounds) - 1)]
    assert got is not None and lowest <= got <= highest
