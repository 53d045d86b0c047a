"""Pure evaluation of a probe answer: the values a check produces and the rules that judge them.

`evaluate` and `result_of` take what an HTTP exchange produced and return reasons and a
`ProbeResult`; `resolve_url` and `resolve_headers` turn a rollout-file check into what is sent.
Nothing here sends a request.

Header values are secrets: they are read from the environment when a request is sent and
never kept in a result, a reason, a log line or a repr.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

from reconciler import redact
from reconciler.analysis import ProbeRun
from reconciler.errors import ReconcileError
from reconciler.model import GateResult, LiveService, Outcome
from reconciler.sidebyside import format_seconds
from reconciler.spec import Check, EnvValue

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
    synthetic: int = 0
    """Requests its `repeat:` sent after it as synthetic load (judged by the gates, not here)."""
    synthetic_failed: int = 0
    """Of those, how many got no 2xx answer."""

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


# --- where the URLs come from ----------------------------------------------------------------
def urls_of(live: LiveService) -> Urls:
    """The `canary` / `stable` tag URLs and the service URL of a live service (pure)."""
    return Urls(
        canary=live.url_for_tag("canary"),
        stable=live.url_for_tag("stable"),
        service=live.uri or None,
    )
