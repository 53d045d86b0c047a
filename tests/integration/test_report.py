"""Stage reports against the emulator: real requests, measured through Cloud Monitoring.

The windows are measured with the official `google-cloud-monitoring` client
(`ListTimeSeries` of `run.googleapis.com/request_count` and `request_latencies`) against the
emulator, which answers from the requests its data plane actually served; they are recorded
in `state/` with `append_metrics`, and the report is generated from the files. Its figures
are then checked against the raw served requests (`world.served()`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from google.cloud import monitoring_v3
from tests.builders import CANARY, STABLE, status_at
from tests.builders import REPORTED_ROLLOUT as ROLLOUT
from tests.refs import ION

from reconciler import clients
from reconciler.emulator import Emulator
from reconciler.emulator.monitoring import bucket_bounds, bucket_index
from reconciler.emulator.world import Record
from reconciler.model import WindowStats
from reconciler.report import generate, save
from reconciler.state import (
    Event,
    EventKind,
    append_events,
    append_metrics,
    write_status,
)
from reconciler.stats import bucket_percentile, buckets_from_counts, exponential_bounds

WINDOW = timedelta(minutes=5)
PER_WINDOW = 200
_A = monitoring_v3.Aggregation.Aligner
_R = monitoring_v3.Aggregation.Reducer


def _series(
    client: monitoring_v3.MetricServiceClient,
    project: str,
    metric: str,
    start: datetime,
    end: datetime,
    group_by: list[str],
) -> list[monitoring_v3.TimeSeries]:
    request = monitoring_v3.ListTimeSeriesRequest(
        name=f"projects/{project}",
        filter=(
            f'metric.type = "{metric}" AND resource.type = "cloud_run_revision" '
            'AND resource.labels.service_name = "ion-api"'
        ),
        interval=monitoring_v3.TimeInterval(start_time=start, end_time=end),
        aggregation=monitoring_v3.Aggregation(
            alignment_period=timedelta(seconds=(end - start).total_seconds()),
            per_series_aligner=_A.ALIGN_DELTA,
            cross_series_reducer=_R.REDUCE_SUM,
            group_by_fields=group_by,
        ),
    )
    return list(client.list_time_series(request=request))


def measure(emu: Emulator, start: datetime, end: datetime) -> list[WindowStats]:
    """One window per revision, from Cloud Monitoring: counts by response class, and the
    latency distribution (ms, exponential buckets) kept as `latency_buckets` in seconds."""
    client = clients.metric_client(emu.grpc_target)
    counts: dict[str, dict[str, int]] = {}
    for ts in _series(
        client,
        emu.project,
        "run.googleapis.com/request_count",
        start,
        end,
        ["resource.labels.revision_name", "metric.labels.response_code_class"],
    ):
        revision = ts.resource.labels["revision_name"]
        klass = ts.metric.labels["response_code_class"]
        counts.setdefault(revision, {})[klass] = sum(p.value.int64_value for p in ts.points)
    out = []
    for ts in _series(
        client,
        emu.project,
        "run.googleapis.com/request_latencies",
        start,
        end,
        ["resource.labels.revision_name"],
    ):
        revision = ts.resource.labels["revision_name"]
        (point,) = ts.points
        dist = point.value.distribution_value
        exp = dist.bucket_options.exponential_buckets
        bounds = exponential_bounds(exp.num_finite_buckets, exp.growth_factor, exp.scale)
        buckets = buckets_from_counts(bounds, list(dist.bucket_counts), scale=0.001)
        by_class = counts.get(revision, {})
        out.append(
            WindowStats(
                service="ion-api",
                revision=revision,
                start=start,
                end=end,
                requests=sum(by_class.values()),
                errors=by_class.get("5xx", 0),
                successes=by_class.get("2xx", 0),
                p50=bucket_percentile(buckets, 0.50),
                p95=bucket_percentile(buckets, 0.95),
                p99=bucket_percentile(buckets, 0.99),
                latency_buckets=buckets,
            )
        )
    return out


def nearest_rank(values: list[float], q: float) -> float:
    """The q-quantile of raw values: the ceil(q*n)-th smallest."""
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


def assert_same_bucket(reported: float | None, raw_seconds: float) -> None:
    """`reported` lies in the emulator's latency bucket holding the raw quantile.

    The tolerance is the bucket resolution: Cloud Monitoring keeps a distribution as bucket
    counts (here exponential, growth factor 1.15), so a percentile is interpolated inside the
    bucket that holds its rank; the raw quantile is in that same bucket, so the two differ by
    less than one bucket width (under 15% of the value), and by no more.
    """
    assert reported is not None
    lower, upper = bucket_bounds(bucket_index(raw_seconds * 1000))
    eps = 1e-9
    assert lower / 1000 - eps <= reported <= upper / 1000 + eps, (reported, raw_seconds)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Four 5-minute windows of real load on a 75/25 split, measured and recorded in state/.

    Module-scoped (the load is the slow part); the tests only read what it recorded.
    """
    with Emulator.start(latency_mode="simulated", seed=7) as emulator:
        yield _record(emulator, tmp_path_factory.mktemp("report"))


def _record(emulator: Emulator, tmp_path: Path) -> dict[str, Any]:
    emulator.behave(CANARY, error_rate=0.04, latency_ms={"p50": 150, "p95": 400})
    emulator.drift("ion-api", {STABLE: 75, CANARY: 25}, {"stable": STABLE, "canary": CANARY})
    root = tmp_path / "repo"
    (root / "rollout").mkdir(parents=True)
    (root / "rollout" / "ion-api.yaml").write_text(ROLLOUT, encoding="utf-8")
    start = emulator.now().replace(microsecond=0) - timedelta(seconds=1)
    append_events(
        root,
        ION,
        [
            Event(
                start, EventKind.APPLIED, "reconciler", f"{STABLE}=100", f"{STABLE}=75 {CANARY}=25"
            )
        ],
    )
    windows: list[WindowStats] = []
    for i in range(4):
        w_start, w_end = start + WINDOW * i, start + WINDOW * (i + 1)
        assert emulator.load("ion-api", PER_WINDOW).sent == PER_WINDOW
        # Requests are stamped with emulator time; moving it past the window closes it.
        emulator.advance_clock(WINDOW.total_seconds())
        windows += measure(emulator, w_start, w_end)
    append_metrics(root, ION, windows)
    end = start + WINDOW * 4
    write_status(root, ION, status_at(25, start, last_reconcile=end))
    served = [r for r in emulator.world.served() if start.timestamp() < r.ts <= end.timestamp()]
    return {"root": root, "start": start, "end": end, "served": served, "windows": windows}


def _raw(served: list[Record], revision: str) -> list[Record]:
    return [r for r in served if r.revision == revision]


@pytest.mark.parametrize("kind", ["interim", "final"])
def test_report_percentiles_equal_those_of_the_raw_latencies(
    recorded: dict[str, Any], kind: Any
) -> None:
    root, end = recorded["root"], recorded["end"]
    served: list[Record] = recorded["served"]
    assert len(served) == 4 * PER_WINDOW
    report = generate(root, ION, kind, now=end + timedelta(seconds=1))
    if kind == "final":
        assert report.span.start == recorded["start"]  # the canary's first event
    for summary, revision in ((report.canary, CANARY), (report.stable, STABLE)):
        assert summary is not None
        raw = _raw(served, revision)
        assert raw, revision
        # Counts are exact: every served request is in exactly one window.
        assert summary.windows == 4
        assert summary.requests == len(raw)
        assert summary.errors == sum(r.code >= 500 for r in raw)
        assert summary.successes == sum(200 <= r.code < 300 for r in raw)
        # Percentiles: merged distributions, equal to the raw ones to the bucket resolution.
        assert summary.method == "merged"
        latencies = [r.latency_ms / 1000 for r in raw]
        for q, value in ((0.50, summary.p50), (0.95, summary.p95), (0.99, summary.p99)):
            assert_same_bucket(value, nearest_rank(latencies, q))
    assert report.canary is not None and report.canary.errors > 0
    md = report.markdown
    assert "from the merged latency distributions" in md
    assert report.stable is not None
    assert f"| requests | {report.canary.requests:,} | {report.stable.requests:,} |" in md
    path = save(root, ION, report)
    assert path.read_text(encoding="utf-8") == md
    assert (path.parent / f"{kind}-latest.md").read_text(encoding="utf-8") == md


def test_each_windows_p95_in_the_chart_matches_its_raw_requests(
    recorded: dict[str, Any],
) -> None:
    served: list[Record] = recorded["served"]
    for w in recorded["windows"]:
        raw = [
            r.latency_ms / 1000
            for r in _raw(served, w.revision)
            if w.start.timestamp() < r.ts <= w.end.timestamp()
        ]
        assert w.requests == len(raw)
        assert_same_bucket(w.p95, nearest_rank(raw, 0.95))
