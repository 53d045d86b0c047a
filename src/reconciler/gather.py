"""Gathering a tick's inputs: which rollout files, their specs, the live services, state/,
the metrics windows (batched) and the canary's probe runs. Reads only; decides nothing."""

from __future__ import annotations

import difflib
import fnmatch
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

from reconciler import state as st
from reconciler.analysis import gate_windows
from reconciler.backends import BackendError, ListingBackend, TrafficBackend
from reconciler.decide import CATCHUP
from reconciler.errors import ReconcileError
from reconciler.execute import Context, stamped_at
from reconciler.loader import duplicate_identities, find_rollout_files, load_spec
from reconciler.metrics import MetricsError, MetricsProvider, StatsQuery, lag_of
from reconciler.model import LiveService, ServiceRef, SpanKind, stage_since
from reconciler.model import WindowStats as Window
from reconciler.plan import ServiceError
from reconciler.shard import Shard
from reconciler.spec import Metrics, RolloutSpec
from reconciler.waves import expand


# --- inputs ---------------------------------------------------------------------------------
def rollout_files(rollout_dir: Path, patterns: Sequence[str] = ()) -> list[Path]:
    """Rollout files in `rollout_dir`, filtered by service names or globs (`payments-*`).

    A plain name (no glob characters) that matches no file is an error, so a typo in
    `--service` never silently reconciles nothing.
    """
    if not rollout_dir.is_dir():
        raise ReconcileError(f"{rollout_dir}: no rollout directory (expected rollout/*.yaml)")
    files = find_rollout_files(rollout_dir)
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
def load_all(
    files: Iterable[Path],
    shard: Shard | None = None,
    loaded: Callable[[RolloutSpec], None] | None = None,
) -> tuple[list[tuple[Path, RolloutSpec]], list[ServiceError]]:
    """Load every rollout file, one spec per region of a file with `waves:`; a bad file is an
    error for that service only, and so are two files claiming one service (both named).
    With `shard`, only what that shard owns is returned (every file is still read, so a
    clash across shards is still seen).

    `loaded` is told of each spec (the shard's own) as soon as it is parsed, so reads can
    start while the rest of the files are parsed."""
    specs: list[tuple[Path, RolloutSpec]] = []
    errors: list[tuple[Path, ServiceError]] = []
    for path in files:
        try:
            expanded = expand(load_spec(path))
        except ReconcileError as exc:
            errors.append((path, ServiceError(path.stem, str(exc))))
            continue
        for spec in expanded:
            specs.append((path, spec))
            if loaded is not None and (
                shard is None or shard.owns(spec.project, spec.region, spec.service)
            ):
                loaded(spec)
    clashes = duplicate_identities(specs)
    errors += [
        (p, ServiceError(s.service, clashes[p], ref_of(s))) for p, s in specs if p in clashes
    ]
    specs = [(p, s) for p, s in specs if p not in clashes]
    if shard is not None:
        specs = [(p, s) for p, s in specs if shard.owns(s.project, s.region, s.service)]
        errors = [(p, e) for p, e in errors if shard.owns_unloadable(_shard_key(p))]
    return specs, [e for _, e in errors]


def _shard_key(path: Path) -> str:
    """A file's shard key when it has no identity: its folder and name (machine-independent)."""
    return f"{path.parent.name}/{path.name}"


def region_statuses(root: Path, spec: RolloutSpec) -> dict[str, st.ServiceStatus | None]:
    """The observed status of every other region of a file with `waves:`, by region, for
    the wave rule (empty without waves). One that cannot be read counts as not started."""
    out: dict[str, st.ServiceStatus | None] = {}
    for other in expand(spec):
        if other.region == spec.region:
            continue
        try:
            out[other.region] = st.load_status(root, ref_of(other)).status
        except ReconcileError:
            out[other.region] = None
    return out


def ref_of(spec: RolloutSpec) -> ServiceRef:
    """The Cloud Run coordinates of a rollout file."""
    return ServiceRef(spec.project, spec.region, spec.service)


def read_live(backend: TrafficBackend, spec: RolloutSpec) -> LiveService | str:
    """One service's live state, or the error reading it."""
    try:
        return backend.get_service(ref_of(spec))
    except BackendError as exc:
        return str(exc)


LIST_FROM = 2
"""A project and region with at least this many selected services is read by list calls
(two pagers for the whole region); a lone service costs two calls either way, and a get does
not transfer the rest of the region."""


class LiveReads:
    """Live reads started as soon as the specs that need them are known: a project and
    region's list calls once it counts `LIST_FROM` specs, one read per service for the rest
    once every spec is known (`finish`). Results by identity (`ServiceRef.key`)."""

    def __init__(self, backend: TrafficBackend, pool: ThreadPoolExecutor) -> None:
        self.backend = backend
        self.pool = pool
        self.listing = isinstance(backend, ListingBackend)
        self.counts: dict[tuple[str, str], int] = {}
        self.regions: dict[tuple[str, str], Future[dict[str, LiveService] | str]] = {}
        self.singles: dict[str, Future[LiveService | str]] = {}

    def seen(self, spec: RolloutSpec) -> None:
        """One more spec selected: its region's lists start when it has enough of them."""
        key = (spec.project, spec.region)
        self.counts[key] = self.counts.get(key, 0) + 1
        if self.listing and self.counts[key] >= LIST_FROM and key not in self.regions:
            self.regions[key] = self.pool.submit(self._list, *key)

    def _list(self, project: str, region: str) -> dict[str, LiveService] | str:
        assert isinstance(self.backend, ListingBackend)
        try:
            return self.backend.list_services(project, region)
        except BackendError as exc:
            return str(exc)

    def finish(self, specs: Sequence[RolloutSpec]) -> None:
        """Start the single reads of specs whose region is not listed."""
        for spec in specs:
            if (spec.project, spec.region) not in self.regions:
                self.singles[ref_of(spec).key] = self.pool.submit(read_live, self.backend, spec)

    def result(self, specs: Sequence[RolloutSpec]) -> dict[str, LiveService | str]:
        """Every spec's live state, or the error reading it (waits for the reads)."""
        out: dict[str, LiveService | str] = {}
        for spec in specs:
            key = ref_of(spec).key
            single = self.singles.get(key)
            if single is not None:
                out[key] = single.result()
                continue
            found = self.regions[(spec.project, spec.region)].result()
            if isinstance(found, str):
                out[key] = found
                continue
            live = found.get(spec.service)
            out[key] = (
                live
                if live is not None
                else (
                    f"get {ref_of(spec).name}: not found (not among the services listed in "
                    f"projects/{spec.project}/locations/{spec.region})"
                )
            )
        return out


@contextmanager
def live_reads(backend: TrafficBackend, max_workers: int = 16) -> Iterator[LiveReads]:
    """Live reads on a bounded pool for the length of the block: tell it of each spec as it
    is parsed (`seen`), then of all of them (`finish`), and take the results (`result`)."""
    with ThreadPoolExecutor(max_workers=max(1, max_workers)) as pool:
        yield LiveReads(backend, pool)


def observe(
    backend: TrafficBackend, specs: Sequence[RolloutSpec], max_workers: int = 16
) -> dict[str, LiveService | str]:
    """Every service's live state, or the error reading it, by identity (`ServiceRef.key`).

    Services are grouped by project and region: a group of `LIST_FROM` or more is read with
    ListServices and ListRevisions across services (a few calls for 1,000 services); smaller
    groups, or a backend that cannot list, with one read per service. Groups and single
    reads run concurrently on a bounded pool.
    """
    if not specs:
        return {}
    with ThreadPoolExecutor(max_workers=max(1, min(max_workers, len(specs)))) as pool:
        reads = LiveReads(backend, pool)
        for spec in specs:
            reads.seen(spec)
        reads.finish(specs)
        return reads.result(specs)


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


_Inputs = tuple[Path, RolloutSpec, st.StatusLoad, LiveService | str]
"""What planning one service needs: its rollout file and spec, its state/ status (salvaged
when corrupt, saying what was dropped), its live state."""


def gather(
    repo: Path,
    files: Sequence[Path],
    backend: TrafficBackend | None,
    max_workers: int,
    shard: Shard | None = None,
) -> list[_Inputs | ServiceError]:
    """Each file's spec, status and live state (offline without a backend).

    The reads start while the rollout files are still being parsed (a region's lists as soon
    as two of its specs are known) and wait on the API in the pool while this thread parses
    the rest and reads state/; the pool does no parsing (CPU work there would contend for
    the GIL).
    """
    with ThreadPoolExecutor(max_workers=max(1, max_workers)) as pool:
        reads = LiveReads(backend, pool) if backend is not None else None
        ok, errors = load_all(files, shard, reads.seen if reads is not None else None)
        specs = [s for _, s in ok]
        if reads is not None:
            reads.finish(specs)
        statuses: dict[str, st.StatusLoad | ServiceError] = {}
        for spec in specs:
            try:
                # A corrupt status file must not fail its plan (apply salvages it the same
                # way): what parses is kept, the plan warns about the rest.
                statuses[ref_of(spec).key] = st.load_status(repo, ref_of(spec))
            except ReconcileError as exc:  # a symbolic link: refused, this service only
                statuses[ref_of(spec).key] = ServiceError(spec.service, str(exc), ref_of(spec))
        lives = reads.result(specs) if reads is not None else {}
    gathered: list[_Inputs | ServiceError] = list(errors)
    for path, spec in ok:
        status = statuses[ref_of(spec).key]
        if isinstance(status, ServiceError):
            gathered.append(status)
            continue
        live = lives[ref_of(spec).key] if backend is not None else offline_live(spec, status.status)
        gathered.append((path, spec, status, live))
    return gathered


# --- measure ----------------------------------------------------------------------------------
MAX_CATCHUP = CATCHUP
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
    began: datetime | None = None,
) -> list[tuple[datetime, datetime, SpanKind]]:
    """What one run measures for one service, per gate window length: every whole window
    since the last judged one (aligned on the stage start, at most `MAX_CATCHUP`, older ones
    as one gap), the kept provisional windows again, and the partial span up to the
    ingestion horizon (`now - lag`). `began`: when the write that made the live split was
    made (its stamp), the start of a stage `status` does not record yet. Pure."""
    canary = spec.revisions.canary
    if canary is None or live.traffic.percent_of(canary) == 0:
        return []
    stage = live.traffic.percent_of(canary)
    since = stage_since(status, canary=canary, stage=stage, now=min(began or now, now))
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
    items: Sequence[tuple[RolloutSpec, LiveService, st.ServiceStatus | None]],
    now: datetime,
) -> tuple[dict[tuple[str, str], list[Window]], dict[str, str]]:
    """The windows (see `spans`) of the canary and stable of every service with a live
    canary, each from its state/ status as the run read it (its last judged window).

    Batched: one provider call per metrics configuration and run of consecutive spans of
    one length (`runs`: a catch-up of many whole windows is one call per metric, answered
    one point per window), covering every service that shares it (the Cloud Monitoring
    provider makes one API call per metric per project). Returns windows by (identity,
    revision) and metric errors by identity (`ServiceRef.key`). Providers answer by
    (service, revision), so one call never holds the same service id twice (the same
    service in two regions goes in separate calls).
    """
    out: dict[tuple[str, str], list[Window]] = {}
    errors: dict[str, str] = {}
    if ctx.metrics_for is None:
        return out, errors
    groups, providers = _query_groups(ctx.metrics_for, items, now)

    def ask(group: _Group) -> Sequence[Mapping[tuple[str, str], Window]]:
        key, _, (start, length, count), _ = group
        provider = providers[key]
        # The provider moves its windows back by its lag: ask for the ones wanted.
        return provider.windows_stats(
            [q for _, q in groups[group]], length, count, start + count * length + lag_of(provider)
        )

    # Services whose stages started at different times share no span: the queries of the
    # groups go out together on the run's pool rather than one after another.
    with ThreadPoolExecutor(max_workers=max(1, min(ctx.max_workers, len(groups)))) as pool:
        answers = {group: pool.submit(ask, group) for group in groups}
    for group, members in groups.items():
        key, _, (first, length, _), kind = group
        lag = lag_of(providers[key])
        try:
            found = answers[group].result()
        except MetricsError as exc:
            for spec, _ in members:
                errors[ref_of(spec).key] = str(exc)
            continue
        for i, stats in enumerate(found):
            start, end = first + i * length, first + (i + 1) * length
            provisional = end > now - lag - SAMPLE_PERIOD
            for spec, q in members:
                for rev in q.revisions:
                    w = stats.get((spec.service, rev))
                    if w is not None:
                        w = replace(w, start=start, end=end, span=kind, provisional=provisional)
                        out.setdefault((ref_of(spec).key, rev), []).append(w)
    for found_windows in out.values():
        found_windows.sort(key=lambda w: (w.end, w.start))
    return out, errors


Run = tuple[datetime, timedelta, int]
"""(start, length, count): `count` consecutive spans of `length` from `start`."""


def runs(measured: Sequence[tuple[datetime, datetime, SpanKind]]) -> list[tuple[Run, SpanKind]]:
    """`spans` joined into runs a provider answers in one query: consecutive whole windows
    of one length make one run; a gap, a partial span or a lone window is a run of one.
    Pure."""
    out: list[tuple[Run, SpanKind]] = []
    for start, end, kind in measured:
        length = end - start
        if out and kind == "window":
            (first, last_length, count), last_kind = out[-1]
            if last_kind == kind and last_length == length and first + count * length == start:
                out[-1] = ((first, length, count + 1), kind)
                continue
        out.append(((start, length, 1), kind))
    return out


_Group = tuple[str, int, Run, SpanKind]
"""(provider configuration, twin index, run of spans, span kind): one provider call."""


def _query_groups(
    metrics_for: Callable[[Metrics], MetricsProvider],
    items: Sequence[tuple[RolloutSpec, LiveService, st.ServiceStatus | None]],
    now: datetime,
) -> tuple[dict[_Group, list[tuple[RolloutSpec, StatsQuery]]], dict[str, MetricsProvider]]:
    """The provider calls `measure` makes: every service's spans in runs, grouped by
    provider and run (a twin index keeps one service id in two regions apart), and the
    providers."""
    groups: dict[_Group, list[tuple[RolloutSpec, StatsQuery]]] = {}
    providers: dict[str, MetricsProvider] = {}
    seen: dict[str, int] = {}
    for spec, live, status in items:
        canary = spec.revisions.canary
        if canary is None:
            continue
        key = spec.metrics.model_dump_json()
        if key not in providers:
            providers[key] = metrics_for(spec.metrics)
        lag = lag_of(providers[key])
        query = StatsQuery(ref_of(spec), (canary, spec.revisions.stable))
        twin = seen[spec.service] = seen.get(spec.service, -1) + 1
        for run, kind in runs(spans(spec, status, live, now, lag, stamped_at(live))):
            groups.setdefault((key, twin, run, kind), []).append((spec, query))
    return groups, providers


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
            r.name,
            r.ok,
            now,
            "" if r.ok else r.reason,
            r.latency if r.answered else None,
            r.synthetic,
        )
        for r in results
    ]
    return records, []
