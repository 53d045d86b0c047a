"""The operator's manual actions: roll a canary back now, promote it one stage.

Both are decided by the pure core (`decide.decide_rollback`, `decide.promotion`) and carried
out by the loop's executor (etag writes with the stamp, the one rollout-file edit path, one
commit), so git tells the truth about them too.
"""

from __future__ import annotations

import logging
from pathlib import Path

from reconciler import state as st
from reconciler.decide import Decision, decide_rollback, promotion
from reconciler.errors import ReconcileError
from reconciler.execute import ServiceRun, carry_out, edit_text, read_rollout, record
from reconciler.loader import load_spec
from reconciler.model import LiveService
from reconciler.plan import PlanError, is_rolled_back
from reconciler.reconcile import Context, ServiceOutcome, ref_of, rollout_files

log = logging.getLogger(__name__)


def _one_file(ctx: Context, service: str) -> Path:
    """The rollout file of exactly one service (no globs for a manual action)."""
    if any(ch in service for ch in "*?["):
        raise ReconcileError(f"{service!r}: name one service, not a pattern")
    return rollout_files(ctx.repo / "rollout", [service])[0]


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


def roll_back_now(ctx: Context, service: str, reason: str) -> ServiceOutcome:
    """The rollback's traffic write and its local record, without touching the remote: the
    desired state comes from the working tree and the live service (a clone that is behind
    still knows the stable revision it last applied, and the live service says what serves).
    A write whose read-back failed is recorded all the same, with `error` saying so.
    """
    path = _one_file(ctx, service)
    spec = load_spec(path)
    live = ctx.backend.get_service(ref_of(spec))
    if is_rolled_back(spec) and live.traffic.percents() == {spec.revisions.stable: 100}:
        return ServiceOutcome(spec.service)
    now = ctx.clock()
    loaded = st.load_status(ctx.state_root, spec.service)  # corrupt state never blocks it
    status = loaded.status
    spec_commit = ctx.git.last_commit_touching(path) if ctx.git else None
    run = ServiceRun(path, spec, live, now)
    rebuilt = loaded.event(now, ctx.actor)
    if rebuilt is not None:
        run.events.append(rebuilt)

    def redecide(fresh: LiveService) -> Decision:
        return decide_rollback(
            spec, status, fresh, now=now, reason=reason, spec_commit=spec_commit, actor=ctx.actor
        )

    d, applied = carry_out(ctx, run, redecide(live), redecide)
    commit = record(ctx, run, d, applied)
    error = None
    if run.unconfirmed:
        error = f"{d.plan.ref.name}: rollback recorded, not confirmed serving: {run.unconfirmed}"
    return ServiceOutcome(
        spec.service, plan=d.plan, applied=True, rolled_back=True, error=error, commit=commit
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
        f"{outcome.service}: rolled back and recorded locally"
        if outcome.rolled_back
        else f"{outcome.service}: local commits"
    )
    synced = ctx.git.sync()
    if not synced.at_tip:
        raise ReconcileError(f"{done}, not pushed: {synced.reason}; the next run pushes it")
    try:
        ctx.git.push()
    except ReconcileError as exc:
        raise ReconcileError(f"{done}, not pushed: {exc}") from None


def promote(ctx: Context, service: str, branch: str | None = None) -> tuple[str, str | None]:
    """Write the next stage into the rollout file and commit it (on `branch` when given).

    Returns (summary, commit sha).
    """
    path = _one_file(ctx, service)
    _pull(ctx)
    spec = load_spec(path)
    spec_commit = ctx.git.last_commit_touching(path) if ctx.git else None
    try:
        edit, message = promotion(spec, spec_commit)
    except PlanError as exc:
        raise ReconcileError(str(exc)) from None
    text = edit_text(read_rollout(path), edit)
    if ctx.git is None:
        st.atomic_write_text(path, text)
        return edit.summary, None
    if branch:
        sha = ctx.git.commit_to_branch(
            branch, {path: text}, message.subject, trailers=message.trailers, push=ctx.push
        )
        return edit.summary, sha
    st.atomic_write_text(path, text)
    commit = ctx.git.commit(
        [path], message.subject, trailers=message.trailers, skip_reconcile=False
    )
    if ctx.push and ctx.git.has_remote():
        ctx.git.push()
    return edit.summary, commit
