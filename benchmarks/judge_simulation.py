"""How often does the judge roll back a good canary, and how long does a bad one survive?

Simulates `reconciler.analysis.judge` on binomial error counts with the example gates of the
rollout file (error_rate max 5%, window 5m, min_requests 100, consecutive_failures 2):

- a stage is the example `bake` of 24h in 5-minute windows: 288 windows, judged after each;
- the caller keeps the canary's last 12 windows (one hour) and passes them to `judge()`;
- a good canary errs on 0.5% of requests, a bad one on 7%;
- 20, 100 and 1,000 requests per window.

Two estimates per row: a seeded Monte Carlo run of the real judge, and an exact figure from
a Markov chain over the same tail of windows, whose per-window classes (PASS / FAIL /
INCONCLUSIVE for every possible error count) also come from the judge itself.

A second table compares whole windows only (before) with fail fast (after): runs every
minute, each also judging the partial span since the last whole window (`judge(partial=)`),
requests spread evenly over the window; it gives the false-rollback rate at 0.5% errors
(`--good-stages` simulated 24 h stages per row, and an exact upper bound: the whole windows'
exact figure plus, by the union bound, every partial span's exact chance to FAIL) and the
minutes from the stage start to the rollback at 7% and 30% errors.

Run: `python benchmarks/judge_simulation.py [--stages N] [--good-stages N] [--seed S]`.
Prints markdown tables.
"""

from __future__ import annotations

import argparse
import bisect
import math
import random
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from reconciler.analysis import judge
from reconciler.model import Outcome, WindowStats
from reconciler.spec import Gates
from reconciler.stats import wilson_interval, z_score

WINDOW = timedelta(minutes=5)
STAGE_WINDOWS = 288  # bake 24h / 5m
TAIL = 12  # windows the caller keeps: one hour
SIZES = (20, 100, 1000)
GOOD, BAD = 0.005, 0.07
GATES = Gates.model_validate(
    {"window": "5m", "min_requests": 100, "consecutive_failures": 2, "error_rate": {"max": "5%"}}
)
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def window(i: int, requests: int, errors: int) -> WindowStats:
    start = T0 + i * WINDOW
    return WindowStats(
        "api", "api-canary", start, start + WINDOW, requests, errors, requests - errors
    )


# --- binomial draws (the standard library has no binomial sampler before 3.12) ------------
def binomial_pmf(n: int, p: float) -> list[float]:
    """P(k errors of n) for k = 0..n, in log space so n = 1,000 does not overflow."""
    logs = [
        math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)
        + k * math.log(p) + (n - k) * math.log1p(-p)
        for k in range(n + 1)
    ]  # fmt: skip
    return [math.exp(x) for x in logs]


class Binomial:
    """Inverse-CDF sampling of Binomial(n, p) from a seeded generator."""

    def __init__(self, n: int, p: float, rng: random.Random) -> None:
        self.cdf: list[float] = []
        total = 0.0
        for x in binomial_pmf(n, p):
            total += x
            self.cdf.append(total)
        self.rng = rng

    def draw(self) -> int:
        u = self.rng.random() * self.cdf[-1]
        return min(bisect.bisect_left(self.cdf, u), len(self.cdf) - 1)


# --- Monte Carlo on the real judge --------------------------------------------------------
def rolled_back_at(requests: int, errors: Iterator[int]) -> int | None:
    """The window (1-based) after which the judge said FAIL, None if the stage passed through."""
    tail: deque[WindowStats] = deque(maxlen=TAIL)
    for i in range(STAGE_WINDOWS):
        tail.append(window(i, requests, next(errors)))
        if judge(tail, GATES).outcome is Outcome.FAIL:
            return i + 1
    return None


def simulate(requests: int, p: float, stages: int, rng: random.Random) -> list[int | None]:
    sampler = Binomial(requests, p, rng)
    draws = iter(sampler.draw, -1)  # an endless stream of error counts
    return [rolled_back_at(requests, draws) for _ in range(stages)]


# --- fail fast: per-minute runs that also judge the partial span -------------------------
MINUTES = 5  # runs per window


def minutes_to_rollback(
    requests: int, per_minute: Binomial, fail_fast: bool, minutes: int
) -> int | None:
    """The minute (1-based) whose run rolls back, None if none in `minutes`."""
    tail: deque[WindowStats] = deque(maxlen=TAIL)
    share = requests // MINUTES
    span_req = span_err = 0
    for m in range(minutes):
        span_req += share
        span_err += per_minute.draw()
        if (m + 1) % MINUTES == 0:
            tail.append(window(m // MINUTES, span_req, span_err))
            span_req = span_err = 0
            if judge(tail, GATES).outcome is Outcome.FAIL:
                return m + 1
        elif fail_fast:
            start = T0 + (m // MINUTES) * WINDOW
            part = WindowStats(
                "api", "api-canary", start, start + timedelta(minutes=m % MINUTES + 1),
                span_req, span_err, span_req - span_err, span="partial",
            )  # fmt: skip
            if judge(tail, GATES, partial=[part]).outcome is Outcome.FAIL:
                return m + 1
    return None


def partial_fail_bound(requests: int, p: float) -> float:
    """An exact upper bound of P(some partial span of a stage FAILs) at true error rate `p`:
    the sum, over the stage's windows and each run inside a window, of the chance that the
    span so far (m fifths of the window) FAILs, its FAIL counts taken from the judge itself."""
    share = requests // MINUTES
    total = 0.0
    for m in range(1, MINUTES):
        size = share * m
        part = [
            WindowStats(
                "api", "api-canary", T0, T0 + timedelta(minutes=m), size, k, size - k,
                span="partial",
            )
            for k in range(size + 1)
        ]  # fmt: skip
        fails = [judge([], GATES, partial=[w]).outcome is Outcome.FAIL for w in part]
        pmf = binomial_pmf(size, p) if size else [1.0]
        total += sum(x for x, f in zip(pmf, fails, strict=True) if f)
    return min(1.0, STAGE_WINDOWS * total)


def fail_fast_table(stages: int, good_stages: int, rng: random.Random) -> None:
    """Before/after rows: false rollbacks at 0.5%, minutes to rollback at 7% and 30%."""
    print(
        "\nFail fast (runs every minute, partial spans judged) vs whole windows only:\n\n"
        "| requests/window | mode | good (0.5%): stages rolled back, simulated "
        "| good: exact upper bound | 7%: median / p95 minutes "
        "| 30%: median / p95 minutes |\n|---:|---|---:|---:|---:|---:|"
    )
    horizon = STAGE_WINDOWS * MINUTES
    for n in SIZES:
        whole = exact(window_classes(n), GOOD).p_rollback
        for fast in (False, True):
            good = [
                minutes_to_rollback(n, Binomial(n // MINUTES, GOOD, rng), fast, horizon)
                for _ in range(good_stages)
            ]
            cells = []
            for p in (BAD, 0.30):
                got = [
                    minutes_to_rollback(n, Binomial(n // MINUTES, p, rng), fast, 120)
                    for _ in range(stages)
                ]
                cells.append(f"{_q(got, 0.5)} / {_q(got, 0.95)}")
            k = sum(r is not None for r in good)
            mode = "fail fast" if fast else "whole windows"
            bound = min(1.0, whole + (partial_fail_bound(n, GOOD) if fast else 0.0))
            print(
                f"| {n:,} | {mode} | {k}/{len(good)} (95% upper bound "
                f"{pct(upper95(k, len(good)))}) | {pct(bound)} | {cells[0]} | {cells[1]} |"
            )


def _q(results: list[int | None], q: float) -> str:
    """A quantile of minutes to rollback; `>2h` when not rolled back by then."""
    ordered = sorted(r if r is not None else 10**9 for r in results)
    v = ordered[min(len(ordered) - 1, int(q * len(ordered)))]
    return ">2h" if v >= 10**9 else str(v)


# --- exact figures: a Markov chain over the judge's per-window classes --------------------
def window_classes(requests: int) -> list[Outcome]:
    """The judge's outcome for one window with k errors, k = 0..requests."""
    single = GATES.model_copy(update={"consecutive_failures": 1})
    return [judge([window(0, requests, k)], single).outcome for k in range(requests + 1)]


@dataclass(frozen=True)
class Exact:
    p_fail_window: float
    p_pass_window: float
    rollback_by: list[float]
    """P(rolled back within the first w windows), w = 1..STAGE_WINDOWS."""

    @property
    def p_rollback(self) -> float:
        return self.rollback_by[-1]

    def quantile(self, q: float) -> int | None:
        """Windows survived at quantile q; None when the stage outlives it."""
        for w, c in enumerate(self.rollback_by, start=1):
            if c >= q:
                return w
        return None


def exact(classes: list[Outcome], p: float) -> Exact:
    """Exact rollback probabilities for a true error rate `p`.

    State: the ages of the FAIL windows still in the caller's tail after the last PASS
    window (the judge skips INCONCLUSIVE ones). A new FAIL with `consecutive_failures - 1`
    of them in the state is the rollback.
    """
    needed = GATES.consecutive_failures
    pmf = binomial_pmf(len(classes) - 1, p)
    pf = sum(x for x, c in zip(pmf, classes, strict=True) if c is Outcome.FAIL)
    pp = sum(x for x, c in zip(pmf, classes, strict=True) if c is Outcome.PASS)
    pi = 1.0 - pf - pp
    states: dict[tuple[int, ...], float] = {(): 1.0}
    done = 0.0
    rollback_by = []
    for _ in range(STAGE_WINDOWS):
        nxt: dict[tuple[int, ...], float] = {}
        for ages, prob in states.items():
            aged = tuple(a + 1 for a in ages if a + 1 < TAIL)
            nxt[()] = nxt.get((), 0.0) + prob * pp
            nxt[aged] = nxt.get(aged, 0.0) + prob * pi
            if len(aged) + 1 >= needed:
                done += prob * pf
            else:
                key = (0, *aged)
                nxt[key] = nxt.get(key, 0.0) + prob * pf
        states = nxt
        rollback_by.append(done)
    return Exact(pf, pp, rollback_by)


# --- report -------------------------------------------------------------------------------
def upper95(k: int, n: int) -> float:
    """One-sided 95% upper bound of a proportion with k of n (exact at k = 0: 1 - 0.05^(1/n))."""
    if k == 0:
        return 1.0 - math.pow(0.05, 1.0 / n)
    return wilson_interval(k, n, z_score(0.90))[1]


def pct(x: float) -> str:
    """A probability as a percentage; tiny ones keep one significant digit."""
    value = x * 100
    if value == 0.0:
        return "0"
    return f"{value:.2f}%" if value >= 0.01 else f"{value:.1g}%"


def survived(results: list[int | None], q: float) -> str:
    ordered = sorted(STAGE_WINDOWS + 1 if r is None else r for r in results)
    value = ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]
    return f">{STAGE_WINDOWS}" if value > STAGE_WINDOWS else str(value)


def fmt_windows(w: int | None) -> str:
    return f">{STAGE_WINDOWS}" if w is None else str(w)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--stages", type=int, default=400, help="simulated stages per row")
    parser.add_argument(
        "--good-stages",
        type=int,
        default=300,
        help="simulated 24h good stages per row of the fail-fast table (300: 0 rollbacks "
        "bound the rate under 1%% at 95%% confidence)",
    )
    parser.add_argument("--seed", type=int, default=20260301)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    began = time.perf_counter()

    print(
        f"gates: error_rate max 5%, window 5m, min_requests 100, consecutive_failures 2; "
        f"stage = {STAGE_WINDOWS} windows (24h bake); caller keeps the last {TAIL} windows; "
        f"{args.stages} simulated stages per row; seed {args.seed}\n"
    )
    print(
        "| requests/window | good (0.5%): P(window PASS) | good: P(window FAIL) "
        "| good: stages rolled back, simulated "
        "| good: stages rolled back, exact | bad (7%): P(window FAIL) "
        "| bad: windows survived, simulated median / p95 / max "
        "| bad: windows survived, exact median / p95 | bad: outlived the stage, sim / exact |"
    )
    print("|---:" * 9 + "|")
    classes_by_size = {n: window_classes(n) for n in SIZES}
    for n in SIZES:
        classes = classes_by_size[n]
        good_x, bad_x = exact(classes, GOOD), exact(classes, BAD)
        good = simulate(n, GOOD, args.stages, rng)
        bad = simulate(n, BAD, args.stages, rng)
        good_k = sum(r is not None for r in good)
        bad_never = sum(r is None for r in bad)
        print(
            f"| {n:,} | {pct(good_x.p_pass_window)} | {pct(good_x.p_fail_window)} "
            f"| {good_k}/{len(good)} (95% upper bound {pct(upper95(good_k, len(good)))}) "
            f"| {pct(good_x.p_rollback)} | {pct(bad_x.p_fail_window)} "
            f"| {survived(bad, 0.5)} / {survived(bad, 0.95)} / {survived(bad, 1.0)} "
            f"| {fmt_windows(bad_x.quantile(0.5))} / {fmt_windows(bad_x.quantile(0.95))} "
            f"| {pct(bad_never / len(bad))} / {pct(1.0 - bad_x.p_rollback)} |"
        )

    print("\nExact P(rolled back within a 288-window stage) by true error rate (max is 5%):\n")
    rates = (0.005, 0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.10, 0.20)
    print("| requests/window | " + " | ".join(f"{r * 100:g}%" for r in rates) + " |")
    print("|---:|" + "---:|" * len(rates))
    for n in SIZES:
        cells = [pct(exact(classes_by_size[n], r).p_rollback) for r in rates]
        print(f"| {n:,} | " + " | ".join(cells) + " |")
    fail_fast_table(args.stages, args.good_stages, rng)
    print(f"\nelapsed {time.perf_counter() - began:.1f}s")


if __name__ == "__main__":
    main()
