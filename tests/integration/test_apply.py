"""Plan and apply against the emulator (official client) with real git repositories."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from google.cloud import run_v2
from tests.builders import context
from tests.refs import ION, ION_DIR

from reconciler import clients
from reconciler.backends.cloudrun import CloudRunBackend
from reconciler.loader import load_spec
from reconciler.plan import Plan, Reason
from reconciler.reconcile import apply_all, plan_all, read_stamp
from reconciler.sandbox import Sandbox, example_rollout, sandbox
from reconciler.state import read_events, read_status
from reconciler.views.plan import plan_from_json, plan_json

STABLE = "ion-api-00041-abc"
CANARY = "ion-api-00042-xyz"


@pytest.fixture
def sb(tmp_path: Path) -> Iterator[Sandbox]:
    with sandbox(tmp_path) as s:
        s.emu.behave(CANARY, error_rate=0.0)  # the built-in scenario's canary is the bad one
        yield s


def live_split(sb: Sandbox) -> dict[str, tuple[int, str]]:
    svc = clients.services_client().get_service(name=sb.emu.service_name("ion-api"))
    return {t.revision: (t.percent, t.tag) for t in svc.traffic_statuses}


def test_plan_shows_first_stage_then_apply_makes_it_live(sb: Sandbox) -> None:
    plan = plan_all(sb.repo, [], CloudRunBackend(), sb.now())
    (sp,) = plan.services
    assert sp.reason is Reason.STAGE and sp.has_changes
    assert sp.before.percents() == {STABLE: 100}
    assert sp.after.percents() == {STABLE: 95, CANARY: 5}

    result = apply_all(context(sb))
    assert result.exit_code == 0, result
    assert live_split(sb) == {STABLE: (95, "stable"), CANARY: (5, "canary")}
    svc = clients.services_client().get_service(name=sb.emu.service_name("ion-api"))
    canary_uri = next(t.uri for t in svc.traffic_statuses if t.tag == "canary")
    assert canary_uri.startswith("http://127.0.0.1:")

    again = plan_all(sb.repo, [], CloudRunBackend(), sb.now())
    assert not again.has_changes

    # Git tells the truth: the remote has the state and a readable message (the run's
    # subject, then a line per service that did something).
    log = sb.remote_log("-1", "--format=%s%n%b")
    assert log.startswith("reconcile: 1 applied [skip reconcile]\n")
    assert "\nreconcile(ion-api): canary 0% -> 5% (ion-api-00042-xyz)\n" in log
    assert "Reconcile-Action: apply" in log
    status_text = sb.remote_file(f"{ION_DIR}/status.yaml")
    assert "ion-api-00042-xyz" in status_text
    assert "applied" in sb.remote_file(f"{ION_DIR}/events.jsonl")


def test_apply_is_idempotent_and_records_nothing_twice(sb: Sandbox) -> None:
    assert apply_all(context(sb)).exit_code == 0
    writes = sb.emu.writes
    head = sb.git("rev-parse", "HEAD")
    result = apply_all(context(sb))
    assert result.exit_code == 0
    assert sb.emu.writes == writes
    assert len(read_events(sb.repo, ION)) == 1
    # a second run may refresh status.yaml, but never adds an apply event
    assert sb.git("rev-list", "--count", f"{head}..HEAD") in ("0", "1")


def test_missing_revision_fails_before_any_write(sb: Sandbox) -> None:
    text = example_rollout(sb.emu).replace(CANARY, "ion-api-00099-new")
    sb.commit_rollout(text, "canary: a revision that was never deployed")
    result = apply_all(context(sb))
    assert result.exit_code == 1
    (outcome,) = result.outcomes
    assert outcome.error is not None and "ion-api-00099-new does not exist" in outcome.error
    assert sb.emu.write_attempts == 0


def test_stale_saved_plan_is_refused(sb: Sandbox) -> None:
    saved = plan_from_json(plan_json(plan_all(sb.repo, [], CloudRunBackend(), sb.now())))
    sb.emu.drift("ion-api", {STABLE: 90, CANARY: 10})  # someone acts after the plan
    attempts = sb.emu.write_attempts
    result = apply_all(context(sb), saved=saved)
    assert result.exit_code == 1
    assert "saved plan is stale" in (result.outcomes[0].error or "")
    assert sb.emu.write_attempts == attempts


def test_fresh_saved_plan_is_applied(sb: Sandbox) -> None:
    saved = plan_from_json(plan_json(plan_all(sb.repo, [], CloudRunBackend(), sb.now())))
    assert apply_all(context(sb), saved=saved).exit_code == 0
    assert live_split(sb)[CANARY] == (5, "canary")


def test_drift_is_corrected_with_self_heal(sb: Sandbox) -> None:
    assert apply_all(context(sb)).exit_code == 0
    sb.emu.drift("ion-api", {STABLE: 50, CANARY: 50})
    plan = plan_all(sb.repo, [], CloudRunBackend(), sb.now())
    assert plan.services[0].reason is Reason.DRIFT
    assert apply_all(context(sb)).exit_code == 0
    assert live_split(sb)[CANARY] == (5, "canary")
    kinds = [e.kind.value for e in read_events(sb.repo, ION)]
    assert kinds == ["applied", "drift_corrected"]


def test_unhealthy_dependency_moves_no_traffic(sb: Sandbox) -> None:
    sb.emu.set_dependency("lumen-gateway", {"status": "degraded"}, 503)
    result = apply_all(context(sb))
    assert result.exit_code == 1
    assert "dependencies unhealthy" in (result.outcomes[0].error or "")
    assert sb.emu.write_attempts == 0


def test_every_write_stamps_the_service(sb: Sandbox) -> None:
    assert apply_all(context(sb)).exit_code == 0
    backend = CloudRunBackend()
    live = backend.get_service(load_spec_ref(sb))
    stamp = read_stamp(live)
    assert stamp is not None and stamp["action"] == "new stage"
    assert read_status(sb.repo, ION) is not None


def load_spec_ref(sb: Sandbox) -> object:
    from reconciler.reconcile import ref_of

    return ref_of(load_spec(sb.rollout()))


def test_lro_pending_operations_are_waited_for(sb: Sandbox) -> None:
    sb.emu.lro(done=False, polls=2)
    assert apply_all(context(sb)).exit_code == 0
    assert live_split(sb)[CANARY] == (5, "canary")


def test_official_client_sees_tag_urls(sb: Sandbox) -> None:
    assert apply_all(context(sb)).exit_code == 0
    svc = clients.services_client().get_service(name=sb.emu.service_name("ion-api"))
    tags = {t.tag for t in svc.traffic_statuses if t.uri}
    assert tags == {"stable", "canary"}
    assert isinstance(svc, run_v2.Service)


def test_one_failing_service_does_not_stop_the_others(sb: Sandbox) -> None:
    # A second rollout file names a service that does not exist in this project.
    ghost = example_rollout(sb.emu).replace("ion-api", "ghost-api")
    (sb.repo / "rollout" / "ghost-api.yaml").write_text(ghost, encoding="utf-8")
    (sb.repo / "rollout" / "broken.yaml").write_text("service: [\n", encoding="utf-8")
    sb.git("add", "rollout")
    sb.git("commit", "--quiet", "-m", "two more rollout files")
    result = apply_all(context(sb))
    assert result.exit_code == 1
    by = {o.service: o for o in result.outcomes}
    assert by["ion-api"].applied and by["ion-api"].error is None
    assert "ghost-api" in (by["ghost-api"].error or "") and "not found" in (
        by["ghost-api"].error or ""
    )
    assert "broken.yaml:" in (by["broken"].error or "")
    assert live_split(sb)[CANARY] == (5, "canary")
    plan = plan_all(sb.repo, [], CloudRunBackend(), sb.now())
    assert [e.service for e in plan.errors] == ["broken", "ghost-api"]
    assert [s.service for s in plan.services] == ["ion-api"]


def test_saved_plan_is_refused_when_the_shared_defaults_changed_since(sb: Sandbox) -> None:
    text = example_rollout(sb.emu).replace("bake: 24h", "")
    (sb.repo / "rollout" / "_defaults.yaml").write_text("bake: 24h\n", encoding="utf-8")
    sb.commit_rollout(text, "bake from the shared defaults")
    saved = plan_from_json(plan_json(plan_all(sb.repo, [], CloudRunBackend(), sb.now())))
    # The same traffic either way, but not the desired state that was reviewed.
    (sb.repo / "rollout" / "_defaults.yaml").write_text("bake: 1h\n", encoding="utf-8")
    sb.commit_rollout(text, "a shorter bake for every service")
    result = apply_all(context(sb), saved=saved)
    assert result.exit_code == 1
    assert "_defaults.yaml it inherits changed" in (result.outcomes[0].error or "")
    assert sb.emu.write_attempts == 0


def test_saved_plan_is_refused_when_git_changed_since(sb: Sandbox) -> None:
    saved = plan_from_json(plan_json(plan_all(sb.repo, [], CloudRunBackend(), sb.now())))
    # Live did not change, but the rollout file did: the saved plan is no longer what apply
    # would do, so nothing is applied.
    sb.commit_rollout(example_rollout(sb.emu, canary_percent=10) + "force: true\n", "to 10%")
    result = apply_all(context(sb), saved=saved)
    assert result.exit_code == 1
    assert "saved plan is stale" in (result.outcomes[0].error or "")
    assert sb.emu.write_attempts == 0
    assert live_split(sb) == {STABLE: (100, "")}


def test_an_empty_saved_plan_applies_nothing(sb: Sandbox) -> None:
    empty = plan_from_json(plan_json(Plan(created_at=sb.now())))
    assert empty.services == ()
    result = apply_all(context(sb), saved=empty)
    assert result.exit_code == 0 and result.outcomes == ()
    assert sb.emu.write_attempts == 0


def test_an_unset_probe_variable_blocks_and_never_rolls_back(sb: Sandbox) -> None:
    text = example_rollout(sb.emu).replace(
        "  - name: canary-health\n",
        "  - name: canary-health\n    headers: {Authorization: {env: CHAT_TOKEN}}\n",
    )
    assert "CHAT_TOKEN" in text
    sb.commit_rollout(text, "authenticated chat probe")
    assert apply_all(context(sb, environ={"CHAT_TOKEN": "Bearer t0ken-value"})).exit_code == 0
    assert live_split(sb)[CANARY] == (5, "canary")
    writes = sb.emu.writes
    for _ in range(4):  # more runs than consecutive_failures: still nothing is blamed on it
        sb.emu.advance_clock(300)
        result = apply_all(context(sb, environ={}))
        assert result.exit_code == 1
        (outcome,) = result.outcomes
        assert not outcome.rolled_back and outcome.plan is not None
        assert outcome.plan.blocked is not None and "\n" not in outcome.plan.blocked
        assert "canary-health" in outcome.plan.blocked and "CHAT_TOKEN" in outcome.plan.blocked
    assert sb.emu.writes == writes and live_split(sb)[CANARY] == (5, "canary")
    assert "rolled_back" not in sb.remote_file("rollout/ion-api.yaml")
    assert all(e.kind.value != "probe_failed" for e in read_events(sb.repo, ION))
    plan = plan_all(sb.repo, [], CloudRunBackend(), sb.now(), environ={})
    assert plan.services[0].blocked is not None and "CHAT_TOKEN" in plan.services[0].blocked


def test_a_saved_plan_describes_exactly_what_apply_writes(sb: Sandbox) -> None:
    assert apply_all(context(sb)).exit_code == 0
    sb.commit_rollout(example_rollout(sb.emu, canary_percent=10) + "force: true\n", "to 10%")
    before = yaml.safe_load(sb.rollout().read_text(encoding="utf-8"))
    saved = plan_from_json(plan_json(plan_all(sb.repo, [], CloudRunBackend(), sb.now())))
    (sp,) = saved.services
    assert sp.edit is not None and dict(sp.edit.values) == {"force": None}
    assert apply_all(context(sb), saved=saved).exit_code == 0
    after = yaml.safe_load(sb.rollout().read_text(encoding="utf-8"))
    # The file changed by exactly the saved edit: `force` removed, nothing else.
    assert {k: v for k, v in before.items() if k != "force"} == after
    assert live_split(sb)[CANARY] == (10, "canary")
