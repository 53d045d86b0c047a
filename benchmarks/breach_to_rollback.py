"""How long after a breach is visible in metrics is the rollback live, in `watch` mode?

Each repetition builds a fresh sandbox (the project's emulator in this process, a bare git
remote and a working clone) with one service, `ion-api`, already at a 95/5 canary split as
its rollout file wants, and runs `reconcile --repo CLONE watch --interval I` as its own
process, exactly as an operator would (git pull, metrics, judge, apply, commit, push each
tick). Load flows the whole time: about `--rate` requests per second to the canary's tag URL
(and a fifth of that to the service URL).

The rollout file has the example gates with short windows: `window: W` (W = I), `min_requests`
well below the load per window, `consecutive_failures: 2`, `error_rate: {max: 5%}`, and no
probes, so only metrics decide. The canary starts healthy (0% errors); after two healthy
intervals and a random extra wait (so the breach falls at a random phase of the ticks) it
turns bad: `behave(canary, error_rate=0.3)`. Definitions:

- **breach**: the moment `behave` returns; every canary request after it fails with p = 0.3;
- **breach visible in metrics**: breach + 2 x W, the end of the second full window of bad
  traffic (the judge fails a rollout after `consecutive_failures` = 2 failing windows; a
  window partly before the breach may already fail, so a rollback can come earlier);
- **rollback live**: the first moment the emulator's live split (`traffic_statuses`, what its
  data plane routes by, polled every 10 ms) gives the canary 0%.

Figure: rollback live - breach visible, against the target `interval + 2 s`. Also shown:
rollback live - breach, and rollback live - the end of the window the rolling-back tick
judged (read from state/ afterwards): the reconciler's own reaction time.

Run: `python benchmarks/breach_to_rollback.py [--interval 2] [--reps 3] [--rate 100]`, or
`--quick` for one repetition.
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
from typing import Any

from reconciler.sandbox import sandbox
from reconciler.state import read_status

SERVICE = "ion-api"
STABLE, CANARY = "ion-api-00041-abc", "ion-api-00042-xyz"
CONSECUTIVE = 2

ROLLOUT = """\
service: ion-api
project: naeda-genesis
region: us-central1
revisions:
  stable: ion-api-00041-abc
  canary: ion-api-00042-xyz
canary_percent: 5
stages: [5, 10, 25, 50, 100]
auto_advance: false
bake: 24h
self_heal: true
gates:
  window: {window}s
  min_requests: {min_requests}
  consecutive_failures: 2
  error_rate:   {{max: 5%, target: 1%}}
  latency_p95:  {{max: 20s, target: 15s}}
  success_rate: {{min: 90%, target: 95%}}
metrics: {{provider: cloud-monitoring}}
"""


def scenario() -> dict[str, Any]:
    """ion-api at 95/5 with both tags; both revisions healthy."""
    healthy = {"error_rate": 0.0, "latency_ms": {"p50": 120, "p95": 300}}
    return {
        "project": "naeda-genesis",
        "region": "us-central1",
        "services": [
            {
                "name": SERVICE,
                "revisions": [
                    {"name": STABLE, "behavior": healthy},
                    {"name": CANARY, "behavior": healthy},
                ],
                "traffic": {STABLE: 95, CANARY: 5},
                "tags": {"stable": STABLE, "canary": CANARY},
            }
        ],
    }


@dataclass
class Result:
    phase: float
    """Breach time after the last tick line printed before it, in seconds."""
    latency: float | None
    """Rollback live - breach visible, seconds (None: no rollback before the timeout)."""
    since_breach: float | None
    reaction: float | None
    """Rollback live - end of the deciding window, seconds."""
    ticks: int
    exit_code: int
    rolled_back_line: str


def canary_percent(emu: Any) -> int:
    """The canary's share of the emulator's live (applied) split."""
    for svc in emu.status()["services"]:
        if svc["name"].endswith(f"/services/{SERVICE}"):
            return sum(t["percent"] for t in svc["traffic"] if t["revision"] == CANARY)
    raise RuntimeError(f"{SERVICE} not in the emulator")


def one(interval: float, rate: float, rng: random.Random) -> Result:
    window = interval
    per_window = rate * window
    min_requests = max(20, int(per_window / 4))
    rollout = ROLLOUT.format(window=f"{window:g}", min_requests=min_requests)
    with sandbox(
        scenario=scenario(), rollout={"rollout/ion-api.yaml": rollout}, seed=rng.randrange(10**6)
    ) as sb:
        emu = sb.emu
        stop = threading.Event()

        def load() -> None:
            # Bursts every 50 ms keep the rate steady at the scale of a window.
            burst = max(1, round(rate / 20))
            while not stop.is_set():
                started = time.monotonic()
                emu.load(SERVICE, burst, tag="canary", concurrency=2)
                emu.load(SERVICE, max(1, burst // 5), concurrency=1)
                stop.wait(max(0.0, 0.05 - (time.monotonic() - started)))

        lines: list[tuple[float, str]] = []
        cmd = [sys.executable, "-m", "reconciler", "--repo", str(sb.repo), "watch"]
        cmd += ["--interval", f"{interval:g}s", "--duration", "10m"]
        loader = threading.Thread(target=load, daemon=True)
        loader.start()
        proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=dict(os.environ),
        )

        def read() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.append((time.monotonic(), line.rstrip("\n")))

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            deadline = time.monotonic() + 60
            while not any(" tick 1:" in text for _, text in lines):
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"watch did not tick: {[t for _, t in lines]}")
                time.sleep(0.01)
            time.sleep(2 * interval + rng.uniform(0, interval))
            emu.behave(CANARY, error_rate=0.3)
            breach = time.monotonic()
            last_tick = max(at for at, text in lines if " tick " in text)
            visible = breach + CONSECUTIVE * window
            live: float | None = None
            live_wall = 0.0
            timeout = visible + 3 * interval + 10
            while time.monotonic() < timeout:
                if canary_percent(emu) == 0:
                    live, live_wall = time.monotonic(), time.time()
                    break
                time.sleep(0.01)
        finally:
            stop.set()
            proc.send_signal(signal.SIGTERM)
            try:
                code = proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                code = proc.wait()
            reader.join(timeout=5)
            loader.join(timeout=10)
        ticks = sum(1 for _, text in lines if " tick " in text)
        status = read_status(sb.repo, SERVICE)
        judged = [w.end for w in (status.windows if status else ()) if w.revision == CANARY]
        reaction = live_wall - max(judged).timestamp() if live is not None and judged else None
        rolled = next((text for _, text in lines if "ROLLED BACK" in text), "")
        return Result(
            phase=breach - last_tick,
            latency=None if live is None else live - visible,
            since_breach=None if live is None else live - breach,
            reaction=reaction,
            ticks=ticks,
            exit_code=code,
            rolled_back_line=rolled,
        )


def _s(seconds: float | None) -> str:
    return "no rollback" if seconds is None else f"{seconds:+.2f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--interval", type=float, default=2.0, help="watch interval = window, s")
    parser.add_argument("--reps", type=int, default=3, help="repetitions")
    parser.add_argument("--rate", type=float, default=100.0, help="canary requests per second")
    parser.add_argument("--seed", type=int, default=20260301)
    parser.add_argument("--quick", action="store_true", help="one repetition")
    args = parser.parse_args()
    reps = 1 if args.quick else args.reps
    rng = random.Random(args.seed)
    started = time.monotonic()
    target = args.interval + 2.0
    print(
        f"watch --interval {args.interval:g}s, gates.window {args.interval:g}s, "
        f"consecutive_failures {CONSECUTIVE}, error_rate max 5%; canary load ~{args.rate:g} req/s; "
        f"breach: error_rate 0 -> 0.3"
    )
    print()
    print(
        "| rep | breach after last tick, s | rollback live - breach visible, s "
        "| rollback live - breach, s | rollback live - deciding window closed, s | ticks | exit |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|")
    results = []
    for rep in range(1, reps + 1):
        r = one(args.interval, args.rate, rng)
        results.append(r)
        print(
            f"| {rep} | {r.phase:.2f} | {_s(r.latency)} | {_s(r.since_breach)} "
            f"| {_s(r.reaction)} | {r.ticks} | {r.exit_code} |",
            flush=True,
        )
    print()
    for r in results[:1]:
        print(f"watch said: {r.rolled_back_line}")
    got = [r.latency for r in results if r.latency is not None]
    if got:
        print(
            f"rollback live - breach visible: median {statistics.median(got):+.2f}s, "
            f"max {max(got):+.2f}s (target <= interval + 2s = {target:g}s)"
        )
    met = len(got) == len(results) and max(got) <= target
    verdict = "met" if met else "NOT met"
    print(f"target: rollback within one interval plus 2 s of the breach being visible: {verdict}")
    print(f"elapsed {time.monotonic() - started:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
