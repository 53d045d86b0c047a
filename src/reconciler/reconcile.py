"""The reconcile loop: observe -> measure -> probe -> judge -> plan -> apply -> verify -> record.

Each step is a small function; `reconcile_service` runs them in order for one service and
every path ends in one status write. The pure rules live in `plan.py` and `analysis.py`;
this module only gathers their inputs and carries out their decisions.

Crash safety: every traffic write also stamps the service with an annotation
(`STAMP_KEY`) describing the write. Traffic goes first, the git record second; if the
process dies in between, the next run finds a stamp that state/ has not recorded yet and
writes the missing record (including a rollback's sticky edit of the rollout file).
"""

from __future__ import annotations

import difflib
import fnmatch
import json
import logging
import re
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from reconciler import state as st
from reconciler import yamledit
from reconciler.analysis import ProbeRun, gate_windows, judge
from reconciler.backends import BackendError, Conflict, TrafficBackend
from reconciler.errors import ReconcileError
from reconciler.gitops import Action as GitAction
from reconciler.gitops import GitOps, canary_change, format_subject, reconcile_trailers
from reconciler.loader import load_spec
from reconciler.metrics import MetricsError, MetricsProvider, StatsQuery
from reconciler.model import LiveService, Outcome, ServiceRef, Target, TrafficSplit, Verdict
from reconciler.model import WindowStats as Window
from reconciler.plan import (
    History,
    Plan,
    PlanError,
    Reason,
    ServiceError,
    ServicePlan,
    SpecEdit,
    desired_split,
    is_rolled_back,
    plan_service,
)
from reconciler.spec import Metrics, RolloutSpec

log = logging.getLogger(__name__)

STAMP_KEY = "cloudrun-reconciler/last-apply"
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
    names = [p.stem for p in files]
    for pat in patterns:
        # A pattern that selects nothing is a typo as surely as a wrong name: reconciling
        # nothing and exiting 0 would hide it.
        if not any(fnmatch.fnmatchcase(name, pat) for name in names):
            if any(ch in pat for ch in "*?["):
                head = f"--service {pat!r} matches no rollout file in {rollout_dir}"
            else:
                head = f"{rollout_dir / (pat + '.yaml')}: no such rollout file"
            raise ReconcileError(head + _did_you_mean(pat, names))
    return chosen


def _did_you_mean(pattern: str, names: Sequence[str]) -> str:
    """`; did you mean 'payments-api'?` from the closest service names, if any are close."""
    bare = re.sub(r"\[[^\]]*\]|[*?]", "", pattern)

    def score(name: str) -> float:
        # A glob like `paymnts-*` is compared with the same length of each name as well.
        whole = difflib.SequenceMatcher(None, bare, name).ratio()
        head = difflib.SequenceMatcher(None, bare, name[: len(bare)]).ratio()
        return max(whole, head if bare != pattern else 0.0)

    ranked = sorted(names, key=score, reverse=True)
    close = [n for n in ranked if score(n) >= 0.6][:3]
    if not close:
        return f" (services: {', '.join(names[:10])})" if names else " (rollout/ is empty)"
    return "; did you mean " + " or ".join(repr(c) for c in close) + "?"


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
    recover_after: timedelta = timedelta(minutes=2)
    """A stamp younger than this may belong to a concurrent run that is still recording it."""
    progress: Callable[[str], None] = lambda _msg: None

    @property
    def state_root(self) -> Path:
        return self.repo


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


def judged(status: st.ServiceStatus | None, spec: RolloutSpec) -> bool:
    """Whether state/'s last verdict and bake timer belong to the rollout file's canary."""
    return (
        status is not None
        and spec.revisions.canary is not None
        and status.canary_revision == spec.revisions.canary
    )


def history_of(status: st.ServiceStatus | None, spec: RolloutSpec | None = None) -> History:
    """What the planner needs from state/ (the bake timer only for the same canary)."""
    if status is None:
        return History()
    same = spec is None or judged(status, spec)
    return History(
        last_applied=status.applied,
        passing_since=status.passing_since if same else None,
        stage_percent=status.stage if status.passing_since and same else None,
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
) -> Plan:
    """Plan every selected service against live (or, offline, the last observed) state.

    The verdict and bake timer come from state/ (what the last apply measured); plan never
    queries metrics, so it is cheap and works on pull requests.
    """
    files = rollout_files(repo / "rollout", patterns)
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
            read = None
            if not offline and backend is not None:
                read = pool.submit(read_live, backend, spec)
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
            plans.append(
                plan_service(
                    spec,
                    live,
                    now=now,
                    verdict=status.verdict if status is not None and judged(status, spec) else None,
                    history=history_of(status, spec),
                    check_revisions=not offline,
                )
            )
        except PlanError as exc:
            errors.append(ServiceError(spec.service, str(exc)))
    return Plan(
        created_at=now,
        services=tuple(plans),
        errors=tuple(sorted(errors, key=lambda e: e.service)),
        offline=offline,
    )


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


def merge_windows(
    old: Sequence[Window], new: Iterable[Window], keep: int
) -> tuple[tuple[Window, ...], tuple[Window, ...]]:
    """Add `new` windows that do not overlap a kept window of the same revision and length.

    Returns (all kept windows, the windows actually added). Runs more frequent than the
    window would otherwise count one burst of errors twice.
    """
    added: list[Window] = []
    for w in new:
        same = [o for o in (*old, *added) if o.revision == w.revision and o.window == w.window]
        if any(w.start < o.end for o in same):
            continue
        added.append(w)
    return st.keep_windows(old, added, keep=keep), tuple(added)


# --- probe ------------------------------------------------------------------------------------
def probe(
    ctx: Context, spec: RolloutSpec, live: LiveService, now: datetime
) -> list[st.ProbeRecord]:
    """Run the canary probes when the canary is live; results as state records."""
    canary = spec.revisions.canary
    if not ctx.run_probes or not spec.probes or canary is None:
        return []
    if live.traffic.percent_of(canary) == 0:
        return []
    from reconciler.probes import run_probes, urls_of

    urls = urls_of(live)
    if urls.canary is None:
        # No canary tag URL (e.g. someone re-routed by hand): the probes cannot run this
        # tick; the judge counts them as INCONCLUSIVE, never as passing.
        return []
    try:
        results = run_probes(spec, urls, environ=ctx.environ)
    except ReconcileError as exc:
        return [st.ProbeRecord(c.name, False, now, str(exc)) for c in spec.probes]
    return [
        st.ProbeRecord(
            r.name, r.ok, now, "" if r.ok else r.reason, r.latency if r.answered else None
        )
        for r in results
    ]


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


# --- judge --------------------------------------------------------------------------------------
def verdict_for(
    spec: RolloutSpec,
    windows: Sequence[Window],
    probes: Sequence[st.ProbeRecord],
    stage_since: datetime,
) -> Verdict:
    """Judge the current stage: only windows and probe runs since the stage began count, and
    only runs of the probes the rollout file still configures."""
    canary = spec.revisions.canary
    stable = spec.revisions.stable
    configured = {p.name for p in spec.probes}
    current = [w for w in windows if w.start >= stage_since]
    runs = [
        ProbeRun(p.name, p.ok, p.reason)
        for p in probes
        if p.at >= stage_since and p.name in configured
    ]
    return judge(
        [w for w in current if w.revision == canary],
        spec.gates,
        stable=[w for w in current if w.revision == stable],
        probes=runs,
        expected_probes=sorted(configured),
    )


# --- apply --------------------------------------------------------------------------------------
def stamp(sp: ServicePlan, now: datetime, reason: str) -> dict[str, str]:
    """The annotation written with a traffic change (see module docstring)."""
    data = {
        "action": sp.reason.value,
        "at": st.format_time(now),
        # Unique per write: two runs writing the same split in the same second must still
        # tell their writes apart (see CloudRunBackend.set_traffic).
        "write": uuid.uuid4().hex,
        "from_generation": sp.generation,
        "split": [[t.revision, t.percent, t.tag] for t in sp.after.targets],
        "canary": sp.canary,
        "reason": reason,
    }
    block = sp.edit.values.get("rolled_back") if sp.edit is not None else None
    if isinstance(block, Mapping):
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


def _stamp_split(data: Mapping[str, Any]) -> TrafficSplit:
    return TrafficSplit.of(Target(str(r), int(p), str(t)) for r, p, t in data.get("split", []))


def write_traffic(
    ctx: Context,
    spec: RolloutSpec,
    sp: ServicePlan,
    replan: Callable[[LiveService], ServicePlan],
    now: datetime,
) -> tuple[ServicePlan, LiveService, bool]:
    """Set traffic with the plan's etag; on a conflict re-read and re-plan once.

    Returns the plan carried out, the live service, and whether this run wrote traffic
    (False when a concurrent writer had already made the change).
    """
    reason = sp.edit.summary if sp.edit is not None else sp.reason.value
    try:
        live = ctx.backend.set_traffic(sp.ref, sp.after, sp.etag, stamp(sp, now, reason))
        return sp, live, True
    except Conflict as exc:
        log.info("%s: %s; re-reading and re-planning once", sp.ref.name, exc)
    fresh = ctx.backend.get_service(sp.ref)
    again = replan(fresh)
    if again.blocked:
        raise ReconcileError(
            f"{sp.ref.name}: changed during apply and is now blocked: {again.blocked}"
        )
    if not again.changes:
        return again, fresh, False
    other = read_stamp(fresh)
    if (
        other is not None
        and int(other.get("from_generation", -1)) >= sp.generation
        and again.reason is not Reason.ROLLBACK
    ):
        # Another reconciler wrote since our read, possibly from newer git than ours: undoing
        # its write would lose an update. A rollback (toward stable) still goes ahead.
        raise ReconcileError(
            f"{sp.ref.name}: another reconciler changed traffic during this run "
            f"({other.get('reason', '?')}); nothing overwritten, the next run re-reads git"
        )
    try:
        live = ctx.backend.set_traffic(
            again.ref, again.after, again.etag, stamp(again, now, reason)
        )
    except Conflict as exc:
        raise ReconcileError(
            f"{sp.ref.name}: changed again while applying ({exc}); nothing overwritten, "
            "run apply again"
        ) from None
    return again, live, True


def read_rollout(path: Path) -> str:
    """A rollout file's text exactly as written (CRLF line ends kept for the byte-exact edit)."""
    return path.read_bytes().decode("utf-8")


def edit_rollout_file(path: Path, edit: SpecEdit, spec: RolloutSpec, now: datetime) -> None:
    """Carry out the planner's edit of the rollout file, keeping every other byte."""
    text = read_rollout(path)
    if edit.kind is Reason.ROLLBACK:
        rb = edit.values.get("rolled_back")
        if isinstance(rb, Mapping):
            text = yamledit.record_rollback(
                text, revision=str(rb["revision"]), at=now, reason=str(rb["reason"])
            )
        else:
            text = yamledit.set_canary_percent(text, 0)
    elif edit.kind is Reason.FINALIZE:
        text = yamledit.finalize(text)
    else:
        text = yamledit.set_canary_percent(text, int(edit.values["canary_percent"]))
        if spec.force:
            text = yamledit.remove_force(text)
    st.atomic_write_text(path, text)


_EVENT_KIND = {
    Reason.STAGE: st.EventKind.APPLIED,
    Reason.DRIFT: st.EventKind.DRIFT_CORRECTED,
    Reason.ROLLBACK: st.EventKind.ROLLED_BACK,
    Reason.ADVANCE: st.EventKind.ADVANCED,
    Reason.FINALIZE: st.EventKind.FINALIZED,
}
_GIT_ACTION = {
    Reason.STAGE: GitAction.APPLY,
    Reason.DRIFT: GitAction.DRIFT,
    Reason.ROLLBACK: GitAction.ROLLBACK,
    Reason.ADVANCE: GitAction.ADVANCE,
    Reason.FINALIZE: GitAction.FINALIZE,
    Reason.NONE: GitAction.RECORD,
}


def _canary_pct(split: TrafficSplit, canary: str | None) -> int:
    return split.percent_of(canary) if canary else 0


def _verdict_body(verdict: Verdict | None) -> str:
    if verdict is None:
        return ""
    lines = [f"Verdict: {verdict.outcome.value}"]
    for g in verdict.gates:
        lines.append(f"- {g.gate}: {g.outcome.value} - {g.reason}")
    return "\n".join(lines)


# --- one service ----------------------------------------------------------------------------------
@dataclass
class ServiceRun:
    """Mutable scratch of one service's reconcile or manual action (kept out of the pure core)."""

    path: Path
    spec: RolloutSpec
    live: LiveService
    status: st.ServiceStatus | None
    now: datetime
    events: list[st.Event] = field(default_factory=list)
    edited: bool = False
    wrote: ServicePlan | None = None
    """The plan whose traffic this run wrote (set the moment the write is verified)."""


def recover(ctx: Context, run: ServiceRun, spec_commit: str | None) -> None:
    """Write the record of a traffic write that a crashed run did not commit."""
    data = read_stamp(run.live)
    if data is None or not run.live.traffic.same_routing(_stamp_split(data)):
        return
    try:
        written_at = st.parse_time(str(data.get("at")))
    except (ValueError, TypeError):
        return
    if _recorded(ctx, run.spec.service, written_at):
        return
    try:
        reason = Reason(str(data.get("action")))
    except ValueError:
        return
    # A young stamp may belong to a concurrent run that has not pushed its record yet. A
    # rollback is recovered at once all the same: its record is idempotent, and without it
    # this run would take the live 100% stable for drift and route to the bad canary again.
    if reason is not Reason.ROLLBACK and run.now - written_at < ctx.recover_after:
        return
    canary = data.get("canary")
    why = str(data.get("reason", ""))
    log.warning("%s: recording a write that was not committed (%s)", run.spec.service, why)
    if (
        reason is Reason.ROLLBACK
        and canary
        and run.spec.revisions.canary == canary
        and not is_rolled_back(run.spec)
    ):
        text = yamledit.record_rollback(
            read_rollout(run.path),
            revision=canary,
            at=written_at,
            reason=str(data.get("rolled_back_reason", why)),
        )
        st.atomic_write_text(run.path, text)
        run.edited = True
    elif reason is Reason.FINALIZE and canary and run.spec.revisions.canary == canary:
        st.atomic_write_text(run.path, yamledit.finalize(read_rollout(run.path)))
        run.edited = True
    elif reason is Reason.ADVANCE and canary and canary == run.spec.revisions.canary:
        percent = _stamp_split(data).percent_of(canary)
        if percent != run.spec.canary_percent and percent in run.spec.stages:
            # The advance's own commit was lost (its push failed): write it again, or the
            # live stage would look like drift and be undone.
            st.atomic_write_text(
                run.path, yamledit.set_canary_percent(read_rollout(run.path), percent)
            )
            run.edited = True
    elif (
        reason is Reason.STAGE
        and run.spec.force
        and desired_split(run.spec).same_routing(run.live.traffic)
    ):
        # The crashed run used `force` for the stage git still wants; it applies once.
        st.atomic_write_text(run.path, yamledit.remove_force(read_rollout(run.path)))
        run.edited = True
    if run.edited:
        run.spec = load_spec(run.path)
    run.events.append(
        st.Event(
            time=run.now,
            kind=_EVENT_KIND.get(reason, st.EventKind.APPLIED),
            actor=ctx.actor,
            after=run.live.traffic.describe(),
            reason=f"recorded late: {why}",
            spec_commit=spec_commit,
            details={"recovered": True, "written_at": str(data.get("at", ""))},
        )
    )


def _recorded(ctx: Context, service: str, written_at: datetime) -> bool:
    """Whether events.jsonl records the write stamped at `written_at`.

    The event of a write carries the stamp's time; a late record carries it as `written_at`.
    (Not status.yaml's generation: a run that came too soon to recover a crashed write still
    observes its generation, and the record would never be written.) A full, trimmed events
    file starting after the write is taken as having recorded it.
    """
    events = st.read_events(ctx.state_root, service)
    for e in reversed(events):
        if e.time == written_at or e.details.get("written_at") == st.format_time(written_at):
            return True
    return len(events) >= st.MAX_EVENTS and events[0].time > written_at


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
    """Judge, plan, apply and record one service. Every path ends in one status write.

    With `saved` (from `apply PLANFILE`), a plan that no longer matches it is refused before
    anything is written.
    """
    now = ctx.clock()
    # A corrupt status file must not stop this service's rollback: what parses is kept, the
    # rest is rebuilt from live traffic and git, and an event says what was dropped.
    loaded = st.load_status(ctx.state_root, spec.service)
    status = loaded.status
    spec_commit = ctx.git.last_commit_touching(path) if ctx.git else None
    run = ServiceRun(path, spec, live, status, now)
    rebuilt = loaded.event(now, ctx.actor)
    if rebuilt is not None:
        log.warning("%s: %s", spec.service, rebuilt.reason)
        run.events.append(rebuilt)
    if not dry_run:
        recover(ctx, run, spec_commit)
    spec = run.spec
    canary = spec.revisions.canary
    live_pct = _canary_pct(live.traffic, canary)
    stage_since = st.stage_since(status, canary=canary, stage=live_pct, now=now)

    # measure + probe + judge (only while the canary takes traffic)
    windows, added = merge_windows(status.windows if status else (), new_windows, ctx.window_keep)
    old_probes = status.probes if status else ()
    new_probes = probe(ctx, spec, live, now) if not dry_run else []
    probes = (*old_probes, *new_probes)[-ctx.window_keep * max(1, len(spec.probes)) :]
    verdict: Verdict | None = None
    if canary is not None and live_pct > 0 and not is_rolled_back(spec):
        verdict = verdict_for(spec, windows, probes, stage_since)
        if metrics_error and verdict.outcome is not Outcome.FAIL:
            verdict = Verdict(Outcome.INCONCLUSIVE, verdict.gates)
    passing_since: datetime | None = None
    if verdict is not None and verdict.outcome is Outcome.PASS:
        # The bake timer: since when PASS has held, without a break, at this stage.
        passing_since = now
        if status is not None and status.stage == live_pct and status.canary_revision == canary:
            passing_since = status.passing_since or now
    history = History(
        last_applied=status.applied if status else None,
        passing_since=passing_since,
        stage_percent=live_pct if passing_since else None,
    )

    def replan(fresh: LiveService) -> ServicePlan:
        return plan_service(spec, fresh, now=now, verdict=verdict, history=history)

    sp = replan(live)
    if metrics_error:
        sp = replace(sp, warnings=(*sp.warnings, f"metrics: {metrics_error}"))
    for p in new_probes:
        if not p.ok:
            run.events.append(
                st.Event(
                    now,
                    st.EventKind.PROBE_FAILED,
                    ctx.actor,
                    reason=p.reason,
                    spec_commit=spec_commit,
                )
            )
    if dry_run:
        return ServiceOutcome(spec.service, plan=sp, verdict=verdict)
    mismatch = _differs(saved, sp) if saved is not None else None
    if mismatch:
        return ServiceOutcome(spec.service, plan=sp, error=mismatch, verdict=verdict)

    error: str | None = None
    applied = False
    if sp.blocked is None and sp.has_changes:
        try:
            sp, live, applied = _apply(ctx, run, sp, replan, spec_commit)
        except ReconcileError as exc:
            error = str(exc)
            # A failure after the traffic write (the rollout edit) must not hide the write.
            if run.wrote is not None:
                sp, live, applied = run.wrote, run.live, True

    # record: one status write, metrics, events, one commit
    final_spec = load_spec(path) if run.edited else spec
    final_canary = final_spec.revisions.canary
    final_pct = _canary_pct(live.traffic, final_canary)
    applied_split = sp.after if applied else (status.applied if status and status.applied else None)
    if applied_split is None and not sp.changes and not sp.drift:
        applied_split = live.traffic  # in sync on a first run: that is what git wants
    new_status = st.ServiceStatus(
        service=spec.service,
        # A plan that failed to apply says nothing about where the rollout stands.
        phase=sp.phase if applied or not sp.changes or status is None else status.phase,
        stable_revision=final_spec.revisions.stable,
        canary_revision=final_canary,
        stage=final_pct,
        stage_since=st.stage_since(status, canary=final_canary, stage=final_pct, now=now)
        if applied
        else stage_since,
        traffic=live.traffic,
        etag=live.etag,
        generation=live.generation,
        observed_generation=live.observed_generation,
        last_reconcile=now,
        spec_commit=spec_commit,
        verdict=verdict if verdict is not None else (status.verdict if status else None),
        verdict_at=now if verdict is not None else (status.verdict_at if status else None),
        windows=windows,
        applied=applied_split,
        passing_since=passing_since if not applied else None,
        probes=tuple(probes),
    )
    idle = (
        status is not None
        and replace(new_status, last_reconcile=status.last_reconcile) == status
        and not (run.events or added or run.edited)
    )
    # Nothing new was seen: leave state/ alone rather than commit a timestamp every run.
    commit = None
    if not idle:
        try:
            commit = record(ctx, run, sp, new_status, added, applied, spec_commit)
        except ReconcileError as exc:
            error = f"{error}; {exc}" if error else str(exc)
    return ServiceOutcome(
        spec.service,
        plan=sp,
        applied=applied,
        rolled_back=applied and sp.reason is Reason.ROLLBACK,
        error=error,
        commit=commit,
        events=tuple(run.events),
        verdict=verdict,
    )


def _apply(
    ctx: Context,
    run: ServiceRun,
    sp: ServicePlan,
    replan: Callable[[LiveService], ServicePlan],
    spec_commit: str | None,
) -> tuple[ServicePlan, LiveService, bool]:
    """Carry out a plan: dependencies, (advance: edit first), traffic, edit. Raises on error."""
    spec, now = run.spec, run.now
    before_pct = _canary_pct(sp.before, sp.canary)
    moves_toward_canary = _canary_pct(sp.after, sp.canary) > before_pct
    if sp.changes and moves_toward_canary:
        unhealthy = check_dependencies(ctx, spec, run.live)
        if unhealthy:
            raise ReconcileError(
                f"{sp.ref.name}: dependencies unhealthy, no traffic moved: {unhealthy}"
            )
    if sp.edit is not None and sp.edit.kind is Reason.ADVANCE:
        # An advance is a change of desired state: committed first, then applied, so git
        # holds the new stage even if the traffic write fails or the process dies.
        edit_rollout_file(run.path, sp.edit, spec, now)
        run.edited = True
        if ctx.git is not None:
            ctx.git.commit(
                [run.path],
                format_subject(spec.service, f"advance to {sp.canary_percent_after}%"),
                sp.edit.summary,
                reconcile_trailers(spec.service, GitAction.ADVANCE, spec_commit),
            )
    live = run.live
    wrote = False
    if sp.changes:
        sp, live, wrote = write_traffic(ctx, spec, sp, replan, now)
        run.live = live
        run.wrote = sp if wrote else None
        ctx.progress(
            f"{sp.ref.service}: traffic {sp.before.describe()} -> {live.traffic.describe()}"
        )
    if sp.edit is not None and sp.edit.kind is not Reason.ADVANCE:
        edit_rollout_file(run.path, sp.edit, spec, now)
        run.edited = True
    elif sp.reason is Reason.STAGE and spec.force and sp.changes:
        st.atomic_write_text(run.path, yamledit.remove_force(read_rollout(run.path)))
        run.edited = True
    run.live = live
    if not wrote and sp.edit is None:
        return sp, live, False  # a concurrent reconciler made this change; it records it
    kind = _EVENT_KIND.get(sp.reason, st.EventKind.APPLIED)
    run.events.append(
        st.Event(
            time=now,
            kind=kind,
            actor=ctx.actor,
            before=sp.before.describe(),
            after=live.traffic.describe(),
            reason=sp.edit.summary if sp.edit is not None else sp.reason.value,
            spec_commit=spec_commit,
            details=_verdict_details(sp.verdict),
        )
    )
    return sp, live, True


def _verdict_details(verdict: Verdict | None) -> dict[str, str | int | float | bool | None]:
    if verdict is None:
        return {}
    out: dict[str, str | int | float | bool | None] = {"verdict": verdict.outcome.value}
    for g in verdict.gates:
        if g.outcome is Outcome.FAIL:
            out[f"{g.gate}.value"] = g.value
            out[f"{g.gate}.threshold"] = g.threshold
            out[f"{g.gate}.samples"] = g.samples
    return out


def record(
    ctx: Context,
    run: ServiceRun,
    sp: ServicePlan,
    status: st.ServiceStatus,
    added: Sequence[Window],
    applied: bool,
    spec_commit: str | None,
) -> str | None:
    """Write status, metrics and events; commit them with any rollout-file edit."""
    root = ctx.state_root
    st.write_status(root, status)
    if added:
        st.append_metrics(root, run.spec.service, added)
    if run.events:
        st.append_events(root, run.spec.service, run.events)
    if ctx.git is None:
        return None
    if applied:
        summary = canary_change(
            _canary_pct(sp.before, sp.canary), _canary_pct(sp.after, sp.canary), sp.canary
        )
        if sp.reason is Reason.ROLLBACK:
            summary = f"rollback {summary}"
        elif sp.reason is Reason.FINALIZE:
            summary = f"finalize: {sp.canary} is the stable revision"
        elif sp.reason is Reason.DRIFT:
            summary = f"drift corrected, {summary}"
        elif sp.reason is Reason.ADVANCE:
            summary = f"advance {summary}"
    elif run.events and any(e.details.get("recovered") for e in run.events):
        summary = f"record missed write: {run.events[0].reason}"
    else:
        summary = "observed state"
    body = "\n\n".join(
        part
        for part in (
            sp.edit.summary if sp.edit is not None and applied else "",
            _verdict_body(sp.verdict),
        )
        if part
    )
    paths: list[Path] = [st.state_dir(root, run.spec.service)]
    if run.edited:
        paths.append(run.path)
    action = _GIT_ACTION.get(sp.reason, GitAction.RECORD) if applied else GitAction.RECORD
    try:
        return ctx.git.commit(
            paths,
            format_subject(run.spec.service, summary),
            body,
            reconcile_trailers(run.spec.service, action, spec_commit),
        )
    except ReconcileError as exc:
        changed = " (traffic was changed; the next run records it)" if applied else ""
        raise ReconcileError(f"{run.spec.service}: the commit failed{changed}: {exc}") from None


# --- a run ----------------------------------------------------------------------------------------
def apply_all(
    ctx: Context,
    patterns: Sequence[str] = (),
    *,
    dry_run: bool = False,
    saved: Plan | None = None,
) -> RunResult:
    """Reconcile every selected service; one failing service never blocks the others."""
    pull_error: str | None = None
    if ctx.git is not None and not dry_run and ctx.push and ctx.git.has_remote():
        try:
            ctx.git.pull()
        except ReconcileError as exc:
            # Rollbacks must not wait for git: go on with the working tree as it is.
            pull_error = f"pull failed, reconciled the local working tree: {exc}"
            log.warning("%s", pull_error)
    if ctx.git is not None and not dry_run:
        dirty = ctx.git.uncommitted(ctx.repo / "rollout")
        if dirty:
            # Git is the desired state: applying an edit nobody committed would make live
            # traffic disagree with every commit.
            raise ReconcileError(
                f"{dirty[0]}: uncommitted change in rollout/; commit it first "
                "(or try it with --dry-run or --no-commit)"
            )
    if saved is not None:
        if not saved.services:
            return RunResult((), None, pull_error)  # an empty saved plan applies nothing
        patterns = saved_services(ctx.repo / "rollout", saved)
        refused = check_saved(ctx, saved, patterns)
        if refused:
            return RunResult(refused, None, pull_error)
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
    now = ctx.clock()
    windows, metric_errors = measure(ctx, [(s, lv) for _, s, lv in ok], now)
    saved_by = {s.service: s for s in saved.services} if saved else {}
    for path, spec, live in ok:
        if spec.service in saved_by:
            stale = _stale(saved_by[spec.service], live)
            if stale:
                outcomes.append(ServiceOutcome(spec.service, error=stale))
                continue
        try:
            outcome = reconcile_service(
                ctx,
                path,
                spec,
                live,
                [
                    w
                    for rev in (spec.revisions.canary, spec.revisions.stable)
                    if rev
                    for w in windows.get((spec.service, rev), [])
                ],
                metric_errors.get(spec.service),
                dry_run=dry_run,
                saved=saved_by.get(spec.service),
            )
        except (ReconcileError, PlanError) as exc:
            outcome = ServiceOutcome(spec.service, error=str(exc))
        outcomes.append(outcome)
    pushed: bool | None = None
    git_error = pull_error
    if (
        ctx.git is not None
        and ctx.push
        and not dry_run
        and (any(o.commit for o in outcomes) or ctx.git.unpushed())
    ):
        try:
            pushed = ctx.git.push()
        except ReconcileError as exc:
            git_error = f"push failed (commits kept locally, the next run retries): {exc}"
    return RunResult(tuple(sorted(outcomes, key=lambda o: o.service)), pushed, git_error)


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
    fresh = plan_all(ctx.repo, names, ctx.backend, ctx.clock(), max_workers=ctx.max_workers)
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
    if not saved.after.same_routing(fresh.after) or saved.reason is not fresh.reason:
        return (
            f"{saved.ref.name}: saved plan is stale (it would now do {fresh.reason.value}: "
            f"{fresh.after.describe()}); run plan again"
        )
    return None
