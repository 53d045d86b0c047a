"""Reports on schedule: the scheduled `apply` writes and commits the stage reports by itself.

On the emulator clock (each tick serves traffic, moves the clock one window and runs `apply`,
as tests/integration/test_gates.py does): the interim report once a stage has been live
`reports.interim`, the go/no-go report at `reports.final`, and the final report with the
rollback, each committed with the run's record and written once.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.builders import context, rollout_text

from reconciler.model import ServiceRef
from reconciler.reconcile import Context, RunResult, apply_all
from reconciler.sandbox import Sandbox, sandbox
from reconciler.state import read_status, state_dir

CANARY = "ion-api-00042-xyz"
ION = ServiceRef("naeda-genesis", "us-central1", "ion-api")
WINDOW = 300.0
LAG = 180.0


@pytest.fixture
def sb(tmp_path: Path) -> Iterator[Sandbox]:
    with sandbox(tmp_path) as s:
        yield s


def rollout(sb: Sandbox, schedule: str) -> str:
    return rollout_text(sb.emu, probes=False) + f"reports: {schedule}\n"


def tick(sb: Sandbox, ctx: Context, canary: int = 200) -> RunResult:
    sb.emu.load("ion-api", 200)
    sb.emu.load("ion-api", canary, tag="canary")
    sb.emu.advance_clock(WINDOW)
    return apply_all(ctx)


def reports(sb: Sandbox) -> list[str]:
    folder = state_dir(sb.repo, ION) / "reports"
    return sorted(p.name for p in folder.glob("*.md")) if folder.is_dir() else []


def committed_with(sb: Sandbox, name: str) -> str:
    """The subject and body of the remote commit that added state/ion-api/reports/NAME."""
    path = f"state/naeda-genesis/us-central1/ion-api/reports/{name}"
    return sb.remote_log("--diff-filter=A", "--format=%s%n%b", "--", path)


def test_interim_and_go_no_go_reports_appear_by_themselves(sb: Sandbox) -> None:
    sb.emu.behave(CANARY, error_rate=0.0)
    sb.commit_rollout(rollout(sb, "{interim: 20m, final: 40m}"), "reports every 20m / 40m")
    ctx = context(sb, metrics=True)
    assert apply_all(ctx).exit_code == 0  # 5% live
    start = sb.now()
    seen: list[tuple[float, list[str]]] = []
    for _ in range(9):  # 45 minutes at 5%
        assert tick(sb, ctx).exit_code == 0
        seen.append(((sb.now() - start).total_seconds() / 60, reports(sb)))
    # Nothing before 20 minutes at 5%; the interim report from then on; the go/no-go at 40.
    for minutes, names in seen:
        interim = [n for n in names if n.startswith("interim-2")]
        final = [n for n in names if n.startswith("final-2")]
        assert len(interim) == (1 if minutes >= 20 else 0), (minutes, names)
        assert len(final) == (1 if minutes >= 40 else 0), (minutes, names)
    names = reports(sb)
    (interim,) = (n for n in names if n.startswith("interim-2"))
    (final,) = (n for n in names if n.startswith("final-2"))
    assert {"interim-latest.md", "final-latest.md"} <= set(names)

    # Each is in the run's record commit, said in its body, on the remote.
    body = committed_with(sb, interim)
    assert "\nreconcile(ion-api): observed state" in body, body  # its line in the run's commit
    assert "Report: interim report: 5% live for 20m" in body
    assert "Report: go/no-go report: 5% live for 40m" in committed_with(sb, final)

    text = (state_dir(sb.repo, ION) / "reports" / interim).read_text(encoding="utf-8")
    assert text.startswith("# ion-api: interim report\n")
    # Measured from the provider for the span, not only from what runs recorded.
    assert "| figures | Cloud Monitoring, one query per metric over the span |" in text
    final_text = (state_dir(sb.repo, ION) / "reports" / final).read_text(encoding="utf-8")
    assert "**Go/no-go: NO-GO for now** (hold)" in final_text  # bake 24h not over

    status = read_status(sb.repo, ION)
    assert status is not None and set(status.reported) == {"interim@5", "final@5"}


def test_a_rollback_commits_the_final_report_with_it(sb: Sandbox) -> None:
    sb.commit_rollout(rollout(sb, "{interim: 24h, final: 48h}"), "default schedule")
    ctx = context(sb, metrics=True)
    assert apply_all(ctx).exit_code == 0
    sb.emu.behave(CANARY, error_rate=0.3)
    sb.emu.load("ion-api", 600, tag="canary")
    sb.emu.advance_clock(LAG + 120)
    assert apply_all(ctx).exit_code == 4
    names = reports(sb)
    (final,) = (n for n in names if n.startswith("final-2"))
    assert not [n for n in names if n.startswith("interim")]
    body = committed_with(sb, final)
    assert body.startswith("reconcile: 1 rolled back [skip reconcile]\n"), body
    assert "\nreconcile(ion-api): rollback canary 5% -> 0%" in body, body
    assert "Report: final report: the rollout rolled back" in body
    text = (state_dir(sb.repo, ION) / "reports" / final).read_text(encoding="utf-8")
    assert "**Go/no-go: NO-GO** (roll back)" in text
    assert "written with the rollback, which waits on no metrics provider" in text

    # Later runs do not write it again.
    sb.emu.advance_clock(WINDOW)
    apply_all(ctx)
    assert [n for n in reports(sb) if n.startswith("final-2")] == [final]
