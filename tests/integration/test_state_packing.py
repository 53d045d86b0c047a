"""git packs each rollout's metrics day file as deltas against its own earlier versions.

A record appends a line or two to the day file, so each version is the previous one plus
those lines; stored as a delta against a version of the same file it costs about the new
lines. git's default delta search only compares an object with its 10 neighbours in an
order set by a hash of the last 16 characters of its path, so the day files' names must
tell rollouts apart (`state.day_file_hash`): named by their date alone, every rollout's file
of the day looked alike and most versions were stored whole. A real repository and `git gc`
at git's defaults; no size is asserted (benchmarks/repo_growth.py measures that).
"""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from reconciler import state
from reconciler.model import LatencyBucket, ServiceRef, WindowStats
from reconciler.testing.git import run_git

START = datetime(2026, 5, 1, tzinfo=UTC)
SERVICES = 16
RECORDS = 8


pytestmark = pytest.mark.usefixtures("isolated_git")


def _window(rng: random.Random, ref: ServiceRef, revision: str, end: datetime) -> WindowStats:
    """A 50-minute window with its own counts (services never share a line's bytes)."""
    requests = rng.randrange(20_000, 40_000)
    errors = rng.randrange(0, 200)
    counts = [rng.randrange(100, 3000) for _ in range(14)]
    bounds = [0.005 * 1.4**k for k in range(15)]
    return WindowStats(
        service=ref.service,
        revision=f"{ref.service}-{revision}",
        start=end - timedelta(minutes=50),
        end=end,
        requests=requests,
        errors=errors,
        successes=requests - errors,
        p50=None,
        p95=None,
        p99=None,
        latency_buckets=tuple(
            LatencyBucket(bounds[i], bounds[i + 1], c) for i, c in enumerate(counts)
        ),
    )


def test_day_file_versions_are_deltas_of_each_other_after_gc(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    run_git(repo, "init", "--quiet", "--initial-branch=main")
    rng = random.Random(15)
    refs = [ServiceRef("bench-project", "us-central1", f"svc-{i:04d}") for i in range(SERVICES)]
    for k in range(1, RECORDS + 1):
        end = START + k * timedelta(minutes=50)
        for ref in refs:
            windows = [_window(rng, ref, rev, end) for rev in ("00041-abc", "00042-xyz")]
            state.append_metrics(repo, ref, windows)
        run_git(repo, "add", "-A")
        run_git(repo, "commit", "--quiet", "-m", f"record {k}")
    run_git(repo, "gc", "--quiet")

    paths = {state.metrics_path(repo, ref, START).relative_to(repo).as_posix(): ref for ref in refs}
    path_of: dict[str, str] = {}
    for line in run_git(repo, "rev-list", "--objects", "--all").splitlines():
        sha, _, name = line.partition(" ")
        if name in paths:
            path_of[sha] = name
    (index,) = (repo / ".git" / "objects" / "pack").glob("*.idx")
    whole: dict[str, int] = defaultdict(int)
    own_delta: dict[str, int] = defaultdict(int)
    for line in run_git(repo, "verify-pack", "-v", str(index)).splitlines():
        # sha type size size-in-pack offset [depth base-sha]
        fields = line.split()
        if not fields or fields[0] not in path_of:
            continue
        name = path_of[fields[0]]
        if len(fields) == 5:
            whole[name] += 1
        elif path_of.get(fields[6]) == name:
            own_delta[name] += 1
    assert sorted(own_delta) == sorted(paths)
    # Each file: one version stored whole (its delta chain's base), every other one a
    # delta against a version of the same file.
    assert {name: (whole[name], own_delta[name]) for name in paths} == {
        name: (1, RECORDS - 1) for name in paths
    }
