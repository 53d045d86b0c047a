"""The operator's manual actions: roll a canary back now, promote it one stage.

Both go through the same edges as the reconcile loop (etag writes with the stamp, the
comment-preserving rollout edit, one commit) so git tells the truth about them too.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

from reconciler import state as st
from reconciler import yamledit
from reconciler.errors import ReconcileError
from reconciler.gitops import Action as GitAction
from reconciler.gitops import format_subject, reconcile_trailers
from reconciler.loader import load_spec
from reconciler.model import LiveService
from reconciler.plan import (
    Phase,
    PlanError,
    Reason,
    ServicePlan,
    is_rolled_back,
    promote_edit,
    rollback_plan,
)
from reconciler.reconcile import (
    Context,
    ServiceOutcome,
    ServiceRun,
    edit_rollout_file,
    read_rollout,
    record,
    ref_of,
    rollout_files,
    write_traffic,
)

log = logging.getLogger(__name__)


def _one_file(ctx: Context, service: str) -> Path:
    """The rollout file of exactly one service (no globs for a manual action)."""
    if any(ch in service for ch in "*?["):
        raise ReconcileError(f"{service!r}: name one service, not a pattern")
    return rollout_files(ctx.repo / "rollout", [service])[0]


def _pull(ctx: Context) -> None:
    """Act on the newest git: a laptop clone may be behind (a finalize, a new stable)."""
    if ctx.git is not None and ctx.push and ctx.git.has_remote():
        try:
            ctx.git.pull()
        except ReconcileError as exc:
            log.warning("pull failed, acting on the local working tree: %s", exc)


def rollback(ctx: Context, service: str, reason: str) -> ServiceOutcome:
    """100% to stable at once, then the sticky `rolled_back` block, committed and pushed.

    Already rolled back (all traffic on stable, the block in git): nothing to do.
    """
    path = _one_file(ctx, service)
    _pull(ctx)
    spec = load_spec(path)
    live = ctx.backend.get_service(ref_of(spec))
    if is_rolled_back(spec) and live.traffic.percents() == {spec.revisions.stable: 100}:
        return ServiceOutcome(spec.service)
    now = ctx.clock()
    loaded = st.load_status(ctx.state_root, spec.service)  # corrupt state never blocks it
    status = loaded.status
    run = ServiceRun(path, spec, live, status, now)
    rebuilt = loaded.event(now, ctx.actor)
    if rebuilt is not None:
        run.events.append(rebuilt)
    sp = rollback_plan(spec, live, now=now, reason=reason)
    spec_commit = ctx.git.last_commit_touching(path) if ctx.git else None

    def replan(fresh: LiveService) -> ServicePlan:
        return rollback_plan(spec, fresh, now=now, reason=reason)

    if sp.changes:
        sp, live, _ = write_traffic(ctx, spec, sp, replan, now)
    if sp.edit is not None and (spec.canary_percent != 0 or not is_rolled_back(spec)):
        edit_rollout_file(path, sp.edit, spec, now)
        run.edited = True
    run.events.append(
        st.Event(
            now,
            st.EventKind.ROLLED_BACK,
            ctx.actor,
            before=sp.before.describe(),
            after=live.traffic.describe(),
            reason=reason,
            spec_commit=spec_commit,
            details={"manual": True},
        )
    )
    final_spec = load_spec(path)
    new_status = st.ServiceStatus(
        service=spec.service,
        phase=Phase.ROLLED_BACK,
        stable_revision=final_spec.revisions.stable,
        canary_revision=final_spec.revisions.canary,
        stage=0,
        stage_since=now,
        traffic=live.traffic,
        etag=live.etag,
        generation=live.generation,
        observed_generation=live.observed_generation,
        last_reconcile=now,
        spec_commit=spec_commit,
        verdict=status.verdict if status else None,
        verdict_at=status.verdict_at if status else None,
        windows=status.windows if status else (),
        applied=sp.after,
        probes=status.probes if status else (),
    )
    sp = replace(sp, reason=Reason.ROLLBACK)
    commit = record(ctx, run, sp, new_status, (), True, spec_commit)
    if commit and ctx.push and ctx.git is not None:
        ctx.git.push()
    return ServiceOutcome(spec.service, plan=sp, applied=True, rolled_back=True, commit=commit)


def promote(ctx: Context, service: str, branch: str | None = None) -> tuple[str, str | None]:
    """Write the next stage into the rollout file and commit it (on `branch` when given).

    Returns (summary, commit sha).
    """
    path = _one_file(ctx, service)
    _pull(ctx)
    spec = load_spec(path)
    try:
        edit = promote_edit(spec)
    except PlanError as exc:
        raise ReconcileError(str(exc)) from None
    text = yamledit.set_canary_percent(read_rollout(path), int(edit.values["canary_percent"]))
    if ctx.git is None:
        st.atomic_write_text(path, text)
        return edit.summary, None
    subject = format_subject(spec.service, f"promote {edit.summary}")
    trailers = reconcile_trailers(
        spec.service, GitAction.PROMOTE, ctx.git.last_commit_touching(path)
    )
    if branch:
        sha = ctx.git.commit_to_branch(
            branch, {path: text}, subject, trailers=trailers, push=ctx.push
        )
        return edit.summary, sha
    st.atomic_write_text(path, text)
    commit = ctx.git.commit([path], subject, trailers=trailers, skip_reconcile=False)
    if ctx.push and ctx.git.has_remote():
        ctx.git.push()
    return edit.summary, commit
