"""Pure verdicts on two samples (canary against stable, a bench against its baseline).

FAIL only when a one-sided test rejects "the candidate is no worse than the reference by the
margin" at the stated confidence; INCONCLUSIVE when there are too few requests to tell, with
the number that would be needed; PASS otherwise. Point estimates (two p95s of ten requests,
two maxima of three) never decide: identical revisions would fail on noise.

- Success: Newcombe's interval of the difference of the two success rates; FAIL when its
  upper end lies below `-success_margin`.
- Latency: the candidate's latencies, each first brought back by the margin
  (`min(x / ratio, x - slack)`), against the reference's, by two exact-level tests at half
  the level each: a Mann-Whitney U test (exact for small samples) for the bulk and Mood's
  quantile test at p95 for the tail; FAIL when either says they are still slower.

The success test and the latency pair each run at one-sided level `(1 - confidence) / 2`,
so the chance that identical revisions FAIL is at most `1 - confidence`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from reconciler.model import Outcome
from reconciler.stats import (
    difference_interval,
    percentile,
    rank_test_requests,
    tail_test_greater,
    u_test_greater,
    z_score,
)

SUCCESS_DROP = 0.10
"""The success regression the request count is sized for: 10 points less successful."""
RANK_EFFECT = 0.75
"""The latency regression the request count is sized for: beyond the margin, a candidate
answer is slower than a reference answer 3 times in 4."""
TAIL_QUANTILE = 0.95
"""The latency tail test counts candidate answers above the pooled p95."""
POWER = 0.8
"""The share of such regressions that enough requests detect."""


@dataclass(frozen=True)
class Sample:
    """One side's raw outcomes: requests sent, how many passed, latencies of the answers."""

    requests: int
    successes: int
    latencies: tuple[float, ...] = ()

    @property
    def success_rate(self) -> float:
        """Share of requests that passed (0.0 without requests)."""
        return self.successes / self.requests if self.requests else 0.0


@dataclass(frozen=True)
class CompareRule:
    """How much worse than the reference the candidate may be before it is a regression.

    Worse on success: more than `success_margin` (a share) lower. Worse on latency: slower
    than `latency_ratio` times the reference *and* by more than `latency_slack` seconds (so
    8 ms against 5 ms is no regression). `confidence` is the level of the verdict.
    """

    success_margin: float = 0.02
    latency_ratio: float = 1.2
    latency_slack: float = 0.02
    confidence: float = 0.95

    def __post_init__(self) -> None:
        if not 0.0 <= self.success_margin < SUCCESS_DROP:
            raise ValueError(f"success_margin must be in [0, {SUCCESS_DROP}), got {self}")
        if self.latency_ratio < 1.0 or self.latency_slack < 0.0:
            raise ValueError(f"latency_ratio must be >= 1 and latency_slack >= 0, got {self}")
        if not 0.5 <= self.confidence < 1.0:
            raise ValueError(f"confidence must be in [0.5, 1), got {self}")

    @property
    def alpha(self) -> float:
        """The one-sided level of each test."""
        return (1.0 - self.confidence) / 2.0

    def describe(self) -> str:
        """The rule in one sentence."""
        return (
            f"FAIL only when, at {self.confidence:.0%} confidence, the canary's success rate "
            f"is more than {self.success_margin:.0%} below the stable's (Newcombe interval) or "
            f"its answers are slower than {self.latency_ratio:g}x and "
            f"{format_seconds(self.latency_slack)} over the stable's (Mann-Whitney U, Mood's "
            "p95 test); "
            "INCONCLUSIVE when too few requests to tell"
        )


@dataclass(frozen=True)
class Judgement:
    """The verdict of a side-by-side, with what it was computed from."""

    outcome: Outcome
    reasons: tuple[str, ...]
    """Why it failed, or why it is inconclusive; empty for PASS."""
    needed: int | None = None
    """Requests per side the verdict needs, when fewer were made (INCONCLUSIVE)."""
    success_interval: tuple[float, float] | None = None
    """Interval of candidate minus reference success rate, at the rule's confidence."""
    latency_p: float | None = None
    """One-sided p-value that the candidate is slower beyond the margin."""


def format_seconds(seconds: float) -> str:
    """`0.1234` -> `123ms`, `16.24` -> `16.2s`, `15.0` -> `15s`."""
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    return f"{seconds:.1f}".removesuffix(".0") + "s"


def brought_back(candidate: Sequence[float], ratio: float, slack: float) -> list[float]:
    """Each candidate value brought back by the margin: `min(x / ratio, x - slack)`.

    It exceeds a reference value `y` exactly when `x > max(ratio * y, y + slack)`. At the
    boundary of "no worse by the margin" the brought-back values are distributed like the
    reference, so the tests below keep their level.
    """
    return [min(x / ratio, x - slack) for x in candidate]


def slower_beyond(
    candidate: Sequence[float], reference: Sequence[float], ratio: float, slack: float
) -> float:
    """One-sided p-value that `candidate` is slower than `reference` beyond the margin.

    The smaller of two tests, each at half the level (Bonferroni): the U test for the bulk
    of the answers, Mood's quantile test at p95 for the tail; the returned p-value is
    doubled to keep the level of one test.
    """
    back = brought_back(candidate, ratio, slack)
    bulk = u_test_greater(back, reference)
    tail = tail_test_greater(back, reference, TAIL_QUANTILE)
    return min(1.0, 2.0 * min(bulk, tail))


def lower_beyond(candidate: Sequence[float], reference: Sequence[float], margin: float) -> float:
    """One-sided p-value that `candidate` values are lower than `reference` by over `margin`."""
    return u_test_greater(reference, [x + margin for x in candidate])


def success_requests(reference_rate: float, margin: float, confidence: float) -> int:
    """Requests per side for Newcombe's interval to show a drop of `SUCCESS_DROP` points.

    Sized on the expected counts (about even odds of detecting such a drop): the smallest
    n where a candidate `SUCCESS_DROP` below `reference_rate` has an interval upper end
    below `-margin`.
    """
    z = z_score(confidence)
    rate = max(reference_rate, SUCCESS_DROP)

    def detects(n: int) -> bool:
        ref = round(n * rate)
        cand = max(0, round(n * (rate - SUCCESS_DROP)))
        return difference_interval(cand, n, ref, n, z)[1] < -margin

    low, high = 1, 1
    while not detects(high):
        low, high = high + 1, high * 2
        if high > 1_000_000:
            return high
    while low < high:
        mid = (low + high) // 2
        low, high = (mid + 1, high) if not detects(mid) else (low, mid)
    return high


def judge(
    candidate: Sample,
    reference: Sample,
    rule: CompareRule = CompareRule(),
    names: tuple[str, str] = ("canary", "stable"),
) -> Judgement:
    """FAIL, INCONCLUSIVE or PASS for `candidate` against `reference` (see the module)."""
    mine, theirs = names
    if not candidate.requests or not reference.requests:
        return Judgement(Outcome.INCONCLUSIVE, (f"no requests to {mine} or {theirs}",))
    if not candidate.successes and not reference.successes:
        return Judgement(
            Outcome.INCONCLUSIVE,
            (f"neither {mine} nor {theirs} answered successfully",),
        )
    reasons: list[str] = []
    z = z_score(rule.confidence)
    interval = difference_interval(
        candidate.successes, candidate.requests, reference.successes, reference.requests, z
    )
    if interval[1] < -rule.success_margin:
        reasons.append(
            f"success {candidate.success_rate:.0%} on {mine} vs {reference.success_rate:.0%} "
            f"on {theirs}: lower by more than {rule.success_margin:.0%} at "
            f"{rule.confidence:.0%} confidence (difference {interval[0]:+.0%} to "
            f"{interval[1]:+.0%})"
        )
    p = None
    if candidate.latencies and reference.latencies:
        p = slower_beyond(
            candidate.latencies, reference.latencies, rule.latency_ratio, rule.latency_slack
        )
        if p < rule.alpha:
            reasons.append(
                f"{mine} slower than {rule.latency_ratio:g}x and "
                f"{format_seconds(rule.latency_slack)} over {theirs} at {rule.confidence:.0%} "
                f"confidence (p95 {_p95(candidate)} vs {_p95(reference)}, p={p:.2g})"
            )
    if reasons:
        return Judgement(Outcome.FAIL, tuple(reasons), None, interval, p)
    needed = max(
        success_requests(reference.success_rate, rule.success_margin, rule.confidence),
        rank_test_requests(rule.alpha, POWER, RANK_EFFECT),
    )
    have = min(
        candidate.requests, reference.requests, len(candidate.latencies), len(reference.latencies)
    )
    if have < needed:
        why = (
            f"{have} answered requests per side are too few to tell; about {needed} per side "
            f"would detect a {mine} {SUCCESS_DROP * 100:.0f} points less successful or "
            "clearly slower beyond the margin"
        )
        return Judgement(Outcome.INCONCLUSIVE, (why,), needed, interval, p)
    return Judgement(Outcome.PASS, (), None, interval, p)


def _p95(sample: Sample) -> str:
    value = percentile(sample.latencies, 95)
    return format_seconds(value) if value is not None else "-"


@dataclass(frozen=True)
class SideStats:
    """One side (canary or stable) of a side-by-side probe."""

    label: str
    url: str
    requests: int
    successes: int
    status_counts: Mapping[str, int]
    """`"200"` -> 9, `"no response"` -> 1."""
    p50: float | None
    p95: float | None
    failures: tuple[str, ...] = ()
    """Distinct failure reasons, most frequent first."""
    latencies: tuple[float, ...] = ()
    """Response times of the answered requests, in seconds, in the order sent."""

    @property
    def success_rate(self) -> float:
        """Share of requests that passed (0.0 without requests)."""
        return self.successes / self.requests if self.requests else 0.0

    @property
    def sample(self) -> Sample:
        """What the verdict is computed from."""
        return Sample(self.requests, self.successes, self.latencies)


@dataclass(frozen=True)
class Comparison:
    """The side-by-side probe of canary and stable, with its verdict."""

    method: str
    path: str
    canary: SideStats
    stable: SideStats
    outcome: Outcome
    reasons: tuple[str, ...]
    rule: CompareRule
    needed: int | None = None
    """Requests per side that would let an INCONCLUSIVE comparison decide."""


def compare_verdict(
    canary: SideStats, stable: SideStats, rule: CompareRule = CompareRule()
) -> tuple[Outcome, tuple[str, ...]]:
    """The verdict of a side-by-side probe under `rule`; reasons explain a non-PASS."""
    judgement = judge(canary.sample, stable.sample, rule)
    return judgement.outcome, judgement.reasons


@dataclass(frozen=True)
class BaselineRule(CompareRule):
    """How much worse than the kept baseline a new bench of the same check may be.

    The margins of `CompareRule`, plus: mean `confidence` (the model's answer field) lower
    by more than `confidence_margin` is a regression, tested like the latency (U test).
    """

    latency_slack: float = 0.1
    confidence_margin: float = 0.05

    def describe(self) -> str:
        """The rule in one sentence."""
        return (
            f"FAIL only when, at {self.confidence:.0%} confidence, the bench's success rate is "
            f"more than {self.success_margin:.0%} below the baseline's, its answers are slower "
            f"than {self.latency_ratio:g}x and {format_seconds(self.latency_slack)} over the "
            f"baseline's, or its confidence values lower by over {self.confidence_margin:g}"
        )


def judge_baseline(
    current: Sample,
    baseline: Sample,
    rule: BaselineRule = BaselineRule(),
    confidences: tuple[Sequence[float], Sequence[float]] = ((), ()),
    names: tuple[str, str] = ("bench", "baseline"),
) -> Judgement:
    """The verdict of a bench against the kept baseline of the same check.

    Like with like: the baseline's probe latencies against the bench's probe latencies, and
    `confidences` (the bench's, the baseline's) when both carried some.
    """
    got = judge(current, baseline, rule, names)
    now, then = confidences
    if not now or not then or (got.outcome is Outcome.INCONCLUSIVE and not got.needed):
        return got
    p = lower_beyond(now, then, rule.confidence_margin)
    if p >= rule.alpha:
        return got
    why = (
        f"confidence {sum(now) / len(now):.2f} vs {names[1]} {sum(then) / len(then):.2f}: lower "
        f"by more than {rule.confidence_margin:g} at {rule.confidence:.0%} confidence "
        f"(p={p:.2g})"
    )
    reasons = got.reasons if got.outcome is Outcome.FAIL else ()
    return Judgement(Outcome.FAIL, (*reasons, why), None, got.success_interval, got.latency_p)
