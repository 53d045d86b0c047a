"""Real headless Chromium for tests of the status site: the DOM after load, a screenshot.

    binary = chromium_binary()                     # None: not installed (skip, or fail in CI)
    dom = dump_dom(binary, page)                   # the serialized DOM, as the browser built it
    png = screenshot(binary, page, tmp, (1200, 900))
    width, height, blank = png_facts(png)

Each run gets a new profile directory and the flags a root sandbox needs; nothing is
fetched from the network (the site has no external resources).
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import tempfile
import zlib
from collections import Counter
from pathlib import Path

__all__ = ["CHROMIUM_BIN_ENV", "chromium_binary", "dump_dom", "png_facts", "screenshot"]

CHROMIUM_BIN_ENV = "CHROMIUM_BIN"
TIMEOUT = 60.0
_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)


def chromium_binary() -> str | None:
    """$CHROMIUM_BIN, else `chromium`, `chromium-browser` or `google-chrome` on PATH (the
    same engine and flags), else None."""
    configured = os.environ.get(CHROMIUM_BIN_ENV)
    if configured:
        return configured if Path(configured).is_file() else None
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def _run(binary: str, *args: str) -> str:
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        done = subprocess.run(
            [binary, *_FLAGS, f"--user-data-dir={profile}", *args],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
    if done.returncode != 0:
        raise RuntimeError(f"chromium exited {done.returncode}: {done.stderr[-2000:]}")
    return done.stdout


def dump_dom(binary: str, page: Path) -> str:
    """The DOM of `page` once loaded, serialized by Chromium (`--dump-dom`)."""
    return _run(binary, "--dump-dom", page.resolve().as_uri())


def screenshot(binary: str, page: Path, out: Path, size: tuple[int, int]) -> bytes:
    """A PNG screenshot of `page` at `size` (width, height), saved as `out`."""
    _run(
        binary, f"--window-size={size[0]},{size[1]}", f"--screenshot={out}", page.resolve().as_uri()
    )
    return out.read_bytes()


def png_facts(png: bytes) -> tuple[int, int, float]:
    """(width, height, share of pixel bytes that differ from the most common byte) of an
    8-bit RGB/RGBA PNG; a blank page's share is close to 0."""
    if png[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG")
    pos, width, height, channels, data = 8, 0, 0, 0, b""
    while pos < len(png):
        (length,) = struct.unpack(">I", png[pos : pos + 4])
        kind, body = png[pos + 4 : pos + 8], png[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour = struct.unpack(">IIBB", body[:10])
            if depth != 8 or colour not in (2, 6):
                raise ValueError(f"unsupported PNG (depth {depth}, colour type {colour})")
            channels = 3 if colour == 2 else 4
        elif kind == b"IDAT":
            data += body
        pos += 12 + length
    raw = zlib.decompress(data)
    stride = width * channels + 1
    # Filtered rows: the filter byte and deltas are not pixels, but a blank page filters to
    # rows of zeros, so the share of bytes that differ from the commonest one still tells.
    pixels = b"".join(raw[r * stride + 1 : (r + 1) * stride] for r in range(height))
    # The commonest byte from a sample (counting all 256 values over megabytes is slow).
    commonest = Counter(pixels[::101]).most_common(1)[0][0] if pixels else 0
    differ = len(pixels) - pixels.count(commonest)
    return width, height, differ / max(1, len(pixels))
