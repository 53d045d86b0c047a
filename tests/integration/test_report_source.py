"""Reports from the source: the metrics provider is asked for the report's whole span.

Traffic is served on the emulator with no `apply` run in between (state/ holds a status and
no metric window at all); the report's counts and P50/P95/P99 must be those of the raw
requests the data plane served, within one latency bucket. With the provider down, the report
falls back to the recorded windows and says so. Both providers: Cloud Monitoring (the official
client against the emulator) and a real Prometheus scraping the emulator's `/metrics`.
"""

from __future__ import annotations

import bisect
import math
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from tests.builders import CANARY, STABLE, status_at
from tests.builders import REPORTED_ROLLOUT as ROLLOUT

from reconciler import clients
from reconciler.emulator import Emulator
from reconciler.emulator.dataplane import LATENCY_BUCKETS_SECONDS
from reconciler.emulator.monitoring import bucket_bounds, bucket_index
from reconciler.emulator.world import Record
from reconciler.metrics import MetricsProvider
from reconciler.metrics.cloud_monitoring import CloudMonitoringProvider
from reconciler.metrics.prometheus import PrometheusProvider
from reconciler.model import ServiceRef
from reconciler.report import Report, generate
from reconciler.spec import Metrics
from reconciler.state import Event, EventKind, append_events, write_status
from reconciler.testing.prometheus import PrometheusServer, prometheus_binary

BATCHES, PER_BATCH = 4, 150
ION = ServiceRef("naeda-genesis", "us-central1", "ion-api")


def _repo(tmp_path: Path, emulator: Emulator, rollout: str = ROLLOUT) -> tuple[Path, datetime]:
    """A repository as one `apply` left it: rollout file, status and event, no windows."""
    root = tmp_path / "repo"
    (root / "rollout").mkdir(parents=True)
    (root / "rollout" / "ion-api.yaml").write_text(rollout, encoding="utf-8")
    start = emulator.now().replace(microsecond=0) - timedelta(seconds=1)
    append_events(
        root,
        ION,
        [Event(start, EventKind.APPLIED, "reconciler", f"{STABLE}=100", f"{CANARY}=25")],
    )
    write_status(root, ION, status_at(25, start))
    return root, start


def _serve(emulator: Emulator, *, advance: bool = True) -> None:
    emulator.behave(CANARY, error_rate=0.05, latency_ms={"p50": 150, "p95": 400})
    emulator.drift("ion-api", {STABLE: 75, CANARY: 25}, {"stable": STABLE, "canary": CANARY})
    for _ in range(BATCHES):
        assert emulator.load("ion-api", PER_BATCH).sent == PER_BATCH
        if advance:
            emulator.advance_clock(300)


def _check_against_raw(report: Report, served: list[Record], bucket: str) -> None:
    for summary, revision in ((report.canary, CANARY), (report.stable, STABLE)):
        assert summary is not None
        raw = [r for r in served if r.revision == revision]
        assert raw, revision
        assert summary.requests == len(raw)
        assert summary.errors == sum(r.code >= 500 for r in raw)
        assert summary.successes == sum(200 <= r.code < 300 for r in raw)
        latencies = [r.latency_ms / 1000 for r in raw]
        for q, value in ((0.50, summary.p50), (0.95, summary.p95), (0.99, summary.p99)):
            if bucket == "cloud-monitoring":
                assert_same_bucket(value, nearest_rank(latencies, q))
            else:
                assert_prometheus_bucket(value, nearest_rank(latencies, q))
    assert report.canary is not None and report.canary.errors > 0


def nearest_rank(values: list[float], q: float) -> float:
    """The q-quantile of raw values: the ceil(q*n)-th smallest."""
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


def assert_same_bucket(reported: float | None, raw_seconds: float) -> None:
    """`reported` lies in Cloud Monitoring's latency bucket (exponential, growth 1.15) that
    holds the raw quantile: a percentile is interpolated inside the bucket of its rank."""
    assert reported is not None
    lower, upper = bucket_bounds(bucket_index(raw_seconds * 1000))
    assert lower / 1000 - 1e-9 <= reported <= upper / 1000 + 1e-9, (reported, raw_seconds)


def assert_prometheus_bucket(reported: float | None, raw: float) -> None:
    """`reported` lies in the `/metrics` histogram bucket holding the raw quantile."""
    assert reported is not None
    bounds = [0.0, *LATENCY_BUCKETS_SECONDS, math.inf]
    i = bisect.bisect_left(bounds, raw)
    assert bounds[i - 1] - 1e-9 <= reported <= bounds[i] + 1e-9, (reported, raw)


# --- Cloud Monitoring ---------------------------------------------------------------------------
@pytest.fixture
def emulator() -> Iterator[Emulator]:
    with Emulator.start(latency_mode="simulated", seed=11) as emu:
        yield emu


def _cloud_monitoring(emu: Emulator, attempts: int = 4) -> CloudMonitoringProvider:
    return CloudMonitoringProvider(
        clients.metric_client(emu.grpc_target), attempts=attempts, backoff=0.01
    )


def test_report_counts_traffic_no_run_recorded(emulator: Emulator, tmp_path: Path) -> None:
    root, start = _repo(tmp_path, emulator)
    _serve(emulator)
    now = emulator.now()
    made: list[CloudMonitoringProvider] = []

    def provider(_metrics: Metrics) -> MetricsProvider:
        made.append(_cloud_monitoring(emulator))
        return made[0]

    report = generate(root, ION, "interim", now=now, metrics_for=provider)

    assert report.source is not None and report.source.measured
    # One aggregated query per metric for the whole span, however long it is.
    assert dict(made[0].calls) == {
        ("naeda-genesis", "run.googleapis.com/request_count"): 1,
        ("naeda-genesis", "run.googleapis.com/request_latencies"): 1,
    }
    served = [r for r in emulator.world.served() if r.ts > start.timestamp()]
    assert len(served) == BATCHES * PER_BATCH
    _check_against_raw(report, served, "cloud-monitoring")
    md = report.markdown
    assert "| figures | Cloud Monitoring, one query per metric over the span |" in md
    assert "Figures: Cloud Monitoring, asked for the whole span up to " in md
    assert "| windows | whole span | whole span |" in md
    assert "as Cloud Monitoring aggregates it (one query)" in md
    assert "No data" not in md.split("## Traffic and gates")[1].split("## Charts")[0]

    # The same state read offline (no provider asked) knows no traffic at all.
    offline = generate(root, ION, "interim", now=now)
    assert offline.canary is not None and offline.canary.requests == 0
    assert "No data: no metric window recorded in the span." in offline.markdown
    assert "windows recorded in state/: the provider was not asked" in offline.markdown


def test_provider_down_falls_back_to_recorded_windows(emulator: Emulator, tmp_path: Path) -> None:
    root, _ = _repo(tmp_path, emulator)
    _serve(emulator)
    emulator.fault("ListTimeSeries", code="UNAVAILABLE", message="backend down")

    report = generate(
        root,
        ION,
        "interim",
        now=emulator.now(),
        metrics_for=lambda _m: _cloud_monitoring(emulator, attempts=2),
    )

    assert report.source is not None and not report.source.measured
    assert report.source.reason == "Cloud Monitoring could not answer"
    assert "backend down" in report.source.detail
    md = report.markdown
    assert "| figures | windows recorded in state/: Cloud Monitoring could not answer |" in md
    assert (
        "Figures: the windows the runs recorded in state/: Cloud Monitoring could not answer "
        "(cloud monitoring: project naeda-genesis: run.googleapis.com/request_count: 503 "
    ) in md


def test_a_span_older_than_retention_uses_recorded_windows(
    emulator: Emulator, tmp_path: Path
) -> None:
    root, _ = _repo(tmp_path, emulator)
    provider = _cloud_monitoring(emulator)
    report = generate(
        root,
        ION,
        "final",
        now=emulator.now() + timedelta(weeks=7),
        metrics_for=lambda _m: provider,
    )
    assert report.source is not None and not report.source.measured
    assert "before Cloud Monitoring keeps data (42d)" in report.source.reason
    assert not provider.calls  # never asked


# --- Prometheus ---------------------------------------------------------------------------------
def test_report_from_prometheus(tmp_path: Path) -> None:
    binary = prometheus_binary()
    if binary is None:
        reason = "prometheus binary not found (apt-get install prometheus)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}; CI must install it")
        pytest.skip(reason)
    with (
        Emulator.start(latency_mode="simulated", seed=13) as emu,
        PrometheusServer.start([f"{emu.http_url}/metrics"], binary=binary) as prom,
    ):
        prom.wait_for_targets()
        rollout = ROLLOUT.replace(
            "region: us-central1\n",
            f"region: us-central1\nmetrics: {{provider: prometheus, url: '{prom.url}'}}\n",
        )
        root, _ = _repo(tmp_path, emu, rollout)
        # Prometheus scrapes on the wall clock: the span is read at wall-clock time.
        _serve(emu, advance=False)
        total = BATCHES * PER_BATCH
        prom.wait_until("sum(cloudrun_request_count_total)", lambda v: v == total)
        now = datetime.now(UTC)
        made: list[PrometheusProvider] = []

        def provider(_metrics: Metrics) -> MetricsProvider:
            made.append(PrometheusProvider(prom.url))
            return made[-1]

        report = generate(root, ION, "interim", now=now, metrics_for=provider)
        assert report.source is not None and report.source.measured, report.source
        assert made[0].calls == 6  # one query per measure for the whole span
        _check_against_raw(report, list(emu.world.served()), "prometheus")
        assert "| figures | Prometheus at " in report.markdown
        assert "computed by Prometheus at" in report.markdown

        prom.stop()
        down = generate(root, ION, "interim", now=now, metrics_for=provider)
        assert down.source is not None and not down.source.measured
        assert down.source.reason.startswith(f"Prometheus at {prom.url}")
        assert down.source.reason.endswith("could not answer")
        assert "ConnectError" in down.source.detail
        assert "| figures | windows recorded in state/: Prometheus at " in down.markdown
