"""How long does the CLI take from a cold process, next to a bare interpreter?

Each command runs as a fresh subprocess with this interpreter, `--runs` times, the commands
taking turns so machine noise spreads evenly; the figure is the median wall time (the fastest
run is shown too):

- baseline: `python -c pass`;
- `reconcile --help`;
- `reconcile validate`, in a copy of this repository's rollout/ (the ion-api example);
- `reconcile plan --service ion-api` in the same copy, against the project's emulator running
  as its own process (`reconcile emulator serve`, the built-in ion-api scenario), reached
  through CLOUD_RUN_EMULATOR_HOST as a user would.

`reconcile` is the console script installed next to this interpreter (as a user types it);
without one, `python -m reconciler`. Target: `reconcile --help` under 0.3 s.

Run: `python benchmarks/cold_start.py [--runs 10]`, or `--quick` for 3 runs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from reconciler.testing.emulator import emulator_process

ROOT = Path(__file__).resolve().parents[1]
TARGET_HELP = 0.3


def reconcile_command() -> tuple[list[str], str]:
    """The console script beside this interpreter, else `python -m reconciler`."""
    script = Path(sys.executable).with_name("reconcile")
    if script.is_file():
        return [str(script)], "reconcile (console script)"
    return [sys.executable, "-m", "reconciler"], "python -m reconciler"


def timed(argv: list[str], cwd: Path, env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{argv} exited {done.returncode}: {done.stderr.strip()[:300]}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="runs per command")
    parser.add_argument("--quick", action="store_true", help="3 runs per command")
    args = parser.parse_args()
    runs = 3 if args.quick else args.runs
    started = time.perf_counter()
    reconcile, how = reconcile_command()
    with tempfile.TemporaryDirectory(prefix="cold-start-") as tmp, emulator_process() as emu_env:
        repo = Path(tmp)
        shutil.copytree(ROOT / "rollout", repo / "rollout")
        env = {**os.environ, **emu_env}
        commands = {
            "python -c pass (baseline)": [sys.executable, "-c", "pass"],
            "reconcile --help": [*reconcile, "--help"],
            "reconcile validate": [*reconcile, "validate"],
            "reconcile plan --service ion-api": [*reconcile, "plan", "--service", "ion-api"],
        }
        times: dict[str, list[float]] = {name: [] for name in commands}
        for argv in commands.values():  # one untimed run each: disk caches, .pyc files
            timed(argv, repo, env)
        for _ in range(runs):
            for name, argv in commands.items():
                times[name].append(timed(argv, repo, env))
    base = statistics.median(times["python -c pass (baseline)"])
    print(f"CLI cold start, {how}; Python {sys.version.split()[0]}")
    print(f"median of {runs} runs per command, commands taking turns")
    print()
    print("| command | median s | fastest s | median / baseline |")
    print("|---|---:|---:|---:|")
    for name, got in times.items():
        med = statistics.median(got)
        print(f"| `{name}` | {med:.3f} | {min(got):.3f} | {med / base:.1f}x |")
    print()
    help_s = statistics.median(times["reconcile --help"])
    met = "met" if help_s < TARGET_HELP else "NOT met"
    print(f"target: `reconcile --help` under {TARGET_HELP:g} s: {met} ({help_s:.3f} s)")
    print(f"elapsed {time.perf_counter() - started:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
