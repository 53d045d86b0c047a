"""What `reconcile apply` prints, through the CLI against the emulator and real git: a line
per service as it finishes, the run's commit and a summary on stdout, and progress on stderr
only for a run over 2 s (stdout stays what scripts parse)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.reconcile import ServiceOutcome, apply_all
from reconciler.sandbox import Sandbox, sandbox
from reconciler.testing.git import run_git

from .support import context, reconcile_cli
from .test_run_commits import SCENARIO, rollout

PROGRESS = re.compile(r"^apply: \d+/3 services, \d+ changed, \d+ rolled back, \d+ s$")


@pytest.fixture
def sb(tmp_path: Path) -> Iterator[Sandbox]:
    with sandbox(tmp_path, scenario=SCENARIO) as s:
        base = rollout(s, probes=False, canary_percent=5)
        for name in ("good-api", "bad-api"):
            text = base.replace("ion-api", name)
            (s.repo / "rollout" / f"{name}.yaml").write_text(text, encoding="utf-8")
        s.commit_rollout(rollout(s, probes=False), "three canaries at 5%")
        yield s


def test_apply_prints_a_line_per_service_the_run_commit_and_a_summary(sb: Sandbox) -> None:
    run = reconcile_cli(sb.repo, "--no-color", "apply")
    assert run.returncode == 0, (run.stdout, run.stderr)
    lines = run.stdout.splitlines()
    applied = [x for x in lines if x.startswith("applied ")]
    assert sorted(x.split(":")[0] for x in applied) == [
        "applied bad-api",
        "applied good-api",
        "applied ion-api",
    ], lines
    sha = run_git(sb.remote, "rev-parse", "main")
    assert lines[-2:] == [
        f"recorded in 1 commit(s): {sha[:10]}",
        "Apply: 3 changed, 0 rolled back, 0 in sync, 0 blocked, 0 errors.",
    ], lines
    assert not any(PROGRESS.match(x) for x in lines), "progress belongs on stderr"


def test_a_run_over_two_seconds_shows_its_progress_on_stderr(sb: Sandbox) -> None:
    # Reads that take 2.5 s make the run long; nothing else changes.
    sb.emu.fault("ListServices", rate=0.0, latency_ms=2500)
    run = reconcile_cli(sb.repo, "--no-color", "apply")
    sb.emu.clear_faults()
    assert run.returncode == 0, (run.stdout, run.stderr)
    progress = [x for x in run.stderr.splitlines() if PROGRESS.match(x)]
    assert progress, run.stderr
    assert "\x1b[" not in run.stderr  # not a terminal: plain lines, never redrawn
    assert not any(PROGRESS.match(x) for x in run.stdout.splitlines())
    assert run.stdout.splitlines()[-1].startswith("Apply: 3 changed")


def test_each_service_is_reported_before_the_run_is_committed(sb: Sandbox) -> None:
    """Lines come as services finish: every service is reported while the run's commit is
    still to be made (so a long run prints before it ends)."""
    before = run_git(sb.repo, "rev-parse", "HEAD")
    heads: list[tuple[str, str]] = []

    class Recorder:
        def started(self, total: int) -> None:
            assert total == 3

        def finished(self, outcome: ServiceOutcome, degraded: bool) -> None:
            heads.append((outcome.service, run_git(sb.repo, "rev-parse", "HEAD")))

    result = apply_all(context(sb), listener=Recorder())
    assert result.exit_code == 0 and len(result.commits) == 1, result
    assert sorted(s for s, _ in heads) == ["bad-api", "good-api", "ion-api"]
    assert {head for _, head in heads} == {before}
    assert run_git(sb.repo, "rev-parse", "HEAD") == result.commits[0]
