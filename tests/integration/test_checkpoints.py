"""Checkpoints: a steady canary is committed only when a run has news for it or its last
record is older than the checkpoint interval, and nothing goes unjudged in between.

On the emulator clock (each tick serves traffic, moves the clock one 5-minute window and
runs `apply`, as tests/integration/test_scheduled_reports.py does). With 5-minute gates the
interval is min(3h, 48 x 5m - 10m) = 3 hours (`decide.checkpoint_interval`).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from tests.builders import context, rollout_text
from tests.refs import ION, ION_DIR

from reconciler.decide import checkpoint_interval
from reconciler.loader import load_spec
from reconciler.reconcile import Context, RunResult, apply_all
from reconciler.sandbox import Sandbox, sandbox
from reconciler.state import read_metrics, read_status, state_dir

CANARY = "ion-api-00042-xyz"

WINDOW = 300.0
LAG = 180.0


@pytest.fixture
def sb(tmp_path: Path) -> Iterator[Sandbox]:
    with sandbox(tmp_path) as s:
        yield s


def start(sb: Sandbox) -> Context:
    """ion-api at 5% (no probes: every tick's evidence comes from the metrics provider)."""
    sb.commit_rollout(rollout_text(sb.emu, probes=False), "ion-api canary")
    sb.emu.behave(CANARY, error_rate=0.0)
    ctx = context(sb, metrics=True)
    assert apply_all(ctx).exit_code == 0
    return ctx


def tick(sb: Sandbox, ctx: Context) -> RunResult:
    sb.emu.load("ion-api", 200)
    sb.emu.load("ion-api", 200, tag="canary")
    sb.emu.advance_clock(WINDOW)
    return apply_all(ctx)


def canary_windows(sb: Sandbox) -> list[tuple[datetime, datetime, int]]:
    """The canary's lines in the metrics files, in order: start, end and how many windows
    each rolls up; each line is read back, so a window written twice would appear twice."""
    lines = sum(
        len(path.read_text(encoding="utf-8").splitlines())
        for path in state_dir(sb.repo, ION).glob("windows-*.jsonl")
    )
    recorded = read_metrics(sb.repo, ION)
    assert lines == len(recorded)
    return sorted((w.start, w.end, w.rolled) for w in recorded if w.revision == CANARY)


def test_a_steady_canary_is_committed_at_news_and_checkpoints_only(sb: Sandbox) -> None:
    ctx = start(sb)
    interval = checkpoint_interval(load_spec(sb.rollout()))
    assert interval == timedelta(hours=3)
    committed: list[float] = []  # minutes since the canary went live, of each tick's commit
    t0 = sb.now()
    for _ in range(80):  # six hours and 40 minutes at 5%
        result = tick(sb, ctx)
        assert result.exit_code == 0
        assert not sb.git("status", "--porcelain", "--", "state"), "a skipped run wrote state/"
        if result.commits:
            committed.append((sb.now() - t0).total_seconds() / 60)
    # The first judged windows are news (verdict, bake start); then one record per
    # checkpoint interval, not one per run.
    assert len(committed) <= 5, committed
    steady = committed[1:]
    assert steady, committed
    for a, b in itertools.pairwise(steady):
        assert b - a >= interval.total_seconds() / 60, committed
        assert b - a <= interval.total_seconds() / 60 + WINDOW / 60, committed

    # Nothing went unjudged across the runs that wrote nothing: every canary request
    # served at this stage was judged, and the windows follow each other without a gap,
    # each written once.
    status = read_status(sb.repo, ION)
    assert status is not None and status.coverage.served > 0
    assert status.coverage.judged == status.coverage.served
    # A record writes the windows since the last one as one line per revision.
    windows = canary_windows(sb)
    assert sum(rolled for _, _, rolled in windows) >= 36
    assert len(windows) <= len(committed)
    assert len(set(windows)) == len(windows)
    for (_, end, _), (begin, _, _) in itertools.pairwise(windows):
        assert begin == end


def test_a_breach_between_checkpoints_rolls_back_and_commits_on_the_first_run(
    sb: Sandbox,
) -> None:
    ctx = start(sb)
    commits = 0
    for _ in range(4):
        commits += len(tick(sb, ctx).commits)
    assert commits <= 2  # the run after the last commit wrote nothing
    sb.emu.behave(CANARY, error_rate=0.3)
    sb.emu.load("ion-api", 600, tag="canary")
    sb.emu.advance_clock(LAG + 120)
    result = apply_all(ctx)
    assert result.exit_code == 4
    assert result.commits
    log = sb.remote_log("-1", "--format=%s%n%b")
    assert "rolled back" in log.splitlines()[0], log
    assert "reconcile(ion-api): rollback canary 5% -> 0%" in log, log
    assert not sb.git("status", "--porcelain", "--", "state")


def test_a_failing_probe_between_checkpoints_is_recorded_by_its_run(sb: Sandbox) -> None:
    """A passing probe run is no news; a failing one is (an event, a streak), so the run that
    saw it records it, checkpoint or not; and so is the passing run that ends its streak."""
    assert "name: canary-health" in sb.rollout().read_text(encoding="utf-8")  # the sandbox's
    sb.emu.behave(CANARY, error_rate=0.0)
    ctx = context(sb, metrics=True)
    assert apply_all(ctx).exit_code == 0
    quiet = [len(tick(sb, ctx).commits) for _ in range(4)]
    assert 0 in quiet, quiet  # steady, passing probe runs: some runs write nothing

    sb.emu.behave(CANARY, health={"status": "degraded"})
    failing = tick(sb, ctx)
    assert failing.exit_code == 0 and failing.commits, failing
    assert not sb.git("status", "--porcelain", "--", "state")
    events = sb.remote_file(f"{ION_DIR}/events.jsonl").splitlines()
    assert '"probe_failed"' in events[-1] and "canary-health" in events[-1], events[-1]
    status = read_status(sb.repo, ION)
    assert status is not None and not status.probes[-1].ok
    assert status.streaks["probe:canary-health"].failures == 1

    sb.emu.behave(CANARY, health={"status": "healthy"})
    recovered = tick(sb, ctx)
    assert recovered.commits, recovered  # the streak it ends is news too
    status = read_status(sb.repo, ION)
    assert status is not None and status.probes[-1].ok
    assert "probe:canary-health" not in {k for k, s in status.streaks.items() if s.failures}
