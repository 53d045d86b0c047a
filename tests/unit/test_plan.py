"""The planner: rules as tables, invariants as properties."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.model import (
    GateResult,
    LiveService,
    Outcome,
    Target,
    TrafficSplit,
    Verdict,
)
from reconciler.plan import (
    Action,
    History,
    Phase,
    PlanError,
    Reason,
    desired_split,
    plan_service,
    rollback_plan,
    split_for,
)
from reconciler.spec import RolloutSpec
from tests.builders import CANARY, OTHER, STABLE, live_with
from tests.builders import make_spec as ion_spec

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def make_spec(**over: Any) -> RolloutSpec:
    """The ion-api rollout with the default gates."""
    return ion_spec(**{"gates": None, **over})


ALL_STABLE = live_with(Target(STABLE, 100, "stable"))
AT_5 = live_with(Target(STABLE, 95, "stable"), Target(CANARY, 5, "canary"))
AT_10 = live_with(Target(STABLE, 90, "stable"), Target(CANARY, 10, "canary"))
AT_100 = live_with(Target(STABLE, 0, "stable"), Target(CANARY, 100, "canary"))
PASS = Verdict(Outcome.PASS, (GateResult("error_rate", Outcome.PASS, 0.001, 0.05, 500, "ok"),))
FAIL = Verdict(
    Outcome.FAIL,
    (GateResult("error_rate", Outcome.FAIL, 0.071, 0.05, 900, "error_rate 7.1% > 5%"),),
)
BAKED = History(passing_since=NOW - timedelta(hours=2), stage_percent=5)
FRESH = History(passing_since=NOW - timedelta(minutes=10), stage_percent=5)


CASES = [
    # id, spec overrides, live, verdict, history, reason, phase, blocked?, after percents
    ("first-stage", {}, ALL_STABLE, None, History(), Reason.STAGE, Phase.PROGRESSING, False,
     {STABLE: 95, CANARY: 5}),
    ("in-sync", {}, AT_5, None, History(), Reason.NONE, Phase.PROGRESSING, False,
     {STABLE: 95, CANARY: 5}),
    ("next-stage-baked", {"canary_percent": 10}, AT_5, PASS, BAKED, Reason.STAGE,
     Phase.PROGRESSING, False, {STABLE: 90, CANARY: 10}),
    ("next-stage-not-baked", {"canary_percent": 10}, AT_5, PASS, FRESH, Reason.STAGE,
     Phase.PROGRESSING, True, {STABLE: 90, CANARY: 10}),
    ("next-stage-forced", {"canary_percent": 10, "force": True}, AT_5, None, History(),
     Reason.STAGE, Phase.PROGRESSING, False, {STABLE: 90, CANARY: 10}),
    ("skip-a-stage", {"canary_percent": 25}, AT_5, PASS, BAKED, Reason.STAGE, Phase.PROGRESSING,
     True, {STABLE: 75, CANARY: 25}),
    ("jump-from-zero", {"canary_percent": 50}, ALL_STABLE, None, History(), Reason.STAGE,
     Phase.PROGRESSING, True, {STABLE: 50, CANARY: 50}),
    ("lowering-is-never-blocked", {"canary_percent": 5}, AT_10, None, History(), Reason.STAGE,
     Phase.PROGRESSING, False, {STABLE: 95, CANARY: 5}),
    ("drift-healed", {}, AT_10, None,
     History(last_applied=split_for(STABLE, CANARY, 5)), Reason.DRIFT, Phase.PROGRESSING, False,
     {STABLE: 95, CANARY: 5}),
    ("drift-reported-only", {"self_heal": False}, AT_10, None,
     History(last_applied=split_for(STABLE, CANARY, 5)), Reason.DRIFT, Phase.PROGRESSING, False,
     {STABLE: 90, CANARY: 10}),
    ("fail-rolls-back", {}, AT_5, FAIL, History(), Reason.ROLLBACK, Phase.ROLLED_BACK, False,
     {STABLE: 100}),
    ("sticky-rollback-reapplied",
     {"canary_percent": 0, "rolled_back": {"revision": CANARY, "at": NOW.isoformat(),
                                            "reason": "x"}},
     AT_5, None, History(), Reason.ROLLBACK, Phase.ROLLED_BACK, False, {STABLE: 100}),
    ("finalize-at-100", {"canary_percent": 100}, AT_100, PASS, History(), Reason.FINALIZE,
     Phase.PROMOTED, False, {CANARY: 100}),
    ("no-canary", {"revisions": {"stable": STABLE}, "canary_percent": 0}, AT_5, None, History(),
     Reason.STAGE, Phase.STABLE, False, {STABLE: 100}),
    ("auto-advance", {"auto_advance": True}, AT_5, PASS, BAKED, Reason.ADVANCE,
     Phase.PROGRESSING, False, {STABLE: 90, CANARY: 10}),
    ("auto-advance-not-baked", {"auto_advance": True}, AT_5, PASS, FRESH, Reason.NONE,
     Phase.PROGRESSING, False, {STABLE: 95, CANARY: 5}),
    ("auto-advance-inconclusive", {"auto_advance": True}, AT_5,
     Verdict(Outcome.INCONCLUSIVE), BAKED, Reason.NONE, Phase.PROGRESSING, False,
     {STABLE: 95, CANARY: 5}),
    ("unknown-third-revision-removed", {}, live_with(
        Target(STABLE, 90, "stable"), Target(CANARY, 5, "canary"), Target(OTHER, 5)),
     None, History(), Reason.STAGE, Phase.PROGRESSING, False, {STABLE: 95, CANARY: 5}),
]  # fmt: skip


@pytest.mark.parametrize(
    ("over", "live", "verdict", "history", "reason", "phase", "blocked", "after"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_plan_rules(
    over: dict[str, Any],
    live: LiveService,
    verdict: Verdict | None,
    history: History,
    reason: Reason,
    phase: Phase,
    blocked: bool,
    after: dict[str, int],
) -> None:
    sp = plan_service(make_spec(**over), live, now=NOW, verdict=verdict, history=history)
    assert sp.reason is reason
    assert sp.phase is phase
    assert bool(sp.blocked) is blocked, sp.blocked
    assert {r: p for r, p in sp.after.percents().items() if p} == after
    assert sp.after.total() == 100
    assert sp.etag == "etag-1" and sp.generation == 3


def test_first_stage_changes_and_tags() -> None:
    sp = plan_service(make_spec(), ALL_STABLE, now=NOW)
    assert [(c.action, c.revision, c.before, c.after, c.tag_after) for c in sp.changes] == [
        (Action.CHANGE, STABLE, 100, 95, "stable"),
        (Action.ADD, CANARY, 0, 5, "canary"),
    ]


def test_rollback_edit_is_sticky_and_names_the_measurement() -> None:
    sp = plan_service(make_spec(), AT_5, now=NOW, verdict=FAIL)
    assert sp.edit is not None
    assert sp.edit.values["canary_percent"] == 0
    assert sp.edit.values["rolled_back"]["revision"] == CANARY
    assert "7.1% > 5%" in sp.edit.values["rolled_back"]["reason"]


def test_not_baked_block_says_why() -> None:
    sp = plan_service(make_spec(canary_percent=10), AT_5, now=NOW, verdict=PASS, history=FRESH)
    assert sp.blocked is not None and "bake 1h" in sp.blocked
    assert not sp.has_changes


def test_ready_to_promote_note() -> None:
    sp = plan_service(make_spec(), AT_5, now=NOW, verdict=PASS, history=BAKED)
    assert sp.reason is Reason.NONE
    assert any("ready to promote: 5% -> 10%" in n for n in sp.notes)


def test_missing_revision_fails_before_any_write() -> None:
    live = live_with(Target(STABLE, 100, "stable"), revisions=(STABLE,))
    with pytest.raises(PlanError, match="revision ion-api-00042-xyz does not exist"):
        plan_service(make_spec(), live, now=NOW)


def test_manual_rollback_plan() -> None:
    sp = rollback_plan(make_spec(), AT_5, now=NOW, reason="operator says so")
    assert sp.after.percents() == {STABLE: 100}
    assert sp.edit is not None and sp.edit.values["rolled_back"]["reason"] == "operator says so"


# --- properties --------------------------------------------------------------------------------
STAGES = [5, 10, 25, 50, 100]
REVS = [STABLE, CANARY, OTHER, "ion-api-00039-zzz"]


@st.composite
def live_states(draw: st.DrawFn) -> LiveService:
    n = draw(st.integers(min_value=1, max_value=3))
    revs = draw(st.lists(st.sampled_from(REVS), min_size=n, max_size=n, unique=True))
    cuts = sorted(draw(st.lists(st.integers(0, 100), min_size=n - 1, max_size=n - 1)))
    bounds = [0, *cuts, 100]
    tags = draw(st.lists(st.sampled_from(["", "stable", "canary"]), min_size=n, max_size=n))
    seen: set[str] = set()
    targets = []
    for i, rev in enumerate(revs):
        tag = tags[i] if tags[i] not in seen else ""
        seen.add(tag)
        targets.append(Target(rev, bounds[i + 1] - bounds[i], tag))
    return live_with(*targets, revisions=tuple(REVS))


@st.composite
def specs(draw: st.DrawFn) -> RolloutSpec:
    with_canary = draw(st.booleans())
    pct = draw(st.sampled_from([0, *STAGES])) if with_canary else 0
    over: dict[str, Any] = {
        "canary_percent": pct,
        "self_heal": draw(st.booleans()),
        "auto_advance": draw(st.booleans()),
        "force": draw(st.booleans()),
    }
    if not with_canary:
        over["revisions"] = {"stable": STABLE}
    return make_spec(**over)


verdicts = st.sampled_from([None, PASS, FAIL, Verdict(Outcome.INCONCLUSIVE)])


def applied(live: LiveService, after: TrafficSplit) -> LiveService:
    return LiveService(
        ref=live.ref,
        traffic=after,
        statuses=after,
        etag="etag-2",
        generation=live.generation + 1,
        observed_generation=live.generation + 1,
        revisions=live.revisions,
    )


@settings(max_examples=300, deadline=None)
@given(spec=specs(), live=live_states(), verdict=verdicts)
def test_planned_split_is_valid_and_only_names_spec_revisions(
    spec: RolloutSpec, live: LiveService, verdict: Verdict | None
) -> None:
    sp = plan_service(spec, live, now=NOW, verdict=verdict, history=BAKED)
    if sp.changes:
        assert sp.after.total() == 100
        named = {spec.revisions.stable, spec.revisions.canary}
        if sp.reason is Reason.ROLLBACK:
            # A rollback goes to the live stable when git changed the stable without leave.
            named |= set(live.traffic.tags().get("stable", "").split()) - {""}
        assert set(sp.after.percents()) <= named
        assert len(sp.after.tags()) == len([t for t in sp.after.targets if t.tag])


@settings(max_examples=300, deadline=None)
@given(spec=specs(), live=live_states())
def test_planning_again_after_apply_yields_no_change(spec: RolloutSpec, live: LiveService) -> None:
    sp = plan_service(spec, live, now=NOW, history=History())
    if sp.blocked or sp.edit is not None or not sp.changes:
        return
    again = plan_service(
        spec, applied(live, sp.after), now=NOW, history=History(last_applied=sp.after)
    )
    if spec.canary_percent == 100 and spec.revisions.canary is not None:
        # Reaching 100% has exactly one follow-up: finalize (stable := canary).
        assert again.reason is Reason.FINALIZE
        return
    assert not again.changes, again


def test_desired_split_of_rolled_back_spec_has_no_canary() -> None:
    spec = make_spec(
        canary_percent=0, rolled_back={"revision": CANARY, "at": NOW.isoformat(), "reason": "x"}
    )
    assert desired_split(spec).percents() == {STABLE: 100}


def test_an_old_rollback_block_does_not_shield_a_new_canary() -> None:
    # The block names the previous canary; the new one must still be judged and rolled back.
    old = {"revision": OTHER, "at": NOW.isoformat(), "reason": "old failure"}
    spec = make_spec(rolled_back=old)
    sp = plan_service(spec, AT_5, now=NOW, verdict=FAIL)
    assert sp.reason is Reason.ROLLBACK
    assert sp.edit is not None and sp.edit.values["rolled_back"]["revision"] == CANARY
