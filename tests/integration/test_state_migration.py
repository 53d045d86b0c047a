"""A repository whose state/ is in the old per-service layout: apply moves it in place, once,
and the canary carries on where it was (stage, bake timer, streaks, events)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from tests.builders import context
from tests.integration.test_gates import LAG, rollout, tick
from tests.refs import ION, ION_DIR

from reconciler.model import WindowStats
from reconciler.reconcile import apply_all
from reconciler.sandbox import Sandbox, sandbox
from reconciler.state import read_status
from reconciler.statemigrate import legacy_folders

CANARY = "ion-api-00042-xyz"


@pytest.fixture
def sb(tmp_path: Path) -> Iterator[Sandbox]:
    with sandbox(tmp_path) as s:
        s.emu.behave(CANARY, error_rate=0.0)
        yield s


def _to_old_layout(sb: Sandbox) -> None:
    """Rewrite the repository's history tip as a repository from before: `state/ion-api/`."""
    sb.git("mv", ION_DIR, "state/ion-api")
    (sb.repo / ION_DIR).parent.rmdir()  # git keeps no empty folders; a clone has none
    (sb.repo / ION_DIR).parent.parent.rmdir()
    sb.git("commit", "--quiet", "-m", "state as the older version kept it")
    sb.git("push", "--quiet", "origin", "main")
    assert not (sb.repo / "state" / "naeda-genesis").exists()


def test_apply_moves_old_state_once_and_the_canary_carries_on(sb: Sandbox) -> None:
    sb.commit_rollout(
        rollout(sb, probes=False, auto_advance="true", bake="30m"), "auto advance, 30m bake"
    )
    ctx = context(sb, metrics=True)
    assert apply_all(ctx).exit_code == 0  # 5% live
    sb.emu.advance_clock(LAG)  # windows start once 5% is live
    for _ in range(2):  # passing windows: the bake timer runs
        assert tick(sb, ctx, canary=400, service=400).exit_code == 0
    before = read_status(sb.repo, ION)
    assert before is not None and before.stage == 5 and before.passing_since is not None
    events_before = (sb.repo / ION_DIR / "events.jsonl").read_text(encoding="utf-8")
    _to_old_layout(sb)

    assert tick(sb, ctx, canary=400, service=400).exit_code == 0
    assert legacy_folders(sb.repo) == []
    after = read_status(sb.repo, ION)
    assert after is not None
    # The bake timer and the stage were kept, not rebuilt as on a first run.
    assert (after.stage, after.stage_since) == (before.stage, before.stage_since)
    assert after.passing_since == before.passing_since

    # The recorded windows carry over (measured again if still provisional). A steady run
    # between checkpoints records nothing, so the last record may hold provisional ones only.
    def spans(windows: tuple[WindowStats, ...]) -> set[tuple[str, datetime, datetime]]:
        return {(w.revision, w.start, w.end) for w in windows}

    assert before.windows and spans(before.windows) <= spans(after.windows)
    events = sb.remote_file(f"{ION_DIR}/events.jsonl")
    assert events.startswith(events_before.rstrip("\n")), "an event was lost in the move"
    subjects = sb.remote_log("--format=%s").splitlines()
    moves = [s for s in subjects if s.startswith("state: move")]
    assert moves == [
        "state: move 1 rollout to state/<project>/<region>/<service>/ [skip reconcile]"
    ]
    # git sees a rename: the status file's history reaches back before the move.
    follow = sb.git("log", "--follow", "--format=%B", "--", f"{ION_DIR}/status.yaml")
    assert "state as the older version kept it" in follow
    assert "canary 0% -> 5%" in follow

    # A second run has nothing to move and makes no migration commit.
    assert tick(sb, ctx, canary=400, service=400).exit_code == 0
    subjects = sb.remote_log("--format=%s").splitlines()
    assert len([s for s in subjects if s.startswith("state: move")]) == 1
    assert not (sb.repo / "state" / "ion-api").exists()
