"""Answer HTTP on $PORT with 204, for the platform's probes only.

A Cloud Run *service* starts an instance only once its container listens on $PORT; the
streaming controller serves nothing, so this is all there is to answer (a worker pool sets
no PORT and runs without it). It says nothing about the controller's health: a controller
that stops ends the container, and the platform starts a new one.
"""

from __future__ import annotations

import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Probe(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: probes every few seconds would drown the controller's own lines."""


def main() -> None:
    """Serve until killed; the host is the first argument (default: every interface)."""
    host = sys.argv[1] if len(sys.argv) > 1 else ""
    ThreadingHTTPServer((host, int(os.environ["PORT"])), _Probe).serve_forever()


if __name__ == "__main__":
    main()
