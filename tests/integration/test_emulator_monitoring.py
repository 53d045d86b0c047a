"""ListTimeSeries over measured traffic, driven only by the official MetricServiceClient."""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from google.api import distribution_pb2, metric_pb2
from google.api_core import exceptions
from google.cloud import monitoring_v3

from reconciler import clients
from reconciler.emulator import Emulator

COUNT = "run.googleapis.com/request_count"
LATENCIES = "run.googleapis.com/request_latencies"
# Cloud Monitoring reports a request at the end of its 60 s sample and makes it readable 180 s
# later (the emulator's defaults): tests move the emulator clock past that before reading.
INGESTED = 60 + 180
A = monitoring_v3.Aggregation.Aligner
R = monitoring_v3.Aggregation.Reducer

SCENARIO: dict[str, Any] = {
    "project": "metrics-proj",
    "region": "us-central1",
    "seed": 11,
    "services": [
        {
            "name": "checkout",
            "traffic": {"checkout-00001-sta": 90, "checkout-00002-can": 10},
            "revisions": [
                {
                    "name": "checkout-00001-sta",
                    "behavior": {"error_rate": 0.0, "latency_ms": {"p50": 120, "p95": 300}},
                },
                {
                    "name": "checkout-00002-can",
                    "behavior": {"error_rate": 0.1, "latency_ms": {"p50": 150, "p95": 400}},
                },
            ],
        },
        {"name": "search", "revisions": [{"name": "search-00001-one"}]},
        {"name": "users", "revisions": [{"name": "users-00001-one"}]},
    ],
}


@pytest.fixture
def emu() -> Iterator[Emulator]:
    with Emulator.start(SCENARIO, latency_mode="simulated") as emu:
        yield emu


@pytest.fixture
def metrics(emu: Emulator) -> monitoring_v3.MetricServiceClient:
    return clients.metric_client(emu.grpc_target)


def request(
    emu: Emulator,
    flt: str,
    window: timedelta = timedelta(minutes=5),
    end: datetime | None = None,
    **aggregation: Any,
) -> monitoring_v3.ListTimeSeriesRequest:
    end = end or emu.now() + timedelta(seconds=1)
    return monitoring_v3.ListTimeSeriesRequest(
        name=f"projects/{emu.project}",
        filter=flt,
        interval=monitoring_v3.TimeInterval(start_time=end - window, end_time=end),
        aggregation=monitoring_v3.Aggregation(**aggregation) if aggregation else None,
    )


def by_revision(
    metrics: monitoring_v3.MetricServiceClient, req: monitoring_v3.ListTimeSeriesRequest
) -> dict[tuple[str, ...], Any]:
    out = {}
    for ts in metrics.list_time_series(request=req):
        key = tuple(sorted({**ts.resource.labels, **ts.metric.labels}.values()))
        out[key] = ts
    return out


def checkout_sums(
    emu: Emulator,
    metrics: monitoring_v3.MetricServiceClient,
    metric: str,
    *group_by: str,
) -> dict[tuple[str, ...], Any]:
    """The checkout service's `metric` over the last 5 minutes, one 5-minute delta summed per
    value of the `group_by` labels (keyed as `by_revision` keys them)."""
    req = request(
        emu,
        f'metric.type = "{metric}" AND resource.labels.service_name = "checkout"',
        alignment_period=timedelta(minutes=5),
        per_series_aligner=A.ALIGN_DELTA,
        cross_series_reducer=R.REDUCE_SUM,
        group_by_fields=list(group_by),
    )
    return by_revision(metrics, req)


def percentile(dist: distribution_pb2.Distribution, q: float) -> float:
    """Percentile from exponential buckets, interpolated inside the bucket (client-side)."""
    opts = dist.bucket_options.exponential_buckets
    rank, seen = q * dist.count, 0
    for i, c in enumerate(dist.bucket_counts):
        if c and seen + c >= rank:
            lower = 0.0 if i == 0 else opts.scale * opts.growth_factor ** (i - 1)
            upper = opts.scale * opts.growth_factor**i
            return lower + (upper - lower) * (rank - seen) / c
        seen += c
    raise AssertionError("rank beyond the distribution")


def test_split_and_latencies_are_measured_from_served_traffic(
    emu: Emulator, metrics: monitoring_v3.MetricServiceClient
) -> None:
    served = emu.load("checkout", 2000, concurrency=8)
    assert served.sent == 2000
    emu.advance_clock(INGESTED)

    counts = checkout_sums(
        emu, metrics, COUNT, "resource.labels.revision_name", "metric.labels.response_code_class"
    )
    n = {k: ts.points[0].value.int64_value for k, ts in counts.items()}
    stable = n[("2xx", "checkout-00001-sta")]
    canary = n[("2xx", "checkout-00002-can")] + n[("5xx", "checkout-00002-can")]
    assert stable + canary == 2000
    # 90/10 within 4 standard deviations of a binomial(2000, 0.1).
    assert abs(canary / 2000 - 0.10) < 4 * math.sqrt(0.1 * 0.9 / 2000)
    assert abs(n[("5xx", "checkout-00002-can")] / canary - 0.10) < 4 * math.sqrt(0.09 / canary)
    assert ("5xx", "checkout-00001-sta") not in n
    assert dict(served.by_revision) == {
        "checkout-00001-sta": stable,
        "checkout-00002-can": canary,
    }
    series = next(iter(counts.values()))
    assert series.metric_kind == metric_pb2.MetricDescriptor.DELTA
    assert series.value_type == metric_pb2.MetricDescriptor.INT64

    dists = checkout_sums(emu, metrics, LATENCIES, "resource.labels.revision_name")
    stable_d = dists[("checkout-00001-sta",)].points[0].value.distribution_value
    canary_d = dists[("checkout-00002-can",)].points[0].value.distribution_value
    assert stable_d.bucket_options.exponential_buckets.growth_factor > 1
    assert (stable_d.count, canary_d.count) == (stable, canary)
    assert percentile(stable_d, 0.50) == pytest.approx(120, rel=0.10)
    assert percentile(stable_d, 0.95) == pytest.approx(300, rel=0.15)
    assert percentile(canary_d, 0.50) == pytest.approx(150, rel=0.20)
    assert percentile(canary_d, 0.95) == pytest.approx(400, rel=0.35)


def test_simulated_latency_records_long_latencies_without_waiting() -> None:
    scenario = {
        "project": "slow-proj",
        "seed": 3,
        "services": [
            {
                "name": "slow",
                "revisions": [
                    {
                        "name": "slow-00001-aaa",
                        "behavior": {"latency_ms": {"p50": 8000, "p95": 25000}},
                    }
                ],
            }
        ],
    }
    with Emulator.start(scenario, latency_mode="simulated") as emu:
        emu.load("slow", 1000)
        emu.advance_clock(INGESTED)
        metrics = clients.metric_client(emu.grpc_target)
        req = request(
            emu,
            f'metric.type = "{LATENCIES}"',
            alignment_period=timedelta(minutes=5),
            per_series_aligner=A.ALIGN_DELTA,
        )
        [series] = list(metrics.list_time_series(request=req))
        dist = series.points[0].value.distribution_value
        assert dist.count == 1000
        assert percentile(dist, 0.95) == pytest.approx(25000, rel=0.20)
        assert percentile(dist, 0.50) == pytest.approx(8000, rel=0.15)
        req.aggregation.per_series_aligner = A.ALIGN_PERCENTILE_95
        [p95] = list(metrics.list_time_series(request=req))
        assert p95.points[0].value.double_value == pytest.approx(percentile(dist, 0.95), rel=0.01)


def test_one_call_covers_several_services(
    emu: Emulator, metrics: monitoring_v3.MetricServiceClient
) -> None:
    emu.load("checkout", 30)
    emu.load("search", 20)
    emu.load("users", 10)
    emu.advance_clock(INGESTED)
    agg = {
        "alignment_period": timedelta(minutes=5),
        "per_series_aligner": A.ALIGN_DELTA,
        "cross_series_reducer": R.REDUCE_SUM,
        "group_by_fields": ["resource.labels.service_name"],
    }

    def totals(flt: str) -> dict[str, int]:
        return {
            ts.resource.labels["service_name"]: ts.points[0].value.int64_value
            for ts in metrics.list_time_series(request=request(emu, flt, **agg))
        }

    assert totals(f'metric.type = "{COUNT}"') == {"checkout": 30, "search": 20, "users": 10}
    assert totals(
        f'metric.type = "{COUNT}" AND resource.labels.service_name = one_of("search", "users")'
    ) == {"search": 20, "users": 10}
    assert totals(
        f'metric.type = "{COUNT}" AND resource.type = "cloud_run_revision" '
        f'AND resource.labels.service_name != "checkout"'
    ) == {"search": 20, "users": 10}
    assert totals(
        f'metric.type = "{COUNT}" AND resource.label.revision_name = starts_with("users-")'
    ) == {"users": 10}


def test_interval_and_alignment_periods(
    emu: Emulator, metrics: monitoring_v3.MetricServiceClient
) -> None:
    emu.load("search", 40)
    emu.advance_clock(600)
    emu.load("search", 15)
    emu.advance_clock(INGESTED)
    flt = f'metric.type = "{COUNT}" AND resource.labels.service_name = "search"'

    [recent] = metrics.list_time_series(
        request=request(
            emu, flt, alignment_period=timedelta(minutes=5), per_series_aligner=A.ALIGN_DELTA
        )
    )
    assert [p.value.int64_value for p in recent.points] == [15]

    [both] = metrics.list_time_series(
        request=request(
            emu,
            flt,
            window=timedelta(minutes=20),
            alignment_period=timedelta(minutes=5),
            per_series_aligner=A.ALIGN_DELTA,
        )
    )
    # Newest first; the empty period between is filled in by interpolation, as Google
    # documents ALIGN_DELTA ("the aligned value for such a period is created by
    # interpolation").
    assert [p.value.int64_value for p in both.points] == [15, 28, 40]
    newest, between, oldest = both.points
    assert newest.interval.end_time > between.interval.end_time > oldest.interval.end_time
    assert newest.interval.end_time - newest.interval.start_time == timedelta(minutes=5)
    assert between.interval.end_time - oldest.interval.end_time == timedelta(minutes=5)

    # ALIGN_SUM sums what each period holds: no point where there was no data.
    [summed] = metrics.list_time_series(
        request=request(
            emu,
            flt,
            window=timedelta(minutes=20),
            alignment_period=timedelta(minutes=5),
            per_series_aligner=A.ALIGN_SUM,
        )
    )
    assert [p.value.int64_value for p in summed.points] == [15, 40]
    gap = summed.points[0].interval.end_time - summed.points[1].interval.end_time
    assert gap == timedelta(minutes=10)

    [rate] = metrics.list_time_series(
        request=request(
            emu, flt, alignment_period=timedelta(minutes=5), per_series_aligner=A.ALIGN_RATE
        )
    )
    assert rate.points[0].value.double_value == pytest.approx(15 / 300)
    assert rate.value_type == metric_pb2.MetricDescriptor.DOUBLE


def test_raw_points_without_aggregation(
    emu: Emulator, metrics: monitoring_v3.MetricServiceClient
) -> None:
    emu.load("users", 25)
    emu.advance_clock(INGESTED)
    series = list(
        metrics.list_time_series(
            request=request(
                emu, f'metric.type = "{COUNT}" AND resource.labels.service_name = "users"'
            )
        )
    )
    assert sum(p.value.int64_value for ts in series for p in ts.points) == 25
    assert {ts.metric.labels["response_code"] for ts in series} == {"200"}
    assert series[0].resource.labels["project_id"] == "metrics-proj"
    assert series[0].resource.type == "cloud_run_revision"


def test_no_traffic_means_no_series(
    emu: Emulator, metrics: monitoring_v3.MetricServiceClient
) -> None:
    emu.load("search", 5)
    emu.advance_clock(INGESTED)
    req = request(
        emu,
        f'metric.type = "{COUNT}" AND resource.labels.service_name = "users"',
        alignment_period=timedelta(minutes=5),
        per_series_aligner=A.ALIGN_DELTA,
    )
    assert list(metrics.list_time_series(request=req)) == []


def test_paging_and_headers_view(emu: Emulator, metrics: monitoring_v3.MetricServiceClient) -> None:
    for service in ("checkout", "search", "users"):
        emu.load(service, 10)
    emu.advance_clock(INGESTED)
    req = request(
        emu,
        f'metric.type = "{COUNT}"',
        alignment_period=timedelta(minutes=5),
        per_series_aligner=A.ALIGN_DELTA,
    )
    everything = list(metrics.list_time_series(request=req))
    req.page_size = 2
    pages = list(metrics.list_time_series(request=req).pages)
    assert all(len(p.time_series) <= 2 for p in pages)
    assert len(pages) == math.ceil(len(everything) / 2) >= 2
    assert [ts for p in pages for ts in p.time_series] == everything
    req.page_size = 0
    req.view = monitoring_v3.ListTimeSeriesRequest.TimeSeriesView.HEADERS
    headers = list(metrics.list_time_series(request=req))
    assert len(headers) == len(everything)
    assert all(not ts.points for ts in headers)


def test_full_pages_count_points_and_cut_a_series(
    emu: Emulator, metrics: monitoring_v3.MetricServiceClient
) -> None:
    """In FULL view `page_size` is the most points a page holds (Google's field doc): a
    series with more points goes on, same labels, at the top of the next page."""
    for _ in range(5):
        emu.load("search", 10)
        emu.advance_clock(300)
    emu.advance_clock(INGESTED)
    req = request(
        emu,
        f'metric.type = "{COUNT}" AND resource.labels.service_name = "search"',
        window=timedelta(minutes=30),
        alignment_period=timedelta(minutes=5),
        per_series_aligner=A.ALIGN_SUM,
    )
    [whole] = metrics.list_time_series(request=req)
    assert len(whole.points) == 5
    req.page_size = 2
    pages = list(metrics.list_time_series(request=req).pages)
    assert [len(p.time_series[0].points) for p in pages] == [2, 2, 1]
    assert all(p.time_series[0].resource == whole.resource for p in pages)
    assert [pt for p in pages for pt in p.time_series[0].points] == list(whole.points)


@pytest.mark.parametrize(
    ("flt", "aggregation"),
    [
        ('resource.labels.service_name = "search"', {}),
        (f'metric.type = "{COUNT}" AND (', {}),
        (f'metric.type = "{COUNT}" AND foo.bar = "x"', {}),
        (
            f'metric.type = "{COUNT}"',
            {"cross_series_reducer": R.REDUCE_SUM, "group_by_fields": ["resource.labels.x"]},
        ),
        (f'metric.type = "{COUNT}"', {"per_series_aligner": A.ALIGN_DELTA}),
        (
            f'metric.type = "{LATENCIES}"',
            {"alignment_period": timedelta(minutes=1), "per_series_aligner": A.ALIGN_RATE},
        ),
    ],
    ids=[
        "no-metric-type",
        "syntax",
        "unknown-field",
        "reducer-without-aligner",
        "aligner-without-period",
        "rate-of-distribution",
    ],
)
def test_bad_requests_are_invalid_argument(
    emu: Emulator,
    metrics: monitoring_v3.MetricServiceClient,
    flt: str,
    aggregation: dict[str, Any],
) -> None:
    emu.load("search", 3)
    emu.advance_clock(INGESTED)
    with pytest.raises(exceptions.InvalidArgument):
        list(metrics.list_time_series(request=request(emu, flt, **aggregation)))


def test_injected_fault_surfaces_as_service_unavailable(
    emu: Emulator, metrics: monitoring_v3.MetricServiceClient
) -> None:
    emu.fault("ListTimeSeries", rate=1.0)
    with pytest.raises(exceptions.ServiceUnavailable):
        metrics.list_time_series(request=request(emu, f'metric.type = "{COUNT}"'), retry=None)
    assert emu.calls["ListTimeSeries"] == 1
