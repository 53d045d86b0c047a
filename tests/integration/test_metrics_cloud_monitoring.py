"""CloudMonitoringProvider with the official Monitoring client against the emulator.

The emulator's data plane serves real HTTP load and its ListTimeSeries answers from those
requests, so every expectation here is computed from what was actually served (the world's
request log), never from numbers the test made up.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest

from reconciler.clients import metric_client
from reconciler.emulator import Emulator
from reconciler.metrics import MetricsError, StatsQuery
from reconciler.metrics.cloud_monitoring import (
    REQUEST_COUNT,
    REQUEST_LATENCIES,
    CloudMonitoringProvider,
)
from reconciler.model import ServiceRef

PROJECT, OTHER_PROJECT, REGION = "naeda-genesis", "naeda-other", "us-central1"
STABLE, CANARY = "ion-api-00041-abc", "ion-api-00042-xyz"
PAY_OLD, PAY_SLOW, PAY_IDLE = "pay-api-00007-old", "pay-api-00008-new", "pay-api-00009-idl"
GEO = "geo-api-00001-aaa"
WINDOW = timedelta(minutes=5)
SCENARIO: dict[str, Any] = {
    "project": PROJECT,
    "region": REGION,
    "latency_mode": "simulated",
    "seed": 11,
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
                {"name": PAY_SLOW, "behavior": {"latency_ms": {"p50": 800, "p95": 2000}}},
                {"name": PAY_IDLE},
            ],
        },
        {
            "name": "geo-api",
            "project": OTHER_PROJECT,
            "revisions": [{"name": GEO, "behavior": {"client_error_rate": 0.2}}],
        },
    ],
}
CANARY_EXTRA = 100
# Two samples (a load may straddle a minute) plus Cloud Monitoring's 180 s ingestion delay.
INGESTED = 2 * 60 + 180
LOAD = {"ion-api": 700, "pay-api": 200, "geo-api": 60}


def ref(service: str, project: str = PROJECT) -> ServiceRef:
    return ServiceRef(project, REGION, service)


ION = StatsQuery(ref("ion-api"), (STABLE, CANARY))
PAY = StatsQuery(ref("pay-api"), (PAY_OLD, PAY_SLOW, PAY_IDLE))
GEO_Q = StatsQuery(ref("geo-api", OTHER_PROJECT), (GEO,))


@dataclass
class Served:
    """What the data plane served for one revision (from the emulator's request log)."""

    requests: int = 0
    errors: int = 0
    successes: int = 0
    latencies_ms: list[float] = field(default_factory=list)

    def percentile(self, q: float) -> float:
        """The sample quantile in seconds: the value at rank ceil(q * n)."""
        ordered = sorted(self.latencies_ms)
        return ordered[max(0, math.ceil(q * len(ordered)) - 1)] / 1000.0


def served(emu: Emulator) -> dict[tuple[str, str], Served]:
    out: dict[tuple[str, str], Served] = {}
    for rec in emu.world.served():
        s = out.setdefault((rec.service, rec.revision), Served())
        s.requests += 1
        s.errors += rec.code >= 500
        s.successes += 200 <= rec.code < 300
        s.latencies_ms.append(rec.latency_ms)
    return out


@pytest.fixture(scope="module")
def loaded() -> Iterator[Emulator]:
    """One emulator with the load served once; tests only read it (faults are cleared)."""
    with Emulator.start(SCENARIO) as emu:
        for service, n in LOAD.items():
            emu.load(service, n, concurrency=16)
        # Through the canary's tag URL too, so its 7% errors cannot all miss by chance.
        emu.load("ion-api", CANARY_EXTRA, tag="canary", concurrency=16)
        # Past the load's last sample (it may straddle a minute) plus the ingestion delay, so
        # the provider's default 3-minute lag reads all of it.
        emu.advance_clock(INGESTED)
        yield emu


@pytest.fixture
def emu(loaded: Emulator) -> Iterator[Emulator]:
    loaded.reset_counters()
    yield loaded
    loaded.clear_faults()


def provider(emu: Emulator, **kw: Any) -> CloudMonitoringProvider:
    kw.setdefault("backoff", 0.0)
    return CloudMonitoringProvider(metric_client(emu.grpc_target), **kw)


def test_counts_equal_what_the_data_plane_served(emu: Emulator) -> None:
    truth = served(emu)
    stats = provider(emu).window_stats([ION], WINDOW, emu.now())

    assert set(stats) == {("ion-api", STABLE), ("ion-api", CANARY)}
    for key, s in stats.items():
        assert (s.requests, s.errors, s.successes) == (
            truth[key].requests,
            truth[key].errors,
            truth[key].successes,
        )
    # The split and the canary's error rate are what the scenario asked for.
    assert stats[("ion-api", CANARY)].requests == pytest.approx(70 + CANARY_EXTRA, abs=35)
    assert stats[("ion-api", CANARY)].errors > 0
    assert stats[("ion-api", STABLE)].errors == 0


def test_percentiles_from_the_buckets_match_the_served_latencies(emu: Emulator) -> None:
    truth = served(emu)
    stats = provider(emu).window_stats([ION, PAY], WINDOW, emu.now())

    for key in [("ion-api", STABLE), ("ion-api", CANARY), ("pay-api", PAY_OLD)]:
        s = stats[key]
        for q, got in [(0.50, s.p50), (0.95, s.p95), (0.99, s.p99)]:
            # Exponential buckets grow by 15%: the estimate shares a bucket with the truth.
            assert got == pytest.approx(truth[key].percentile(q), rel=0.15), (key, q)
    slow = stats[("pay-api", PAY_SLOW)]
    assert slow.p50 == pytest.approx(truth[("pay-api", PAY_SLOW)].percentile(0.5), rel=0.15)
    # And the behaviour shows: the slow revision's p50 near 0.8 s, far above the fast one's.
    assert slow.p50 == pytest.approx(0.8, rel=0.3)
    assert stats[("pay-api", PAY_OLD)].p95 is not None
    assert slow.p50 > 5 * stats[("pay-api", PAY_OLD)].p95


def test_one_call_per_metric_per_project_for_a_whole_batch(emu: Emulator) -> None:
    truth = served(emu)
    p = provider(emu)
    stats = p.window_stats([ION, PAY, GEO_Q], WINDOW, emu.now())

    assert p.calls == {
        (PROJECT, REQUEST_COUNT): 1,
        (PROJECT, REQUEST_LATENCIES): 1,
        (OTHER_PROJECT, REQUEST_COUNT): 1,
        (OTHER_PROJECT, REQUEST_LATENCIES): 1,
    }
    assert emu.calls == {"ListTimeSeries": 4}
    assert p.rpcs == 4
    assert len(stats) == 6
    geo = stats[("geo-api", GEO)]
    assert geo.requests == truth[("geo-api", GEO)].requests == LOAD["geo-api"]
    # 429s are neither 5xx errors nor 2xx successes.
    assert geo.errors == 0
    assert 0 < geo.successes < geo.requests


def test_pages_are_followed_within_one_listing(emu: Emulator) -> None:
    whole = provider(emu).window_stats([ION, PAY], WINDOW, emu.now())
    emu.reset_counters()
    p = provider(emu, page_size=1)
    paged = p.window_stats([ION, PAY], WINDOW, emu.now())

    assert p.calls == {(PROJECT, REQUEST_COUNT): 1, (PROJECT, REQUEST_LATENCIES): 1}
    assert p.rpcs == emu.calls["ListTimeSeries"] > 2
    assert {k: (s.requests, s.errors, s.p95) for k, s in paged.items()} == {
        k: (s.requests, s.errors, s.p95) for k, s in whole.items()
    }


def test_a_revision_without_traffic_is_no_data(emu: Emulator) -> None:
    stats = provider(emu).window_stats([PAY], WINDOW, emu.now())

    idle = stats[("pay-api", PAY_IDLE)]
    assert (idle.requests, idle.errors, idle.successes) == (0, 0, 0)
    assert (idle.p50, idle.p95, idle.p99) == (None, None, None)
    assert idle.error_rate is None


def test_transient_unavailable_is_retried(emu: Emulator) -> None:
    truth = served(emu)
    emu.fault("ListTimeSeries", rate=1.0, times=2)
    p = provider(emu, attempts=4)
    stats = p.window_stats([ION], WINDOW, emu.now())

    assert stats[("ion-api", CANARY)].requests == truth[("ion-api", CANARY)].requests
    assert p.rpcs == emu.calls["ListTimeSeries"] == 4  # two failures, then both metrics
    assert sum(p.calls.values()) == 2


def test_an_exhausted_quota_is_retried(emu: Emulator) -> None:
    truth = served(emu)
    emu.fault("ListTimeSeries", code="RESOURCE_EXHAUSTED", times=1)
    p = provider(emu, attempts=3)
    stats = p.window_stats([ION], WINDOW, emu.now())

    assert stats[("ion-api", CANARY)].requests == truth[("ion-api", CANARY)].requests
    assert p.rpcs == emu.calls["ListTimeSeries"] == 3  # one refusal, then both metrics


def test_persistent_unavailable_gives_up_after_the_bound(emu: Emulator) -> None:
    emu.fault("ListTimeSeries", rate=1.0)
    p = provider(emu, attempts=3)

    with pytest.raises(MetricsError) as info:
        p.window_stats([ION], WINDOW, emu.now())

    assert emu.calls["ListTimeSeries"] == p.rpcs == 3
    message = str(info.value)
    assert "\n" not in message
    assert PROJECT in message and REQUEST_COUNT in message and "3 attempts" in message


def test_other_api_errors_are_not_retried(emu: Emulator) -> None:
    p = provider(emu, attempts=4)
    bad = StatsQuery(ServiceRef("bad/project", REGION, "ion-api"), (STABLE,))

    with pytest.raises(MetricsError, match=r"project bad/project: run\.googleapis\.com/request"):
        p.window_stats([bad], WINDOW, emu.now())

    assert p.rpcs == emu.calls["ListTimeSeries"] == 1


def test_ingestion_lag_moves_the_window_back() -> None:
    scenario = {**SCENARIO, "services": [SCENARIO["services"][0]]}
    with Emulator.start(scenario) as emu:
        early = emu.load("ion-api", 40)
        emu.advance_clock(600)
        late = emu.load("ion-api", 25)
        unlagged = provider(emu, ingestion_lag=timedelta(0)).window_stats([ION], WINDOW, emu.now())
        emu.advance_clock(INGESTED)
        end = emu.now()

        fresh = provider(emu).window_stats([ION], WINDOW, end)
        lagged = provider(emu, ingestion_lag=timedelta(minutes=10)).window_stats([ION], WINDOW, end)

    def total(stats: Any) -> int:
        return sum(s.requests for s in stats.values())

    # Without the lag, a window ending now misses what Cloud Monitoring has not ingested yet.
    assert total(unlagged) == 0
    assert total(fresh) == late.sent
    assert total(lagged) == early.sent
    s = lagged[("ion-api", STABLE)]
    assert (s.start, s.end) == (end - timedelta(minutes=15), end - timedelta(minutes=10))


def test_partial_results_make_every_window_incomplete(emu: Emulator) -> None:
    whole = provider(emu).window_stats([ION], WINDOW, emu.now())
    assert all(s.incomplete is None for s in whole.values())
    emu.partial_results("a shard timed out", {"metric.labels.response_code_class": "5xx"})
    try:
        stats = provider(emu).window_stats([ION], WINDOW, emu.now())
    finally:
        emu.clear_partial_results()
    canary = stats[("ion-api", CANARY)]
    # The 5xx series was dropped: the canary reads error-free, but it says it is incomplete.
    assert whole[("ion-api", CANARY)].errors > 0 and canary.errors == 0
    assert all(s.incomplete and "a shard timed out" in s.incomplete for s in stats.values())


def test_an_alignment_period_under_a_minute_is_refused_by_the_api(emu: Emulator) -> None:
    with pytest.raises(MetricsError, match="at least 60 seconds"):
        provider(emu).window_stats([ION], timedelta(seconds=30), emu.now())
