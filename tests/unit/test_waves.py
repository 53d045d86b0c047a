"""Multi-region waves as values: the wave rule (`waves.step`) as a dense table, and what it
does to each region's Decision (`decide` with every region's status)."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from reconciler.decide import decide
from reconciler.model import (
    LiveService,
    ServiceRef,
    ServiceStatus,
    Target,
    WindowStats,
)
from reconciler.plan import Plan, Reason, is_rolled_back, split_for
from reconciler.spec import RolloutSpec
from reconciler.views.comment import plan_markdown
from reconciler.views.plan import plan_from_json, plan_json, plan_text
from reconciler.views.status import status_text
from reconciler.waves import RegionState, expand, region_state, step, waves_of
from tests.builders import CANARY, STABLE, live_with, status_at
from tests.builders import make_spec as ion_spec

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
T0 = NOW - timedelta(hours=1)
OLD = "ion-api-00040-old"
US, EU, ASIA, AU = "us-central1", "europe-west1", "asia-northeast1", "australia-southeast1"
TWO_WAVES = [[US], [EU, ASIA]]


def make_spec(**over: Any) -> RolloutSpec:
    """The ion-api rollout in `TWO_WAVES` (no `region:`)."""
    return ion_spec(**{"region": None, "waves": TWO_WAVES, **over})


def rolled(region: str, revision: str = CANARY) -> dict[str, Any]:
    block = {"revision": revision, "at": "2026-11-26T11:00:00Z", "reason": "error_rate 9% > 5%"}
    return {"rolled_back_regions": {region: block}}


def test_expand_gives_one_spec_per_region_wave_by_wave() -> None:
    spec = make_spec()
    assert spec.region == US  # the lead: first region of the first wave
    assert [s.region for s in expand(spec)] == [US, EU, ASIA]
    assert all(s.waves == TWO_WAVES for s in expand(spec))
    assert waves_of(spec) == ((US,), (EU, ASIA))


def test_a_single_region_file_is_one_wave_of_itself() -> None:
    spec = make_spec(waves=None, region=EU)
    assert expand(spec) == [spec]
    assert waves_of(spec) == ((EU,),)


def S(stage: int, baked: bool = False) -> RegionState:
    return RegionState(stage=stage, baked=baked)


def B(stage: int) -> RegionState:
    return RegionState(stage=stage, baked=True)


STEPS = [
    # id, spec overrides, region, states -> percent, may_advance, may_finalize,
    # hold (fragment or None), waiting (fragment or None)
    ("lead-starts-the-first-stage", {}, US, {}, 5, False, False, None, None),
    ("wave2-waits-for-wave1-to-start", {}, EU, {US: S(0)}, 0, False, False, None,
     "5% starts here after wave 1 (us-central1) passed it for bake 1h"),
    ("wave2-waits-for-wave1-bake", {}, EU, {US: S(5)}, 0, False, False, None, "starts here after"),
    ("wave2-starts-once-wave1-baked", {}, EU, {US: B(5)}, 5, False, False, None, None),
    ("wave2-both-regions-start", {}, ASIA, {US: B(5), EU: S(5)}, 5, False, False, None, None),
    ("lead-advances-once-wave1-baked", {}, US, {US: B(5)}, 5, True, False, None, None),
    ("lead-not-baked-no-advance", {}, US, {US: S(5)}, 5, False, False, None, None),
    ("lead-raise-is-its-plans-to-judge", {"canary_percent": 10}, US, {US: S(5)}, 10, False,
     False, None, None),
    ("wave1-sibling-holds-the-advance", {"waves": [[US, AU], [EU]]}, US, {US: B(5), AU: S(5)},
     5, False, False, None, "the next stage waits for wave 1 (australia-southeast1)"),
    ("wave1-sibling-follows-after-its-bake", {"waves": [[US, AU], [EU]], "canary_percent": 10},
     AU, {US: S(10), AU: B(5)}, 10, False, False, None, None),
    ("wave1-sibling-waits-for-its-bake", {"waves": [[US, AU], [EU]], "canary_percent": 10},
     AU, {US: S(10), AU: S(5)}, 5, False, False, None, "waits for this region's own bake"),
    ("wave2-trails-one-bake", {"canary_percent": 10}, EU, {US: S(10), EU: B(5)}, 5, False,
     False, None, "10% starts here after wave 1"),
    ("wave2-next-stage-after-wave1-bake", {"canary_percent": 10}, EU, {US: B(10), EU: B(5)},
     10, False, False, None, None),
    ("wave2-own-bake-first", {"canary_percent": 10}, EU, {US: B(10), EU: S(5)}, 5, False,
     False, None, "own bake at 5%"),
    ("wave2-past-wave1-stays", {"canary_percent": 10}, EU, {US: S(5), EU: S(10)}, 10, False,
     False, None, None),
    ("retried-region-climbs-one-stage", {"canary_percent": 25}, EU, {US: S(25), EU: S(0)}, 5,
     False, False, None, "catching up: 5% on the way to 10%"),
    ("retried-region-next-after-own-bake", {"canary_percent": 25}, EU, {US: S(25), EU: B(5)},
     10, False, False, None, None),
    ("retried-region-capped-by-wave1", {"canary_percent": 25}, EU, {US: S(25), EU: B(10)}, 10,
     False, False, None, "25% starts here after wave 1"),
    ("retried-lead-climbs-too", {"canary_percent": 25}, US, {US: S(0)}, 5, False, False, None,
     "catching up"),
    ("file-lowered-every-region-follows", {"canary_percent": 5}, EU, {US: S(5), EU: S(10)},
     5, False, False, None, None),
    ("aborted-to-zero", {"canary_percent": 0}, EU, {US: S(5), EU: S(5)}, 0, False, False, None,
     None),
    ("three-waves-third-follows-second", {"waves": [[US], [EU], [ASIA]], "canary_percent": 10},
     ASIA, {US: B(10), EU: B(5)}, 5, False, False, None, None),
    ("three-waves-third-waits-for-second", {"waves": [[US], [EU], [ASIA]],
                                            "canary_percent": 10},
     ASIA, {US: B(10), EU: S(5)}, 0, False, False, None,
     "5% starts here after wave 2 (europe-west1)"),
    ("finalize-waits-for-every-region", {"canary_percent": 100}, US,
     {US: S(100), EU: B(100), ASIA: B(50)}, 100, False, False, None,
     "finalize waits for every region at 100% (asia-northeast1 not yet)"),
    ("finalize-when-all-at-100", {"canary_percent": 100}, US,
     {US: S(100), EU: S(100), ASIA: S(100)}, 100, False, True, None, None),
    ("only-the-lead-finalizes", {"canary_percent": 100}, EU,
     {US: S(100), EU: S(100), ASIA: S(100)}, 100, False, False, None, None),
    ("only-the-lead-advances", {"waves": [[US, AU], [EU]]}, AU, {US: B(5), AU: B(5)}, 5, False,
     False, None, None),
    # a rollback in one region holds every other one where it is
    ("hold-wave2-sibling", {"canary_percent": 10, **rolled(EU)}, ASIA,
     {US: B(10), ASIA: B(5)}, 5, False, False, "HOLD: europe-west1 rolled back (error_rate "
     "9% > 5%)", None),
    ("hold-the-lead-advance", rolled(ASIA), US, {US: B(5)}, 5, False, False, "HOLD", None),
    ("hold-keeps-the-lead-from-a-raise", {"canary_percent": 10, **rolled(ASIA)}, US,
     {US: B(5)}, 5, False, False, "HOLD", None),
    ("hold-a-wave-not-started", rolled(US), EU, {}, 0, False, False, "us-central1 rolled back",
     None),
    ("hold-follows-a-lowered-file", {"canary_percent": 5, **rolled(ASIA)}, EU, {EU: S(10)}, 5,
     False, False, "HOLD", None),
    ("hold-no-finalize", {"canary_percent": 100, **rolled(ASIA)}, US,
     {US: S(100), EU: S(100)}, 100, False, False, "HOLD", None),
    ("rolled-back-region-goes-to-zero", {"canary_percent": 10, **rolled(EU)}, EU,
     {EU: S(5)}, 0, False, False, None, None),
    ("stale-entry-of-an-older-canary-holds-nothing", {"canary_percent": 10, **rolled(EU, OLD)},
     EU, {US: B(10), EU: B(5)}, 10, False, False, None, None),
]  # fmt: skip


@pytest.mark.parametrize(
    ("over", "region", "states", "percent", "advance", "finalize", "hold", "waiting"),
    [c[1:] for c in STEPS],
    ids=[c[0] for c in STEPS],
)
def test_wave_rule(
    over: dict[str, Any],
    region: str,
    states: dict[str, RegionState],
    percent: int,
    advance: bool,
    finalize: bool,
    hold: str | None,
    waiting: str | None,
) -> None:
    spec = make_spec(**over)
    with_rollbacks = {
        r: replace(states.get(r, RegionState()), rolled_back=e.reason)
        for r, e in spec.rolled_back_regions.items()
        if e.revision == CANARY
    }
    got = step(spec, region, {**states, **with_rollbacks})
    assert (got.percent, got.may_advance, got.may_finalize) == (percent, advance, finalize)
    assert got.lead is (region == waves_of(spec)[0][0])
    if hold is None:
        assert got.hold is None
    else:
        assert got.hold is not None and hold in got.hold and "\n" not in got.hold
    if waiting is None:
        assert got.waiting is None
    else:
        assert got.waiting is not None and waiting in got.waiting


# --- region_state: what the rule reads of state/ -----------------------------------------------
def status(region: str, stage: int, **over: Any) -> ServiceStatus:
    return status_at(
        stage, T0, **{"etag": "e", "applied": split_for(STABLE, CANARY, stage), **over}
    )


STATES = [
    ("no-state-yet", {}, None, RegionState()),
    ("at-5-not-passing", {}, status(EU, 5), RegionState(5)),
    ("baked", {}, status(EU, 5, passing_since=T0), RegionState(5, baked=True)),
    ("passing-not-long-enough", {"bake": "2h"}, status(EU, 5, passing_since=T0),
     RegionState(5)),
    ("another-canary-has-not-started", {}, status(EU, 50, canary_revision=OLD), RegionState()),
    ("rolled-back-entry", rolled(EU), status(EU, 0), RegionState(0, rolled_back="error_rate "
                                                                 "9% > 5%")),
    ("entry-of-an-older-canary", rolled(EU, OLD), status(EU, 5), RegionState(5)),
]  # fmt: skip


@pytest.mark.parametrize(
    ("over", "st", "want"), [c[1:] for c in STATES], ids=[c[0] for c in STATES]
)
def test_region_state(over: dict[str, Any], st: ServiceStatus | None, want: RegionState) -> None:
    assert region_state(make_spec(**over), EU, st, NOW) == want


# --- what the wave rule does to a region's Decision ---------------------------------------------
def live(region: str, stage: int, *, tagged: bool = True) -> LiveService:
    targets = [Target(STABLE, 100 - stage, "stable")]
    if tagged:
        targets.append(Target(CANARY, stage, "canary"))
    ref = ServiceRef("naeda-genesis", region, "ion-api")
    return live_with(*targets, revisions=(STABLE, CANARY, OLD), ref=ref, etag="e")


def win(region: str, errors: int) -> WindowStats:
    return WindowStats(
        "ion-api", CANARY, T0, T0 + timedelta(minutes=5), 1000, errors, 1000 - errors
    )


def region_spec(region: str, **over: Any) -> RolloutSpec:
    return next(s for s in expand(make_spec(**over)) if s.region == region)


def test_a_failing_region_rolls_back_alone_and_records_its_own_entry() -> None:
    spec = region_spec(EU, canary_percent=10, gates={
        "window": "5m", "consecutive_failures": 1, "error_rate": {"max": "5%"}})  # fmt: skip
    d = decide(
        spec,
        status(EU, 5),
        live(EU, 5),
        now=NOW,
        windows=[win(EU, 90)],
        regions={US: status(US, 10), ASIA: status(ASIA, 5)},
    )
    assert d.rollback and d.plan.reason is Reason.ROLLBACK
    assert d.plan.after.percent_of(CANARY) == 0
    assert d.edit is not None
    # canary_percent stays: the other regions hold at their stages.
    assert dict(d.edit.values) == {
        "rolled_back_regions.europe-west1": {
            "revision": CANARY,
            "at": "2026-11-26T12:00:00Z",
            "reason": "error_rate 9.0% > 5% (1 window, 1,000 requests)",
        }
    }
    assert d.edit.summary.startswith("europe-west1: canary 5% -> 0%")


def test_the_rolled_back_region_stays_at_stable_and_its_siblings_hold() -> None:
    over = {"canary_percent": 10, "auto_advance": True, **rolled(EU)}
    eu = region_spec(EU, **over)
    assert is_rolled_back(eu) and not is_rolled_back(region_spec(ASIA, **over))
    d = decide(eu, status(EU, 0), live(EU, 0, tagged=False), now=NOW, regions={US: status(US, 10)})
    assert d.plan.after.percent_of(CANARY) == 0 and not d.acts
    # Asia baked at 5% and wave 1 baked at 10%: without the hold it would start 10%.
    regions = {US: status(US, 10, passing_since=T0), EU: status(EU, 0)}
    asia = decide(
        region_spec(ASIA, **over),
        status(ASIA, 5, passing_since=T0),
        live(ASIA, 5),
        now=NOW,
        windows=[win(ASIA, 0)],
        regions=regions,
    )
    assert not asia.acts and asia.plan.reason is Reason.NONE
    assert asia.wave is not None and asia.wave.hold is not None
    assert asia.plan.hold == asia.wave.hold
    assert any(w.startswith("HOLD: europe-west1 rolled back") for w in asia.plan.warnings)
    # The lead is baked at 10%: it would advance the file, but holds.
    lead = decide(
        region_spec(US, **over),
        status(US, 10, passing_since=T0),
        live(US, 10),
        now=NOW,
        windows=[win(US, 0)],
        regions={EU: status(EU, 0), ASIA: status(ASIA, 5)},
    )
    assert not lead.acts and lead.edit is None and lead.wave is not None and lead.wave.hold


def test_a_held_region_still_rolls_back_on_its_own_failure() -> None:
    over = {"canary_percent": 10, "gates": {"window": "5m", "consecutive_failures": 1,
                                            "error_rate": {"max": "5%"}}, **rolled(EU)}  # fmt: skip
    d = decide(
        region_spec(ASIA, **over),
        status(ASIA, 5),
        live(ASIA, 5),
        now=NOW,
        windows=[win(ASIA, 90)],
        regions={EU: status(EU, 0)},
    )
    assert d.rollback
    assert d.edit is not None and "rolled_back_regions.asia-northeast1" in d.edit.values


def test_only_the_lead_advances_the_file_once_wave_one_baked() -> None:
    over = {"auto_advance": True}
    baked_us = status(US, 5, passing_since=T0)
    lead = decide(
        region_spec(US, **over), baked_us, live(US, 5), now=NOW, windows=[win(US, 0)],
        regions={EU: None, ASIA: None},
    )  # fmt: skip
    assert lead.plan.reason is Reason.ADVANCE
    assert lead.edit is not None and dict(lead.edit.values) == {"canary_percent": 10}
    # Wave 2 starts the first stage now (wave 1 passed it for bake), and never edits the file.
    eu = decide(region_spec(EU, **over), None, live(EU, 0), now=NOW, regions={US: baked_us})
    assert eu.plan.reason is Reason.STAGE and eu.acts and eu.blocked is None
    assert eu.plan.after.percent_of(CANARY) == 5 and eu.edit is None
    assert eu.plan.wave == 2 and eu.plan.waves == ((US,), (EU, ASIA))


def test_wave_two_waits_without_blocking() -> None:
    d = decide(region_spec(EU), None, live(EU, 0), now=NOW, regions={US: status(US, 5)})
    assert not d.acts and d.blocked is None
    assert d.plan.canary_percent == 0
    assert any(n.startswith("wave 2: 5% starts here after wave 1") for n in d.plan.notes)


def test_a_wave_two_region_baked_at_its_stage_never_advances_the_file() -> None:
    over = {"auto_advance": True, "canary_percent": 10}
    d = decide(
        region_spec(EU, **over),
        status(EU, 5, passing_since=T0),
        live(EU, 5),
        now=NOW,
        windows=[win(EU, 0)],
        regions={US: status(US, 10)},
    )
    assert not d.acts and d.edit is None
    assert not any("ready to promote" in n for n in d.plan.notes)


def test_finalize_waits_for_every_region_then_only_the_lead_writes_it() -> None:
    over = {"canary_percent": 100}
    waiting = decide(
        region_spec(US, **over), status(US, 100), live(US, 100), now=NOW,
        regions={EU: status(EU, 100), ASIA: status(ASIA, 50)},
    )  # fmt: skip
    assert not waiting.acts and waiting.plan.reason is Reason.NONE
    everywhere = {EU: status(EU, 100), ASIA: status(ASIA, 100)}
    lead = decide(region_spec(US, **over), status(US, 100), live(US, 100), now=NOW,
                  regions=everywhere)  # fmt: skip
    assert lead.plan.reason is Reason.FINALIZE and lead.edit is not None
    other = decide(region_spec(EU, **over), status(EU, 100), live(EU, 100), now=NOW,
                   regions={US: status(US, 100), ASIA: status(ASIA, 100)})  # fmt: skip
    assert not other.acts


# --- the plan draws a file's regions as its waves ------------------------------------------------
def waves_plan(**over: Any) -> Plan:
    spec = make_spec(canary_percent=10, **over)
    lives = {US: live(US, 10), EU: live(EU, 5), ASIA: live(ASIA, 5, tagged=False)}
    statuses = {US: status(US, 10), EU: status(EU, 5, passing_since=T0), ASIA: None}
    services = []
    for s in expand(spec):
        others = {r: st for r, st in statuses.items() if r != s.region}
        services.append(decide(s, statuses[s.region], lives[s.region], now=NOW, regions=others))
    return Plan(created_at=NOW, services=tuple(d.plan for d in services))


def test_plan_text_draws_waves_as_groups() -> None:
    out = plan_text(waves_plan())
    head = (
        "ion-api (naeda-genesis) in 2 waves  1: [us-central1]  2: [europe-west1, asia-northeast1]"
    )
    assert head in out
    lines = out.splitlines()
    order = [
        next(i for i, line in enumerate(lines) if line.strip().startswith(what))
        for what in ("wave 1: us-central1", "ion-api (naeda-genesis/us-central1)", "wave 2:",
                     "ion-api (naeda-genesis/europe-west1)",
                     "~ ion-api (naeda-genesis/asia-northeast1)")
    ]  # fmt: skip
    assert order == sorted(order)
    assert "note: wave 2: 10% starts here after wave 1 (us-central1)" in out
    assert "HOLD" not in out
    assert out.rstrip().endswith("Plan: 1 to change, 2 unchanged, 0 blocked, 0 errors.")


def test_plan_text_says_the_hold_once_with_its_reason() -> None:
    out = plan_text(waves_plan(**rolled(ASIA)))
    assert out.count("HOLD:") == 1
    assert "HOLD: asia-northeast1 rolled back (error_rate 9% > 5%); no region takes a new" in out
    assert "reconcile retry ion-api" in out


def test_plan_json_keeps_waves_and_hold() -> None:
    plan = waves_plan(**rolled(ASIA))
    data = json.loads(plan_json(plan))
    eu = next(s for s in data["services"] if s["region"] == EU)
    assert eu["wave"] == 2 and eu["waves"] == [[US], [EU, ASIA]]
    assert eu["hold"].startswith("HOLD: asia-northeast1 rolled back")
    assert plan_from_json(plan_json(plan)) == plan


def test_status_names_each_region_and_wave_and_says_the_hold() -> None:
    plan = waves_plan(**rolled(ASIA))
    out = status_text(list(plan.services), [])
    assert "ion-api europe-west1 (wave 2)" in out
    assert "ion-api us-central1 (wave 1)" in out
    assert "HOLD: asia-northeast1 rolled back" in out


def test_the_pull_request_comment_names_each_region_s_wave() -> None:
    out = plan_markdown(waves_plan(**rolled(ASIA)))
    assert "`naeda-genesis` / `europe-west1` · wave 2 of 2" in out
    assert "HOLD: asia-northeast1 rolled back" in out


def test_waves_refuse_a_metrics_provider_that_cannot_tell_regions_apart() -> None:
    with pytest.raises(ValueError, match="prometheus queries cannot tell the regions"):
        make_spec(metrics={"provider": "prometheus", "url": "http://prometheus:9090"})


# --- the wave hold's own notice ------------------------------------------------------------------
HOLD_NOTICES = [
    # id, file overrides, region, its last record's spec id -> notices of its decision
    ("the-first-region-holding-tells-it", rolled(ASIA), US, None, ("wave_hold",)),
    ("told-under-a-new-file-version", rolled(ASIA), US, "old", ("wave_hold",)),
    ("not-again-once-recorded-under-this-version", rolled(ASIA), US, "v2", ()),
    ("another-holding-region-stays-quiet", rolled(ASIA), EU, None, ()),
    ("the-rolled-back-region-does-not-tell-it", rolled(ASIA), ASIA, None, ()),
    ("a-rolled-back-lead-passes-it-to-the-next-region", rolled(US), EU, None, ("wave_hold",)),
    ("no-hold-no-notice", {}, US, None, ()),
    ("a-stale-entry-holds-nothing", rolled(ASIA, OLD), US, None, ()),
]  # fmt: skip


@pytest.mark.parametrize(
    ("over", "region", "recorded", "want"),
    [c[1:] for c in HOLD_NOTICES],
    ids=[c[0] for c in HOLD_NOTICES],
)
def test_a_wave_hold_is_told_once_by_one_region(
    over: dict[str, Any], region: str, recorded: str | None, want: tuple[str, ...]
) -> None:
    spec = region_spec(region, **over)
    stage = 0 if is_rolled_back(spec) else 5
    last = status(region, stage, spec_id=recorded) if recorded else None
    others = {r: status(r, 0 if r in spec.rolled_back_regions else 5) for r in (US, EU, ASIA)}
    d = decide(
        spec,
        last,
        live(region, stage, tagged=stage > 0),
        now=NOW,
        spec_id="v2",
        regions={r: st for r, st in others.items() if r != region},
    )
    assert d.notices == want
