"""The reconcile loop: gather inputs -> decide -> carry out -> record, for every service.

Gathering reads rollout files, state/ and live services (concurrently), measures windows
(batched per metrics configuration) and runs probes; `decide.decide` makes every decision
as a value; `execute` carries it out and records it. Nothing here decides.
"""

from __future__ import annotations

import fnmatch
import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from reconciler import state as st
from reconciler.analysis import gate_windows
from reconciler.backends import BackendError, TrafficBackend
from reconciler.decide import Decision, decide, missing_env
from reconciler.errors import ReconcileError
from reconciler.execute import STAMP_KEY as STAMP_KEY
from reconciler.execute import Context as Context  # re-exported: callers build it from here
from reconciler.execute import ServiceRun, carry_out, record, recover
from reconciler.execute import read_stamp as read_stamp
from reconciler.loader import load_spec
from reconciler.metrics import MetricsError, StatsQuery
from reconciler.model import LiveService, ServiceRef, Verdict
from reconciler.model import WindowStats as Window
from reconciler.plan import Plan, PlanError, ServiceError, ServicePlan
from reconciler.spec import RolloutSpec

log = logging.getLogger(__name__)

ROLLED_BACK_EXIT = 4


# --- inputs ---------------------------------------------------------------------------------
def rollout_files(rollout_dir: Path, patterns: Sequence[str] = ()) -> list[Path]:
    """Rollout files in `rollout_dir`, filtered by service names or globs (`payments-*`).

    A plain name (no glob characters) that matches no file is an error, so a typo in
    `--service` never silently reconciles nothing.
    """
    if not rollout_dir.is_dir():
        raise ReconcileError(f"{rollout_dir}: no rollout directory (expected rollout/*.yaml)")
    files = sorted(p for p in rollout_dir.iterdir() if p.suffix in (".yaml", ".yml"))
    if not patterns:
        return files
    for pat in patterns:
        if "/" in pat or "\\" in pat or ".." in pat:
            raise ReconcileError(f"--service {pat!r}: a service name or glob, not a path")
    chosen = [p for p in files if any(fnmatch.fnmatchcase(p.stem, pat) for pat in patterns)]
    for pat in patterns:
        if not any(ch in pat for ch in "*?[") and not any(p.stem == pat for p in files):
            raise ReconcileError(f"{rollout_dir / (pat + '.yaml')}: no such rollout file")
    return chosen


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


# --- observe --------------------------------------------------------------------------------
def load_all(files: Iterable[Path]) -> tuple[list[tuple[Path, RolloutSpec]], list[ServiceError]]:
    """Load every rollout file; a bad file is an error for that service only."""
    specs: list[tuple[Path, RolloutSpec]] = []
    errors: list[ServiceError] = []
    for path in files:
        try:
            specs.append((path, load_spec(path)))
        except ReconcileError as exc:
            errors.append(ServiceError(path.stem, str(exc)))
    return specs, errors


def ref_of(spec: RolloutSpec) -> ServiceRef:
    """The Cloud Run coordinates of a rollout file."""
    return ServiceRef(spec.project, spec.region, spec.service)


def read_live(backend: TrafficBackend, spec: RolloutSpec) -> LiveService | str:
    """One service's live state, or the error reading it."""
    try:
        return backend.get_service(ref_of(spec))
    except BackendError as exc:
        return str(exc)


def observe(
    backend: TrafficBackend, specs: Sequence[RolloutSpec], max_workers: int = 16
) -> dict[str, LiveService | str]:
    """Read every service concurrently (bounded pool); an error is kept per service."""
    if not specs:
        return {}
    with ThreadPoolExecutor(max_workers=max(1, min(max_workers, len(specs)))) as pool:
        results = list(pool.map(lambda spec: read_live(backend, spec), specs))
    return {spec.service: r for spec, r in zip(specs, results, strict=True)}


def offline_live(spec: RolloutSpec, status: st.ServiceStatus | None) -> LiveService | str:
    """The last observed state from state/, for plans without API access."""
    if status is None:
        return "no observed state in state/ yet (run apply once with access)"
    return LiveService(
        ref=ref_of(spec),
        traffic=status.traffic,
        statuses=status.traffic,
        etag=status.etag,
        generation=status.generation,
        observed_generation=status.observed_generation,
    )


# --- plan (read-only) -----------------------------------------------------------------------
_Inputs = tuple[RolloutSpec, st.ServiceStatus | None, LiveService | str]
"""What planning one service needs: its rollout file, its state/ status, its live state."""


def plan_all(
    repo: Path,
    patterns: Sequence[str],
    backend: TrafficBackend | None,
    now: datetime,
    *,
    offline: bool = False,
    max_workers: int = 16,
    environ: Mapping[str, str] | None = None,
) -> Plan:
    """Plan every selected service against live (or, offline, the last observed) state.

    The verdict and bake timer come from state/ (the windows and probe runs the last apply
    measured) through the same `decide` apply uses; plan never queries metrics or runs
    probes, so it is cheap and works on pull requests. Every variable the rollout file needs
    that `environ` (default: the process environment) lacks blocks its service.
    """
    files = rollout_files(repo / "rollout", patterns)
    gathered = _gather(repo, files, None if offline else backend, max_workers)
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


def _gather(
    repo: Path, files: Sequence[Path], backend: TrafficBackend | None, max_workers: int
) -> list[_Inputs | ServiceError]:
    """Each file's spec, status and live state (offline without a backend)."""
    gathered: list[_Inputs | ServiceError] = []
    with ThreadPoolExecutor(max_workers=max(1, min(max_workers, len(files)))) as pool:
        # The pool only waits on the API; this thread parses rollout files and state/ while
        # the reads are in flight (CPU work in the pool would contend for the GIL).
        pending: list[tuple[RolloutSpec, Future[LiveService | str] | None] | ServiceError] = []
        for path in files:
            try:
                spec = load_spec(path)
            except ReconcileError as exc:
                pending.append(ServiceError(path.stem, str(exc)))
                continue
            read = pool.submit(read_live, backend, spec) if backend is not None else None
            pending.append((spec, read))
        for item in pending:
            if isinstance(item, ServiceError):
                gathered.append(item)
                continue
            spec, future = item
            try:
                status = st.read_status(repo, spec.service)
            except ReconcileError as exc:  # a corrupt status file fails its service only
                gathered.append(ServiceError(spec.service, str(exc)))
                continue
            live = offline_live(spec, status) if future is None else future.result()
            gathered.append((spec, status, live))
    return gathered


# --- measure ----------------------------------------------------------------------------------
def measure(
    ctx: Context,
    items: Sequence[tuple[RolloutSpec, LiveService]],
    now: datetime,
) -> tuple[dict[tuple[str, str], list[Window]], dict[str, str]]:
    """New windows for the canary and stable of every service with a live canary.

    Batched: one provider call per metrics configuration and window length, covering every
    service that shares it (the Cloud Monitoring provider makes one API call per metric per
    project). Returns windows by (service, revision) and metric errors by service.
    """
    out: dict[tuple[str, str], list[Window]] = {}
    errors: dict[str, str] = {}
    if ctx.metrics_for is None:
        return out, errors
    groups: dict[tuple[str, timedelta], list[tuple[RolloutSpec, StatsQuery]]] = {}
    for spec, live in items:
        canary = spec.revisions.canary
        if canary is None or live.traffic.percent_of(canary) == 0:
            continue
        revisions = (canary, spec.revisions.stable)
        for length in gate_windows(spec.gates):
            key = (spec.metrics.model_dump_json(), length)
            groups.setdefault(key, []).append((spec, StatsQuery(ref_of(spec), revisions)))
    for (_, length), members in groups.items():
        provider = ctx.metrics_for(members[0][0].metrics)
        try:
            stats = provider.window_stats([q for _, q in members], length, now)
        except MetricsError as exc:
            for spec, _ in members:
                errors[spec.service] = str(exc)
            continue
        for spec, q in members:
            for rev in q.revisions:
                w = stats.get((spec.service, rev))
                if w is not None:
                    out.setdefault((spec.service, rev), []).append(w)
    return out, errors


# --- probe ------------------------------------------------------------------------------------
def probe(
    ctx: Context, spec: RolloutSpec, live: LiveService, now: datetime
) -> tuple[list[st.ProbeRecord], list[str]]:
    """Run the canary probes when the canary is live: their records, and the configuration
    errors (a bad URL template) that kept them from running, which are no evidence."""
    canary = spec.revisions.canary
    if not ctx.run_probes or not spec.probes or canary is None:
        return [], []
    if live.traffic.percent_of(canary) == 0:
        return [], []
    from reconciler.probes import ProbeConfigError, run_probes, urls_of

    urls = urls_of(live)
    if urls.canary is None:
        # No canary tag URL (e.g. someone re-routed by hand): the probes cannot run this
        # tick; the judge counts them as INCONCLUSIVE, never as passing.
        return [], []
    try:
        results = run_probes(spec, urls, environ=ctx.environ)
    except ProbeConfigError as exc:
        return [], [str(exc)]
    return [st.ProbeRecord(r.name, r.ok, now, "" if r.ok else r.reason) for r in results], []


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
    status = st.read_status(ctx.state_root, spec.service)
    spec_commit = ctx.git.last_commit_touching(path) if ctx.git else None
    run = ServiceRun(path, spec, live, now)
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
        patterns = [s.service for s in saved.services]
    specs, load_errors = load_all(rollout_files(ctx.repo / "rollout", patterns))
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


def _stale(saved: ServicePlan, live: LiveService) -> str | None:
    if saved.etag != live.etag or saved.generation != live.generation:
        return (
            f"{saved.ref.name}: saved plan is stale (computed against generation "
            f"{saved.generation}, live is generation {live.generation}); run plan again"
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
