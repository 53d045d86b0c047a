"""Gathering a tick's inputs: which rollout files, their specs, the live services, state/,
the metrics windows (batched) and the canary's probe runs. Reads only; decides nothing."""

from __future__ import annotations

import difflib
import fnmatch
import re
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

from reconciler import state as st
from reconciler.analysis import gate_windows
from reconciler.backends import BackendError, TrafficBackend
from reconciler.errors import ReconcileError
from reconciler.execute import Context
from reconciler.loader import load_spec
from reconciler.metrics import MetricsError, MetricsProvider, StatsQuery
from reconciler.model import LiveService, ServiceRef, SpanKind, stage_since
from reconciler.model import WindowStats as Window
from reconciler.plan import ServiceError
from reconciler.spec import DEFAULTS_FILE, RolloutSpec


# --- inputs ---------------------------------------------------------------------------------
def rollout_files(rollout_dir: Path, patterns: Sequence[str] = ()) -> list[Path]:
    """Rollout files in `rollout_dir`, filtered by service names or globs (`payments-*`).

    A plain name (no glob characters) that matches no file is an error, so a typo in
    `--service` never silently reconciles nothing.
    """
    if not rollout_dir.is_dir():
        raise ReconcileError(f"{rollout_dir}: no rollout directory (expected rollout/*.yaml)")
    files = sorted(
        p
        for p in rollout_dir.iterdir()
        if p.suffix in (".yaml", ".yml") and p.name != DEFAULTS_FILE
    )
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


_Inputs = tuple[RolloutSpec, st.ServiceStatus | None, LiveService | str]
"""What planning one service needs: its rollout file, its state/ status, its live state."""


def gather(
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
MAX_CATCHUP = 12
"""The most whole windows per gate length one run measures after late or missed runs; older
unjudged traffic is measured once as a `gap` (it lowers coverage, and is said so)."""
SAMPLE_PERIOD = timedelta(seconds=60)
"""Cloud Run's metrics sample period: a window is final once older than lag + this."""
MIN_SPAN = timedelta(seconds=60)
"""The shortest span queried (Cloud Monitoring's smallest alignment period); partial spans
are whole minutes."""


def spans(
    spec: RolloutSpec,
    status: st.ServiceStatus | None,
    live: LiveService,
    now: datetime,
    lag: timedelta,
) -> list[tuple[datetime, datetime, SpanKind]]:
    """What one run measures for one service, per gate window length: every whole window
    since the last judged one (aligned on the stage start, at most `MAX_CATCHUP`, older ones
    as one gap), the kept provisional windows again, and the partial span up to the
    ingestion horizon (`now - lag`). Pure."""
    canary = spec.revisions.canary
    if canary is None or live.traffic.percent_of(canary) == 0:
        return []
    since = stage_since(status, canary=canary, stage=live.traffic.percent_of(canary), now=now)
    horizon = now - lag
    kept = [w for w in (status.windows if status else ()) if w.start >= since]
    out: list[tuple[datetime, datetime, SpanKind]] = []
    for length in gate_windows(spec.gates):
        mine = [w for w in kept if w.revision == canary and w.window == length]
        out.extend((w.start, w.end, "window") for w in mine if w.provisional)
        cursor = max((w.end for w in mine), default=since)
        whole = int((horizon - cursor) / length) if horizon > cursor else 0
        if whole > MAX_CATCHUP:
            skip = cursor + (whole - MAX_CATCHUP) * length
            out.append((cursor, skip, "gap"))
            cursor, whole = skip, MAX_CATCHUP
        for i in range(whole):
            out.append((cursor + i * length, cursor + (i + 1) * length, "window"))
        cursor += whole * length
        rest = (horizon - cursor) // MIN_SPAN * MIN_SPAN
        if rest >= MIN_SPAN:
            out.append((cursor, cursor + rest, "partial"))
    return list(dict.fromkeys(out))


def measure(
    ctx: Context,
    items: Sequence[tuple[RolloutSpec, LiveService]],
    now: datetime,
) -> tuple[dict[tuple[str, str], list[Window]], dict[str, str]]:
    """The windows (see `spans`) of the canary and stable of every service with a live
    canary; each state/ status is read here for its last judged window.

    Batched: one provider call per metrics configuration and span, covering every service
    that shares it (the Cloud Monitoring provider makes one API call per metric per project).
    Returns windows by (service, revision) and metric errors by service.
    """
    out: dict[tuple[str, str], list[Window]] = {}
    errors: dict[str, str] = {}
    if ctx.metrics_for is None:
        return out, errors
    groups: dict[
        tuple[str, datetime, datetime, SpanKind], list[tuple[RolloutSpec, StatsQuery]]
    ] = {}
    providers: dict[str, MetricsProvider] = {}
    for spec, live in items:
        canary = spec.revisions.canary
        if canary is None:
            continue
        key = spec.metrics.model_dump_json()
        if key not in providers:
            providers[key] = ctx.metrics_for(spec.metrics)
        lag = _lag(providers[key])
        try:
            status = st.read_status(ctx.repo, spec.service)
        except ReconcileError:
            status = None  # the service's own tick reports the corrupt file
        query = StatsQuery(ref_of(spec), (canary, spec.revisions.stable))
        for start, end, kind in spans(spec, status, live, now, lag):
            groups.setdefault((key, start, end, kind), []).append((spec, query))
    for (key, start, end, kind), members in groups.items():
        provider = providers[key]
        lag = _lag(provider)
        try:
            # The provider moves its window back by its lag: ask for the one wanted.
            stats = provider.window_stats([q for _, q in members], end - start, end + lag)
        except MetricsError as exc:
            for spec, _ in members:
                errors[spec.service] = str(exc)
            continue
        provisional = end > now - lag - SAMPLE_PERIOD
        for spec, q in members:
            for rev in q.revisions:
                w = stats.get((spec.service, rev))
                if w is not None:
                    w = replace(w, start=start, end=end, span=kind, provisional=provisional)
                    out.setdefault((spec.service, rev), []).append(w)
    for found in out.values():
        found.sort(key=lambda w: (w.end, w.start))
    return out, errors


def _lag(provider: MetricsProvider) -> timedelta:
    """The provider's ingestion lag (Cloud Monitoring has one; others read at once)."""
    lag = getattr(provider, "ingestion_lag", None)
    return lag if isinstance(lag, timedelta) else timedelta(0)


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
    records = [
        st.ProbeRecord(
            r.name, r.ok, now, "" if r.ok else r.reason, r.latency if r.answered else None
        )
        for r in results
    ]
    return records, []
