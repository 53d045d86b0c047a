"""The operator's manual actions: rollback, abort, promote, pause, resume, retry, canary start.

Each is decided by the pure core (`decide.decide_rollback`, the rules in `verbs`) and carried
out by the loop's executor (etag writes with the stamp, the one rollout-file edit path, one
commit), so git tells the truth about them too. A dry run decides and writes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from reconciler import state as st
from reconciler import verbs
from reconciler.decide import Commit, Decision, decide_rollback
from reconciler.errors import ReconcileError
from reconciler.execute import ServiceRun, carry_out, edit_text, read_rollout, record
from reconciler.loader import load_spec, spec_id_of
from reconciler.model import CommitAction, LiveService, labels
from reconciler.plan import SpecEdit, is_rolled_back
from reconciler.reconcile import Context, ServiceOutcome, ref_of, rollout_files
from reconciler.runcommit import named
from reconciler.spec import RolloutSpec
from reconciler.waves import expand, for_region

log = logging.getLogger(__name__)


def _one_file(ctx: Context, service: str, region: str | None = None) -> Path:
    """The rollout file of exactly one service (no globs for a manual action); with `region`,
    the one naming that region (the service may have a file per region in sub-folders)."""
    if any(ch in service for ch in "*?["):
        raise ReconcileError(f"{service!r}: name one service, not a pattern")
    files = rollout_files(ctx.repo / "rollout", [service])
    if region is None or len(files) == 1:
        return files[0]
    for path in files:
        if region in [s.region for s in expand(load_spec(path))]:
            return path
    raise ReconcileError(f"{service}: no rollout file names region {region}")


def _pull(ctx: Context) -> None:
    """Act on the newest git: a laptop clone may be behind (a finalize, a new stable). Never
    before a rollback's traffic write (see `roll_back_now`)."""
    if ctx.git is not None and ctx.push and ctx.git.has_remote():
        try:
            ctx.git.pull()
        except ReconcileError as exc:
            log.warning("pull failed, acting on the local working tree: %s", exc)


def rollback(ctx: Context, service: str, reason: str) -> ServiceOutcome:
    """100% to stable at once, then the sticky `rolled_back` block, committed and pushed.

    Already rolled back (all traffic on stable, the block in git): nothing to do. Git is
    reached only after the traffic write and the local commit (`roll_back_now`), so a slow
    or unreachable remote never delays the rollback; `publish` says when it was not pushed.
    """
    outcome = roll_back_now(ctx, service, reason)
    publish(ctx, outcome)
    if outcome.error:
        raise ReconcileError(outcome.error)
    return outcome


def roll_back_now(
    ctx: Context, service: str, reason: str, region: str | None = None
) -> ServiceOutcome:
    """The rollback's traffic write and its local record, without touching the remote: the
    desired state comes from the working tree and the live service (a clone that is behind
    still knows the stable revision it last applied, and the live service says what serves).
    A write whose read-back failed is recorded all the same, with `error` saying so.

    `region` picks the file naming that region, and rolls back that region of a file with
    `waves:` alone (its `rolled_back_regions` entry; the other regions hold), as a failing gate
    does; its commit names the region.
    """
    path = _one_file(ctx, service, region)
    whole = load_spec(path)
    if region is not None and region not in [s.region for s in expand(whole)]:
        raise ReconcileError(f"{path}: {service} has no region {region}")
    spec = for_region(whole, region or whole.region)
    region_only = region is not None and spec.waves is not None
    name = labels(ref_of(s) for s in expand(whole))[ref_of(spec)] if region_only else spec.service
    live = ctx.backend.get_service(ref_of(spec))
    if is_rolled_back(spec) and live.traffic.percents() == {spec.revisions.stable: 100}:
        return ServiceOutcome(spec.service, label=name if name != spec.service else "")
    now = ctx.clock()
    loaded = st.load_status(ctx.state_root, ref_of(spec))  # corrupt state never blocks it
    status = loaded.status
    spec_id = spec_id_of(path)
    run = ServiceRun(path, spec, live, now)
    rebuilt = loaded.event(now, ctx.actor)
    if rebuilt is not None:
        run.events.append(rebuilt)

    def redecide(fresh: LiveService) -> Decision:
        d = decide_rollback(
            spec,
            status,
            fresh,
            now=now,
            reason=reason,
            spec_id=spec_id,
            actor=ctx.actor,
            region_only=region_only,
        )
        return replace(d, commit=named(d.commit, d.plan.ref, name))

    d, applied = carry_out(ctx, run, redecide(live), redecide)
    commit = record(ctx, run, d, applied)
    error = None
    if run.unconfirmed:
        error = f"{d.plan.ref.name}: rollback recorded, not confirmed serving: {run.unconfirmed}"
    return ServiceOutcome(
        spec.service,
        plan=d.plan,
        applied=True,
        rolled_back=True,
        error=error,
        commit=commit,
        label=name if name != spec.service else "",
    )


def publish(ctx: Context, outcome: ServiceOutcome) -> None:
    """Bring the rollback's record (and any earlier unpushed one) to the remote: sync onto
    its tip, then push. Raises, saying the rollback is live and committed locally, when the
    remote cannot be reached; the next run pushes the commit."""
    if ctx.git is None or not ctx.push or not ctx.git.has_remote():
        return
    if not outcome.commit and not ctx.git.unpushed():
        return
    done = (
        f"{outcome.name}: rolled back and recorded locally"
        if outcome.rolled_back
        else f"{outcome.name}: local commits"
    )
    synced = ctx.git.sync()
    if not synced.at_tip:
        raise ReconcileError(f"{done}, not pushed: {synced.reason}; the next run pushes it")
    try:
        ctx.git.push()
    except ReconcileError as exc:
        raise ReconcileError(f"{done}, not pushed: {exc}") from None


@dataclass(frozen=True)
class VerbResult:
    """What a verb wrote (or, in a dry run, would write): the edit's summary and the commit."""

    summary: str
    commit: str | None = None
    dry_run: bool = False
    noop: bool = False


def _decided(rule: Callable[[], SpecEdit | None]) -> SpecEdit | None:
    """A pure rule's refusal is an operator error: one line, exit 1, nothing written."""
    try:
        return rule()
    except verbs.VerbError as exc:
        raise ReconcileError(str(exc)) from None


def _write(
    ctx: Context,
    path: Path,
    edit: SpecEdit,
    message: Commit,
    branch: str | None,
    dry_run: bool,
) -> VerbResult:
    """Commit a verb's rollout-file edit (on `branch` when given) and push it."""
    if dry_run:
        return VerbResult(edit.summary, dry_run=True)
    text = edit_text(read_rollout(path), edit)
    if ctx.git is None:
        st.atomic_write_text(path, text)
        return VerbResult(edit.summary)
    if branch:
        on_branch = ctx.git.commit_to_branch(
            branch, {path: text}, message.subject, trailers=message.trailers, push=ctx.push
        )
        return VerbResult(edit.summary, on_branch)
    st.atomic_write_text(path, text)
    sha = ctx.git.commit([path], message.subject, trailers=message.trailers, skip_reconcile=False)
    if ctx.push and ctx.git.has_remote():
        ctx.git.push()
    return VerbResult(edit.summary, sha)


def _edit_verb(
    ctx: Context,
    service: str,
    action: CommitAction,
    rule: Callable[[RolloutSpec, st.ServiceStatus | None], SpecEdit | None],
    *,
    branch: str | None = None,
    dry_run: bool = False,
    noop: str = "nothing to change",
) -> VerbResult:
    """A verb that only edits the rollout file: decide it purely, then commit the edit."""
    path = _one_file(ctx, service)
    _pull(ctx)
    spec = load_spec(path)
    status = st.load_status(ctx.state_root, ref_of(spec)).status
    edit = _decided(lambda: rule(spec, status))
    if edit is None:
        return VerbResult(noop, noop=True)
    spec_id = spec_id_of(path)
    message = verbs.commit(spec.service, action, edit, spec_id)
    return _write(ctx, path, edit, message, branch, dry_run)


def promote(
    ctx: Context,
    service: str,
    branch: str | None = None,
    *,
    to: int | None = None,
    full: bool = False,
    force: bool = False,
    dry_run: bool = False,
) -> VerbResult:
    """Write the next stage (or `to`, or 100%) into the rollout file and commit it.

    Refused before the current stage's bake has passed, unless `force` (written as
    `force: true`, which the next apply honours once).
    """
    now = ctx.clock()
    return _edit_verb(
        ctx,
        service,
        CommitAction.PROMOTE,
        lambda spec, status: verbs.promote(spec, status, now=now, to=to, full=full, force=force),
        branch=branch,
        dry_run=dry_run,
    )


def pause(ctx: Context, service: str, *, dry_run: bool = False) -> VerbResult:
    """Commit `paused: true`: no advance, no drift correction; rollbacks still happen."""
    return _edit_verb(
        ctx,
        service,
        CommitAction.PAUSE,
        lambda spec, _: verbs.pause(spec),
        dry_run=dry_run,
        noop="paused",
    )


def resume(ctx: Context, service: str, *, dry_run: bool = False) -> VerbResult:
    """Remove `paused`: the next apply advances and corrects drift again."""
    return _edit_verb(
        ctx,
        service,
        CommitAction.RESUME,
        lambda spec, _: verbs.resume(spec),
        dry_run=dry_run,
        noop="not paused",
    )


def retry(
    ctx: Context, service: str, reason: str | None = None, *, dry_run: bool = False
) -> VerbResult:
    """Clear the `rolled_back` block (a new canary named, or the same one with a reason)."""
    return _edit_verb(
        ctx, service, CommitAction.RETRY, lambda spec, _: verbs.retry(spec, reason), dry_run=dry_run
    )


def canary_start(
    ctx: Context,
    service: str,
    revision: str | None = None,
    *,
    branch: str | None = None,
    dry_run: bool = False,
) -> VerbResult:
    """Name `revision` (default: Cloud Run's latest ready revision) as canary at the first
    stage, committed (on `branch` for a pull request when given)."""
    path = _one_file(ctx, service)
    _pull(ctx)
    spec = load_spec(path)
    live = ctx.backend.get_service(ref_of(spec))
    chosen = revision or live.latest_ready_revision

    def rule(spec: RolloutSpec, _: st.ServiceStatus | None) -> SpecEdit:
        return verbs.canary_start(spec, chosen, live.revisions)

    return _edit_verb(ctx, service, CommitAction.CANARY_START, rule, branch=branch, dry_run=dry_run)


def abort(ctx: Context, service: str, *, dry_run: bool = False) -> ServiceOutcome:
    """100% to stable now, `canary_percent: 0` and `paused: true`, with no sticky block:
    the canary stays named and can be resumed."""
    path = _one_file(ctx, service)
    _pull(ctx)
    spec = load_spec(path)
    live = ctx.backend.get_service(ref_of(spec))
    now = ctx.clock()
    loaded = st.load_status(ctx.state_root, ref_of(spec))
    status = loaded.status
    spec_id = spec_id_of(path)

    def redecide(fresh: LiveService) -> Decision:
        try:
            return verbs.decide_abort(
                spec, status, fresh, now=now, spec_id=spec_id, actor=ctx.actor
            )
        except verbs.VerbError as exc:
            raise ReconcileError(str(exc)) from None

    d = redecide(live)
    if dry_run:
        return ServiceOutcome(spec.service, plan=d.plan)
    run = ServiceRun(path, spec, live, now)
    rebuilt = loaded.event(now, ctx.actor)
    if rebuilt is not None:
        run.events.append(rebuilt)
    d, applied = carry_out(ctx, run, d, redecide)
    commit = record(ctx, run, d, applied)
    if commit and ctx.push and ctx.git is not None:
        ctx.git.push()
    if run.unconfirmed:
        raise ReconcileError(
            f"{d.plan.ref.name}: abort recorded, not confirmed serving: {run.unconfirmed}"
        )
    return ServiceOutcome(spec.service, plan=d.plan, applied=True, commit=commit)
