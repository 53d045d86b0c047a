"""How much does the repository grow when services are canarying, and does a run (and
reading the history) cost the same after a week as after a day?

For N services (default 100 and 1,000), all canarying all the time by default (the worst
case: a promoted or idle service records nothing; `--canarying 0.1` simulates a fleet where
one service in ten is canarying and the others are steady, written once and never again),
the script simulates ticks at the shipped `*/5` schedule (288 a day): per tick and
canarying service, two new 5-minute windows (canary and stable, with their latency
distribution) and a verdict, and an event every 3 hours. Whether a tick
writes a service's record is the product's own rule (`decide.record_due`: news, or a last
record older than `decide.checkpoint_interval`, 3 hours for 5-minute gates); a record is
written by the product's writers (`state.write_status`, which keeps the newest windows;
`state.append_metrics` with every window since the last record, rolled up into one line per
revision; `append_events`), and the product's `GitOps.commit` makes ONE
commit for the whole tick (none when no service had a record due), as the
one-commit-per-run loop does. It does not run `apply` per tick: at 1,000 services that is a
minute per tick on this machine (benchmarks/README.md, fleet_tick), so a simulated week
would take days; what is measured here is what the state files and git make of a tick.

At the end of day 1, day 2 and the last day it reports: the packed repository
size after `git gc` (`git count-objects -vH`, size-pack), a `git clone --no-local` time, the
time of `git log -1 -- <one service's status.yaml>` and of `git log --oneline | wc -l`, and
the median time of the tick's writes and of its commit over the last ticks before it.
Ratios compare the last checkpoint with day 1 in the same run: a run must cost the same
after a week. At the last checkpoint it also says what the packed bytes are (metrics day
files, status.yaml, trees ..., from `git cat-file --batch-all-objects`), how many day-file
versions git stored as deltas of a version of the same file, and the default pack's size
against the wide repack of the same objects (the baseline of the same run: what a delta
search of 250 candidates finds that git's default 10 miss). The size is also given per
1,000 services per day (target: a few MB), and so is the steady growth (what the days after
the first added), which a small run's fixed overhead (the first commits, pack headers) does
not inflate. Given several fleet sizes it also fits the steady growth to a line, a part
whatever the fleet's size (each tick's commit and the trees above the services' folders)
plus a part per 1,000 services, since a small fleet's per-1,000 figure carries ten times
its share of the first. `--ticks-per-day` below 288
simulates fewer, equally sized ticks; the per-day figures are then scaled to 288 ticks.

Run: `python benchmarks/repo_growth.py [--services 100 1000] [--days 7] [--ticks-per-day 288]
[--canarying 1.0]`.
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from reconciler import state as st
from reconciler.decide import checkpoint_interval, record_due
from reconciler.gitops import GitOps
from reconciler.model import (
    GateResult,
    LatencyBucket,
    Outcome,
    ServiceRef,
    ServiceStatus,
    Target,
    TrafficSplit,
    Verdict,
    WindowStats,
)
from reconciler.spec import RolloutSpec
from reconciler.testing.git import isolate_git

PROJECT, REGION = "bench-project", "us-central1"
START = datetime(2026, 5, 1, tzinfo=UTC)
TICK = timedelta(minutes=5)
EVENT_EVERY = 36
"""Ticks between two events of one service (3 hours: a stage advanced, a probe failed)."""
SPEC = RolloutSpec.model_validate(
    {
        "service": "svc",
        "project": PROJECT,
        "region": REGION,
        "revisions": {"stable": "svc-00041-abc", "canary": "svc-00042-xyz"},
        "canary_percent": 5,
        "stages": [5, 10, 25, 50, 100],
        "gates": {"window": "5m", "error_rate": {"max": "5%"}, "latency_p95": {"max": "20s"}},
    }
)
"""The gates of every simulated service (5-minute windows: a record at least every 3 hours)."""
BOUNDS = [0.001 * 1.4**k for k in range(40)]
"""Cloud Run's request_latencies layout in seconds (exponential, like Cloud Monitoring's)."""


def git(repo: Path, *args: str) -> str:
    """Run git in `repo`; its stdout."""
    done = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True)
    return done.stdout


def timed(fn: object, reps: int = 3) -> float:
    """Median wall seconds of `fn()` over `reps` runs."""
    walls = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()  # type: ignore[operator]
        walls.append(time.perf_counter() - t0)
    return statistics.median(walls)


class Fleet:
    """N services' observed state, advanced one tick at a time through the state writers."""

    def __init__(self, repo: Path, n: int, canarying: float = 1.0, seed: int = 7) -> None:
        self.repo = repo
        self.rng = random.Random(seed)
        self.refs = [ServiceRef(PROJECT, REGION, f"svc-{i:04d}") for i in range(n)]
        self.live = set(range(round(n * canarying)))
        """The services canarying; the others are steady (written once, at the first tick)."""
        self.status: dict[str, ServiceStatus] = {}
        """Each service's last record (what its next run starts from)."""
        self.waiting: dict[str, list[WindowStats]] = {}
        """Windows measured since a service's last record, written with its next one."""
        self.interval = checkpoint_interval(SPEC)
        for ref in self.refs:
            stable, canary = f"{ref.service}-00041-abc", f"{ref.service}-00042-xyz"
            split = TrafficSplit.of([Target(stable, 95, "stable"), Target(canary, 5, "canary")])
            self.status[ref.key] = ServiceStatus(
                service=ref.service,
                phase=st.Phase.PROGRESSING,
                stable_revision=stable,
                canary_revision=canary,
                stage=5,
                stage_since=START,
                traffic=split,
                etag=f"etag-{ref.service}",
                generation=7,
                observed_generation=7,
                last_reconcile=START,
                spec_id="0" * 40,
                applied=split,
            )

    def _window(self, ref: ServiceRef, revision: str, end: datetime, share: float) -> WindowStats:
        requests = max(1, int(self.rng.gauss(3000 * share, 100 * share)))
        errors = self.rng.randrange(0, max(1, requests // 200))
        counts = [0] * (len(BOUNDS) + 1)
        for _ in range(12):  # a realistic spread: a dozen busy buckets around 100 ms
            counts[min(len(counts) - 1, max(0, int(self.rng.gauss(13, 3))))] += requests // 12
        buckets = tuple(
            LatencyBucket(BOUNDS[i - 1] if i else 0.0, BOUNDS[i] if i < len(BOUNDS) else None, c)
            for i, c in enumerate(counts)
            if c
        )
        p50 = self.rng.uniform(0.08, 0.12)
        return WindowStats(
            service=ref.service,
            revision=revision,
            start=end - TICK,
            end=end,
            requests=requests,
            errors=errors,
            successes=requests - errors,
            p50=p50,
            p95=p50 * self.rng.uniform(2.5, 3.5),
            p99=p50 * self.rng.uniform(4.0, 5.0),
            latency_buckets=buckets,
        )

    def tick(self, k: int) -> None:
        """Tick `k` of every service: the files a steady tick writes, for the services the
        product's rule (`decide.record_due`) gives a record this tick; the others write
        nothing, and their windows wait for the next record (the next run measures them
        again from the last judged one)."""
        now = START + k * TICK
        for i, ref in enumerate(self.refs):
            old = self.status[ref.key]
            assert old.canary_revision is not None
            if i not in self.live:
                if k == 1:  # a promoted service: its record, then nothing to measure
                    stable = TrafficSplit.of([Target(old.canary_revision, 100, "stable")])
                    promoted = replace(
                        old,
                        phase=st.Phase.PROMOTED,
                        stable_revision=old.canary_revision,
                        canary_revision=None,
                        stage=100,
                        traffic=stable,
                        applied=stable,
                    )
                    st.write_status(self.repo, ref, promoted)
                continue
            windows = [
                self._window(ref, old.canary_revision, now, 0.05),
                self._window(ref, old.stable_revision, now, 0.95),
            ]
            waiting = self.waiting.setdefault(ref.key, [])
            waiting += windows
            canary = windows[0]
            rate = canary.errors / canary.requests
            verdict = Verdict(
                Outcome.PASS,
                (
                    GateResult("error_rate", Outcome.PASS, rate, 0.05, canary.requests,
                               f"error_rate {rate:.2%} <= 5%"),
                    GateResult("latency_p95", Outcome.PASS, canary.p95, 20.0, canary.requests,
                               f"latency_p95 {canary.p95:.3f}s <= 20s"),
                ),
            )  # fmt: skip
            status = replace(
                st.with_windows(old, waiting),
                last_reconcile=now,
                verdict=verdict,
                verdict_at=now,
                passing_since=old.passing_since or now,
            )
            event = (k + i) % EVENT_EVERY == 0
            if not record_due(old, status, now=now, interval=self.interval, news_elsewhere=event):
                continue
            self.status[ref.key] = status
            st.write_status(self.repo, ref, status)
            st.append_metrics(self.repo, ref, waiting)
            waiting.clear()
            if event:
                ev = st.Event(now, st.EventKind.PROBE_FAILED, "reconciler", reason="timeout")
                st.append_events(self.repo, ref, [ev])


KINDS = ("metrics day files", "status.yaml", "events.jsonl", "trees", "commits")


def breakdown(repo: Path) -> tuple[dict[str, float], float]:
    """What the packed bytes are, by kind (shares of the pack's object bytes), and the share
    of the metrics day files' versions stored as deltas of a version of the same file."""
    names: dict[str, str] = {}
    for line in git(repo, "rev-list", "--objects", "--all").splitlines():
        sha, _, name = line.partition(" ")
        names[sha] = name
    fmt = "%(objectname) %(objecttype) %(objectsize:disk) %(deltabase)"
    listing = git(repo, "cat-file", "--batch-all-objects", f"--batch-check={fmt}")
    size = dict.fromkeys(KINDS, 0)
    versions = own = 0
    for line in listing.splitlines():
        sha, kind, disk, delta_base = line.split()
        name = names.get(sha, "")
        if kind == "tree":
            size["trees"] += int(disk)
        elif kind == "commit":
            size["commits"] += int(disk)
        elif "/metrics/" in name or "/windows-" in name:
            size["metrics day files"] += int(disk)
            versions += 1
            own += names.get(delta_base) == name
        elif name.endswith("/status.yaml"):
            size["status.yaml"] += int(disk)
        elif name.endswith("/events.jsonl"):
            size["events.jsonl"] += int(disk)
    total = sum(size.values()) or 1
    return {k: v / total for k, v in size.items()}, own / max(1, versions)


def measure(repo: Path, base: Path, probe: Path, label: str) -> dict[str, float]:
    """Size after gc, clone time and the two `git log` times, now."""
    git(repo, "gc", "--quiet")
    counts = dict(line.split(": ", 1) for line in git(repo, "count-objects", "-v").splitlines())
    size_mib = int(counts["size-pack"]) / 1024  # KiB
    # The same objects repacked with a wide delta search: what git's default window of 10
    # candidates misses where files of several services sort together by name (every
    # service's `status.yaml`; before the hash in their names, the day files).
    wide = base / f"wide-{label}"
    git(base, "clone", "--quiet", "--bare", "--no-local", str(repo), str(wide))
    git(wide, "repack", "-adfq", "--window=250", "--depth=250")
    counts = dict(line.split(": ", 1) for line in git(wide, "count-objects", "-v").splitlines())
    wide_mib = int(counts["size-pack"]) / 1024
    shutil.rmtree(wide)
    target = base / f"clone-{label}"

    def clone() -> None:
        shutil.rmtree(target, ignore_errors=True)
        git(base, "clone", "--quiet", "--no-local", str(repo), str(target))

    clone_s = timed(clone)
    shutil.rmtree(target, ignore_errors=True)
    rel = probe.relative_to(repo).as_posix()
    log1_s = timed(lambda: git(repo, "log", "-1", "--format=%H", "--", rel), reps=5)
    commits: list[int] = []
    count_s = timed(lambda: commits.append(len(git(repo, "log", "--oneline").splitlines())))
    return {
        "size_mib": size_mib,
        "wide_mib": wide_mib,
        "clone_s": clone_s,
        "log1_s": log1_s,
        "count_s": count_s,
        "commits": float(commits[-1]),
    }


def run(
    n: int, days: int, per_day: int, base: Path, canarying: float
) -> tuple[list[dict[str, float]], tuple[dict[str, float], float]]:
    """Simulate `days` days of `per_day` ticks for N services (the share `canarying` of them
    canarying); one row per checkpoint, and the `breakdown` of the last one's pack."""
    repo = base / f"repo-{n}"
    repo.mkdir()
    git(repo, "init", "--quiet", "--initial-branch=main")
    # git's automatic gc runs inside the commit that triggers it (counted in its time, as in a
    # long-lived clone), never detached where it would race the checkpoint's own gc.
    git(repo, "config", "gc.autoDetach", "false")
    (repo / ".gitattributes").write_text("state/**/*.jsonl merge=union\n", encoding="utf-8")
    git(repo, "add", "-A")
    git(repo, "-c", "user.name=seed", "-c", "user.email=seed@example.com",
        "commit", "--quiet", "-m", "seed")  # fmt: skip
    ops = GitOps(repo)
    fleet = Fleet(repo, n, canarying)
    probe = st.status_path(repo, fleet.refs[0])
    rows = []
    checkpoints = sorted({1, min(2, days), days})
    kinds: tuple[dict[str, float], float] = ({}, 0.0)
    writes: list[float] = []
    commits: list[float] = []
    for k in range(1, days * per_day + 1):
        t0 = time.perf_counter()
        fleet.tick(k)
        t1 = time.perf_counter()
        ops.commit(["state"], f"reconcile: {n} observed")  # None: nobody had a record due
        writes.append(t1 - t0)
        commits.append(time.perf_counter() - t1)
        day, rest = divmod(k, per_day)
        if rest == 0 and day in checkpoints:
            last = slice(-min(12, per_day), None)
            row = measure(repo, base, probe, f"{n}-{day}")
            row |= {
                "day": float(day),
                "write_s": statistics.median(writes[last]),
                "commit_s": statistics.median(commits[last]),
            }
            rows.append(row)
            print(f"  {n:,} services, day {day}: {row}", file=sys.stderr, flush=True)
            if day == days:
                kinds = breakdown(repo)
    shutil.rmtree(repo)
    return rows, kinds


def fit(steady_rows: list[tuple[int, float, float]]) -> tuple[float, float]:
    """The least-squares line through the steady growths of several fleet sizes: (MiB a day
    whatever the size, MiB a day per 1,000 services). A per-1,000 figure of a small fleet
    carries its share of what every tick costs once (the commit, the root, `state/`, project
    and region trees); the line tells the two apart."""
    xs = [n / 1000 for n, _, _ in steady_rows]
    ys = [g * n / 1000 for n, _, g in steady_rows]  # MiB a day for the whole fleet
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum(
        (x - mx) ** 2 for x in xs
    )
    return my - slope * mx, slope


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--services", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--ticks-per-day", type=int, default=288)
    parser.add_argument(
        "--canarying",
        type=float,
        default=1.0,
        help="share of the services canarying (default 1: all, the worst case); the others "
        "are steady and record nothing",
    )
    args = parser.parse_args()
    if not 0 < args.canarying <= 1:
        parser.error("--canarying must be in (0, 1]")
    started = time.perf_counter()
    who = (
        "every service canarying"
        if args.canarying == 1
        else f"{args.canarying:.0%} of the services canarying, the others steady"
    )
    print(
        f"repository growth: {args.ticks_per_day} ticks a day, at most one commit per tick, "
        f"{who}, records at news and checkpoints"
    )
    print()
    print("| services | day | commits | packed size, MiB | wide repack, MiB "
          "| MiB per 1,000 services per day | clone, s | `git log -1 -- status.yaml`, s "
          "| `git log --oneline \\| wc -l`, s "
          "| tick writes, s | tick commit, s |")  # fmt: skip
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    ratios = []
    per_1000_day = []
    steady_rows: list[tuple[int, float, float]] = []
    packs: list[tuple[int, float, dict[str, float], float, float]] = []
    with tempfile.TemporaryDirectory(prefix="repo-growth-") as tmp:
        base = Path(tmp)
        # Isolated git: no user config, hooks or leaked GIT_* variables change the figures.
        isolate_git(base / "home")
        for n in args.services:
            rows, (shares, own) = run(n, args.days, args.ticks_per_day, base, args.canarying)
            last = rows[-1]
            packs.append((n, last["day"], shares, own, last["size_mib"] / last["wide_mib"]))
            for r in rows:
                scale = 1000 / n / r["day"] * (288 / args.ticks_per_day)
                per_1000_day.append(r["size_mib"] * scale)
                print(
                    f"| {n:,} | {r['day']:.0f} | {r['commits']:,.0f} | {r['size_mib']:.2f} "
                    f"| {r['wide_mib']:.2f} "
                    f"| {r['size_mib'] * scale:.2f} | {r['clone_s']:.2f} | {r['log1_s']:.3f} "
                    f"| {r['count_s']:.3f} | {r['write_s']:.2f} | {r['commit_s']:.2f} |"
                )
            if len(rows) > 1:
                first, last = rows[0], rows[-1]
                # Steady growth: what the days after the first added (no fixed overhead).
                days = last["day"] - first["day"]
                steady = (last["size_mib"] - first["size_mib"]) / days
                steady_rows.append((n, last["day"], steady * 1000 / n * (288 / args.ticks_per_day)))
                ratios.append(
                    (n, last["day"], *(last[k] / first[k] for k in ("write_s", "commit_s",
                                                                    "log1_s", "clone_s")))
                )  # fmt: skip
    print()
    for n, day, write, commit, log1, clone in ratios:
        print(
            f"{n:,} services, day {day:.0f} / day 1: tick writes {write:.2f}x, tick commit "
            f"{commit:.2f}x, `git log -1 -- status.yaml` {log1:.2f}x, clone {clone:.2f}x"
        )
    for n, day, growth in steady_rows:
        print(
            f"{n:,} services: growth from day 1 to day {day:.0f}, {growth:.2f} MiB a day per "
            "1,000 services "
            "(packed, scaled to 288 ticks a day)"
        )
    for n, day, shares, own, wide in packs:
        kinds = ", ".join(f"{k} {v:.0%}" for k, v in shares.items())
        print(
            f"{n:,} services, day {day:.0f}: packed bytes: {kinds}; day-file versions "
            f"stored as deltas of their own file: {own:.0%}; default `git gc` / wide "
            f"repack of the same objects: {wide:.2f}x"
        )
    if len({n for n, _, _ in steady_rows}) > 1:
        fixed, per_1000 = fit(steady_rows)
        print(
            f"fitted on {len(steady_rows)} fleet sizes: growth = {fixed:.2f} MiB a day whatever "
            f"the fleet's size (per tick: its commit, the trees above the services' folders) + "
            f"{per_1000:.2f} MiB a day per 1,000 services"
        )
        met = "met" if per_1000 <= 5 else "NOT met"
        print(
            f"target: a few MB (at most 5) per 1,000 services per day, the fitted part per "
            f"1,000 services: {per_1000:.2f} MiB, {met}"
        )
    worst = max(g for _, _, g in steady_rows) if steady_rows else max(per_1000_day)
    met = "met" if worst <= 5 else "NOT met"
    print(
        f"target: a few MB (at most 5) per 1,000 services per day, the worst fleet size's "
        f"figure (with its share of the per-tick part): {worst:.2f} MiB, {met}"
    )
    print(f"elapsed {time.perf_counter() - started:.1f}s")


if __name__ == "__main__":
    main()
