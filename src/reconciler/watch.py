"""The monitor loop: reconcile every `interval` for `duration`, reporting what each tick changed."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import FrameType

from reconciler.errors import ReconcileError
from reconciler.reconcile import ROLLED_BACK_EXIT, RunResult
from reconciler.spec import format_duration
from reconciler.views.watch import tick_lines


@dataclass
class WatchResult:
    """How a watch ended."""

    ticks: int
    exit_code: int
    stopped_by: str


@contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGINT and SIGTERM set `stop` (the current tick finishes; no half-applied change)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def watch(
    run_once: Callable[[], RunResult],
    *,
    interval: timedelta,
    duration: timedelta | None,
    clock: Callable[[], datetime],
    report: Callable[[str], None],
    stop: threading.Event | None = None,
) -> WatchResult:
    """Reconcile now, then every `interval`, until `duration` has passed or `stop` is set.

    Exit code: 4 if any tick rolled a canary back, else the last tick's code.
    """
    stop = stop or threading.Event()
    start = clock()
    ticks = 0
    code = 0
    seen: dict[str, str] = {}
    rolled_back = False
    until = f" for {format_duration(duration)}" if duration else ""
    report(
        f"watching every {format_duration(interval)}{until}; Ctrl-C stops after the current tick"
    )
    with stop_on_signals(stop):
        while True:
            ticks += 1
            try:
                result = run_once()
            except ReconcileError as exc:
                # One bad tick (git or API down) must not end the monitor loop.
                result = RunResult((), None, f"tick failed: {exc}")
            code = result.exit_code
            rolled_back = rolled_back or code == ROLLED_BACK_EXIT
            lines, seen = tick_lines(ticks, clock(), result, seen)
            for line in lines:
                report(line)
            if stop.is_set():
                return WatchResult(ticks, ROLLED_BACK_EXIT if rolled_back else code, "signal")
            elapsed = clock() - start
            if duration is not None and elapsed + interval > duration:
                return WatchResult(ticks, ROLLED_BACK_EXIT if rolled_back else code, "duration")
            if stop.wait(interval.total_seconds()):
                return WatchResult(ticks, ROLLED_BACK_EXIT if rolled_back else code, "signal")
