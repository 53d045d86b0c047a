"""The one redaction layer: removes every known secret, in every encoding, from text for a sink.

Secrets are the values of probe and dependency headers read from the environment
(`headers: {Authorization: {env: TOKEN}}`); `probes.resolve_headers` registers each one the
moment it reads it. Every sink scrubs with `scrub` before it writes: state files and reports
(`state.atomic_write_text`), rollout-file edits (the same writer), commit messages
(`gitops.format_message`), and stdout/stderr (`RedactingStream`, installed by the CLI).

A target may echo a token transformed, so each secret is matched in its raw form, JSON-escaped
(both `ensure_ascii` settings, once and twice), URL-encoded (`%20` and `+` for spaces), and
base64 (standard and URL-safe alphabets, at each of the three byte alignments it can have
inside a longer encoded value). The part after a scheme word (`Bearer xyz` -> `xyz`) is a
secret of its own.
Callers that shorten text for display scrub first: a secret cut in half by truncation is no
longer recognisable, which is how 41 characters of a 51-character token once got through.
"""

from __future__ import annotations

import base64
import io
import json
import threading
from collections.abc import Callable, Iterable
from typing import Final, TextIO
from urllib.parse import quote, quote_plus

__all__ = [
    "MIN_SECRET",
    "REDACTED",
    "RedactingStream",
    "clear",
    "forms",
    "register",
    "scrub",
    "secrets",
]

REDACTED: Final = "[redacted]"
MIN_SECRET: Final = 6
"""Shorter values are not treated as secrets: masking every `ab` in a body would make checks
fail, and a value that short protects nothing."""
_MIN_BASE64: Final = 8
"""A base64 fragment shorter than this matches too much unrelated text to be worth masking."""

_lock = threading.Lock()
_secrets: set[str] = set()
_forms: tuple[str, ...] = ()


def register(secret: str) -> None:
    """Remember `secret` (and the part after its scheme word) for every later `scrub`."""
    global _forms
    parts = {secret, secret.partition(" ")[2]}
    new = {p for p in parts if len(p) >= MIN_SECRET} - _secrets
    if not new:
        return
    with _lock:
        _secrets.update(new)
        _forms = _all_forms(_secrets)


def secrets() -> frozenset[str]:
    """The secrets registered so far in this process."""
    return frozenset(_secrets)


def clear() -> None:
    """Forget every registered secret (tests; a long-lived process never needs it)."""
    global _forms
    with _lock:
        _secrets.clear()
        _forms = ()


def forms(secret: str) -> set[str]:
    """Every encoded form of `secret` that `scrub` removes."""
    out = {secret}
    escaped = secret
    for _ in range(2):  # JSON inside JSON (an echoed request body) escapes twice
        out.add(json.dumps(escaped, ensure_ascii=True)[1:-1])
        escaped = json.dumps(escaped, ensure_ascii=False)[1:-1]
        out.add(escaped)
    out.add(quote(secret, safe=""))
    out.add(quote_plus(secret, safe=""))
    out.add(quote(secret))  # what a URL keeps unescaped (`/`)
    raw = secret.encode("utf-8")
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        for shift in range(3):
            out.update(_base64_core(encode, raw, shift))
    return {f for f in out if f}


def _base64_core(encode: Callable[[bytes], bytes], raw: bytes, shift: int) -> set[str]:
    """The base64 characters that depend only on `raw` when it starts `shift` bytes into a
    3-byte group: the same characters appear in any longer value that contains it there."""
    text = encode(b"\0" * shift + raw).decode("ascii")
    first = -(-8 * shift // 6)  # ceil: the first character made of `raw`'s bits only
    last = (8 * (shift + len(raw)) - 6) // 6  # the last one not mixed with what follows
    core = text[first : last + 1]
    return {core} if len(core) >= _MIN_BASE64 else set()


def _all_forms(values: Iterable[str]) -> tuple[str, ...]:
    found: set[str] = set()
    for value in values:
        found |= forms(value)
    # Longest first, so a form that contains another is removed whole.
    return tuple(sorted(found, key=len, reverse=True))


def scrub(text: str, extra: Iterable[str] = ()) -> str:
    """`text` with every form of every registered secret (and of `extra`) replaced."""
    known = _forms
    more = [e for e in extra if len(e) >= MIN_SECRET]
    if more:
        known = tuple(sorted({*known, *_all_forms(more)}, key=len, reverse=True))
    for form in known:
        if form in text:
            text = text.replace(form, REDACTED)
    return text


class RedactingStream(io.TextIOBase):
    """A text stream that scrubs every write before passing it on (stdout, stderr)."""

    def __init__(self, inner: TextIO) -> None:
        self._inner = inner

    def write(self, text: str) -> int:
        """Write `text` scrubbed; returns the length given (callers count what they passed)."""
        self._inner.write(scrub(text))
        return len(text)

    def flush(self) -> None:
        """Flush the wrapped stream."""
        self._inner.flush()

    def isatty(self) -> bool:
        """Whether the wrapped stream is a terminal (colour decisions read it)."""
        return self._inner.isatty()

    def fileno(self) -> int:
        """The wrapped stream's descriptor."""
        return self._inner.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        """The wrapped stream's encoding."""
        return str(getattr(self._inner, "encoding", "utf-8"))

    def writable(self) -> bool:
        """Always writable."""
        return True
