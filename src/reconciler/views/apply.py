"""What `apply`, `rollback` and `promote` print: a line per service and a closing summary."""

from __future__ import annotations

from dataclasses import dataclass

from reconciler.plan import ServicePlan
from reconciler.views.outcomes import RunResult, ServiceOutcome
from reconciler.views.plan import verdict_summary
from reconciler.views.style import paint


@dataclass(frozen=True)
class Line:
    """One output line, and whether it belongs on stderr (errors and blocked services)."""

    text: str
    err: bool = False


def _commit(sha: str | None) -> str:
    return f" (commit {sha[:10]})" if sha else ""


def outcome_lines(o: ServiceOutcome, *, color: bool = False) -> list[Line]:
    """The lines of one service's outcome: applied, rolled back, blocked, in sync or error."""
    if o.error:
        text = o.error if o.error.startswith(o.service) else f"{o.service}: {o.error}"
        return [Line(f"{paint('error:', 'bad', color)} {text}", err=True)]
    sp = o.plan
    if sp is None:
        return []
    if o.rolled_back:
        head = paint("ROLLED BACK", "bad", color)
        what = sp.edit.summary if sp.edit else ""
        lines = [Line(f"{head} {o.service}: {what}{_commit(o.commit)}")]
    elif o.applied:
        change = f"{sp.before.describe()} -> {sp.after.describe()}"
        head = paint("applied", "change", color)
        lines = [Line(f"{head} {o.service}: {sp.reason.value}, {change}{_commit(o.commit)}")]
    elif sp.blocked:
        lines = [Line(f"{paint('blocked', 'bad', color)} {o.service}: {sp.blocked}", err=True)]
    else:
        verdict = f", verdict {verdict_summary(o.verdict)}" if o.verdict else ""
        ok = paint("ok", "good", color)
        lines = [Line(f"{ok} {o.service}: in sync ({sp.before.describe()}){verdict}")]
    return lines + [Line(f"  {note}") for note in (*sp.notes, *sp.warnings)]


def summary(result: RunResult) -> str:
    """`Apply: 1 changed, 0 rolled back, 3 in sync, 0 blocked, 1 error.` (errors include git's)."""
    outcomes = result.outcomes
    rolled = sum(o.rolled_back for o in outcomes)
    errors = sum(bool(o.error) for o in outcomes) + bool(result.git_error)
    changed = sum(o.applied and not o.rolled_back and not o.error for o in outcomes)
    blocked = sum(
        not o.error and not o.rolled_back and o.plan is not None and bool(o.plan.blocked)
        for o in outcomes
    )
    same = len(outcomes) - rolled - changed - blocked - sum(bool(o.error) for o in outcomes)
    return (
        f"Apply: {changed} changed, {rolled} rolled back, {same} in sync, "
        f"{blocked} blocked, {errors} {'error' if errors == 1 else 'errors'}."
    )


def run_lines(result: RunResult, *, dry_run: bool = False, color: bool = False) -> list[Line]:
    """Everything `apply` prints after its work: outcomes, a git failure, the summary.

    A dry run has printed its plan already, so only its errors follow.
    """
    lines = []
    for o in result.outcomes:
        if dry_run and not o.error:
            continue
        lines += outcome_lines(o, color=color)
    if result.git_error:
        lines.append(Line(f"{paint('error:', 'bad', color)} {result.git_error}", err=True))
    if not dry_run:
        lines.append(Line(summary(result)))
    return lines


def rollback_line(service: str, sp: ServicePlan | None, commit: str | None) -> str:
    """What `reconcile rollback` prints: the split it moved, or that there was nothing to do."""
    if sp is None:
        return f"{service}: already rolled back (100% on the stable revision); nothing to do"
    return (
        f"rolled back {service}: {sp.before.describe()} -> {sp.after.describe()}{_commit(commit)}"
    )


def promote_line(service: str, summary: str, branch: str | None, commit: str | None) -> str:
    """What `reconcile promote` prints: the rollout-file edit, where it was committed."""
    where = f" on branch {branch}" if branch else ""
    return f"promoted {service}: {summary}{where}{_commit(commit)}"
