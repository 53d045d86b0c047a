"""Monitoring v3 `ListTimeSeries` over the requests the data plane actually served.

Two metrics, as Cloud Run reports them (resource type `cloud_run_revision`, resource labels
project_id, location, service_name, revision_name, configuration_name; metric labels
response_code, response_code_class):
- `run.googleapis.com/request_count`: DELTA, INT64.
- `run.googleapis.com/request_latencies`: DELTA, DISTRIBUTION in ms, exponential buckets.

Supported: filters joined by AND over `metric.type`, `resource.type`,
`resource.labels.*`, `metric.labels.*` with `=`/`!=` and `one_of`, `starts_with`,
`ends_with`, `has_substring`, `monitoring.regex.full_match`; aligners ALIGN_NONE (raw
points in 60 s samples), ALIGN_DELTA, ALIGN_SUM, ALIGN_RATE, ALIGN_PERCENTILE_{99,95,50,05};
reducers REDUCE_NONE, REDUCE_SUM, REDUCE_MEAN, REDUCE_MIN, REDUCE_MAX, REDUCE_COUNT,
REDUCE_PERCENTILE_{99,95,50,05}; `group_by_fields`; view FULL/HEADERS; paging (page_size
counts points in FULL view, a cut series going on in the next page, and time series in
HEADERS view). Anything else is INVALID_ARGUMENT, never a silent approximation.

As Google's (scenario `monitoring:`): each request is reported in the sample (60 s) that holds
it, stamped at the sample's end, and readable only `ingestion_delay` (180 s) after that end;
an `alignment_period` under 60 s is INVALID_ARGUMENT; injected partial results leave series
out and say so in `execution_errors`.
"""

from __future__ import annotations

import base64
import itertools
import math
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from google.api import distribution_pb2, metric_pb2
from google.cloud import monitoring_v3
from google.rpc import code_pb2, status_pb2

from reconciler.emulator.world import ApiError, Record, World

REQUEST_COUNT = "run.googleapis.com/request_count"
REQUEST_LATENCIES = "run.googleapis.com/request_latencies"
RESOURCE_TYPE = "cloud_run_revision"
# Exponential latency buckets in ms: bucket i>=1 is [SCALE*G^(i-1), SCALE*G^i).
NUM_FINITE_BUCKETS = 100
GROWTH_FACTOR = 1.15
SCALE = 1.0
MAX_ALIGNED_PERIODS = 100_000
DEFAULT_PAGE_SIZE = 10_000
MAX_PAGE_SIZE = 100_000

_A = monitoring_v3.Aggregation.Aligner
_R = monitoring_v3.Aggregation.Reducer
_KIND = metric_pb2.MetricDescriptor
_VTYPE = metric_pb2.MetricDescriptor
_PERCENTILE_ALIGNERS = {
    _A.ALIGN_PERCENTILE_99: 0.99,
    _A.ALIGN_PERCENTILE_95: 0.95,
    _A.ALIGN_PERCENTILE_50: 0.50,
    _A.ALIGN_PERCENTILE_05: 0.05,
}
_PERCENTILE_REDUCERS = {
    _R.REDUCE_PERCENTILE_99: 0.99,
    _R.REDUCE_PERCENTILE_95: 0.95,
    _R.REDUCE_PERCENTILE_50: 0.50,
    _R.REDUCE_PERCENTILE_05: 0.05,
}


# --- distributions -----------------------------------------------------------------------
def bucket_index(value_ms: float) -> int:
    """The bucket of a value under the exponential bucket options (0: underflow)."""
    if value_ms < SCALE:
        return 0
    i = math.floor(math.log(value_ms / SCALE) / math.log(GROWTH_FACTOR)) + 1
    return min(i, NUM_FINITE_BUCKETS + 1)


def bucket_bounds(i: int) -> tuple[float, float]:
    """Lower and upper bound of bucket `i` (underflow starts at 0, overflow is open)."""
    lower = 0.0 if i == 0 else SCALE * GROWTH_FACTOR ** (i - 1)
    upper = math.inf if i > NUM_FINITE_BUCKETS else SCALE * GROWTH_FACTOR**i
    return lower, upper


@dataclass
class Dist:
    """Count, mean, sum of squared deviations and bucket counts of latencies (ms)."""

    count: int = 0
    mean: float = 0.0
    m2: float = 0.0
    buckets: list[int] = field(default_factory=lambda: [0] * (NUM_FINITE_BUCKETS + 2))

    @classmethod
    def of(cls, values: Iterable[float]) -> Dist:
        """The distribution of some values (Welford, so merging stays exact)."""
        d = cls()
        for v in values:
            d.count += 1
            delta = v - d.mean
            d.mean += delta / d.count
            d.m2 += delta * (v - d.mean)
            d.buckets[bucket_index(v)] += 1
        return d

    def merge(self, other: Dist) -> Dist:
        """The distribution of both populations."""
        n = self.count + other.count
        if n == 0:
            return Dist()
        delta = other.mean - self.mean
        return Dist(
            n,
            self.mean + delta * other.count / n,
            self.m2 + other.m2 + delta * delta * self.count * other.count / n,
            [a + b for a, b in zip(self.buckets, other.buckets, strict=True)],
        )

    def percentile(self, q: float) -> float:
        """Percentile by linear interpolation inside the bucket holding rank q*count."""
        rank = q * self.count
        seen = 0
        for i, c in enumerate(self.buckets):
            if c and seen + c >= rank:
                lower, upper = bucket_bounds(i)
                if math.isinf(upper):
                    return lower
                return lower + (upper - lower) * (rank - seen) / c
            seen += c
        return 0.0

    def to_pb(self) -> distribution_pb2.Distribution:
        """A `google.api.Distribution` with its exponential bucket options."""
        counts = list(self.buckets)
        while counts and counts[-1] == 0:
            counts.pop()  # trailing zero buckets may be omitted, as the API does
        return distribution_pb2.Distribution(
            count=self.count,
            mean=self.mean,
            sum_of_squared_deviation=self.m2,
            bucket_options=distribution_pb2.Distribution.BucketOptions(
                exponential_buckets=distribution_pb2.Distribution.BucketOptions.Exponential(
                    num_finite_buckets=NUM_FINITE_BUCKETS, growth_factor=GROWTH_FACTOR, scale=SCALE
                )
            ),
            bucket_counts=counts,
        )


Value = int | float | Dist


def _merge_values(values: Sequence[Value]) -> Value:
    first = values[0]
    if isinstance(first, Dist):
        out = Dist()
        for v in values:
            assert isinstance(v, Dist)
            out = out.merge(v)
        return out
    return sum(v for v in values if not isinstance(v, Dist))


# --- filters -----------------------------------------------------------------------------
_TOKEN = re.compile(
    r'\s*(?:(?P<str>"(?:[^"\\]|\\.)*")|(?P<op>!=|=|\(|\)|,)|(?P<word>[A-Za-z_][\w.]*))'
)
_FUNCS: dict[str, Callable[[str, list[str]], bool]] = {
    "one_of": lambda v, args: v in args,
    "starts_with": lambda v, args: v.startswith(args[0]),
    "ends_with": lambda v, args: v.endswith(args[0]),
    "has_substring": lambda v, args: args[0] in v,
    "monitoring.regex.full_match": lambda v, args: re.fullmatch(args[0], v) is not None,
}


@dataclass(frozen=True)
class Clause:
    """`key (=|!=) value` or `key = func("a", ...)`."""

    key: str
    negate: bool
    func: str
    args: tuple[str, ...]

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether a series with these labels passes the clause."""
        value = labels.get(self.key, "")
        hit = value == self.args[0] if self.func == "=" else _FUNCS[self.func](value, [*self.args])
        return hit != self.negate


def _normal_key(key: str) -> str:
    key = key.replace("resource.label.", "resource.labels.").replace(
        "metric.label.", "metric.labels."
    )
    if key in ("metric.type", "resource.type") or key.startswith(
        ("resource.labels.", "metric.labels.")
    ):
        return key
    raise ApiError("INVALID_ARGUMENT", f"filter: unsupported field {key!r}")


def parse_filter(text: str) -> list[Clause]:
    """Parse a Monitoring filter (AND of clauses) or raise INVALID_ARGUMENT."""
    tokens: list[tuple[str, str]] = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise ApiError("INVALID_ARGUMENT", f"filter: cannot parse at {text[pos:]!r}")
        kind = m.lastgroup or ""
        raw = m.group(kind)
        tokens.append((kind, _unquote(raw) if kind == "str" else raw))
        pos = m.end()
    clauses: list[Clause] = []
    i = 0

    def take(kind: str, value: str | None = None) -> str:
        nonlocal i
        if i >= len(tokens) or tokens[i][0] != kind or (value and tokens[i][1] != value):
            got = tokens[i][1] if i < len(tokens) else "end of filter"
            raise ApiError("INVALID_ARGUMENT", f"filter: expected {value or kind}, got {got!r}")
        i += 1
        return tokens[i - 1][1]

    while True:
        key = _normal_key(take("word"))
        if i < len(tokens) and tokens[i] == ("op", "!="):
            negate = True
            i += 1
        else:
            take("op", "=")
            negate = False
        if i < len(tokens) and tokens[i][0] == "word":
            func = take("word")
            if func not in _FUNCS:
                raise ApiError("INVALID_ARGUMENT", f"filter: unsupported function {func!r}")
            take("op", "(")
            args = [take("str")]
            while i < len(tokens) and tokens[i] == ("op", ","):
                i += 1
                args.append(take("str"))
            take("op", ")")
            clauses.append(Clause(key, negate, func, tuple(args)))
        else:
            clauses.append(Clause(key, negate, "=", (take("str"),)))
        if i == len(tokens):
            return clauses
        take("word", "AND")


def _unquote(raw: str) -> str:
    return re.sub(r"\\(.)", r"\1", raw[1:-1])


# --- series ------------------------------------------------------------------------------
SeriesKey = tuple[tuple[tuple[str, str], ...], tuple[tuple[str, str], ...]]
"""(metric labels, resource labels), each as sorted items."""


def _series_key(rec: Record) -> SeriesKey:
    metric = (("response_code", str(rec.code)), ("response_code_class", f"{rec.code // 100}xx"))
    resource = (
        ("configuration_name", rec.service),
        ("location", rec.region),
        ("project_id", rec.project),
        ("revision_name", rec.revision),
        ("service_name", rec.service),
    )
    return metric, resource


def _flat(metric_type: str, key: SeriesKey) -> dict[str, str]:
    out = {"metric.type": metric_type, "resource.type": RESOURCE_TYPE}
    out.update({f"metric.labels.{k}": v for k, v in key[0]})
    out.update({f"resource.labels.{k}": v for k, v in key[1]})
    return out


def _epoch(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()


def _point(start: float, end: float, value: Value) -> monitoring_v3.Point:
    typed: dict[str, Any]
    if isinstance(value, Dist):
        typed = {"distribution_value": value.to_pb()}
    elif isinstance(value, int):
        typed = {"int64_value": value}
    else:
        typed = {"double_value": value}
    return monitoring_v3.Point(
        interval=monitoring_v3.TimeInterval(
            start_time=datetime.fromtimestamp(start, tz=UTC),
            end_time=datetime.fromtimestamp(end, tz=UTC),
        ),
        value=monitoring_v3.TypedValue(**typed),
    )


def _value_of(metric_type: str, records: Sequence[Record]) -> Value:
    if metric_type == REQUEST_COUNT:
        return len(records)
    return Dist.of(r.latency_ms for r in records)


def _align(
    metric_type: str,
    aligner: int,
    records: Sequence[Record],
    period: float,
) -> Value:
    value = _value_of(metric_type, records)
    if aligner in (_A.ALIGN_DELTA, _A.ALIGN_SUM):
        # Google documents ALIGN_SUM for DELTA metrics "with numeric and distribution values".
        return value
    if aligner == _A.ALIGN_RATE:
        if isinstance(value, Dist):
            raise ApiError("INVALID_ARGUMENT", "ALIGN_RATE does not apply to a distribution")
        return value / period
    if aligner in _PERCENTILE_ALIGNERS:
        if not isinstance(value, Dist):
            raise ApiError("INVALID_ARGUMENT", "percentile aligners need a distribution metric")
        return value.percentile(_PERCENTILE_ALIGNERS[aligner])
    raise ApiError("INVALID_ARGUMENT", f"emulator: unsupported aligner {_A(aligner).name}")


def _interpolated(points: Mapping[int, Value]) -> dict[int, Value]:
    """A series' aligned points (by period index, 0 the newest) with every period without
    data between two with data filled in by linear interpolation between them.

    Google documents ALIGN_DELTA and ALIGN_RATE so ("If the selected alignment period
    results in periods with no data, then the aligned value for such a period is created by
    interpolation"); how is not said: linearly between the neighbours is the reading here,
    and distributions (no documented way to interpolate one) are left without a point.
    """
    out = dict(points)
    known = sorted(k for k, v in points.items() if not isinstance(v, Dist))
    for newer, older in itertools.pairwise(known):
        a, b = points[newer], points[older]
        assert not isinstance(a, Dist) and not isinstance(b, Dist)
        for k in range(newer + 1, older):
            value = a + (b - a) * (k - newer) / (older - newer)
            out[k] = round(value) if isinstance(a, int) and isinstance(b, int) else value
    return out


def _reduce(reducer: int, values: Sequence[Value]) -> Value:
    if reducer == _R.REDUCE_SUM:
        return _merge_values(values)
    if reducer == _R.REDUCE_COUNT:
        return len(values)
    if reducer in _PERCENTILE_REDUCERS:
        merged = _merge_values(values)
        if not isinstance(merged, Dist):
            raise ApiError("INVALID_ARGUMENT", "percentile reducers need distribution values")
        return merged.percentile(_PERCENTILE_REDUCERS[reducer])
    numbers = [float(v) for v in values if not isinstance(v, Dist)]
    if len(numbers) != len(values):
        raise ApiError("INVALID_ARGUMENT", f"{_R(reducer).name} does not apply to distributions")
    if reducer == _R.REDUCE_MEAN:
        return sum(numbers) / len(numbers)
    if reducer == _R.REDUCE_MIN:
        return min(numbers)
    if reducer == _R.REDUCE_MAX:
        return max(numbers)
    raise ApiError("INVALID_ARGUMENT", f"emulator: unsupported reducer {_R(reducer).name}")


def _kinds(metric_type: str, aligner: int, reducer: int, sample: Value | None) -> tuple[int, int]:
    kind = _KIND.DELTA
    if aligner in (_A.ALIGN_RATE, *_PERCENTILE_ALIGNERS) or reducer in (
        _R.REDUCE_MEAN,
        *_PERCENTILE_REDUCERS,
    ):
        kind = _KIND.GAUGE
    if isinstance(sample, Dist) or (sample is None and metric_type == REQUEST_LATENCIES):
        vtype = _VTYPE.DISTRIBUTION
    elif isinstance(sample, float):
        vtype = _VTYPE.DOUBLE
    else:
        vtype = _VTYPE.INT64
    return kind, vtype


def list_time_series(
    world: World, req: monitoring_v3.ListTimeSeriesRequest
) -> monitoring_v3.ListTimeSeriesResponse:
    """Answer one ListTimeSeries request from the served-request log."""
    m = re.fullmatch(r"projects/([^/]+)", req.name)
    if not m:
        raise ApiError("INVALID_ARGUMENT", f"name must be projects/PROJECT, got {req.name!r}")
    project = m.group(1)
    clauses = parse_filter(req.filter)
    types = [c for c in clauses if c.key == "metric.type" and c.func == "=" and not c.negate]
    if len(types) != 1:
        raise ApiError("INVALID_ARGUMENT", "filter must name exactly one metric.type")
    metric_type = types[0].args[0]
    end = _epoch(req.interval.end_time)
    if end is None:
        raise ApiError("INVALID_ARGUMENT", "interval.end_time is required")
    given_start = _epoch(req.interval.start_time)
    start = end if given_start is None else given_start
    if start > end:
        raise ApiError("INVALID_ARGUMENT", "interval.start_time is after end_time")
    agg = req.aggregation
    aligner = int(agg.per_series_aligner)
    reducer = int(agg.cross_series_reducer)
    period = agg.alignment_period.total_seconds()
    if req.secondary_aggregation and (
        req.secondary_aggregation.per_series_aligner
        or req.secondary_aggregation.cross_series_reducer
    ):
        raise ApiError("INVALID_ARGUMENT", "emulator: secondary_aggregation is not supported")
    if aligner != _A.ALIGN_NONE and period <= 0:
        raise ApiError("INVALID_ARGUMENT", "aggregation.alignment_period is required")
    shortest = world.monitoring.min_alignment_period
    if aligner != _A.ALIGN_NONE and period < shortest:
        raise ApiError(
            "INVALID_ARGUMENT",
            f'Field aggregation.alignmentPeriod had an invalid value of "{period:g}s": The '
            f"alignment period must be at least {shortest:g} seconds.",
        )
    sample_s = world.monitoring.sample_period
    # Only samples ingested by now can be read.
    visible_until = world.now() - world.monitoring.ingestion_delay
    if reducer != _R.REDUCE_NONE and aligner == _A.ALIGN_NONE:
        raise ApiError("INVALID_ARGUMENT", "a cross_series_reducer needs a per_series_aligner")
    group_by = [_normal_key(f) for f in agg.group_by_fields]

    # Raw series: the served requests of this project that pass the filter.
    raw: dict[SeriesKey, list[Record]] = defaultdict(list)
    verdicts: dict[SeriesKey, bool] = {}
    if metric_type in (REQUEST_COUNT, REQUEST_LATENCIES):
        for rec in world.served():
            if rec.project != project:
                continue
            reported = (math.floor(rec.ts / sample_s) + 1) * sample_s
            if reported > visible_until:
                continue
            key = _series_key(rec)
            ok = verdicts.get(key)
            if ok is None:
                labels = _flat(metric_type, key)
                ok = verdicts[key] = all(c.matches(labels) for c in clauses)
            if ok:
                raw[key].append(rec)

    # Per series: {period index: value}, with each period's (start, end).
    bounds: dict[int, tuple[float, float]] = {}
    aligned: dict[SeriesKey, dict[int, Value]] = {}
    if aligner == _A.ALIGN_NONE:
        for key, recs in raw.items():
            samples: dict[int, list[Record]] = defaultdict(list)
            for r in recs:
                samples[int(r.ts // sample_s)] += [r]
            points = {}
            for idx, rs in samples.items():
                lo, hi = idx * sample_s, (idx + 1) * sample_s
                if lo < end and hi > start:
                    bounds[-idx] = (lo, hi)
                    points[-idx] = _value_of(metric_type, rs)
            if points:
                aligned[key] = points
    else:
        count = max(1, math.ceil((end - start) / period))
        if count > MAX_ALIGNED_PERIODS:
            raise ApiError("INVALID_ARGUMENT", "too many alignment periods in the interval")
        for key, recs in raw.items():
            periods: dict[int, list[Record]] = defaultdict(list)
            for r in recs:
                # A request counts at the end of its sample, where Cloud Monitoring puts it.
                ts = (math.floor(r.ts / sample_s) + 1) * sample_s
                if start < ts <= end or (start == end and ts == end):
                    k = int((end - ts) // period)
                    if k < count:
                        periods[k].append(r)
            points = {}
            for k, rs in periods.items():
                points[k] = _align(metric_type, aligner, rs, period)
            if aligner in (_A.ALIGN_DELTA, _A.ALIGN_RATE):
                points = _interpolated(points)
            for k in points:
                bounds[k] = (end - (k + 1) * period, end - k * period)
            if points:
                aligned[key] = points

    partial = world.take_partial()
    errors = []
    if partial is not None:
        aligned = {
            key: pts
            for key, pts in aligned.items()
            if not (
                partial.drop
                and all(_flat(metric_type, key).get(k) == v for k, v in partial.drop.items())
            )
        }
        errors.append(status_pb2.Status(code=code_pb2.UNAVAILABLE, message=partial.message))

    # Cross-series reduction by the group-by fields.
    out: list[tuple[dict[str, str], dict[int, Value]]] = []
    if reducer == _R.REDUCE_NONE:
        out = [(_flat(metric_type, key), pts) for key, pts in aligned.items()]
    else:
        groups: dict[tuple[str, ...], list[dict[int, Value]]] = defaultdict(list)
        for key, pts in aligned.items():
            flat = _flat(metric_type, key)
            groups[tuple(flat.get(f, "") for f in group_by)].append(pts)
        for gkey, members in groups.items():
            labels = {"metric.type": metric_type, "resource.type": RESOURCE_TYPE}
            labels.update({f: v for f, v in zip(group_by, gkey, strict=True) if v})
            reduced: dict[int, Value] = {}
            for k in sorted({k for pts in members for k in pts}):
                reduced[k] = _reduce(reducer, [pts[k] for pts in members if k in pts])
            out.append((labels, reduced))
    out.sort(key=lambda item: sorted(item[0].items()))

    size = min(req.page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
    headers_only = req.view == monitoring_v3.ListTimeSeriesRequest.TimeSeriesView.HEADERS
    chunk: list[tuple[dict[str, str], dict[int, Value], list[int]]] = []
    if headers_only:
        # HEADERS: page_size counts time series.
        at = _decode_token(req.page_token, len(out))
        chunk = [(labels, pts, []) for labels, pts in out[at : at + size]]
        token = _encode_token(at + size) if at + size < len(out) else ""
    else:
        # FULL: page_size counts points (Google's field doc), so a series longer than what is
        # left of a page is cut and goes on, same labels, at the top of the next page.
        total = sum(len(pts) for _, pts in out)
        at = _decode_token(req.page_token, total)
        seen = 0
        for labels, pts in out:
            # Newest point first, as Cloud Monitoring returns them.
            ks = sorted(pts)
            lo, hi = max(at - seen, 0), min(at + size - seen, len(ks))
            if lo < hi:
                chunk.append((labels, pts, ks[lo:hi]))
            seen += len(ks)
        token = _encode_token(at + size) if at + size < total else ""
    series = []
    for labels, pts, ks in chunk:
        sample = next(iter(pts.values()), None)
        kind, vtype = _kinds(metric_type, aligner, reducer, sample)
        series.append(
            monitoring_v3.TimeSeries(
                metric={
                    "type": metric_type,
                    "labels": _prefixed(labels, "metric.labels."),
                },
                resource={"type": RESOURCE_TYPE, "labels": _prefixed(labels, "resource.labels.")},
                metric_kind=kind,
                value_type=vtype,
                unit="ms" if vtype == _VTYPE.DISTRIBUTION else "1",
                points=[_point(*bounds[k], pts[k]) for k in ks],
            )
        )
    return monitoring_v3.ListTimeSeriesResponse(
        time_series=series, next_page_token=token, execution_errors=errors
    )


def _prefixed(labels: Mapping[str, str], prefix: str) -> dict[str, str]:
    return {k[len(prefix) :]: v for k, v in labels.items() if k.startswith(prefix)}


def _encode_token(offset: int) -> str:
    return base64.urlsafe_b64encode(f"at:{offset}".encode()).decode()


def _decode_token(token: str, total: int) -> int:
    if not token:
        return 0
    try:
        offset = int(base64.urlsafe_b64decode(token.encode()).decode().split(":")[1])
    except (ValueError, IndexError, UnicodeDecodeError):
        raise ApiError("INVALID_ARGUMENT", f"invalid page_token {token!r}") from None
    if not 0 <= offset <= total:
        raise ApiError("INVALID_ARGUMENT", f"page_token {token!r} is out of range")
    return offset
