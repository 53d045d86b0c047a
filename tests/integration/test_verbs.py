"""The operator verbs on the emulator and a real git repository with a bare remote.

promote (refused before bake, --force, --to/--full, after a real bake), pause/resume, abort,
retry and canary start: what each writes to git and to live traffic, and --dry-run writing
nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from reconciler import clients
from reconciler.backends.cloudrun import CloudRunBackend
from reconciler.errors import ReconcileError
from reconciler.gitops import Action, GitOps, parse_trailers
from reconciler.loader import load_spec
from reconciler.manual import abort, canary_start, pause, promote, resume, retry, rollback
from reconciler.metrics.cloud_monitoring import CloudMonitoringProvider
from reconciler.plan import Reason
from reconciler.reconcile import Context, RunResult, apply_all
from reconciler.sandbox import Sandbox, example_rollout, sandbox

STABLE = "ion-api-00041-abc"
CANARY = "ion-api-00042-xyz"


@pytest.fixture
def sb(tmp_path: Path) -> Iterator[Sandbox]:
    with sandbox(tmp_path) as s:
        s.emu.behave(CANARY, error_rate=0.0)
        yield s


def context(sb: Sandbox, metrics: bool = False) -> Context:
    provider = CloudMonitoringProvider(ingestion_lag=timedelta(0))
    extra = {"metrics_for": lambda _cfg: provider} if metrics else {}
    return Context(
        repo=sb.repo,
        backend=CloudRunBackend(),
        clock=sb.now,
        git=GitOps(sb.repo),
        **extra,  # type: ignore[arg-type]
    )


def live_percents(sb: Sandbox) -> dict[str, int]:
    svc = clients.services_client().get_service(name=sb.emu.service_name("ion-api"))
    return {t.revision: t.percent for t in svc.traffic_statuses if t.percent}


def head(sb: Sandbox) -> str:
    return sb.remote_log("-1", "--format=%H")


def test_promote_is_refused_before_bake_and_forced_applies_once(sb: Sandbox) -> None:
    assert apply_all(context(sb)).exit_code == 0
    before = head(sb)
    with pytest.raises(ReconcileError, match="has not passed its gates for bake 24h"):
        promote(context(sb), "ion-api")
    assert head(sb) == before and "canary_percent: 5 " in sb.rollout().read_text()
    dry = promote(context(sb), "ion-api", force=True, dry_run=True)
    assert dry.dry_run and dry.commit is None and head(sb) == before
    done = promote(context(sb), "ion-api", force=True)
    assert done.commit is not None
    text = sb.remote_file("rollout/ion-api.yaml")
    assert "canary_percent: 10" in text and "force: true" in text
    result = apply_all(context(sb))  # the apply that used to fail "blocked" every run
    assert result.exit_code == 0, result
    assert live_percents(sb) == {STABLE: 90, CANARY: 10}
    assert "force" not in sb.rollout().read_text()  # applied once


def test_promote_full_needs_force_and_then_finalizes(sb: Sandbox) -> None:
    assert apply_all(context(sb)).exit_code == 0
    with pytest.raises(ReconcileError, match="skips stage 10%"):
        promote(context(sb), "ion-api", full=True)
    promote(context(sb), "ion-api", full=True, force=True)
    assert apply_all(context(sb)).exit_code == 0
    assert live_percents(sb) == {CANARY: 100}
    assert apply_all(context(sb)).outcomes[0].plan.reason is Reason.FINALIZE  # type: ignore[union-attr]


def test_promote_after_a_real_bake_moves_one_stage(sb: Sandbox) -> None:
    sb.commit_rollout(example_rollout(sb.emu, bake="10m"), "10m bake")
    ctx = context(sb, metrics=True)
    assert apply_all(ctx).exit_code == 0
    for _ in range(5):
        sb.emu.advance_clock(300)
        sb.emu.load("ion-api", 400)
        sb.emu.load("ion-api", 400, tag="canary")
        assert apply_all(ctx).exit_code == 0
    result = promote(context(sb), "ion-api")
    assert result.summary == f"canary 5% -> 10% ({CANARY})"
    assert "force" not in sb.remote_file("rollout/ion-api.yaml")
    assert apply_all(ctx).exit_code == 0
    assert live_percents(sb) == {STABLE: 90, CANARY: 10}


def test_promote_on_a_branch_leaves_main_alone(sb: Sandbox) -> None:
    sb.commit_rollout(example_rollout(sb.emu, canary_percent=0), "canary named, no traffic yet")
    before = sb.git("rev-parse", "HEAD")
    promote(context(sb), "ion-api", branch="promote/ion-api-5")
    assert sb.git("rev-parse", "HEAD") == before
    assert "canary_percent: 5" in sb.git("show", "promote/ion-api-5:rollout/ion-api.yaml")


def test_pause_holds_drift_and_new_stages_until_resume(sb: Sandbox) -> None:
    assert apply_all(context(sb)).exit_code == 0
    assert pause(context(sb), "ion-api", dry_run=True).dry_run
    assert "paused" not in sb.rollout().read_text()
    assert pause(context(sb), "ion-api").commit is not None
    assert "paused: true" in sb.remote_file("rollout/ion-api.yaml")
    assert pause(context(sb), "ion-api").noop  # already paused: nothing committed
    sb.emu.drift("ion-api", {STABLE: 50, CANARY: 50})  # by hand
    result = apply_all(context(sb))
    assert result.exit_code == 0, result
    assert live_percents(sb) == {STABLE: 50, CANARY: 50}  # drift left alone while paused
    resume(context(sb), "ion-api")
    assert "paused" not in sb.remote_file("rollout/ion-api.yaml")
    assert apply_all(context(sb)).exit_code == 0
    assert live_percents(sb) == {STABLE: 95, CANARY: 5}  # drift corrected again


def test_abort_sends_traffic_to_stable_pauses_without_a_sticky_block(sb: Sandbox) -> None:
    assert apply_all(context(sb)).exit_code == 0
    (dry,) = abort(context(sb), "ion-api", dry_run=True)
    assert dry.plan is not None and dry.plan.after.percents() == {STABLE: 100}
    assert live_percents(sb) == {STABLE: 95, CANARY: 5}
    (outcome,) = abort(context(sb), "ion-api")
    assert outcome.commit is not None
    assert live_percents(sb) == {STABLE: 100}
    spec = load_spec(sb.rollout())
    assert spec.paused and spec.canary_percent == 0 and spec.rolled_back is None
    assert spec.revisions.canary == CANARY
    assert sb.remote_log("-1", "--format=%s").startswith("reconcile(ion-api): aborted: canary 5%")
    assert apply_all(context(sb)).exit_code == 0  # held, in sync, not blocked
    assert live_percents(sb) == {STABLE: 100}
    resume(context(sb), "ion-api")
    promote(context(sb), "ion-api")  # 0% -> the first stage needs no bake
    assert apply_all(context(sb)).exit_code == 0
    assert live_percents(sb) == {STABLE: 95, CANARY: 5}


def test_retry_after_a_rollback_needs_a_reason_for_the_same_canary(sb: Sandbox) -> None:
    assert apply_all(context(sb)).exit_code == 0
    rollback(context(sb), "ion-api", "5xx spike")
    with pytest.raises(ReconcileError, match="pass --reason"):
        retry(context(sb), "ion-api")
    retry(context(sb), "ion-api", "the spike came from a dependency")
    text = sb.remote_file("rollout/ion-api.yaml")
    assert "rolled_back" not in text and "canary_percent: 0" in text
    promote(context(sb), "ion-api")
    assert apply_all(context(sb)).exit_code == 0
    assert live_percents(sb) == {STABLE: 95, CANARY: 5}


def test_canary_start_names_the_latest_ready_revision(sb: Sandbox) -> None:
    assert apply_all(context(sb)).exit_code == 0
    with pytest.raises(ReconcileError, match="is at 5%"):
        canary_start(context(sb), "ion-api")
    rollback(context(sb), "ion-api", "bad")
    new = sb.emu.deploy("ion-api", "ion-api-00043-new", {"error_rate": 0.0})
    assert canary_start(context(sb), "ion-api", dry_run=True).dry_run
    on_branch = canary_start(context(sb), "ion-api", branch="canary/ion-api")
    assert on_branch.summary == f"canary start {new} at 5%"
    proposed = sb.git("show", "canary/ion-api:rollout/ion-api.yaml")
    assert f"canary: {new}" in proposed and "rolled_back" not in proposed
    canary_start(context(sb), "ion-api")
    result: RunResult = apply_all(context(sb))
    assert result.exit_code == 0, result
    assert live_percents(sb) == {STABLE: 95, new: 5}


def test_every_verb_commits_an_action_readers_can_type(sb: Sandbox) -> None:
    """Each verb's commit carries a `Reconcile-Action` that reads back as a member of
    `gitops.Action`, so a reader of history can match on every action exhaustively."""
    assert apply_all(context(sb)).exit_code == 0
    pause(context(sb), "ion-api")
    resume(context(sb), "ion-api")
    abort(context(sb), "ion-api")
    resume(context(sb), "ion-api")
    promote(context(sb), "ion-api")  # 0% -> the first stage needs no bake
    rollback(context(sb), "ion-api", "5xx spike")
    retry(context(sb), "ion-api", "the spike came from a dependency")
    sb.emu.deploy("ion-api", "ion-api-00043-new", {"error_rate": 0.0})
    canary_start(context(sb), "ion-api")
    messages = [m for m in sb.remote_log("--format=%B%x00").split("\0") if m.strip()]
    named = [parse_trailers(m).get("Reconcile-Action") for m in messages]
    actions = {Action(a) for a in named if a is not None}
    verbs = {Action.PAUSE, Action.RESUME, Action.ABORT, Action.PROMOTE, Action.RETRY}
    assert actions >= {Action.APPLY, Action.ROLLBACK, Action.CANARY_START, *verbs}
