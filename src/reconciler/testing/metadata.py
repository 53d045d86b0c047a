"""A loopback stand-in for the Google Cloud metadata server's identity endpoint.

    with MetadataServer.start() as mds:
        env = {**os.environ, **mds.environ()}   # GCE_METADATA_HOST / GCE_METADATA_IP
        ...                                     # a subprocess mints ID tokens through it
        assert mds.audiences == ["https://svc-abc-uc.a.run.app"]

google-auth reads the metadata host when it is first imported, so code under test runs in a
fresh interpreter with `environ()` applied. Like the real server, it answers only requests
carrying `Metadata-Flavor: Google` and returns a JWT whose `aud` is the requested audience
and which expires an hour later. The signature is not Google's: nothing may verify it.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from urllib.parse import parse_qs, urlsplit

__all__ = ["MetadataServer"]

_ACCOUNT = "/computeMetadata/v1/instance/service-accounts/default/"
_IDENTITY = _ACCOUNT + "identity"
EMAIL = "runtime@stand-in-project.iam.gserviceaccount.com"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class _Handler(BaseHTTPRequestHandler):
    server: MetadataServer

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _answer(self, status: int, body: bytes, content_type: str = "text/plain") -> None:
        self.send_response(status)
        self.send_header("Metadata-Flavor", "Google")
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.headers.get("Metadata-Flavor") != "Google":
            self._answer(403, b"Missing required header: Metadata-Flavor")
            return
        parts = urlsplit(self.path)
        if parts.path in ("", "/"):
            self._answer(200, b"computeMetadata/\n")
            return
        if parts.path == _ACCOUNT:
            info = {
                "aliases": ["default"],
                "email": EMAIL,
                "scopes": ["https://www.googleapis.com/auth/cloud-platform"],
            }
            self._answer(200, json.dumps(info).encode(), "application/json")
            return
        if parts.path != _IDENTITY:
            self._answer(404, b"not found")
            return
        audience = parse_qs(parts.query).get("audience", [""])[0]
        if not audience:
            self._answer(400, b"non-empty audience parameter required")
            return
        self._answer(200, self.server.mint(audience).encode())


class MetadataServer(ThreadingHTTPServer):
    """The stand-in on a free loopback port; `audiences` lists every token requested."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.audiences: list[str] = []
        self.tokens: list[str] = []
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @classmethod
    def start(cls) -> MetadataServer:
        """A running server (stop it with `close()` or a `with` block)."""
        server = cls()
        server._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        server._thread.start()
        return server

    def __enter__(self) -> MetadataServer:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop serving and release the port."""
        self.shutdown()
        self.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"

    def environ(self) -> dict[str, str]:
        """The variables that point google-auth at this server."""
        return {"GCE_METADATA_HOST": self.host, "GCE_METADATA_IP": self.host}

    def mint(self, audience: str) -> str:
        """A JWT for `audience`, recorded; each one distinct."""
        with self._lock:
            now = int(time.time())
            claims = {
                "aud": audience,
                "iss": "https://accounts.google.com",
                "sub": "1234567890",
                "iat": now,
                "exp": now + 3600,
                "n": len(self.tokens),
            }
            header = {"alg": "RS256", "typ": "JWT"}
            token = ".".join(
                (
                    _b64(json.dumps(header).encode()),
                    _b64(json.dumps(claims).encode()),
                    _b64(b"not-a-google-signature"),
                )
            )
            self.audiences.append(audience)
            self.tokens.append(token)
            return token
