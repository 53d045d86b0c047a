"""One `apply` tick of a fleet in one region, next to its floor measured in the same run.

For N services (default 1,000) the script starts the project's emulator as its own process
(`reconcile emulator serve`) with N services at a 95/5 canary split and a git repository with
N rollout files (the repository's `rollout/ion-api.yaml`, names replaced) and the `state/` a
first apply wrote (stage starts spread 50 ms apart, so no two services share a metric query),
committed. Then, taking turns with its floor (median of `--reps`):

- **steady tick**: the emulator clock moves 5 minutes, then `apply_all` with the Cloud
  Monitoring provider, git (commits, no push), no probes, nothing to change; reported apart
  for ticks with nothing new (nothing written) and ticks that record (no traffic flows, so
  growing INCONCLUSIVE streaks are news every other tick or so). Floor: the same Cloud Run
  reads (ListServices and ListRevisions `services/-`, every page of 1,000) and the very
  ListTimeSeries requests the tick made, replayed with the official clients on a pool of the
  same size (16); then the same files written (temporary file and rename) and one
  `git commit` of them.
- **change tick**: every rollout file goes from 5% to 10% (`force: true`) in one human
  commit, then `apply_all` (1,000 traffic writes, and `force` removed from each file). Floor,
  on a fresh emulator: the same reads, one UpdateService per service (the 90/10 split, with
  its etag) on the pool, each operation awaited, the same files and one `git commit`.
- **quota-bound change tick**: the change tick again with the emulator's Admin API quotas at
  the defaults docs/emulator.md gives (1,000 reads and 60 writes a minute per project and
  region) and the client pacing at the same figures. At 60 writes a minute a 1,000-service
  change takes about 16 minutes whoever writes, so it runs on the emulator's virtual clock:
  the client's token buckets read emulator time and wait by moving it (wall time is printed
  too). It reports the calls by method, the client's retries, the services that failed, and
  the time against the write quota's own floor.

Wall times are medians; CPU seconds (medians) are this process's and its git processes' (not
the emulator's); API calls come from the emulator's per-method counter; peak memory is this
process's maximum resident set.

Run: `python benchmarks/fleet_tick.py [--services 1000] [--reps 3] [--quota-services N]
[--no-quota] [--no-commit]`.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import plan_scale as ps  # the same fleet as the plan benchmark

from reconciler.emulator.cli import admin_call
from reconciler.testing.emulator import emulator_process

READS = {"GetService", "ListServices", "GetRevision", "ListRevisions", "GetOperation"}
WORKERS = 16
QUOTAS = {"read_per_minute": 1000, "write_per_minute": 60}


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def scenario_file(base: Path, n: int, quotas: dict[str, int] | None = None) -> Path:
    data = ps.scenario(n)
    if quotas is not None:
        data["quotas"] = quotas
    path = base / f"scenario-{n}-{'quota' if quotas else 'free'}.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def make_repo(repo: Path, n: int) -> str:
    """N rollout files and the state/ one apply writes, committed; returns the commit.

    The files have no `dependencies:` (the example's gateway is not served here)."""
    ps.write_repo(repo, n)
    for path in (repo / "rollout").glob("*.yaml"):
        text = path.read_text(encoding="utf-8")
        path.write_text(re.sub(r"(?m)^dependencies:.*\n(?:[ #].*\n)*", "", text), "utf-8")
    git(repo.parent, "init", "-q", "-b", "main", str(repo))
    git(repo, "config", "gc.auto", "0")  # no background gc racing the clean-up
    ps.seed_state(repo)
    spread_stage_starts(repo)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "fleet and its first observed state")
    return git(repo, "rev-parse", "HEAD")


def spread_stage_starts(repo: Path) -> None:
    """Each service's stage started 50 ms before the previous one's, as in a fleet whose
    canaries were started at different times. A tick measures windows aligned on each
    service's stage start, so no two services share a metric query (2 to 6 queries per
    service a tick); one seeding run would have started them all at the same instant, and
    1,000 services would then share a handful of queries."""
    from dataclasses import replace

    from reconciler import state as st

    for ref in st.state_refs(repo):
        status = st.read_status(repo, ref)
        assert status is not None and status.stage_since is not None
        i = int(ref.service.rsplit("-", 1)[-1])
        when = status.stage_since - timedelta(milliseconds=50 * i)
        st.write_status(repo, ref, replace(status, stage_since=when))


# --- the product ---------------------------------------------------------------------------
class Recorder:
    """The official Monitoring client, keeping a copy of every ListTimeSeries request."""

    def __init__(self) -> None:
        from google.cloud import monitoring_v3

        from reconciler.clients import metric_client

        self.sent: list[bytes] = []
        self.lock = threading.Lock()
        client = metric_client()
        recorder = self
        pb = monitoring_v3.ListTimeSeriesRequest.pb

        class Recording(type(client)):  # type: ignore[misc]
            def list_time_series(self, request: Any = None, **kw: Any) -> Any:
                # Serialized (a few microseconds): a proto-plus copy of each request would be
                # the benchmark's CPU charged to the tick.
                data = pb(request).SerializeToString()
                with recorder.lock:
                    recorder.sent.append(data)
                return super().list_time_series(request=request, **kw)

        self.client = Recording(transport=client.transport)

    def requests(self) -> list[Any]:
        """The requests the tick made, to replay."""
        from google.cloud import monitoring_v3

        return [monitoring_v3.ListTimeSeriesRequest.deserialize(d) for d in self.sent]


def product_tick(
    repo: Path, backend: Any = None, recorder: Recorder | None = None, *, commit: bool = True
) -> Any:
    """One `apply` run with git (no push; with `commit` False, no git at all: the state files
    are then committed afterwards, untimed), the Cloud Monitoring provider, no probes."""
    from reconciler.backends.cloudrun import CloudRunBackend
    from reconciler.gitops import GitOps
    from reconciler.metrics.cloud_monitoring import CloudMonitoringProvider
    from reconciler.reconcile import Context, apply_all
    from reconciler.runtime import utc_now

    client = recorder.client if recorder is not None else None
    provider = CloudMonitoringProvider(client=client)
    ctx = Context(
        repo=repo,
        backend=backend or CloudRunBackend(),
        clock=utc_now,
        metrics_for=lambda _config: provider,
        git=GitOps(repo) if commit else None,
        push=False,
        run_probes=False,
        max_workers=WORKERS,
    )
    result = apply_all(ctx)
    if not commit:
        git(repo, "add", "-A", "state", "rollout")
        git(repo, "commit", "-q", "--allow-empty", "-m", "the tick's state, committed untimed")
    return result


def change_rollouts(repo: Path, n: int) -> None:
    """A human's commit: every rollout file from 5% to 10%, forced (no traffic flows in the
    emulator, so the gates have no evidence to pass the bake with)."""
    for i in range(n):
        path = repo / "rollout" / f"{ps.names(i)[0]}.yaml"
        text = path.read_text(encoding="utf-8")
        text = text.replace("canary_percent: 5 ", "canary_percent: 10") + "force: true\n"
        path.write_text(text, "utf-8")
    git(repo, "commit", "-q", "-am", "every canary to 10%")


def touched(repo: Path, before: str) -> dict[str, bytes]:
    """The files the run committed since `before` (state files, rollout-file edits), with
    their content now."""
    names = git(repo, "diff", "--name-only", before, "HEAD", "--", "state", "rollout")
    return {
        name: (repo / name).read_bytes() for name in names.splitlines() if (repo / name).exists()
    }


# --- the floor -----------------------------------------------------------------------------
def clients(host: str) -> tuple[Any, Any, Any]:
    import grpc
    from google.cloud import monitoring_v3, run_v2
    from google.cloud.monitoring_v3.services.metric_service.transports import (
        MetricServiceGrpcTransport,
    )
    from google.cloud.run_v2.services.revisions.transports import RevisionsGrpcTransport
    from google.cloud.run_v2.services.services.transports import ServicesGrpcTransport

    return (
        run_v2.ServicesClient(transport=ServicesGrpcTransport(channel=grpc.insecure_channel(host))),
        run_v2.RevisionsClient(
            transport=RevisionsGrpcTransport(channel=grpc.insecure_channel(host))
        ),
        monitoring_v3.MetricServiceClient(
            transport=MetricServiceGrpcTransport(channel=grpc.insecure_channel(host))
        ),
    )


def floor_reads(services: Any, revisions: Any, pool: ThreadPoolExecutor) -> list[Any]:
    """ListServices and ListRevisions (`services/-`) for the region, every page, together."""
    from google.cloud import run_v2

    parent = f"projects/{ps.PROJECT}/locations/{ps.REGION}"
    listed = pool.submit(
        lambda: list(
            services.list_services(
                request=run_v2.ListServicesRequest(parent=parent, page_size=1000)
            )
        )
    )
    revs = pool.submit(
        lambda: list(
            revisions.list_revisions(
                request=run_v2.ListRevisionsRequest(parent=f"{parent}/services/-", page_size=1000)
            )
        )
    )
    revs.result()
    return listed.result()


def floor_record(repo: Path, files: dict[str, bytes], commit: bool = True) -> None:
    """The same files written as the product writes them, and one commit."""
    if not files:
        return  # the tick committed nothing either
    for name, data in files.items():
        path = repo / name
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
    if commit:
        git(repo, "add", "--", "state", "rollout")
        git(repo, "commit", "-q", "-m", "floor: one commit for the tick")


def floor_steady(
    host: str, replay: list[Any], repo: Path, files: dict[str, bytes], commit: bool
) -> None:
    services, revisions, metrics = clients(host)
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        queries = [
            pool.submit(lambda r=r: list(metrics.list_time_series(request=r))) for r in replay
        ]
        floor_reads(services, revisions, pool)
        for q in queries:
            q.result()
    floor_record(repo, files, commit)


def floor_change(host: str, repo: Path, files: dict[str, bytes], commit: bool) -> None:
    from google.cloud import run_v2
    from google.protobuf import field_mask_pb2

    services, revisions, _ = clients(host)
    kind = run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        listed = floor_reads(services, revisions, pool)

        def update(svc: Any) -> None:
            sid = svc.name.rsplit("/", 1)[-1]
            _, stable, canary = ps.names(int(sid.rsplit("-", 1)[-1]))
            body = run_v2.Service(
                name=svc.name,
                etag=svc.etag,
                traffic=[
                    run_v2.TrafficTarget(type_=kind, revision=stable, percent=90, tag="stable"),
                    run_v2.TrafficTarget(type_=kind, revision=canary, percent=10, tag="canary"),
                ],
            )
            request = run_v2.UpdateServiceRequest(
                service=body, update_mask=field_mask_pb2.FieldMask(paths=["traffic"])
            )
            services.update_service(request=request).result()

        for f in [pool.submit(update, svc) for svc in listed]:
            f.result()
    floor_record(repo, files, commit)


# --- runs ----------------------------------------------------------------------------------
@contextmanager
def emulator(scenario: Path) -> Iterator[dict[str, str]]:
    with emulator_process("--scenario", str(scenario)) as env:
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            yield env
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


CPU: list[float] = []
"""CPU seconds of each `timed` call, in order: this process (every thread) and the git
processes it waited for. The emulator is another process, so this is the product's or the
floor's own side, which the machine's load does not inflate as it does wall time."""


def cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start, cpu = time.perf_counter(), cpu_seconds()
    out = fn()
    CPU.append(cpu_seconds() - cpu)
    return time.perf_counter() - start, out


@dataclass
class Row:
    name: str
    product: list[float]
    floor: list[float]
    calls: dict[str, int]
    commits: int
    detail: str = ""
    product_cpu: list[float] = field(default_factory=list)
    floor_cpu: list[float] = field(default_factory=list)


def check(result: Any, *, changed: bool) -> None:
    bad = [o for o in result.outcomes if o.error or (o.applied != changed)]
    if bad:
        raise RuntimeError(f"unexpected tick outcome: {bad[0]}")


def steady(base: Path, n: int, reps: int, commit: bool) -> list[Row]:
    """Steady ticks 5 minutes apart until each kind has `reps`: ticks with nothing new (no
    file written, no commit) and ticks that record (no traffic flows, so each new whole gate
    window adds to the INCONCLUSIVE streaks, which is news every other tick or so)."""
    repo, floor_repo = base / "steady", base / "steady-floor"
    rows = {
        False: Row("steady tick, nothing new", [], [], {}, 0),
        True: Row("steady tick, records", [], [], {}, 0),
    }
    with emulator(scenario_file(base, n)) as env:
        host, http = env["CLOUD_RUN_EMULATOR_HOST"], env["CLOUD_RUN_EMULATOR_HTTP"]
        make_repo(repo, n)
        git(base, "clone", "-q", str(repo), str(floor_repo))
        product_tick(repo, commit=commit)  # warm-up (imports, channels), untimed
        for _ in range(4 * reps):
            if all(len(r.product) >= reps for r in rows.values()):
                break
            admin_call(http, "clock", {"advance_seconds": 300})
            before = git(repo, "rev-parse", "HEAD")
            recorder = Recorder()
            admin_call(http, "reset-counters", {})
            wall, result = timed(
                lambda: product_tick(repo, recorder=recorder, commit=commit)  # noqa: B023
            )
            check(result, changed=False)
            files = touched(repo, before)
            row = rows[bool(files)]
            cpu = CPU[-1]
            if len(row.product) >= reps:
                continue
            row.calls = ps.calls(http)
            # Without git the tick's state is committed afterwards, untimed: not the tick's.
            row.commits = int(git(repo, "rev-list", "--count", f"{before}..HEAD")) - (not commit)
            git(floor_repo, "fetch", "-q", "origin")
            git(floor_repo, "reset", "-q", "--hard", before)
            replay = recorder.requests()
            floor_wall, _ = timed(
                lambda: floor_steady(host, replay, floor_repo, files, commit)  # noqa: B023
            )
            row.product.append(wall)
            row.floor.append(floor_wall)
            row.product_cpu.append(cpu)
            row.floor_cpu.append(CPU[-1])
            row.detail = f"{len(replay)} metric queries, {len(files)} files written"
    return [r for r in rows.values() if r.product]


def change(base: Path, n: int, reps: int, commit: bool) -> Row:
    repo, floor_repo = base / "change", base / "change-floor"
    row = Row("change tick (5% -> 10%)", [], [], {}, 0)
    scenario = scenario_file(base, n)
    with emulator(scenario):
        seeded = make_repo(repo, n)
    git(base, "clone", "-q", str(repo), str(floor_repo))
    for rep in range(reps + 1):  # the first is a warm-up
        git(repo, "reset", "-q", "--hard", seeded)
        change_rollouts(repo, n)
        before = git(repo, "rev-parse", "HEAD")
        with emulator(scenario) as env:
            admin_call(env["CLOUD_RUN_EMULATOR_HTTP"], "reset-counters", {})
            wall, result = timed(lambda: product_tick(repo, commit=commit))
            cpu = CPU[-1]
            check(result, changed=True)
            calls = ps.calls(env["CLOUD_RUN_EMULATOR_HTTP"])
        files = touched(repo, before)
        commits = int(git(repo, "rev-list", "--count", f"{before}..HEAD")) - (not commit)
        git(floor_repo, "fetch", "-q", "origin")
        git(floor_repo, "reset", "-q", "--hard", before)
        with emulator(scenario) as env:
            floor_wall, _ = timed(
                lambda: floor_change(
                    env["CLOUD_RUN_EMULATOR_HOST"],
                    floor_repo,
                    files,  # noqa: B023
                    commit,
                )
            )
        if rep:
            row.product.append(wall)
            row.floor.append(floor_wall)
            row.product_cpu.append(cpu)
            row.floor_cpu.append(CPU[-1])
            row.calls, row.commits = calls, commits
            row.detail = f"{len(files)} files written"
    return row


class EmulatorTime:
    """The pacing's clock on emulator time: waiting moves the emulator's clock forward (at
    most once for waiters with the same deadline), so a quota-bound run plays out at once."""

    def __init__(self, http: str) -> None:
        from reconciler.runtime import utc_now

        self.http = http
        self.now_utc = utc_now
        self.lock = threading.Lock()
        self.moved = 0.0

    def now(self) -> float:
        return self.now_utc().timestamp()

    def sleep(self, seconds: float) -> None:
        until = self.now() + seconds
        with self.lock:
            behind = until - self.now()
            if behind > 0:
                admin_call(self.http, "clock", {"advance_seconds": behind})
                self.moved += behind


def quota_change(base: Path, n: int) -> str:
    """The change tick with the Admin API quotas on, on the emulator's virtual clock."""
    from reconciler.backends.cloudrun import CloudRunBackend

    repo = base / "quota"
    scenario = scenario_file(base, n, QUOTAS)
    with emulator(scenario):
        make_repo(repo, n)  # seeding reads are paced on the wall clock: not measured
    change_rollouts(repo, n)
    with emulator(scenario) as env:
        http = env["CLOUD_RUN_EMULATOR_HTTP"]
        clock = EmulatorTime(http)
        backend = CloudRunBackend(
            reads_per_minute=QUOTAS["read_per_minute"],
            writes_per_minute=QUOTAS["write_per_minute"],
            pace_clock=clock.now,
            pace_sleep=clock.sleep,
        )
        started = clock.now()
        # No git here: the quota is about API calls (commits are the other tables' subject).
        wall, result = timed(lambda: product_tick(repo, backend=backend, commit=False))
        took = clock.now() - started
        calls = ps.calls(http)
    failed = [o for o in result.outcomes if o.error]
    exhausted = sum("quota" in (o.error or "") for o in failed)
    writes = calls.get("UpdateService", 0)
    floor = max(0.0, writes - QUOTAS["write_per_minute"]) / QUOTAS["write_per_minute"] * 60
    detail = ", ".join(f"{k} {v}" for k, v in sorted(calls.items()))
    return (
        f"| {n:,} | {took / 60:.1f} | {floor / 60:.1f} | {took / floor if floor else 1:.2f} "
        f"| {wall:.1f} | {detail} | {backend.retries} | {len(failed)} ({exhausted} quota) |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument(
        "--quota-services", type=int, default=None, help="size of the quota run (default: N)"
    )
    parser.add_argument("--no-quota", action="store_true", help="skip the quota-bound run")
    parser.add_argument(
        "--no-commit",
        action="store_true",
        help="ticks without git, floors without their commit (the state files are committed "
        "between ticks, untimed)",
    )
    args = parser.parse_args()
    n = args.services
    commit = not args.no_commit
    started = time.perf_counter()
    # The client's own pacing off for the floor comparisons, as the emulator's quotas are:
    # under Cloud Run's quotas both sides would only measure the quota (last table).
    os.environ["RECONCILE_READS_PER_MINUTE"] = "0"
    os.environ["RECONCILE_WRITES_PER_MINUTE"] = "0"
    os.environ["RECONCILE_METRICS_LAG"] = "0s"
    os.environ.setdefault("RECONCILE_GIT_NAME", "fleet-tick[bot]")
    os.environ.setdefault("RECONCILE_GIT_EMAIL", "fleet-tick@example.com")
    with tempfile.TemporaryDirectory(prefix="fleet-tick-", ignore_cleanup_errors=True) as tmp:
        base = Path(tmp)
        rows = [*steady(base, n, args.reps, commit), change(base, n, args.reps, commit)]
        quota = None if args.no_quota else quota_change(base, args.quota_services or n)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"apply ticks vs floor, {n:,} services in one region; pool {WORKERS}; "
          f"median of {args.reps}; {'git commits' if commit else 'no git on either side'}; "
          f"{datetime.now(UTC):%Y-%m-%d}")  # fmt: skip
    print()
    print("| tick | services | apply, median s | floor, median s | ratio | apply CPU s "
          "| floor CPU s | Cloud Run read calls | calls by method | commits | what |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---|")
    ratios = {}
    for row in rows:
        p, f = statistics.median(row.product), statistics.median(row.floor)
        ratios[row.name] = p / f
        reads = sum(v for k, v in row.calls.items() if k in READS)
        detail = ", ".join(f"{k} {v}" for k, v in sorted(row.calls.items()))
        pc, fc = statistics.median(row.product_cpu), statistics.median(row.floor_cpu)
        print(
            f"| {row.name} | {n:,} | {p:.2f} | {f:.2f} | {p / f:.2f} | {pc:.2f} | {fc:.2f} "
            f"| {reads} | {detail} | {row.commits} | {row.detail} |"
        )
    print()
    print(f"peak RSS {peak_mib:.0f} MiB (this process: product, floor and set-up)")
    if quota is not None:
        print()
        print("quota-bound change tick: Admin API quotas on (reads 1,000/min, writes 60/min "
              "per project and region), client pacing on the emulator's virtual clock")  # fmt: skip
        print()
        print("| services | virtual min | write-quota floor, min | ratio | wall s "
              "| calls by method | client retries | services failed |")  # fmt: skip
        print("|---:|---:|---:|---:|---:|---|---:|---:|")
        print(quota)
    print()
    steady_reads = sum(v for k, v in rows[0].calls.items() if k in READS)
    for name, ratio in ratios.items():
        print(f"target: {name} within 2x of its floor: {'met' if ratio <= 2 else 'NOT met'}")
    met = "met" if steady_reads <= 20 else "NOT met"
    print(f"target: at most 20 read calls per tick for {n:,} services in one region: {met}")
    print(f"elapsed {time.perf_counter() - started:.1f}s")


if __name__ == "__main__":
    main()
