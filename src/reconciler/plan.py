"""The planner: desired (spec) + live + verdict + history -> a Plan value. Pure: `now` is an input.

The rollout rules live here: which split git wants, when a change is a new stage, drift, a
rollback or a finalize, when a promotion is blocked by the bake gate or a changed stable
revision, and the complete edit of the rollout file the reconciler commits (every key it
writes or removes, `force` included), so a saved plan describes exactly what apply writes.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from reconciler.analysis import promotion_blockers
from reconciler.model import (
    Coverage,
    LiveService,
    Outcome,
    ServiceRef,
    Target,
    TrafficSplit,
    Verdict,
    format_time,
)
from reconciler.model import Phase as Phase  # re-exported: the plan's phases
from reconciler.spec import RolloutSpec, format_duration

STABLE_TAG = "stable"
CANARY_TAG = "canary"


class Action(enum.Enum):
    """A change to one traffic target; the value is its display symbol, as in terraform."""

    ADD = "+"
    CHANGE = "~"
    REMOVE = "-"


class Reason(enum.Enum):
    """Why a service's traffic changes (or why it does not)."""

    NONE = "no change"
    STAGE = "new stage"
    DRIFT = "drift"
    ROLLBACK = "rollback"
    ADVANCE = "advance"
    FINALIZE = "finalize"


@dataclass(frozen=True)
class Change:
    """One target's change: `+` added, `~` percent or tag changed, `-` removed."""

    action: Action
    revision: str
    before: int
    after: int
    tag_before: str = ""
    tag_after: str = ""


@dataclass(frozen=True)
class SpecEdit:
    """The complete edit of the rollout file the reconciler commits: every key it writes
    (dotted keys; a mapping value replaces the whole key; None removes the key)."""

    kind: Reason
    values: Mapping[str, Any]
    summary: str


@dataclass(frozen=True)
class History:
    """What state/ remembers about a service, as the planner needs it."""

    last_applied: TrafficSplit | None = None
    """The split the reconciler last applied and verified (None: never)."""
    passing_since: datetime | None = None
    """Since when the canary has been ready to promote (`promotion_blockers` empty) without a
    break at its current stage."""
    stage_percent: int | None = None
    """The canary percent that `passing_since` refers to."""


def coverage_note(coverage: Coverage) -> str:
    """The plan's note on coverage (views that show `ServicePlan.coverage` leave it out)."""
    return f"coverage: {coverage.describe()} at this stage"


@dataclass(frozen=True)
class ServicePlan:
    """The plan for one service: the split before and after, why, and against which state."""

    ref: ServiceRef
    before: TrafficSplit
    after: TrafficSplit
    changes: tuple[Change, ...]
    reason: Reason
    phase: Phase
    etag: str
    generation: int
    canary: str | None = None
    stable: str = ""
    canary_percent: int = 0
    edit: SpecEdit | None = None
    blocked: str | None = None
    warnings: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    verdict: Verdict | None = None
    drift: bool = False
    wave: int = 0
    """The region's wave (1-based) in a rollout file with `waves:`; 0 without waves."""
    waves: tuple[tuple[str, ...], ...] = ()
    """Every wave's regions of the file (empty without waves)."""
    hold: str | None = None
    """Why no region of the file takes a new stage (a region was rolled back), if it holds."""
    held: str | None = None
    """`HELD: ...` when `gates.inconclusive_limit` holds the canary (also in `warnings`)."""
    coverage: Coverage | None = None
    """Judged out of served canary requests at this stage (also said in `notes`)."""
    spec_id: str | None = None
    """The rollout file (and shared defaults) the plan was computed from, by content (see
    `ServiceStatus.spec_id`): a saved plan is stale once either file changed."""

    @property
    def has_changes(self) -> bool:
        """True when applying this plan writes traffic or the rollout file."""
        return self.blocked is None and (bool(self.changes) or self.edit is not None)

    @property
    def service(self) -> str:
        return self.ref.service

    @property
    def canary_percent_after(self) -> int:
        """The canary's percent once this plan is applied."""
        return self.after.percent_of(self.canary) if self.canary else 0


@dataclass(frozen=True)
class ServiceError:
    """A service that could not be planned (unreadable spec, API error)."""

    service: str
    message: str
    ref: ServiceRef | None = None
    """The rollout, when its file loaded (output names it among the plan's rollouts)."""


@dataclass(frozen=True)
class Plan:
    """Changes for many services, and the state they were computed from (a value)."""

    created_at: datetime
    services: tuple[ServicePlan, ...] = ()
    errors: tuple[ServiceError, ...] = ()
    offline: bool = False

    @property
    def has_changes(self) -> bool:
        return any(s.has_changes for s in self.services)

    @property
    def blocked(self) -> tuple[ServicePlan, ...]:
        return tuple(s for s in self.services if s.blocked)


class PlanError(Exception):
    """The spec cannot be planned against this live service (a fact an operator must fix)."""


# --- the rules -------------------------------------------------------------------------------
def split_for(stable: str, canary: str | None, canary_percent: int) -> TrafficSplit:
    """The split git wants: stable gets 100 - p (tag `stable`), canary p (tag `canary`).

    A 0% canary keeps its tag so its URL stays reachable for probes.
    """
    if canary is None:
        return TrafficSplit.of([Target(stable, 100, STABLE_TAG)])
    return TrafficSplit.of(
        [
            Target(stable, 100 - canary_percent, STABLE_TAG),
            Target(canary, canary_percent, CANARY_TAG),
        ]
    )


def is_rolled_back(spec: RolloutSpec) -> bool:
    """True when the rollout file's `rolled_back` block names its current canary (sticky), or,
    in a file with waves, the entry of this spec's region in `rolled_back_regions` does."""
    canary = spec.revisions.canary
    if canary is None:
        return False
    here = spec.rolled_back_regions.get(spec.region) if spec.waves is not None else None
    return any(b is not None and b.revision == canary for b in (spec.rolled_back, here))


ROLLED_BACK_REGIONS = "rolled_back_regions"


def rollback_values(spec: RolloutSpec, canary: str, at: datetime, reason: str) -> dict[str, Any]:
    """The rollout-file edit that records an automatic rollback of `canary` (sticky).

    A single-region file gets `canary_percent: 0` and the `rolled_back` block. In a file with
    waves only this spec's region is rolled back: its entry in `rolled_back_regions` (a key
    of its own, so two regions rolled back in one run never overwrite each other), and
    `canary_percent` stays, since the other regions hold where they are.
    """
    block = {"revision": canary, "at": format_time(at), "reason": reason}
    if spec.waves is not None:
        return {f"{ROLLED_BACK_REGIONS}.{spec.region}": block}
    return {"canary_percent": 0, "rolled_back": block}


def rollback_block(edit: SpecEdit | None) -> Mapping[str, Any] | None:
    """The `rolled_back` block (or region entry) an edit writes, if it writes one."""
    if edit is None:
        return None
    for key, value in edit.values.items():
        if isinstance(value, Mapping) and (
            key == "rolled_back" or key.startswith(ROLLED_BACK_REGIONS + ".")
        ):
            return value
    return None


def desired_split(spec: RolloutSpec) -> TrafficSplit:
    """The split the rollout file asks for; a rolled-back canary gets no target at all."""
    canary = spec.revisions.canary
    if is_rolled_back(spec):
        canary = None
    return split_for(spec.revisions.stable, canary, spec.canary_percent if canary else 0)


def diff(before: TrafficSplit, after: TrafficSplit) -> tuple[Change, ...]:
    """Per-revision changes from `before` to `after`, ordered by revision."""

    def index(split: TrafficSplit) -> dict[str, tuple[int, str]]:
        out: dict[str, tuple[int, str]] = {}
        for t in split.targets:
            pct, tag = out.get(t.revision, (0, ""))
            out[t.revision] = (pct + t.percent, tag or t.tag)
        return out

    b, a = index(before), index(after)
    changes: list[Change] = []
    for rev in sorted(set(b) | set(a)):
        if rev not in b:
            pct, tag = a[rev]
            changes.append(Change(Action.ADD, rev, 0, pct, "", tag))
        elif rev not in a:
            pct, tag = b[rev]
            changes.append(Change(Action.REMOVE, rev, pct, 0, tag, ""))
        elif b[rev] != a[rev]:
            changes.append(Change(Action.CHANGE, rev, b[rev][0], a[rev][0], b[rev][1], a[rev][1]))
    return tuple(changes)


def baked(history: History, canary_percent: int, spec: RolloutSpec, now: datetime) -> bool:
    """True when the current stage's gates have passed without a break for `bake`."""
    return (
        history.passing_since is not None
        and history.stage_percent == canary_percent
        and now - history.passing_since >= spec.bake
    )


def _once(spec: RolloutSpec) -> dict[str, Any]:
    """`force` applies to one change: the edit that carries out that change removes it."""
    return {"force": None} if spec.force else {}


def stable_block(spec: RolloutSpec, live: LiveService) -> str | None:
    """Why the rollout file's `revisions.stable` may not take over now (None: it may).

    The stable revision may change only to the canary live at 100% (a finalize done by
    hand) or with `force: true`: otherwise a one-line edit would move every request to a
    revision no gate has judged.
    """
    live_stable = live.traffic.tags().get(STABLE_TAG)
    wanted = spec.revisions.stable
    if live_stable is None or live_stable == wanted or spec.force:
        return None
    if live.traffic.percent_of(wanted) == 100:
        return None
    return (
        f"revisions.stable changed from {live_stable} to {wanted}: the stable revision may "
        "change only to the canary live at 100% (finalize) or with force: true"
    )


def _live_canary_percent(spec: RolloutSpec, live: LiveService) -> int:
    canary = spec.revisions.canary
    return live.traffic.percent_of(canary) if canary else 0


def _gate_block(
    spec: RolloutSpec, live: LiveService, history: History, now: datetime
) -> str | None:
    """Why raising canary_percent is not allowed now (None: allowed)."""
    current = _live_canary_percent(spec, live)
    wanted = spec.canary_percent
    if wanted <= current or spec.revisions.canary is None:
        return None
    allowed_next = next((s for s in spec.stages if s > current), None)
    if wanted != allowed_next:
        return (
            f"canary_percent {current}% -> {wanted}% skips stage {allowed_next}%: "
            "stages are promoted one at a time"
        )
    if current == 0:
        return None
    if not baked(history, current, spec, now):
        since = history.passing_since if history.stage_percent == current else None
        held = "never" if since is None else f"only since {since.isoformat()}"
        return (
            f"stage {current}% has not passed its gates for bake {format_duration(spec.bake)} "
            f"(passing: {held})"
        )
    return None


def plan_service(
    spec: RolloutSpec,
    live: LiveService,
    *,
    now: datetime,
    verdict: Verdict | None = None,
    history: History | None = None,
    check_revisions: bool = True,
    may_advance: bool = True,
    may_finalize: bool = True,
) -> ServicePlan:
    """Plan one service. Raises PlanError when the spec names a revision that does not exist.

    With `may_advance` or `may_finalize` False (the wave rule, `waves.py`) the plan neither
    commits the next stage (nor says it is ready to), or neither finalizes the rollout.
    """
    history = history or History()
    canary = spec.revisions.canary
    if check_revisions and live.revisions:
        missing = [r for r in (spec.revisions.stable, canary) if r and r not in live.revisions]
        if missing:
            raise PlanError(
                f"{live.ref.name}: revision {missing[0]} does not exist "
                f"(known: {', '.join(sorted(live.revisions)) or 'none'})"
            )
    rolled_back = is_rolled_back(spec)
    phase = _phase(spec, rolled_back)
    base = ServicePlan(
        ref=live.ref,
        before=live.traffic,
        after=live.traffic,
        changes=(),
        reason=Reason.NONE,
        phase=phase,
        etag=live.etag,
        generation=live.generation,
        canary=canary,
        stable=spec.revisions.stable,
        canary_percent=spec.canary_percent,
        verdict=verdict,
    )
    live_canary = _live_canary_percent(spec, live)

    # 1. A failing verdict on a canary that has traffic: roll back, sticky.
    if (
        verdict is not None
        and verdict.outcome is Outcome.FAIL
        and canary is not None
        and (live_canary > 0 or spec.canary_percent > 0)
        and not rolled_back
    ):
        # A stable revision git changed without leave gets no traffic, a rollback included.
        to = spec.revisions.stable
        if stable_block(spec, live) is not None:
            to = live.traffic.tags()[STABLE_TAG]
        after = split_for(to, None, 0)
        reason_text = "; ".join(verdict.failures) or "gates failed"
        where = f"{spec.region}: " if spec.waves is not None else ""
        edit = SpecEdit(
            Reason.ROLLBACK,
            rollback_values(spec, canary, now, reason_text),
            f"{where}canary {live_canary}% -> 0% ({canary}): {reason_text}",
        )
        return replace(
            base,
            after=after,
            changes=diff(live.traffic, after),
            reason=Reason.ROLLBACK,
            phase=Phase.ROLLED_BACK,
            edit=edit,
        )

    desired = desired_split(spec)
    notes: list[str] = []
    warnings: list[str] = []
    if spec.force:
        warnings.append("force: true - the bake gate is skipped for this change")

    # 2. Live already at 100% canary as git wants: finalize (stable := canary).
    if (
        may_finalize
        and canary is not None
        and not rolled_back
        and spec.canary_percent == 100
        and live.traffic.same_routing(desired)
    ):
        after = split_for(canary, None, 0)
        edit = SpecEdit(
            Reason.FINALIZE,
            {
                "revisions.stable": canary,
                "revisions.canary": None,
                "canary_percent": 0,
                **_once(spec),  # force applied to the rollout that just finished
            },
            f"promoted {canary}: now the stable revision",
        )
        return replace(
            base,
            after=after,
            changes=diff(live.traffic, after),
            reason=Reason.FINALIZE,
            phase=Phase.PROMOTED,
            edit=edit,
            warnings=tuple(warnings),
        )

    if live.traffic.same_routing(desired):
        # 3. In sync: maybe advance (auto) or say "ready to promote".
        nxt = spec.next_stage()
        if (
            may_advance
            and canary is not None
            and not rolled_back
            and spec.canary_percent > 0
            and nxt is not None
            and baked(history, spec.canary_percent, spec, now)
            and not promotion_blockers(verdict)
        ):
            if spec.auto_advance:
                after = split_for(spec.revisions.stable, canary, nxt)
                edit = SpecEdit(
                    Reason.ADVANCE,
                    {"canary_percent": nxt, **_once(spec)},
                    f"canary {spec.canary_percent}% -> {nxt}% ({canary}): ready to promote for "
                    f"{format_duration(spec.bake)}",
                )
                return replace(
                    base,
                    after=after,
                    changes=diff(live.traffic, after),
                    reason=Reason.ADVANCE,
                    phase=Phase.PROGRESSING,
                    edit=edit,
                    warnings=tuple(warnings),
                )
            notes.append(f"ready to promote: {spec.canary_percent}% -> {nxt}% (reconcile promote)")
        return replace(
            base,
            warnings=tuple(warnings),
            notes=tuple(notes),
        )

    # 4. Live differs from git: a new stage (git changed) or drift (live changed).
    drift = history.last_applied is not None and history.last_applied.same_routing(desired)
    if drift and not spec.self_heal:
        warnings.append(
            f"drift: live is {live.traffic.describe()}, git wants {desired.describe()}; "
            "self_heal is off, so it is reported only"
        )
        return replace(
            base,
            reason=Reason.DRIFT,
            warnings=tuple(warnings),
            drift=True,
        )
    reason = Reason.DRIFT if drift else (Reason.ROLLBACK if rolled_back else Reason.STAGE)
    blocked = stable_block(spec, live) if reason is not Reason.ROLLBACK else None
    if reason is Reason.STAGE and not spec.force:
        blocked = blocked or _gate_block(spec, live, history, now)
    once = None
    if reason is Reason.STAGE and spec.force:
        once = SpecEdit(Reason.STAGE, _once(spec), "force used for this stage: removed")
    return replace(
        base,
        after=desired,
        changes=diff(live.traffic, desired),
        reason=reason,
        blocked=blocked,
        edit=once,
        warnings=tuple(warnings),
        drift=drift,
    )


def _phase(spec: RolloutSpec, rolled_back: bool) -> Phase:
    if rolled_back:
        return Phase.ROLLED_BACK
    if spec.revisions.canary is None:
        return Phase.STABLE
    if spec.canary_percent == 100:
        return Phase.PROMOTED
    if spec.canary_percent == 0:
        return Phase.PAUSED
    return Phase.PROGRESSING


def rollback_plan(
    spec: RolloutSpec,
    live: LiveService,
    *,
    now: datetime,
    reason: str,
    region_only: bool = False,
) -> ServicePlan:
    """A manual rollback: 100% to stable at once, and the sticky `rolled_back` edit.

    With `region_only`, one region of a file with waves is rolled back as a failing gate
    rolls it back (its `rolled_back_regions` entry, `rollback_values`): the others hold.
    """
    canary = spec.revisions.canary
    after = split_for(spec.revisions.stable, None, 0)
    values: dict[str, Any] = {"canary_percent": 0}
    where = ""
    if canary is not None and region_only and spec.waves is not None:
        values = rollback_values(spec, canary, now, reason)
        where = f"{spec.region}: "
    elif canary is not None:
        values["rolled_back"] = {"revision": canary, "at": format_time(now), "reason": reason}
    live_canary = _live_canary_percent(spec, live)
    return ServicePlan(
        ref=live.ref,
        before=live.traffic,
        after=after,
        changes=diff(live.traffic, after),
        reason=Reason.ROLLBACK,
        phase=Phase.ROLLED_BACK,
        etag=live.etag,
        generation=live.generation,
        canary=canary,
        stable=spec.revisions.stable,
        canary_percent=0,
        edit=SpecEdit(
            Reason.ROLLBACK,
            values,
            f"{where}canary {live_canary}% -> 0% ({canary or 'none'}): {reason}",
        ),
    )
