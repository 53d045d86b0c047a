"""The HTTP engine of probes: one pooled client sending checks, and where their URLs come from."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import httpx

from reconciler.errors import ReconcileError
from reconciler.model import ServiceRef
from reconciler.probes.checks import (
    MAX_BODY_BYTES,
    MIN_REDACTED_SECRET,
    REDACTED,
    USER_AGENT,
    Exchange,
    ProbeResult,
    Urls,
    format_seconds,
    redact_exchange,
    resolve_headers,
    resolve_url,
    result_of,
    urls_of,
)
from reconciler.spec import Check, EnvValue, RolloutSpec

if TYPE_CHECKING:
    from reconciler.backends import TrafficBackend


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
