"""How long after a breach is visible in Cloud Monitoring is the rollback live?

Everything runs on the emulator's virtual clock, with Google's timing: Cloud Run metrics
sampled every 60 s and readable 180 s after their sample ends, `alignment_period` of at least
60 s, the Cloud Monitoring provider's default 3-minute ingestion lag. Each repetition builds a
fresh sandbox (the project's emulator in this process, a bare git remote and a working clone)
with one service, `ion-api`, already at a 95/5 canary split as its rollout file wants, and
plays minutes out in steps: serve the step's requests (about `--rate` a second to the canary's
tag URL, a fifth of that to the service URL), move the emulator clock one step, and every
`--interval` run `reconcile --repo CLONE apply` as the scheduled job would (git pull, metrics,
judge, apply, commit, push), reading "now" from the emulator.

The rollout file has the example gates with Google-sized windows: `window: W` (W = interval,
60 s by default), `min_requests` well below the load per window, `consecutive_failures: 2`,
`error_rate: {max: 5%}`, and no probes, so only metrics decide. The canary starts healthy; once
the first windows have been judged, at a random phase of the ticks, it turns bad:
`behave(canary, error_rate=0.3)`. Definitions, all in emulator seconds:

- **breach**: the moment `behave` returns;
- **breach visible**: breach + 2 x W (the end of the second full window of bad traffic, as
  `consecutive_failures` = 2 needs) + the 180 s ingestion delay: the first moment Cloud
  Monitoring can show two full failing windows (a window partly before the breach may
  already fail, so a rollback can come earlier);
- **rollback live**: the emulator time of the first apply after which the live split
  (`traffic_statuses`) gives the canary 0%.

Figure: rollback live - breach visible, against the target `interval + lag - delay + step`
(one tick's phase, the lag the provider keeps beyond the delay, the step's granularity). Also:
rollback live - breach, and the real seconds a repetition took (virtual minutes per real
second is the speed-up the clock buys).

Run: `python benchmarks/breach_to_rollback.py [--interval 60] [--reps 3] [--rate 10]`, or
`--quick` for one repetition; `--interval 300 --per-window 100 --min-requests 100` plays the
example gates (5m windows, min_requests 100) at 100 canary requests per window.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import random
import statistics
import sys
import time
from dataclasses import dataclass

from emulated_canary import CANARY, SERVICE, canary_percent, rollout, scenario

from reconciler.sandbox import sandbox

CONSECUTIVE = 2
DELAY = 180.0
"""Cloud Monitoring's ingestion delay (the emulator's default)."""
LAG = 180.0
"""The provider's default ingestion lag: the judged window ends this long before now."""


@dataclass
class Result:
    phase: float
    """Breach time after the last tick, in emulator seconds."""
    latency: float | None
    """Rollback live - breach visible, emulator seconds (None: no rollback in time)."""
    since_breach: float | None
    ticks: int
    exit_code: int
    rolled_back_line: str
    real: float
    """Real seconds the repetition took."""


def apply(repo: str) -> tuple[int, str]:
    """`reconcile --repo REPO apply`, in this process; its exit code and output."""
    from reconciler.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = main(["--repo", repo, "apply"])
    return code, out.getvalue()


def one(
    interval: float,
    rate: float,
    step: float,
    rng: random.Random,
    min_requests: int | None = None,
) -> Result:
    window = interval
    if min_requests is None:
        min_requests = max(20, int(rate * window / 4))
    started = time.monotonic()
    with sandbox(
        scenario=scenario(),
        rollout={"rollout/ion-api.yaml": rollout(f"{window:g}s", min_requests)},
        seed=rng.randrange(10**6),
    ) as sb:
        emu = sb.emu
        origin = emu.now()

        def clock() -> float:
            return (emu.now() - origin).total_seconds()

        owed = [0.0, 0.0]  # fractions of a request carried to the next step (low rates)

        def serve(seconds: float) -> None:
            for _ in range(round(seconds / step)):
                owed[0] += rate * step
                owed[1] += rate * step / 5
                canary, service = int(owed[0]), int(owed[1])
                owed[0] -= canary
                owed[1] -= service
                if canary:
                    emu.load(SERVICE, canary, tag="canary", concurrency=4)
                if service:
                    emu.load(SERVICE, service, concurrency=2)
                emu.advance_clock(step)

        # The breach comes once healthy windows have been judged (the lag plus two windows),
        # at a random phase of the ticks.
        ticks_before = math.ceil((LAG + 2 * window) / interval) + 1
        breach_in_tick = rng.uniform(0, interval)
        breach = visible = math.inf
        ticks, code, rolled, live = 0, 0, "", None
        for _ in range(ticks_before + math.ceil((2 * window + DELAY + LAG) / interval) + 4):
            code, out = apply(str(sb.repo))
            ticks += 1
            rolled = rolled or next((x for x in out.splitlines() if "ROLLED BACK" in x), "")
            if canary_percent(emu) == 0:
                live = clock()
                break
            if ticks == ticks_before:
                serve(breach_in_tick)
                emu.behave(CANARY, error_rate=0.3)
                breach = clock()
                visible = breach + CONSECUTIVE * window + DELAY
                serve(interval - breach_in_tick)
            else:
                serve(interval)
        return Result(
            phase=breach_in_tick,
            latency=None if live is None else live - visible,
            since_breach=None if live is None else live - breach,
            ticks=ticks,
            exit_code=code,
            rolled_back_line=rolled,
            real=time.monotonic() - started,
        )


def _s(seconds: float | None) -> str:
    return "no rollback" if seconds is None else f"{seconds:+.0f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--interval", type=float, default=60.0, help="apply every, = window, s")
    parser.add_argument("--reps", type=int, default=3, help="repetitions")
    parser.add_argument("--rate", type=float, default=10.0, help="canary requests per second")
    parser.add_argument("--step", type=float, default=5.0, help="emulator seconds per step")
    parser.add_argument("--seed", type=int, default=20260301)
    parser.add_argument("--quick", action="store_true", help="one repetition")
    parser.add_argument(
        "--per-window",
        type=int,
        help="canary requests per window (sets --rate to this / --interval)",
    )
    parser.add_argument(
        "--min-requests",
        type=int,
        help="gates.min_requests (default: a quarter of the load per window, at least 20)",
    )
    args = parser.parse_args()
    if args.interval < 60 or args.interval % 60:
        parser.error("--interval: Cloud Monitoring windows are whole minutes (60 or more)")
    if args.per_window is not None:
        args.rate = args.per_window / args.interval
    reps = 1 if args.quick else args.reps
    rng = random.Random(args.seed)
    started = time.monotonic()
    target = args.interval + LAG - DELAY + args.step
    print(
        f"apply every {args.interval:g}s (emulator clock), gates.window {args.interval:g}s, "
        f"consecutive_failures {CONSECUTIVE}, error_rate max 5%; metrics sampled every 60s, "
        f"readable {DELAY:g}s later, provider lag {LAG:g}s; canary load ~{args.rate:g} req/s "
        f"({args.rate * args.interval:g} per window); min_requests "
        f"{args.min_requests or max(20, int(args.rate * args.interval / 4))}; "
        "breach: error_rate 0 -> 0.3"
    )
    print()
    print(
        "| rep | breach after last tick, s | rollback live - breach visible, s "
        "| rollback live - breach, s | ticks | exit | real s | emulator min per real s |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    results = []
    for rep in range(1, reps + 1):
        r = one(args.interval, args.rate, args.step, rng, args.min_requests)
        results.append(r)
        speed = r.ticks * args.interval / 60 / r.real
        print(
            f"| {rep} | {r.phase:.0f} | {_s(r.latency)} | {_s(r.since_breach)} "
            f"| {r.ticks} | {r.exit_code} | {r.real:.1f} | {speed:.1f} |",
            flush=True,
        )
    print()
    for r in results[:1]:
        print(f"apply said: {r.rolled_back_line}")
    got = [r.latency for r in results if r.latency is not None]
    if got:
        print(
            f"rollback live - breach visible: median {statistics.median(got):+.0f}s, "
            f"max {max(got):+.0f}s (target <= interval + lag - delay + step = {target:g}s)"
        )
    met = len(got) == len(results) and max(got) <= target
    verdict = "met" if met else "NOT met"
    print(
        "target: rollback within one interval (plus the lag beyond the delay) of the breach "
        f"being visible: {verdict}"
    )
    print(f"elapsed {time.monotonic() - started:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
