"""A hostile upstream cannot hold a probe past its timeout or blow up its memory.

A raw loopback server misbehaves on purpose: it trickles its headers (or its body) one byte
at a time, each byte well inside the per-read timeout, for far longer than the check's whole
timeout; and it serves gzip and deflate bombs (hundreds of MiB of zeros, a few hundred KiB on
the wire) whose decoded size is what the 1 MiB cap is about.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import tracemalloc
import zlib
from collections.abc import Iterator

import pytest

from reconciler.probes import MAX_BODY_BYTES, Prober, Urls, run_checks
from reconciler.spec import Check

TRICKLE_SECONDS = 30.0
"""How long the server keeps trickling: a probe bounded by its timeout never sees the end."""
BOMB_MIB = 256


def _compress(data_mib: int, wbits: int) -> bytes:
    squeeze = zlib.compressobj(9, zlib.DEFLATED, wbits)
    zeros = bytes(1 << 20)
    return b"".join(squeeze.compress(zeros) for _ in range(data_mib)) + squeeze.flush()


class Hostile:
    """A loopback HTTP/1.1 server speaking raw bytes, one thread per connection."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.bombs = {
            "gzip": _compress(BOMB_MIB, 16 + zlib.MAX_WBITS),
            "deflate": _compress(BOMB_MIB, -zlib.MAX_WBITS),
        }
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def close(self) -> None:
        self._stop.set()
        self.sock.close()
        self._thread.join(timeout=5)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            request = b""
            while b"\r\n\r\n" not in request:
                data = conn.recv(4096)
                if not data:
                    return
                request += data
            path = request.split(b" ", 2)[1].decode()
            try:
                self._answer(conn, path)
            except OSError:  # the client gave up: that is the point
                return

    def _trickle(self, conn: socket.socket, data: bytes) -> None:
        ends = time.monotonic() + TRICKLE_SECONDS
        while time.monotonic() < ends and not self._stop.is_set():
            conn.sendall(data)
            time.sleep(0.05)

    def _answer(self, conn: socket.socket, path: str) -> None:
        if path == "/trickle-headers":
            conn.sendall(b"HTTP/1.1 200 OK\r\nX-Slow: ")
            self._trickle(conn, b"a")
        elif path == "/trickle-body":
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
            self._trickle(conn, b" ")
        elif path in ("/gzip-bomb", "/deflate-bomb"):
            coding = path[1:].partition("-")[0]
            body = self.bombs[coding]
            head = f"HTTP/1.1 200 OK\r\nContent-Encoding: {coding}\r\n"
            conn.sendall(head.encode() + self._rest(body, "application/json"))
        elif path in ("/gzip-ok", "/deflate-ok", "/zlib-ok"):
            document = json.dumps({"status": "healthy", "pad": "x" * 5000}).encode()
            wbits = {"gzip": 16 + 15, "deflate": -15, "zlib": 15}[path[1:].partition("-")[0]]
            squeeze = zlib.compressobj(6, zlib.DEFLATED, wbits)
            body = squeeze.compress(document) + squeeze.flush()
            coding = "gzip" if wbits > 16 else "deflate"
            head = f"HTTP/1.1 200 OK\r\nContent-Encoding: {coding}\r\n"
            conn.sendall(head.encode() + self._rest(body, "application/json"))
        elif path == "/brotli":
            head = b"HTTP/1.1 200 OK\r\nContent-Encoding: br\r\n"
            conn.sendall(head + self._rest(b"\x0b\x02\x80{}\x03", "application/json"))
        else:
            body = json.dumps({"status": "healthy"}).encode()
            conn.sendall(b"HTTP/1.1 200 OK\r\n" + self._rest(body, "application/json"))

    @staticmethod
    def _rest(body: bytes, ctype: str) -> bytes:
        return f"Content-Type: {ctype}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body


@pytest.fixture(scope="module")
def hostile() -> Iterator[Hostile]:
    server = Hostile()
    try:
        yield server
    finally:
        server.close()


def check(path: str, **fields: object) -> Check:
    return Check.model_validate(
        {"name": "probe", "url": "{canary_url}" + path, "expect": {"status": "healthy"}, **fields}
    )


@pytest.mark.parametrize("path", ["/trickle-headers", "/trickle-body"])
def test_one_deadline_covers_headers_and_body(hostile: Hostile, path: str) -> None:
    started = time.monotonic()
    (result,) = run_checks([check(path, timeout="1s")], Urls(canary=hostile.url), environ={})
    elapsed = time.monotonic() - started
    assert result.reason == "probe: timeout after 1s"
    assert not result.answered
    # Without the deadline the probe lasts as long as the server trickles (30 s).
    assert elapsed < TRICKLE_SECONDS / 3


@pytest.mark.parametrize("coding", ["gzip", "deflate"])
def test_a_compression_bomb_is_capped_while_decoding(hostile: Hostile, coding: str) -> None:
    tracemalloc.start()
    try:
        with Prober(environ={}) as prober:
            exchange = prober.exchange("GET", f"{hostile.url}/{coding}-bomb", timeout=30.0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert exchange.error == f"response body over {MAX_BODY_BYTES} bytes"
    assert exchange.status == 200
    assert exchange.body == b""
    # The decoded body never exceeds the cap by more than one read; httpx alone peaked at
    # the size of a whole inflated chunk (173 MB with a bigger bomb).
    assert peak < 8 * MAX_BODY_BYTES


@pytest.mark.parametrize("path", ["/gzip-ok", "/deflate-ok", "/zlib-ok"])
def test_compressed_answers_still_decode(hostile: Hostile, path: str) -> None:
    (result,) = run_checks([check(path)], Urls(canary=hostile.url), environ={})
    assert result.ok, result.reason


def test_an_encoding_that_cannot_be_bounded_is_refused(hostile: Hostile) -> None:
    (result,) = run_checks([check("/brotli")], Urls(canary=hostile.url), environ={})
    assert result.reason == "probe: response has an unsupported content encoding"


def test_the_deadline_ends_with_the_probe(hostile: Hostile) -> None:
    # The next request on the same prober gets its own full timeout.
    with Prober(environ={}) as prober:
        slow = prober.exchange("GET", f"{hostile.url}/trickle-headers", timeout=0.3)
        fast = prober.exchange("GET", f"{hostile.url}/plain", timeout=5.0)
    assert slow.error == "timeout after 300ms"
    assert fast.status == 200 and fast.error is None
