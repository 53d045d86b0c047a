"""`provider_for`: the rollout file's `metrics:` block to a provider, nothing silent."""

from __future__ import annotations

from datetime import timedelta

import pytest

from reconciler.clients import EMULATOR_HOST_ENV
from reconciler.errors import ReconcileError
from reconciler.metrics import LAG_ENV, provider_for
from reconciler.metrics.cloud_monitoring import DEFAULT_INGESTION_LAG, CloudMonitoringProvider
from reconciler.metrics.prometheus import DEFAULT_QUERIES, PrometheusProvider
from reconciler.spec import CloudMonitoringMetrics, PrometheusMetrics, PrometheusQueries

CLOUD = CloudMonitoringMetrics(provider="cloud-monitoring")


@pytest.mark.parametrize(
    ("environ", "lag"),
    [
        ({}, DEFAULT_INGESTION_LAG),
        ({LAG_ENV: ""}, DEFAULT_INGESTION_LAG),
        ({LAG_ENV: "0s"}, timedelta(0)),
        ({LAG_ENV: "90s"}, timedelta(seconds=90)),
        ({LAG_ENV: " 5m "}, timedelta(minutes=5)),
        # The emulator delays its points as Google does: the same default.
        ({EMULATOR_HOST_ENV: "127.0.0.1:1"}, DEFAULT_INGESTION_LAG),
        ({EMULATOR_HOST_ENV: "127.0.0.1:1", LAG_ENV: "2m"}, timedelta(minutes=2)),
    ],
    ids=["unset", "empty", "zero", "90s", "spaces", "emulator", "emulator-explicit"],
)
def test_cloud_monitoring_lag_from_the_environment(environ: dict[str, str], lag: timedelta) -> None:
    provider = provider_for(CLOUD, environ=environ)
    assert isinstance(provider, CloudMonitoringProvider)
    assert provider.ingestion_lag == lag


@pytest.mark.parametrize("value", ["3", "soon", "-1m"], ids=["no-unit", "word", "negative"])
def test_a_bad_lag_is_one_line_naming_the_variable(value: str) -> None:
    with pytest.raises(ReconcileError, match=rf"^\${LAG_ENV}: ") as info:
        provider_for(CLOUD, environ={LAG_ENV: value})
    assert "\n" not in str(info.value)


def test_prometheus_gets_its_url_and_queries() -> None:
    queries = PrometheusQueries(errors="E")
    spec = PrometheusMetrics(provider="prometheus", url="http://prom:9090/", queries=queries)
    provider = provider_for(spec)
    assert isinstance(provider, PrometheusProvider)
    provider.close()
    assert provider.url == "http://prom:9090"
    assert provider.queries["errors"] == "E"
    assert provider.queries["requests"] == DEFAULT_QUERIES["requests"]


def test_a_templated_prometheus_url_is_refused() -> None:
    spec = PrometheusMetrics(provider="prometheus", url="{canary_url}/prom")
    with pytest.raises(ReconcileError, match="plain http"):
        provider_for(spec)


def test_an_unknown_provider_is_an_error_not_a_default() -> None:
    with pytest.raises(ReconcileError, match="unknown metrics provider"):
        provider_for(object())  # type: ignore[arg-type]
