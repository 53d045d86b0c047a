"""Small statistics the judge and the metrics providers share.

Pure: no I/O, no clock. Confidence intervals for rates (Wilson score, Newcombe's difference),
percentiles from a bucketed distribution (Cloud Monitoring `request_latencies`), and the
roll-up of consecutive windows into one (`roll_up`, for the metrics files).
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import replace
from statistics import NormalDist

from reconciler.model import LatencyBucket, WindowStats

Z95 = NormalDist().inv_cdf(0.975)
"""Two-sided 95% normal quantile (1.95996...)."""


def z_score(confidence: float) -> float:
    """The two-sided normal quantile for a confidence level: 0.95 -> 1.95996."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    return NormalDist().inv_cdf(0.5 + confidence / 2.0)


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion `successes / n`.

    Unlike the normal approximation it stays inside [0, 1] and is honest at 0 or n events
    and at small n, which is exactly where a canary's first windows live. Without samples
    the interval is the whole [0, 1]: nothing is known.
    """
    if n < 0 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n, got successes={successes}, n={n}")
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    z2 = z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2.0 * n)) / denom
    half = (z / denom) * math.sqrt(p * (1.0 - p) / n + z2 / (4.0 * n * n))
    # Rounding can push the bounds a hair past [0, 1] or past p itself at 0 or n events.
    return max(0.0, min(p, centre - half)), min(1.0, max(p, centre + half))


def difference_interval(x1: int, n1: int, x2: int, n2: int, z: float = Z95) -> tuple[float, float]:
    """Interval of `x1/n1 - x2/n2` from the two Wilson intervals (Newcombe's hybrid score).

    Accounts for both sample sizes: a small canary next to a large stable gets a wide
    interval, driven by the canary's uncertainty. Needs both n1 and n2 above zero.
    """
    if n1 <= 0 or n2 <= 0:
        raise ValueError(f"need samples on both sides, got n1={n1}, n2={n2}")
    p1, p2 = x1 / n1, x2 / n2
    l1, u1 = wilson_interval(x1, n1, z)
    l2, u2 = wilson_interval(x2, n2, z)
    d = p1 - p2
    return (
        d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2),
        d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2),
    )


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100) with linear interpolation between closest ranks.

    The same definition as `numpy.percentile`'s default; None for no values.
    """
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


# --- bucketed distributions ---------------------------------------------------------------
# Cloud Monitoring's layout: with bounds b[0] < ... < b[m-1] there are m + 1 buckets,
# bucket 0 = (-inf, b[0]) (underflow), bucket i = [b[i-1], b[i]), bucket m = [b[m-1], +inf)
# (overflow). Exponential and linear bucket options are expanded to such bounds.


def exponential_bounds(num_finite_buckets: int, growth_factor: float, scale: float) -> list[float]:
    """Bounds of Cloud Monitoring exponential buckets: `scale * growth_factor**i`, i = 0..N."""
    if num_finite_buckets < 1 or growth_factor <= 1.0 or scale <= 0.0:
        raise ValueError(
            "exponential buckets need num_finite_buckets >= 1, growth_factor > 1, scale > 0, "
            f"got {num_finite_buckets}, {growth_factor}, {scale}"
        )
    return [scale * growth_factor**i for i in range(num_finite_buckets + 1)]


def linear_bounds(num_finite_buckets: int, width: float, offset: float) -> list[float]:
    """Bounds of Cloud Monitoring linear buckets: `offset + width * i`, i = 0..N."""
    if num_finite_buckets < 1 or width <= 0.0:
        raise ValueError(
            f"linear buckets need num_finite_buckets >= 1 and width > 0, "
            f"got {num_finite_buckets}, {width}"
        )
    return [offset + width * i for i in range(num_finite_buckets + 1)]


def merge_counts(series: Iterable[Sequence[int]]) -> list[int]:
    """Sum bucket counts of distributions with the same bucket layout.

    Cloud Monitoring drops trailing zero buckets, so the sequences may differ in length;
    missing buckets count as zero.
    """
    out: list[int] = []
    for counts in series:
        if len(counts) > len(out):
            out.extend([0] * (len(counts) - len(out)))
        for i, c in enumerate(counts):
            out[i] += c
    return out


def percentile_from_buckets(
    bounds: Sequence[float], counts: Sequence[int], q: float
) -> float | None:
    """The `q`-quantile (0..1) of a bucketed distribution, None without samples.

    Interpolates linearly inside the bucket that holds the rank. The underflow bucket is
    taken to start at 0 when its upper bound is positive (latencies are never negative);
    a rank in the overflow bucket returns the last bound, the most the buckets can say:
    the true value is at least that.
    `counts` may be shorter than `len(bounds) + 1` (trailing zeros omitted).
    """
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile must be in [0, 1], got {q}")
    if not bounds:
        raise ValueError("need at least one bucket bound")
    if any(b <= a for a, b in itertools.pairwise(bounds)):
        raise ValueError("bucket bounds must be strictly increasing")
    if len(counts) > len(bounds) + 1:
        raise ValueError(
            f"{len(counts)} bucket counts for {len(bounds)} bounds (max {len(bounds) + 1})"
        )
    if any(c < 0 for c in counts):
        raise ValueError("bucket counts must not be negative")
    total = sum(counts)
    if total == 0:
        return None
    rank = q * total
    cumulative = 0
    for i, count in enumerate(counts):
        if count == 0 or cumulative + count < rank:
            cumulative += count
            continue
        if i == len(bounds):  # overflow bucket: no upper bound to interpolate towards
            return float(bounds[-1])
        upper = float(bounds[i])
        # The underflow bucket has no lower bound; latencies start at 0.
        lower = float(bounds[i - 1]) if i else min(0.0, upper)
        return lower + (upper - lower) * (rank - cumulative) / count
    # The last non-empty bucket brings `cumulative` to `total` >= `rank`, so the loop returns.
    raise AssertionError(f"rank {rank} beyond {total} samples")


def buckets_from_counts(
    bounds: Sequence[float], counts: Sequence[int], *, scale: float = 1.0
) -> tuple[LatencyBucket, ...]:
    """The non-empty buckets of a distribution in Cloud Monitoring's layout, as kept in
    `WindowStats.latency_buckets`; bounds are multiplied by `scale` (0.001: ms to seconds).

    Same conventions as `percentile_from_buckets`: the underflow bucket starts at 0, the
    overflow bucket has no upper bound.
    """
    if len(counts) > len(bounds) + 1:
        raise ValueError(
            f"{len(counts)} bucket counts for {len(bounds)} bounds (max {len(bounds) + 1})"
        )
    out = []
    for i, count in enumerate(counts):
        if count < 0:
            raise ValueError("bucket counts must not be negative")
        if count == 0:
            continue
        lower = float(bounds[i - 1]) if i else min(0.0, float(bounds[0]))
        upper = float(bounds[i]) * scale if i < len(bounds) else None
        out.append(LatencyBucket(lower * scale, upper, count))
    return tuple(out)


def merge_buckets(
    series: Iterable[Sequence[LatencyBucket]],
) -> tuple[LatencyBucket, ...] | None:
    """The sum of several distributions that share one bucket layout, ascending.

    None when the layouts differ (two distinct buckets overlap): such distributions cannot
    be added exactly, and an inexact merge would be a silent approximation.
    """
    counts: dict[tuple[float, float | None], int] = {}
    for buckets in series:
        for b in buckets:
            counts[(b.lower, b.upper)] = counts.get((b.lower, b.upper), 0) + b.count
    merged = sorted(
        (LatencyBucket(lo, hi, n) for (lo, hi), n in counts.items() if n > 0),
        key=lambda b: (b.lower, math.inf if b.upper is None else b.upper),
    )
    for a, b in itertools.pairwise(merged):
        if a.upper is None or a.upper > b.lower:
            return None
    return tuple(merged)


def bucket_percentile(buckets: Sequence[LatencyBucket], q: float) -> float | None:
    """The `q`-quantile (0..1) of non-empty ascending buckets, None without samples.

    Interpolates linearly inside the bucket that holds the rank `q * total`, as
    `percentile_from_buckets` does; a rank in the overflow bucket returns its lower bound.
    The true quantile lies in the same bucket, so the error is at most that bucket's width.
    """
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile must be in [0, 1], got {q}")
    total = sum(b.count for b in buckets)
    if total == 0:
        return None
    rank = q * total
    cumulative = 0
    for b in buckets:
        if b.count == 0 or cumulative + b.count < rank:
            cumulative += b.count
            continue
        if b.upper is None:
            return b.lower
        return b.lower + (b.upper - b.lower) * (rank - cumulative) / b.count
    raise AssertionError(f"rank {rank} beyond {total} samples")


# --- windows rolled up ------------------------------------------------------------------------
def roll_up(windows: Iterable[WindowStats]) -> list[WindowStats]:
    """Consecutive final windows of one revision and length summed into one, oldest first.

    A run of windows (each starting where the previous one ended, same revision and `step`)
    becomes one window from the first start to the last end: counts summed, latency
    distributions merged and P50/P95/P99 taken from the merged distribution (as a report
    merges windows, exact to the bucket), or, for windows without a distribution, the
    request-weighted mean of their percentiles (what a report falls back to). Windows that
    are not plain final evidence (provisional, incomplete, partial, gap) stay as they are,
    and so do windows whose distributions do not share one bucket layout.
    """
    out: list[WindowStats] = []
    runs: dict[tuple[str, object, bool], list[WindowStats]] = {}
    for w in sorted(windows, key=lambda w: (w.start, w.end, w.revision)):
        if w.provisional or w.incomplete is not None or w.span != "window":
            out.append(w)
            continue
        key = (w.revision, w.step, w.latency_buckets is not None)
        run = runs.get(key)
        if run and run[-1].end != w.start:
            out += _summed(run)
            run = None
        if run is None:
            runs[key] = run = []
        run.append(w)
    for run in runs.values():
        out += _summed(run)
    return sorted(out, key=lambda w: (w.end, w.revision, w.start))


def _summed(run: Sequence[WindowStats]) -> list[WindowStats]:
    """One window for a run of consecutive windows (the run itself if it cannot merge)."""
    if len(run) == 1:
        return list(run)
    first, last = run[0], run[-1]
    requests = sum(w.requests for w in run)
    buckets: tuple[LatencyBucket, ...] | None = None
    if first.latency_buckets is not None:
        buckets = merge_buckets(w.latency_buckets or () for w in run)
        if buckets is None:
            return list(run)
        p50, p95, p99 = (bucket_percentile(buckets, q) for q in (0.50, 0.95, 0.99))
    else:
        p50, p95, p99 = (
            _weighted([(getattr(w, name), w.requests) for w in run])
            for name in ("p50", "p95", "p99")
        )
    return [
        replace(
            first,
            end=last.end,
            requests=requests,
            errors=sum(w.errors for w in run),
            successes=sum(w.successes for w in run),
            p50=p50,
            p95=p95,
            p99=p99,
            latency_buckets=buckets,
            rolled=sum(w.rolled for w in run),
        )
    ]


def _weighted(pairs: Sequence[tuple[float | None, int]]) -> float | None:
    """The request-weighted mean of the values measured (None: none with requests)."""
    known = [(v, n) for v, n in pairs if v is not None and n > 0]
    total = sum(n for _, n in known)
    return sum(v * n for v, n in known) / total if total else None


# --- two samples: is one worse than the other? ----------------------------------------------
EXACT_U_MAX_PAIRS = 2500
"""Above this many pairs (m * n, e.g. 50 x 50) or with ties, the U test uses the normal
approximation; below it the exact distribution is cheap and the approximation is poor."""


def midranks(values: Sequence[float]) -> tuple[list[float], list[int]]:
    """Ranks (1-based, ties share their mean rank) of `values`, and the size of each tie group."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    groups: list[int] = []
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for k in range(start, end + 1):
            ranks[order[k]] = (start + end) / 2.0 + 1.0
        groups.append(end - start + 1)
        start = end + 1
    return ranks, groups


def u_statistic(x: Sequence[float], y: Sequence[float]) -> float:
    """Mann-Whitney U of `x`: pairs (xi, yj) with xi > yj, a tie counting one half."""
    ranks, _ = midranks([*x, *y])
    m = len(x)
    return sum(ranks[:m]) - m * (m + 1) / 2.0


@functools.cache
def u_null_counts(m: int, n: int) -> tuple[int, ...]:
    """How many of the C(m+n, m) equally likely orderings give U = 0, 1, ..., m*n.

    Without ties and under the null (both samples from one distribution) every ordering is
    equally likely; the counts are the coefficients of the Gaussian binomial
    prod_{i=1..m} (1 - q^(n+i)) / (1 - q^i), built here one factor at a time in integers.
    """
    if m < 0 or n < 0:
        raise ValueError(f"sample sizes must not be negative, got {m}, {n}")
    size = m * n + 1
    counts = [0] * size
    counts[0] = 1
    for i in range(1, m + 1):
        # Multiply by (1 - q^(n+i)), from the top so each coefficient is used before it changes.
        for k in range(size - 1, n + i - 1, -1):
            counts[k] -= counts[k - n - i]
        # Divide by (1 - q^i): the running sum with stride i.
        for k in range(i, size):
            counts[k] += counts[k - i]
    return tuple(counts)


def u_test_greater(x: Sequence[float], y: Sequence[float]) -> float:
    """One-sided p-value that `x` tends to be larger than `y` (Mann-Whitney U).

    Exact for small samples without ties; otherwise the normal approximation with tie
    correction and continuity correction. 1.0 when either sample is empty.
    """
    m, n = len(x), len(y)
    if m == 0 or n == 0:
        return 1.0
    ranks, groups = midranks([*x, *y])
    u = sum(ranks[:m]) - m * (m + 1) / 2.0
    if m * n <= EXACT_U_MAX_PAIRS and all(g == 1 for g in groups):
        counts = u_null_counts(m, n)
        at_least = sum(counts[math.ceil(u - 1e-9) :])
        return at_least / math.comb(m + n, m)
    total = m + n
    ties = sum(g**3 - g for g in groups)
    variance = m * n / 12.0 * ((total + 1) - ties / (total * (total - 1)))
    if variance <= 0:  # every value equal: no evidence either way
        return 1.0
    z = (u - m * n / 2.0 - 0.5) / math.sqrt(variance)
    return 1.0 - NormalDist().cdf(z)


def u_smallest_p(m: int, n: int) -> float:
    """The smallest one-sided p-value the U test can give with m and n samples (no ties)."""
    if m == 0 or n == 0:
        return 1.0
    return 1.0 / math.comb(m + n, m)


def rank_test_requests(alpha: float, power: float = 0.8, effect: float = 0.75) -> int:
    """Samples per side for a one-sided U test at `alpha` to reach `power` (Noether, 1987).

    `effect` is P(x > y) under the alternative: 0.75 means a value drawn from `x` is larger
    than one drawn from `y` three times in four. Equal sample sizes.
    """
    if not 0.5 < effect < 1.0:
        raise ValueError(f"effect must be in (0.5, 1), got {effect}")
    z = NormalDist().inv_cdf(1.0 - alpha) + NormalDist().inv_cdf(power)
    total = z * z / (3.0 * (effect - 0.5) ** 2)
    return max(1, math.ceil(total / 2.0))


def tail_test_greater(x: Sequence[float], y: Sequence[float], q: float = 0.9) -> float:
    """One-sided p-value that `x` has more values in the upper tail than `y` (exact).

    Mood's quantile test: count the values of `x` above the pooled `q`-quantile. When both
    samples come from one distribution every value is equally likely to be among those
    above it, so that count is hypergeometric, whatever the distribution. Where the U test
    sees the bulk, this sees the tail: a p95 that doubled while the median did not.
    1.0 when either sample is empty or nothing lies above the quantile.
    """
    if not 0.0 < q < 1.0:
        raise ValueError(f"quantile must be in (0, 1), got {q}")
    m, n = len(x), len(y)
    if m == 0 or n == 0:
        return 1.0
    pooled = sorted([*x, *y])
    total = m + n
    threshold = pooled[max(0, math.ceil(q * total) - 1)]
    above = sum(v > threshold for v in pooled)
    mine = sum(v > threshold for v in x)
    if above == 0:
        return 1.0
    at_least = sum(math.comb(m, k) * math.comb(n, above - k) for k in range(mine, above + 1))
    return at_least / math.comb(total, above)
