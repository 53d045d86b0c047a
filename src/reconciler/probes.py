"""HTTP probes: dependency health checks, canary probes, canary-vs-stable comparison, bench.

Two layers. The judging functions (`evaluate`, `lookup`, `percentile`, `side_stats`,
`compare_verdict`, `compare_to_baseline`) are pure: they take what an HTTP exchange produced
and return verdicts and reasons. The engine (`Prober`, `run_checks`, `compare`, `bench`) makes
the HTTP calls through one `httpx.Client`, so connections to a host are reused across checks.

Header values are secrets: they are read from the environment when a request is sent and
never kept in a result, a reason, a log line or a repr.
"""

from __future__ import annotations

import json
import math
import os
import re
import statistics
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit, urlunsplit

import httpx

from reconciler import redact, safepath
from reconciler.analysis import ProbeRun
from reconciler.errors import ReconcileError
from reconciler.model import GateResult, LiveService, Outcome, ServiceRef
from reconciler.spec import Check, EnvValue, RolloutSpec
from reconciler.state import atomic_write_text

if TYPE_CHECKING:
    from reconciler.backends import TrafficBackend
    from reconciler.progress import Progress

# A probe reads at most this much of a response body: health and smoke answers are small,
# and an endless body must not hang or exhaust the reconciler.
MAX_BODY_BYTES = 1 << 20
USER_AGENT = "cloudrun-reconciler-probe"


class ProbeConfigError(ReconcileError):
    """A check cannot be sent as configured (unset environment variable, unknown URL)."""


# --- values ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Urls:
    """The base URLs that `{canary_url}`, `{stable_url}` and `{service_url}` stand for."""

    canary: str | None = None
    stable: str | None = None
    service: str | None = None


@dataclass(frozen=True)
class Exchange:
    """What one HTTP request produced: the pure input of `evaluate`.

    `status` is None when no response arrived; `error` then says why (a one-liner).
    `latency` is the elapsed time in seconds, up to the answer or the failure.
    """

    status: int | None
    latency: float
    body: bytes = b""
    content_type: str = ""
    error: str | None = None


@dataclass(frozen=True)
class ProbeResult:
    """The outcome of one check. Holds no header value: safe to log, store and report."""

    name: str
    ok: bool
    status: int | None
    latency: float
    reason: str
    """One line starting with the check name, e.g. `chat-smoke: success is false, expected true`."""
    url: str
    """The requested URL without user info."""
    answered: bool = True
    """False when no HTTP response arrived (refused, timeout); `latency` is then time to failure."""

    @property
    def why(self) -> str:
        """The reason without the leading check name ("" when the check passed)."""
        return "" if self.ok else self.reason.removeprefix(f"{self.name}: ")

    def as_run(self) -> ProbeRun:
        """This result as the judge's input (`analysis.judge(..., probes=[...])`)."""
        return ProbeRun(name=self.name, ok=self.ok, reason=self.why)

    def as_gate(self) -> GateResult:
        """This result as a gate for the judge: a failing probe is a failing gate."""
        return GateResult(
            gate=f"probe:{self.name}",
            outcome=Outcome.PASS if self.ok else Outcome.FAIL,
            value=self.latency if self.answered else None,
            threshold=None,
            samples=1,
            reason=self.reason,
        )


# --- pure judging ----------------------------------------------------------------------------
MISSING: Final = object()
"""Stands for a path that is not in the document (or a body that is not JSON)."""


def lookup(document: Any, path: str) -> Any:
    """The value at a dotted path (`data.model.name`, `items.0.id`), or `MISSING`.

    A segment of digits indexes a list. A key that itself contains dots is matched whole
    when present, so `{"a.b": 1}` answers `a.b`.
    """
    if isinstance(document, dict) and path in document:
        return document[path]
    head, dot, rest = path.partition(".")
    if isinstance(document, dict):
        if head not in document:
            return MISSING
        value = document[head]
    elif isinstance(document, list) and head.isdigit():
        index = int(head)
        if index >= len(document):
            return MISSING
        value = document[index]
    else:
        return MISSING
    return lookup(value, rest) if dot else value


def _same(actual: Any, expected: Any) -> bool:
    # YAML `true` must not equal JSON `1`, but `1` equals `1.0`.
    if isinstance(actual, bool) or isinstance(expected, bool):
        return isinstance(actual, bool) and isinstance(expected, bool) and actual == expected
    if isinstance(actual, int | float) and isinstance(expected, int | float):
        return float(actual) == float(expected)
    return type(actual) is type(expected) and bool(actual == expected)


def _show(value: Any) -> str:
    # Scrubbed before shortening: half a secret is no longer recognisable afterwards.
    text = redact.scrub(json.dumps(value, ensure_ascii=False, sort_keys=True))
    return text if len(text) <= 60 else text[:57] + "..."


def format_seconds(seconds: float) -> str:
    """`0.1234` -> `123ms`, `16.24` -> `16.2s`, `15.0` -> `15s`."""
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    return f"{seconds:.1f}".removesuffix(".0") + "s"


def _over(latency: float, limit: float) -> str:
    shown, bound = format_seconds(latency), format_seconds(limit)
    if shown == bound:  # 15.04s must not read as "15s > 15s"
        shown = f"{latency:.3f}s"
    return f"latency {shown} > {bound}"


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def parse_json(exchange: Exchange) -> Any:
    """The JSON document of a response body, or `MISSING` when the body is not JSON."""
    try:
        return json.loads(exchange.body)
    except (ValueError, UnicodeDecodeError):
        return MISSING


def needs_json(check: Check) -> bool:
    """True when the check looks inside the response body."""
    return bool(check.expect or check.expect_min or check.expect_max)


def _bound(document: Any, path: str, bound: float, word: str) -> list[str]:
    actual = lookup(document, path)
    if actual is MISSING:
        return [f"{path} is missing, expected a number ({word} {bound:g})"]
    number = _number(actual)
    if number is None:
        return [f"{path} is {_show(actual)}, expected a number ({word} {bound:g})"]
    if word == "min" and number < bound:
        return [f"{path} {number:g} < min {bound:g}"]
    if word == "max" and number > bound:
        return [f"{path} {number:g} > max {bound:g}"]
    return []


def evaluate(check: Check, exchange: Exchange) -> tuple[str, ...]:
    """Why `exchange` fails `check` (one short reason each); empty when it passes.

    Order: no answer, then a wrong status (nothing else is judged on a wrong status), then
    the latency limit and the JSON expectations, all reported together.
    """
    if exchange.status is None:
        return (exchange.error or "no response",)
    status = exchange.status
    if check.expect_status is not None:
        if status != check.expect_status:
            return (f"HTTP {status}, expected {check.expect_status}",)
    elif not 200 <= status < 300:
        return (f"HTTP {status}, expected 2xx",)
    reasons: list[str] = []
    if check.max_latency is not None and exchange.latency > check.max_latency:
        reasons.append(_over(exchange.latency, check.max_latency))
    if not needs_json(check):
        return tuple(reasons)
    if exchange.error:  # e.g. the body was too large to read
        return (*reasons, exchange.error)
    document = parse_json(exchange)
    if document is MISSING:
        kind = exchange.content_type.split(";")[0].strip() or "no content type"
        return (*reasons, f"response is not JSON ({kind}) but expectations need JSON")
    for path, expected in check.expect.items():
        actual = lookup(document, path)
        if actual is MISSING:
            reasons.append(f"{path} is missing, expected {_show(expected)}")
        elif not _same(actual, expected):
            reasons.append(f"{path} is {_show(actual)}, expected {_show(expected)}")
    for path, bound in check.expect_min.items():
        reasons.extend(_bound(document, path, float(bound), "min"))
    for path, bound in check.expect_max.items():
        reasons.extend(_bound(document, path, float(bound), "max"))
    return tuple(reasons)


def result_of(check: Check, url: str, exchange: Exchange) -> ProbeResult:
    """Judge an exchange into a `ProbeResult` (pure)."""
    failures = evaluate(check, exchange)
    if failures:
        reason = f"{check.name}: " + "; ".join(failures)
    else:
        reason = f"{check.name}: ok (HTTP {exchange.status} in {format_seconds(exchange.latency)})"
    return ProbeResult(
        name=check.name,
        ok=not failures,
        status=exchange.status,
        latency=exchange.latency,
        reason=reason,
        url=redact_url(url),
        answered=exchange.status is not None,
    )


MIN_REDACTED_SECRET: Final = 6
"""Shorter header values are not redacted from answers: masking every `ab` in a body would
make checks fail, and a value that short protects nothing."""
REDACTED: Final = "[redacted]"


def redact_exchange(exchange: Exchange, secrets: Sequence[str]) -> Exchange:
    """`exchange` with every secret removed from its body and error (pure).

    A server may echo a request header back (an error page, a debug field); the reason a
    check fails quotes the answer, and reasons are stored, logged and reported.
    """
    body, error = exchange.body, exchange.error
    every_form = {form for secret in secrets for form in redact.forms(secret)}
    for secret in sorted(every_form, key=len, reverse=True):
        body = body.replace(secret.encode(), REDACTED.encode())
        if error is not None:
            error = error.replace(secret, REDACTED)
    return replace(exchange, body=body, error=error)


def redact_url(url: str) -> str:
    """The URL without user info (`https://user:pass@host/` -> `https://host/`)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


_PLACEHOLDER = re.compile(r"^\{(canary_url|stable_url|service_url)\}")
_KIND = {"canary_url": "canary", "stable_url": "stable", "service_url": "service"}


def resolve_url(check: Check, urls: Urls) -> str:
    """The check's URL with its placeholder replaced; a clear error when the base is unknown."""
    m = _PLACEHOLDER.match(check.url)
    if not m:
        return check.url
    kind = _KIND[m.group(1)]
    base = {"canary": urls.canary, "stable": urls.stable, "service": urls.service}[kind]
    if not base:
        why = (
            "the service reports no URL"
            if kind == "service"
            else f"no traffic target is tagged {kind!r} (Cloud Run deletes tags without "
            "traffic once its region holds 2,000 tags; the next apply tags it again)"
        )
        raise ProbeConfigError(f"{check.name}: url {check.url} needs {{{m.group(1)}}}, but {why}")
    return base.rstrip("/") + check.url[m.end() :]


def resolve_headers(check: Check, environ: Mapping[str, str]) -> dict[str, str]:
    """Header values, reading `{env: NAME}` values from `environ`.

    An unset or empty variable is an error naming the check, the header and the variable,
    never a value.
    """
    out: dict[str, str] = {}
    for name, value in check.headers.items():
        if isinstance(value, EnvValue):
            secret = environ.get(value.env, "")
            if not secret:
                raise ProbeConfigError(
                    f"{check.name}: header {name} reads environment variable {value.env}, "
                    "which is not set"
                )
            redact.register(secret)  # every sink scrubs it from now on
            out[name] = secret
        else:
            out[name] = value
    return out


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100) with linear interpolation between closest ranks.

    The same definition as `numpy.percentile`'s default; None for no values.
    """
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


# --- canary vs stable ------------------------------------------------------------------------
@dataclass(frozen=True)
class SideStats:
    """One side (canary or stable) of a side-by-side probe."""

    label: str
    url: str
    requests: int
    successes: int
    status_counts: Mapping[str, int]
    """`"200"` -> 9, `"no response"` -> 1."""
    p50: float | None
    p95: float | None
    failures: tuple[str, ...] = ()
    """Distinct failure reasons, most frequent first."""

    @property
    def success_rate(self) -> float:
        """Share of requests that passed (0.0 without requests)."""
        return self.successes / self.requests if self.requests else 0.0


@dataclass(frozen=True)
class CompareRule:
    """When the canary is worse than the stable.

    FAIL when the canary's success rate is more than `success_margin` below the stable's,
    or when the canary's p95 is above `latency_ratio` times the stable's p95 *and* at least
    `latency_slack` seconds slower (so 8 ms against 5 ms is noise, not a regression).
    INCONCLUSIVE when neither side had a single success. PASS otherwise.
    """

    success_margin: float = 0.10
    latency_ratio: float = 1.5
    latency_slack: float = 0.1

    def describe(self) -> str:
        """The rule in one sentence."""
        return (
            f"FAIL when the canary's success rate is more than {self.success_margin:.0%} below "
            f"the stable's, or its p95 is over {self.latency_ratio:g}x the stable's and "
            f"{format_seconds(self.latency_slack)} slower"
        )


@dataclass(frozen=True)
class Comparison:
    """The side-by-side probe of canary and stable, with its verdict."""

    method: str
    path: str
    canary: SideStats
    stable: SideStats
    outcome: Outcome
    reasons: tuple[str, ...]
    rule: CompareRule


def side_stats(label: str, url: str, results: Sequence[ProbeResult]) -> SideStats:
    """Summarise one side's results (pure). Latency percentiles count answered requests."""
    counts: Counter[str] = Counter(
        str(r.status) if r.status is not None else "no response" for r in results
    )
    latencies = [r.latency for r in results if r.answered]
    failures = Counter(r.why for r in results if not r.ok)
    return SideStats(
        label=label,
        url=redact_url(url),
        requests=len(results),
        successes=sum(r.ok for r in results),
        status_counts=dict(sorted(counts.items())),
        p50=percentile(latencies, 50),
        p95=percentile(latencies, 95),
        failures=tuple(reason for reason, _ in failures.most_common()),
    )


def compare_verdict(
    canary: SideStats, stable: SideStats, rule: CompareRule = CompareRule()
) -> tuple[Outcome, tuple[str, ...]]:
    """The verdict of a side-by-side probe under `rule` (pure); reasons explain a non-PASS."""
    if canary.successes == 0 and stable.successes == 0:
        return Outcome.INCONCLUSIVE, ("neither canary nor stable answered successfully",)
    reasons: list[str] = []
    if canary.success_rate < stable.success_rate - rule.success_margin - 1e-9:
        reasons.append(
            f"success {canary.success_rate:.0%} on canary vs {stable.success_rate:.0%} on "
            f"stable (more than {rule.success_margin:.0%} lower)"
        )
    if (
        canary.p95 is not None
        and stable.p95 is not None
        and canary.p95 > stable.p95 * rule.latency_ratio
        and canary.p95 - stable.p95 >= rule.latency_slack
    ):
        reasons.append(
            f"p95 {format_seconds(canary.p95)} on canary vs {format_seconds(stable.p95)} on "
            f"stable (over {rule.latency_ratio:g}x)"
        )
    return (Outcome.FAIL if reasons else Outcome.PASS), tuple(reasons)


# --- bench -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class BenchSample:
    """One iteration of a bench."""

    ok: bool
    status: int | None
    latency: float
    confidence: float | None = None
    reason: str = ""


@dataclass(frozen=True)
class BenchResult:
    """Repeated requests to one check or URL: response times, success, `confidence`."""

    name: str
    url: str
    samples: tuple[BenchSample, ...]

    @property
    def latencies(self) -> list[float]:
        """Response times of the answered iterations, in seconds."""
        return [s.latency for s in self.samples if s.status is not None]

    @property
    def p50(self) -> float | None:
        """Median response time."""
        return percentile(self.latencies, 50)

    @property
    def p95(self) -> float | None:
        """95th percentile response time."""
        return percentile(self.latencies, 95)

    @property
    def mean(self) -> float | None:
        """Mean response time."""
        return statistics.fmean(self.latencies) if self.latencies else None

    @property
    def success_rate(self) -> float:
        """Share of iterations that passed."""
        return sum(s.ok for s in self.samples) / len(self.samples) if self.samples else 0.0

    @property
    def confidences(self) -> list[float]:
        """The numeric `confidence` values the responses carried."""
        return [s.confidence for s in self.samples if s.confidence is not None]

    @property
    def confidence_mean(self) -> float | None:
        """Mean `confidence`, None when no response carried one."""
        return statistics.fmean(self.confidences) if self.confidences else None

    def summary(self) -> str:
        """One line: success, p50/p95/mean and confidence."""
        ok = sum(s.ok for s in self.samples)
        parts = [f"{self.name}: success {ok}/{len(self.samples)} ({self.success_rate:.0%})"]
        for label, value in (("p50", self.p50), ("p95", self.p95), ("mean", self.mean)):
            parts.append(f"{label} {format_seconds(value) if value is not None else '-'}")
        if self.confidences:
            lo, hi = min(self.confidences), max(self.confidences)
            parts.append(f"confidence {self.confidence_mean:.2f} ({lo:g}-{hi:g})")
        return "  ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, with the derived figures for readers of the file."""
        return {
            "name": self.name,
            "url": self.url,
            "success_rate": self.success_rate,
            "p50": self.p50,
            "p95": self.p95,
            "mean": self.mean,
            "confidence_mean": self.confidence_mean,
            "samples": [asdict(s) for s in self.samples],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BenchResult:
        """Read back `to_dict` output (derived figures are recomputed, not trusted)."""
        return cls(
            name=str(data["name"]),
            url=str(data["url"]),
            samples=tuple(BenchSample(**s) for s in data["samples"]),
        )


@dataclass(frozen=True)
class Baseline:
    """A saved bench of a service: one `BenchResult` per check, taken at one time."""

    service: str
    taken_at: datetime
    target: str
    """Which side was measured: `stable`, `service` or `canary`."""
    revision: str | None
    results: tuple[BenchResult, ...] = field(default_factory=tuple)

    def result(self, name: str) -> BenchResult | None:
        """The bench of the check called `name`, if present."""
        return next((r for r in self.results if r.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "service": self.service,
            "taken_at": self.taken_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
            "target": self.target,
            "revision": self.revision,
            "results": [r.to_dict() for r in self.results],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Baseline:
        """Read back `to_dict` output."""
        return cls(
            service=str(data["service"]),
            taken_at=datetime.fromisoformat(str(data["taken_at"]).replace("Z", "+00:00")),
            target=str(data["target"]),
            revision=data.get("revision"),
            results=tuple(BenchResult.from_dict(r) for r in data["results"]),
        )


@dataclass(frozen=True)
class BaselineRule:
    """How much worse than the baseline counts as a regression.

    A regression: success rate lower by more than `success_margin`; p95 or mean above the
    baseline's times `latency_ratio` and at least `latency_slack` seconds slower; mean
    `confidence` lower by more than `confidence_margin`.
    """

    success_margin: float = 0.0
    latency_ratio: float = 1.2
    latency_slack: float = 0.1
    confidence_margin: float = 0.05


def _bench_regressions(current: BenchResult, base: BenchResult, rule: BaselineRule) -> list[str]:
    out: list[str] = []
    if current.success_rate < base.success_rate - rule.success_margin - 1e-9:
        out.append(
            f"{current.name}: success {current.success_rate:.0%} < baseline {base.success_rate:.0%}"
        )
    for label in ("p95", "mean"):
        now, then = getattr(current, label), getattr(base, label)
        if now is None or then is None:
            continue
        if now > then * rule.latency_ratio and now - then >= rule.latency_slack:
            out.append(
                f"{current.name}: {label} {format_seconds(now)} > baseline "
                f"{format_seconds(then)} x{rule.latency_ratio:g}"
            )
    now_c, then_c = current.confidence_mean, base.confidence_mean
    if now_c is not None and then_c is not None and now_c < then_c - rule.confidence_margin:
        out.append(
            f"{current.name}: confidence {now_c:.2f} < baseline {then_c:.2f} "
            f"- {rule.confidence_margin:g}"
        )
    return out


def compare_to_baseline(
    result: BenchResult | Baseline, baseline: Baseline, rule: BaselineRule = BaselineRule()
) -> list[str]:
    """Regressions of `result` against `baseline`, one line each; empty when none (pure).

    A `BenchResult` is compared with the baseline's bench of the same name; a `Baseline`
    check by check, over the checks both have.
    """
    current = result.results if isinstance(result, Baseline) else (result,)
    out: list[str] = []
    for bench_result in current:
        base = baseline.result(bench_result.name)
        if base is not None:
            out.extend(_bench_regressions(bench_result, base, rule))
    return out


def save_baseline(state_dir: Path, baseline: Baseline) -> Path:
    """Write `state/<service>/baselines/<UTC timestamp>.json` and `latest.json`; the path."""
    folder = state_dir / baseline.service / "baselines"
    stamp = baseline.taken_at.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    text = json.dumps(baseline.to_dict(), indent=2, ensure_ascii=False) + "\n"
    path = folder / f"{stamp}.json"
    # Temp file + rename: an interrupted run never leaves a truncated baseline to compare to.
    atomic_write_text(path, text)
    atomic_write_text(folder / "latest.json", text)
    return path


def load_baseline(state_dir: Path, service: str, name: str = "latest") -> Baseline | None:
    """The baseline `state/<service>/baselines/<name>.json`, None when there is none."""
    path = state_dir / service / "baselines" / f"{name}.json"
    safepath.guard(path)  # never read through a symbolic link under state/
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        return Baseline.from_dict(json.loads(text))
    except (ValueError, KeyError, TypeError) as exc:
        raise ReconcileError(f"{path}: not a baseline file ({exc})") from None


# --- the HTTP engine -------------------------------------------------------------------------
def _transport_error(exc: httpx.TransportError, timeout: float) -> str:
    # Own wording, not str(exc): one line an operator reads, never request details.
    if isinstance(exc, httpx.TimeoutException):
        return f"timeout after {format_seconds(timeout)}"
    text = str(exc).lower()
    if isinstance(exc, httpx.ConnectError):
        if "refused" in text:
            return "connection refused"
        if "name or service not known" in text or "nodename nor servname" in text:
            return "cannot resolve host"
        return "cannot connect"
    if isinstance(exc, httpx.RemoteProtocolError):
        return "connection closed without a valid HTTP response"
    return f"request failed ({type(exc).__name__})"


class Prober:
    """Sends checks over one HTTP client, so connections are reused; a context manager.

    `environ` supplies `{env: NAME}` header values (default: the process environment at
    the time of each request). `transport` is for tests that bring their own server.
    """

    def __init__(
        self,
        *,
        environ: Mapping[str, str] | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._environ = environ
        self._client = httpx.Client(
            headers={"User-Agent": USER_AGENT},
            follow_redirects=False,
            transport=transport,
            trust_env=False,  # a proxy from the environment must not see probe secrets
        )

    def __enter__(self) -> Prober:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return "Prober()"

    def close(self) -> None:
        """Close the pooled connections."""
        self._client.close()

    def exchange(
        self,
        method: str,
        url: str,
        *,
        timeout: float,
        headers: Mapping[str, str] | None = None,
        json_body: Any = None,
    ) -> Exchange:
        """Send one request; transport failures become an `Exchange` with `error` set."""
        started = time.perf_counter()
        try:
            with self._client.stream(
                method,
                url,
                headers=headers,
                json=json_body,
                timeout=httpx.Timeout(timeout),
            ) as response:
                body = bytearray()
                too_big = False
                for chunk in response.iter_bytes():
                    body.extend(chunk)
                    if len(body) > MAX_BODY_BYTES:
                        too_big = True
                        break
                    if time.perf_counter() - started > timeout:
                        # httpx's timeout bounds each read; a trickling answer must not
                        # hold a run for longer than the check's whole timeout.
                        return Exchange(
                            status=None,
                            latency=time.perf_counter() - started,
                            error=f"timeout after {format_seconds(timeout)}",
                        )
                latency = time.perf_counter() - started
                return Exchange(
                    status=response.status_code,
                    latency=latency,
                    body=bytes(body) if not too_big else b"",
                    content_type=response.headers.get("content-type", ""),
                    error=f"response body over {MAX_BODY_BYTES} bytes" if too_big else None,
                )
        except httpx.TransportError as exc:
            return Exchange(
                status=None,
                latency=time.perf_counter() - started,
                error=_transport_error(exc, timeout),
            )
        except httpx.HTTPError as exc:  # e.g. a body that does not decode as it claims
            return Exchange(
                status=None,
                latency=time.perf_counter() - started,
                error=f"invalid response ({type(exc).__name__})",
            )

    def send(self, check: Check, url: str) -> Exchange:
        """Send `check` to an already resolved `url`; secrets the answer echoes are redacted."""
        environ = self._environ if self._environ is not None else os.environ
        headers = resolve_headers(check, environ)
        exchange = self.exchange(
            check.method,
            url,
            timeout=check.timeout,
            headers=headers,
            json_body=check.json_body,
        )
        secrets = [
            headers[name]
            for name, value in check.headers.items()
            if isinstance(value, EnvValue) and len(headers[name]) >= MIN_REDACTED_SECRET
        ]
        return redact_exchange(exchange, secrets) if secrets else exchange

    def run(self, check: Check, urls: Urls) -> ProbeResult:
        """Run one check against the URLs its placeholder stands for."""
        url = resolve_url(check, urls)
        result = result_of(check, url, self.send(check, url))
        # An answer may echo a secret transformed (JSON-escaped, decoded): the reason is
        # built from the decoded answer, so it is redacted once more.
        environ = self._environ if self._environ is not None else os.environ
        reason = result.reason
        for value in check.headers.values():
            if isinstance(value, EnvValue):
                secret = environ.get(value.env, "")
                for part in {secret, secret.partition(" ")[2]}:
                    if len(part) >= MIN_REDACTED_SECRET:
                        reason = reason.replace(part, REDACTED)
        return replace(result, reason=reason) if reason != result.reason else result


def run_checks(
    checks: Iterable[Check],
    urls: Urls,
    *,
    environ: Mapping[str, str] | None = None,
    prober: Prober | None = None,
) -> tuple[ProbeResult, ...]:
    """Run checks in order and return every result (a failing check does not stop the rest).

    Every check's URL and headers are resolved first, so a configuration error (an unset
    environment variable, an unknown canary URL) is raised before any request is sent.
    """
    checks = tuple(checks)
    env = environ if environ is not None else os.environ
    for check in checks:
        resolve_url(check, urls)
        resolve_headers(check, env)
    own = prober is None
    engine = prober if prober is not None else Prober(environ=environ)
    try:
        return tuple(engine.run(check, urls) for check in checks)
    finally:
        if own:
            engine.close()


def run_dependencies(
    spec: RolloutSpec,
    urls: Urls = Urls(),
    *,
    environ: Mapping[str, str] | None = None,
    prober: Prober | None = None,
) -> tuple[ProbeResult, ...]:
    """Run the rollout file's `dependencies:`; all must pass before any traffic moves."""
    return run_checks(spec.dependencies, urls, environ=environ, prober=prober)


def run_probes(
    spec: RolloutSpec,
    urls: Urls,
    *,
    environ: Mapping[str, str] | None = None,
    prober: Prober | None = None,
) -> tuple[ProbeResult, ...]:
    """Run the rollout file's `probes:` (normally against the canary tag URL)."""
    return run_checks(spec.probes, urls, environ=environ, prober=prober)


def all_ok(results: Iterable[ProbeResult]) -> bool:
    """True when every result passed."""
    return all(r.ok for r in results)


def _side_check(check: Check | None, path: str) -> Check:
    # The side-by-side probe sends the same request to both sides: a rollout-file check
    # rebased on each side's URL, or a plain GET of `path`.
    if check is None:
        return Check(
            name="compare", url="{service_url}" + (path if path.startswith("/") else "/" + path)
        )
    if not _PLACEHOLDER.match(check.url):
        raise ProbeConfigError(
            f"{check.name}: url {check.url} has no {{canary_url}} / {{stable_url}} placeholder, "
            "so it cannot be sent to both canary and stable"
        )
    return check


def compare(
    canary_url: str,
    stable_url: str,
    *,
    requests: int = 10,
    delay: float = 1.0,
    path: str = "/api/health",
    check: Check | None = None,
    rule: CompareRule = CompareRule(),
    environ: Mapping[str, str] | None = None,
    progress: Progress | None = None,
    sleep: Callable[[float], None] = time.sleep,
    prober: Prober | None = None,
) -> Comparison:
    """Send the same request `requests` times to canary and stable, `delay` seconds apart.

    Each round hits the canary then the stable, so both sides see the same moments. With
    `check`, success means passing that check; without, a 2xx answer to GET `path`.
    """
    if requests < 1:
        raise ValueError("requests must be at least 1")
    probe = _side_check(check, path)
    sides = {"canary": canary_url, "stable": stable_url}
    env = environ if environ is not None else os.environ
    resolve_headers(probe, env)
    results: dict[str, list[ProbeResult]] = {"canary": [], "stable": []}
    own = prober is None
    engine = prober if prober is not None else Prober(environ=environ)
    try:
        for i in range(requests):
            if i and delay > 0:
                sleep(delay)
            for label, base in sides.items():
                urls = Urls(canary=base, stable=base, service=base)
                results[label].append(engine.run(probe, urls))
            if progress is not None:
                progress.update(
                    " ".join(
                        f"{label} {sum(r.ok for r in rs)}/{len(rs)} ok"
                        for label, rs in results.items()
                    )
                )
    finally:
        if own:
            engine.close()
    canary = side_stats("canary", canary_url, results["canary"])
    stable = side_stats("stable", stable_url, results["stable"])
    outcome, reasons = compare_verdict(canary, stable, rule)
    m = _PLACEHOLDER.match(probe.url)
    shown = probe.url[m.end() :] if m else probe.url
    return Comparison(
        method=probe.method,
        path=shown or "/",
        canary=canary,
        stable=stable,
        outcome=outcome,
        reasons=reasons,
        rule=rule,
    )


def bench(
    target: str | Check,
    *,
    iterations: int = 5,
    name: str = "bench",
    urls: Urls = Urls(),
    field_path: str = "confidence",
    environ: Mapping[str, str] | None = None,
    progress: Progress | None = None,
    prober: Prober | None = None,
) -> BenchResult:
    """Send a check (or GET a URL) `iterations` times, one after the other.

    Records each response time, whether it passed and the numeric value at `field_path`
    (the model's `confidence`) where the response carries one. A plain URL is benched as a
    GET called `name`, passing on any 2xx answer.
    """
    if iterations < 1:
        raise ValueError("iterations must be at least 1")
    check = Check(name=name, url=target) if isinstance(target, str) else target
    url = resolve_url(check, urls)
    own = prober is None
    engine = prober if prober is not None else Prober(environ=environ)
    samples: list[BenchSample] = []
    try:
        for _ in range(iterations):
            exchange = engine.send(check, url)
            result = result_of(check, url, exchange)
            document = parse_json(exchange)
            value = lookup(document, field_path) if document is not MISSING else MISSING
            samples.append(
                BenchSample(
                    ok=result.ok,
                    status=exchange.status,
                    latency=exchange.latency,
                    confidence=_number(value) if value is not MISSING else None,
                    reason=result.why,
                )
            )
            if progress is not None:
                progress.update(
                    f"{check.name} {format_seconds(exchange.latency)} "
                    f"{'ok' if result.ok else 'FAIL'}"
                )
    finally:
        if own:
            engine.close()
    return BenchResult(name=check.name, url=redact_url(url), samples=tuple(samples))


# --- where the URLs come from ----------------------------------------------------------------
def urls_of(live: LiveService) -> Urls:
    """The `canary` / `stable` tag URLs and the service URL of a live service (pure)."""
    return Urls(
        canary=live.url_for_tag("canary"),
        stable=live.url_for_tag("stable"),
        service=live.uri or None,
    )


def discover_urls(spec: RolloutSpec, backend: TrafficBackend | None = None) -> Urls:
    """The URLs Cloud Run reports for `spec`'s service: `Service.uri` and the tag URLs.

    Tag URLs come from `traffic_statuses[].uri`, read through the Cloud Run Admin API v2
    (the emulator when `CLOUD_RUN_EMULATOR_HOST` is set) unless another backend is given.
    """
    from reconciler.backends import BackendError

    if backend is None:
        from reconciler.backends.cloudrun import CloudRunBackend

        backend = CloudRunBackend()
    try:
        live = backend.get_service(ServiceRef(spec.project, spec.region, spec.service))
    except BackendError as exc:
        raise ReconcileError(str(exc)) from None
    return urls_of(live)
