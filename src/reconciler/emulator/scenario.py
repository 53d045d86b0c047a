"""The emulator's scenario file: services, revisions, their behaviour, dependencies.

```yaml
project: naeda-genesis
region: us-central1
latency_mode: real            # or `simulated`: record sampled latency without sleeping
latency_scale: 1.0            # real mode only: sleep `sample * scale`
services:
  - name: ion-api
    traffic: {ion-api-00041-abc: 100}
    tags: {stable: ion-api-00041-abc}      # optional, tag -> revision
    revisions:                             # oldest first; the last one is the latest
      - name: ion-api-00041-abc
        behavior: {error_rate: 0.0, latency_ms: {p50: 120, p95: 300}}
dependencies:                              # served at {http_url}/deps/<name>/...
  - name: lumen-gateway
    body: {status: healthy, gemini_api: connected}
# Google's rules, on by default (docs/emulator.md has the table and the sources):
lro: {done: true, polls: 1, failure_code: FAILED_PRECONDITION, response: service}
etag: {mode: enforce, code: FAILED_PRECONDITION}
quotas: {read_per_minute: 1000, write_per_minute: 60}      # per project and region
limits: {tags_per_region: 2000}
monitoring: {sample_period: 60s, ingestion_delay: 180s, min_alignment_period: 60s}
```
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from reconciler.errors import ReconcileError
from reconciler.spec import parse_duration

DEFAULT_HEALTH: dict[str, Any] = {
    "status": "healthy",
    "lumen_gateway": "enabled",
    "gemini_api": "connected",
    "confidence_system": "active",
}
DEFAULT_CHAT: dict[str, Any] = {
    "success": True,
    "confidence": 0.87,
    "response": "Python is readable, has a large ecosystem and is quick to write.",
}


class ScenarioError(ReconcileError):
    """The scenario (file, dict or admin request) is invalid."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Latency(_Frozen):
    """Latency distribution of a revision in milliseconds (log-normal through p50 and p95)."""

    p50: float = Field(gt=0)
    p95: float = Field(gt=0)

    @model_validator(mode="before")
    @classmethod
    def _scalar(cls, value: object) -> object:
        # `latency_ms: 120` means a constant latency.
        if isinstance(value, int | float) and not isinstance(value, bool):
            return {"p50": value, "p95": value}
        return value

    @model_validator(mode="after")
    def _ordered(self) -> Latency:
        if self.p95 < self.p50:
            raise ValueError(f"latency p95 {self.p95} ms is below p50 {self.p50} ms")
        return self


class Behavior(_Frozen):
    """How a revision answers: failure shares, latency and the JSON bodies it returns."""

    error_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    """Share of requests answered 500."""
    client_error_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    """Share of requests answered 429 (rate limited)."""
    latency_ms: Latency = Latency(p50=20, p95=50)
    health: dict[str, Any] = Field(default_factory=lambda: dict(DEFAULT_HEALTH))
    """Body of `GET /api/health`."""
    chat: dict[str, Any] = Field(default_factory=lambda: dict(DEFAULT_CHAT))
    """Body of `POST /chat`."""
    ready: bool = True
    """False: the revision cannot start (its container fails), so a traffic write that routes
    to it ends in a failed operation and the old split keeps serving."""

    @model_validator(mode="after")
    def _shares(self) -> Behavior:
        if self.error_rate + self.client_error_rate > 1.0:
            raise ValueError("error_rate + client_error_rate must not exceed 1")
        return self

    def merged(self, changes: Mapping[str, Any]) -> Behavior:
        """A copy with `changes` applied (validated like the scenario file)."""
        return Behavior.model_validate({**self.model_dump(), **changes})


class RevisionScenario(_Frozen):
    """One revision of a service."""

    name: str
    behavior: Behavior = Behavior()


class ServiceScenario(_Frozen):
    """One service: its revisions (oldest first), traffic and tags."""

    name: str
    project: str | None = None
    region: str | None = None
    revisions: list[RevisionScenario] = Field(min_length=1)
    traffic: dict[str, int] | None = None
    """Revision -> percent; default: 100% to the latest revision."""
    tags: dict[str, str] = Field(default_factory=dict)
    """Tag -> revision (a tagged revision without a percent gets a 0% target)."""

    @model_validator(mode="after")
    def _consistent(self) -> ServiceScenario:
        names = [r.name for r in self.revisions]
        if len(set(names)) != len(names):
            raise ValueError(f"service {self.name}: duplicate revision names")
        for rev in [*(self.traffic or {}), *self.tags.values()]:
            if rev not in names:
                raise ValueError(f"service {self.name}: unknown revision {rev!r} in traffic/tags")
        if self.traffic is not None and sum(self.traffic.values()) != 100:
            raise ValueError(f"service {self.name}: traffic percents must sum to 100")
        return self


class Dependency(_Frozen):
    """A dependency health endpoint served at `{http_url}/deps/<name>/...`."""

    name: str
    status_code: int = 200
    body: dict[str, Any] = Field(default_factory=lambda: {"status": "healthy"})


StatusCode = Literal[
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
]
"""A `grpc.StatusCode` name other than OK."""


LroResponse = Literal["service", "no-status"]


class LroScenario(_Frozen):
    """How UpdateService operations complete."""

    done: bool = True
    """True: the returned operation is already done. False: poll GetOperation."""
    polls: int = Field(default=1, ge=0)
    """Pending operations answer `done=false` to this many GetOperation calls."""
    failure_code: StatusCode = "FAILED_PRECONDITION"
    """The code of an operation that fails because a revision it routes to is not ready."""
    response: LroResponse = "service"
    """What a completed operation's `response` holds: `service`, the Service as the
    operation left it (AIP-151, its serving status included); `no-status`, that Service
    without its serving status (`reconciling`, `terminal_condition`, `conditions`,
    `observed_generation`, `traffic_statuses`), so a client must read the service back."""


class EtagScenario(_Frozen):
    """Whether UpdateService checks `etag`, and the code it answers a stale one with.

    Cloud Run v2 does not document either; AIP-154 says FAILED_PRECONDITION."""

    mode: Literal["enforce", "ignore"] = "enforce"
    code: Literal["FAILED_PRECONDITION", "ABORTED"] = "FAILED_PRECONDITION"


class QuotaScenario(_Frozen):
    """Admin API rate quotas per project and region (0: unlimited)."""

    read_per_minute: int = Field(default=1000, ge=0)
    write_per_minute: int = Field(default=60, ge=0)


class LimitScenario(_Frozen):
    """Resource limits per project and region."""

    tags_per_region: int = Field(default=2000, ge=1)


def _seconds(value: object) -> object:
    if isinstance(value, str):
        return parse_duration(value).total_seconds()
    return value


class MonitoringScenario(_Frozen):
    """How Cloud Monitoring sees the served requests: sampled, late, coarse."""

    sample_period: float = Field(default=60.0, gt=0)
    """Seconds per sample: a request is reported at the end of its sample."""
    ingestion_delay: float = Field(default=180.0, ge=0)
    """Seconds after its sample ends before a point can be read."""
    min_alignment_period: float = Field(default=60.0, ge=0)
    """Shorter `aggregation.alignment_period`s are INVALID_ARGUMENT."""

    @model_validator(mode="before")
    @classmethod
    def _durations(cls, value: object) -> object:
        # `60s`, `3m` or plain seconds.
        if isinstance(value, dict):
            return {k: _seconds(v) for k, v in value.items()}
        return value


class Scenario(_Frozen):
    """The whole emulated world at start."""

    project: str = "naeda-genesis"
    region: str = "us-central1"
    seed: int | None = None
    latency_mode: Literal["real", "simulated"] = "real"
    latency_scale: float = Field(default=1.0, ge=0.0)
    lro: LroScenario = LroScenario()
    etag: EtagScenario = EtagScenario()
    quotas: QuotaScenario = QuotaScenario()
    limits: LimitScenario = LimitScenario()
    monitoring: MonitoringScenario = MonitoringScenario()
    services: list[ServiceScenario] = Field(default_factory=list)
    dependencies: list[Dependency] = Field(default_factory=list)


DEFAULT_SCENARIO: dict[str, Any] = {
    "project": "naeda-genesis",
    "region": "us-central1",
    "services": [
        {
            "name": "ion-api",
            "traffic": {"ion-api-00041-abc": 100},
            "revisions": [
                {
                    "name": "ion-api-00041-abc",
                    "behavior": {"error_rate": 0.0, "latency_ms": {"p50": 120, "p95": 300}},
                },
                {
                    "name": "ion-api-00042-xyz",
                    "behavior": {"error_rate": 0.07, "latency_ms": {"p50": 150, "p95": 400}},
                },
            ],
        }
    ],
    "dependencies": [
        {
            "name": "lumen-gateway",
            "body": {
                "status": "healthy",
                "gemini_api": "connected",
                "confidence_system": "active",
            },
        }
    ],
}


def load_scenario(source: Scenario | Mapping[str, Any] | str | Path | None) -> Scenario:
    """A validated scenario from a model, a dict, a YAML file path, or None (the default)."""
    if isinstance(source, Scenario):
        return source
    where = "scenario"
    if source is None:
        data: object = DEFAULT_SCENARIO
    elif isinstance(source, str | Path):
        where = str(source)
        try:
            data = yaml.safe_load(Path(source).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ScenarioError(f"{where}: cannot read: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise ScenarioError(f"{where}: invalid YAML: {exc}".splitlines()[0]) from None
    else:
        data = dict(source)
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise ScenarioError(f"{where}: {loc}: {first['msg']}") from None
