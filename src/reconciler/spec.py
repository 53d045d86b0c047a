"""Pydantic models of the rollout file (`rollout/<service>.yaml`).

Pure: parsing of units and the rules a rollout file must satisfy. Reading files and mapping
errors to `path:line` lives in `loader.py`.

Rules that span several keys raise `RuleError`, which carries the key path of the value to
blame, so the loader can point at the right line.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationInfo,
    WithJsonSchema,
    model_validator,
)

Loc = tuple[str | int, ...]

# Passed as validation context by the loader: units are then required even where Python
# callers may hand in already-parsed floats (`ErrorRateGate(max=0.05)`).
STRICT_UNITS: dict[str, Any] = {"strict_units": True}


class RuleError(ValueError):
    """A rule broken at `loc`, a key path relative to the model whose validator raised it."""

    def __init__(self, loc: Loc, message: str) -> None:
        super().__init__(message)
        self.loc = loc


def describe_value(value: object) -> str:
    """How a parsed YAML value reads in a message: `5`, `'5'`, `true`, `null`, `a list`."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return repr(value if len(value) <= 60 else value[:57] + "...")
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


# --- identifiers -------------------------------------------------------------------------
# Cloud Run service ids: lowercase letters, digits and hyphens, a letter first, no hyphen last.
# None of these patterns admit `/` or `.`, so an id can never escape `state/` as a path.
SERVICE_RE = r"^[a-z](?:[a-z0-9-]{0,47}[a-z0-9])?$"
REVISION_RE = r"^[a-z](?:[a-z0-9-]{0,61}[a-z0-9])?$"
PROJECT_RE = r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$"
REGION_RE = r"^[a-z]+(?:-[a-z]+)+[0-9]+$"
CHECK_NAME_RE = r"^[a-z0-9][a-z0-9_-]{0,62}$"
ENV_NAME_RE = r"^[A-Za-z_][A-Za-z0-9_]*$"
HEADER_NAME_RE = r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$"
# A tag URL (`https://TAG---SERVICE-HASH-REGION.a.run.app`) must fit one DNS label: Cloud Run
# refuses a tag when the tag and the service name exceed 46 characters together.
MAX_TAG_AND_SERVICE = 46
TRAFFIC_TAGS = ("stable", "canary")
"""The tags the reconciler writes (plan.py), so the longest decides the service name limit."""
# Cloud Monitoring's shortest alignment period; windows are whole minutes of its samples.
MIN_MONITORING_WINDOW = timedelta(seconds=60)


def _matches(pattern: str, what: str, hint: str) -> Any:
    rx = re.compile(pattern)

    def check(value: str) -> str:
        # fullmatch: `$` alone would accept a trailing newline.
        if not rx.fullmatch(value):
            raise ValueError(f"{describe_value(value)} is not a valid {what} ({hint})")
        return value

    return check


def _not_latest(value: str) -> str:
    if value.upper() == "LATEST":
        raise ValueError("LATEST is not allowed: pin a revision name, like ion-api-00042-xyz")
    return value


_ID_HINT = "lowercase letters, digits and hyphens, starting with a letter"
ServiceId = Annotated[
    str,
    AfterValidator(_matches(SERVICE_RE, "Cloud Run service id", _ID_HINT + ", at most 49")),
    WithJsonSchema({"type": "string", "pattern": SERVICE_RE, "examples": ["ion-api"]}),
]
ProjectId = Annotated[
    str,
    AfterValidator(_matches(PROJECT_RE, "GCP project id", _ID_HINT + ", 6 to 30")),
    WithJsonSchema({"type": "string", "pattern": PROJECT_RE, "examples": ["naeda-genesis"]}),
]
RegionId = Annotated[
    str,
    AfterValidator(_matches(REGION_RE, "GCP region", "like us-central1")),
    WithJsonSchema({"type": "string", "pattern": REGION_RE, "examples": ["us-central1"]}),
]
RevisionName = Annotated[
    str,
    AfterValidator(_not_latest),
    AfterValidator(_matches(REVISION_RE, "Cloud Run revision name", _ID_HINT + ", at most 63")),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": REVISION_RE,
            "not": {"const": "latest"},
            "examples": ["ion-api-00042-xyz"],
        }
    ),
]

# --- units -------------------------------------------------------------------------------
PERCENT_RE = r"^\d+(?:\.\d+)?%$"
LATENCY_RE = r"^\d+(?:\.\d+)?(?:ms|s|m)$"
DURATION_RE = r"^\d+(?:\.\d+)?(?:ms|s|m|h|d)$"
_NUMBER_UNIT = re.compile(r"(\d+(?:\.\d+)?)([a-z%]+)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_percent(value: object) -> float:
    """`"5%"` -> 0.05. A bare number is an error: the unit is required."""
    if not isinstance(value, str) or not re.fullmatch(PERCENT_RE, value):
        raise ValueError(f"expected a percentage like '5%', got {describe_value(value)}")
    pct = float(value[:-1])
    if pct > 100:
        raise ValueError(f"percentage {value!r} is over 100%")
    return pct / 100.0


def _parse_seconds(value: object, pattern: str, what: str, example: str, units: str) -> float:
    if not isinstance(value, str) or not re.fullmatch(pattern, value):
        raise ValueError(f"expected {what} like {example!r} ({units}), got {describe_value(value)}")
    m = _NUMBER_UNIT.fullmatch(value)
    assert m is not None  # the pattern above guarantees the shape
    return float(m.group(1)) * _UNIT_SECONDS[m.group(2)]


def parse_latency(value: object) -> float:
    """`"500ms"` -> 0.5, `"20s"` -> 20.0 (seconds); units ms, s, m; must be positive."""
    seconds = _parse_seconds(value, LATENCY_RE, "a latency", "20s", "ms, s, m")
    if seconds <= 0:
        raise ValueError(f"latency {value!r} must be above 0")
    return seconds


def parse_duration(value: object) -> timedelta:
    """`"5m"` -> 5 minutes, `"24h"` -> 1 day; units ms, s, m, h, d. A timedelta passes."""
    if isinstance(value, timedelta):
        return value
    return timedelta(
        seconds=_parse_seconds(value, DURATION_RE, "a duration", "5m", "ms, s, m, h, d")
    )


RATE_RE = r"^\d+(?:\.\d+)?/(?:s|m)$"
MAX_RATE = 50.0
"""The highest `repeat.rate`, in requests per second: synthetic load, not a load test."""


def parse_rate(value: object) -> float:
    """`"2/s"` -> 2.0, `"30/m"` -> 0.5 (requests per second); positive, at most `MAX_RATE`."""
    if not isinstance(value, str) or not re.fullmatch(RATE_RE, value):
        raise ValueError(f"expected a rate like '2/s' or '30/m', got {describe_value(value)}")
    number, unit = value.split("/")
    per_second = float(number) / (60.0 if unit == "m" else 1.0)
    if not 0 < per_second <= MAX_RATE:
        raise ValueError(f"rate {value!r} must be above 0 and at most {MAX_RATE:g}/s")
    return per_second


def format_rate(per_second: float) -> str:
    """2.0 -> `2/s`, 0.5 -> `30/m`, the inverse of `parse_rate`."""
    if per_second >= 1 or round(per_second * 60, 6) % 1:
        return f"{round(per_second, 6):g}/s"
    return f"{round(per_second * 60, 6):g}/m"


def format_duration(value: timedelta) -> str:
    """The shortest exact unit form: 300 s -> `5m`, 86400 s -> `24h`."""
    seconds = value.total_seconds()
    for unit, size in (("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{round(seconds * 1000)}ms"


def format_percent(value: float) -> str:
    """0.05 -> `5%`, the inverse of `parse_percent`."""
    return f"{round(value * 100, 6):g}%"


def format_latency(seconds: float) -> str:
    """20.0 -> `20s`, 0.5 -> `500ms`, the inverse of `parse_latency`."""
    if seconds >= 60 and seconds % 60 == 0:
        return f"{int(seconds // 60)}m"
    if seconds >= 1 and seconds % 1 == 0:
        return f"{int(seconds)}s"
    return f"{round(seconds * 1000, 3):g}ms"


def _strict_units(info: ValidationInfo) -> bool:
    return isinstance(info.context, dict) and bool(info.context.get("strict_units"))


def _percent(value: object, info: ValidationInfo) -> float:
    # A float is an already-parsed value from Python code; from a file it is a missing unit.
    if isinstance(value, float) and not _strict_units(info):
        return value
    return parse_percent(value)


def _latency(value: object, info: ValidationInfo) -> float:
    if isinstance(value, float) and not _strict_units(info):
        return value
    return parse_latency(value)


def _positive(value: timedelta) -> timedelta:
    if value <= timedelta(0):
        raise ValueError(f"window {format_duration(value)} must be above 0")
    return value


Percent = Annotated[
    float,
    BeforeValidator(_percent),
    PlainSerializer(format_percent, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "pattern": PERCENT_RE, "examples": ["5%"]}),
]
Latency = Annotated[
    float,
    BeforeValidator(_latency),
    PlainSerializer(format_latency, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "pattern": LATENCY_RE, "examples": ["20s", "500ms"]}),
]
Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "pattern": DURATION_RE, "examples": ["5m", "24h"]}),
]
Window = Annotated[Duration, AfterValidator(_positive)]
Rate = Annotated[
    float,
    BeforeValidator(parse_rate),
    PlainSerializer(format_rate, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "pattern": RATE_RE, "examples": ["2/s", "30/m"]}),
]
MAX_REPEAT_BUDGET = timedelta(minutes=5)
"""The longest wall-clock time one probe's `repeat` may take in one run."""


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


# --- sections ------------------------------------------------------------------------------
class Revisions(_Model):
    """Pinned revision names; never LATEST during a canary."""

    stable: RevisionName = Field(description="The revision serving everything but the canary.")
    canary: RevisionName | None = Field(
        default=None,
        description="The new revision (deployed with --no-traffic); unset when no canary runs.",
    )


class ErrorRateGate(_Model):
    """5xx share of the canary's requests."""

    max: Percent = Field(description="Roll back when a window's 5xx share is above this.")
    target: Percent | None = Field(
        default=None, description="Promotion needs the share at or below this."
    )
    window: Window | None = Field(default=None, description="Overrides gates.window.")

    @model_validator(mode="after")
    def _rules(self) -> ErrorRateGate:
        if self.target is not None and self.target > self.max:
            raise RuleError(
                ("target",),
                f"{format_percent(self.target)} is above max {format_percent(self.max)}",
            )
        return self


class LatencyGate(_Model):
    """p95 latency of the canary."""

    max: Latency = Field(description="Roll back when a window's p95 latency is above this.")
    target: Latency | None = Field(
        default=None, description="Promotion needs p95 at or below this."
    )
    window: Window | None = Field(default=None, description="Overrides gates.window.")

    @model_validator(mode="after")
    def _rules(self) -> LatencyGate:
        if self.target is not None and self.target > self.max:
            raise RuleError(
                ("target",),
                f"{format_latency(self.target)} is above max {format_latency(self.max)}",
            )
        return self


class SuccessRateGate(_Model):
    """2xx share of the canary's requests."""

    min: Percent = Field(description="Roll back when a window's 2xx share is below this.")
    target: Percent | None = Field(
        default=None, description="Promotion needs the share at or above this."
    )
    window: Window | None = Field(default=None, description="Overrides gates.window.")

    @model_validator(mode="after")
    def _rules(self) -> SuccessRateGate:
        if self.target is not None and self.target < self.min:
            raise RuleError(
                ("target",),
                f"{format_percent(self.target)} is below min {format_percent(self.min)}",
            )
        return self


class VsStableGate(_Model):
    """The canary compared with the stable revision over the same window."""

    error_rate_delta: Percent = Field(
        description="Roll back when the canary's error rate exceeds stable's by more than this."
    )


class Gates(_Model):
    """Rollback thresholds and promotion targets, judged per window."""

    window: Window = Field(
        default=timedelta(minutes=5), description="Length of one measurement window."
    )
    min_requests: int = Field(
        default=100,
        ge=1,
        description="Fewer canary requests in a window: INCONCLUSIVE, never PASS or FAIL.",
    )
    consecutive_failures: int = Field(
        default=2, ge=1, le=100, description="FAIL only after this many failing windows in a row."
    )
    inconclusive_limit: int | None = Field(
        default=None,
        ge=1,
        le=1000,
        description=(
            "After this many INCONCLUSIVE windows in a row (too little traffic, an interval "
            "straddling the limit) the service is HELD: never promoted, and said so."
        ),
    )
    error_rate: ErrorRateGate | None = None
    latency_p95: LatencyGate | None = None
    success_rate: SuccessRateGate | None = None
    vs_stable: VsStableGate | None = None


class CloudMonitoringMetrics(_Model):
    """Cloud Monitoring (`run.googleapis.com/request_count`, `request_latencies`)."""

    provider: Literal["cloud-monitoring"]


class PrometheusQueries(_Model):
    """PromQL per measure; `{service}`, `{revision}` and `{window}` are substituted."""

    requests: str | None = None
    errors: str | None = None
    successes: str | None = None
    latency_p50: str | None = None
    latency_p95: str | None = None
    latency_p99: str | None = None


_TEMPLATE_URL = re.compile(r"\{(?:canary_url|stable_url|service_url)\}(?:/\S*)?")
_HTTP_URL = re.compile(r"https?://[^\s/?#]+(?:[/?#]\S*)?")


def _http_url(value: str) -> str:
    if _TEMPLATE_URL.fullmatch(value) or _HTTP_URL.fullmatch(value):
        return value
    raise ValueError(
        "expected an http(s) URL or one starting with {canary_url} / {stable_url} / "
        f"{{service_url}}, got {describe_value(value)}"
    )


HttpUrl = Annotated[
    str,
    AfterValidator(_http_url),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": r"^(https?://[^\s/?#]+([/?#]\S*)?|\{(canary_url|stable_url|service_url)\}"
            r"(/\S*)?)$",
            "examples": ["{canary_url}/api/health", "http://localhost:5000/api/health"],
        }
    ),
]


class PrometheusMetrics(_Model):
    """A Prometheus server's HTTP API."""

    provider: Literal["prometheus"]
    url: HttpUrl = Field(description="Base URL of the Prometheus HTTP API.")
    queries: PrometheusQueries = PrometheusQueries()


Metrics = Annotated[CloudMonitoringMetrics | PrometheusMetrics, Field(discriminator="provider")]


class EnvValue(_Model):
    """A header value read from an environment variable at run time, never stored."""

    env: Annotated[
        str,
        AfterValidator(_matches(ENV_NAME_RE, "environment variable name", "like API_TOKEN")),
    ]


Scalar = str | int | float | bool | None
HeaderName = Annotated[str, AfterValidator(_matches(HEADER_NAME_RE, "header name", "a token"))]


def _repeat_budget(value: timedelta) -> timedelta:
    if value > MAX_REPEAT_BUDGET:
        raise ValueError(
            f"budget {format_duration(value)} is over {format_duration(MAX_REPEAT_BUDGET)}: "
            "a run must not wait that long on synthetic load"
        )
    return value


class Repeat(_Model):
    """Synthetic load: a probe sent again at `rate`, at most `max` times per run and for at
    most `budget` of wall-clock time, so a low-traffic canary gets enough requests to judge."""

    rate: Rate = Field(description="Requests per second or minute, like 2/s or 30/m.")
    max: int = Field(ge=1, le=10_000, description="At most this many requests per run.")
    budget: Annotated[Window, AfterValidator(_repeat_budget)] = Field(
        default=timedelta(seconds=60), description="At most this long per run (wall clock)."
    )


class Check(_Model):
    """An HTTP check: a canary probe or a dependency health check."""

    name: Annotated[
        str, AfterValidator(_matches(CHECK_NAME_RE, "check name", "like canary-health"))
    ] = Field(description="Unique among probes and dependencies.")
    url: HttpUrl = Field(description="http(s) URL, or {canary_url}/{stable_url}/{service_url}.")
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"] = "GET"
    json_body: Any = Field(default=None, alias="json", description="JSON request body.")
    # Mutable defaults by factory: pydantic deep-copies a `default={}` for every model it
    # builds (a quarter of a rollout file's validation); the schema still shows the default.
    headers: dict[HeaderName, str | EnvValue] = Field(
        default_factory=dict,
        json_schema_extra={"default": {}},
        description="Header values, or {env: NAME} to read one from the environment.",
    )
    timeout: Latency = Field(default=10.0, description="Give up on the request after this.")
    max_latency: Latency | None = Field(
        default=None, description="Fail when the response takes longer than this."
    )
    expect_status: int | None = Field(
        default=None, ge=100, le=599, description="Required status code (default: any 2xx)."
    )
    expect: dict[str, Scalar] = Field(
        default_factory=dict,
        json_schema_extra={"default": {}},
        description="JSON body fields that must equal these values (a.b for nesting).",
    )
    expect_min: dict[str, float | int] = Field(
        default_factory=dict,
        json_schema_extra={"default": {}},
        description="JSON body fields that must be at least these numbers.",
    )
    expect_max: dict[str, float | int] = Field(
        default_factory=dict,
        json_schema_extra={"default": {}},
        description="JSON body fields that must be at most these numbers.",
    )
    auth: Literal["id_token"] | None = Field(
        default=None,
        description="id_token: send a Google-signed ID token minted from the runtime "
        "credentials (a Cloud Run service that requires authentication).",
    )
    audience: (
        Annotated[
            str,
            AfterValidator(_matches(_HTTP_URL.pattern, "ID token audience", "an http(s) URL")),
        ]
        | None
    ) = Field(
        default=None,
        description="The ID token's audience (default: the service URL the check calls).",
    )
    repeat: Repeat | None = Field(
        default=None,
        description="Probes only: send the probe again as synthetic load (rate, max, budget).",
    )

    @model_validator(mode="after")
    def _auth_rules(self) -> Check:
        if self.audience is not None and self.auth is None:
            raise RuleError(("audience",), "audience needs auth: id_token")
        if self.auth is not None and any(h.lower() == "authorization" for h in self.headers):
            raise RuleError(
                ("auth",), "auth: id_token sends the Authorization header; remove it from headers"
            )
        return self

    # By name too, so Python code can say `Check(json_body=...)`; the loader validates by
    # alias only, so a rollout file must say `json:`.
    model_config = ConfigDict(
        frozen=True, extra="forbid", strict=True, validate_by_name=True, validate_by_alias=True
    )


class RolledBack(_Model):
    """Written by the reconciler on rollback; a human removes it (or names a new canary)."""

    revision: RevisionName
    at: datetime = Field(description="When the rollback happened (ISO 8601).")
    reason: str

    # Not strict: `at` is an ISO 8601 string in YAML (timestamps stay text in the loader).
    model_config = ConfigDict(frozen=True, extra="forbid", strict=False)


# --- notifications ------------------------------------------------------------------------
NoticeEvent = Literal["rollback", "block", "hold", "advance", "finalize", "wave_hold"]
NOTICE_EVENTS: tuple[NoticeEvent, ...] = (
    "rollback",
    "block",
    "hold",
    "advance",
    "finalize",
    "wave_hold",
)


class _Channel(_Model):
    url: EnvValue = Field(
        description="{env: NAME}: the webhook URL is a secret, read from the environment."
    )
    on: list[NoticeEvent] = Field(
        default=list(NOTICE_EVENTS),
        min_length=1,
        description="Which events to send (default: all of them).",
    )


class SlackChannel(_Channel):
    """A Slack incoming webhook."""

    kind: Literal["slack"]


class GoogleChatChannel(_Channel):
    """A Google Chat space webhook."""

    kind: Literal["google-chat"]


class WebhookChannel(_Channel):
    """Any HTTP endpoint: a JSON body signed with HMAC-SHA256 (docs/notifications.md)."""

    kind: Literal["webhook"]
    secret: EnvValue = Field(description="{env: NAME}: the HMAC-SHA256 key.")


Channel = Annotated[SlackChannel | GoogleChatChannel | WebhookChannel, Field(discriminator="kind")]


Stage = Annotated[int, Field(ge=1, le=100)]
Wave = Annotated[list[RegionId], Field(min_length=1)]
"""One wave of a multi-region rollout: regions that take each stage together."""


# --- the rollout file ---------------------------------------------------------------------
class Reports(_Model):
    """When the scheduled `apply` writes and commits stage reports by itself (null: never)."""

    interim: Window | None = Field(
        default=timedelta(hours=24),
        description="Interim report of a stage once it has been live this long.",
    )
    final: Window | None = Field(
        default=timedelta(hours=48),
        description="Go/no-go report of a stage once it has been live this long; a final "
        "report is also written when the rollout finalizes or rolls back.",
    )


class RolloutSpec(_Model):
    """Desired state of one Cloud Run service's canary rollout."""

    service: ServiceId = Field(description="Cloud Run service id; the file is <service>.yaml.")
    project: ProjectId = Field(description="GCP project id.")
    region: RegionId = Field(
        description="Cloud Run region, like us-central1. A file names either region or waves."
    )
    waves: list[Wave] | None = Field(
        default=None,
        min_length=1,
        description="Several regions of the service, in waves: a stage starts in a wave only "
        "after every region of the previous wave passed its gates at that stage for bake "
        "(docs/fleet.md). A file names either region or waves.",
    )
    revisions: Revisions
    canary_percent: int = Field(
        ge=0, le=100, description="Percent of traffic on the canary now: 0 or one of the stages."
    )
    stages: list[Stage] = Field(
        min_length=1,
        description="Canary percents, strictly increasing, ending at 100.",
        # The closest JSON Schema gets to "increasing, ending at 100", for editors.
        json_schema_extra={"uniqueItems": True, "contains": {"const": 100}},
    )
    auto_advance: bool = Field(
        default=False, description="Commit the next stage by itself once gates passed for bake."
    )
    bake: Duration = Field(
        default=timedelta(hours=24), description="Minimum time at a stage before promotion."
    )
    self_heal: bool = Field(
        default=True, description="Correct drift (traffic changed by hand) on apply."
    )
    gates: Gates = Gates()
    metrics: Metrics = CloudMonitoringMetrics(provider="cloud-monitoring")
    probes: list[Check] = Field(
        default_factory=list,
        json_schema_extra={"default": []},
        description="Checks of the canary at every stage.",
    )
    dependencies: list[Check] = Field(
        default_factory=list,
        json_schema_extra={"default": []},
        description="Must be healthy before any traffic moves.",
    )
    notify: list[Channel] = Field(
        default_factory=list,
        json_schema_extra={"default": []},
        description="Where to send rollbacks, blocks, holds, advances, finalizes and wave holds.",
    )
    reports: Reports = Reports()
    force: bool = Field(
        default=False, description="Skip the bake gate once; the plan shows it loudly."
    )
    rolled_back: RolledBack | None = Field(
        default=None, description="Written by the reconciler; delete it to retry the canary."
    )
    rolled_back_regions: dict[RegionId, RolledBack] = Field(
        default={},
        description="Waves only, written by the reconciler: the regions whose canary was rolled "
        "back (the others hold). Delete an entry, or reconcile retry, to retry that region.",
    )
    paused: bool = Field(
        default=False,
        description="Hold traffic where it is: no advance, no drift correction (never a "
        "rollback). Written by `reconcile pause` and `abort`; removed by `resume`.",
    )

    @model_validator(mode="before")
    @classmethod
    def _lead_region(cls, data: Any) -> Any:
        # A file with `waves:` names no `region`: the model's region is then the first region
        # of the first wave (the lead), and `waves.expand` gives one spec per region.
        if isinstance(data, dict) and "region" not in data:
            waves = data.get("waves")
            if isinstance(waves, list) and waves and isinstance(waves[0], list) and waves[0]:
                return {**data, "region": waves[0][0]}
        return data

    @model_validator(mode="after")
    def _rules(self) -> RolloutSpec:
        self._wave_rules()
        stages = self.stages
        for i in range(1, len(stages)):
            if stages[i] <= stages[i - 1]:
                raise RuleError(
                    ("stages", i),
                    f"{stages[i]} does not come after {stages[i - 1]}: "
                    "stages must be strictly increasing",
                )
        if stages[-1] != 100:
            raise RuleError(
                ("stages", len(stages) - 1),
                f"the last stage must be 100 (full traffic on the canary), got {stages[-1]}",
            )
        if self.canary_percent != 0 and self.canary_percent not in stages:
            raise RuleError(
                ("canary_percent",),
                f"{self.canary_percent} is neither 0 nor one of the stages {stages}",
            )
        stable, canary = self.revisions.stable, self.revisions.canary
        prefix = f"{self.service}-"
        for key, rev in (("stable", stable), ("canary", canary)):
            if rev is not None and not rev.startswith(prefix):
                raise RuleError(
                    ("revisions", key),
                    f"{rev} is not a revision of {self.service} (Cloud Run names them {prefix}...)",
                )
        if canary is not None and canary == stable:
            raise RuleError(
                ("revisions", "canary"), f"same revision as revisions.stable ({stable})"
            )
        if canary is None and self.canary_percent != 0:
            raise RuleError(
                ("canary_percent",),
                f"{self.canary_percent} but revisions.canary is not set; name the canary or use 0",
            )
        rb = self.rolled_back
        if rb is not None and canary == rb.revision and self.canary_percent != 0:
            raise RuleError(
                ("canary_percent",),
                f"canary {canary} was rolled back ({rb.reason}); name a new canary or delete "
                "the rolled_back block to retry",
            )
        longest = max(len(t) for t in TRAFFIC_TAGS)
        if len(self.service) + longest > MAX_TAG_AND_SERVICE:
            raise RuleError(
                ("service",),
                f"{self.service!r} is {len(self.service)} characters: Cloud Run refuses the "
                f"tag {TRAFFIC_TAGS[-1]!r} when tag and service name exceed "
                f"{MAX_TAG_AND_SERVICE} together, so the longest usable name is "
                f"{MAX_TAG_AND_SERVICE - longest} characters",
            )
        if isinstance(self.metrics, CloudMonitoringMetrics):
            for loc, window in _windows(self.gates):
                if window < MIN_MONITORING_WINDOW or window.total_seconds() % 60:
                    raise RuleError(
                        loc,
                        f"{format_duration(window)}: Cloud Monitoring samples Cloud Run "
                        "metrics every 60 s and refuses alignment periods under 60 s; use a "
                        "whole number of minutes (1m or more)",
                    )
        seen: set[str] = set()
        for kind, checks in (("probes", self.probes), ("dependencies", self.dependencies)):
            for i, check in enumerate(checks):
                if check.name in seen:
                    raise RuleError(
                        (kind, i, "name"),
                        f"{check.name!r} is used twice; probe and dependency names must be unique",
                    )
                seen.add(check.name)
        for i, check in enumerate(self.dependencies):
            if check.repeat is not None:
                raise RuleError(
                    ("dependencies", i, "repeat"),
                    "repeat is for canary probes (synthetic load on the canary), not dependencies",
                )
        return self

    def _wave_rules(self) -> None:
        named: dict[str, int] = {}
        for i, wave in enumerate(self.waves or ()):
            for j, region in enumerate(wave):
                if region in named:
                    raise RuleError(
                        ("waves", i, j),
                        f"{region} is already in wave {named[region] + 1}: a region rolls out once",
                    )
                named[region] = i
        if self.waves is not None and self.region not in named:
            raise RuleError(("region",), f"{self.region} is not one of the waves' regions")
        if self.waves is not None and isinstance(self.metrics, PrometheusMetrics):
            # Its queries select by service and revision only: the regions' series would be
            # summed, and one region's failure diluted by the others.
            raise RuleError(
                ("metrics", "provider"),
                "prometheus queries cannot tell the regions of waves apart (no region in "
                "them); use cloud-monitoring, or one file per region",
            )
        for region in self.rolled_back_regions:
            if region not in named:
                raise RuleError(
                    ("rolled_back_regions", region),
                    f"{region} is not one of the waves' regions"
                    if self.waves is not None
                    else "rolled_back_regions belongs to a file with waves; a single-region "
                    "file records its rollback in rolled_back",
                )

    def next_stage(self) -> int | None:
        """The stage after the current one (the first stage from 0%), None at 100%."""
        for s in self.stages:
            if s > self.canary_percent:
                return s
        return None


# --- rollout/_defaults.yaml ------------------------------------------------------------------
DEFAULTS_FILE = "_defaults.yaml"
DEFAULTABLE = (
    "auto_advance",
    "bake",
    "self_heal",
    "gates",
    "metrics",
    "probes",
    "dependencies",
    "notify",
    "reports",
)
"""Keys `rollout/_defaults.yaml` may set. What names a rollout (service, project, region,
revisions, stages, canary_percent) and what a run writes (force, rolled_back) stay in each
file, so the file alone says which revision gets how much traffic."""


class RolloutDefaults(_Model):
    """`rollout/_defaults.yaml`: keys merged under every rollout file of the directory.

    A key the rollout file sets wins; `gates` merges per key (one gate replaces the same
    gate of the defaults, whole). Validated on its own, like a rollout file.
    """

    auto_advance: bool | None = None
    bake: Duration | None = None
    self_heal: bool | None = None
    gates: Gates | None = None
    metrics: Metrics | None = None
    probes: list[Check] | None = None
    dependencies: list[Check] | None = None
    notify: list[Channel] | None = None
    reports: Reports | None = None


def merge_defaults(defaults: dict[str, Any], rollout: dict[str, Any]) -> dict[str, Any]:
    """The rollout file's values over the defaults' (both plain parsed YAML): top-level keys
    the file sets win, and `gates` merges key by key (each gate whole)."""
    merged = {**defaults, **rollout}
    gates_d, gates_r = defaults.get("gates"), rollout.get("gates")
    if isinstance(gates_d, dict) and isinstance(gates_r, dict):
        merged["gates"] = {**gates_d, **gates_r}
    return merged


def _windows(gates: Gates) -> list[tuple[tuple[str, ...], timedelta]]:
    """Every configured window with its key path: `gates.window` and the gates' overrides."""
    out: list[tuple[tuple[str, ...], timedelta]] = [(("gates", "window"), gates.window)]
    for name in ("error_rate", "latency_p95", "success_rate"):
        gate = getattr(gates, name)
        if gate is not None and gate.window is not None:
            out.append((("gates", name, "window"), gate.window))
    return out


def json_schema() -> dict[str, Any]:
    """The JSON Schema (draft-07) of a rollout file, for editors and other tools.

    Draft-07 because that is what yaml-language-server (and so most editors) fully
    supports. Rules spanning several keys (stages strictly increasing, canary_percent one
    of the stages, ...) are beyond JSON Schema; `reconcile validate` checks them.
    """
    # Serialization mode only so that defaults show in their written form (`24h`, not
    # `P1D`); every type here reads and writes the same shape.
    schema = RolloutSpec.model_json_schema(
        by_alias=True, mode="serialization", ref_template="#/definitions/{model}"
    )
    definitions = schema.pop("$defs", {})
    schema["title"] = "Rollout file (rollout/<service>.yaml)"
    # Either `region` or `waves`, never both (the model fills `region` from `waves`).
    schema["required"] = [k for k in schema["required"] if k != "region"]
    schema["oneOf"] = [{"required": ["region"]}, {"required": ["waves"]}]
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        **schema,
        "definitions": definitions,
    }


def defaults_json_schema() -> dict[str, Any]:
    """The JSON Schema (draft-07) of `rollout/_defaults.yaml`."""
    schema = RolloutDefaults.model_json_schema(
        by_alias=True, mode="serialization", ref_template="#/definitions/{model}"
    )
    definitions = schema.pop("$defs", {})
    schema["title"] = "Shared rollout defaults (rollout/_defaults.yaml)"
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        **schema,
        "definitions": definitions,
    }


def schema_text(defaults: bool = False) -> str:
    """`json_schema()` as the text committed in `schema/rollout.schema.json` (with
    `defaults`, `defaults_json_schema()` for `schema/defaults.schema.json`)."""
    schema = defaults_json_schema() if defaults else json_schema()
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"
