"""The commits of a run (docs/git-and-state.md, "Commits of a run"), with real git and the
emulator: a run's rollbacks in one commit pushed first, everything else it observed and did
in one record commit, and nothing at all when nothing new happened."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.emulator.scenario import DEFAULT_SCENARIO
from reconciler.gitops import trailer_pairs
from reconciler.loader import load_spec
from reconciler.outcome import ServiceOutcome
from reconciler.reconcile import RunResult, apply_all
from reconciler.sandbox import Sandbox, sandbox
from reconciler.testing.git import run_git
from tests.builders import context

from ..integration.test_gates import LAG, WINDOW, rollout

PLACE = "naeda-genesis/us-central1"
HEALTHY = {"error_rate": 0.0, "latency_ms": {"p50": 100, "p95": 200}}


def _service(name: str, canary_errors: float) -> dict[str, object]:
    return {
        "name": name,
        "traffic": {f"{name}-00041-abc": 100},
        "revisions": [
            {"name": f"{name}-00041-abc", "behavior": HEALTHY},
            {"name": f"{name}-00042-xyz", "behavior": {**HEALTHY, "error_rate": canary_errors}},
        ],
    }


SCENARIO = {
    **DEFAULT_SCENARIO,
    "services": [
        *DEFAULT_SCENARIO["services"],
        _service("good-api", 0.0),
        _service("bad-api", 0.0),
    ],
}


@pytest.fixture
def sb(tmp_path: Path) -> Iterator[Sandbox]:
    with sandbox(tmp_path, scenario=SCENARIO) as s:
        base = rollout(s, probes=False, auto_advance="true", bake="1m")
        for name in ("good-api", "bad-api"):
            text = base.replace("ion-api", name)
            (s.repo / "rollout" / f"{name}.yaml").write_text(text, encoding="utf-8")
        s.commit_rollout(rollout(s, probes=False), "three canaries at 5%")
        yield s


def _messages(sb: Sandbox) -> list[str]:
    """The remote's commit messages, newest first."""
    out = run_git(sb.remote, "log", "--format=%B%x00", "main")
    return [m.strip() for m in out.split("\0") if m.strip()]


def _serve(sb: Sandbox, **canary: int) -> None:
    """Requests to each service and to the canaries named, then one window later."""
    for name in ("ion-api", "good-api", "bad-api"):
        sb.emu.load(name, 200)
    for name, n in canary.items():
        sb.emu.load(name.replace("_", "-"), n, tag="canary")
    sb.emu.advance_clock(WINDOW)


def test_one_advance_one_rollback_one_steady_make_a_rollback_and_a_record_commit(
    sb: Sandbox,
) -> None:
    ctx = context(sb, metrics=True)
    first = apply_all(ctx)
    assert first.exit_code == 0, first
    assert len(first.commits) == 1, first  # three new stages: one commit for the run
    (message,) = _messages(sb)[:1]
    assert message.startswith("reconcile: 3 applied [skip reconcile]\n"), message
    sb.emu.advance_clock(LAG)
    # good-api passes (the bake timer starts); bad-api fails its first window (it needs two
    # in a row); ion-api's canary serves too little to judge.
    sb.emu.behave("bad-api-00042-xyz", error_rate=0.3)
    passing = apply_all_after(sb, good_api=400, bad_api=600)
    assert passing.exit_code == 0, passing
    assert not any(o.applied for o in passing.outcomes), passing
    verdicts = {o.service: _verdict(o) for o in passing.outcomes}
    assert verdicts["good-api"] == "PASS" and verdicts["bad-api"] != "PASS", verdicts
    before = len(_messages(sb))

    run = apply_all_after(sb, good_api=400, bad_api=600)

    by = {o.service: o for o in run.outcomes}
    assert by["bad-api"].rolled_back and run.exit_code == 4, run
    assert by["good-api"].applied and by["good-api"].plan is not None, _why(by["good-api"])
    assert by["good-api"].plan.reason.value == "advance"
    assert not by["ion-api"].applied and not by["ion-api"].error
    assert load_spec(sb.rollout("good-api")).canary_percent == 10
    # Exactly two commits: the rollback first (pushed before anything else was carried
    # out), then the record of everything else.
    messages = _messages(sb)
    assert len(messages) == before + 2, messages[:3]
    record, rollback = messages[0], messages[1]
    assert len(run.commits) == 2 and by["bad-api"].commit == run.commits[0]
    assert by["good-api"].commit == by["ion-api"].commit == run.commits[1]

    assert rollback.startswith("reconcile: 1 rolled back [skip reconcile]\n"), rollback
    assert "\nreconcile(bad-api): rollback canary 5% -> 0% (bad-api-00042-xyz)\n" in rollback
    assert _services_and_actions(rollback) == [("bad-api", "rollback")]

    assert record.startswith("reconcile: 1 advanced, 1 observed [skip reconcile]\n"), record
    assert "\nreconcile(good-api): advance canary 5% -> 10% (good-api-00042-xyz)\n" in record
    assert "ion-api" not in record.split("\n\n", 1)[1]  # observed: counted, no line
    assert _services_and_actions(record) == [("good-api", "advance")]
    changed = run_git(sb.remote, "show", "--name-only", "--format=", "main").split()
    assert "rollout/good-api.yaml" in changed
    assert any(p.startswith(f"state/{PLACE}/ion-api/") for p in changed), changed
    assert not any("bad-api" in p for p in changed), changed

    # The next run observes the new stage and the rollback's commit (new facts, committed);
    # after it nothing is new (no window ended, nothing to change): no commit at all.
    settled = apply_all(context(sb, metrics=True))
    assert settled.exit_code == 0 and len(settled.commits) == 1, settled
    head = run_git(sb.remote, "rev-parse", "main")
    again = apply_all(context(sb, metrics=True))
    assert again.exit_code == 0, again
    shown = run_git(sb.remote, "show", "main") if again.commits else ""
    assert again.commits == () and run_git(sb.remote, "rev-parse", "main") == head, shown
    assert run_git(sb.repo, "status", "--porcelain") == ""


def _verdict(outcome: ServiceOutcome) -> str:
    plan = outcome.plan
    return plan.verdict.outcome.value if plan and plan.verdict else "none"


def _why(outcome: ServiceOutcome) -> str:
    """What a service's run decided and why, in full (a failing assertion's repr is cut)."""
    plan = outcome.plan
    if plan is None:
        return f"no plan: {outcome.error}"
    verdict = plan.verdict
    gates = [g.reason for g in verdict.gates] if verdict else []
    return f"{plan.reason.value}, blocked {plan.blocked!r}, notes {plan.notes}, gates {gates}"


def apply_all_after(sb: Sandbox, **canary: int) -> RunResult:
    _serve(sb, **canary)
    return apply_all(context(sb, metrics=True))


def _services_and_actions(message: str) -> list[tuple[str, str]]:
    pairs = trailer_pairs(message)
    services = [v for k, v in pairs if k == "Reconcile-Service"]
    actions = [v for k, v in pairs if k == "Reconcile-Action"]
    return list(zip(services, actions, strict=True))
