"""`MetricsProvider` on a Prometheus server: PromQL queries over the HTTP API.

One `/api/v1/query` per measure (requests, errors, successes, p50, p95, p99) per call of
`window_stats`, however many services and revisions: `{service}` and `{revision}` expand to
regex alternations of the whole batch and each query returns one sample per
`(service, revision)`. Several consecutive windows (`windows_stats`) are still one query per
measure: `/api/v1/query_range` with `step` = the window, one sample per window's end.

The default queries read the metrics the emulator's data plane exposes at `/metrics` (names
and labels of a typical Prometheus-instrumented Cloud Run service):
`cloudrun_request_count_total{service, revision, response_code_class}` and the histogram
`cloudrun_request_latencies_seconds{service, revision, response_code_class}`.

Counters are read as "value at the end minus value at the start of the window, a series born
inside the window counted from zero" rather than with `increase()`: every series of a new
canary is born inside its first window, and `increase()` drops a new series' first scraped
value (and extrapolates), so it under-counts exactly the canary's first requests and errors.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import httpx

from reconciler.metrics import MetricsError, StatsQuery
from reconciler.model import WindowStats
from reconciler.spec import PrometheusQueries

__all__ = [
    "DEFAULT_QUERIES",
    "MEASURES",
    "PrometheusProvider",
    "default_queries",
    "promql_duration",
    "regex_alternation",
    "render_query",
]

MEASURES = ("requests", "errors", "successes", "latency_p50", "latency_p95", "latency_p99")
REQUESTS_METRIC = "cloudrun_request_count_total"
LATENCY_BUCKETS_METRIC = "cloudrun_request_latencies_seconds_bucket"
_SELECTOR = 'service=~"{service}", revision=~"{revision}"'
# Characters with a meaning in a RE2 regex; escaped with a backslash that PromQL's string
# literal itself needs doubled. (Cloud Run names use none of them, custom labels might.)
_REGEX_SPECIAL = re.compile(r"([.\\+*?\[\]^$(){}|])")


def _window_delta(metric: str, matchers: str) -> str:
    """Growth of a counter over `{window}`, per series, new series counted from zero."""
    selector = f"{metric}{{{matchers}}}"
    latest = f"max_over_time({selector}[{{window}}])"
    return f"clamp_min({latest} - {selector} offset {{window}}, 0) or {latest}"


def _counter_query(code_class: str | None) -> str:
    matchers = _SELECTOR + (f', response_code_class="{code_class}"' if code_class else "")
    return f"sum by (service, revision) ({_window_delta(REQUESTS_METRIC, matchers)})"


def _quantile_query(q: float) -> str:
    buckets = _window_delta(LATENCY_BUCKETS_METRIC, _SELECTOR)
    return f"histogram_quantile({q}, sum by (service, revision, le) ({buckets}))"


DEFAULT_QUERIES: Mapping[str, str] = {
    "requests": _counter_query(None),
    "errors": _counter_query("5xx"),
    "successes": _counter_query("2xx"),
    "latency_p50": _quantile_query(0.5),
    "latency_p95": _quantile_query(0.95),
    "latency_p99": _quantile_query(0.99),
}
"""The query per measure when the rollout file configures none."""


def default_queries(queries: PrometheusQueries | None = None) -> dict[str, str]:
    """The template of every measure: the configured ones, the defaults for the others."""
    configured = queries.model_dump() if queries is not None else {}
    return {m: configured.get(m) or DEFAULT_QUERIES[m] for m in MEASURES}


def promql_duration(window: timedelta) -> str:
    """A PromQL duration for a window: whole seconds as `300s`, else milliseconds."""
    ms = round(window.total_seconds() * 1000)
    if ms <= 0:
        raise ValueError(f"window must be positive, got {window}")
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


def regex_alternation(values: Iterable[str]) -> str:
    """`a|b|c` matching exactly these values, escaped for a regex inside a PromQL string."""
    items = sorted(set(values))
    if not items:
        raise ValueError("need at least one value to match")
    return "|".join(_REGEX_SPECIAL.sub(r"\\\\\1", v).replace('"', '\\"') for v in items)


def render_query(
    template: str, services: Iterable[str], revisions: Iterable[str], window: timedelta
) -> str:
    """Substitute `{service}`, `{revision}` and `{window}` (plain replacement: PromQL's own
    braces are left alone)."""
    return (
        template.replace("{service}", regex_alternation(services))
        .replace("{revision}", regex_alternation(revisions))
        .replace("{window}", promql_duration(window))
    )


class PrometheusProvider:
    """Window stats of revisions from a Prometheus server's HTTP API.

    `url`: the server's base URL (e.g. `http://prometheus:9090`). `queries`: PromQL per
    measure (see `reconciler.spec.PrometheusQueries`); unset ones use `DEFAULT_QUERIES`.
    `timeout`: seconds per HTTP request. `client`: an `httpx.Client` to reuse (its base URL is
    ignored; the default client is created here and closed by `close()`).
    `calls` counts the queries sent.
    """

    def __init__(
        self,
        url: str,
        queries: PrometheusQueries | None = None,
        *,
        timeout: float = 10.0,
        client: httpx.Client | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.queries = default_queries(queries)
        self._own_client = client is None
        self._client = client or httpx.Client(timeout=timeout)
        self.timeout = timeout
        self.calls = 0

    def close(self) -> None:
        """Close the HTTP client if this provider created it."""
        if self._own_client:
            self._client.close()

    def __enter__(self) -> PrometheusProvider:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def window_stats(
        self, queries: Sequence[StatsQuery], window: timedelta, end: datetime
    ) -> Mapping[tuple[str, str], WindowStats]:
        """Stats keyed by (service, revision) for the window ending at `end` (the query
        time). Every asked revision gets an entry; `requests == 0` means no data."""
        return self.windows_stats(queries, window, 1, end)[0]

    def windows_stats(
        self, queries: Sequence[StatsQuery], window: timedelta, count: int, end: datetime
    ) -> list[Mapping[tuple[str, str], WindowStats]]:
        """`count` consecutive windows of length `window`, the newest ending at `end`, oldest
        first, each as `window_stats` answers one: one query per measure, an instant query
        for one window, a range query stepping by the window for several (each step
        evaluates the same expression at one window's end)."""
        if count < 1:
            raise ValueError(f"count must be at least 1, got {count}")
        wanted = sorted({(q.ref.service, r) for q in queries for r in q.revisions})
        ends = [end - (count - 1 - i) * window for i in range(count)]
        if not wanted:
            return [{} for _ in ends]
        services = {s for s, _ in wanted}
        revisions = {r for _, r in wanted}
        values: dict[str, dict[tuple[int, tuple[str, str]], float]] = {}
        for measure in MEASURES:
            promql = render_query(self.queries[measure], services, revisions, window)
            values[measure] = self._query(measure, promql, ends, window)

        def count_of(measure: str, at: tuple[int, tuple[str, str]]) -> int:
            value = values[measure].get(at, 0.0)
            return max(0, round(value)) if math.isfinite(value) else 0

        def latency(measure: str, at: tuple[int, tuple[str, str]]) -> float | None:
            value = values[measure].get(at)
            return None if value is None or not math.isfinite(value) else value

        out: list[Mapping[tuple[str, str], WindowStats]] = []
        for i, stop in enumerate(ends):
            stats: dict[tuple[str, str], WindowStats] = {}
            for key in wanted:
                at = (i, key)
                requests = count_of("requests", at)
                stats[key] = WindowStats(
                    service=key[0],
                    revision=key[1],
                    start=stop - window,
                    end=stop,
                    requests=requests,
                    # Separate queries can see different scrapes: never more errors or
                    # successes than requests.
                    errors=min(count_of("errors", at), requests),
                    successes=min(count_of("successes", at), requests),
                    p50=latency("latency_p50", at) if requests else None,
                    p95=latency("latency_p95", at) if requests else None,
                    p99=latency("latency_p99", at) if requests else None,
                )
            out.append(stats)
        return out

    def _query(
        self, measure: str, promql: str, ends: Sequence[datetime], step: timedelta
    ) -> dict[tuple[int, tuple[str, str]], float]:
        """One query evaluated at every time of `ends` (spaced by `step`): an instant query
        for one, a range query for several; the values by (index in `ends`, (service,
        revision))."""
        where = f"prometheus {self.url}: {measure}"
        self.calls += 1
        if len(ends) == 1:
            path, params = "query", {"query": promql, "time": f"{ends[0].timestamp():.3f}"}
        else:
            path = "query_range"
            params = {
                "query": promql,
                "start": f"{ends[0].timestamp():.3f}",
                "end": f"{ends[-1].timestamp():.3f}",
                "step": promql_duration(step),
            }
        try:
            resp = self._client.get(
                f"{self.url}/api/v1/{path}", params=params, timeout=self.timeout
            )
        except httpx.HTTPError as exc:
            raise MetricsError(f"{where}: {type(exc).__name__}: {exc}".splitlines()[0]) from exc
        try:
            body: Any = resp.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise MetricsError(f"{where}: HTTP {resp.status_code}, not a Prometheus API answer")
        if body.get("status") != "success":
            error = str(body.get("error", "")).splitlines()[0:1] or ["no error text"]
            raise MetricsError(f"{where}: {body.get('errorType', 'error')}: {error[0]}")
        data = body.get("data") or {}
        expected = "vector" if len(ends) == 1 else "matrix"
        if data.get("resultType") != expected:
            kind = "an instant vector" if expected == "vector" else "a range matrix"
            raise MetricsError(f"{where}: expected {kind}, got {data.get('resultType')!r}")
        first = ends[0].timestamp()
        out: dict[tuple[int, tuple[str, str]], float] = {}
        for sample in data.get("result", []):
            labels = sample.get("metric", {})
            service, revision = labels.get("service"), labels.get("revision")
            if service is None or revision is None:
                raise MetricsError(
                    f"{where}: a sample without service and revision labels ({labels}); "
                    "group the query by (service, revision)"
                )
            key = (service, revision)
            points = [sample["value"]] if expected == "vector" else sample.get("values", [])
            for stamp, value in points:
                i = round((float(stamp) - first) / step.total_seconds()) if len(ends) > 1 else 0
                if not 0 <= i < len(ends):
                    continue
                if (i, key) in out:
                    raise MetricsError(
                        f"{where}: several samples for {service}/{revision}; "
                        "aggregate the query by (service, revision)"
                    )
                out[(i, key)] = float(value)
        return out
