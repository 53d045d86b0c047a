"""Carrying out a Decision: dependencies, the stamped traffic write, the rollout-file edit and
its record (status, metrics, events), committed alone (`record`, a manual action) or with the
rest of a run (`write_record` + `commit_records`); and recovering a write a crashed run left.

Crash safety: every traffic write also stamps the service with an annotation (`STAMP_KEY`)
describing the write and the action its commit records. Traffic goes first, the rollout-file
edit and the git record second; if the process dies in between, the next run finds a stamp
that state/ has not recorded yet and writes that action's missing record, including its edit
(a rollback's sticky block, an abort's pause, an advance's `canary_percent`, a finalize), so
no commit is needed before the write. A stamp younger than `recover_after` may belong to a run
still recording it: that service is left alone (`pending`) until it is recorded or old enough,
except for a rollback, which is always safe.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from reconciler import state as st
from reconciler import verbs, yamledit
from reconciler.backends import Conflict, TrafficBackend
from reconciler.decide import (
    Commit,
    Decision,
    ReportDue,
    checkpoint_interval,
    news,
    record_due,
)
from reconciler.errors import ReconcileError
from reconciler.gitops import GitOps
from reconciler.loader import load_spec
from reconciler.metrics import MetricsProvider
from reconciler.model import (
    CommitAction,
    LiveService,
    ServiceRef,
    ServiceStatus,
    Target,
    TrafficSplit,
)
from reconciler.plan import (
    Reason,
    ServicePlan,
    SpecEdit,
    desired_split,
    is_rolled_back,
    rollback_block,
    rollback_values,
)
from reconciler.runcommit import Entry, run_commit
from reconciler.shard import Shard
from reconciler.spec import Metrics, RolloutSpec, format_duration
from reconciler.waves import for_region

log = logging.getLogger(__name__)

STAMP_KEY = "cloudrun-reconciler/last-apply"
RECOVER_AFTER = timedelta(minutes=2)
"""How old an unrecorded stamped write must be before a run records it in its writer's place."""


@dataclass
class Context:
    """What one run needs from the outside world; tests and the CLI build it."""

    repo: Path
    backend: TrafficBackend
    clock: Callable[[], datetime]
    metrics_for: Callable[[Metrics], MetricsProvider] | None = None
    git: GitOps | None = None
    push: bool = True
    actor: str = "reconciler"
    run_probes: bool = True
    environ: Mapping[str, str] | None = None
    max_workers: int = 16
    window_keep: int = 12
    recover_after: timedelta = RECOVER_AFTER
    """A stamp younger than this may belong to a concurrent run that is still recording it."""
    progress: Callable[[str], None] = lambda _msg: None
    shard: Shard | None = None
    """Reconcile only the rollouts this shard owns (`--shard K/N`); None: all."""
    probe_budget: float = 60.0
    """Seconds of a run in which canary probes may start; later ones are skipped (no
    evidence), so a run of slow targets cannot hold up the writes that follow it."""
    git_lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)
    """Serializes every commit of a run: services are reconciled on a pool, git is not."""

    @property
    def state_root(self) -> Path:
        return self.repo


@dataclass
class ServiceRun:
    """Mutable scratch of one service's tick or manual action (kept out of the pure core)."""

    path: Path
    spec: RolloutSpec
    live: LiveService
    now: datetime
    events: list[st.Event] = field(default_factory=list)
    """Events found before deciding: late records of earlier writes (see `recover`), a
    rebuilt status file."""
    edited: bool = False
    wrote: Decision | None = None
    """The decision whose traffic this run wrote (set the moment the write is verified)."""
    unconfirmed: str | None = None
    """Why a rollback's traffic write could not be confirmed (it is recorded all the same)."""
    unrecorded_at: datetime | None = None
    """When the write live traffic shows was made, if state/ did not record it when this
    run began (`recover`): a stage it made began then, not at this run."""
    pending: bool = False
    """That write is too young to recover: its writer may still be recording it."""

    @property
    def ref(self) -> ServiceRef:
        """The rollout's identity (its state/ folder)."""
        return ServiceRef(self.spec.project, self.spec.region, self.spec.service)


# --- the rollout file ----------------------------------------------------------------------
def read_rollout(path: Path) -> str:
    """A rollout file's text exactly as written (CRLF line ends kept for the byte-exact edit)."""
    return path.read_bytes().decode("utf-8")


def edit_text(text: str, edit: SpecEdit) -> str:
    """The rollout file's text with the planner's complete edit applied (the one edit path):
    a None value removes its key, a mapping replaces its key, every other byte is kept."""
    remove = [k for k, v in edit.values.items() if v is None or isinstance(v, Mapping)]
    values = {k: v for k, v in edit.values.items() if v is not None}
    return yamledit.edit_rollout(text, set_values=values, remove=remove)


_EDITS: dict[Path, threading.Lock] = {}
"""One lock per rollout file, serializing its edits: the regions of a file with `waves:` are
reconciled on a pool, and two of them rolled back in one run each add their entry to the same
file. Edits of different files go on side by side (a change of a whole fleet edits each)."""
_EDITS_LOCK = threading.Lock()


def edit_rollout_file(run: ServiceRun, edit: SpecEdit) -> None:
    """Carry out an edit of the run's rollout file, keeping every other byte."""
    path = run.path.resolve()
    with _EDITS_LOCK:
        lock = _EDITS.setdefault(path, threading.Lock())
    with lock:
        st.atomic_write_text(run.path, edit_text(read_rollout(run.path), edit))
    run.edited = True


# --- traffic -------------------------------------------------------------------------------
def stamp(
    sp: ServicePlan, now: datetime, reason: str, commits: CommitAction | None = None
) -> dict[str, str]:
    """The annotation written with a traffic change (see module docstring); `commits` is what
    the write's commit records, so a recovered record is that action's (an abort is no
    rollback)."""
    data: dict[str, Any] = {
        "action": sp.reason.value,
        "commits": commits.value if commits is not None else None,
        "at": st.format_time(now),
        # Unique per write: two runs writing the same split in the same second must still
        # tell their writes apart (see CloudRunBackend.set_traffic).
        "write": uuid.uuid4().hex,
        "from_generation": sp.generation,
        "split": [[t.revision, t.percent, t.tag] for t in sp.after.targets],
        "canary": sp.canary,
        "reason": reason,
    }
    block = rollback_block(sp.edit)
    if block is not None:
        # The exact reason the rollback writes into the rollout file, so a recovered record
        # is byte-identical to the one the writing run commits (no conflict if both land).
        data["rolled_back_reason"] = str(block.get("reason", reason))
    return {STAMP_KEY: json.dumps(data, separators=(",", ":"), sort_keys=True)}


def read_stamp(live: LiveService) -> dict[str, Any] | None:
    """The reconciler's last-write annotation on a live service, if any."""
    raw = live.annotations.get(STAMP_KEY)
    if not raw:
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def stamped_at(live: LiveService) -> datetime | None:
    """When the reconciler's last traffic write was made, if its split is what serves (a
    stage it made began then); None otherwise (no stamp, or traffic changed since by hand)."""
    data = read_stamp(live)
    if data is None or not live.traffic.same_routing(_stamp_split(data)):
        return None
    try:
        return st.parse_time(str(data.get("at")))
    except (ValueError, TypeError):
        return None


def _commits(d: Decision) -> CommitAction | None:
    """What the decision's commit records (its `Reconcile-Action` trailer)."""
    try:
        return CommitAction(d.commit.trailers.get("Reconcile-Action", ""))
    except ValueError:
        return None


def _stamp_split(data: Mapping[str, Any]) -> TrafficSplit:
    return TrafficSplit.of(Target(str(r), int(p), str(t)) for r, p, t in data.get("split", []))


def write_traffic(
    ctx: Context, d: Decision, redecide: Callable[[LiveService], Decision], now: datetime
) -> tuple[Decision, LiveService, bool]:
    """Set traffic with the decision's etag; on a conflict re-read and decide again once.

    Returns the decision carried out, the live service, and whether this run wrote traffic
    (False when a concurrent writer had already made the change).
    """
    sp = d.plan
    reason = sp.edit.summary if sp.edit is not None else sp.reason.value
    try:
        live = ctx.backend.set_traffic(
            sp.ref, sp.after, sp.etag, stamp(sp, now, reason, _commits(d))
        )
        return d, live, True
    except Conflict as exc:
        log.info("%s: %s; re-reading and deciding again once", sp.ref.name, exc)
    fresh = ctx.backend.get_service(sp.ref)
    again = redecide(fresh)
    if again.blocked:
        raise ReconcileError(
            f"{sp.ref.name}: changed during apply and is now blocked: {again.blocked}"
        )
    if not again.plan.changes:
        return again, fresh, False
    other = read_stamp(fresh)
    if (
        other is not None
        and int(other.get("from_generation", -1)) >= sp.generation
        and not again.rollback
    ):
        # Another reconciler wrote since our read, possibly from newer git than ours: undoing
        # its write would lose an update. A rollback (toward stable) still goes ahead.
        raise ReconcileError(
            f"{sp.ref.name}: another reconciler changed traffic during this run "
            f"({other.get('reason', '?')}); nothing overwritten, the next run re-reads git"
        )
    try:
        live = ctx.backend.set_traffic(
            again.plan.ref,
            again.plan.after,
            again.plan.etag,
            stamp(again.plan, now, reason, _commits(again)),
        )
    except Conflict as exc:
        raise ReconcileError(
            f"{sp.ref.name}: changed again while applying ({exc}); nothing overwritten, "
            "run apply again"
        ) from None
    return again, live, True


def check_dependencies(ctx: Context, spec: RolloutSpec, live: LiveService) -> str | None:
    """None when every `dependencies:` check passes, else why traffic must not move."""
    if not spec.dependencies:
        return None
    from reconciler.probes import run_dependencies, urls_of

    try:
        results = run_dependencies(spec, urls_of(live), environ=ctx.environ)
    except ReconcileError as exc:
        return str(exc)
    failed = [r.reason for r in results if not r.ok]
    return "; ".join(failed) if failed else None


# --- carrying a decision out ---------------------------------------------------------------
def carry_out(
    ctx: Context, run: ServiceRun, d: Decision, redecide: Callable[[LiveService], Decision]
) -> tuple[Decision, bool]:
    """Dependencies, traffic (stamped), then the rollout-file edit. Raises on error.

    Returns the decision carried out (a re-decided one after an etag conflict) and whether
    this run carried it out. A rollback whose write cannot be confirmed is recorded anyway
    (`run.unconfirmed`): the sticky block must never be lost to a failed read-back.
    """
    sp = d.plan
    canary_before = sp.before.percent_of(sp.canary) if sp.canary else 0
    if sp.changes and sp.canary_percent_after > canary_before:
        unhealthy = check_dependencies(ctx, run.spec, run.live)
        if unhealthy:
            raise ReconcileError(
                f"{sp.ref.name}: dependencies unhealthy, no traffic moved: {unhealthy}"
            )
    wrote = False
    if sp.changes:
        try:
            read = run.live
            d, run.live, wrote = write_traffic(ctx, d, redecide, run.now)
            if not run.live.revisions:
                # A write's read-back lists no revisions (a traffic write makes none).
                run.live = replace(run.live, revisions=read.revisions)
            run.wrote = d if wrote else None
        except ReconcileError as exc:
            if not d.rollback or isinstance(exc, Conflict):
                raise
            run.unconfirmed = str(exc)
            wrote = True
        if wrote:
            ctx.progress(
                f"{sp.ref.service}: traffic {sp.before.describe()} -> {run.live.traffic.describe()}"
            )
    if d.edit is not None:
        edit_rollout_file(run, d.edit)
    # Not written and no edit: a concurrent reconciler made this change; it records it.
    return d, wrote or d.edit is not None


def _with_live(status: ServiceStatus, live: LiveService) -> ServiceStatus:
    return replace(
        status,
        traffic=live.traffic,
        etag=live.etag,
        generation=live.generation,
        observed_generation=live.observed_generation,
    )


@dataclass(frozen=True)
class Record:
    """What one tick wrote to the working tree and the commit that would record it alone (a
    run commits every service's record together, `commit_records`)."""

    ref: ServiceRef
    paths: tuple[Path, ...]
    commit: Commit
    late: bool = False
    """Only the late record of an earlier write (see `recover`)."""
    listed: bool = False
    """Named in the run's commit even if it only observed (it wrote a report)."""

    @property
    def key(self) -> str:
        """The rollout's `ServiceRef.key`."""
        return self.ref.key


def write_record(ctx: Context, run: ServiceRun, d: Decision, applied: bool) -> Record | None:
    """Write status, metrics and events of a tick; None when nothing new was seen (state/ is
    left alone then rather than committed every run)."""
    root = ctx.state_root
    # An unconfirmed rollback keeps the live split it read: the next run reads it again.
    status = _with_live(d.status if applied else d.held, run.live)
    due = d.reports_due(applied)
    quiet = not (applied or run.events or run.edited or d.events or due)
    # Between checkpoints a steady canary's newer windows are not news: nothing is written,
    # and the next run judges the same traffic again from the last record. (Asked first: it
    # is pure, where the check below serializes the status.)
    if not record_due(
        d.previous,
        status,
        now=run.now,
        interval=checkpoint_interval(run.spec),
        news_elsewhere=not quiet,
    ):
        return None
    # A record with news differs from the file in what it says (every field `news` compares
    # is written), so only one due at a checkpoint has its text compared.
    if quiet and (
        d.idle or (not news(d.previous, status) and _unchanged(root, run.ref, status, d.previous))
    ):
        return None
    service = run.spec.service
    ref = run.ref
    after = run.live.traffic.describe()
    done = tuple(replace(e, after=after) for e in d.done) if applied else ()
    events = (*run.events, *d.events, *done)
    st.write_status(root, ref, status)
    if d.added:
        st.append_metrics(root, ref, d.added)
    if events:
        st.append_events(root, ref, events)
    for report in due:
        write_report(ctx, run, report, rollback=d.rollback)
    commit = d.commit if applied else d.held_commit
    late = [e for e in run.events if e.details.get("recovered")]
    if not applied and late:
        commit = late_commit(commit, service, late[0])
    paths = (st.state_dir(root, ref), *([run.path] if run.edited else []))
    return Record(ref, paths, commit, listed=bool(due))


def _unchanged(
    root: Path, ref: ServiceRef, status: ServiceStatus, previous: ServiceStatus | None
) -> bool:
    """Whether `status` says nothing the status file does not: only its times (the run's,
    the same verdict judged again) would change."""
    if previous is None:
        return False
    steady = replace(status, last_reconcile=previous.last_reconcile, verdict_at=previous.verdict_at)
    try:
        return st.status_path(root, ref).read_text(encoding="utf-8") == st.status_text(steady)
    except (OSError, ValueError):
        return False


def late_commit(commit: Commit, service: str, late: st.Event) -> Commit:
    """The commit text of a late record of an earlier write (`recover`)."""
    return replace(commit, subject=f"reconcile({service}): record missed write: {late.reason}")


def write_report(ctx: Context, run: ServiceRun, due: ReportDue, *, rollback: bool) -> None:
    """Write a scheduled report in the rollout's state folder (`reports/`) from the state just
    written, so the record's commit carries it. A rollback's report asks no metrics provider (its
    record must not wait on one): it uses the recorded windows and says so. A report that
    cannot be made is logged and never stops the record."""
    from reconciler.report import generate, save

    try:
        made = generate(
            ctx.state_root,
            run.ref,
            due.kind,
            now=run.now,
            metrics_for=None if rollback else ctx.metrics_for,
            unasked="written with the rollback, which waits on no metrics provider"
            if rollback
            else "no metrics provider configured for this run",
        )
        path = save(ctx.state_root, run.ref, made)
    except ReconcileError as exc:
        log.warning("%s: %s not written: %s", run.spec.service, due.reason, exc)
        return
    ctx.progress(f"{run.spec.service}: {due.reason}: {path.relative_to(ctx.repo).as_posix()}")


def record(ctx: Context, run: ServiceRun, d: Decision, applied: bool) -> str | None:
    """Write the tick's record and commit it with any rollout-file edit; returns the commit."""
    rec = write_record(ctx, run, d, applied)
    if rec is None or ctx.git is None:
        return None
    try:
        return commit_paths(ctx, rec.commit, list(rec.paths))
    except ReconcileError as exc:
        changed = " (traffic was changed; the next run records it)" if applied else ""
        raise ReconcileError(f"{run.spec.service}: the commit failed{changed}: {exc}") from None


def commit_paths(ctx: Context, commit: Commit, paths: list[Path]) -> str | None:
    """One service's commit of `paths`; None when nothing in them changed."""
    assert ctx.git is not None
    with ctx.git_lock:
        return ctx.git.commit(paths, " ".join(commit.subject.split()), commit.body, commit.trailers)


def commit_records(
    ctx: Context, records: list[Record], names: Mapping[ServiceRef, str] | None = None
) -> str | None:
    """Commit many services' records as one commit (`runcommit.run_commit`, naming each as
    `names` does); None when there is no git or nothing in them changed. Raises
    `ReconcileError` when git fails."""
    if ctx.git is None or not records:
        return None
    text = run_commit([Entry(r.commit, r.late, r.listed, r.ref) for r in records], names)
    paths = [p for r in records for p in r.paths]
    with ctx.git_lock:
        return ctx.git.commit(paths, text.subject, text.body, text.trailers)


# --- recovering a write a crashed run did not record -----------------------------------------
_KIND = {
    Reason.STAGE: st.EventKind.APPLIED,
    Reason.DRIFT: st.EventKind.DRIFT_CORRECTED,
    Reason.ROLLBACK: st.EventKind.ROLLED_BACK,
    Reason.ADVANCE: st.EventKind.ADVANCED,
    Reason.FINALIZE: st.EventKind.FINALIZED,
}


@dataclass(frozen=True)
class Unrecorded:
    """A stamped write that serves and that state/ does not record."""

    data: Mapping[str, Any]
    written_at: datetime
    reason: Reason
    commits: CommitAction | None

    def young(self, now: datetime, recover_after: timedelta) -> bool:
        """Whether a run must leave it to its writer, which may still be recording it: it is
        younger than `recover_after` (or as far in the future: a writer's clock ahead of
        ours) and no rollback (a rollback's record is idempotent: recovered at once)."""
        return self.reason is not Reason.ROLLBACK and abs(now - self.written_at) < recover_after


def unrecorded(root: Path, ref: ServiceRef, live: LiveService) -> Unrecorded | None:
    """The stamped write the live service serves, when events.jsonl does not record it.
    Reads only."""
    data = read_stamp(live)
    if data is None or not live.traffic.same_routing(_stamp_split(data)):
        return None
    try:
        written_at = st.parse_time(str(data.get("at")))
        reason = Reason(str(data.get("action")))
        # Stamps written before they said what they commit rebuild by `reason` alone.
        commits = CommitAction(data["commits"]) if data.get("commits") else None
    except (ValueError, TypeError):
        return None
    if _recorded(root, ref, written_at, _KIND.get(reason, st.EventKind.APPLIED)):
        return None
    return Unrecorded(data, written_at, reason, commits)


def recover(ctx: Context, run: ServiceRun, spec_id: str | None, *, dry_run: bool = False) -> None:
    """Write the record of a traffic write that a crashed run did not commit, or, when the
    write is young (`Unrecorded.young`), mark the run `pending` and leave it to its writer.
    Either way the run knows when the write was made (`unrecorded_at`); a dry run writes
    nothing."""
    found = unrecorded(ctx.state_root, run.ref, run.live)
    if found is None:
        return
    data, written_at, reason, commits = found.data, found.written_at, found.reason, found.commits
    run.unrecorded_at = written_at
    if found.young(run.now, ctx.recover_after):
        run.pending = True
        return
    if dry_run:
        return
    why = str(data.get("reason", ""))
    log.warning("%s: recording a write that was not committed (%s)", run.spec.service, why)
    edit = _recovered_edit(run, reason, commits, data, written_at)
    if edit is not None:
        edit_rollout_file(run, edit)
        run.spec = for_region(load_spec(run.path), run.spec.region)
    elif _edit_made(run.spec, reason, commits, data):
        # The crashed run got as far as its edit: the late record commits the file with it,
        # or that edit would stay uncommitted (and hold the service) for good.
        run.edited = True
    run.events.append(
        st.Event(
            time=run.now,
            kind=_KIND.get(reason, st.EventKind.APPLIED),
            actor=ctx.actor,
            after=run.live.traffic.describe(),
            reason=f"recorded late: {why}",
            spec_id=spec_id,
            details={
                "recovered": True,
                "written_at": str(data.get("at", "")),
                **({"abort": True} if commits is CommitAction.ABORT else {}),
            },
        )
    )


def left_alone(ctx: Context, run: ServiceRun) -> str | None:
    """Why the run must leave this service alone (None: it need not): the young write
    `recover` found is still not recorded, read again after the sync brought the remote's
    records. Nothing but a rollback may be written then, and no record (the writer's record
    of the same files is on its way)."""
    if not run.pending or run.unrecorded_at is None:
        return None
    if unrecorded(ctx.state_root, run.ref, run.live) is None:
        return None
    return left_alone_reason(run.now - run.unrecorded_at, ctx.recover_after)


def left_alone_reason(age: timedelta, recover_after: timedelta) -> str:
    """`left alone: a write 31 s ago is not yet recorded; recovered after 2m if no run
    records it`."""
    seconds = max(0, round(age.total_seconds()))
    return (
        f"left alone: a write {seconds} s ago is not yet recorded; recovered after "
        f"{format_duration(recover_after)} if no run records it"
    )


def _recovered_edit(
    run: ServiceRun,
    reason: Reason,
    commits: CommitAction | None,
    data: Mapping[str, Any],
    written_at: datetime,
) -> SpecEdit | None:
    """The rollout-file edit the crashed run would have made (None: none is missing)."""
    spec = run.spec
    canary = data.get("canary")
    same = bool(canary) and spec.revisions.canary == canary
    if commits is CommitAction.ABORT:
        # Traffic went to stable as in a rollback, but an abort pauses and sets no block.
        if same and not is_rolled_back(spec) and (spec.canary_percent or not spec.paused):
            return replace(verbs.abort(spec), summary="recorded late")
        return None
    if reason is Reason.ROLLBACK and same and not is_rolled_back(spec):
        why = str(data.get("rolled_back_reason", data.get("reason", "")))
        block = rollback_values(spec, str(canary), written_at, why)
        return SpecEdit(reason, block, "recorded late")
    if reason is Reason.FINALIZE and same:
        values: dict[str, Any] = {
            "revisions.stable": str(canary),
            "revisions.canary": None,
            "canary_percent": 0,
        }
        return SpecEdit(reason, {**values, **({"force": None} if spec.force else {})}, "")
    if reason is Reason.ADVANCE and same:
        percent = _stamp_split(data).percent_of(str(canary))
        if percent != spec.canary_percent and percent in spec.stages:
            # The advance's own commit was lost (its push failed): write it again, or the
            # live stage would look like drift and be undone.
            return SpecEdit(reason, {"canary_percent": percent}, "")
    if reason is Reason.STAGE and spec.force and desired_split(spec).same_routing(run.live.traffic):
        # The crashed run used `force` for the stage git still wants; it applies once.
        return SpecEdit(reason, {"force": None}, "")
    return None


def _edit_made(
    spec: RolloutSpec, reason: Reason, commits: CommitAction | None, data: Mapping[str, Any]
) -> bool:
    """Whether the rollout file already says what the stamped write's edit would (the write's
    run edited the file before it died)."""
    canary = data.get("canary")
    if not canary:
        return False
    if commits is CommitAction.ABORT:
        return spec.revisions.canary == canary and spec.paused and not spec.canary_percent
    if reason is Reason.ROLLBACK:
        return spec.revisions.canary == canary and is_rolled_back(spec)
    if reason is Reason.FINALIZE:
        return spec.revisions.stable == canary and spec.revisions.canary is None
    if reason is Reason.ADVANCE:
        percent = _stamp_split(data).percent_of(str(canary))
        return spec.revisions.canary == canary and spec.canary_percent == percent
    return False


def _recorded(root: Path, ref: ServiceRef, written_at: datetime, kind: st.EventKind) -> bool:
    """Whether events.jsonl records the write stamped at `written_at`.

    The event of a write has the write's kind and carries the stamp's time; a late record
    carries it as `written_at`. Other events of that second (a probe failure of the same run)
    are no record of it. (Not status.yaml's generation: a run that came too soon to recover
    a crashed write still observes its generation, and the record would never be written.)
    A full, trimmed events file starting after the write is taken as having recorded it.
    """
    events = st.read_events(root, ref)
    for e in reversed(events):
        if e.details.get("written_at") == st.format_time(written_at):
            return True
        if e.time == written_at and e.kind is kind:
            return True
    return len(events) >= st.MAX_EVENTS and events[0].time > written_at
