"""The reconcile loop: gather inputs -> decide -> carry out -> record, for every service.

`gather` reads rollout files, state/ and live services (concurrently), measures windows
(batched per metrics configuration) and runs probes; `decide.decide` makes every decision
as a value; `execute` carries it out and records it. Nothing here decides.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from reconciler import state as st
from reconciler.backends import TrafficBackend
from reconciler.decide import Decision, decide, missing_env
from reconciler.errors import ReconcileError
from reconciler.execute import STAMP_KEY as STAMP_KEY
from reconciler.execute import Context as Context  # re-exported: callers build it from here
from reconciler.execute import ServiceRun, carry_out, record, recover
from reconciler.execute import read_stamp as read_stamp
from reconciler.gather import gather, load_all, measure, observe, probe
from reconciler.gather import ref_of as ref_of
from reconciler.gather import rollout_files as rollout_files
from reconciler.model import LiveService, Verdict
from reconciler.model import WindowStats as Window
from reconciler.plan import Plan, PlanError, ServiceError, ServicePlan
from reconciler.shard import Shard
from reconciler.spec import RolloutSpec

log = logging.getLogger(__name__)

ROLLED_BACK_EXIT = 4


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


@dataclass(frozen=True)
class RunResult:
    """The outcome of one `apply` run over many services."""

    outcomes: tuple[ServiceOutcome, ...]
    pushed: bool | None = None
    git_error: str | None = None

    @property
    def exit_code(self) -> int:
        """4 when a canary was rolled back, 1 on any error or blocked change, else 0."""
        if any(o.rolled_back for o in self.outcomes):
            return ROLLED_BACK_EXIT
        if self.git_error or any(o.error for o in self.outcomes):
            return 1
        if any(o.plan is not None and o.plan.blocked for o in self.outcomes):
            return 1
        return 0


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
        spec, status, live = g
        if isinstance(live, str):
            errors.append(ServiceError(spec.service, live))
            continue
        try:
            config = missing_env(spec, os.environ if environ is None else environ)
            d = decide(
                spec, status, live, now=now, config_errors=config, check_revisions=not offline
            )
            plans.append(d.plan)
        except PlanError as exc:
            errors.append(ServiceError(spec.service, str(exc)))
    return Plan(
        created_at=now,
        services=tuple(plans),
        errors=tuple(sorted(errors, key=lambda e: e.service)),
        offline=offline,
    )


# --- one service ------------------------------------------------------------------------------
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
    now = ctx.clock()
    # A corrupt status file must not stop this service's rollback: what parses is kept, the
    # rest is rebuilt from live traffic and git, and an event says what was dropped.
    loaded = st.load_status(ctx.state_root, spec.service)
    status = loaded.status
    spec_commit = ctx.git.last_commit_touching(path) if ctx.git else None
    run = ServiceRun(path, spec, live, now)
    rebuilt = loaded.event(now, ctx.actor)
    if rebuilt is not None:
        log.warning("%s: %s", spec.service, rebuilt.reason)
        run.events.append(rebuilt)
    if not dry_run:
        recover(ctx, run, spec_commit)
    spec = run.spec
    config = missing_env(spec, os.environ if ctx.environ is None else ctx.environ)
    probes: list[st.ProbeRecord] = []
    if not dry_run and not config:
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
            spec_commit=spec_commit,
            actor=ctx.actor,
            window_keep=ctx.window_keep,
        )

    d = redecide(live)
    if dry_run:
        return ServiceOutcome(spec.service, plan=d.plan, verdict=d.verdict)
    mismatch = _differs(saved, d.plan) if saved is not None else None
    if mismatch:
        return ServiceOutcome(spec.service, plan=d.plan, error=mismatch, verdict=d.verdict)
    return _carry_and_record(ctx, run, d, redecide)


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
    if run.unconfirmed:
        error = (
            f"{d.plan.ref.name}: rollback recorded, but not confirmed serving: {run.unconfirmed}"
        )
    commit = None
    try:
        commit = record(ctx, run, d, applied)
    except ReconcileError as exc:
        error = f"{error}; {exc}" if error else str(exc)
    return ServiceOutcome(
        d.service,
        plan=d.plan,
        applied=applied,
        rolled_back=applied and d.rollback and run.unconfirmed is None,
        error=error,
        commit=commit,
        events=(*run.events, *d.events, *(d.done if applied else ())),
        verdict=d.verdict,
    )


# --- a run ----------------------------------------------------------------------------------------
def apply_all(
    ctx: Context,
    patterns: Sequence[str] = (),
    *,
    dry_run: bool = False,
    saved: Plan | None = None,
) -> RunResult:
    """Reconcile every selected service; one failing service never blocks the others."""
    pull_error = None if dry_run else _pull(ctx)
    if saved is not None:
        if not saved.services:
            return RunResult((), None, pull_error)  # an empty saved plan applies nothing
        patterns = saved_services(ctx.repo / "rollout", saved)
        refused = check_saved(ctx, saved, patterns)
        if refused:
            return RunResult(refused, None, pull_error)
    specs, load_errors = load_all(rollout_files(ctx.repo / "rollout", patterns), ctx.shard)
    outcomes = [ServiceOutcome(e.service, error=e.message) for e in load_errors]
    lives = observe(ctx.backend, [s for _, s in specs], ctx.max_workers)
    ok: list[tuple[Path, RolloutSpec, LiveService]] = []
    for path, spec in specs:
        live = lives[spec.service]
        if isinstance(live, str):
            outcomes.append(ServiceOutcome(spec.service, error=live))
        else:
            ok.append((path, spec, live))
    windows, metric_errors = measure(ctx, [(s, lv) for _, s, lv in ok], ctx.clock())
    saved_by = {s.service: s for s in saved.services} if saved else {}
    for path, spec, live in ok:
        stale = _stale(saved_by[spec.service], live) if spec.service in saved_by else None
        if stale:
            outcomes.append(ServiceOutcome(spec.service, error=stale))
            continue
        mine = [w for rev in (spec.revisions.canary, spec.revisions.stable) if rev
                for w in windows.get((spec.service, rev), [])]  # fmt: skip
        try:
            outcome = reconcile_service(
                ctx,
                path,
                spec,
                live,
                mine,
                metric_errors.get(spec.service),
                dry_run=dry_run,
                saved=saved_by.get(spec.service),
            )
        except (ReconcileError, PlanError) as exc:
            outcome = ServiceOutcome(spec.service, error=str(exc))
        outcomes.append(outcome)
    pushed, git_error = (None, pull_error) if dry_run else _push(ctx, outcomes, pull_error)
    return RunResult(tuple(sorted(outcomes, key=lambda o: o.service)), pushed, git_error)


def _pull(ctx: Context) -> str | None:
    """Pull before a run, and refuse uncommitted rollout edits; returns a pull failure."""
    pull_error: str | None = None
    if ctx.git is not None and ctx.push and ctx.git.has_remote():
        try:
            ctx.git.pull()
        except ReconcileError as exc:
            # Rollbacks must not wait for git: go on with the working tree as it is.
            pull_error = f"pull failed, reconciled the local working tree: {exc}"
            log.warning("%s", pull_error)
    if ctx.git is not None:
        dirty = ctx.git.uncommitted(ctx.repo / "rollout")
        if dirty:
            # Git is the desired state: applying an edit nobody committed would make live
            # traffic disagree with every commit.
            raise ReconcileError(
                f"{dirty[0]}: uncommitted change in rollout/; commit it first "
                "(or try it with --dry-run or --no-commit)"
            )
    return pull_error


def _push(
    ctx: Context, outcomes: Sequence[ServiceOutcome], git_error: str | None
) -> tuple[bool | None, str | None]:
    """Push the run's commits (and any an earlier failed push left)."""
    if ctx.git is None or not ctx.push:
        return None, git_error
    if not (any(o.commit for o in outcomes) or ctx.git.unpushed()):
        return None, git_error
    try:
        return ctx.git.push(), git_error
    except ReconcileError as exc:
        return None, f"push failed (commits kept locally, the next run retries): {exc}"


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
    by_name = {p.service: p for p in fresh.services}
    failed = {e.service: e.message for e in fresh.errors}
    for sp in saved.services:
        now = by_name.get(sp.service)
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
    return None


def _edit_keys(sp: ServicePlan) -> tuple[str, ...]:
    # Keys, not values: a rollback's block carries the time it is written.
    return tuple(sorted(sp.edit.values)) if sp.edit is not None else ()
