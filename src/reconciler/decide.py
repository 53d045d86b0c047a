"""One service's tick as a value: spec + status + live + new windows and probe runs -> Decision.

Pure: no I/O, no clock (`now` is an argument). Every safety rule of a tick is decided here
and table-tested: the traffic change and its reason (via `plan.plan_service`), the complete
rollout-file edit, the next status (stage, bake timer, failure streaks), the events and the
commit text. The loop only gathers the inputs, carries the Decision out and records it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Literal

from reconciler.analysis import (
    ProbeRun,
    count_streaks,
    gate_windows,
    held_reason,
    judge,
    promotion_blockers,
)
from reconciler.model import (
    CommitAction,
    Coverage,
    Event,
    EventKind,
    LiveService,
    Outcome,
    Phase,
    ProbeRecord,
    ServiceStatus,
    Streak,
    TrafficSplit,
    Verdict,
    WindowStats,
    keep_windows,
    stage_since,
)
from reconciler.plan import (
    History,
    Reason,
    ServicePlan,
    SpecEdit,
    coverage_note,
    is_rolled_back,
    plan_service,
    rollback_plan,
)
from reconciler.spec import (
    Channel,
    EnvValue,
    NoticeEvent,
    RolloutSpec,
    WebhookChannel,
    format_duration,
)
from reconciler.waves import RegionState, WaveStep, baked, hold_teller, region_state, step

_EVENT_KIND = {
    Reason.STAGE: EventKind.APPLIED,
    Reason.DRIFT: EventKind.DRIFT_CORRECTED,
    Reason.ROLLBACK: EventKind.ROLLED_BACK,
    Reason.ADVANCE: EventKind.ADVANCED,
    Reason.FINALIZE: EventKind.FINALIZED,
}
# The `Reconcile-Action` trailer of the commit that records each reason.
_ACTION = {
    Reason.STAGE: CommitAction.APPLY,
    Reason.DRIFT: CommitAction.DRIFT,
    Reason.ROLLBACK: CommitAction.ROLLBACK,
    Reason.ADVANCE: CommitAction.ADVANCE,
    Reason.FINALIZE: CommitAction.FINALIZE,
    Reason.NONE: CommitAction.RECORD,
}


@dataclass(frozen=True)
class Commit:
    """The text of the commit that records a tick: subject, body and trailers."""

    subject: str
    body: str
    trailers: Mapping[str, str]


@dataclass(frozen=True)
class ReportDue:
    """A stage report a tick writes and commits with its record (`reports:` of the rollout
    file): `kind` is the report's kind, `key` what `ServiceStatus.reported` keeps so it is
    written once, `closing` a final report due only if the tick's finalize or rollback is
    carried out."""

    kind: Literal["interim", "final"]
    key: str
    reason: str
    closing: bool = False


@dataclass(frozen=True)
class Decision:
    """Everything one tick of one service does, decided before anything is written.

    `status`/`done`/`commit` hold when the plan is carried out (traffic written, file edited);
    `held`/`held_commit` when it is not (nothing to do, blocked, or the write failed).
    `events` are recorded either way. The live fields of a status (traffic, etag,
    generation) are filled in by the executor from what Cloud Run reports after the write.
    """

    plan: ServicePlan
    status: ServiceStatus
    held: ServiceStatus
    events: tuple[Event, ...] = ()
    done: tuple[Event, ...] = ()
    commit: Commit = Commit("", "", {})
    held_commit: Commit = Commit("", "", {})
    added: tuple[WindowStats, ...] = ()
    """Windows that became final this tick (for the metrics files: each written once, with
    its final numbers)."""
    previous: ServiceStatus | None = None
    wave: WaveStep | None = None
    """What the wave rule allowed this region (a file with `waves:`), its hold included."""
    reports: tuple[ReportDue, ...] = ()
    """Stage reports due this tick: written with the record after the status (the closing
    ones only when the plan is carried out)."""
    notices: tuple[NoticeEvent, ...] = ()
    """Notice events this tick raises beyond what its outcome tells (`notices.event_of`):
    `wave_hold` when a rolled-back region newly holds a file with waves (see `hold_notice`)."""

    def reports_due(self, applied: bool) -> tuple[ReportDue, ...]:
        """The reports to write with the record of this tick, carried out or not."""
        return tuple(r for r in self.reports if applied or not r.closing)

    @property
    def service(self) -> str:
        return self.plan.service

    @property
    def verdict(self) -> Verdict | None:
        return self.plan.verdict

    @property
    def edit(self) -> SpecEdit | None:
        """The complete rollout-file edit (None: the file is left alone)."""
        return self.plan.edit

    @property
    def blocked(self) -> str | None:
        return self.plan.blocked

    @property
    def acts(self) -> bool:
        """True when carrying this out writes traffic or the rollout file."""
        return self.plan.has_changes

    @property
    def rollback(self) -> bool:
        """True for a rollback (later work orders these first across services)."""
        return self.acts and self.plan.reason is Reason.ROLLBACK

    @property
    def idle(self) -> bool:
        """Nothing new to record when held: state/ is left alone rather than committed."""
        return (
            self.previous is not None
            and replace(self.held, last_reconcile=self.previous.last_reconcile) == self.previous
            and not (self.events or self.added)
        )


# --- inputs that are configuration, not evidence --------------------------------------------
CATCHUP = 48
"""The most whole windows per gate length one run measures after late, missed or unrecorded
runs (`gather.spans`); older unjudged traffic is measured once as a gap. The run asks them
in one provider query per metric (one point per window: 48 points per series, far under
Cloud Monitoring's 100,000 points a page and its 6 weeks of retention), so 4 hours of
5-minute windows cost what one window costs."""
CHECKPOINT_MAX = timedelta(hours=3)
"""The longest a canarying service goes without a committed record when nothing is new:
news (a verdict or stage change, a rollback, an event) is recorded at once whatever this
is, so it bounds how stale a steady canary's status in git may be."""
SCHEDULE_MARGIN = timedelta(minutes=10)
"""Room for the scheduled run after a checkpoint falls due (twice the shipped `*/5`)."""


def checkpoint_interval(spec: RolloutSpec) -> timedelta:
    """How old a service's last record may grow before a run with nothing new writes one.

    A run that writes nothing leaves the last judged window where the last record put it,
    and the next run measures again from there (the provider is the source of truth), but
    at most `CATCHUP` windows of the shortest gate length; older traffic becomes a gap that
    lowers coverage. So a record is due before that horizon, less a schedule interval:
    min(3h, 48 x shortest window - 10 min), never below the shortest window (5-minute gates:
    3 hours; 1-minute gates: 38 minutes).
    """
    lengths = gate_windows(spec.gates)
    if not lengths:
        return CHECKPOINT_MAX
    shortest = lengths[0]
    return max(shortest, min(CHECKPOINT_MAX, CATCHUP * shortest - SCHEDULE_MARGIN))


def _kinds(verdict: Verdict | None) -> tuple[object, ...] | None:
    """A verdict's outcome and its gates' outcomes: what a checkpoint treats as news."""
    if verdict is None:
        return None
    return (verdict.outcome, tuple((g.gate, g.outcome) for g in verdict.gates))


def news(previous: ServiceStatus | None, status: ServiceStatus) -> bool:
    """Whether `status` says something the last record `previous` does not, beyond the
    steady progress of a canary (newer windows and probe runs, the same verdict judged again,
    the streaks' newest counted window, coverage growing without a gap): a first
    observation, a changed stage, traffic, spec, verdict or gate outcome, streak count,
    hold, bake start, report, or unjudged traffic (a gap)."""
    if previous is None:
        return True
    if _kinds(previous.verdict) != _kinds(status.verdict):
        return True
    if _counts(previous.streaks) != _counts(status.streaks):
        return True
    unjudged = status.coverage.served - status.coverage.judged
    if unjudged != previous.coverage.served - previous.coverage.judged:
        return True
    steady = replace(
        status,
        last_reconcile=previous.last_reconcile,
        verdict=previous.verdict,
        verdict_at=previous.verdict_at,
        windows=previous.windows,
        probes=previous.probes,
        streaks=previous.streaks,
        coverage=previous.coverage,
    )
    return steady != previous


def _counts(streaks: Mapping[str, Streak]) -> dict[str, tuple[int, int]]:
    """The streaks' counts without the newest window each counted (which moves every run)."""
    return {
        k: (s.failures, s.inconclusive) for k, s in streaks.items() if s.failures or s.inconclusive
    }


def record_due(
    previous: ServiceStatus | None,
    status: ServiceStatus,
    *,
    now: datetime,
    interval: timedelta,
    news_elsewhere: bool = False,
) -> bool:
    """Whether a run writes (and commits) a service's record: when it has news for it
    (`news`, or `news_elsewhere`: events, an edit, a traffic write, a report) or when the
    last record is at least `interval` old (a checkpoint, see `checkpoint_interval`).
    Otherwise the run writes nothing for it and the next run judges the same traffic again
    from the last record."""
    if news_elsewhere or news(previous, status):
        return True
    assert previous is not None
    return now - previous.last_reconcile >= interval


def env_needs(spec: RolloutSpec) -> list[tuple[str, str, str]]:
    """(check, header, variable) for every `{env: NAME}` the rollout file's checks read."""
    return [
        (check.name, header, value.env)
        for check in (*spec.probes, *spec.dependencies)
        for header, value in check.headers.items()
        if isinstance(value, EnvValue)
    ]


def channel_env(channels: Sequence[Channel]) -> list[tuple[str, str]]:
    """(what reads it, variable) for every environment variable `notify:` channels name: each
    channel's URL and a signed webhook's HMAC key (`validate --env` lists the unset ones; an
    unset one only skips its channel, so it never blocks the service)."""
    out: list[tuple[str, str]] = []
    for channel in channels:
        out.append((f"notify {channel.kind}: url", channel.url.env))
        if isinstance(channel, WebhookChannel):
            out.append((f"notify {channel.kind}: secret", channel.secret.env))
    return out


def missing_env(spec: RolloutSpec, environ: Mapping[str, str]) -> list[str]:
    """One line per variable the rollout file needs that `environ` lacks (or has empty)."""
    return [
        f"{check}: header {header} reads environment variable {var}, which is not set"
        for check, header, var in env_needs(spec)
        if not environ.get(var)
    ]


# --- the tick --------------------------------------------------------------------------------
def decide(
    spec: RolloutSpec,
    status: ServiceStatus | None,
    live: LiveService,
    *,
    now: datetime,
    windows: Iterable[WindowStats] = (),
    probe_runs: Sequence[ProbeRecord] = (),
    metrics_error: str | None = None,
    config_errors: Sequence[str] = (),
    spec_id: str | None = None,
    actor: str = "reconciler",
    window_keep: int = 12,
    check_revisions: bool = True,
    regions: Mapping[str, ServiceStatus | None] | None = None,
    unrecorded_write: datetime | None = None,
) -> Decision:
    """Decide one service's tick. Raises PlanError when the spec names a missing revision.

    `windows` and `probe_runs` are what this tick measured; `config_errors` are problems of
    the rollout file or the environment (an unset variable, a bad URL template): they block
    the service and never count against the canary. In a file with `waves:` (`spec` is one
    region's, see `waves.expand`), `regions` holds every other region's status by region,
    for the wave rule. `unrecorded_write`: when the write that made the live split was made,
    if `status` does not record it (a stamp `execute.recover` found): a stage it made began
    then, so the canary is judged on what it served since.
    """
    canary = spec.revisions.canary
    live_pct = live.traffic.percent_of(canary) if canary else 0
    j = _judged(
        spec,
        status,
        live_pct,
        now,
        windows,
        probe_runs,
        metrics_error,
        window_keep,
        began=unrecorded_write,
    )
    history = History(
        last_applied=status.applied if status else None,
        passing_since=j.passing_since,
        stage_percent=live_pct if j.passing_since else None,
    )
    verdict = j.verdict
    wave = _wave(spec, live_pct, j.passing_since, regions or {}, now)
    sp = plan_service(
        spec if wave is None else spec.model_copy(update={"canary_percent": wave.percent}),
        live,
        now=now,
        verdict=verdict,
        history=history,
        check_revisions=check_revisions,
        may_advance=wave is None or wave.may_advance,
        may_finalize=wave is None or wave.may_finalize,
    )
    if wave is not None:
        sp = replace(
            sp,
            wave=wave.wave,
            waves=wave.waves,
            hold=wave.hold,
            warnings=(*sp.warnings, *([wave.hold] if wave.hold else [])),
            notes=(*sp.notes, *([f"wave {wave.wave}: {wave.waiting}"] if wave.waiting else [])),
        )
    if metrics_error:
        sp = replace(sp, warnings=(*sp.warnings, f"metrics: {metrics_error}"))
    sp = paused_plan(spec, sp)
    if j.held:
        sp = replace(sp, warnings=(*sp.warnings, j.held), held=j.held)
    if verdict is not None and j.coverage.served:
        sp = replace(
            sp,
            notes=(*sp.notes, coverage_note(j.coverage)),
            coverage=j.coverage,
        )
    sp = replace(
        sp, blocked=sp.blocked or _hold(spec, status, live, sp, config_errors), spec_id=spec_id
    )
    events = tuple(
        Event(now, EventKind.PROBE_FAILED, actor, reason=p.reason, spec_id=spec_id)
        for p in probe_runs
        if not p.ok
    )
    base = ServiceStatus(
        service=spec.service,
        phase=sp.phase if not sp.changes or status is None else status.phase,
        stable_revision=spec.revisions.stable,
        canary_revision=canary,
        stage=live_pct,
        stage_since=j.since,
        traffic=live.traffic,
        etag=live.etag,
        generation=live.generation,
        observed_generation=live.observed_generation,
        last_reconcile=now,
        spec_id=spec_id,
        verdict=verdict if verdict is not None else (status.verdict if status else None),
        verdict_at=now if verdict is not None else (status.verdict_at if status else None),
        windows=j.windows,
        applied=_held_applied(status, sp, live),
        passing_since=j.passing_since,
        probes=j.probes,
        streaks=j.streaks,
        coverage=j.coverage,
    )
    prior = _reported(status, canary)
    due = reports_due(spec, prior, sp, live_pct, j.since, now)
    base = replace(base, reported=_with_reports(prior, due, now, closing=False))
    return Decision(
        plan=sp,
        status=replace(
            carried_out(base, sp, status, now),
            reported=_with_reports(prior, due, now, closing=True),
        ),
        held=base,
        events=events,
        done=(action_event(sp, now, actor, spec_id),),
        commit=_with_report_lines(commit_for(sp, spec_id), due),
        held_commit=_with_report_lines(
            Commit(
                f"reconcile({spec.service}): observed state",
                _verdict_body(verdict),
                _trailers(spec.service, CommitAction.RECORD, spec_id),
            ),
            tuple(r for r in due if not r.closing),
        ),
        added=j.added,
        previous=status,
        wave=wave,
        reports=due,
        notices=hold_notice(spec, wave, status, spec_id),
    )


def hold_notice(
    spec: RolloutSpec, wave: WaveStep | None, status: ServiceStatus | None, spec_id: str | None
) -> tuple[NoticeEvent, ...]:
    """`("wave_hold",)` when this region tells of its file's hold now, else `()`.

    One region tells it (`waves.hold_teller`), and, like a `block` notice, once per version
    of the rollout file: a region's rollback writes its entry into the file, so the first
    tick holding under that version (its last record names an older one, or none) tells it,
    and the ticks after it, which recorded that version, stay quiet. A second region rolled
    back, or a retry and a new failure, is a new version and is told again.
    """
    if wave is None or wave.hold is None or hold_teller(spec) != spec.region:
        return ()
    if status is not None and status.spec_id == spec_id:
        return ()
    return ("wave_hold",)


def _wave(
    spec: RolloutSpec,
    live_pct: int,
    passing_since: datetime | None,
    regions: Mapping[str, ServiceStatus | None],
    now: datetime,
) -> WaveStep | None:
    """The wave rule's step for this region: its own state from this tick's judgement, the
    others' from their statuses (None without waves)."""
    if spec.waves is None:
        return None
    states = {
        region: region_state(spec, region, status, now)
        for region, status in regions.items()
        if region != spec.region
    }
    own = region_state(spec, spec.region, None, now)
    states[spec.region] = RegionState(
        stage=live_pct,
        baked=baked(spec, live_pct, passing_since, now),
        rolled_back=own.rolled_back,
    )
    return step(spec, spec.region, states)


# --- scheduled reports -----------------------------------------------------------------------
def _reported(status: ServiceStatus | None, canary: str | None) -> Mapping[str, datetime]:
    """The reports already written for this canary (a new canary starts afresh)."""
    if status is None or status.canary_revision != canary:
        return {}
    return status.reported


def reports_due(
    spec: RolloutSpec,
    reported: Mapping[str, datetime],
    sp: ServicePlan,
    live_pct: int,
    since: datetime,
    now: datetime,
) -> tuple[ReportDue, ...]:
    """The stage reports of `spec.reports` this tick writes, each once per canary:

    - `interim@N` once stage N has been live `reports.interim` (not when its go/no-go
      report is due at the same tick: that one covers it);
    - `final@N`, the stage's go/no-go, once it has been live `reports.final`;
    - `final`, the closing report, when this tick finalizes or rolls the canary back.
    """
    due: list[ReportDue] = []
    if (
        spec.revisions.canary is not None
        and live_pct > 0
        and not is_rolled_back(spec)
        and sp.reason is not Reason.ROLLBACK
    ):
        live_for = now - since
        wanted = [
            (kind, length)
            for kind, length in (("final", spec.reports.final), ("interim", spec.reports.interim))
            if length is not None and live_for >= length
        ][:1]  # the go/no-go report, when due, stands for the interim one too
        for kind, length in wanted:
            key = f"{kind}@{live_pct}"
            if key not in reported and not (kind == "interim" and f"final@{live_pct}" in reported):
                word = "go/no-go" if kind == "final" else "interim"
                due.append(
                    ReportDue(
                        "final" if kind == "final" else "interim",
                        key,
                        f"{word} report: {live_pct}% live for {format_duration(length)}",
                    )
                )
    closes = sp.has_changes and sp.reason in (Reason.FINALIZE, Reason.ROLLBACK)
    if closes and "final" not in reported:
        what = "finalized" if sp.reason is Reason.FINALIZE else "rolled back"
        due.append(ReportDue("final", "final", f"final report: the rollout {what}", True))
    return tuple(due)


def _with_reports(
    reported: Mapping[str, datetime], due: Sequence[ReportDue], now: datetime, *, closing: bool
) -> dict[str, datetime]:
    return {**reported, **{r.key: now for r in due if closing or not r.closing}}


def _with_report_lines(commit: Commit, due: Sequence[ReportDue]) -> Commit:
    if not due:
        return commit
    lines = "\n".join(f"Report: {r.reason}" for r in due)
    return replace(commit, body=f"{commit.body}\n\n{lines}" if commit.body else lines)


@dataclass(frozen=True)
class _Judgement:
    """What a tick measured and concluded about the canary at its current stage."""

    since: datetime
    windows: tuple[WindowStats, ...]
    added: tuple[WindowStats, ...]
    probes: tuple[ProbeRecord, ...]
    streaks: Mapping[str, Streak]
    verdict: Verdict | None
    passing_since: datetime | None
    coverage: Coverage
    held: str | None


def _judged(
    spec: RolloutSpec,
    status: ServiceStatus | None,
    live_pct: int,
    now: datetime,
    windows: Iterable[WindowStats],
    probe_runs: Sequence[ProbeRecord],
    metrics_error: str | None,
    window_keep: int,
    *,
    began: datetime | None = None,
) -> _Judgement:
    """Keep the new windows and probe runs, count streaks, judge, run the bake timer.

    Whole windows are kept (a provisional one replaced when measured again); the stored
    streak counters and the coverage advance over final windows only, each counted once;
    provisional windows count on top of the stored streaks for this tick's verdict; partial
    spans are failing evidence for this verdict only; gaps only count as served traffic.
    """
    canary = spec.revisions.canary
    # A new stage began now, or when the write not yet recorded made it (`began`).
    since = stage_since(status, canary=canary, stage=live_pct, now=min(began or now, now))
    new = tuple(windows)
    kept, added = merge_windows(status.windows if status else (), new, window_keep)
    configured = {p.name for p in spec.probes}
    probes = ((*status.probes, *probe_runs) if status else tuple(probe_runs))[
        -window_keep * max(1, len(spec.probes)) :
    ]
    current = [w for w in kept if w.start >= since]
    same_stage = status is not None and status.stage_since == since
    stage_probes = [p for p in probes if p.at >= since and p.name in configured]
    stable_rev = spec.revisions.stable
    # Every window that became final is counted, also one of a long catch-up older than
    # the newest `window_keep` the verdict looks at: none goes uncounted.
    final = list(
        {
            (w.revision, w.start, w.end): w
            for w in (*(w for w in added if w.start >= since), *current)
            if not w.provisional
        }.values()
    )
    streaks = count_streaks(
        status.streaks if status is not None and same_stage else {},
        [w for w in final if w.revision == canary],
        spec.gates,
        stable=[w for w in final if w.revision == stable_rev],
        probes=stage_probes,
    )
    # Provisional windows weigh on this verdict with their current numbers, on top of the
    # stored counts, and are counted for good only once final (never twice).
    seen = {
        **streaks,
        **count_streaks(
            streaks,
            [w for w in current if w.revision == canary],
            spec.gates,
            stable=[w for w in current if w.revision == stable_rev],
        ),
    }
    coverage = _covered(
        status.coverage if status is not None and same_stage else Coverage(),
        [w for w in added if w.revision == canary and w.start >= since],
        [w for w in new if w.span == "gap" and w.revision == canary and w.start >= since],
        sum(p.synthetic for p in probe_runs),
    )
    partial = [w for w in new if w.span == "partial" and w.start >= since]
    verdict: Verdict | None = None
    if canary is not None and live_pct > 0 and not is_rolled_back(spec):
        verdict = _judge(spec, [*current, *partial], probes, since, seen)
        if metrics_error and verdict.outcome is not Outcome.FAIL:
            verdict = Verdict(Outcome.INCONCLUSIVE, verdict.gates)
    passing_since: datetime | None = None
    if verdict is not None and not promotion_blockers(verdict):
        # The bake timer: since when the canary has been ready to promote, at this stage.
        passing_since = (status.passing_since if status and same_stage else None) or now
    held = held_reason(spec.gates, seen) if verdict is not None else None
    if held is not None:
        passing_since = None  # HELD: never promoted, so the bake does not run either
    return _Judgement(since, kept, added, probes, streaks, verdict, passing_since, coverage, held)


def _covered(
    previous: Coverage,
    judged: Sequence[WindowStats],
    gaps: Sequence[WindowStats],
    synthetic: int = 0,
) -> Coverage:
    """The stage's coverage after this tick: newly final windows were judged and served;
    gaps (spans a capped catch-up skipped) were served only; `synthetic` requests the probes'
    `repeat:` sent this tick are counted apart (the metrics count them when measured)."""
    ok = sum(w.requests for w in judged)
    return Coverage(
        previous.judged + ok,
        previous.served + ok + sum(w.requests for w in gaps),
        previous.synthetic + synthetic,
    )


def decide_rollback(
    spec: RolloutSpec,
    status: ServiceStatus | None,
    live: LiveService,
    *,
    now: datetime,
    reason: str,
    spec_id: str | None = None,
    actor: str = "reconciler",
    region_only: bool = False,
) -> Decision:
    """`reconcile rollback`: 100% to stable at once and the sticky block, as one Decision
    (with `region_only`, of one region of a file with waves: see `plan.rollback_plan`)."""
    sp = rollback_plan(spec, live, now=now, reason=reason, region_only=region_only)
    if is_rolled_back(spec) and (spec.canary_percent == 0 or region_only):
        sp = replace(sp, edit=None)  # the block is in git already: only traffic is left
    base = ServiceStatus(
        service=spec.service,
        phase=Phase.ROLLED_BACK,
        stable_revision=spec.revisions.stable,
        canary_revision=spec.revisions.canary,
        stage=0,
        stage_since=now,
        traffic=live.traffic,
        etag=live.etag,
        generation=live.generation,
        observed_generation=live.observed_generation,
        last_reconcile=now,
        spec_id=spec_id,
        verdict=status.verdict if status else None,
        verdict_at=status.verdict_at if status else None,
        windows=status.windows if status else (),
        applied=sp.after,
        probes=status.probes if status else (),
    )
    event = Event(
        now,
        EventKind.ROLLED_BACK,
        actor,
        before=sp.before.describe(),
        after=sp.after.describe(),
        reason=reason,
        spec_id=spec_id,
        details={"manual": True},
    )
    # The closing report comes with a rollback by hand as with the loop's own.
    prior = _reported(status, spec.revisions.canary)
    due = reports_due(spec, prior, sp, 0, now, now) if "final" not in prior else ()
    base = replace(base, reported=prior)
    return Decision(
        plan=sp,
        status=replace(
            carried_out(base, sp, status, now),
            reported=_with_reports(prior, due, now, closing=True),
        ),
        held=base,
        done=(event,),
        commit=_with_report_lines(commit_for(sp, spec_id), due),
        held_commit=commit_for(sp, spec_id),
        previous=status,
        reports=due,
    )


def paused_plan(spec: RolloutSpec, sp: ServicePlan) -> ServicePlan:
    """`paused: true` holds traffic where it is: no new stage, advance, finalize or drift
    correction is made (a note says which), but a rollback always goes through."""
    if not spec.paused or sp.reason is Reason.ROLLBACK:
        return sp
    held = sp.reason.value if (sp.changes or sp.edit is not None or sp.drift) else ""
    note = "paused: traffic held at " + sp.before.describe()
    if held:
        note += f" ({held} not made)"
    held_plan = _held(sp, note + "; reconcile resume to continue")
    return replace(held_plan, phase=Phase.PAUSED, blocked=None)


def left_alone_plan(sp: ServicePlan, why: str) -> ServicePlan:
    """The plan of a service a run leaves alone because live traffic shows a young write
    state/ does not record yet (`execute.Unrecorded.young`): traffic held where it is, no
    edit, `why` as a note. Never applied to a rollback, which always goes through."""
    return _held(sp, why)


def _held(sp: ServicePlan, note: str) -> ServicePlan:
    """`sp` with traffic held where it is: no change, edit or drift correction; `note` said."""
    return replace(
        sp,
        after=sp.before,
        changes=(),
        edit=None,
        reason=Reason.NONE,
        drift=False,
        notes=(*sp.notes, note),
    )


# --- the rules the planner cannot see (they need state/ or the environment) -----------------
def _hold(
    spec: RolloutSpec,
    status: ServiceStatus | None,
    live: LiveService,
    sp: ServicePlan,
    config_errors: Sequence[str],
) -> str | None:
    """Why nothing but a rollback may happen now (None: the plan stands)."""
    if sp.reason is Reason.ROLLBACK:
        return None  # a rollback is never held back
    if config_errors:
        return "configuration: " + "; ".join(config_errors)
    requested = live.requested if live.requested is not None else live.traffic
    if live.failure:
        return f"the last traffic change failed: {live.failure}"
    if not requested.same_routing(live.traffic):
        return (
            f"requested split {requested.describe()} is not serving "
            f"(serving {live.traffic.describe()}): a failed rollout, not in sync"
        )
    canary = spec.revisions.canary
    if (
        sp.reason is Reason.DRIFT
        and canary is not None
        and sp.after.percent_of(canary) > 0
        and (
            (spec.rolled_back is not None and spec.rolled_back.revision == canary)
            or (
                status is not None
                and status.phase is Phase.ROLLED_BACK
                and status.canary_revision == canary
            )
        )
    ):
        return (
            f"drift correction would route traffic to {canary}, which was rolled back; "
            "name a new canary or remove the rolled_back block"
        )
    return None


def _judge(
    spec: RolloutSpec,
    current: Sequence[WindowStats],
    probes: Sequence[ProbeRecord],
    since: datetime,
    streaks: Mapping[str, Streak],
) -> Verdict:
    configured = {p.name for p in spec.probes}
    canary = [w for w in current if w.revision == spec.revisions.canary]
    return judge(
        [w for w in canary if w.span == "window"],
        spec.gates,
        partial=[w for w in canary if w.span == "partial"],
        stable=[w for w in current if w.revision == spec.revisions.stable],
        probes=[
            ProbeRun(p.name, p.ok, p.reason)
            for p in probes
            if p.at >= since and p.name in configured
        ],
        expected_probes=sorted(configured),
        streaks={gate: k.failures for gate, k in streaks.items()},
    )


def _held_applied(
    status: ServiceStatus | None, sp: ServicePlan, live: LiveService
) -> TrafficSplit | None:
    if status is not None and status.applied is not None:
        return status.applied
    if not sp.changes and not sp.drift:
        return live.traffic  # in sync on a first run: that is what git wants
    return None


def carried_out(
    base: ServiceStatus, sp: ServicePlan, status: ServiceStatus | None, now: datetime
) -> ServiceStatus:
    """The status once `sp` is carried out: its split, its edit, a new stage's timers."""
    values = sp.edit.values if sp.edit is not None else {}
    stable = str(values.get("revisions.stable", base.stable_revision))
    canary = None if "revisions.canary" in values else base.canary_revision
    stage = sp.after.percent_of(canary) if canary else 0
    since = stage_since(status, canary=canary, stage=stage, now=now)
    new_stage = since != base.stage_since
    return replace(
        base,
        phase=sp.phase,
        stable_revision=stable,
        canary_revision=canary,
        stage=stage,
        stage_since=since,
        traffic=sp.after,
        applied=sp.after,
        passing_since=None,
        streaks={} if new_stage else base.streaks,
    )


def action_event(sp: ServicePlan, now: datetime, actor: str, spec_id: str | None) -> Event:
    """The event recording that `sp` was carried out."""
    return Event(
        time=now,
        kind=_EVENT_KIND.get(sp.reason, EventKind.APPLIED),
        actor=actor,
        before=sp.before.describe(),
        after=sp.after.describe(),
        reason=sp.edit.summary if sp.edit is not None else sp.reason.value,
        spec_id=spec_id,
        details=_verdict_details(sp.verdict),
    )


def commit_for(sp: ServicePlan, spec_id: str | None) -> Commit:
    """The commit recording that `sp` was carried out."""
    canary = sp.canary
    before = sp.before.percent_of(canary) if canary else 0
    after = sp.after.percent_of(canary) if canary else 0
    change = f"canary {before}% -> {after}%" + (f" ({canary})" if canary else "")
    summary = {
        Reason.ROLLBACK: f"rollback {change}",
        Reason.FINALIZE: f"finalize: {canary} is the stable revision",
        Reason.DRIFT: f"drift corrected, {change}",
        Reason.ADVANCE: f"advance {change}",
    }.get(sp.reason, change)
    body = "\n\n".join(
        part
        for part in (sp.edit.summary if sp.edit is not None else "", _verdict_body(sp.verdict))
        if part
    )
    return Commit(
        f"reconcile({sp.service}): {summary}",
        body,
        _trailers(sp.service, _ACTION[sp.reason], spec_id),
    )


def merge_windows(
    old: Sequence[WindowStats], new: Iterable[WindowStats], keep: int
) -> tuple[tuple[WindowStats, ...], tuple[WindowStats, ...]]:
    """Add the new whole windows that do not overlap a kept window of the same revision and
    length; a window measured again replaces its kept provisional numbers.

    Returns (all kept windows, the windows that became final: new final windows and
    provisional ones measured final). Runs more frequent than the window would otherwise
    count one burst of errors twice.
    """
    by_key = {(o.revision, o.start, o.end): o for o in old}
    added: list[WindowStats] = []
    for w in new:
        if w.span != "window":
            continue
        prior = by_key.get((w.revision, w.start, w.end))
        if prior is not None:
            if prior.provisional:
                added.append(w)  # keep_windows lets the later measurement win
            continue
        same = [o for o in (*old, *added) if o.revision == w.revision and o.window == w.window]
        if any(w.start < o.end for o in same):
            continue
        added.append(w)
    final = tuple(w for w in added if not w.provisional)
    return keep_windows(old, added, keep=keep), final


def _trailers(service: str, action: CommitAction, spec_id: str | None) -> dict[str, str]:
    out = {"Reconcile-Service": service, "Reconcile-Action": action.value}
    if spec_id:
        out["Reconcile-Spec"] = spec_id
    return out


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


def _verdict_body(verdict: Verdict | None) -> str:
    if verdict is None:
        return ""
    lines = [f"Verdict: {verdict.outcome.value}"]
    for g in verdict.gates:
        lines.append(f"- {g.gate}: {g.outcome.value} - {g.reason}")
    return "\n".join(lines)


__all__ = [
    "Commit",
    "Decision",
    "ReportDue",
    "action_event",
    "carried_out",
    "channel_env",
    "commit_for",
    "decide",
    "decide_rollback",
    "env_needs",
    "hold_notice",
    "left_alone_plan",
    "merge_windows",
    "missing_env",
    "paused_plan",
    "reports_due",
]
