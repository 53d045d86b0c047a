"""Anytime-valid sequential tests of a canary's error rate and p95 latency from streamed
request outcomes.

Pure: counts in, a verdict out; `now` is an argument. The tests may be evaluated after every
request, forever, and still wrongly say FAIL for a canary within its gates (5xx rate at or
below `error_rate.max`, p95 latency at or below `latency_p95.max`) with probability at most
`alpha` (Ville's inequality applied to a mixture of likelihood ratios, a nonnegative
supermartingale under the null). They only ever say FAIL or "no evidence yet": promotion
stays with the windowed gates. docs/streaming.md explains them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache

from reconciler.spec import Gates, format_latency, format_percent

DEFAULT_ALPHA = 0.01
# A breach is diluted by at most this much healthy traffic in the segment that catches it.
DEFAULT_RESTART = timedelta(seconds=10)
DEFAULT_KEEP = 5
# Segment j is tested at alpha / (SEGMENT_NORM (j+1) ln^2(j+1)): shares that sum to at most
# alpha (SEGMENT_NORM bounds the sum over j >= 1 of 1/((j+1) ln^2(j+1)), 2.10974..., from
# above) and shrink slowly, so a breach in hour 12 pays about as much as with one segment a
# minute and 1/j^2 shares, while a breach in the first minute is judged by a segment that
# started at most 10 s before it.
SEGMENT_NORM = 2.1098
# `latency_p95.max` holds when at most 5% of requests are slower than it: the p95 is at or
# below a value exactly when the share of requests above that value is at most 1 - 0.95.
LATENCY_TAIL = 0.05
# Alternatives of the mixture, as multiples of the limit: a breach anywhere from a little
# above the limit to far above it is covered at the price of log(len) nats of evidence.
MIXTURE_RATIOS = (1.25, 1.5, 2.0, 3.0, 5.0, 10.0, 20.0)
# Candidate rates for the confidence bounds (vs stable): log-spaced from 0.001% to 50% and
# mirrored above 50%, so bounds near 0 and near 100% are equally fine (2.4% apart, relative).
_LOW = tuple(10 ** (-5 + (5 - math.log10(2)) * i / 200) for i in range(201))
_GRID = (*_LOW, *(1 - p for p in reversed(_LOW[:-1])))


@dataclass(frozen=True)
class Tally:
    """Requests, 5xx errors and requests slower than `latency_p95.max`, from the stream."""

    requests: int = 0
    errors: int = 0
    slow: int = 0

    def __add__(self, other: Tally) -> Tally:
        return Tally(
            self.requests + other.requests, self.errors + other.errors, self.slow + other.slow
        )

    def __sub__(self, other: Tally) -> Tally:
        return Tally(
            self.requests - other.requests, self.errors - other.errors, self.slow - other.slow
        )

    def slow_as_errors(self) -> Tally:
        """The slow requests in the errors' place: the latency test is the error test on
        "slower than max" against a limit of `LATENCY_TAIL`."""
        return Tally(self.requests, self.slow)


@dataclass(frozen=True)
class Segment:
    """Evidence gathered from `start` on; the `number`-th segment of this canary."""

    number: int
    start: datetime
    canary: Tally = Tally()
    stable: Tally = Tally()


@dataclass(frozen=True)
class _Start:
    """Where a segment starts: the canary's and stable's running totals at that moment."""

    number: int
    start: datetime
    canary: Tally
    stable: Tally


@dataclass(frozen=True)
class Evidence:
    """One canary's evidence: overlapping segments that restart every `restart`.

    Restarting lets a canary that turns bad late in a long stage be caught as fast as one that
    starts bad (old good traffic does not dilute new bad traffic); segment j is tested at its
    share of alpha (`segment_alpha`), so all segments together still err with probability
    <= alpha. Running totals and where each kept segment starts are stored, so a batch costs
    one addition however many segments are kept.
    """

    canary: Tally = Tally()
    stable: Tally = Tally()
    starts: tuple[_Start, ...] = ()
    opened: int = 0

    @property
    def segments(self) -> tuple[Segment, ...]:
        """The kept segments, oldest first, each with its counts since its start."""
        return tuple(
            Segment(s.number, s.start, self.canary - s.canary, self.stable - s.stable)
            for s in self.starts
        )


@dataclass(frozen=True)
class StreamVerdict:
    """FAIL with a reason, or no evidence yet (never PASS)."""

    fail: bool
    reason: str = ""
    segment: Segment | None = None


NO_EVIDENCE = StreamVerdict(False)


def segment_alpha(alpha: float, number: int) -> float:
    """The share of `alpha` spent on segment `number` (1-based); the shares sum to at most
    alpha."""
    return alpha / (SEGMENT_NORM * (number + 1) * math.log(number + 1) ** 2)


def observe(
    ev: Evidence,
    canary: Tally,
    stable: Tally,
    now: datetime,
    *,
    restart: timedelta = DEFAULT_RESTART,
    keep: int = DEFAULT_KEEP,
) -> Evidence:
    """Add one batch of outcomes to every live segment, opening a new segment first when the
    last one is `restart` old. Keeps the first segment, the newest `keep`, and the oldest of
    each doubling of age (`restart` x 1, 2, 4, ...), so a slow breach still has a segment
    about as old as itself; dropping a segment only gives up evidence, so the guarantee
    holds."""
    starts, opened = ev.starts, ev.opened
    if not starts or now - starts[-1].start >= restart:
        opened += 1
        starts = _kept((*starts, _Start(opened, now, ev.canary, ev.stable)), now, restart, keep)
    return Evidence(ev.canary + canary, ev.stable + stable, starts, opened)


def _kept(
    starts: tuple[_Start, ...], now: datetime, restart: timedelta, keep: int
) -> tuple[_Start, ...]:
    first, rest = starts[0], starts[1:]
    oldest: dict[int, _Start] = {}
    for s in rest:  # oldest first: the first one seen in a band is its oldest
        # floor(log2(age / restart)), 0 below one restart: the age's doubling band.
        band = max(0, ((now - s.start) // restart).bit_length() - 1)
        oldest.setdefault(band, s)
    chosen = {s.number for s in oldest.values()} | {s.number for s in rest[-keep:]}
    return (first, *(s for s in rest if s.number in chosen))


@lru_cache(maxsize=4096)
def _slopes(limit: float) -> tuple[tuple[float, float], ...]:
    """Per alternative p1: (log(p1/limit), log((1-p1)/(1-limit))), the log likelihood ratio
    of one error and of one success."""
    alts = sorted({min(limit * r, (1.0 + limit) / 2) for r in MIXTURE_RATIOS})
    return tuple((math.log(p1 / limit), math.log((1 - p1) / (1 - limit))) for p1 in alts)


def log_evidence(t: Tally, limit: float) -> float:
    """Log of the mixture likelihood ratio against "the error rate is at most `limit`".

    Each alternative p1 > limit gives a likelihood ratio whose expectation is at most 1 for
    every true rate <= limit; their average is the mixture. +inf when `limit` is 0 and an error
    was seen; -inf when `limit` >= 1 (nothing can exceed it).
    """
    if limit >= 1.0:
        return -math.inf
    if limit <= 0.0:
        return math.inf if t.errors else 0.0
    ok = t.requests - t.errors
    logs = [t.errors * a + ok * b for a, b in _slopes(limit)]
    top = max(logs)
    return top + math.log(sum(math.exp(x - top) for x in logs) / len(logs))


def lower_bound(t: Tally, alpha: float) -> float:
    """Anytime-valid lower confidence bound of the error rate: with probability >= 1 - alpha
    the true rate stays above it at every moment of the stream."""
    threshold = math.log(1 / alpha)
    # log_evidence falls as the limit rises (every term of the mixture does), so the rejected
    # limits are a prefix of the grid: find its end by bisection.
    lo, hi = 0, len(_GRID)
    while lo < hi:
        mid = (lo + hi) // 2
        if log_evidence(t, _GRID[mid]) >= threshold:
            lo = mid + 1
        else:
            hi = mid
    return _GRID[lo - 1] if lo else 0.0


def upper_bound(t: Tally, alpha: float) -> float:
    """Anytime-valid upper confidence bound of the error rate (the lower bound of the
    success rate, mirrored)."""
    return 1.0 - lower_bound(Tally(t.requests, t.requests - t.errors), alpha)


def judge_stream(ev: Evidence, gates: Gates, alpha: float = DEFAULT_ALPHA) -> StreamVerdict:
    """FAIL when some segment shows, at its share of `alpha`, that the canary's 5xx rate is
    above `gates.error_rate.max`, or above stable's by more than `gates.vs_stable`, or that
    more than 5% of its requests are slower than `gates.latency_p95.max` (its p95 is above
    max). Each configured test gets an equal share of the segment's `alpha`."""
    limit = gates.error_rate.max if gates.error_rate else None
    delta = gates.vs_stable.error_rate_delta if gates.vs_stable else None
    slowest = gates.latency_p95.max if gates.latency_p95 else None
    tests = (limit is not None) + (delta is not None) + (slowest is not None)
    if tests == 0:
        return NO_EVIDENCE
    for seg in ev.segments:
        a = segment_alpha(alpha, seg.number) / tests
        c = seg.canary
        if limit is not None and log_evidence(c, limit) >= math.log(1 / a):
            low = lower_bound(c, a)
            seen = _seen(seg)
            return StreamVerdict(
                True,
                f"error_rate above {format_percent(limit)} (at least {_pct(low)}; {seen}; "
                f"anytime-valid, false alarm <= {format_percent(alpha)})",
                seg,
            )
        if delta is not None and seg.stable.requests:
            low, high = lower_bound(c, a / 2), upper_bound(seg.stable, a / 2)
            if low - high > delta:
                seen = _seen(seg)
                return StreamVerdict(
                    True,
                    f"error_rate more than {format_percent(delta)} above stable (at least "
                    f"{_pct(low)} vs at most {_pct(high)}; {seen}; anytime-valid, "
                    f"false alarm <= {format_percent(alpha)})",
                    seg,
                )
        slow = c.slow_as_errors()
        if slowest is not None and log_evidence(slow, LATENCY_TAIL) >= math.log(1 / a):
            low = lower_bound(slow, a)
            over = format_latency(slowest)
            return StreamVerdict(
                True,
                f"latency_p95 above {over} (at least {_pct(low)} of requests slower than "
                f"{over}, p95 allows {format_percent(LATENCY_TAIL)}; {c.slow} of "
                f"{c.requests} requests slower since {seg.start:%H:%M:%S}Z; anytime-valid, "
                f"false alarm <= {format_percent(alpha)})",
                seg,
            )
    return NO_EVIDENCE


def _seen(seg: Segment) -> str:
    c = seg.canary
    return f"{c.errors} of {c.requests} requests failed since {seg.start:%H:%M:%S}Z"


def _pct(rate: float) -> str:
    return f"{rate * 100:.2g}%"
