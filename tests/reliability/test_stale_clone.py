"""A clone whose record commits cannot be rebased never acts on stale desired state.

Two runners rolled back the same canary; their `rolled_back` blocks differ only by time, so
the loser's record never rebases. It used to keep applying its own old rollout file every
run (reverting a canary a human had since retried) while the healthy runner re-applied it.
Now its next run rebuilds the record on the remote's tip, follows the remote, and lands.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from reconciler import state as st
from reconciler import yamledit
from reconciler.gitops import Action, GitOps, format_subject, reconcile_trailers
from reconciler.plan import split_for
from reconciler.sandbox import Sandbox, sandbox
from tests.refs import ION, ION_DIR

from .support import CANARY, STABLE, live, reconcile_cli, routing

FIVE = split_for(STABLE, CANARY, 5)
REASON = "error_rate 7.1% > 5% (2 windows)"


@pytest.fixture
def sb(tmp_path: Path) -> Iterator[Sandbox]:
    with sandbox(tmp_path) as s:
        s.emu.behave(CANARY, error_rate=0.0)
        yield s


def test_a_conflicting_record_is_rebuilt_and_the_clone_follows_the_remote(sb: Sandbox) -> None:
    assert reconcile_cli(sb.repo, "apply").returncode == 0  # 0% -> 5%
    loser = sb.clone("runner-b")
    won = reconcile_cli(sb.repo, "rollback", "ion-api", "--force", "--reason", REASON)
    assert won.returncode == 0, won.stderr
    assert "rolled_back" in sb.remote_file("rollout/ion-api.yaml")

    # The loser rolled back the same canary a moment later; its record is still local.
    rollout = loser / "rollout" / "ion-api.yaml"
    text = yamledit.record_rollback(
        rollout.read_text(encoding="utf-8"),
        revision=CANARY,
        at=sb.now() + timedelta(seconds=2),
        reason=REASON,
    )
    rollout.write_text(text, encoding="utf-8")
    event = st.Event(sb.now(), st.EventKind.ROLLED_BACK, "runner-b", reason=REASON)
    st.append_events(loser, ION, [event])
    mine = GitOps(loser).commit(
        [rollout, loser / ION_DIR],
        format_subject("ion-api", "rollback canary 5% -> 0%"),
        trailers=reconcile_trailers("ion-api", Action.ROLLBACK),
    )
    assert mine is not None

    # A human retries the canary: deletes the block, 5% again.
    sb.git("pull", "--quiet", "--rebase")
    retry = yamledit.set_canary_percent(yamledit.clear_rollback(sb.rollout().read_text()), 5)
    sb.commit_rollout(retry, "retry the canary after the fix")

    for _ in range(2):  # and again: it stays with the remote
        run = reconcile_cli(loser, "apply")
        assert run.returncode == 0, (run.stdout, run.stderr)
        assert routing(live(sb.emu)) == routing(FIVE), (run.stdout, run.stderr)
    assert sb.remote_file("rollout/ion-api.yaml") == retry.rstrip("\n")
    log = sb.remote_log("--format=%B")
    assert f"Reconcile-Rebuilt-From: {mine}" in log
    assert "runner-b" in sb.remote_file(f"{ION_DIR}/events.jsonl")
    assert sb.remote_log("--merges", "--format=%h") == ""
