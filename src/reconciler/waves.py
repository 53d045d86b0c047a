"""The wave rule of a multi-region rollout file: which stage each region may take now. Pure.

A rollout file with `waves:` expands into one rollout per region (`expand`), each judged by
the file's gates with its own observed state. `step` decides, from every region's state, what
one region may do this tick (docs/fleet.md, "Waves"):

- a stage starts in a wave only after every region of the previous wave passed its gates at
  that stage for `bake`; a region behind climbs one stage at a time, each after its own bake;
- the lead region (the first of the first wave) follows `canary_percent` like a single-region
  file (its plan blocks a raise the bake has not earned) and alone commits the next stage
  (once every region of the first wave passed the current one for bake) and the finalize
  (once every region serves the canary at 100%);
- a region rolled back (its entry in `rolled_back_regions`) HOLDS every other region where it
  is: no stage starts anywhere until an operator acts; their own rollbacks still happen.

No I/O, no clock: `now` is an argument, and the loop hands in every region's status.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime

from reconciler.model import ServiceStatus
from reconciler.spec import RolloutSpec, format_duration

Waves = tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class RegionState:
    """What the wave rule reads of one region."""

    stage: int = 0
    """The file's canary's percent live in the region (0: not started, or another canary)."""
    baked: bool = False
    """The canary passed its gates at `stage` for `bake` without a break."""
    rolled_back: str | None = None
    """Why the canary was rolled back in this region (its `rolled_back_regions` entry)."""


@dataclass(frozen=True)
class WaveStep:
    """What the wave rule allows one region now; part of the region's Decision."""

    region: str
    wave: int
    """1-based number of the region's wave."""
    waves: Waves
    percent: int
    """The canary percent the region's plan aims at now (its own `canary_percent`)."""
    lead: bool = False
    may_advance: bool = False
    """This region may commit the file's next stage (auto_advance) or say it is ready to."""
    may_finalize: bool = False
    """This region may finalize the rollout (every region serves the canary at 100%)."""
    hold: str | None = None
    """Why nothing advances anywhere (a region was rolled back); None when nothing holds."""
    waiting: str | None = None
    """Why the region stays below the file's `canary_percent` for now (a note, not a block)."""


def waves_of(spec: RolloutSpec) -> Waves:
    """The file's waves; a single-region file is one wave of one region."""
    if spec.waves is None:
        return ((spec.region,),)
    return tuple(tuple(wave) for wave in spec.waves)


def expand(spec: RolloutSpec) -> list[RolloutSpec]:
    """One spec per region of the file (wave by wave), each naming its own region; a
    single-region file is itself."""
    if spec.waves is None:
        return [spec]
    return [spec.model_copy(update={"region": region}) for region in _regions(waves_of(spec))]


def for_region(spec: RolloutSpec, region: str) -> RolloutSpec:
    """The spec of one region of the file (a file read again names its lead region)."""
    if spec.waves is None or spec.region == region:
        return spec
    return spec.model_copy(update={"region": region})


def region_state(
    spec: RolloutSpec, region: str, status: ServiceStatus | None, now: datetime
) -> RegionState:
    """A region's state for the wave rule, from its state/ status and the rollout file."""
    canary = spec.revisions.canary
    entry = spec.rolled_back_regions.get(region)
    rolled = entry.reason if entry is not None and entry.revision == canary else None
    if status is None or canary is None or status.canary_revision != canary:
        return RegionState(rolled_back=rolled)
    return RegionState(
        stage=status.stage,
        baked=baked(spec, status.stage, status.passing_since, now),
        rolled_back=rolled,
    )


def hold_teller(spec: RolloutSpec) -> str | None:
    """The one region that tells of the file's hold (its `wave_hold` notice), so a hold is
    told once, not by every region holding: the first region, wave by wave, not rolled back
    itself. None when nothing holds (no region rolled back) or every region was."""
    if spec.waves is None:
        return None
    canary = spec.revisions.canary
    rolled = {
        region
        for region, entry in spec.rolled_back_regions.items()
        if canary is not None and entry.revision == canary
    }
    if not rolled:
        return None
    return next((r for r in _regions(waves_of(spec)) if r not in rolled), None)


def baked(spec: RolloutSpec, stage: int, passing_since: datetime | None, now: datetime) -> bool:
    """Whether a canary ready to promote at `stage` since `passing_since` has baked."""
    return stage > 0 and passing_since is not None and now - passing_since >= spec.bake


def step(spec: RolloutSpec, region: str, states: Mapping[str, RegionState]) -> WaveStep:
    """What the wave rule allows `region` of the file `spec` now, given every region's state
    (a region missing from `states` has not started)."""
    waves = waves_of(spec)
    index = next(i for i, wave in enumerate(waves) if region in wave)
    me = states.get(region, RegionState())
    lead = region == waves[0][0]
    goal = spec.canary_percent
    base = WaveStep(region, index + 1, waves, percent=min(goal, me.stage), lead=lead)
    if me.rolled_back is not None:
        return replace(base, percent=0)
    rolled = [r for r in _regions(waves) if r != region and _state(states, r).rolled_back]
    if rolled:
        why = _state(states, rolled[0]).rolled_back
        hold = (
            f"HOLD: {_names(rolled)} rolled back ({why}); no region takes a new stage until "
            f"an operator acts (reconcile retry {spec.service}, a new canary, or reconcile "
            "rollback)"
        )
        return replace(base, hold=hold)
    first = waves[0]
    everywhere = _regions(waves)
    may_advance = lead and all(
        _state(states, r).stage == goal > 0 and _state(states, r).baked for r in first
    )
    may_finalize = lead and goal == 100 and all(_state(states, r).stage == 100 for r in everywhere)
    waiting = None
    if lead and goal > 0 and me.stage == goal and not may_advance and goal < 100:
        behind = [r for r in first if r != region and not _cleared(_state(states, r), goal)]
        if behind and me.baked:
            waiting = f"the next stage waits for wave 1 ({_names(behind)}) to pass {goal}% for bake"
    if lead and goal == 100 and me.stage == 100 and not may_finalize:
        behind = [r for r in everywhere if _state(states, r).stage != 100]
        waiting = f"finalize waits for every region at 100% ({_names(behind)} not yet)"
    if goal <= me.stage:
        return replace(
            base, percent=goal, may_advance=may_advance, may_finalize=may_finalize, waiting=waiting
        )
    nxt = next(s for s in spec.stages if s > me.stage)
    if lead and nxt == goal:
        # The lead follows the file as a single-region rollout: its plan judges the raise.
        return replace(base, percent=goal)
    ahead = [_state(states, r) for r in waves[index - 1]] if index else []
    cap = _cleared_stage(spec, ahead) if index else goal
    if nxt > cap:
        previous = waves[index - 1]
        waiting = (
            f"{nxt}% starts here after wave {index} "
            f"({_names(previous)}) passed it for bake {format_duration(spec.bake)}"
        )
        return replace(base, waiting=waiting)
    if me.stage > 0 and not me.baked:
        waiting = f"{nxt}% waits for this region's own bake at {me.stage}%"
        return replace(base, waiting=waiting)
    # Below what the previous wave cleared (a retried region): climbing back, a bake a stage.
    waiting = f"catching up: {nxt}% on the way to {cap}%" if nxt < cap else None
    return replace(base, percent=nxt, waiting=waiting)


def _cleared(state: RegionState, stage: int) -> bool:
    """The region is past `stage`, or passed its gates there for bake."""
    return state.stage > stage or (state.stage == stage and state.baked)


def _cleared_stage(spec: RolloutSpec, previous: list[RegionState]) -> int:
    """The highest stage every region of the previous wave has cleared (0: none yet)."""
    cleared = [s for s in spec.stages if all(_cleared(st, s) for st in previous)]
    return max(cleared, default=0)


def _state(states: Mapping[str, RegionState], region: str) -> RegionState:
    return states.get(region, RegionState())


def _regions(waves: Waves) -> list[str]:
    return [region for wave in waves for region in wave]


def _names(regions: tuple[str, ...] | list[str]) -> str:
    return ", ".join(regions)
