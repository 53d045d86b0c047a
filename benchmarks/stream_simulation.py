"""False and true rollbacks of the stream's anytime-valid test under continuous looking.

A seeded simulation of what `reconcile watch --stream` does with one canary for one 24 h
stage (the example `bake: 24h`): the canary's requests arrive at a steady rate, the stream
delivers them in batches every 5 s, and after every batch the controller's real functions run:
`observe` and `judge_stream` with the example gates (`error_rate: {max: 5%}`,
`latency_p95: {max: 20s}`: two tests sharing the default alpha of 1%).

Only a segment whose error (or slow) share is above the limit can hold evidence against it
(the log likelihood ratio of every alternative above the limit is then negative), so
`judge_stream` is called after exactly the batches where some segment is above a limit, and
`observe` at every segment boundary: the same verdicts as judging after every batch, faster.

- **good**: 0.5% errors; a FAIL is a false rollback. Target: under 1% of 24 h stages.
- **bad**: 7% and 30% errors; the figure is the time from the canary's first request to the
  FAIL (the log delay, 5 s in production, comes on top).
- **latency**: a good canary with 1% of its requests slower than `latency_p95.max` (its p95
  well inside the gate) and 0.5% errors; a FAIL is a false rollback. Bad: 20% slower (p95
  above max), time to FAIL.
- **baseline**: a naive stream judge that looks at the same batches but rolls back as soon as
  the canary's error rate over the last minute exceeds 5% (at least 20 requests): what
  continuous looking costs without an anytime-valid test.

Run: `python benchmarks/stream_simulation.py [--stages 400] [--bad-stages 100]`.
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
import time
from collections import deque
from datetime import UTC, datetime, timedelta

from reconciler.sequential import (
    DEFAULT_ALPHA,
    DEFAULT_RESTART,
    LATENCY_TAIL,
    Evidence,
    Tally,
    judge_stream,
    observe,
)
from reconciler.spec import ErrorRateGate, Gates, LatencyGate

GATES = Gates(
    error_rate=ErrorRateGate(max=0.05, target=0.01),
    latency_p95=LatencyGate(max=20.0, target=15.0),
)
LIMIT = 0.05
BATCH_SECONDS = 5
STAGE_BATCHES = 24 * 3600 // BATCH_SECONDS
PER_MINUTE = 60 // BATCH_SECONDS
PER_SEGMENT = int(DEFAULT_RESTART.total_seconds()) // BATCH_SECONDS
NONE = Tally()
T0 = datetime(2026, 12, 1, tzinfo=UTC)
RATES = (20, 100, 1000)


def binomial(rng: random.Random, n: int, p: float) -> int:
    """One Binomial(n, p) draw by inversion (the means here are small: a few steps)."""
    u = rng.random()
    q = (1 - p) ** n
    k, cdf = 0, q
    while u > cdf and k < n:
        q *= (n - k) / (k + 1) * p / (1 - p)
        k += 1
        cdf += q
    return k


def batch_sizes(rate: float) -> list[int]:
    """Requests per 5 s batch over a stage at `rate` per minute (spread evenly)."""
    per = rate * BATCH_SECONDS / 60
    return [math.floor(per * (b + 1)) - math.floor(per * b) for b in range(STAGE_BATCHES)]


def stage(rng: random.Random, sizes: list[int], p: float, slow: float = 0.0) -> int | None:
    """The batch after which the stream judge said FAIL, or None (outlived the stage); `p` is
    the canary's error rate, `slow` its share of requests slower than `latency_p95.max`."""
    ev = Evidence()
    pending = Tally()
    for b, n in enumerate(sizes):
        k = binomial(rng, n, p) if n else 0
        s = binomial(rng, n, slow) if n and slow else 0
        pending = pending + Tally(n, k, s)
        # Segment boundaries: the first batch of each segment opens one, so flush the batches
        # before it first (they belong to the older segments only).
        opening = b % PER_SEGMENT == 0
        closing = b % PER_SEGMENT == PER_SEGMENT - 1
        if k or s or opening or closing:
            ev = observe(ev, pending, NONE, T0 + timedelta(seconds=BATCH_SECONDS * (b + 1)))
            pending = Tally()
            if (k or s) and _above(ev) and judge_stream(ev, GATES, DEFAULT_ALPHA).fail:
                return b
    return None


def _above(ev: Evidence) -> bool:
    """Whether some segment's error or slow share is above its limit: otherwise no test can
    have evidence (every alternative's likelihood ratio is below 1)."""
    total = ev.canary
    for s in ev.starts:
        n = total.requests - s.canary.requests
        if total.errors - s.canary.errors > LIMIT * n or total.slow - s.canary.slow > (
            LATENCY_TAIL * n
        ):
            return True
    return False


def naive_stage(rng: random.Random, sizes: list[int], p: float) -> int | None:
    """Baseline: FAIL when the last minute's error rate is above 5% (>= 20 requests)."""
    window: deque[tuple[int, int]] = deque(maxlen=PER_MINUTE)
    n_sum = k_sum = 0
    for b, n in enumerate(sizes):
        k = binomial(rng, n, p) if n else 0
        if len(window) == window.maxlen:
            old_n, old_k = window[0]
            n_sum -= old_n
            k_sum -= old_k
        window.append((n, k))
        n_sum += n
        k_sum += k
        if k and n_sum >= 20 and k_sum / n_sum > LIMIT:
            return b
    return None


def wilson_upper(k: int, n: int, z: float = 1.96) -> float:
    """95% Wilson upper bound of a proportion."""
    if n == 0:
        return 1.0
    p = k / n
    centre = p + z * z / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (centre + spread) / (1 + z * z / n)


def minutes(batches: list[int | None]) -> str:
    caught = sorted((b + 1) * BATCH_SECONDS / 60 for b in batches if b is not None)
    if not caught:
        return "> 24 h"
    med = statistics.median(caught)
    p95 = caught[min(len(caught) - 1, int(0.95 * len(caught)))]
    return f"{_num(med)} / {_num(p95)} min"


def _num(x: float) -> str:
    return f"{x:.0f}" if x >= 10 else f"{x:.2g}"


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--stages", type=int, default=400, help="24 h stages per good row")
    parser.add_argument("--bad-stages", type=int, default=100, help="stages per bad row")
    parser.add_argument("--seed", type=int, default=20261207)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    started = time.monotonic()
    print(
        f"gates: error_rate max 5%, latency_p95 max 20s (two tests sharing alpha "
        f"{DEFAULT_ALPHA:g}); a look after every {BATCH_SECONDS} s batch for 24 h "
        f"({STAGE_BATCHES:,} looks a stage); segments restart every "
        f"{DEFAULT_RESTART.total_seconds():g} s; "
        f"{args.stages} good stages, {args.bad_stages} bad stages per row; seed {args.seed}"
    )
    print()
    print(
        "| canary requests/min | good (0.5%): stages rolled back, stream test | 95% upper bound "
        "| good: stages rolled back, naive 1-min judge (baseline) | bad 7%: time to FAIL, "
        "median / p95 | bad 7%: outlived the stage | bad 30%: time to FAIL, median / p95 |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|")
    worst = 0.0
    for rate in RATES:
        sizes = batch_sizes(rate)
        good = sum(stage(rng, sizes, 0.005) is not None for _ in range(args.stages))
        naive = sum(naive_stage(rng, sizes, 0.005) is not None for _ in range(args.stages))
        bad7 = [stage(rng, sizes, 0.07) for _ in range(args.bad_stages)]
        bad30 = [stage(rng, sizes, 0.30) for _ in range(args.bad_stages)]
        outlived = sum(b is None for b in bad7)
        upper = wilson_upper(good, args.stages)
        worst = max(worst, upper)
        print(
            f"| {rate:,} | {good}/{args.stages} ({good / args.stages:.2%}) | {upper:.2%} "
            f"| {naive}/{args.stages} ({naive / args.stages:.0%}) | {minutes(bad7)} "
            f"| {outlived}/{args.bad_stages} | {minutes(bad30)} |",
            flush=True,
        )
    print()
    print(
        "| canary requests/min | latency good (1% slower than max, 0.5% errors): stages rolled "
        "back | 95% upper bound | latency bad (20% slower than max): time to FAIL, median / p95 "
        "| latency bad: outlived the stage |"
    )
    print("|---:|---:|---:|---:|---:|")
    for rate in RATES:
        sizes = batch_sizes(rate)
        good = sum(stage(rng, sizes, 0.005, 0.01) is not None for _ in range(args.stages))
        slow = [stage(rng, sizes, 0.0, 0.20) for _ in range(args.bad_stages)]
        upper = wilson_upper(good, args.stages)
        worst = max(worst, upper)
        print(
            f"| {rate:,} | {good}/{args.stages} ({good / args.stages:.2%}) | {upper:.2%} "
            f"| {minutes(slow)} | {sum(b is None for b in slow)}/{args.bad_stages} |",
            flush=True,
        )
    print()
    verdict = "met" if worst < 0.01 else "NOT shown by this many stages"
    print(
        "target: a good canary (0.5% errors; 1% slower than max) wrongly rolled back in under "
        f"1% of 24 h stages: {verdict} "
        f"(largest 95% upper bound {worst:.2%}; the test's own guarantee: at most "
        f"{DEFAULT_ALPHA:.0%} even for a canary exactly at max)"
    )
    print(f"elapsed {time.monotonic() - started:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
