"""Pure parts of the Cloud Monitoring provider: filters, windows, bucket layouts, merging."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from google.api import distribution_pb2
from google.cloud import monitoring_v3
from hypothesis import given
from hypothesis import strategies as st

from reconciler.metrics.cloud_monitoring import (
    Histogram,
    histogram_of,
    lagged_window,
    merge_histograms,
    point_inside,
    series_filter,
)

BucketOptions = distribution_pb2.Distribution.BucketOptions
END = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


# --- filter -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("services", "revisions", "expected"),
    [
        (
            ["ion-api"],
            ["ion-api-00042-xyz"],
            'metric.type = "run.googleapis.com/request_count" AND '
            'resource.type = "cloud_run_revision" AND '
            'resource.labels.service_name = one_of("ion-api") AND '
            'resource.labels.revision_name = one_of("ion-api-00042-xyz")',
        ),
        (
            ["pay-api", "ion-api", "pay-api"],
            ["b-1", "a-1"],
            'metric.type = "run.googleapis.com/request_count" AND '
            'resource.type = "cloud_run_revision" AND '
            'resource.labels.service_name = one_of("ion-api", "pay-api") AND '
            'resource.labels.revision_name = one_of("a-1", "b-1")',
        ),
        (
            ['we"ird\\'],
            ["r"],
            'metric.type = "run.googleapis.com/request_count" AND '
            'resource.type = "cloud_run_revision" AND '
            'resource.labels.service_name = one_of("we\\"ird\\\\") AND '
            'resource.labels.revision_name = one_of("r")',
        ),
    ],
    ids=["one-service", "sorted-deduplicated", "quotes-escaped"],
)
def test_series_filter(services: list[str], revisions: list[str], expected: str) -> None:
    assert series_filter("run.googleapis.com/request_count", services, revisions) == expected


def test_series_filter_keeps_one_region() -> None:
    # A service in several regions has the same service and revision names in each.
    got = series_filter("m", ["ion-api"], ["ion-api-00042-xyz"], "europe-west1")
    assert 'AND resource.labels.location = "europe-west1" AND' in got


@pytest.mark.parametrize(
    ("services", "revisions"), [([], ["r"]), (["s"], [])], ids=["no-service", "no-revision"]
)
def test_series_filter_needs_something_to_select(services: list[str], revisions: list[str]) -> None:
    with pytest.raises(ValueError, match="at least one"):
        series_filter("m", services, revisions)


# --- window -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("window", "lag", "start", "end"),
    [
        (timedelta(minutes=5), timedelta(0), END - timedelta(minutes=5), END),
        (
            timedelta(minutes=5),
            timedelta(minutes=3),
            END - timedelta(minutes=8),
            END - timedelta(minutes=3),
        ),
        (
            timedelta(hours=1),
            timedelta(seconds=90),
            END - timedelta(seconds=3690),
            END - timedelta(seconds=90),
        ),
    ],
    ids=["no-lag", "3m-lag", "1h-window"],
)
def test_lagged_window(window: timedelta, lag: timedelta, start: datetime, end: datetime) -> None:
    assert lagged_window(window, END, lag) == (start, end)


@pytest.mark.parametrize(
    ("window", "lag"),
    [(timedelta(0), timedelta(0)), (timedelta(minutes=5), timedelta(seconds=-1))],
    ids=["empty-window", "negative-lag"],
)
def test_lagged_window_rejects_nonsense(window: timedelta, lag: timedelta) -> None:
    with pytest.raises(ValueError):
        lagged_window(window, END, lag)


# --- bucket layouts -----------------------------------------------------------------------
def dist(options: BucketOptions | None, counts: list[int]) -> distribution_pb2.Distribution:
    d = distribution_pb2.Distribution(count=sum(counts), bucket_counts=counts)
    if options is not None:
        d.bucket_options.CopyFrom(options)
    return d


@pytest.mark.parametrize(
    ("options", "counts", "bounds"),
    [
        (
            BucketOptions(
                exponential_buckets=BucketOptions.Exponential(
                    num_finite_buckets=3, growth_factor=2.0, scale=1.0
                )
            ),
            [0, 1, 2],
            (1.0, 2.0, 4.0, 8.0),
        ),
        (
            BucketOptions(
                linear_buckets=BucketOptions.Linear(num_finite_buckets=2, width=10.0, offset=5.0)
            ),
            [1, 0, 0, 3],
            (5.0, 15.0, 25.0),
        ),
        (
            BucketOptions(explicit_buckets=BucketOptions.Explicit(bounds=[0.5, 1.5, 9.0])),
            [4],
            (0.5, 1.5, 9.0),
        ),
    ],
    ids=["exponential", "linear", "explicit"],
)
def test_histogram_of_reads_the_bucket_options(
    options: BucketOptions, counts: list[int], bounds: tuple[float, ...]
) -> None:
    h = histogram_of(dist(options, counts))
    assert h == Histogram(bounds, tuple(counts))


@pytest.mark.parametrize(
    "options",
    [None, BucketOptions(explicit_buckets=BucketOptions.Explicit(bounds=[]))],
    ids=["no-options", "no-bounds"],
)
def test_histogram_of_without_a_layout(options: BucketOptions | None) -> None:
    assert histogram_of(dist(options, [3])) is None


# --- merging ------------------------------------------------------------------------------
def test_merge_of_nothing_is_none() -> None:
    assert merge_histograms([]) is None


@pytest.mark.parametrize(
    ("parts", "expected"),
    [
        (
            [Histogram((1.0, 2.0), (1, 2)), Histogram((1.0, 2.0), (0, 1, 5))],
            Histogram((1.0, 2.0), (1, 3, 5)),
        ),
        ([Histogram((1.0,), (4,))], Histogram((1.0,), (4,))),
    ],
    ids=["trailing-zeros-omitted", "single"],
)
def test_merge_same_layout_adds_buckets(parts: list[Histogram], expected: Histogram) -> None:
    assert merge_histograms(parts) == expected


def test_merge_of_different_layouts_spreads_onto_the_union() -> None:
    coarse = Histogram((10.0, 20.0), (0, 4))  # 4 samples in [10, 20)
    fine = Histogram((10.0, 15.0, 20.0), (0, 1, 1))  # one in [10, 15), one in [15, 20)
    merged = merge_histograms([coarse, fine])

    assert merged is not None
    assert merged.bounds == (10.0, 15.0, 20.0)
    # The coarse bucket splits by width: 2 + 2; shares are kept in thousandths.
    assert merged.counts == (0, 3000, 3000, 0)
    assert merged.percentile(0.5) == pytest.approx(15.0)


def test_merge_of_different_layouts_keeps_underflow_and_overflow_honest() -> None:
    a = Histogram((10.0,), (2, 1))  # 2 in [0, 10), 1 at >= 10
    b = Histogram((5.0, 40.0), (0, 0, 1))  # 1 at >= 40
    merged = merge_histograms([a, b])

    assert merged is not None
    assert merged.bounds == (5.0, 10.0, 40.0)
    # [0, 10) splits onto (-inf, 5) and [5, 10); a's overflow stays at "at least 10".
    assert merged.counts == (1000, 1000, 1000, 1000)
    assert merged.percentile(1.0) == 40.0


@given(
    st.lists(
        st.tuples(
            st.lists(st.floats(0.1, 1000.0), min_size=1, max_size=6, unique=True),
            st.lists(st.integers(0, 50), min_size=1, max_size=8),
        ),
        min_size=1,
        max_size=4,
    )
)
def test_merge_keeps_every_sample(parts: list[tuple[list[float], list[int]]]) -> None:
    histograms = []
    for bounds, counts in parts:
        b = tuple(sorted(bounds))
        histograms.append(Histogram(b, tuple(counts[: len(b) + 1])))
    merged = merge_histograms(histograms)

    assert merged is not None
    total = sum(sum(h.counts) for h in histograms)
    scale = 1 if len({h.bounds for h in histograms}) == 1 else 1000
    assert sum(merged.counts) == pytest.approx(total * scale, abs=len(merged.counts))


# --- points -------------------------------------------------------------------------------
def _point(start: datetime | None, end: datetime) -> monitoring_v3.Point:
    interval = monitoring_v3.TimeInterval(end_time=end)
    if start is not None:
        interval.start_time = start
    return monitoring_v3.Point(interval=interval, value=monitoring_v3.TypedValue(int64_value=1))


W_START = END - timedelta(minutes=5)


@pytest.mark.parametrize(
    ("start", "end", "inside"),
    [
        (W_START, END, True),
        (END - timedelta(minutes=1), END - timedelta(seconds=30), True),
        (None, END - timedelta(minutes=1), True),
        (W_START - timedelta(minutes=1), END, False),
        (W_START, END + timedelta(minutes=1), False),
        (END, END + timedelta(minutes=1), False),
        (None, W_START, False),
    ],
    ids=["the-window", "within", "gauge-within", "starts-early", "ends-late", "after", "at-start"],
)
def test_only_points_inside_the_window_count(
    start: datetime | None, end: datetime, inside: bool
) -> None:
    assert point_inside(_point(start, end), W_START, END) is inside


def test_a_listing_request_is_the_one_proto_plus_builds() -> None:
    # The request is built as the protobuf message (proto-plus' marshalling was a sixth of a
    # steady tick's client CPU): the same bytes for random times, lengths and metrics.
    import random

    from google.cloud import monitoring_v3

    from reconciler.metrics.cloud_monitoring import (
        REQUEST_COUNT,
        REQUEST_LATENCIES,
        list_request,
    )

    rng = random.Random(15)
    base = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    for _ in range(300):
        window = timedelta(
            seconds=rng.choice([60, 300, 600, 3600]), microseconds=rng.choice([0, 7])
        )
        first = base + timedelta(seconds=rng.randrange(10**8), microseconds=rng.randrange(10**6))
        if rng.random() < 0.3:
            first = first.astimezone(timezone(timedelta(hours=rng.randrange(-12, 13))))
        bounds = [
            (first + i * window, first + (i + 1) * window) for i in range(rng.randrange(1, 5))
        ]
        metric = rng.choice([REQUEST_COUNT, REQUEST_LATENCIES])
        group_by = [
            "resource.labels.service_name",
            "resource.labels.revision_name",
            *(["metric.labels.response_code_class"] if metric == REQUEST_COUNT else []),
        ]
        want = monitoring_v3.ListTimeSeriesRequest(
            name="projects/p-1",
            filter=f"metric.type = {metric!r}",
            interval=monitoring_v3.TimeInterval(start_time=bounds[0][0], end_time=bounds[-1][1]),
            aggregation=monitoring_v3.Aggregation(
                alignment_period=window,
                per_series_aligner=monitoring_v3.Aggregation.Aligner.ALIGN_SUM,
                cross_series_reducer=monitoring_v3.Aggregation.Reducer.REDUCE_SUM,
                group_by_fields=group_by,
            ),
            view=monitoring_v3.ListTimeSeriesRequest.TimeSeriesView.FULL,
            page_size=100,
        )
        got = list_request("p-1", metric, f"metric.type = {metric!r}", window, bounds)
        got.page_size = 100
        pb = monitoring_v3.ListTimeSeriesRequest.pb
        assert pb(got).SerializeToString() == pb(want).SerializeToString()
        assert isinstance(got, monitoring_v3.ListTimeSeriesRequest)
