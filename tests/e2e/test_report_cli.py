"""`reconcile report` as a user types it, in a git clone holding rollout/ and state/."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import reconciler
from reconciler.model import GateResult, Outcome, Verdict, WindowStats
from reconciler.state import (
    Event,
    EventKind,
    ProbeRecord,
    append_events,
    append_metrics,
    write_status,
)
from reconciler.stats import buckets_from_counts, exponential_bounds
from reconciler.testing.git import clone, make_remote, run_git
from tests.builders import CANARY, STABLE, status_at
from tests.refs import ION, ION_DIR

ROLLOUT = f"""\
service: ion-api
project: naeda-genesis
region: us-central1
revisions: {{stable: {STABLE}, canary: {CANARY}}}
canary_percent: 5
stages: [5, 10, 25, 50, 100]
bake: 24h
gates:
  window: 5m
  error_rate: {{max: 5%, target: 1%}}
  latency_p95: {{max: 20s, target: 15s}}
  success_rate: {{min: 90%, target: 95%}}
probes:
  - name: canary-health
    url: "{{canary_url}}/api/health"
"""
BOUNDS = exponential_bounds(100, 1.15, 1.0)  # the Cloud Run latency layout, in ms


def _windows(now: datetime) -> list[WindowStats]:
    out = []
    for i in range(12):
        end = (now - timedelta(minutes=5 * i)).replace(second=0, microsecond=0)
        for revision, requests, errors, hot in ((CANARY, 200, 1, 36), (STABLE, 3800, 4, 34)):
            counts = [0] * hot + [requests // 2, requests // 2]
            buckets = buckets_from_counts(BOUNDS, counts, scale=0.001)
            out.append(
                WindowStats(
                    "ion-api",
                    revision,
                    end - timedelta(minutes=5),
                    end,
                    requests,
                    errors,
                    requests - errors,
                    p50=buckets[0].upper,
                    p95=buckets[1].lower,
                    p99=buckets[1].lower,
                    latency_buckets=buckets,
                )
            )
    return out


@pytest.fixture
def repo(tmp_path: Path, isolated_git: None) -> Path:
    """A clone of a real repository whose state/ holds 1 h of a canary at 5%."""
    work = clone(make_remote(tmp_path, {"rollout/ion-api.yaml": ROLLOUT}), tmp_path / "work")
    now = datetime.now(UTC)
    start = now - timedelta(hours=30)
    verdict = Verdict(
        Outcome.PASS,
        (GateResult("error_rate", Outcome.PASS, 0.005, 0.05, 200, "error_rate 0.5% <= 5%"),),
    )
    write_status(
        work,
        ION,
        status_at(
            5,
            start,
            last_reconcile=now,
            verdict=verdict,
            verdict_at=now,
            passing_since=now - timedelta(hours=2),
            probes=(ProbeRecord("canary-health", True, now - timedelta(minutes=3)),),
        ),
    )
    append_events(
        work,
        ION,
        [Event(start, EventKind.APPLIED, "reconciler", f"{STABLE}=100", f"{CANARY}=5")],
    )
    # One record per run, as when every run had news: a line per window (a record rolls up
    # the windows since the last one, so one call would make one 30-hour line).
    for window in _windows(now):
        append_metrics(work, ION, [window])
    run_git(work, "add", "--all")
    run_git(work, "commit", "--quiet", "-m", "state of ion-api")
    return work


def reconcile(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`python -m reconciler ARGS...` in `cwd`, a fresh process, as a user would type it."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(Path(reconciler.__file__).resolve().parents[1])
    return subprocess.run(
        [sys.executable, "-m", "reconciler", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def test_interim_report_is_written_under_state(repo: Path) -> None:
    run = reconcile(repo, "report", "ion-api", "--kind", "interim")
    assert run.returncode == 0, run.stdout + run.stderr
    m = re.match(
        rf"ion-api: interim report written to ({ION_DIR}/reports/interim-\d{{8}}T\d{{6}}Z\.md)\n",
        run.stdout,
    )
    assert m, run.stdout
    assert "decision: hold (" in run.stdout and "bake: passing for 2h" in run.stdout
    written = (repo / m.group(1)).read_text(encoding="utf-8")
    assert (repo / f"{ION_DIR}/reports/interim-latest.md").read_text() == written
    assert written.startswith("# ion-api: interim report\n")
    assert "| requests | 2,400 | 45,600 | – | – |" in written
    assert "| error rate | 0.5% ✅ | 0.1% ✅ | ≤ 1% | > 5% |" in written
    assert written.count("```mermaid\n%%{init: ") == 2
    assert written.count("\nxychart-beta\n") == 2
    assert "from the merged latency distributions" in written
    assert "| canary-health | 1 | 1 | 0 |" in written
    # The report is a new file in the working tree, for the user (or the job) to commit.
    status = run_git(repo, "status", "--porcelain", "--untracked-files=all")
    assert sorted(status.splitlines()) == sorted(
        [f"?? {m.group(1)}", f"?? {ION_DIR}/reports/interim-latest.md"]
    )


def test_final_report_to_stdout_writes_nothing(repo: Path) -> None:
    run = reconcile(repo, "report", "ion-api", "--kind", "final", "--stdout")
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("# ion-api: final report\n")
    assert "**Go/no-go: NO-GO for now** (hold)" in run.stdout
    assert "since the canary's first event (applied)" in run.stdout
    assert not (repo / f"{ION_DIR}/reports").exists()


def test_out_and_since(repo: Path, tmp_path: Path) -> None:
    out = tmp_path / "ion-api.md"
    run = reconcile(
        repo, "--repo", str(repo), "report", "ion-api", "--since", "30m", "--out", str(out)
    )
    assert run.returncode == 0, run.stderr
    text = out.read_text(encoding="utf-8")
    assert "covering the last 30m (--since)" in text
    assert "| windows | 6 × 5m | 6 × 5m |" in text
    assert not (repo / f"{ION_DIR}/reports").exists()


def test_help_shows_an_example() -> None:
    run = reconcile(Path.cwd(), "report", "--help")
    assert run.returncode == 0
    assert "reconcile report ion-api --kind interim" in run.stdout


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (
            ("report", "payments", "--kind", "interim"),
            1,
            "error: state/*/*/payments/status.yaml: no state yet for payments "
            "(nothing reconciled; run `reconcile apply` first)",
        ),
        (("report", "Bad_Name"), 1, "error: 'Bad_Name' is not a valid Cloud Run service id"),
    ],
    ids=["no-state-yet", "bad-service-name"],
)
def test_operator_mistakes_are_one_line(
    repo: Path, args: tuple[str, ...], code: int, message: str
) -> None:
    run = reconcile(repo, *args)
    assert run.returncode == code
    assert run.stderr.strip() == message
    assert run.stdout == ""


@pytest.mark.parametrize(
    "args", [("--since", "soon"), ("--kind", "weekly")], ids=["bad-since", "bad-kind"]
)
def test_usage_errors_exit_1(repo: Path, args: tuple[str, ...]) -> None:
    # Not 2: that code means "changes pending" to a CI job running plan --detailed-exitcode.
    run = reconcile(repo, "report", "ion-api", *args)
    assert run.returncode == 1
    assert "Traceback" not in run.stderr
