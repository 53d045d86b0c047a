"""The HTTP engine of probes: one pooled client sending checks, and where their URLs come from."""

from __future__ import annotations

import os
import ssl
import threading
import time
import zlib
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import httpcore
import httpx

from reconciler import redact
from reconciler.errors import ReconcileError
from reconciler.idtoken import GoogleIdTokens, IdTokenError, IdTokenSource, default_audience
from reconciler.model import ServiceRef
from reconciler.probes.checks import (
    MAX_BODY_BYTES,
    MIN_REDACTED_SECRET,
    REDACTED,
    USER_AGENT,
    Exchange,
    ProbeConfigError,
    ProbeResult,
    Urls,
    redact_exchange,
    resolve_headers,
    resolve_url,
    result_of,
    urls_of,
)
from reconciler.probes.repeat import repeat_load
from reconciler.sidebyside import format_seconds
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


class _DeadlineStream(httpcore.NetworkStream):
    """A connection whose every read and write ends by the current probe's deadline."""

    def __init__(self, inner: httpcore.NetworkStream, backend: _DeadlineBackend) -> None:
        self._inner = inner
        self._backend = backend

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, self._backend.clamp(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, self._backend.clamp(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        wait = self._backend.clamp(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(
            self._inner.start_tls(ssl_context, server_hostname, wait), self._backend
        )

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    """httpcore's socket backend with one wall-clock deadline per probe (per thread).

    httpx's timeouts bound each socket operation, so a server that sends one header byte a
    second never times out; here every connect, read and write waits at most until the
    deadline of the probe in flight, and fails once it has passed.
    """

    def __init__(self) -> None:
        self._inner = httpcore.SyncBackend()
        self._local = threading.local()

    @contextmanager
    def deadline(self, at: float) -> Iterator[None]:
        """Bound every socket operation of this thread until the block ends by `at`."""
        self._local.at = at
        try:
            yield
        finally:
            self._local.at = None

    def clamp(self, timeout: float | None, error: type[Exception]) -> float | None:
        """`timeout` shortened to the time left before the deadline; `error` once it passed."""
        at: float | None = getattr(self._local, "at", None)
        if at is None:
            return timeout
        left = at - time.monotonic()
        if left <= 0:
            raise error("probe deadline passed")
        return left if timeout is None else min(timeout, left)

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        wait = self.clamp(timeout, httpcore.ConnectTimeout)
        inner = self._inner.connect_tcp(host, port, wait, local_address, socket_options)
        return _DeadlineStream(inner, self)

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        wait = self.clamp(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._inner.connect_unix_socket(path, wait, socket_options), self)

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


def _bounded_transport(backend: _DeadlineBackend) -> httpx.HTTPTransport:
    transport = httpx.HTTPTransport(trust_env=False)
    # httpx has no option for the network backend, but its pool is httpcore's, which has;
    # a change of httpx's internals fails the deadline tests rather than passing silently.
    if not isinstance(getattr(transport, "_pool", None), httpcore.ConnectionPool):
        raise RuntimeError("httpx.HTTPTransport no longer wraps an httpcore.ConnectionPool")
    transport._pool = httpcore.ConnectionPool(
        ssl_context=httpx.create_ssl_context(trust_env=False),
        network_backend=backend,
    )
    return transport


class _BodyTooLarge(Exception):
    pass


class _BoundedDecoder:
    """Decodes a `Content-Encoding` while streaming, never producing more than `limit` bytes.

    httpx inflates each raw chunk whole, so 64 KiB of a gzip bomb becomes 64 MiB in one step;
    zlib's `max_length` stops inflating at the cap instead.
    """

    def __init__(self, encoding: str, limit: int) -> None:
        self._limit = limit
        self._size = 0
        coding = encoding.strip().lower()
        self._inflate: Any = None
        if coding in ("gzip", "x-gzip"):
            self._inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif coding == "deflate":
            # RFC 9110 deflate is zlib-wrapped; some servers send it raw: zlib's auto-detect
            # (32 + wbits) covers zlib and gzip headers, the raw form is tried on failure.
            self._inflate = zlib.decompressobj(32 + zlib.MAX_WBITS)
        elif coding not in ("", "identity"):
            raise ValueError("unsupported content encoding")
        self._raw_fallback = coding == "deflate"

    def feed(self, chunk: bytes) -> bytes:
        """The decoded bytes of `chunk`; `_BodyTooLarge` once the total passes the limit."""
        if self._inflate is None:
            return self._take(chunk)
        out = bytearray()
        data = chunk
        while data:
            try:
                piece = self._inflate.decompress(data, self._limit - self._size + 1)
            except zlib.error:
                if not self._raw_fallback:
                    raise
                self._raw_fallback = False
                self._inflate = zlib.decompressobj(-zlib.MAX_WBITS)
                continue
            self._raw_fallback = False
            out.extend(self._take(piece))
            data = self._inflate.unconsumed_tail
        return bytes(out)

    def _take(self, piece: bytes) -> bytes:
        self._size += len(piece)
        if self._size > self._limit:
            raise _BodyTooLarge
        return piece


class Prober:
    """Sends checks over one HTTP client, so connections are reused; a context manager.

    Every request is bounded: one wall-clock deadline (the check's timeout) covers connect,
    headers and body, and the decoded body is capped at `MAX_BODY_BYTES` while streaming.
    `environ` supplies `{env: NAME}` header values (default: the process environment at
    the time of each request); `id_tokens` mints `auth: id_token` tokens (default: google-auth,
    on first use).
    """

    def __init__(
        self,
        *,
        environ: Mapping[str, str] | None = None,
        id_tokens: IdTokenSource | None = None,
    ) -> None:
        self._environ = environ
        self._id_tokens = id_tokens
        self._minted: set[str] = set()  # every token sent, redacted from every answer
        self._backend = _DeadlineBackend()
        self._client = httpx.Client(
            # Only codings decoded here under the size cap are offered.
            headers={"User-Agent": USER_AGENT, "Accept-Encoding": "gzip, deflate"},
            follow_redirects=False,
            transport=_bounded_transport(self._backend),
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
        """Send one request; transport failures become an `Exchange` with `error` set.

        The whole exchange (connect, headers, body) ends within `timeout` seconds.
        """
        started = time.monotonic()

        def failed(error: str) -> Exchange:
            return Exchange(status=None, latency=time.monotonic() - started, error=error)

        try:
            with (
                self._backend.deadline(started + timeout),
                self._client.stream(
                    method,
                    url,
                    headers=headers,
                    json=json_body,
                    timeout=httpx.Timeout(timeout),
                ) as response,
            ):
                status = response.status_code
                content_type = response.headers.get("content-type", "")
                try:
                    decoder = _BoundedDecoder(
                        response.headers.get("content-encoding", ""), MAX_BODY_BYTES
                    )
                except ValueError as exc:
                    return Exchange(
                        status=status,
                        latency=time.monotonic() - started,
                        content_type=content_type,
                        error=f"response has an {exc}",
                    )
                body = bytearray()
                try:
                    for chunk in response.iter_raw():
                        body.extend(decoder.feed(chunk))
                except _BodyTooLarge:
                    return Exchange(
                        status=status,
                        latency=time.monotonic() - started,
                        content_type=content_type,
                        error=f"response body over {MAX_BODY_BYTES} bytes",
                    )
                except zlib.error:
                    return failed("invalid response (body does not decode as it claims)")
                return Exchange(
                    status=status,
                    latency=time.monotonic() - started,
                    body=bytes(body),
                    content_type=content_type,
                )
        except httpx.TransportError as exc:
            return failed(_transport_error(exc, timeout))
        except httpx.HTTPError as exc:
            return failed(f"invalid response ({type(exc).__name__})")

    def send(self, check: Check, url: str) -> Exchange:
        """Send `check` to an already resolved `url`; secrets the answer echoes are redacted."""
        environ = self._environ if self._environ is not None else os.environ
        headers = resolve_headers(check, environ)
        if check.auth == "id_token":
            headers["Authorization"] = f"Bearer {self._id_token(check, url)}"
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
        ] + list(self._minted)
        return redact_exchange(exchange, secrets) if secrets else exchange

    def _id_token(self, check: Check, url: str) -> str:
        if self._id_tokens is None:
            self._id_tokens = GoogleIdTokens()
        try:
            token = self._id_tokens(check.audience or default_audience(url))
        except IdTokenError as exc:
            raise ProbeConfigError(f"{check.name}: {exc}") from None
        redact.register(token)  # every sink scrubs it from now on
        self._minted.add(token)
        return token

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
        for token in self._minted:
            reason = reason.replace(token, REDACTED)
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
    """Run the rollout file's `probes:` (normally against the canary tag URL).

    A probe with `repeat:` that got an answer is then sent again as synthetic load (see
    `reconciler.probes.repeat`); its result counts those requests in `synthetic`. One that
    got no answer is not repeated: the budget is not spent on a canary that does not answer.
    """
    own = prober is None
    engine = prober if prober is not None else Prober(environ=environ)
    try:
        results = run_checks(spec.probes, urls, environ=environ, prober=engine)
        out = []
        for check, result in zip(spec.probes, results, strict=True):
            if check.repeat is None or not result.answered:
                out.append(result)
                continue
            url = resolve_url(check, urls)

            def send(check: Check = check, url: str = url) -> int | None:
                return engine.send(check, url).status

            burst = repeat_load(send, check.repeat)
            out.append(replace(result, synthetic=burst.sent, synthetic_failed=burst.failed))
        return tuple(out)
    finally:
        if own:
            engine.close()


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
