"""Value types shared by the pure core and the edges: traffic, live services, stats, verdicts,
and the observed state of a service (status, failure streaks, events) that state/ stores.

Pure: no I/O, no clock, no network. Everything here is immutable.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal


@dataclass(frozen=True, order=True)
class ServiceRef:
    """A Cloud Run service by its coordinates."""

    project: str
    region: str
    service: str

    @property
    def name(self) -> str:
        """The full resource name used by the Cloud Run Admin API v2."""
        return f"projects/{self.project}/locations/{self.region}/services/{self.service}"

    @property
    def key(self) -> str:
        """One string identity for a rollout: `project/region/service`.

        Used wherever a rollout needs a string key (maps, logs, commit trailers, state paths),
        so the same service id in two regions or projects stays two rollouts.
        """
        return f"{self.project}/{self.region}/{self.service}"


def labels(refs: Iterable[ServiceRef]) -> dict[ServiceRef, str]:
    """How output names each of `refs` (the rollouts one run, plan or commit holds): the
    service id alone when no other ref shares it (the common case, so output stays short);
    `service (region)` when the id repeats in several regions of one project; the full
    `project/region/service` when it repeats across projects."""
    by_id: dict[str, set[ServiceRef]] = {}
    for ref in refs:
        by_id.setdefault(ref.service, set()).add(ref)
    out: dict[ServiceRef, str] = {}
    for service, group in by_id.items():
        projects = {r.project for r in group}
        for r in group:
            if len(group) == 1:
                out[r] = service
            elif len(projects) == 1:
                out[r] = f"{service} ({r.region})"
            else:
                out[r] = r.key
    return out


@dataclass(frozen=True, order=True)
class Target:
    """One traffic target: a pinned revision, its percent and an optional tag."""

    revision: str
    percent: int
    tag: str = ""


@dataclass(frozen=True)
class TrafficSplit:
    """A traffic split over pinned revisions, kept in a canonical order.

    Targets with the same revision are not merged: Cloud Run allows a 0% tagged target
    beside a percent-carrying one; `percents()` sums per revision.
    """

    targets: tuple[Target, ...] = ()

    @classmethod
    def of(cls, targets: Iterable[Target]) -> TrafficSplit:
        """Build a split in canonical order (by revision, then tag)."""
        return cls(tuple(sorted(targets, key=lambda t: (t.revision, t.tag, t.percent))))

    def percents(self) -> dict[str, int]:
        """Percent per revision (revisions with 0% included when they carry a tag)."""
        out: dict[str, int] = {}
        for t in self.targets:
            out[t.revision] = out.get(t.revision, 0) + t.percent
        return out

    def tags(self) -> dict[str, str]:
        """Tag -> revision."""
        return {t.tag: t.revision for t in self.targets if t.tag}

    def total(self) -> int:
        """Sum of all percents (100 for a valid split)."""
        return sum(t.percent for t in self.targets)

    def same_routing(self, other: TrafficSplit) -> bool:
        """True when both route the same percents to the same revisions with the same tags."""
        return _routing_key(self) == _routing_key(other)

    def percent_of(self, revision: str) -> int:
        """Percent routed to `revision` (0 if absent)."""
        return self.percents().get(revision, 0)

    def describe(self) -> str:
        """Short human form, e.g. `ion-api-00041-abc=95 ion-api-00042-xyz=5`."""
        if not self.targets:
            return "(none)"
        return " ".join(
            f"{t.revision}={t.percent}" + (f"[{t.tag}]" if t.tag else "") for t in self.targets
        )


def _routing_key(
    split: TrafficSplit,
) -> tuple[tuple[tuple[str, int], ...], frozenset[tuple[str, str]]]:
    pct = tuple(sorted((r, p) for r, p in split.percents().items() if p > 0))
    return pct, frozenset(split.tags().items())


@dataclass(frozen=True)
class LiveService:
    """What Cloud Run says a service is right now: what serves, and what was asked for."""

    ref: ServiceRef
    traffic: TrafficSplit
    """The split that SERVES (`Service.traffic_statuses`): what plans and records rest on."""
    statuses: TrafficSplit
    """Also the serving split (`traffic_statuses`), kept for older callers."""
    etag: str
    generation: int
    observed_generation: int
    uri: str = ""
    tag_uris: Mapping[str, str] = field(default_factory=dict)
    revisions: frozenset[str] = frozenset()
    """Names of the revisions that exist for this service."""
    latest_ready_revision: str = ""
    reconciling: bool = False
    """True while Cloud Run is still working towards the requested split."""
    annotations: Mapping[str, str] = field(default_factory=dict)
    """Service annotations; the reconciler stamps its last write here (see reconcile.py)."""
    requested: TrafficSplit = TrafficSplit()
    """The requested split (`Service.traffic`); defaults to `traffic` (an empty split is never
    a real request: Cloud Run always has one)."""
    failure: str | None = None
    """The `terminal_condition` message when that condition failed, else None."""

    def __post_init__(self) -> None:
        # Older callers pass `requested=None` for "same as what serves".
        if not isinstance(self.requested, TrafficSplit) or not self.requested.targets:
            object.__setattr__(self, "requested", self.traffic)

    @property
    def serving_requested(self) -> bool:
        """True when what serves is what was asked for and nothing is failed or pending."""
        return (
            self.failure is None
            and not self.reconciling
            and self.requested.same_routing(self.traffic)
        )

    def url_for_tag(self, tag: str) -> str | None:
        """The URL of a tagged target, if Cloud Run reported one."""
        return self.tag_uris.get(tag)


class Outcome(enum.Enum):
    """Three verdicts, as in every serious canary analysis."""

    PASS = "PASS"
    FAIL = "FAIL"
    INCONCLUSIVE = "INCONCLUSIVE"


@dataclass(frozen=True)
class LatencyBucket:
    """One bucket of a latency distribution: `count` latencies in [lower, upper) seconds.

    `upper` is None for the overflow bucket, which has no upper bound.
    """

    lower: float
    upper: float | None
    count: int


SpanKind = Literal["window", "partial", "gap"]
"""What a measured span is to the judge (see `WindowStats.span`)."""


@dataclass(frozen=True)
class WindowStats:
    """Measured traffic of one revision over one window.

    `errors` counts 5xx responses; `successes` counts 2xx responses; latencies are in seconds
    and None when there was nothing to measure.
    """

    service: str
    revision: str
    start: datetime
    end: datetime
    requests: int
    errors: int
    successes: int
    p50: float | None = None
    p95: float | None = None
    p99: float | None = None
    latency_buckets: tuple[LatencyBucket, ...] | None = None
    """The non-empty buckets of the latency distribution, ascending; None when the provider
    gave no distribution. Percentiles over several windows are computed by merging these:
    per-window percentiles cannot be averaged."""
    span: SpanKind = "window"
    """`window`: a whole gate window. `partial`: the span since the last judged point, shorter
    than a window: failing evidence only (fail fast), never kept or counted. `gap`: traffic a
    capped catch-up could not judge, measured once for coverage only."""
    provisional: bool = False
    """Newer than the ingestion horizon (lag + sample period): late points may still arrive,
    so the loop measures it again and replaces these numbers until it is final."""
    incomplete: str | None = None
    """Why the provider's data for this window is known to be partial (Cloud Monitoring's
    `execution_errors`), else None: such a window is never judged PASS or FAIL."""

    @property
    def error_rate(self) -> float | None:
        """5xx share, None without requests."""
        return self.errors / self.requests if self.requests else None

    @property
    def success_rate(self) -> float | None:
        """2xx share, None without requests."""
        return self.successes / self.requests if self.requests else None

    @property
    def window(self) -> timedelta:
        """Length of the measured window."""
        return self.end - self.start


@dataclass(frozen=True)
class GateResult:
    """The judgement of one gate: what was measured, against what, on how many samples."""

    gate: str
    outcome: Outcome
    value: float | None
    threshold: float | None
    samples: int
    reason: str
    target: float | None = None
    """The promotion target of the gate (not a rollback threshold), if configured."""
    target_met: bool | None = None
    """Whether the measured value meets `target`; None without a target or without data."""
    windows: int = 0
    """How many windows the result rests on (the failing streak for a FAIL)."""


@dataclass(frozen=True)
class Verdict:
    """The judge's verdict over all gates (and probes) for one canary at one time."""

    outcome: Outcome
    gates: tuple[GateResult, ...] = ()

    @property
    def reasons(self) -> list[str]:
        """The reasons of the gates that did not pass."""
        return [g.reason for g in self.gates if g.outcome is not Outcome.PASS]

    @property
    def failures(self) -> list[str]:
        """The reasons of the gates that failed: what a rollback records."""
        return [g.reason for g in self.gates if g.outcome is Outcome.FAIL]

    @property
    def targets_met(self) -> bool | None:
        """True when every measured target is met, False when one is missed, None if none."""
        known = [g.target_met for g in self.gates if g.target_met is not None]
        return all(known) if known else None

    def summary(self) -> str:
        """One line: outcome and the failing or inconclusive reasons."""
        why = "; ".join(self.reasons)
        return f"{self.outcome.value}" + (f": {why}" if why else "")


def verdict_to_data(verdict: Verdict) -> dict[str, Any]:
    """A verdict as plain data (json and state/ share this form)."""
    return {
        "outcome": verdict.outcome.value,
        "gates": [
            {
                "gate": g.gate,
                "outcome": g.outcome.value,
                "value": g.value,
                "threshold": g.threshold,
                "samples": g.samples,
                "reason": g.reason,
            }
            for g in verdict.gates
        ],
    }


def verdict_from_data(data: Mapping[str, Any]) -> Verdict:
    """The inverse of `verdict_to_data`; raises KeyError/ValueError/TypeError on bad data."""

    def opt_float(v: object) -> float | None:
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise TypeError(f"expected a number, got {v!r}")
        return float(v)

    gates = []
    for g in data["gates"]:
        samples = g["samples"]
        if isinstance(samples, bool) or not isinstance(samples, int):
            raise TypeError(f"expected an integer sample count, got {samples!r}")
        gates.append(
            GateResult(
                gate=str(g["gate"]),
                outcome=Outcome(g["outcome"]),
                value=opt_float(g["value"]),
                threshold=opt_float(g["threshold"]),
                samples=samples,
                reason=str(g["reason"]),
            )
        )
    return Verdict(Outcome(data["outcome"]), tuple(gates))


# --- observed state (state/ reads and writes these; the pure core decides on them) ----------
class Phase(enum.Enum):
    """Where a rollout stands."""

    STABLE = "stable"
    PROGRESSING = "progressing"
    PAUSED = "paused"
    PROMOTED = "promoted"
    ROLLED_BACK = "rolled_back"


class CommitAction(enum.Enum):
    """What a reconciler commit records (its `Reconcile-Action` trailer): the loop's actions
    and every operator verb."""

    APPLY = "apply"
    DRIFT = "drift"
    ADVANCE = "advance"
    ROLLBACK = "rollback"
    PROMOTE = "promote"
    FINALIZE = "finalize"
    RECORD = "record"
    PAUSE = "pause"
    RESUME = "resume"
    ABORT = "abort"
    RETRY = "retry"
    # `reconcile canary start`; "canary" is the value its commits have always carried.
    CANARY_START = "canary"


class EventKind(enum.Enum):
    """What the reconciler did."""

    APPLIED = "applied"
    DRIFT_CORRECTED = "drift_corrected"
    ADVANCED = "advanced"
    ROLLED_BACK = "rolled_back"
    PROMOTED = "promoted"
    FINALIZED = "finalized"
    PROBE_FAILED = "probe_failed"
    STATE_REBUILT = "state_rebuilt"


@dataclass(frozen=True)
class ProbeRecord:
    """One probe run as kept in status.yaml (never with header values)."""

    name: str
    ok: bool
    at: datetime
    reason: str = ""
    latency: float | None = None
    """Seconds to the answer; None when none arrived (or recorded before it was kept)."""
    synthetic: int = 0
    """Requests the probe's `repeat:` sent after it as synthetic load."""


@dataclass(frozen=True)
class Streak:
    """One gate's failing streak, counted window by window (or probe run by run).

    `failures` counts failing windows since the last passing one (inconclusive windows
    neither count nor reset); `through` is the end of the newest window counted, so a window
    is counted once however many runs see it and however few windows state/ keeps.
    `inconclusive` counts INCONCLUSIVE windows in a row (any PASS or FAIL resets it), for
    `gates.inconclusive_limit`.
    """

    failures: int = 0
    through: datetime | None = None
    inconclusive: int = 0


@dataclass(frozen=True)
class Coverage:
    """How much of the canary's traffic at the current stage was judged: requests in final,
    whole windows out of the requests served up to the end of the newest of them."""

    judged: int = 0
    served: int = 0
    synthetic: int = 0
    """Requests the probes' `repeat:` sent at this stage: synthetic load, part of `served`
    once measured, said apart so nobody mistakes it for users."""

    @property
    def share(self) -> float | None:
        """judged / served, None before anything was served."""
        return self.judged / self.served if self.served else None

    def describe(self) -> str:
        """`100% (1,200 of 1,200 requests judged)` (`; 200 synthetic, sent by probes` when
        `repeat:` sent some), or `no traffic yet`."""
        share = self.share
        extra = f"; {self.synthetic:,} synthetic, sent by probes" if self.synthetic else ""
        if share is None:
            return f"no traffic yet{extra}"
        return f"{share * 100:.0f}% ({self.judged:,} of {self.served:,} requests judged{extra})"


@dataclass(frozen=True)
class ServiceStatus:
    """A rollout's `status.yaml`: the live service and the last judgement of its canary."""

    service: str
    phase: Phase
    stable_revision: str
    canary_revision: str | None
    stage: int
    """The canary percent live now."""
    stage_since: datetime | None
    """When the live split reached `stage` for this canary; the bake timer counts from here."""
    traffic: TrafficSplit
    etag: str
    generation: int
    observed_generation: int
    last_reconcile: datetime
    spec_id: str | None = None
    """What identifies the rollout file applied, by content: its git blob id, then `+` and
    the blob id of the `_defaults.yaml` it inherits when there is one (see
    `loader.spec_id_of`)."""
    verdict: Verdict | None = None
    verdict_at: datetime | None = None
    windows: tuple[WindowStats, ...] = ()
    """Recent windows of the canary and the stable revision, oldest first."""
    applied: TrafficSplit | None = None
    """The split the reconciler last applied and verified (drift is measured against it)."""
    passing_since: datetime | None = None
    """Since when the canary has been ready to promote without a break at `stage` (bake)."""
    probes: tuple[ProbeRecord, ...] = ()
    """Recent probe runs, oldest first (bounded like `windows`)."""
    streaks: Mapping[str, Streak] = field(default_factory=dict)
    """Failing streak per gate (`error_rate`, `probe:<name>` ...) at the current stage."""
    coverage: Coverage = Coverage()
    """Judged out of served canary requests at the current stage."""
    reported: Mapping[str, datetime] = field(default_factory=dict)
    """The scheduled reports written for this canary (`interim@25`, `final@25`, `final`)
    and when, so each is written once."""


@dataclass(frozen=True)
class Event:
    """One line of `events.jsonl`.

    `before` and `after` are short human forms (a traffic split's `describe()`, a percent,
    a revision name); `details` holds anything structured worth keeping (scalars only).
    """

    time: datetime
    kind: EventKind
    actor: str
    before: str = ""
    after: str = ""
    reason: str = ""
    spec_id: str | None = None
    details: Mapping[str, str | int | float | bool | None] = field(default_factory=dict)


def stage_since(
    previous: ServiceStatus | None, *, canary: str | None, stage: int, now: datetime
) -> datetime:
    """When the current stage began: kept from `previous` while canary and stage are unchanged.

    This is what makes the bake timer survive across runs.
    """
    if (
        previous is not None
        and previous.stage_since is not None
        and previous.canary_revision == canary
        and previous.stage == stage
    ):
        return previous.stage_since
    return now


MAX_WINDOWS = 100
"""The most windows per revision status.yaml keeps."""


def keep_windows(
    old: Iterable[WindowStats], new: Iterable[WindowStats], *, keep: int = 10
) -> tuple[WindowStats, ...]:
    """Merge windows, drop duplicates, keep the newest `keep` per revision, oldest first."""
    keep = max(1, min(keep, MAX_WINDOWS))
    merged: dict[tuple[str, datetime, datetime], WindowStats] = {}
    for s in (*old, *new):
        merged[(s.revision, s.start, s.end)] = s
    per_revision: dict[str, list[WindowStats]] = {}
    for s in sorted(merged.values(), key=lambda s: (s.end, s.revision, s.start)):
        per_revision.setdefault(s.revision, []).append(s)
    kept = [s for windows in per_revision.values() for s in windows[-keep:]]
    return tuple(sorted(kept, key=lambda s: (s.end, s.revision, s.start)))


def format_time(when: datetime) -> str:
    """`2026-05-01T12:00:00Z`: UTC, seconds (microseconds only when present)."""
    if when.tzinfo is None:
        raise ValueError(f"datetime {when} has no timezone")
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")
