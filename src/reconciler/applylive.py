"""`apply` as it runs: each service's line the moment it finishes, and for a run over 2 s a
progress line on stderr (redrawn on a terminal, a plain line every few seconds otherwise)."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import TextIO

from reconciler.progress import is_live
from reconciler.reconcile import ServiceOutcome
from reconciler.views.apply import Line, outcome_lines, progress_line

_CLEAR_LINE = "\r\x1b[K"
QUIET_FOR = 2.0
"""Seconds a run may take before it shows progress (a short run prints only its lines)."""


class LiveApply:
    """A run `Listener` printing to the given streams; `close()` ends the progress line.

    `lines` False prints no service lines (a dry run prints its plan at the end instead).
    """

    def __init__(
        self,
        *,
        color: bool = False,
        lines: bool = True,
        out: TextIO | None = None,
        err: TextIO | None = None,
        live: bool | None = None,
        every: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._out = out if out is not None else sys.stdout
        self._err = err if err is not None else sys.stderr
        self._live = is_live(self._err) if live is None else live
        # A terminal redraws every half second; a log gets a line at 2 s, then every 10 s.
        self._every = every if every is not None else (0.5 if self._live else 10.0)
        self._last: float | None = None
        self._color, self._lines, self._clock = color, lines, clock
        self._start = clock()
        self._total = self._done = self._changed = self._rolled = 0
        self._drawn = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    def started(self, total: int) -> None:
        """Counted from here; the progress line appears once the run is older than 2 s."""
        with self._lock:
            self._total = total
        self._ticker = threading.Thread(target=self._tick, name="apply-progress", daemon=True)
        self._ticker.start()

    def finished(self, outcome: ServiceOutcome, degraded: bool) -> None:
        """Print the service's lines now (stdout, errors on stderr) and count it."""
        with self._lock:
            self._done += 1
            self._rolled += outcome.rolled_back
            self._changed += outcome.applied and not outcome.rolled_back and not outcome.error
            if self._lines:
                self._clear()
                # Degraded mode is said on every line after the sync: each was held to
                # rollbacks only.
                mark = " [degraded: rollbacks only]" if degraded else ""
                for line in outcome_lines(outcome, color=self._color, mark=mark):
                    self._write(line)

    def close(self) -> None:
        """Stop the progress line (cleared on a terminal) before the closing lines."""
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join()
        with self._lock:
            self._clear()

    def _tick(self) -> None:
        while not self._stop.wait(min(self._every, 0.5)):
            now = self._clock()
            elapsed = now - self._start
            if elapsed < QUIET_FOR or (self._last is not None and now - self._last < self._every):
                continue
            self._last = now
            with self._lock:
                text = progress_line(self._done, self._total, self._changed, self._rolled, elapsed)
                if self._live:
                    self._err.write(_CLEAR_LINE + text)
                    self._drawn = True
                else:
                    self._err.write(text + "\n")
                self._err.flush()

    def _clear(self) -> None:
        if self._drawn:
            self._err.write(_CLEAR_LINE)
            self._err.flush()
            self._drawn = False

    def _write(self, line: Line) -> None:
        stream = self._err if line.err else self._out
        stream.write(line.text + "\n")
        stream.flush()
