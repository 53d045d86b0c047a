"""One run's git: the records its services write, committed together (at most a rollback
commit and a record commit per run), the sync onto the remote's tip and the pushes."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from reconciler.errors import ReconcileError
from reconciler.execute import Context, Record, commit_records
from reconciler.model import ServiceRef

log = logging.getLogger(__name__)


@dataclass
class Book:
    """The records of a run not committed yet, and the commit each service's record went to.

    Services write their records from the run's pool (`add`); the loop commits what was
    added so far as one commit (`commit`) at the points the run's structure gives.
    """

    ctx: Context
    names: Mapping[ServiceRef, str] = field(default_factory=dict)
    """How the run's commits name each rollout (`model.labels` of every rollout of the run)."""
    pending: list[Record] = field(default_factory=list)
    commits: dict[str, str] = field(default_factory=dict)
    """Rollout key (`ServiceRef.key`) -> the sha of the run's commit holding its (latest)
    record."""
    shas: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, record: Record | None) -> None:
        """A service's record, written to the working tree, to go into the next commit."""
        if record is not None:
            with self._lock:
                self.pending.append(record)

    def commit(self, moved: Sequence[str] = ()) -> str | None:
        """Commit every pending record as one commit; None when there was nothing new (or no
        git). A failed commit is kept in `errors`: `moved` has the keys of the rollouts whose
        traffic changed, which the next run records from their stamps."""
        with self._lock:
            records, self.pending = self.pending, []
        try:
            sha = commit_records(self.ctx, records, self.names or None)
        except ReconcileError as exc:
            changed = [r.key for r in records if r.key in moved]
            what = f" (traffic of {', '.join(changed)} was changed; the next run records it)"
            self.errors.append(f"the run's commit failed{what if changed else ''}: {exc}")
            return None
        if sha is not None:
            self.shas.append(sha)
            self.commits.update((r.key, sha) for r in records)
        return sha


def sync(ctx: Context) -> str | None:
    """Bring the clone onto the remote's tip; returns why it could not (degraded), or None."""
    if ctx.git is None or not ctx.push or not ctx.git.has_remote():
        return None
    result = ctx.git.sync()
    for note in (*result.repaired, *result.notes):
        log.warning("git: %s", note)
    if result.at_tip:
        return None
    return f"the clone is not at the remote's tip ({result.reason})"


def push(
    ctx: Context, moved: Sequence[str], committed: bool, degraded: str | None
) -> tuple[bool | None, str | None]:
    """Push the run's commits (and any an earlier failed push left): (pushed, error), with
    (None, None) when nothing was pushed. `moved` has the keys of the rollouts whose traffic changed
    and whose record is among the commits."""
    if ctx.git is None or not ctx.push:
        return None, None
    if degraded is not None and not moved:
        # The sync just failed to reach the remote: a push of older commits would too, and
        # the run already says so (degraded). A run that moved traffic still tries.
        return None, None
    if not (committed or ctx.git.unpushed()):
        return None, None
    what = f"traffic of {', '.join(moved)} moved and is" if moved else "the records are"
    try:
        return ctx.git.push(), None
    except ReconcileError as exc:
        lost = "degraded; " if degraded else ""
        return False, (
            f"{lost}push failed: {what} committed locally only, the next run pushes it: {exc}"
        )
