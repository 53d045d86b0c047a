"""How does `plan` scale with the number of services, next to the bare API floor?

For N services (default 1, 10, 100, 1,000) the script starts the project's emulator as its own
process (`reconcile emulator serve`, so the API server does not share this process's CPU or
GIL, as Cloud Run would not), with N services at a 95/5 canary split, and a temp repo with N
rollout files (the repository's `rollout/ion-api.yaml` with the name replaced) plus the
state/ that one `apply` writes. Then, alternately, in the same run:

- **plan**: what `reconcile plan` does after its imports: build `CloudRunBackend()`, call
  `plan_all(repo, (), backend, now, max_workers=W)` (load and validate every rollout file,
  read state/, read every service concurrently, plan) and render the text plan;
- **floor**: the same reads made directly with the official `google-cloud-run` clients
  (new `ServicesClient` and `RevisionsClient` on a plain insecure channel): `GetService` and
  `ListRevisions` per service, on a thread pool of the same size W.

Wall time is the median of `--reps` repetitions (after one untimed warm-up of each, which
pays the one-time imports and channel set-up of this process). API calls per service come
from the emulator's own per-method counter. Client CPU is this process's CPU time (all its
threads, not the emulator's): a figure that machine load disturbs less than wall time.

Run: `python benchmarks/plan_scale.py [--sizes 1,10,100,1000] [--reps 5] [--workers 16]`,
or `--quick` for N = 1, 10 and 3 repetitions.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from reconciler.emulator.cli import admin_call
from reconciler.testing.emulator import emulator_process

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "rollout" / "ion-api.yaml"
PROJECT, REGION = "naeda-genesis", "us-central1"


def names(i: int) -> tuple[str, str, str]:
    """Service, stable revision and canary revision of the i-th service."""
    svc = f"svc-{i:04d}"
    return svc, f"{svc}-00041-abc", f"{svc}-00042-xyz"


def scenario(n: int) -> dict[str, Any]:
    """N services, each at 95/5 with the `stable` and `canary` tags, as the rollout wants."""
    services = []
    for i in range(n):
        svc, stable, canary = names(i)
        services.append(
            {
                "name": svc,
                "revisions": [{"name": stable}, {"name": canary}],
                "traffic": {stable: 95, canary: 5},
                "tags": {"stable": stable, "canary": canary},
            }
        )
    # Quotas off, on both sides: this measures the client's own cost against the bare API
    # floor; under Cloud Run's 1,000 reads a minute both would only measure the quota.
    return {
        "project": PROJECT,
        "region": REGION,
        "quotas": {"read_per_minute": 0, "write_per_minute": 0},
        "services": services,
    }


def write_repo(repo: Path, n: int) -> None:
    """N rollout files: the repository's example with the service and revision names replaced."""
    template = EXAMPLE.read_text(encoding="utf-8")
    (repo / "rollout").mkdir(parents=True)
    for i in range(n):
        svc, stable, canary = names(i)
        text = (
            template.replace("ion-api-00041-abc", stable)
            .replace("ion-api-00042-xyz", canary)
            .replace("ion-api", svc)
        )
        (repo / "rollout" / f"{svc}.yaml").write_text(text, encoding="utf-8")


def calls(http_url: str) -> dict[str, int]:
    """The emulator's per-method counter."""
    counted: dict[str, int] = admin_call(http_url, "status", {})["calls"]
    return counted


def seed_state(repo: Path) -> None:
    """One `apply` without git, metrics or probes: writes state/<svc>/status.yaml, as a real
    repository has after its first run (the live split already matches, so no write)."""
    from reconciler.backends.cloudrun import CloudRunBackend
    from reconciler.reconcile import Context, apply_all
    from reconciler.runtime import utc_now

    ctx = Context(repo=repo, backend=CloudRunBackend(), clock=utc_now, run_probes=False)
    result = apply_all(ctx)
    bad = [o for o in result.outcomes if o.error or o.applied]
    if bad:
        raise RuntimeError(f"seeding state/ did not leave the services in sync: {bad[0]}")


def product_plan(repo: Path, n: int, workers: int) -> None:
    """What `reconcile plan` does after its imports."""
    from reconciler.backends.cloudrun import CloudRunBackend
    from reconciler.reconcile import plan_all
    from reconciler.runtime import utc_now
    from reconciler.views import render_plan

    plan = plan_all(repo, (), CloudRunBackend(), utc_now(), max_workers=workers)
    text = render_plan(plan, "text")
    if plan.errors or len(plan.services) != n or plan.has_changes or not text:
        raise RuntimeError(f"unexpected plan: {plan.errors[:1]} {len(plan.services)} services")


def floor_reads(host: str, n: int, workers: int) -> None:
    """The same reads with the official clients and nothing else: GetService, ListRevisions."""
    import grpc
    from google.cloud import run_v2
    from google.cloud.run_v2.services.revisions.transports import RevisionsGrpcTransport
    from google.cloud.run_v2.services.services.transports import ServicesGrpcTransport

    services = run_v2.ServicesClient(
        transport=ServicesGrpcTransport(channel=grpc.insecure_channel(host))
    )
    revisions = run_v2.RevisionsClient(
        transport=RevisionsGrpcTransport(channel=grpc.insecure_channel(host))
    )

    def read(i: int) -> int:
        name = f"projects/{PROJECT}/locations/{REGION}/services/{names(i)[0]}"
        services.get_service(name=name)
        return len(list(revisions.list_revisions(parent=name)))

    with ThreadPoolExecutor(max_workers=max(1, min(workers, n))) as pool:
        if sum(pool.map(read, range(n))) != 2 * n:
            raise RuntimeError("floor: unexpected revision count")


@dataclass
class Row:
    n: int
    plan_s: list[float]
    floor_s: list[float]
    plan_cpu: list[float]
    floor_cpu: list[float]
    plan_calls: dict[str, int]
    floor_calls: dict[str, int]


def timed(fn: Callable[[], None], http_url: str) -> tuple[float, float, dict[str, int]]:
    """Wall time, this process's CPU time (all threads; not the emulator's), API calls."""
    admin_call(http_url, "reset-counters", {})
    cpu, start = time.process_time(), time.perf_counter()
    fn()
    elapsed, used = time.perf_counter() - start, time.process_time() - cpu
    return elapsed, used, calls(http_url)


def measure(n: int, reps: int, workers: int) -> Row:
    with tempfile.TemporaryDirectory(prefix="plan-scale-") as tmp:
        base = Path(tmp)
        scenario_file = base / "scenario.yaml"
        scenario_file.write_text(yaml.safe_dump(scenario(n)), encoding="utf-8")
        repo = base / "repo"
        write_repo(repo, n)
        with emulator_process("--scenario", str(scenario_file)) as env:
            os.environ.update(env)
            # The client's pacing off too (see `scenario`): the floor is not paced either.
            os.environ["RECONCILE_READS_PER_MINUTE"] = "0"
            os.environ["RECONCILE_WRITES_PER_MINUTE"] = "0"
            host, http_url = env["CLOUD_RUN_EMULATOR_HOST"], env["CLOUD_RUN_EMULATOR_HTTP"]
            seed_state(repo)

            def plan() -> None:
                product_plan(repo, n, workers)

            def floor() -> None:
                floor_reads(host, n, workers)

            plan(), floor()  # warm-up, untimed
            row = Row(n, [], [], [], [], {}, {})
            for rep in range(reps):
                # Alternate the order so neither side always runs on a warmer emulator.
                order = [(plan, row.plan_s, row.plan_cpu), (floor, row.floor_s, row.floor_cpu)]
                for fn, wall, cpu in order if rep % 2 == 0 else reversed(order):
                    elapsed, used, counted = timed(fn, http_url)
                    wall.append(elapsed)
                    cpu.append(used)
                    if fn is plan:
                        row.plan_calls = counted
                    else:
                        row.floor_calls = counted
            return row


def per_service(counted: dict[str, int], n: int) -> str:
    total = sum(counted.values())
    detail = ", ".join(f"{k} {v / n:g}" for k, v in sorted(counted.items()))
    return f"{total / n:g} ({detail})"


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sizes", default="1,10,100,1000", help="comma-separated N")
    parser.add_argument("--reps", type=int, default=5, help="timed repetitions per N")
    parser.add_argument("--workers", type=int, default=16, help="thread pool size, both sides")
    parser.add_argument("--quick", action="store_true", help="N = 1, 10; 3 repetitions")
    args = parser.parse_args()
    sizes = [1, 10] if args.quick else [int(s) for s in args.sizes.split(",")]
    reps = 3 if args.quick else args.reps
    started = time.perf_counter()
    print(
        f"plan vs bare floor; emulator in its own process; pool {args.workers}; "
        f"median of {reps} repetitions"
    )
    print()
    print(
        "| services | plan, median s | floor, median s | ratio plan/floor "
        "| plan: API calls per service | floor: API calls per service "
        "| client CPU ms per service, plan / floor |"
    )
    print("|---:|---:|---:|---:|---|---|---:|")
    ratios = {}
    for n in sizes:
        row = measure(n, reps, args.workers)
        p, f = statistics.median(row.plan_s), statistics.median(row.floor_s)
        ratios[n] = p / f
        print(
            f"| {n:,} | {p:.3f} | {f:.3f} | {p / f:.2f} | {per_service(row.plan_calls, n)} "
            f"| {per_service(row.floor_calls, n)} "
            f"| {1000 * statistics.median(row.plan_cpu) / n:.2f} / "
            f"{1000 * statistics.median(row.floor_cpu) / n:.2f} |",
            flush=True,
        )
    print()
    largest = max(sizes)
    met = "met" if ratios[largest] <= 2 else "NOT met"
    print(f"target: plan for {largest:,} services within 2x of the floor: {met}")
    print(f"elapsed {time.perf_counter() - started:.1f}s")


if __name__ == "__main__":
    main()
