"""How often does `probe --compare` cry wolf, and how often does it catch a worse canary?

Simulates the side-by-side verdict (`reconciler.sidebyside.judge` with the default
`CompareRule`) on seeded draws shaped like the issue's emulator scenario: latencies
log-normal with p50 120 ms and p95 300 ms, and a stable that succeeds 99% of the time.

Canaries:
- identical: the same distribution as the stable;
- 2x slower: every latency doubled (p50 and p95 twice the stable's);
- slow tail: p50 unchanged, p95 twice the stable's (a wider spread);
- 10 points less successful: 89% against 99%.

The baseline, measured in the same run on the same draws, is the rule this replaced: two
point estimates compared (p95 over 1.5x the stable's and 100 ms slower, or a success rate
more than 10 points lower).

Run: `python benchmarks/compare_simulation.py [--runs N] [--seed S]`. Prints a markdown table
and one target line per target.
"""

from __future__ import annotations

import argparse
import math
import random
import time
from collections.abc import Callable
from statistics import NormalDist

from reconciler.model import Outcome
from reconciler.sidebyside import CompareRule, Sample, judge
from reconciler.stats import percentile, wilson_interval

P50, P95 = 0.120, 0.300
SIGMA = math.log(P95 / P50) / NormalDist().inv_cdf(0.95)
STABLE_SUCCESS = 0.99
SIZES = (3, 10, 30, 100, 300)


def draw(rng: random.Random, n: int, scale: float, sigma: float, success: float) -> Sample:
    """`n` requests: each passes with probability `success` and takes a log-normal time."""
    latencies = tuple(scale * P50 * math.exp(sigma * rng.gauss(0.0, 1.0)) for _ in range(n))
    successes = sum(rng.random() < success for _ in range(n))
    return Sample(n, successes, latencies)


# name -> (latency scale, log-normal sigma, success rate) of the canary
CANARIES: dict[str, tuple[float, float, float]] = {
    "identical": (1.0, SIGMA, STABLE_SUCCESS),
    "2x slower": (2.0, SIGMA, STABLE_SUCCESS),
    "slow tail (p95 2x)": (1.0, math.log(2 * P95 / P50) / NormalDist().inv_cdf(0.95), 0.99),
    "10 points less successful": (1.0, SIGMA, STABLE_SUCCESS - 0.10),
}


def old_rule(canary: Sample, stable: Sample) -> Outcome:
    """The point-estimate rule this replaced, kept here as the baseline."""
    if not canary.successes and not stable.successes:
        return Outcome.INCONCLUSIVE
    if canary.success_rate < stable.success_rate - 0.10 - 1e-9:
        return Outcome.FAIL
    c95, s95 = percentile(canary.latencies, 95), percentile(stable.latencies, 95)
    if c95 is not None and s95 is not None and c95 > 1.5 * s95 and c95 - s95 >= 0.1:
        return Outcome.FAIL
    return Outcome.PASS


def rates(
    canary: str, n: int, runs: int, seed: int, verdict: Callable[[Sample, Sample], Outcome]
) -> dict[Outcome, int]:
    rng = random.Random(f"{seed}-{canary}-{n}")
    scale, sigma, success = CANARIES[canary]
    counts = dict.fromkeys(Outcome, 0)
    for _ in range(runs):
        stable = draw(rng, n, 1.0, SIGMA, STABLE_SUCCESS)
        counts[verdict(draw(rng, n, scale, sigma, success), stable)] += 1
    return counts


def share(k: int, runs: int) -> str:
    return f"{k / runs:.1%}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2000, help="simulated comparisons per row")
    parser.add_argument("--seed", type=int, default=20261207)
    args = parser.parse_args()
    rule = CompareRule()
    started = time.perf_counter()
    print(f"rule: {rule.describe()}")
    print(
        f"stable: p50 {P50 * 1000:.0f}ms, p95 {P95 * 1000:.0f}ms (log-normal), success "
        f"{STABLE_SUCCESS:.0%}; {args.runs} simulated comparisons per row; seed {args.seed}"
    )
    print()
    print("| canary | requests per side | FAIL | INCONCLUSIVE | PASS | old rule: FAIL |")
    print("|---|---:|---:|---:|---:|---:|")
    fails: dict[tuple[str, int], int] = {}
    for canary in CANARIES:
        for n in SIZES:
            new = rates(canary, n, args.runs, args.seed, lambda c, s: judge(c, s, rule).outcome)
            old = rates(canary, n, args.runs, args.seed, old_rule)
            fails[(canary, n)] = new[Outcome.FAIL]
            print(
                f"| {canary} | {n} | {share(new[Outcome.FAIL], args.runs)} "
                f"| {share(new[Outcome.INCONCLUSIVE], args.runs)} "
                f"| {share(new[Outcome.PASS], args.runs)} "
                f"| {share(old[Outcome.FAIL], args.runs)} |"
            )
    print()
    for n in (3, 10, 100):
        k = fails[("identical", n)]
        upper = wilson_interval(k, args.runs)[1]
        met = "met" if upper <= 0.05 else "NOT met"
        print(
            f"target: identical revisions at {n} requests FAIL in at most 5% of runs: {met} "
            f"({share(k, args.runs)}, 95% upper bound {upper:.1%})"
        )
    for canary in ("2x slower", "10 points less successful"):
        k = fails[(canary, 100)]
        met = "met" if k > args.runs / 2 else "NOT met"
        print(
            f"target: a canary {canary} FAILs in most runs at 100 requests: {met} "
            f"({share(k, args.runs)})"
        )
    print(f"elapsed {time.perf_counter() - started:.1f}s")


if __name__ == "__main__":
    main()
