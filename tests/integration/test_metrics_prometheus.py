"""PrometheusProvider against a real Prometheus server scraping the emulator's `/metrics`.

The server is the `prometheus` binary (Debian package `prometheus`), started here on a free
loopback port with its own config and storage, never the system service. Without the binary
the module is skipped, except in CI (`CI=true`), where that is a failure.
"""

from __future__ import annotations

import bisect
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from reconciler.emulator import Emulator
from reconciler.emulator.dataplane import LATENCY_BUCKETS_SECONDS
from reconciler.metrics import MetricsError, StatsQuery, provider_for
from reconciler.metrics.prometheus import PrometheusProvider
from reconciler.model import ServiceRef
from reconciler.spec import PrometheusMetrics, PrometheusQueries
from reconciler.testing.prometheus import PrometheusServer, prometheus_binary

PROJECT, REGION = "naeda-genesis", "us-central1"
STABLE, CANARY = "ion-api-00041-abc", "ion-api-00042-xyz"
PAY_OLD, PAY_SLOW, PAY_IDLE = "pay-api-00007-old", "pay-api-00008-new", "pay-api-00009-idl"
WINDOW = timedelta(minutes=5)
SCENARIO: dict[str, Any] = {
    "project": PROJECT,
    "region": REGION,
    "latency_mode": "simulated",
    "seed": 5,
    "services": [
        {
            "name": "ion-api",
            "traffic": {STABLE: 90, CANARY: 10},
            "tags": {"canary": CANARY},
            "revisions": [
                {"name": STABLE, "behavior": {"latency_ms": {"p50": 120, "p95": 300}}},
                {
                    "name": CANARY,
                    "behavior": {"error_rate": 0.07, "latency_ms": {"p50": 150, "p95": 400}},
                },
            ],
        },
        {
            "name": "pay-api",
            "traffic": {PAY_OLD: 50, PAY_SLOW: 50},
            "revisions": [
                {"name": PAY_OLD, "behavior": {"latency_ms": {"p50": 50, "p95": 80}}},
                {"name": PAY_SLOW, "behavior": {"latency_ms": {"p50": 3000, "p95": 8000}}},
                {"name": PAY_IDLE},
            ],
        },
    ],
}
CANARY_EXTRA = 100
LOAD = {"ion-api": 700, "pay-api": 200}
ION = StatsQuery(ServiceRef(PROJECT, REGION, "ion-api"), (STABLE, CANARY))
PAY = StatsQuery(ServiceRef(PROJECT, REGION, "pay-api"), (PAY_OLD, PAY_SLOW, PAY_IDLE))


@dataclass
class Served:
    """What the data plane served for one revision (from the emulator's request log)."""

    requests: int = 0
    errors: int = 0
    successes: int = 0
    latencies: list[float] = field(default_factory=list)

    def percentile(self, q: float) -> float:
        """The sample quantile in seconds: the value at rank ceil(q * n)."""
        ordered = sorted(self.latencies)
        return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def served(emu: Emulator) -> dict[tuple[str, str], Served]:
    out: dict[tuple[str, str], Served] = {}
    for rec in emu.world.served():
        s = out.setdefault((rec.service, rec.revision), Served())
        s.requests += 1
        s.errors += rec.code >= 500
        s.successes += 200 <= rec.code < 300
        s.latencies.append(rec.latency_ms / 1000.0)
    return out


def bucket_of(value: float) -> tuple[float, float]:
    """The histogram bucket (lower, upper] of the emulator's `/metrics` holding `value`."""
    bounds = [0.0, *LATENCY_BUCKETS_SECONDS, math.inf]
    i = bisect.bisect_left(bounds, value)
    return bounds[i - 1], bounds[i]


@dataclass
class Setup:
    emu: Emulator
    prom: PrometheusServer
    before: datetime
    """A time before any request was served."""


@pytest.fixture(scope="module")
def setup() -> Iterator[Setup]:
    """One emulator with its load served and scraped, and one Prometheus for the module
    (Prometheus takes a few seconds to scrape a new target for the first time)."""
    binary = prometheus_binary()
    if binary is None:
        reason = "prometheus binary not found (apt-get install prometheus)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}; CI must install it")
        pytest.skip(reason)
    with (
        Emulator.start(SCENARIO) as emu,
        PrometheusServer.start([f"{emu.http_url}/metrics"], binary=binary) as prom,
    ):
        prom.wait_for_targets()
        before = datetime.now(UTC)
        time.sleep(0.01)
        for service, n in LOAD.items():
            emu.load(service, n, concurrency=16)
        # Through the canary's tag URL too, so its 7% errors cannot all miss by chance.
        emu.load("ion-api", CANARY_EXTRA, tag="canary", concurrency=16)
        total = sum(LOAD.values()) + CANARY_EXTRA
        prom.wait_until("sum(cloudrun_request_count_total)", lambda v: v == total)
        yield Setup(emu, prom, before)


def test_counts_equal_what_the_data_plane_served(setup: Setup) -> None:
    truth = served(setup.emu)
    with PrometheusProvider(setup.prom.url) as p:
        stats = p.window_stats([ION, PAY], WINDOW, datetime.now(UTC))

    assert p.calls == 6  # one query per measure for the whole batch
    assert set(stats) == {
        ("ion-api", STABLE),
        ("ion-api", CANARY),
        ("pay-api", PAY_OLD),
        ("pay-api", PAY_SLOW),
        ("pay-api", PAY_IDLE),
    }
    for key, t in truth.items():
        s = stats[key]
        assert (s.requests, s.errors, s.successes) == (t.requests, t.errors, t.successes), key
    assert stats[("ion-api", CANARY)].errors > 0
    assert stats[("ion-api", STABLE)].errors == 0


def test_percentiles_match_the_served_latencies(setup: Setup) -> None:
    truth = served(setup.emu)
    with PrometheusProvider(setup.prom.url) as p:
        stats = p.window_stats([ION, PAY], WINDOW, datetime.now(UTC))

    for key, t in truth.items():
        s = stats[key]
        for q, got in [(0.50, s.p50), (0.95, s.p95), (0.99, s.p99)]:
            # histogram_quantile interpolates inside the bucket that holds the true quantile.
            lower, upper = bucket_of(t.percentile(q))
            assert got is not None and lower <= got <= upper, (key, q, got)
    # The behaviour shows: the slow revision sits in the seconds, the fast one below 100 ms.
    slow, fast = stats[("pay-api", PAY_SLOW)], stats[("pay-api", PAY_OLD)]
    assert slow.p50 is not None and 2.5 <= slow.p50 <= 5.0
    assert fast.p95 is not None and fast.p95 <= 0.1


def test_a_revision_without_traffic_is_no_data(setup: Setup) -> None:
    with PrometheusProvider(setup.prom.url) as p:
        idle = p.window_stats([PAY], WINDOW, datetime.now(UTC))[("pay-api", PAY_IDLE)]

    assert (idle.requests, idle.errors, idle.successes) == (0, 0, 0)
    assert (idle.p50, idle.p95, idle.p99) == (None, None, None)


def test_the_window_ends_at_end(setup: Setup) -> None:
    with PrometheusProvider(setup.prom.url) as p:
        stats = p.window_stats([ION], WINDOW, setup.before)

    assert all(s.requests == 0 and s.p95 is None for s in stats.values())
    assert all(s.end == setup.before and s.start == setup.before - WINDOW for s in stats.values())


def test_consecutive_windows_are_one_range_query_per_measure(setup: Setup) -> None:
    """`windows_stats`: one range query per measure (step = the window) answers what one
    instant query per window answers, oldest window first."""
    end = datetime.now(UTC)
    # Every scrape stamped before `end` has landed once one stamped after it has (scrapes of
    # a target land in order), however long that takes on a loaded machine.
    setup.prom.wait_until(
        "min(timestamp(cloudrun_request_count_total))", lambda t: t > end.timestamp()
    )
    window = timedelta(minutes=5)
    with PrometheusProvider(setup.prom.url) as many, PrometheusProvider(setup.prom.url) as one:
        runs = many.windows_stats([ION, PAY], window, 4, end)
        singles = [one.window_stats([ION, PAY], window, end - k * window) for k in (3, 2, 1, 0)]

    assert many.calls == 6 and one.calls == 24
    assert [list(r) for r in runs] == [list(s) for s in singles]
    assert runs == singles
    assert [r[("ion-api", STABLE)].end for r in runs] == [end - k * window for k in (3, 2, 1, 0)]
    total = sum(w.requests for r in runs for w in r.values())
    assert total == sum(LOAD.values()) + CANARY_EXTRA  # all served in the last 20 minutes


def test_configured_queries_replace_the_defaults(setup: Setup) -> None:
    truth = served(setup.emu)
    # Non-2xx, non-5xx answers counted as "errors" by a custom query: here there are none,
    # so every revision reads 0 errors, which the default query would not give the canary.
    queries = PrometheusQueries(
        errors="sum by (service, revision) (max_over_time(cloudrun_request_count_total{"
        'service=~"{service}", revision=~"{revision}", response_code_class="4xx"}[{window}]))',
    )
    provider = provider_for(
        PrometheusMetrics(provider="prometheus", url=setup.prom.url, queries=queries)
    )
    assert isinstance(provider, PrometheusProvider)
    with provider as p:
        stats = p.window_stats([ION], WINDOW, datetime.now(UTC))

    canary = stats[("ion-api", CANARY)]
    assert canary.errors == 0 < truth[("ion-api", CANARY)].errors
    assert canary.requests == truth[("ion-api", CANARY)].requests


def test_a_bad_query_is_a_metrics_error(setup: Setup) -> None:
    queries = PrometheusQueries(requests="sum by (service, revision) (rate(")
    with (
        PrometheusProvider(setup.prom.url, queries) as p,
        pytest.raises(MetricsError, match=r"prometheus .*: requests: bad_data"),
    ):
        p.window_stats([ION], WINDOW, datetime.now(UTC))


def test_a_query_without_the_labels_is_a_metrics_error(setup: Setup) -> None:
    queries = PrometheusQueries(requests="sum(cloudrun_request_count_total)")
    with (
        PrometheusProvider(setup.prom.url, queries) as p,
        pytest.raises(MetricsError, match=r"without service and revision labels"),
    ):
        p.window_stats([ION], WINDOW, datetime.now(UTC))


def test_an_unreachable_server_is_a_metrics_error() -> None:
    with (
        PrometheusProvider("http://127.0.0.1:9", timeout=2.0) as p,
        pytest.raises(MetricsError, match=r"prometheus http://127\.0\.0\.1:9: requests: Connect"),
    ):
        p.window_stats([ION], WINDOW, datetime.now(UTC))
