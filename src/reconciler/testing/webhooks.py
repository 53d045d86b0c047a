"""A loopback HTTP server that records webhook requests, for notification tests.

    with WebhookRecorder.start() as hooks:
        hooks.respond = [500, 200]          # status codes to answer, in order (then 200)
        ...                                 # send to hooks.url("/slack")
        (req,) = hooks.requests

Each request keeps its path, headers and body; `on_request` (if set) runs inside the handler
before it answers, so a test can look at the world at the moment a notice arrives.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType

__all__ = ["Recorded", "WebhookRecorder"]


@dataclass(frozen=True)
class Recorded:
    """One request the recorder received."""

    path: str
    headers: dict[str, str]
    body: bytes
    at: float = field(default_factory=time.monotonic)


class WebhookRecorder:
    """A threaded HTTP server on 127.0.0.1 and a free port, recording every POST."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.respond: list[int] = []
        self.delay = 0.0
        """Seconds to wait before answering (a slow or hanging receiver)."""
        self.on_request: Callable[[Recorded], None] | None = None
        self._lock = threading.Lock()
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                req = Recorded(self.path, {k: v for k, v in self.headers.items()}, body)
                with recorder._lock:
                    recorder.requests.append(req)
                    status = recorder.respond.pop(0) if recorder.respond else 200
                if recorder.on_request is not None:
                    recorder.on_request(req)
                if recorder.delay:
                    time.sleep(recorder.delay)
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: object) -> None:
                pass  # keep test output quiet

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @classmethod
    def start(cls) -> WebhookRecorder:
        """Start serving; stop with `stop()` or a `with` block."""
        recorder = cls()
        recorder._thread.start()
        return recorder

    def url(self, path: str = "/") -> str:
        """The URL of `path` on this server."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}{path}"

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> WebhookRecorder:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
