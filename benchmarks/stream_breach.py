"""How soon after a breach is the rollback live with `reconcile watch --stream`?

Each repetition builds a fresh sandbox (the project's emulator in this process, a bare git
remote and a working clone) with `ion-api` at 95/5 as its rollout file wants, and runs
`reconcile --repo CLONE watch --stream` as its own process, as an operator would. The
emulator writes one Cloud Logging request log entry per served request, visible `--delay`
seconds (default 5) of emulator time later; the controller tails them with the official
google-cloud-logging client.

Time is the emulator's clock, which this script runs `--speed` times faster than the wall
clock (default 2: a 5 s log delay passes in 2.5 s). The canary gets `rate` requests per
emulator minute through its tag URL (and the service URL as many, which mostly reach stable).
The rollout file has the example gates (`error_rate: {max: 5%}`, `latency_p95: {max: 20s}`;
emulated_canary.py, shared with breach_to_rollback.py); the canary starts healthy and after a
random 5 to 15 s turns bad: `behave(canary, error_rate=0.3)`.

- **breach**: emulator time when `behave` returns;
- **rollback live**: emulator time when the emulator's live split (`traffic_statuses`, polled
  every 10 ms) first gives the canary 0%;
- **floor**: the log delay, the earliest any log-driven controller could see the breach;
  the ratio is (rollback live - breach) / floor.

Where the time goes, per repetition: **evidence**, from the breach to the first moment the
delivered entries let the test say FAIL (replayed offline from the emulator's served
requests, each entry observed alone when it becomes visible, segments as the controller opens
them; the log delay is part of it); **react**, from there to the controller's traffic write
reaching the emulator (the tail's polling, the judge, the rollback's reads); **settle**, from
the write to the split serving.

The controller's own work (tail, judge, Cloud Run write) runs on the wall clock, so at speed S
it counts S times over in emulator seconds: the figures are upper bounds of what the same run
would measure at speed 1.

Run: `python benchmarks/stream_breach.py [--rates 20,100,1000] [--reps 3] [--delay 5]
[--speed 4]`, or `--quick` for one repetition at 1,000 requests per minute.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from emulated_canary import CANARY, SERVICE, canary_percent, rollout, scenario

from reconciler.emulator.world import Record
from reconciler.sandbox import sandbox
from reconciler.sequential import DEFAULT_RESTART, Evidence, Tally, judge_stream, observe
from reconciler.spec import ErrorRateGate, Gates, LatencyGate

BAD_RATE = 0.3
TARGET_SECONDS = 30.0
TARGET_RATE = 100
GATES = Gates(error_rate=ErrorRateGate(max=0.05), latency_p95=LatencyGate(max=20.0))


@dataclass
class Result:
    latency: float | None
    """Rollback live - breach, emulator seconds (None: no rollback before the timeout)."""
    bad_served: int
    """Canary requests served between the breach and the rollback."""
    said: str
    evidence: float | None = None
    """Breach -> the first moment the delivered log entries let the test say FAIL."""
    react: float | None = None
    """That moment -> the controller's traffic write (UpdateService) reaches the emulator."""
    settle: float | None = None
    """The write -> the split serving (the operation done, `traffic_statuses`)."""
    segment: int = 0
    """The number of the segment whose evidence was enough (1: the one opened first)."""
    diluted: int = 0
    """Healthy canary requests served before the breach in that segment."""


def replay(
    records: list[Record], opened: float, breach: float, delay: float
) -> tuple[float, int, int] | None:
    """When could the controller's test first say FAIL? Every canary entry the tail delivers
    (served after `opened` - `delay`) is observed alone, at the emulator time it becomes
    visible, with segments restarting as the controller's do. Returns that time, the deciding
    segment's number, and how many healthy canary requests before the breach it holds."""
    ev = Evidence()
    for r in sorted(records, key=lambda r: r.ts):
        if r.revision != CANARY or r.ts <= opened - delay:
            continue
        at = datetime.fromtimestamp(r.ts + delay, UTC)
        one = Tally(1, int(r.code >= 500))
        ev = observe(ev, one, Tally(), at, restart=DEFAULT_RESTART)
        verdict = judge_stream(ev, GATES)
        if verdict.fail and verdict.segment is not None:
            start = verdict.segment.start.timestamp() - delay
            before = sum(1 for x in records if x.revision == CANARY and start <= x.ts < breach)
            return r.ts + delay, verdict.segment.number, before
    return None


def requested_percent(emu: Any) -> int:
    """The canary's share of the split last written (`traffic`, before it serves)."""
    return sum(r.percent for r in emu.world.find_service(SERVICE).traffic if r.revision == CANARY)


def one(rate: float, delay: float, speed: float, rng: random.Random) -> Result:
    with sandbox(
        scenario=scenario(), rollout={"rollout/ion-api.yaml": rollout()}, seed=rng.randrange(10**6)
    ) as sb:
        emu = sb.emu
        emu.logs.delay = delay
        stop = threading.Event()
        lines: list[str] = []

        def clock() -> None:
            # The emulator clock runs `speed` times the wall clock.
            last = time.monotonic()
            while not stop.wait(0.01):
                now = time.monotonic()
                emu.advance_clock((now - last) * (speed - 1))
                last = now

        def load() -> None:
            start, sent = emu.world.now(), 0
            while not stop.wait(0.005):
                due = int((emu.world.now() - start) * rate / 60.0) - sent
                if due > 0:
                    emu.load(SERVICE, due, tag="canary", concurrency=1)
                    emu.load(SERVICE, due, concurrency=1)
                    sent += due

        cmd = [sys.executable, "-m", "reconciler", "--repo", str(sb.repo), "watch", "--stream"]
        cmd += ["--duration", "1h"]
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=dict(os.environ)
        )

        def read() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.append(line.rstrip("\n"))

        threads = [threading.Thread(target=f, daemon=True) for f in (read, clock, load)]
        for t in threads:
            t.start()
        try:
            deadline = time.monotonic() + 60
            while not any("streaming request logs" in text for text in lines):
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"watch --stream did not start: {lines}")
                time.sleep(0.01)
            opened = emu.world.now()
            healthy_until = emu.world.now() + rng.uniform(5, 15)
            while emu.world.now() < healthy_until:
                time.sleep(0.01)
            if canary_percent(emu) != 5:
                raise RuntimeError(f"a healthy canary was rolled back: {lines}")
            emu.behave(CANARY, error_rate=BAD_RATE)
            breach = emu.world.now()
            live: float | None = None
            written: float | None = None
            timeout = breach + 600
            while emu.world.now() < timeout:
                if written is None and requested_percent(emu) == 0:
                    written = emu.world.now()
                if canary_percent(emu) == 0:
                    live = emu.world.now()
                    break
                time.sleep(0.01)
        finally:
            stop.set()
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            for t in threads:
                t.join(timeout=10)
        end = live if live is not None else emu.world.now()
        bad = sum(1 for r in emu.world.served() if r.revision == CANARY and breach <= r.ts <= end)
        said = next((text for text in lines if "ROLLED BACK" in text), "")
        result = Result(None if live is None else live - breach, bad, said)
        found = replay(emu.world.served(), opened, breach, delay)
        if found is not None and live is not None:
            judged, result.segment, result.diluted = found
            written = live if written is None else written
            result.evidence = judged - breach
            result.react = written - judged
            result.settle = live - written
            if result.react > 2.0:
                # A slow reaction is the controller's own (a lost stream, the lease, git):
                # what it said is the first clue.
                print(
                    f"slow reaction ({result.react:.1f} s); watch --stream said:", file=sys.stderr
                )
                print("\n".join(lines), file=sys.stderr)
        return result


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rates", default="20,100,1000", help="canary requests per minute")
    parser.add_argument("--reps", type=int, default=3, help="repetitions per rate")
    parser.add_argument("--delay", type=float, default=5.0, help="log delay, emulator s")
    parser.add_argument("--speed", type=float, default=2.0, help="emulator clock / wall clock")
    parser.add_argument("--seed", type=int, default=20261207)
    parser.add_argument("--quick", action="store_true", help="one repetition at 1,000/min")
    args = parser.parse_args()
    rates = [1000.0] if args.quick else [float(r) for r in args.rates.split(",")]
    reps = 1 if args.quick else args.reps
    rng = random.Random(args.seed)
    started = time.monotonic()
    print(
        f"watch --stream; log delay {args.delay:g}s (emulator clock at {args.speed:g}x wall); "
        f"error_rate max 5%; breach: canary error_rate 0 -> {BAD_RATE:g}; {reps} reps per rate"
    )
    print()
    print(
        "| canary requests/min | breach -> rollback live, median s | min / max s "
        "| floor (log delay) s | ratio median/floor | canary requests served after the breach, "
        "median |"
    )
    print("|---:|---:|---:|---:|---:|---:|")
    medians: dict[float, float | None] = {}
    maxima: dict[float, float] = {}
    said = ""
    every: list[tuple[float, Result]] = []
    for rate in rates:
        results = [one(rate, args.delay, args.speed, rng) for _ in range(reps)]
        every += [(rate, r) for r in results]
        got = [r.latency for r in results if r.latency is not None]
        said = said or next((r.said for r in results if r.said), "")
        if len(got) < len(results):
            medians[rate] = None
            print(f"| {rate:,.0f} | no rollback in {len(results) - len(got)} reps | | | | |")
            continue
        med = statistics.median(got)
        medians[rate] = med
        maxima[rate] = max(got)
        bad = statistics.median(r.bad_served for r in results)
        print(
            f"| {rate:,.0f} | {med:.1f} | {min(got):.1f} / {max(got):.1f} | {args.delay:g} "
            f"| {med / args.delay:.2f} | {bad:g} |",
            flush=True,
        )
    print()
    print(
        "Where the time goes, per repetition (emulator s): evidence = breach -> the first moment "
        "the delivered entries let the test fail (log delay included); react = that moment -> "
        "the controller's UpdateService; settle = the write -> serving"
    )
    print()
    print(
        "| canary requests/min | breach -> live | evidence | react | settle | deciding segment "
        "| healthy requests before the breach in it |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for rate, r in every:
        if r.latency is None or r.evidence is None:
            print(f"| {rate:,.0f} | no rollback | | | | | |")
            continue
        print(
            f"| {rate:,.0f} | {r.latency:.1f} | {r.evidence:.1f} | {r.react:.1f} "
            f"| {r.settle:.1f} | {r.segment} | {r.diluted} |"
        )
    print()
    print(f"watch --stream said: {said}")
    at = medians.get(float(TARGET_RATE))
    if at is not None:
        worst = maxima[float(TARGET_RATE)]
        verdict = "met" if worst < TARGET_SECONDS else "NOT met"
        print(
            f"target: every rollback live under {TARGET_SECONDS:g} s at {TARGET_RATE} "
            f"requests/min: {verdict} (median {at:.1f} s, max {worst:.1f} s)"
        )
    print(f"elapsed {time.monotonic() - started:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
