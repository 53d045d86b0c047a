"""The probe engine over real HTTP on loopback: timeouts, refused connections, secrets, reuse."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from reconciler.errors import ReconcileError
from reconciler.model import Outcome
from reconciler.probes import Prober, Urls, bench, compare, run_checks
from reconciler.spec import Check

SECRET = "tok-5f3c9a-very-secret"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so connection reuse is observable
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, body: bytes, ctype: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _route(self) -> None:
        self.server.ports.add(self.client_address[1])
        self.server.auth.append(self.headers.get("Authorization", ""))
        length = int(self.headers.get("Content-Length") or 0)
        sent = json.loads(self.rfile.read(length)) if length else None
        path = self.path
        if path == "/slow":
            time.sleep(0.3)
        if path == "/500":
            self._send(500, b'{"error": "boom"}')
        elif path == "/html":
            self._send(200, b"<html>hi</html>", "text/html")
        elif path == "/chat":
            self._send(
                200, json.dumps({"success": True, "confidence": 0.87, "echo": sent}).encode()
            )
        else:
            self._send(200, b'{"status": "healthy", "confidence": 0.9}')

    do_GET = _route
    do_POST = _route


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.ports: set[int] = set()
        self.auth: list[str] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def server() -> Iterator[_Server]:
    srv = _Server()
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=5)


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def check(name: str, url: str, **fields: Any) -> Check:
    return Check.model_validate({"name": name, "url": url, **fields})


def test_reasons_over_real_http(server: _Server, closed_port: int) -> None:
    checks = [
        check("health", "{canary_url}/api/health", expect={"status": "healthy"}),
        check("slow", "{canary_url}/slow", max_latency="100ms"),
        check("broken", "{canary_url}/500"),
        check("html", "{canary_url}/html", expect={"status": "healthy"}),
        check("timeout", "{canary_url}/slow", timeout="50ms"),
        check("refused", f"http://127.0.0.1:{closed_port}/api/health"),
    ]
    results = {r.name: r for r in run_checks(checks, Urls(canary=server.url), environ={})}
    assert results["health"].ok and results["health"].status == 200
    assert results["slow"].reason.startswith("slow: latency ")
    assert results["slow"].reason.endswith(" > 100ms")
    assert results["broken"].reason == "broken: HTTP 500, expected 2xx"
    assert results["html"].reason == (
        "html: response is not JSON (text/html) but expectations need JSON"
    )
    assert results["timeout"].reason == "timeout: timeout after 50ms"
    assert not results["timeout"].answered
    assert results["refused"].reason == "refused: connection refused"


def test_secret_header_reaches_the_server_but_no_result(server: _Server) -> None:
    c = check(
        "chat",
        "{canary_url}/chat",
        method="POST",
        json={"message": "hi"},
        headers={"Authorization": {"env": "PROBE_TOKEN"}},
        expect={"success": True, "echo.message": "hi"},
    )
    (result,) = run_checks([c], Urls(canary=server.url), environ={"PROBE_TOKEN": SECRET})
    assert result.ok, result.reason
    assert server.auth == [SECRET]
    for text in (repr(result), str(result), result.reason, result.url, repr(result.as_gate())):
        assert SECRET not in text


def test_missing_secret_is_an_error_before_any_request(server: _Server) -> None:
    c = check("chat", "{canary_url}/chat", headers={"Authorization": {"env": "PROBE_TOKEN"}})
    with pytest.raises(ReconcileError, match="PROBE_TOKEN"):
        run_checks([check("health", "{canary_url}/"), c], Urls(canary=server.url), environ={})
    assert server.auth == []


def test_one_client_reuses_its_connection(server: _Server) -> None:
    c = check("health", "{canary_url}/api/health")
    with Prober(environ={}) as prober:
        results = [prober.run(c, Urls(canary=server.url)) for _ in range(5)]
    assert all(r.ok for r in results)
    assert len(server.ports) == 1


def test_compare_and_bench_over_real_http(server: _Server, closed_port: int) -> None:
    dead = f"http://127.0.0.1:{closed_port}"
    same = compare(server.url, server.url, requests=3, delay=0.0)
    assert same.outcome is Outcome.PASS
    assert same.canary.status_counts == {"200": 3}
    worse = compare(dead, server.url, requests=3, delay=0.0)
    assert worse.outcome is Outcome.FAIL
    assert worse.canary.failures == ("connection refused",)

    result = bench(
        check("chat", "{stable_url}/chat", method="POST", json={"message": "hi"}),
        iterations=3,
        urls=Urls(stable=server.url),
    )
    assert result.success_rate == 1.0 and len(result.latencies) == 3
    assert result.confidence_mean == pytest.approx(0.87)
