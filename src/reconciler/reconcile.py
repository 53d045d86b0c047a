"""The reconcile loop: gather inputs -> decide -> carry out -> record, for every service.

`gather` reads rollout files, state/ and live services (concurrently), measures windows
(batched per metrics configuration) and runs probes; `decide.decide` makes every decision
as a value; `servicetick` runs one service's tick (`execute` carries a decision out and
writes its record); `recording` commits the run's records together and pushes them; this
module orders all of it into a run. Nothing here decides.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Protocol, TypeVar

from reconciler import saved as saved_mod
from reconciler import state as st
from reconciler import statemigrate
from reconciler.backends import TrafficBackend
from reconciler.decide import decide, left_alone_plan, missing_env
from reconciler.errors import ReconcileError
from reconciler.execute import (
    RECOVER_AFTER,
    Record,
    late_commit,
    left_alone_reason,
    unrecorded,
    write_record,
)
from reconciler.execute import STAMP_KEY as STAMP_KEY
from reconciler.execute import Context as Context  # re-exported: callers build it from here
from reconciler.execute import read_stamp as read_stamp
from reconciler.gather import gather, live_reads, load_all, measure, region_statuses
from reconciler.gather import ref_of as ref_of
from reconciler.gather import rollout_files as rollout_files
from reconciler.loader import load_spec, spec_id_of
from reconciler.model import LiveService, ServiceRef, labels
from reconciler.model import WindowStats as Window
from reconciler.outcome import DEGRADED_EXIT as DEGRADED_EXIT
from reconciler.outcome import ROLLED_BACK_EXIT as ROLLED_BACK_EXIT
from reconciler.outcome import ROLLED_BACK_LOCAL_EXIT as ROLLED_BACK_LOCAL_EXIT
from reconciler.outcome import RunResult as RunResult
from reconciler.outcome import ServiceOutcome as ServiceOutcome
from reconciler.plan import Plan, PlanError, ServiceError, ServicePlan, is_rolled_back
from reconciler.recording import Book, push, sync
from reconciler.servicetick import Tick, carry_and_record, leave_alone, prepare
from reconciler.shard import Shard
from reconciler.spec import RolloutSpec
from reconciler.waves import for_region

log = logging.getLogger(__name__)


# --- plan (read-only) -----------------------------------------------------------------------
def plan_all(
    repo: Path,
    patterns: Sequence[str],
    backend: TrafficBackend | None,
    now: datetime,
    *,
    offline: bool = False,
    max_workers: int = 16,
    environ: Mapping[str, str] | None = None,
    shard: Shard | None = None,
) -> Plan:
    """Plan every selected service against live (or, offline, the last observed) state.

    The verdict and bake timer come from state/ (the windows and probe runs the last apply
    measured) through the same `decide` apply uses; plan never queries metrics or runs
    probes, so it is cheap and works on pull requests. Every variable the rollout file needs
    that `environ` (default: the process environment) lacks blocks its service. With
    `shard`, only the rollouts that shard owns are planned.
    """
    files = rollout_files(repo / "rollout", patterns)
    gathered = gather(repo, files, None if offline else backend, max_workers, shard)
    errors = [g for g in gathered if isinstance(g, ServiceError)]
    plans: list[ServicePlan] = []
    for g in gathered:
        if isinstance(g, ServiceError):
            continue
        path, spec, loaded, live = g
        if isinstance(live, str):
            errors.append(ServiceError(spec.service, live, ref_of(spec)))
            continue
        try:
            config = missing_env(spec, os.environ if environ is None else environ)
            # What apply will do with a write that serves and is not recorded yet.
            found = None if offline else unrecorded(repo, ref_of(spec), live)
            d = decide(
                spec,
                loaded.status,
                live,
                now=now,
                config_errors=config,
                spec_id=spec_id_of(path),
                check_revisions=not offline,
                regions=region_statuses(repo, spec),
                unrecorded_write=found.written_at if found else None,
            )
            sp = d.plan
            if found is not None and found.young(now, RECOVER_AFTER) and not d.rollback:
                sp = left_alone_plan(sp, left_alone_reason(now - found.written_at, RECOVER_AFTER))
            salvaged = (f"state: {loaded.problem}",) if loaded.problem else ()
            plans.append(replace(sp, warnings=(*sp.warnings, *salvaged)))
        except PlanError as exc:
            errors.append(ServiceError(spec.service, str(exc), ref_of(spec)))
    return Plan(
        created_at=now,
        services=tuple(plans),
        errors=tuple(sorted(errors, key=lambda e: e.service)),
        offline=offline,
    )


# --- a run ----------------------------------------------------------------------------------------
class Listener(Protocol):
    """Told of a run's progress as it happens (the CLI prints each service as it finishes)."""

    def started(self, total: int) -> None:
        """The run has `total` services."""

    def finished(self, outcome: ServiceOutcome, degraded: bool) -> None:
        """One service is done (its commit, if any, is made at the end of the run);
        `degraded`: the run is held to rollbacks only."""


Item = tuple[Path, RolloutSpec, LiveService]


@dataclass
class _Run:
    """What every service of one run shares: inputs measured once, the outcomes so far and
    the records waiting for the run's commit."""

    ctx: Context
    dry_run: bool
    dirty: set[Path]
    saved: Mapping[str, ServicePlan]
    listener: Listener | None
    book: Book
    statuses: Mapping[str, st.StatusLoad | ReconcileError] = field(default_factory=dict)
    """Each service's state/ status as the run first read it (or why it could not be), by
    identity: read once for both the metric queries and the decision."""
    windows: Mapping[tuple[str, str], Sequence[Window]] = field(default_factory=dict)
    metric_errors: Mapping[str, str] = field(default_factory=dict)
    deadline: float = 0.0
    outcomes: list[ServiceOutcome] = field(default_factory=list)

    degraded: str | None = None

    def done(self, outcome: ServiceOutcome, ref: ServiceRef | None = None) -> None:
        """One service's outcome, named as the run names its rollout (`ref`, or its plan's)."""
        ref = ref or (outcome.plan.ref if outcome.plan is not None else None)
        name = self.book.names.get(ref) if ref is not None else None
        if name is not None and name != outcome.service:
            outcome = replace(outcome, label=name)
        self.outcomes.append(outcome)
        if self.listener is not None:
            self.listener.finished(outcome, self.degraded is not None)

    def first(self, item: Item) -> Tick | ServiceOutcome:
        """Decide from the working tree as it is; a rollback is carried out at once."""
        path, spec, live = item
        key = ref_of(spec).key
        mine = self.saved.get(key)
        moved = saved_mod.stale(mine, live) if mine is not None else None
        if moved:
            return ServiceOutcome(spec.service, error=moved)
        won = [w for rev in (spec.revisions.canary, spec.revisions.stable) if rev
               for w in self.windows.get((key, rev), [])]  # fmt: skip
        err = self.metric_errors.get(key)
        loaded = self.statuses.get(key)
        if isinstance(loaded, ReconcileError):
            raise loaded
        t = prepare(
            self.ctx,
            path,
            spec,
            live,
            won,
            err,
            dry_run=self.dry_run,
            probe_deadline=self.deadline,
            loaded=loaded,
        )
        d = t.decision
        if self.dry_run:
            alone = leave_alone(self.ctx, t)
            return alone or ServiceOutcome(d.service, plan=d.plan, verdict=d.verdict)
        mismatch = saved_mod.differs(mine, d.plan) if mine is not None else None
        if mismatch:
            return ServiceOutcome(d.service, plan=d.plan, error=mismatch, verdict=d.verdict)
        # A rollback the verdict decides now (and the late record of an earlier write) never
        # waits for git or for others. Re-asserting a `rolled_back` block already in the file
        # is desired state like any other: it waits for the sync (the remote may have
        # cleared it), so a stale clone never reverts a canary a person retried.
        if d.rollback and not is_rolled_back(spec):
            return carry_and_record(self.ctx, self.book, t.run, d, t.redecide)
        if any(e.details.get("recovered") for e in t.run.events):
            self._record_late(t)
        return t

    def rest(self, degraded: str | None, t: Tick) -> ServiceOutcome:
        """Carry out a decision after the sync (or hold it, recording what was measured)."""
        # First: a young write still not recorded after the sync is its writer's to record.
        alone = leave_alone(self.ctx, t)
        if alone is not None:
            return alone
        d = t.decision
        if t.run.path.resolve() in self.dirty and not d.rollback:
            # Git is the desired state: applying an edit nobody committed would make live
            # traffic disagree with every commit. Other services go on; what was measured is
            # still recorded, or failing windows would never add up to a rollback.
            error = f"{_uncommitted(self.ctx, t.run.path)}, nothing moved for this service"
            return self._held(t, error=error)
        if degraded is not None and not d.rollback:
            held = f"degraded, {d.plan.reason.value} not applied: {degraded}" if d.acts else None
            return self._held(t, held=held)
        if not t.run.path.exists():
            return ServiceOutcome(d.service, error="rollout file removed by the sync; not applied")
        if t.run.path.read_bytes() != t.text:
            # The sync brought a newer desired state: decide again from it.
            spec = for_region(load_spec(t.run.path), t.run.spec.region)
            t = prepare(
                self.ctx, t.run.path, spec, t.run.live, [], None, probe_deadline=self.deadline
            )
            alone = leave_alone(self.ctx, t)
            if alone is not None:
                return alone
        return carry_and_record(self.ctx, self.book, t.run, t.decision, t.redecide)

    def _held(
        self, t: Tick, *, error: str | None = None, held: str | None = None
    ) -> ServiceOutcome:
        """A service not carried out this run: its observations are recorded all the same."""
        d = t.decision
        self.book.add(write_record(self.ctx, t.run, d, False))
        return ServiceOutcome(
            d.service, plan=d.plan, verdict=d.verdict, error=error, held=held, notices=d.notices
        )

    def _record_late(self, t: Tick) -> None:
        """Write the late record of an earlier write for the run's first commit (before the
        sync); the service's own decision still waits for it."""
        run = t.run
        service = run.spec.service
        late = [e for e in run.events if e.details.get("recovered")]
        st.append_events(self.ctx.state_root, run.ref, run.events)
        run.events.clear()
        paths = (st.state_dir(self.ctx.state_root, run.ref), *([run.path] if run.edited else []))
        commit = late_commit(t.decision.held_commit, service, late[0])
        self.book.add(Record(run.ref, paths, commit, late=True))
        if run.edited:
            # The file holds the recovered edit and is committed with it: no one's pending edit.
            self.dirty.discard(run.path.resolve())
        run.edited = False
        t.text = run.path.read_bytes()


def apply_all(
    ctx: Context,
    patterns: Sequence[str] = (),
    *,
    dry_run: bool = False,
    saved: Plan | None = None,
    listener: Listener | None = None,
) -> RunResult:
    """Reconcile every selected service; one failing service never blocks the others.

    Rollbacks first: every service is decided from the working tree as it is, on a pool
    (probes of different services run concurrently), and a rollback's traffic is written the
    moment it is decided, before anything that can block it (the git sync, another service,
    an uncommitted edit). The run's rollbacks (and late records of earlier writes) are then
    committed as one commit, the clone synced with the remote, and that commit pushed; when
    the clone cannot reach the remote's tip the run is degraded and applies nothing else.
    Otherwise every other decision is carried out (re-decided when the sync changed its
    rollout file) and the run's records are committed as one commit and pushed.
    docs/git-and-state.md, "Commits of a run".
    """
    if saved is not None:
        if not saved.services:
            return RunResult(())  # an empty saved plan applies nothing
        patterns = saved_mod.saved_services(ctx.repo / "rollout", saved)
        refused = _refused(ctx, saved, patterns)
        if refused:
            for o in refused:
                if listener is not None:
                    listener.finished(o, False)
            return RunResult(refused)
    ctx = replace(ctx, clock=_coarse(ctx.clock))
    run, items = _start(ctx, patterns, dry_run, saved, listener)
    ticks = _on_pool(run, run.first, items)
    if dry_run:
        return _result(run)
    early = run.book.commit(moved=_moved_keys(run))
    degraded = run.degraded = sync(ctx)
    if degraded is not None:
        log.warning("degraded: %s", degraded)
    first = _Push.of(ctx, _moved(run, committed=True), degraded) if early else _Push()
    done = _on_pool(run, functools.partial(run.rest, degraded), ticks)
    assert not done  # `rest` always gives an outcome
    last = run.book.commit(moved=_moved_keys(run))
    # Everything not on the remote yet: this run's record and a rollback commit whose push
    # failed (the push takes every unpushed commit).
    landed = first.moved if first.pushed else ()
    unpushed = [s for s in _moved(run, committed=True) if s not in landed]
    final = _Push.of(ctx, unpushed, degraded, committed=last is not None)
    if final.pushed is None:
        final = first
    return _result(run, final, degraded, rollbacks_pushed=first.pushed)


CLOCK_RESOLUTION = 1.0
"""Seconds in which a run's services share one reading of its clock. A reading can be a call
(the emulator's virtual clock is read over gRPC): one per service was a thousand calls a run."""


def _coarse(
    clock: Callable[[], datetime], elapsed: Callable[[], float] = time.monotonic
) -> Callable[[], datetime]:
    """`clock`, read again only once the last reading is `CLOCK_RESOLUTION` seconds old by
    `elapsed` (for one run: a clock moved between runs is always read)."""
    lock = threading.Lock()
    last: list[tuple[float, datetime]] = []

    def read() -> datetime:
        with lock:
            at = elapsed()
            if not last or at - last[0][0] >= CLOCK_RESOLUTION:
                last[:] = [(at, clock())]
            return last[0][1]

    return read


@dataclass(frozen=True)
class _Push:
    """One push of the run's commits: whether it landed, why not, the services it moved."""

    pushed: bool | None = None
    error: str | None = None
    moved: tuple[str, ...] = ()

    @classmethod
    def of(
        cls, ctx: Context, moved: Sequence[str], degraded: str | None, *, committed: bool = True
    ) -> _Push:
        pushed, error = push(ctx, moved, committed, degraded)
        return cls(pushed, error, tuple(moved))


def _moved(run: _Run, *, committed: bool = False) -> list[str]:
    """Services whose traffic this run changed (with `committed`: and whose record is in one
    of the run's commits), named as the run's output names them."""
    return [
        o.name for o in run.outcomes if o.applied and (not committed or _key(o) in run.book.commits)
    ]


def _start(
    ctx: Context,
    patterns: Sequence[str],
    dry_run: bool,
    saved: Plan | None,
    listener: Listener | None,
) -> tuple[_Run, list[Item]]:
    """Load the rollout files, read live services and measure windows: the run's shared
    inputs, and the services that can be decided (the others already have an outcome)."""
    files = rollout_files(ctx.repo / "rollout", patterns)
    dirty = set() if dry_run or ctx.git is None else _dirty(ctx)
    with live_reads(ctx.backend, ctx.max_workers) as reads:
        # A region's list calls start as soon as its specs are parsed, and wait on the API
        # while this thread parses the other files and reads state/.
        specs, load_errors = load_all(files, ctx.shard, reads.seen)
        refs = [ref_of(s) for _, s in specs] + [e.ref for e in load_errors if e.ref]
        book = Book(ctx, labels(refs))
        run = _Run(ctx, dry_run, dirty, saved_mod.by_service(saved), listener, book)
        if listener is not None:
            listener.started(len(specs) + len(load_errors))
        _unloadable(run, files, load_errors)
        if not dry_run:
            unmoved = _migrate(ctx, files, [s for _, s in specs])
            for _, s in specs:
                if ref_of(s).key in unmoved:
                    run.done(ServiceOutcome(s.service, error=unmoved[ref_of(s).key]), ref_of(s))
            specs = [(p, s) for p, s in specs if ref_of(s).key not in unmoved]
        reads.finish([s for _, s in specs])
        run.statuses = {ref_of(s).key: _load_status(ctx, s) for _, s in specs}
        lives = reads.result([s for _, s in specs])
    items: list[Item] = []
    for path, spec in specs:
        live = lives[ref_of(spec).key]
        if isinstance(live, str):
            run.done(ServiceOutcome(spec.service, error=live), ref_of(spec))
        else:
            items.append((path, spec, live))
    measured = [(s, lv, _status_of(run.statuses[ref_of(s).key])) for _, s, lv in items]
    run.windows, run.metric_errors = measure(ctx, measured, ctx.clock())
    run.deadline = time.monotonic() + ctx.probe_budget
    return run, items


def _unloadable(run: _Run, files: Sequence[Path], errors: Sequence[ServiceError]) -> None:
    """The outcome of each rollout file that does not load (and says so when it is also an
    uncommitted edit)."""
    by_stem = {p.stem: p for p in files}
    for e in errors:
        path = by_stem.get(e.service)
        if path is not None and path.resolve() in run.dirty:
            why = f"{_uncommitted(run.ctx, path)}; it does not load either: {e.message}"
            run.done(ServiceOutcome(e.service, error=why), e.ref)
        else:
            run.done(ServiceOutcome(e.service, error=e.message), e.ref)


def _load_status(ctx: Context, spec: RolloutSpec) -> st.StatusLoad | ReconcileError:
    """A service's status file, salvaged when corrupt; a refused path (a symbolic link) is
    kept as the error its own tick raises."""
    try:
        return st.load_status(ctx.state_root, ref_of(spec))
    except ReconcileError as exc:
        return exc


def _status_of(loaded: st.StatusLoad | ReconcileError) -> st.ServiceStatus | None:
    return None if isinstance(loaded, ReconcileError) else loaded.status


_T = TypeVar("_T")


def _on_pool(
    run: _Run, work: Callable[[_T], Tick | ServiceOutcome], items: Sequence[_T]
) -> list[Tick]:
    """Run `work` per service on the run's bounded pool; each outcome is done the moment its
    service finishes, ticks still to carry out are returned. One service's error never stops
    the others."""
    if not items:
        return []
    ticks: list[Tick] = []
    workers = max(1, min(run.ctx.max_workers, len(items)))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(work, item): item for item in items}
        for future in as_completed(futures):
            try:
                got = future.result()
            except (ReconcileError, PlanError) as exc:
                ref = _ref_of(futures[future])
                run.done(ServiceOutcome(ref.service, error=str(exc)), ref)
                continue
            if isinstance(got, ServiceOutcome):
                run.done(got, _ref_of(futures[future]))
            else:
                ticks.append(got)
    return ticks


def _ref_of(item: object) -> ServiceRef:
    if isinstance(item, Tick):
        return item.decision.plan.ref
    assert isinstance(item, tuple)
    spec = item[1]
    assert isinstance(spec, RolloutSpec)
    return ref_of(spec)


def _result(
    run: _Run,
    push: _Push | None = None,
    degraded: str | None = None,
    *,
    rollbacks_pushed: bool | None = None,
) -> RunResult:
    """The run's outcomes (each with the commit holding its record), sorted by service."""
    book = run.book
    outcomes = sorted(
        (replace(o, commit=book.commits.get(_key(o) or "")) for o in run.outcomes),
        key=lambda o: (o.service, o.name),
    )
    errors = [*book.errors, *([push.error] if push is not None and push.error else [])]
    return RunResult(
        tuple(outcomes),
        push.pushed if push is not None else None,
        "; ".join(errors) or None,
        degraded,
        rollbacks_pushed=rollbacks_pushed,
        commits=tuple(book.shas),
    )


def _refused(ctx: Context, saved: Plan, names: Sequence[str]) -> tuple[ServiceOutcome, ...]:
    """One error outcome per service when the saved plan is stale for any (none applied)."""
    fresh = plan_all(
        ctx.repo,
        names,
        ctx.backend,
        ctx.clock(),
        max_workers=ctx.max_workers,
        environ=ctx.environ,
    )
    failed = saved_mod.refusals(saved, fresh)
    return tuple(ServiceOutcome(name, error=failed[name]) for name in sorted(failed))


def _moved_keys(run: _Run) -> list[str]:
    return [k for o in run.outcomes if o.applied and (k := _key(o)) is not None]


def _key(o: ServiceOutcome) -> str | None:
    """The rollout's identity key of an outcome (None: it never got as far as a plan)."""
    return o.plan.ref.key if o.plan is not None else None


def _migrate(ctx: Context, files: Sequence[Path], specs: Sequence[RolloutSpec]) -> dict[str, str]:
    """Move old-layout `state/<service>/` folders to their rollout's folder and commit the
    move (once: see `statemigrate`); returns the rollouts refused, by identity, with why."""
    if not statemigrate.legacy_folders(ctx.repo):
        return {}
    # Every rollout file claims, not only this shard's: a second claimant refuses the move.
    every, broken = load_all(files)
    done = statemigrate.migrate(
        ctx.repo,
        [ref_of(s) for _, s in every],
        owned={ref_of(s).key for s in specs},
        unloadable={e.service for e in broken},
    )
    if done.moves and ctx.git is not None:
        subject, body = statemigrate.commit_message(done)
        with ctx.git_lock:
            ctx.git.commit(done.paths, subject, body)
    return dict(done.refused)


def _uncommitted(ctx: Context, path: Path) -> str:
    rel = path.relative_to(ctx.repo).as_posix()
    return (
        f"{rel}: uncommitted change in rollout/ (commit it first, or try it with --dry-run "
        "or --no-commit)"
    )


def _dirty(ctx: Context) -> set[Path]:
    """Rollout files with a change git has not committed (each service's own problem)."""
    assert ctx.git is not None
    return {(ctx.repo / rel).resolve() for rel in ctx.git.uncommitted(ctx.repo / "rollout")}
