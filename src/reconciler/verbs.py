"""What each operator verb may write into a rollout file, in which phase: pure rules.

Every verb (`promote`, `pause`, `resume`, `abort`, `retry`, `canary start`) is decided here
from the rollout file, what state/ remembers and `now`, as the complete edit the loop's one
edit path writes, or a `VerbError` saying why not; so is which rollouts of a service id a verb
acts on when the id is in several regions or projects (`pick`, `one_file`). No I/O, no clock:
table-tested.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from reconciler.analysis import promotion_blockers
from reconciler.decide import Commit, Decision, decide_rollback
from reconciler.model import CommitAction, LiveService, Phase, ServiceRef, ServiceStatus
from reconciler.plan import History, Reason, SpecEdit, baked, is_rolled_back
from reconciler.spec import RolloutSpec, format_duration


class VerbError(Exception):
    """The verb may not run now; the message says why and what would let it."""


# --- which rollouts of a service id a verb acts on -----------------------------------------------
@dataclass(frozen=True)
class FileRollouts:
    """A rollout file named after the service id, and the rollouts it names: one, or one per
    region of its `waves:` (in wave order)."""

    file: str
    refs: tuple[ServiceRef, ...]


def several(service: str, refs: Sequence[ServiceRef]) -> str:
    """The one line refusing a verb that needs one rollout of `service`, which has `refs`:
    `ion-api is in 3 regions: us-central1, europe-west1, asia-northeast1; pass --region`."""
    regions = [r.region for r in refs]
    projects = {r.project for r in refs}
    if len(projects) == 1:
        return f"{service} is in {len(refs)} regions: {', '.join(regions)}; pass --region"
    if len(set(regions)) == len(refs):
        flag = "--region"
    elif len(projects) == len(refs):
        flag = "--project"
    else:
        flag = "--project and --region"
    keys = ", ".join(r.key for r in refs)
    return f"{service} is in {len(projects)} projects: {keys}; pass {flag}"


def pick(
    service: str,
    files: Sequence[FileRollouts],
    regions: Collection[str] = (),
    project: str | None = None,
) -> list[FileRollouts]:
    """The rollouts `--region` (repeatable) and `--project` name, file by file (files naming
    none left out); every one when neither is given. A region or project that names none of
    the service's rollouts is refused, listing them."""
    everyone = [r for f in files for r in f.refs]

    def chosen(ref: ServiceRef) -> bool:
        return (not regions or ref.region in regions) and (
            project is None or ref.project == project
        )

    missing = [r for r in regions if not any(chosen(x) and x.region == r for x in everyone)]
    if missing or not any(chosen(r) for r in everyone):
        asked = [f"project {project}"] if project is not None else []
        asked += [f"region {r}" for r in missing or regions]
        by_key = len({r.project for r in everyone}) > 1
        known = ", ".join(r.key if by_key else r.region for r in everyone)
        raise VerbError(f"{service}: no rollout in {', '.join(asked)} (its rollouts: {known})")
    out = [FileRollouts(f.file, tuple(r for r in f.refs if chosen(r))) for f in files]
    return [f for f in out if f.refs]


def one_file(
    service: str,
    verb: str,
    picked: Sequence[FileRollouts],
    files: Sequence[FileRollouts],
    *,
    per_region: bool = False,
) -> FileRollouts:
    """The one rollout file a verb edits, from what `pick` chose among `files`.

    Rollouts in several files are refused (`several`): a verb never guesses which region an
    operator meant. A file with `waves:` is edited as a whole (`canary_percent`, `paused`,
    the revisions are the file's, for every region), so picking some of its regions only is
    refused, unless the verb is `per_region` (retry: each region has its own entry in
    `rolled_back_regions`).
    """
    if len(picked) != 1:
        raise VerbError(several(service, [r for f in picked for r in f.refs]))
    (chosen,) = picked
    whole = next(f for f in files if f.file == chosen.file)
    if len(chosen.refs) < len(whole.refs) and not per_region:
        every = ", ".join(r.region for r in whole.refs)
        mine = ", ".join(r.region for r in chosen.refs)
        raise VerbError(
            f"{chosen.file}: {verb} edits the whole file, whose waves roll {service} out in "
            f"{every} together; it cannot act on {mine} alone (pass no --region, or every "
            "region of the file)"
        )
    return chosen


def _canary(spec: RolloutSpec) -> str:
    canary = spec.revisions.canary
    if canary is None:
        raise VerbError(f"{spec.service}: no canary revision (reconcile canary start names one)")
    return canary


def _target(spec: RolloutSpec, to: int | None, full: bool) -> int:
    """The stage `promote` writes: the next one, `--to N` (a stage above now), or 100."""
    if to is not None and full:
        raise VerbError("--to and --full are exclusive")
    if full:
        to = 100
    if to is None:
        nxt = spec.next_stage()
        if nxt is None:
            raise VerbError(f"{spec.service}: already at 100%")
        return nxt
    if to not in spec.stages:
        raise VerbError(f"{spec.service}: {to}% is not one of the stages {spec.stages}")
    if to <= spec.canary_percent:
        raise VerbError(
            f"{spec.service}: --to {to}% is not above the current stage {spec.canary_percent}%"
        )
    return to


def bake_block(spec: RolloutSpec, status: ServiceStatus | None, now: datetime) -> str | None:
    """Why the current stage has not earned the next one (None: its bake has passed).

    The same rule `apply` enforces (`plan.baked`), read from what state/ last recorded, so a
    promotion the next apply would refuse is refused here instead of committed.
    """
    current = spec.canary_percent
    if current == 0:
        return None  # the first stage needs no bake: nothing has been judged yet
    canary = spec.revisions.canary
    if status is None or status.canary_revision != canary or status.stage != current:
        live = "no state recorded" if status is None else f"live stage {status.stage}%"
        return f"stage {current}% is not live yet ({live}): run apply first"
    if status.verdict is not None and promotion_blockers(status.verdict):
        return f"stage {current}% gates: {'; '.join(promotion_blockers(status.verdict))}"
    history = History(passing_since=status.passing_since, stage_percent=status.stage)
    if not baked(history, current, spec, now):
        since = status.passing_since
        held = "never" if since is None else f"only since {since.isoformat()}"
        return (
            f"stage {current}% has not passed its gates for bake "
            f"{format_duration(spec.bake)} (passing: {held})"
        )
    return None


def promote(
    spec: RolloutSpec,
    status: ServiceStatus | None,
    *,
    now: datetime,
    to: int | None = None,
    full: bool = False,
    force: bool = False,
) -> SpecEdit:
    """`reconcile promote`: the next stage (or `to`, or 100%), refused before bake passes.

    `force` writes `force: true` with the stage: the one-shot override `apply` honours for a
    skipped bake or a skipped stage. Without it, a promotion the next apply would block
    (bake not passed, a stage skipped) is refused here rather than committed.
    """
    canary = _canary(spec)
    if is_rolled_back(spec):
        raise VerbError(
            f"{spec.service}: canary {canary} was rolled back; name a new canary or reconcile retry"
        )
    if spec.paused and not force:
        raise VerbError(f"{spec.service}: paused; reconcile resume first (or pass --force)")
    target = _target(spec, to, full)
    values: dict[str, Any] = {"canary_percent": target}
    if not force:
        nxt = spec.next_stage()
        if target != nxt:
            raise VerbError(
                f"{spec.service}: {spec.canary_percent}% -> {target}% skips stage {nxt}%; "
                "stages are promoted one at a time (pass --force to skip)"
            )
        why = bake_block(spec, status, now)
        if why is not None:
            raise VerbError(f"{spec.service}: not promoted: {why} (pass --force to skip it)")
    else:
        values["force"] = True
    return SpecEdit(
        Reason.STAGE,
        values,
        f"canary {spec.canary_percent}% -> {target}% ({canary})" + (" forced" if force else ""),
    )


def pause(spec: RolloutSpec) -> SpecEdit | None:
    """`reconcile pause`: `paused: true` (None: already paused, nothing to write)."""
    if spec.paused:
        return None
    return SpecEdit(
        Reason.NONE, {"paused": True}, "paused: no advance, no drift correction until resume"
    )


def resume(spec: RolloutSpec) -> SpecEdit | None:
    """`reconcile resume`: removes `paused` (None: not paused, nothing to write)."""
    if not spec.paused:
        return None
    return SpecEdit(Reason.NONE, {"paused": None}, "resumed")


def abort(spec: RolloutSpec) -> SpecEdit:
    """`reconcile abort`: the canary at 0% and the rollout paused, with no sticky block.

    Unlike a rollback, the canary stays named and may be resumed and promoted again.
    """
    canary = _canary(spec)
    return SpecEdit(
        Reason.ROLLBACK,
        {"canary_percent": 0, "paused": True, "force": None},
        f"aborted: canary {spec.canary_percent}% -> 0% ({canary}), paused",
    )


def retry(
    spec: RolloutSpec, reason: str | None, regions: Collection[str] | None = None
) -> SpecEdit:
    """`reconcile retry`: clear the `rolled_back` block (and, in a file with waves, every
    region's `rolled_back_regions` entry, which lifts the hold on the other regions; with
    `regions`, only theirs: the hold stays while another region's entry names the canary).

    A block naming an older canary (a new one is named) is cleared as stale; re-trying the
    very canary that was rolled back needs a `reason` recorded in the commit.
    """
    if regions is not None and spec.rolled_back is not None:
        raise VerbError(
            f"{spec.service}: the rolled_back block is the whole file's (every region was "
            "rolled back); retry it without --region"
        )
    if spec.rolled_back_regions and spec.rolled_back is None:
        return _retry_regions(spec, reason, regions)
    rb = spec.rolled_back
    if rb is None:
        raise VerbError(f"{spec.service}: no rolled_back block to clear")
    if is_rolled_back(spec):
        if not reason:
            raise VerbError(
                f"{spec.service}: canary {rb.revision} itself was rolled back ({rb.reason}); "
                "name a new canary, or pass --reason to retry the same one"
            )
        return SpecEdit(Reason.NONE, {"rolled_back": None}, f"retry {rb.revision}: {reason}")
    return SpecEdit(
        Reason.NONE,
        {"rolled_back": None},
        f"cleared the rolled_back block of {rb.revision} (canary is now "
        f"{spec.revisions.canary or 'none'})",
    )


def _retry_regions(
    spec: RolloutSpec, reason: str | None, regions: Collection[str] | None
) -> SpecEdit:
    """Retry the regions of a file with waves: each climbs back from the first stage."""
    entries = spec.rolled_back_regions
    asked = set(entries) if regions is None else set(regions)
    if not asked & set(entries):
        raise VerbError(
            f"{spec.service}: {', '.join(sorted(asked))} not rolled back (rolled back: "
            f"{', '.join(sorted(entries))})"
        )
    canary = spec.revisions.canary
    mine = sorted(r for r, e in entries.items() if e.revision == canary and r in asked)
    values: dict[str, Any] = (
        {"rolled_back_regions": None}
        if set(entries) <= asked
        else {f"rolled_back_regions.{r}": None for r in sorted(asked & set(entries))}
    )
    if not mine:
        return SpecEdit(Reason.NONE, values, "cleared rolled_back_regions of older canaries")
    if not reason:
        why = spec.rolled_back_regions[mine[0]].reason
        raise VerbError(
            f"{spec.service}: canary {canary} itself was rolled back in {', '.join(mine)} "
            f"({why}); name a new canary, or pass --reason to retry the same one"
        )
    return SpecEdit(Reason.NONE, values, f"retry {canary} in {', '.join(mine)}: {reason}")


def canary_start(spec: RolloutSpec, revision: str, known: Collection[str]) -> SpecEdit:
    """`reconcile canary start`: name `revision` as canary at the first stage.

    Refused while a canary is in flight (above 0%), or for a revision Cloud Run does not list.
    A stale `rolled_back` block and `paused` are cleared: this is a new rollout.
    """
    if spec.revisions.canary is not None and spec.canary_percent > 0:
        raise VerbError(
            f"{spec.service}: canary {spec.revisions.canary} is at {spec.canary_percent}%; "
            "promote it or reconcile abort first"
        )
    if revision == spec.revisions.stable:
        raise VerbError(f"{spec.service}: {revision} is already the stable revision")
    if revision not in known:
        raise VerbError(
            f"{spec.service}: revision {revision} does not exist "
            f"(known: {', '.join(sorted(known)) or 'none'})"
        )
    first = spec.stages[0]
    values: dict[str, Any] = {"revisions.canary": revision, "canary_percent": first}
    if spec.rolled_back is not None:
        values["rolled_back"] = None
    if spec.rolled_back_regions:
        values["rolled_back_regions"] = None
    if spec.paused:
        values["paused"] = None
    return SpecEdit(Reason.STAGE, values, f"canary start {revision} at {first}%")


def commit(service: str, action: CommitAction, edit: SpecEdit, spec_id: str | None) -> Commit:
    """The commit of a verb's rollout-file edit (`Reconcile-Action: <verb>`)."""
    trailers = {"Reconcile-Service": service, "Reconcile-Action": action.value}
    if spec_id:
        trailers["Reconcile-Spec"] = spec_id
    return Commit(f"reconcile({service}): {action.value} {edit.summary}", "", trailers)


def decide_abort(
    spec: RolloutSpec,
    status: ServiceStatus | None,
    live: LiveService,
    *,
    now: datetime,
    spec_id: str | None = None,
    actor: str = "reconciler",
) -> Decision:
    """`reconcile abort` as one Decision: a rollback's traffic write (100% to stable), with
    the `abort` edit instead of the sticky block, and the rollout left paused."""
    edit = abort(spec)
    d = decide_rollback(spec, status, live, now=now, reason="abort", spec_id=spec_id, actor=actor)
    sp = replace(d.plan, edit=edit, phase=Phase.PAUSED)
    done = tuple(
        replace(e, reason=edit.summary, details={**e.details, "abort": True}) for e in d.done
    )
    c = commit(spec.service, CommitAction.ABORT, edit, spec_id)
    c = replace(c, subject=f"reconcile({spec.service}): {edit.summary}")
    return replace(
        d,
        plan=sp,
        status=replace(d.status, phase=Phase.PAUSED, canary_revision=spec.revisions.canary),
        held=replace(d.held, phase=Phase.PAUSED),
        done=done,
        commit=c,
        held_commit=c,
    )


__all__ = [
    "FileRollouts",
    "VerbError",
    "abort",
    "bake_block",
    "canary_start",
    "commit",
    "decide_abort",
    "one_file",
    "pause",
    "pick",
    "promote",
    "resume",
    "retry",
    "several",
]
