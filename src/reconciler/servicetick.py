"""One service's tick within a run: gather what only it needs (state/, a late record,
probes), decide, carry the decision out and write its record for the run's commit."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from reconciler import state as st
from reconciler.decide import Decision, decide, left_alone_plan, missing_env
from reconciler.errors import ReconcileError
from reconciler.execute import (
    Context,
    ServiceRun,
    carry_out,
    left_alone,
    recover,
    write_record,
)
from reconciler.gather import probe, ref_of, region_statuses
from reconciler.loader import spec_id_of
from reconciler.model import LiveService
from reconciler.model import WindowStats as Window
from reconciler.outcome import ServiceOutcome
from reconciler.recording import Book
from reconciler.spec import RolloutSpec

log = logging.getLogger(__name__)


@dataclass
class Tick:
    """One service decided (and not yet carried out): what the run acts on."""

    run: ServiceRun
    decision: Decision
    redecide: Callable[[LiveService], Decision]
    text: bytes
    """The rollout file's bytes when decided: a sync that changes them makes it stale."""


def prepare(
    ctx: Context,
    path: Path,
    spec: RolloutSpec,
    live: LiveService,
    new_windows: Sequence[Window],
    metrics_error: str | None,
    *,
    dry_run: bool = False,
    probe_deadline: float | None = None,
    loaded: st.StatusLoad | None = None,
) -> Tick:
    """Gather what only this service needs (state/ unless `loaded` is the run's read of it,
    a late record, probes) and decide."""
    now = ctx.clock()
    # A corrupt status file must not stop this service's rollback: what parses is kept, the
    # rest is rebuilt from live traffic and git, and an event says what was dropped.
    if loaded is None:
        loaded = st.load_status(ctx.state_root, ref_of(spec))
    status = loaded.status
    spec_id = spec_id_of(path)
    run = ServiceRun(path, spec, live, now)
    rebuilt = loaded.event(now, ctx.actor)
    if rebuilt is not None:
        log.warning("%s: %s", spec.service, rebuilt.reason)
        run.events.append(rebuilt)
    recover(ctx, run, spec_id, dry_run=dry_run)
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
            unrecorded_write=run.unrecorded_at,
        )

    d = redecide(live)
    if not in_budget and spec.probes and d.acts and not d.rollback:
        # No probe ran: that is no evidence for moving traffic forward.
        d = replace(d, plan=replace(d.plan, blocked="probes skipped: the run's budget ran out"))
    return Tick(run, d, redecide, path.read_bytes())


def leave_alone(ctx: Context, t: Tick) -> ServiceOutcome | None:
    """The outcome of a service left alone for a young write its writer may still be
    recording (`execute.left_alone`): nothing written, nothing recorded. None when the tick
    goes on: no such write, or a rollback (to the stable revision, always safe)."""
    d = t.decision
    if d.rollback:
        return None
    why = left_alone(ctx, t.run)
    if why is None:
        return None
    plan = left_alone_plan(d.plan, why)
    return ServiceOutcome(d.service, plan=plan, verdict=d.verdict, left_alone=why)


def carry_and_record(
    ctx: Context,
    book: Book,
    run: ServiceRun,
    d: Decision,
    redecide: Callable[[LiveService], Decision],
) -> ServiceOutcome:
    """Carry a decision out and write its record for the run's next commit."""
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
    book.add(write_record(ctx, run, d, applied))
    rolled_back = applied and d.rollback and run.unconfirmed is None
    return ServiceOutcome(
        d.service,
        plan=d.plan,
        applied=applied,
        rolled_back=rolled_back,
        error=error,
        events=(*run.events, *d.events, *(d.done if applied else ())),
        verdict=d.verdict,
        rollback_failed=d.rollback and not rolled_back,
        notices=d.notices,
    )
