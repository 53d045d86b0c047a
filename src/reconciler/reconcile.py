"""The reconcile loop: gather inputs -> decide -> carry out -> record, for every service.

`gather` reads rollout files, state/ and live services (concurrently), measures windows
(batched per metrics configuration) and runs probes; `decide.decide` makes every decision
as a value; `execute` carries it out and records it. Nothing here decides.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import TypeVar

from reconciler import state as st
from reconciler import statemigrate
from reconciler.backends import TrafficBackend
from reconciler.decide import Decision, decide, missing_env
from reconciler.errors import ReconcileError
from reconciler.execute import STAMP_KEY as STAMP_KEY
from reconciler.execute import Context as Context  # re-exported: callers build it from here
from reconciler.execute import ServiceRun, carry_out, commit_paths, record, recover
from reconciler.execute import read_stamp as read_stamp
from reconciler.gather import gather, load_all, measure, observe, probe, region_statuses
from reconciler.gather import ref_of as ref_of
from reconciler.gather import rollout_files as rollout_files
from reconciler.loader import load_spec, spec_id_of
from reconciler.model import LiveService, Verdict
from reconciler.model import WindowStats as Window
from reconciler.plan import Plan, PlanError, ServiceError, ServicePlan, is_rolled_back
from reconciler.shard import Shard
from reconciler.spec import RolloutSpec
from reconciler.waves import for_region

log = logging.getLogger(__name__)

ROLLED_BACK_EXIT = 4
"""A canary was rolled back: the rollback serves AND its record is on the remote."""
ROLLED_BACK_LOCAL_EXIT = 5
"""A canary was rolled back and serves, but its record did not reach the remote (the push
failed, the clone is degraded, or --no-push/--no-commit): the next run pushes it."""
DEGRADED_EXIT = 3
"""The clone could not reach the remote's tip: only rollbacks were applied, nothing else."""


@dataclass(frozen=True)
class ServiceOutcome:
    """What happened to one service in one run."""

    service: str
    plan: ServicePlan | None = None
    applied: bool = False
    rolled_back: bool = False
    error: str | None = None
    commit: str | None = None
    events: tuple[st.Event, ...] = ()
    verdict: Verdict | None = None
    rollback_failed: bool = False
    """A rollback was decided but its write did not come to serve (the next run retries)."""
    held: str | None = None
    """Why a change this run decided was not carried out (degraded mode); None otherwise."""


@dataclass(frozen=True)
class RunResult:
    """The outcome of one `apply` run over many services."""

    outcomes: tuple[ServiceOutcome, ...]
    pushed: bool | None = None
    git_error: str | None = None
    degraded: str | None = None
    """Why the clone is not at the remote's tip (rollbacks only this run); None when it is."""

    @property
    def recorded(self) -> bool:
        """Whether every rollback of the run is committed and on the remote."""
        return self.pushed is True and all(o.commit for o in self.outcomes if o.rolled_back)

    @property
    def exit_code(self) -> int:
        """The worst of the run (README, "Exit codes"): 1 when a rollback failed; 4 when a
        canary was rolled back and that is recorded on the remote, 5 when it is not (yet);
        1 on any other error or blocked change; 3 when degraded; else 0."""
        if any(o.rollback_failed for o in self.outcomes):
            return 1
        if any(o.rolled_back for o in self.outcomes):
            return ROLLED_BACK_EXIT if self.recorded else ROLLED_BACK_LOCAL_EXIT
        if self.git_error or any(o.error for o in self.outcomes):
            return 1
        if any(o.plan is not None and o.plan.blocked for o in self.outcomes):
            return 1
        return DEGRADED_EXIT if self.degraded else 0


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
            errors.append(ServiceError(spec.service, live))
            continue
        try:
            config = missing_env(spec, os.environ if environ is None else environ)
            d = decide(
                spec,
                loaded.status,
                live,
                now=now,
                config_errors=config,
                spec_id=spec_id_of(path),
                check_revisions=not offline,
                regions=region_statuses(repo, spec),
            )
            salvaged = (f"state: {loaded.problem}",) if loaded.problem else ()
            plans.append(replace(d.plan, warnings=(*d.plan.warnings, *salvaged)))
        except PlanError as exc:
            errors.append(ServiceError(spec.service, str(exc)))
    return Plan(
        created_at=now,
        services=tuple(plans),
        errors=tuple(sorted(errors, key=lambda e: e.service)),
        offline=offline,
    )


# --- one service ------------------------------------------------------------------------------
@dataclass
class _Tick:
    """One service decided (and not yet carried out): what the run acts on."""

    run: ServiceRun
    decision: Decision
    redecide: Callable[[LiveService], Decision]
    text: bytes
    """The rollout file's bytes when decided: a sync that changes them makes it stale."""


def _prepare(
    ctx: Context,
    path: Path,
    spec: RolloutSpec,
    live: LiveService,
    new_windows: Sequence[Window],
    metrics_error: str | None,
    *,
    dry_run: bool = False,
    probe_deadline: float | None = None,
) -> _Tick:
    """Gather what only this service needs (state/, a late record, probes) and decide."""
    now = ctx.clock()
    # A corrupt status file must not stop this service's rollback: what parses is kept, the
    # rest is rebuilt from live traffic and git, and an event says what was dropped.
    loaded = st.load_status(ctx.state_root, ref_of(spec))
    status = loaded.status
    spec_id = spec_id_of(path)
    run = ServiceRun(path, spec, live, now)
    rebuilt = loaded.event(now, ctx.actor)
    if rebuilt is not None:
        log.warning("%s: %s", spec.service, rebuilt.reason)
        run.events.append(rebuilt)
    if not dry_run:
        recover(ctx, run, spec_id)
    spec = run.spec
    config = missing_env(spec, os.environ if ctx.environ is None else ctx.environ)
    probes: list[st.ProbeRecord] = []
    regions = region_statuses(ctx.state_root, spec)
    in_budget = probe_deadline is None or time.monotonic() < probe_deadline
    if not dry_run and not config and in_budget:
        probes, config = probe(ctx, spec, live, now)

    def redecide(fresh: LiveService) -> Decision:
        return decide(
            spec,
            status,
            fresh,
            now=now,
            windows=new_windows,
            probe_runs=probes,
            metrics_error=metrics_error,
            config_errors=config,
            spec_id=spec_id,
            actor=ctx.actor,
            window_keep=ctx.window_keep,
            regions=regions,
        )

    d = redecide(live)
    if not in_budget and spec.probes and d.acts and not d.rollback:
        # No probe ran: that is no evidence for moving traffic forward.
        d = replace(d, plan=replace(d.plan, blocked="probes skipped: the run's budget ran out"))
    return _Tick(run, d, redecide, path.read_bytes())


def reconcile_service(
    ctx: Context,
    path: Path,
    spec: RolloutSpec,
    live: LiveService,
    new_windows: Sequence[Window],
    metrics_error: str | None,
    *,
    dry_run: bool = False,
    saved: ServicePlan | None = None,
) -> ServiceOutcome:
    """Gather one service's inputs, decide, carry the Decision out and record it.

    With `saved` (from `apply PLANFILE`), a decision that no longer matches it is refused
    before anything is written.
    """
    t = _prepare(ctx, path, spec, live, new_windows, metrics_error, dry_run=dry_run)
    d = t.decision
    if dry_run:
        return ServiceOutcome(d.service, plan=d.plan, verdict=d.verdict)
    mismatch = _differs(saved, d.plan) if saved is not None else None
    if mismatch:
        return ServiceOutcome(d.service, plan=d.plan, error=mismatch, verdict=d.verdict)
    return _carry_and_record(ctx, t.run, d, t.redecide)


def _carry_and_record(
    ctx: Context, run: ServiceRun, d: Decision, redecide: Callable[[LiveService], Decision]
) -> ServiceOutcome:
    error: str | None = None
    applied = False
    if d.acts:
        try:
            d, applied = carry_out(ctx, run, d, redecide)
        except ReconcileError as exc:
            error = str(exc)
            # A failure after the traffic write (the rollout edit) must not hide the write.
            if run.wrote is not None:
                d, applied = run.wrote, True
            elif d.rollback:
                error = f"{error} (rollback NOT done: traffic unchanged, the next run retries)"
    if run.unconfirmed:
        error = (
            f"{d.plan.ref.name}: rollback written but NOT confirmed serving, the next run "
            f"retries it: {run.unconfirmed}"
        )
    commit = None
    try:
        commit = record(ctx, run, d, applied)
    except ReconcileError as exc:
        error = f"{error}; {exc}" if error else str(exc)
    rolled_back = applied and d.rollback and run.unconfirmed is None
    return ServiceOutcome(
        d.service,
        plan=d.plan,
        applied=applied,
        rolled_back=rolled_back,
        error=error,
        commit=commit,
        events=(*run.events, *d.events, *(d.done if applied else ())),
        verdict=d.verdict,
        rollback_failed=d.rollback and not rolled_back,
    )


# --- a run ----------------------------------------------------------------------------------------
def apply_all(
    ctx: Context,
    patterns: Sequence[str] = (),
    *,
    dry_run: bool = False,
    saved: Plan | None = None,
) -> RunResult:
    """Reconcile every selected service; one failing service never blocks the others.

    Rollbacks first: every service is decided from the working tree as it is, on a pool
    (probes of different services run concurrently), and a rollback is carried out and
    committed the moment it is decided, before anything that can block it (the git sync,
    another service, an uncommitted edit). Then the clone is synced with the remote; when it
    cannot reach the remote's tip the run is degraded and applies nothing else. Otherwise
    every other decision is carried out (re-decided when the sync changed its rollout file).
    """
    if saved is not None:
        if not saved.services:
            return RunResult(())  # an empty saved plan applies nothing
        patterns = saved_services(ctx.repo / "rollout", saved)
        refused = check_saved(ctx, saved, patterns)
        if refused:
            return RunResult(refused)
    files = rollout_files(ctx.repo / "rollout", patterns)
    dirty = set() if dry_run or ctx.git is None else _dirty(ctx)
    specs, load_errors = load_all(files, ctx.shard)
    by_stem = {p.stem: p for p in files}
    outcomes = [
        ServiceOutcome(
            e.service,
            error=f"{_uncommitted(ctx, by_stem[e.service])}; it does not load either: {e.message}"
            if e.service in by_stem and by_stem[e.service].resolve() in dirty
            else e.message,
        )
        for e in load_errors
    ]
    if not dry_run:
        unmoved = _migrate(ctx, files, [s for _, s in specs])
        outcomes += [ServiceOutcome(s.service, error=unmoved[ref_of(s).key])
                     for _, s in specs if ref_of(s).key in unmoved]  # fmt: skip
        specs = [(p, s) for p, s in specs if ref_of(s).key not in unmoved]
    lives = observe(ctx.backend, [s for _, s in specs], ctx.max_workers)
    ok: list[tuple[Path, RolloutSpec, LiveService]] = []
    for path, spec in specs:
        live = lives[ref_of(spec).key]
        if isinstance(live, str):
            outcomes.append(ServiceOutcome(spec.service, error=live))
        else:
            ok.append((path, spec, live))
    windows, metric_errors = measure(ctx, [(s, lv) for _, s, lv in ok], ctx.clock())
    saved_by = {s.ref.key: s for s in saved.services} if saved else {}
    deadline = time.monotonic() + ctx.probe_budget

    def first(item: tuple[Path, RolloutSpec, LiveService]) -> _Tick | ServiceOutcome:
        path, spec, live = item
        mine = saved_by.get(ref_of(spec).key)
        stale = _stale(mine, live) if mine is not None else None
        if stale:
            return ServiceOutcome(spec.service, error=stale)
        won = [w for rev in (spec.revisions.canary, spec.revisions.stable) if rev
               for w in windows.get((ref_of(spec).key, rev), [])]  # fmt: skip
        err = metric_errors.get(ref_of(spec).key)
        t = _prepare(ctx, path, spec, live, won, err, dry_run=dry_run, probe_deadline=deadline)
        d = t.decision
        if dry_run:
            return ServiceOutcome(d.service, plan=d.plan, verdict=d.verdict)
        mismatch = _differs(mine, d.plan) if mine is not None else None
        if mismatch:
            return ServiceOutcome(d.service, plan=d.plan, error=mismatch, verdict=d.verdict)
        # A rollback the verdict decides now (and the late record of an earlier write) never
        # waits for git or for others. Re-asserting a `rolled_back` block already in the file
        # is desired state like any other: it waits for the sync (the remote may have
        # cleared it), so a stale clone never reverts a canary a person retried.
        if d.rollback and not is_rolled_back(spec):
            return _carry_and_record(ctx, t.run, d, t.redecide)
        if any(e.details.get("recovered") for e in t.run.events):
            _record_late(ctx, t)
        return t

    ticks = _on_pool(ctx, first, ok, outcomes)
    degraded = None if dry_run else _sync(ctx)
    if degraded is not None:
        log.warning("degraded: %s", degraded)

    def rest(t: _Tick) -> ServiceOutcome:
        d = t.decision
        if t.run.path.resolve() in dirty and not d.rollback:
            # Git is the desired state: applying an edit nobody committed would make live
            # traffic disagree with every commit. Other services go on; what was measured is
            # still recorded, or failing windows would never add up to a rollback.
            error = f"{_uncommitted(ctx, t.run.path)}, nothing moved for this service"
            return _held(ctx, t, error=error)
        if degraded is not None and not d.rollback:
            held = f"degraded, {d.plan.reason.value} not applied: {degraded}" if d.acts else None
            return _held(ctx, t, held=held)
        if not t.run.path.exists():
            return ServiceOutcome(d.service, error="rollout file removed by the sync; not applied")
        if t.run.path.read_bytes() != t.text:
            # The sync brought a newer desired state: decide again from it.
            spec = for_region(load_spec(t.run.path), t.run.spec.region)
            again = _prepare(
                ctx,
                t.run.path,
                spec,
                t.run.live,
                [],
                None,
                probe_deadline=deadline,
            )
            return _carry_and_record(ctx, again.run, again.decision, again.redecide)
        return _carry_and_record(ctx, t.run, d, t.redecide)

    done = _on_pool(ctx, rest, ticks, outcomes)
    assert not done  # `rest` always gives an outcome
    pushed, git_error = (None, None) if dry_run else _push(ctx, outcomes, degraded)
    ordered = tuple(sorted(outcomes, key=lambda o: o.service))
    return RunResult(ordered, pushed, git_error, degraded)


_T = TypeVar("_T")


def _on_pool(
    ctx: Context,
    work: Callable[[_T], _Tick | ServiceOutcome],
    items: Sequence[_T],
    outcomes: list[ServiceOutcome],
) -> list[_Tick]:
    """Run `work` per service on the run's bounded pool; outcomes go to `outcomes`, ticks
    still to carry out are returned. One service's error never stops the others."""
    if not items:
        return []
    ticks: list[_Tick] = []
    with ThreadPoolExecutor(max_workers=max(1, min(ctx.max_workers, len(items)))) as pool:
        futures = [pool.submit(work, item) for item in items]
        for item, future in zip(items, futures, strict=True):
            try:
                got = future.result()
            except (ReconcileError, PlanError) as exc:
                outcomes.append(ServiceOutcome(_name_of(item), error=str(exc)))
                continue
            if isinstance(got, ServiceOutcome):
                outcomes.append(got)
            else:
                ticks.append(got)
    return ticks


def _name_of(item: object) -> str:
    if isinstance(item, _Tick):
        return item.decision.service
    assert isinstance(item, tuple)
    spec = item[1]
    assert isinstance(spec, RolloutSpec)
    return spec.service


def _held(
    ctx: Context, t: _Tick, *, error: str | None = None, held: str | None = None
) -> ServiceOutcome:
    """A service not carried out this run: its observations are recorded all the same."""
    d = t.decision
    commit = None
    try:
        commit = record(ctx, t.run, d, False)
    except ReconcileError as exc:
        error = f"{error}; {exc}" if error else str(exc)
    return ServiceOutcome(
        d.service, plan=d.plan, verdict=d.verdict, error=error, held=held, commit=commit
    )


def _record_late(ctx: Context, t: _Tick) -> None:
    """Commit the late record of an earlier write now, before the sync; the service's own
    decision still waits for it."""
    run = t.run
    service = run.spec.service
    late = [e for e in run.events if e.details.get("recovered")]
    st.append_events(ctx.state_root, run.ref, run.events)
    run.events.clear()
    if ctx.git is not None:
        subject = f"reconcile({service}): record missed write: {late[0].reason}"
        paths = [st.state_dir(ctx.state_root, run.ref), *([run.path] if run.edited else [])]
        commit_paths(ctx, replace(t.decision.held_commit, subject=subject), paths)
    run.edited = False
    t.text = run.path.read_bytes()


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


def _sync(ctx: Context) -> str | None:
    """Bring the clone onto the remote's tip; returns why it could not (degraded), or None."""
    if ctx.git is None or not ctx.push or not ctx.git.has_remote():
        return None
    result = ctx.git.sync()
    for note in (*result.repaired, *result.notes):
        log.warning("git: %s", note)
    if result.at_tip:
        return None
    return f"the clone is not at the remote's tip ({result.reason})"


def _push(
    ctx: Context, outcomes: Sequence[ServiceOutcome], degraded: str | None
) -> tuple[bool | None, str | None]:
    """Push the run's commits (and any an earlier failed push left)."""
    if ctx.git is None or not ctx.push:
        return None, None
    committed = any(o.commit for o in outcomes)
    if degraded is not None and not any(o.commit for o in outcomes if o.applied):
        # The sync just failed to reach the remote: a push of older commits would too, and
        # the run already says so (degraded). A run that moved traffic still tries.
        return None, None
    if not (committed or ctx.git.unpushed()):
        return None, None
    moved = [o.service for o in outcomes if o.applied]
    what = f"traffic of {', '.join(moved)} moved and is" if moved else "the records are"
    try:
        return ctx.git.push(), None
    except ReconcileError as exc:
        lost = "degraded; " if degraded else ""
        return False, (
            f"{lost}push failed: {what} committed locally only, the next run pushes it: {exc}"
        )


def saved_services(rollout_dir: Path, saved: Plan) -> list[str]:
    """The services a saved plan names, each an exact service with a rollout file here.

    A hand-edited plan naming `ion-*` (or a service that has no rollout file) is refused
    as a whole: a saved plan is an exact list, never a pattern.
    """
    present = {p.stem for p in rollout_files(rollout_dir)}
    names = [s.service for s in saved.services]
    for name in names:
        if name not in present:
            why = "a pattern" if any(ch in name for ch in "*?[]") else "not a service"
            raise ReconcileError(
                f"saved plan names {name!r}, {why} in {rollout_dir}; a saved plan lists exact "
                "services: run plan again"
            )
    return names


def check_saved(ctx: Context, saved: Plan, names: Sequence[str]) -> tuple[ServiceOutcome, ...]:
    """All or nothing: the saved plan against a fresh read-only plan of the same services.

    Returns one error outcome per service (empty when every service still matches): with
    one stale service, none is applied.
    """
    fresh = plan_all(
        ctx.repo,
        names,
        ctx.backend,
        ctx.clock(),
        max_workers=ctx.max_workers,
        environ=ctx.environ,
    )
    by_name = {p.ref.key: p for p in fresh.services}
    failed = {e.service: e.message for e in fresh.errors}
    for sp in saved.services:
        now = by_name.get(sp.ref.key)
        if now is None:
            failed.setdefault(sp.service, f"{sp.ref.name}: cannot be planned now")
            continue
        problem = _stale_at(sp, now.etag, now.generation) or _differs(sp, now)
        if problem:
            failed[sp.service] = problem
    if not failed:
        return ()
    stale = ", ".join(sorted(failed))
    return tuple(
        ServiceOutcome(
            sp.service,
            error=failed.get(sp.service)
            or f"{sp.ref.name}: not applied, the saved plan is stale for {stale}",
        )
        for sp in sorted(saved.services, key=lambda s: s.service)
    )


def _stale(saved: ServicePlan, live: LiveService) -> str | None:
    return _stale_at(saved, live.etag, live.generation)


def _stale_at(saved: ServicePlan, etag: str, generation: int) -> str | None:
    if saved.etag != etag or saved.generation != generation:
        return (
            f"{saved.ref.name}: saved plan is stale (computed against generation "
            f"{saved.generation}, live is generation {generation}); run plan again"
        )
    return None


def _differs(saved: ServicePlan, fresh: ServicePlan) -> str | None:
    """Why the saved plan no longer describes what apply would do (None: it does)."""
    if not saved.after.same_routing(fresh.after) or saved.reason is not fresh.reason:
        return (
            f"{saved.ref.name}: saved plan is stale (it would now do {fresh.reason.value}: "
            f"{fresh.after.describe()}); run plan again"
        )
    if _edit_keys(saved) != _edit_keys(fresh):
        return (
            f"{saved.ref.name}: saved plan is stale (the rollout-file edit would now write "
            f"{', '.join(_edit_keys(fresh)) or 'nothing'}); run plan again"
        )
    if saved.spec_id and fresh.spec_id and saved.spec_id != fresh.spec_id:
        # Same traffic, other desired state (gates, bake, stages, shared defaults): what was
        # reviewed is not what would be applied.
        return (
            f"{saved.ref.name}: saved plan is stale (its rollout file or the _defaults.yaml "
            "it inherits changed since it was planned); run plan again"
        )
    return None


def _edit_keys(sp: ServicePlan) -> tuple[str, ...]:
    # Keys, not values: a rollback's block carries the time it is written.
    return tuple(sorted(sp.edit.values)) if sp.edit is not None else ()
