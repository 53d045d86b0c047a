"""How many API calls does one steady `apply` tick make for a fleet in one region?

For N services (default 1,000) the script starts the project's emulator as its own process
(`reconcile emulator serve`) with N services at a 95/5 canary split, a temp repo with N rollout
files (the repository's `rollout/ion-api.yaml`, names replaced) and the `state/` a first apply
writes. Then it runs steady ticks: `apply_all` with the Cloud Monitoring provider against the
emulator, no probes and no git (commits are another benchmark's subject), nothing to change.
Per tick it reports, from the emulator's own per-method counter, the read calls (Cloud Run
Admin API) and the metric queries (ListTimeSeries), the wall time (median of `--reps`) and the
process's peak resident memory. With `--git` the repo is a git repository and each tick
commits as `apply` does (no remote): the commits per tick are reported too (issue 15: one per
run at most, none when nothing is new).

The target is issue 15's: at most 20 Cloud Run read calls per tick for 1,000 services in one
region (writes excluded); before reads by list it was 2 per service (2,000).

Run: `python benchmarks/fleet_tick.py [--services 1000] [--reps 3] [--git]`.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import plan_scale as ps  # the same fleet set-up as the plan benchmark

from reconciler.emulator.cli import admin_call
from reconciler.testing.emulator import emulator_process

READS = {"GetService", "ListServices", "GetRevision", "ListRevisions", "GetOperation"}


def tick(repo: Path, use_git: bool = False) -> None:
    """One steady `apply` tick: metrics measured, nothing to change (git: commit, no push)."""
    from reconciler.backends.cloudrun import CloudRunBackend
    from reconciler.gitops import GitOps
    from reconciler.reconcile import Context, apply_all
    from reconciler.runtime import metrics_factory, utc_now

    ctx = Context(
        repo=repo,
        backend=CloudRunBackend(),
        clock=utc_now,
        metrics_for=metrics_factory(),
        run_probes=False,
        git=GitOps(repo) if use_git else None,
    )
    result = apply_all(ctx)
    bad = [o for o in result.outcomes if o.error or o.applied]
    if bad:
        raise RuntimeError(f"a steady tick changed or failed something: {bad[0]}")


def init_git(repo: Path) -> None:
    """The fleet's repo as git: everything so far in one commit, as a human would have it."""
    who = ["-c", "user.name=fleet", "-c", "user.email=fleet@example.invalid"]
    subprocess.run(["git", "init", "--quiet", "--initial-branch", "main", str(repo)], check=True)
    subprocess.run(["git", "-C", str(repo), "add", "--all"], check=True)
    subprocess.run(["git", "-C", str(repo), *who, "commit", "--quiet", "-m", "fleet"], check=True)


def commit_count(repo: Path) -> int:
    out = subprocess.run(
        ["git", "-C", str(repo), "rev-list", "--count", "HEAD"],
        check=True,
        capture_output=True,
        text=True,
    )
    return int(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--git", action="store_true", help="commit each tick; count commits")
    args = parser.parse_args()
    n = args.services
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fleet-tick-") as tmp:
        base = Path(tmp)
        scenario_file = base / "scenario.yaml"
        scenario_file.write_text(yaml.safe_dump(ps.scenario(n)), encoding="utf-8")
        repo = base / "repo"
        ps.write_repo(repo, n)
        with emulator_process("--scenario", str(scenario_file)) as env:
            os.environ.update(env)
            os.environ["RECONCILE_METRICS_LAG"] = "0s"
            http_url = env["CLOUD_RUN_EMULATOR_HTTP"]
            ps.seed_state(repo)
            if args.git:
                init_git(repo)
            walls: list[float] = []
            counted: dict[str, int] = {}
            commits: list[int] = []
            for _ in range(args.reps):
                admin_call(http_url, "reset-counters", {})
                before = commit_count(repo) if args.git else 0
                t0 = time.perf_counter()
                tick(repo, args.git)
                walls.append(time.perf_counter() - t0)
                counted = ps.calls(http_url)
                commits.append(commit_count(repo) - before if args.git else 0)
    reads = sum(v for k, v in counted.items() if k in READS)
    queries = counted.get("ListTimeSeries", 0)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"steady apply tick, {n:,} services in one region; median of {args.reps}")
    print()
    print("| services | tick, median s | Cloud Run read calls | metric queries | calls by method "
          "| peak RSS, MiB |")  # fmt: skip
    print("|---:|---:|---:|---:|---|---:|")
    detail = ", ".join(f"{k} {v}" for k, v in sorted(counted.items()))
    print(
        f"| {n:,} | {statistics.median(walls):.2f} | {reads} | {queries} | {detail} "
        f"| {peak_mib:.0f} |"
    )
    print()
    if args.git:
        print(f"git commits per tick: {', '.join(map(str, commits))}")
    met = "met" if reads <= 20 else "NOT met"
    print(f"target: at most 20 read calls per tick for {n:,} services in one region: {met}")
    print(f"elapsed {time.perf_counter() - started:.1f}s")


if __name__ == "__main__":
    main()
