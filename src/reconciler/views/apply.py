"""What `apply`, `rollback` and `promote` print: a line per service (as it finishes), the
progress of a long run, and the closing lines (the run's commits, git errors, a summary)."""

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


def outcome_lines(o: ServiceOutcome, *, color: bool = False, mark: str = "") -> list[Line]:
    """The lines of one service's outcome: applied, rolled back, held, left alone, blocked,
    in sync or error. `mark` ends every line (degraded mode)."""
    name = o.name
    if o.error:
        # An error that already names its service (or its file) is not prefixed; one of a
        # service the run holds in several regions is, unless it names it as the run does.
        named = name in o.error.split(":", 1)[0]
        text = o.error if named else f"{name}: {o.error}"
        return [Line(f"{paint('error:', 'bad', color)} {text}{mark}", err=True)]
    sp = o.plan
    if sp is None:
        return []
    if o.rolled_back:
        head = paint("ROLLED BACK", "bad", color)
        what = sp.edit.summary if sp.edit else ""
        lines = [Line(f"{head} {name}: {what}{_commit(o.commit)}{mark}")]
    elif o.applied:
        change = f"{sp.before.describe()} -> {sp.after.describe()}"
        head = paint("applied", "change", color)
        lines = [Line(f"{head} {name}: {sp.reason.value}, {change}{_commit(o.commit)}{mark}")]
    elif o.held:
        lines = [Line(f"{paint('held', 'bad', color)} {name}: {o.held}{mark}", err=True)]
    elif o.left_alone:
        lines = [Line(f"{name}: {paint(o.left_alone, 'bad', color)}{mark}", err=True)]
    elif sp.blocked:
        text = f"{paint('blocked', 'bad', color)} {name}: {sp.blocked}{mark}"
        lines = [Line(text, err=True)]
    else:
        verdict = f", verdict {verdict_summary(o.verdict)}" if o.verdict else ""
        ok = paint("ok", "good", color)
        lines = [Line(f"{ok} {name}: in sync ({sp.before.describe()}){verdict}{mark}")]
    notes = [n for n in (*sp.notes, *sp.warnings) if n != o.left_alone]
    return lines + [Line(f"  {note}") for note in notes]


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


def progress_line(done: int, total: int, changed: int, rolled_back: int, elapsed_s: float) -> str:
    """`apply: 412/1000 services, 3 changed, 0 rolled back, 12 s` (stderr, long runs)."""
    return (
        f"apply: {done}/{total} services, {changed} changed, {rolled_back} rolled back, "
        f"{elapsed_s:.0f} s"
    )


def closing_lines(result: RunResult, *, dry_run: bool = False, color: bool = False) -> list[Line]:
    """What `apply` prints after every service's line: a rollback not yet on the remote,
    degraded mode, a git failure, the run's commits and the summary."""
    lines = []
    if not result.recorded:
        for o in result.outcomes:
            if o.rolled_back:
                text = f"{o.name}: the rollback is NOT yet recorded on the remote"
                lines.append(Line(f"{paint('warning:', 'bad', color)} {text}", err=True))
    if result.degraded:
        text = f"{result.degraded}; only rollbacks were applied"
        lines.append(Line(f"{paint('degraded:', 'bad', color)} {text}", err=True))
    if result.git_error:
        lines.append(Line(f"{paint('error:', 'bad', color)} {result.git_error}", err=True))
    if result.commits:
        shas = ", ".join(sha[:10] for sha in result.commits)
        lines.append(Line(f"recorded in {len(result.commits)} commit(s): {shas}"))
    if not dry_run:
        lines.append(Line(summary(result)))
    return lines


def run_lines(result: RunResult, *, dry_run: bool = False, color: bool = False) -> list[Line]:
    """Everything `apply` prints after its work: outcomes, then `closing_lines`.

    A dry run has printed its plan already, so only its errors follow.
    """
    lines = []
    # Degraded mode is said on every service line: each one was held to rollbacks only.
    mark = " [degraded: rollbacks only]" if result.degraded else ""
    for o in result.outcomes:
        if dry_run and not o.error:
            continue
        lines += outcome_lines(o, color=color, mark=mark)
    return lines + closing_lines(result, dry_run=dry_run, color=color)


def rollback_line(service: str, sp: ServicePlan | None, commit: str | None) -> str:
    """What `reconcile rollback` prints: the split it moved, or that there was nothing to do."""
    if sp is None:
        return f"{service}: already rolled back (100% on the stable revision); nothing to do"
    return (
        f"rolled back {service}: {sp.before.describe()} -> {sp.after.describe()}{_commit(commit)}"
    )


def verb_line(
    service: str,
    verb: tuple[str, str],
    summary: str,
    *,
    branch: str | None = None,
    commit: str | None = None,
    dry_run: bool = False,
    noop: bool = False,
) -> str:
    """What an operator verb prints: the rollout-file edit it made (or, `dry_run`, would
    make), where it was committed; `verb` is (present, past): ("promote", "promoted")."""
    if noop:
        return f"{service}: {summary}; nothing to do"
    where = f" on branch {branch}" if branch else ""
    lead = f"would {verb[0]}" if dry_run else verb[1]
    return f"{lead} {service}: {summary}{where}{_commit(commit)}"
