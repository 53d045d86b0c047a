"""HTTP data plane: service and tag URLs, dependency endpoints, `/metrics`, admin calls.

URLs are path-prefixed on one loopback port (no Host header tricks, so plain httpx works):

- `{http_url}/run/{project}/{region}/{service}/...`          the service URL (split by traffic)
- `{http_url}/run/{project}/{region}/{tag}---{service}/...`  a tag URL (the tagged revision)
- `{http_url}/deps/{name}/...`                              a scenario dependency
- `{http_url}/metrics`                                      Prometheus text exposition
- `{http_url}/_emulator/{op}`                               admin (JSON in, JSON out)

Each request to a service is answered by one revision per its behaviour and recorded: the
records feed ListTimeSeries and the Prometheus metrics.
"""

from __future__ import annotations

import http.client
import json
import math
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client import Counter as PromCounter
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError

from reconciler.emulator.scenario import ScenarioError
from reconciler.emulator.world import ApiError, Service, World

AdminHandler = Callable[[str, Mapping[str, Any]], Mapping[str, Any]]
# z-score of the 95th percentile of a standard normal: p95 = p50 * exp(1.645 * sigma).
_Z95 = 1.6448536269514722
LATENCY_BUCKETS_SECONDS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    15.0,
    20.0,
    30.0,
    60.0,
)
_STATUS_OF = {"NOT_FOUND": 404, "ALREADY_EXISTS": 409, "ABORTED": 409}


class _Server(ThreadingHTTPServer):
    """The data plane's HTTP server, whose listening socket never blocks: `stop` waits for
    the serving loop, which must not sit in `accept` for a connection that is gone by the
    time it is accepted (a teardown hung there once, under load); socketserver skips the
    resulting BlockingIOError. Each accepted connection is blocking, as handlers expect."""

    def server_activate(self) -> None:
        super().server_activate()
        self.socket.setblocking(False)

    def get_request(self) -> tuple[socket.socket, Any]:
        conn, address = self.socket.accept()
        conn.setblocking(True)
        return conn, address


class DataPlane:
    """The HTTP server of one emulator."""

    def __init__(self, world: World, admin: AdminHandler, port: int = 0) -> None:
        self.world = world
        self.admin = admin
        self.registry = CollectorRegistry()
        self.requests = PromCounter(
            "cloudrun_request_count",
            "Requests served by the emulated Cloud Run data plane.",
            ["service", "revision", "response_code_class"],
            registry=self.registry,
        )
        self.latencies = Histogram(
            "cloudrun_request_latencies_seconds",
            "Latency of requests served by the emulated Cloud Run data plane.",
            ["service", "revision", "response_code_class"],
            buckets=LATENCY_BUCKETS_SECONDS,
            registry=self.registry,
        )
        self.server = _Server(("127.0.0.1", port), _Handler)
        self.server.daemon_threads = True
        self.server.plane = self  # type: ignore[attr-defined]
        self.port = int(self.server.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(
            target=self.server.serve_forever, args=(0.05,), name="emulator-http", daemon=True
        )

    def start(self) -> None:
        """Serve in a background thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop serving (if started) and close the socket."""
        if self._thread.is_alive():
            self.server.shutdown()
            self._thread.join(timeout=5)
        self.server.server_close()

    def url_for(self, svc: Service, tag: str = "") -> str:
        """The URL of a service, or of one of its tags."""
        label = f"{tag}---{svc.name}" if tag else svc.name
        return f"{self.url}/run/{svc.project}/{svc.region}/{label}"

    def serve(self, method: str, path: str, body: bytes) -> tuple[int, dict[str, Any], str]:
        """Answer one request to a service URL: (status, JSON body, revision)."""
        started = time.perf_counter()
        parts = path.split("/", 5)  # ['', 'run', project, region, label, rest]
        if len(parts) < 5 or not parts[4]:
            return 404, {"error": f"no service at {path}"}, ""
        project, region, label = parts[2], parts[3], parts[4]
        rest = "/" + (parts[5] if len(parts) > 5 else "")
        tag, _, service = label.rpartition("---")
        try:
            rev = self.world.route(project, region, service, tag)
        except ApiError as exc:
            return 404, {"error": exc.message}, ""
        beh = rev.behavior
        rng = self.world.rng
        draw = rng.random()
        code = (
            500
            if draw < beh.error_rate
            else 429
            if draw < beh.error_rate + beh.client_error_rate
            else 200
        )
        p50, p95 = beh.latency_ms.p50, beh.latency_ms.p95
        sample_ms = rng.lognormvariate(math.log(p50), math.log(p95 / p50) / _Z95)
        if self.world.latency_mode == "simulated":
            latency_ms = sample_ms
        else:
            time.sleep(sample_ms * self.world.latency_scale / 1000.0)
            latency_ms = (time.perf_counter() - started) * 1000.0
        payload = _body(method, rest, code, rev.name, service, beh.health, beh.chat, body)
        # Record before answering, so a client that got its response finds it in the metrics.
        self.world.record(project, region, service, rev.name, code, latency_ms)
        labels = (service, rev.name, f"{code // 100}xx")
        self.requests.labels(*labels).inc()
        self.latencies.labels(*labels).observe(latency_ms / 1000.0)
        return code, payload, rev.name


def _body(
    method: str,
    rest: str,
    code: int,
    revision: str,
    service: str,
    health: Mapping[str, Any],
    chat: Mapping[str, Any],
    request: bytes,
) -> dict[str, Any]:
    path = rest.split("?", 1)[0].rstrip("/") or "/"
    if code == 500:
        failed: dict[str, Any] = {"error": "internal error (emulated)", "revision": revision}
        if path == "/api/health":
            failed["status"] = "unhealthy"
        if path == "/chat":
            failed["success"] = False
        return failed
    if code == 429:
        return {"error": "rate limited (emulated)", "revision": revision}
    if path == "/api/health":
        return {**health, "revision": revision}
    if path == "/chat" and method == "POST":
        try:
            asked = json.loads(request or b"{}")
        except ValueError:
            asked = {}
        user = asked.get("user_id", "") if isinstance(asked, dict) else ""
        return {**chat, "user_id": user, "revision": revision}
    return {"service": service, "revision": revision, "path": path}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes: without this, Nagle's algorithm and
        # the client's delayed ACK add ~40 ms to every keep-alive response.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the emulator serves thousands of requests in tests."""

    def _handle(self, method: str) -> None:
        plane: DataPlane = self.server.plane  # type: ignore[attr-defined]
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        path = urlsplit(self.path).path
        if path == "/metrics":
            self._send(200, generate_latest(plane.registry), CONTENT_TYPE_LATEST)
            return
        if path.startswith("/run/"):
            code, payload, revision = plane.serve(method, path, body)
            self._json(code, payload, {"X-Emulator-Revision": revision} if revision else {})
            return
        if path.startswith("/deps/"):
            name = path.split("/")[2]
            dep = plane.world.dependencies.get(name)
            if dep is None:
                self._json(404, {"error": f"no dependency {name!r}"})
            else:
                self._json(dep.status_code, dep.body)
            return
        if path.startswith("/_emulator/"):
            self._admin(plane, path.removeprefix("/_emulator/"), body)
            return
        self._json(404, {"error": f"nothing at {path}"})

    def _admin(self, plane: DataPlane, op: str, body: bytes) -> None:
        try:
            payload = json.loads(body or b"{}")
            if not isinstance(payload, dict):
                raise ValueError("admin payload must be a JSON object")
            self._json(200, dict(plane.admin(op, payload)))
        except ApiError as exc:
            self._json(_STATUS_OF.get(exc.code, 400), {"error": exc.message})
        except ScenarioError as exc:
            self._json(400, {"error": str(exc)})
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            self._json(400, {"error": f"{where}: {first['msg']}"})
        except (ValueError, KeyError, TypeError) as exc:
            self._json(400, {"error": f"bad admin request {op!r}: {exc}"})

    def _json(self, code: int, payload: Mapping[str, Any], headers: Mapping[str, str] = {}) -> None:
        self._send(code, json.dumps(payload).encode(), "application/json", headers)

    def _send(self, code: int, data: bytes, ctype: str, headers: Mapping[str, str] = {}) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)


@dataclass
class LoadResult:
    """What a burst of load got back."""

    sent: int = 0
    by_revision: Counter[str] = field(default_factory=Counter)
    by_status: Counter[int] = field(default_factory=Counter)

    def to_dict(self) -> dict[str, Any]:
        """JSON form (admin API, CLI output)."""
        return {
            "sent": self.sent,
            "by_revision": dict(self.by_revision),
            "by_status": {str(k): v for k, v in self.by_status.items()},
        }


def send_load(
    url: str,
    n: int,
    *,
    path: str = "/",
    method: str = "GET",
    json_body: Any = None,
    concurrency: int = 8,
) -> LoadResult:
    """Send `n` real HTTP requests to `url + path` (keep-alive, `concurrency` connections)."""
    if n < 0 or concurrency < 1:
        raise ApiError("INVALID_ARGUMENT", "load needs n >= 0 and concurrency >= 1")
    target = urlsplit(url)
    data = json.dumps(json_body).encode() if json_body is not None else None
    result = LoadResult()
    lock = threading.Lock()
    workers = min(concurrency, max(n, 1))
    shares = [n // workers + (1 if i < n % workers else 0) for i in range(workers)]

    def worker(count: int) -> None:
        conn = http.client.HTTPConnection(target.hostname or "127.0.0.1", target.port, timeout=120)
        headers = {"Content-Type": "application/json"} if data is not None else {}
        try:
            for _ in range(count):
                try:
                    conn.request(method, target.path + path, body=data, headers=headers)
                    resp = conn.getresponse()
                except (http.client.RemoteDisconnected, ConnectionResetError):
                    # A kept-alive connection the server closed (as HTTP/1.1 allows between
                    # requests): like any HTTP client, send the request again on a new one.
                    conn.close()
                    conn.request(method, target.path + path, body=data, headers=headers)
                    resp = conn.getresponse()
                resp.read()
                with lock:
                    result.sent += 1
                    result.by_status[resp.status] += 1
                    result.by_revision[resp.getheader("X-Emulator-Revision") or ""] += 1
        finally:
            conn.close()

    with ThreadPoolExecutor(max_workers=workers) as pool:
        for f in [pool.submit(worker, c) for c in shares if c]:
            f.result()
    return result
