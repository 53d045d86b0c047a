"""Pydantic models of the rollout file (`rollout/<service>.yaml`).

Pure: parsing of units and the rules a rollout file must satisfy. Reading files and mapping
errors to `path:line` lives in `loader.py`.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    model_validator,
)

# --- identifiers -------------------------------------------------------------------------
# Cloud Run service ids: lowercase letters, digits and hyphens, a letter first, no hyphen last.
SERVICE_RE = r"^[a-z](?:[a-z0-9-]{0,47}[a-z0-9])?$"
REVISION_RE = r"^[a-z](?:[a-z0-9-]{0,61}[a-z0-9])?$"
PROJECT_RE = r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$"
REGION_RE = r"^[a-z]+(?:-[a-z]+)+[0-9]+$"


def _matches(pattern: str, what: str) -> Any:
    rx = re.compile(pattern)

    def check(value: str) -> str:
        if not rx.match(value):
            raise ValueError(f"{value!r} is not a valid {what} ({pattern})")
        return value

    return check


def _not_latest(value: str) -> str:
    if value.upper() == "LATEST":
        raise ValueError("LATEST is not allowed: pin a revision name during a canary")
    return value


ServiceId = Annotated[str, AfterValidator(_matches(SERVICE_RE, "Cloud Run service id"))]
ProjectId = Annotated[str, AfterValidator(_matches(PROJECT_RE, "GCP project id"))]
RegionId = Annotated[str, AfterValidator(_matches(REGION_RE, "GCP region"))]
RevisionName = Annotated[
    str,
    AfterValidator(_not_latest),
    AfterValidator(_matches(REVISION_RE, "Cloud Run revision name")),
]

# --- units -------------------------------------------------------------------------------
_PERCENT_RE = re.compile(r"^(\d+(?:\.\d+)?)%$")
_DURATION_RE = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d)$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_percent(value: object) -> float:
    """`"5%"` -> 0.05. A bare number is an error: the unit is required."""
    if isinstance(value, bool) or not isinstance(value, str):
        raise ValueError(f"expected a percentage with its unit, like '5%', got {value!r}")
    m = _PERCENT_RE.match(value.strip())
    if not m:
        raise ValueError(f"expected a percentage like '5%', got {value!r}")
    pct = float(m.group(1))
    if pct > 100:
        raise ValueError(f"percentage {value!r} is over 100%")
    return pct / 100.0


def _parse_seconds(value: object, example: str) -> float:
    if isinstance(value, bool) or not isinstance(value, str):
        raise ValueError(f"expected a duration with its unit, like {example!r}, got {value!r}")
    m = _DURATION_RE.match(value.strip())
    if not m:
        raise ValueError(f"expected a duration like {example!r} (ms, s, m, h, d), got {value!r}")
    return float(m.group(1)) * _UNIT_SECONDS[m.group(2)]


def parse_latency(value: object) -> float:
    """`"500ms"` -> 0.5, `"20s"` -> 20.0 (seconds)."""
    seconds = _parse_seconds(value, "500ms")
    if seconds <= 0:
        raise ValueError(f"latency {value!r} must be positive")
    return seconds


def parse_duration(value: object) -> timedelta:
    """`"5m"` -> 5 minutes, `"24h"` -> 1 day."""
    if isinstance(value, timedelta):
        return value
    return timedelta(seconds=_parse_seconds(value, "5m"))


def format_duration(value: timedelta) -> str:
    """The shortest exact unit form: 300 s -> `5m`, 86400 s -> `24h`."""
    seconds = value.total_seconds()
    for unit, size in (("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds * 1000)}ms"


def _percent_passthrough(value: object) -> float:
    if isinstance(value, float):  # already parsed (model_copy / re-validation)
        return value
    return parse_percent(value)


def _latency_passthrough(value: object) -> float:
    if isinstance(value, float):
        return value
    return parse_latency(value)


Percent = Annotated[
    float,
    BeforeValidator(_percent_passthrough),
    WithJsonSchema({"type": "string", "pattern": r"^\d+(\.\d+)?%$", "examples": ["5%"]}),
]
Latency = Annotated[
    float,
    BeforeValidator(_latency_passthrough),
    WithJsonSchema({"type": "string", "pattern": r"^\d+(\.\d+)?(ms|s|m)$", "examples": ["20s"]}),
]
Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    WithJsonSchema({"type": "string", "pattern": r"^\d+(\.\d+)?(s|m|h|d)$", "examples": ["5m"]}),
]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


# --- sections ------------------------------------------------------------------------------
class Revisions(_Model):
    """Pinned revision names; never LATEST during a canary."""

    stable: RevisionName
    canary: RevisionName | None = None


class ErrorRateGate(_Model):
    """5xx share of the canary's requests."""

    max: Percent
    target: Percent | None = None
    window: Duration | None = None


class LatencyGate(_Model):
    """p95 latency of the canary."""

    max: Latency
    target: Latency | None = None
    window: Duration | None = None


class SuccessRateGate(_Model):
    """2xx share of the canary's requests."""

    min: Percent
    target: Percent | None = None
    window: Duration | None = None


class VsStableGate(_Model):
    """The canary compared with the stable revision over the same window."""

    error_rate_delta: Percent


class Gates(_Model):
    """Rollback thresholds and promotion targets, judged per window."""

    window: Duration = timedelta(minutes=5)
    min_requests: int = Field(default=100, ge=1)
    consecutive_failures: int = Field(default=2, ge=1, le=100)
    error_rate: ErrorRateGate | None = None
    latency_p95: LatencyGate | None = None
    success_rate: SuccessRateGate | None = None
    vs_stable: VsStableGate | None = None


class CloudMonitoringMetrics(_Model):
    """Cloud Monitoring (`run.googleapis.com/request_count`, `request_latencies`)."""

    provider: Literal["cloud-monitoring"]


class PrometheusQueries(_Model):
    """PromQL per measure; `{service}`, `{revision}` and `{window}` are substituted.

    One query per measure covers a whole batch: `{service}` and `{revision}` become regex
    alternations of every service and revision asked for (use them with `=~`), `{window}` a
    PromQL duration. Each query returns an instant vector with `service` and `revision`
    labels. Unset measures use the defaults of `reconciler.metrics.prometheus`.
    """

    requests: str | None = None
    errors: str | None = None
    successes: str | None = None
    latency_p50: str | None = None
    latency_p95: str | None = None
    latency_p99: str | None = None


class PrometheusMetrics(_Model):
    """A Prometheus server's HTTP API."""

    provider: Literal["prometheus"]
    url: Annotated[str, AfterValidator(lambda v: _http_url(v, "metrics.url"))]
    queries: PrometheusQueries = PrometheusQueries()


Metrics = Annotated[CloudMonitoringMetrics | PrometheusMetrics, Field(discriminator="provider")]

_TEMPLATE_URL = re.compile(r"^\{(canary_url|stable_url|service_url)\}(/.*)?$")


def _http_url(value: str, what: str) -> str:
    if _TEMPLATE_URL.match(value):
        return value
    if not re.match(r"^https?://[^\s/?#]+", value):
        raise ValueError(
            f"{what} must be an http(s) URL or start with {{canary_url}} / {{stable_url}}, "
            f"got {value!r}"
        )
    return value


class EnvValue(_Model):
    """A header value read from an environment variable at run time, never stored."""

    env: Annotated[str, AfterValidator(_matches(r"^[A-Za-z_][A-Za-z0-9_]*$", "variable name"))]


Scalar = str | int | float | bool | None


class Check(_Model):
    """An HTTP check: a canary probe or a dependency health check."""

    name: Annotated[str, AfterValidator(_matches(r"^[a-z0-9][a-z0-9_-]{0,62}$", "check name"))]
    url: Annotated[str, AfterValidator(lambda v: _http_url(v, "url"))]
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"] = "GET"
    json_body: Any = Field(default=None, alias="json")
    headers: dict[str, str | EnvValue] = {}
    timeout: Latency = 10.0
    max_latency: Latency | None = None
    expect_status: int | None = None
    expect: dict[str, Scalar] = {}
    expect_min: dict[str, float | int] = {}
    expect_max: dict[str, float | int] = {}

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, populate_by_name=True)


class RolledBack(_Model):
    """Written by the reconciler on rollback; a human removes it (or names a new canary)."""

    revision: RevisionName
    at: datetime
    reason: str

    model_config = ConfigDict(frozen=True, extra="forbid", strict=False)


# --- the rollout file ---------------------------------------------------------------------
class RolloutSpec(_Model):
    """Desired state of one Cloud Run service's canary rollout."""

    service: ServiceId
    project: ProjectId
    region: RegionId
    revisions: Revisions
    canary_percent: int = Field(ge=0, le=100)
    stages: list[int] = Field(min_length=1)
    auto_advance: bool = False
    bake: Duration = timedelta(hours=24)
    self_heal: bool = True
    gates: Gates = Gates()
    metrics: Metrics = CloudMonitoringMetrics(provider="cloud-monitoring")
    probes: list[Check] = []
    dependencies: list[Check] = []
    force: bool = False
    rolled_back: RolledBack | None = None

    @model_validator(mode="after")
    def _rules(self) -> RolloutSpec:
        stages = self.stages
        if any(s < 1 or s > 100 for s in stages):
            raise ValueError(f"stages must be percents in 1..100, got {stages}")
        if any(b <= a for a, b in zip(stages, stages[1:], strict=False)):
            raise ValueError(f"stages must be strictly increasing, got {stages}")
        if stages[-1] != 100:
            raise ValueError(f"stages must end at 100, got {stages}")
        if self.canary_percent != 0 and self.canary_percent not in stages:
            raise ValueError(
                f"canary_percent {self.canary_percent} is neither 0 nor one of the stages {stages}"
            )
        canary = self.revisions.canary
        if canary is not None and canary == self.revisions.stable:
            raise ValueError(f"revisions.canary equals revisions.stable ({canary})")
        if canary is None and self.canary_percent != 0:
            raise ValueError("canary_percent is above 0 but revisions.canary is not set")
        rb = self.rolled_back
        if rb is not None and canary == rb.revision and self.canary_percent != 0:
            raise ValueError(
                f"canary {canary} was rolled back ({rb.reason}); name a new canary or delete "
                "the rolled_back block to retry"
            )
        names = [c.name for c in (*self.probes, *self.dependencies)]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"probe and dependency names must be unique, repeated: {dupes}")
        return self

    @property
    def stage_index(self) -> int | None:
        """Index of `canary_percent` in `stages`, None at 0%."""
        return self.stages.index(self.canary_percent) if self.canary_percent else None

    def next_stage(self) -> int | None:
        """The stage after the current one (the first stage from 0%), None at 100%."""
        for s in self.stages:
            if s > self.canary_percent:
                return s
        return None
