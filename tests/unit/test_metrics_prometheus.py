"""Pure parts of the Prometheus provider: durations, regex matchers, query templating."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest

from reconciler.metrics.prometheus import (
    DEFAULT_QUERIES,
    MEASURES,
    default_queries,
    promql_duration,
    regex_alternation,
    render_query,
)
from reconciler.spec import PrometheusQueries


@pytest.mark.parametrize(
    ("window", "expected"),
    [
        (timedelta(minutes=5), "300s"),
        (timedelta(hours=24), "86400s"),
        (timedelta(seconds=1.5), "1500ms"),
        (timedelta(milliseconds=250), "250ms"),
    ],
    ids=["5m", "24h", "fractional-seconds", "sub-second"],
)
def test_promql_duration(window: timedelta, expected: str) -> None:
    assert promql_duration(window) == expected


@pytest.mark.parametrize("window", [timedelta(0), timedelta(seconds=-5)], ids=["zero", "negative"])
def test_promql_duration_rejects_empty_windows(window: timedelta) -> None:
    with pytest.raises(ValueError, match="positive"):
        promql_duration(window)


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (["ion-api-00042-xyz"], "ion-api-00042-xyz"),
        (["b", "a", "b"], "a|b"),
        (["v1.2"], "v1\\\\.2"),
        (['a"b'], 'a\\"b'),
    ],
    ids=["cloud-run-name-unescaped", "sorted-deduplicated", "dot-escaped", "quote-escaped"],
)
def test_regex_alternation(values: list[str], expected: str) -> None:
    assert regex_alternation(values) == expected


def test_regex_alternation_matches_exactly_its_values() -> None:
    # What Prometheus sees after unquoting the PromQL string: `\\` -> `\`, `\"` -> `"`.
    names = ["svc.a", "svc-b", "x+y", "(p)"]
    pattern = regex_alternation(names).replace('\\"', '"').replace("\\\\", "\\")
    for name in names:
        assert re.fullmatch(pattern, name)
    for other in ["svcXa", "svc-", "xxy", "p"]:
        assert not re.fullmatch(pattern, other)


def test_regex_alternation_needs_a_value() -> None:
    with pytest.raises(ValueError, match="at least one"):
        regex_alternation([])


def test_render_query_substitutes_only_the_placeholders() -> None:
    template = (
        'sum by (service, revision) (x{service=~"{service}", revision=~"{revision}"}[{window}])'
    )
    assert render_query(template, ["pay", "ion"], ["r2", "r1"], timedelta(minutes=10)) == (
        'sum by (service, revision) (x{service=~"ion|pay", revision=~"r1|r2"}[600s])'
    )


@pytest.mark.parametrize("measure", MEASURES, ids=list(MEASURES))
def test_default_queries_are_batched_and_grouped(measure: str) -> None:
    query = DEFAULT_QUERIES[measure]
    assert 'service=~"{service}"' in query and 'revision=~"{revision}"' in query
    assert "sum by (service, revision" in query
    assert "{window}" in query


def test_default_queries_count_by_response_code_class() -> None:
    assert 'response_code_class="5xx"' in DEFAULT_QUERIES["errors"]
    assert 'response_code_class="2xx"' in DEFAULT_QUERIES["successes"]
    assert "response_code_class" not in DEFAULT_QUERIES["requests"]
    assert DEFAULT_QUERIES["latency_p95"].startswith("histogram_quantile(0.95,")


@pytest.mark.parametrize(
    ("configured", "custom"),
    [
        (None, set()),
        (PrometheusQueries(), set()),
        (PrometheusQueries(errors="E", latency_p99="P"), {"errors", "latency_p99"}),
    ],
    ids=["none", "empty", "two-configured"],
)
def test_default_queries_fill_in_what_is_not_configured(
    configured: PrometheusQueries | None, custom: set[str]
) -> None:
    queries = default_queries(configured)
    assert set(queries) == set(MEASURES)
    for measure in MEASURES:
        if measure in custom:
            assert queries[measure] == getattr(configured, measure)
        else:
            assert queries[measure] == DEFAULT_QUERIES[measure]
