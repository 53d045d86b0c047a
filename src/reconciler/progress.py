"""Progress of long runs (bench, probe --compare, watch) on stderr.

On a terminal one line updates in place (carriage return); in CI logs (not a terminal, or
`CI=true`) each update is a plain line, since log viewers do not redraw lines.
"""

from __future__ import annotations

import os
import sys
from typing import TextIO

_CLEAR_LINE = "\r\x1b[K"


def is_live(stream: TextIO) -> bool:
    """True when `stream` is a terminal and we are not in CI."""
    if os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}:
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


class Progress:
    """A counted progress line: `label 3/10 detail`. Use as a context manager.

    `stream` defaults to the current `sys.stderr`; `live` defaults to `is_live(stream)`.
    """

    def __init__(
        self,
        label: str,
        total: int | None = None,
        *,
        stream: TextIO | None = None,
        live: bool | None = None,
    ) -> None:
        self.label = label
        self.total = total
        self.done = 0
        self._stream = stream if stream is not None else sys.stderr
        self._live = is_live(self._stream) if live is None else live
        self._drawn = False

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _line(self, detail: str) -> str:
        count = f"{self.done}/{self.total}" if self.total is not None else str(self.done)
        return f"{self.label} {count}" + (f" {detail}" if detail else "")

    def update(self, detail: str = "", *, advance: int = 1) -> None:
        """Count `advance` more steps done and show `detail` beside the count."""
        self.done += advance
        line = self._line(detail)
        if self._live:
            self._stream.write(_CLEAR_LINE + line)
            self._drawn = True
        else:
            self._stream.write(line + "\n")
        self._stream.flush()

    def note(self, message: str) -> None:
        """Print a line that stays (the live line is redrawn below it on the next update)."""
        if self._live and self._drawn:
            self._stream.write(_CLEAR_LINE)
            self._drawn = False
        self._stream.write(message + "\n")
        self._stream.flush()

    def close(self) -> None:
        """End the live line so the next output starts on a fresh line."""
        if self._live and self._drawn:
            self._stream.write("\n")
            self._stream.flush()
            self._drawn = False
