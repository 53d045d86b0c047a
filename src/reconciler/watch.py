"""The monitor loop: reconcile every `interval` for `duration`, one progress line per tick."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import FrameType

from reconciler.errors import ReconcileError
from reconciler.reconcile import (
    ROLLED_BACK_EXIT,
    ROLLED_BACK_LOCAL_EXIT,
    RunResult,
    ServiceOutcome,
)
from reconciler.spec import format_duration


def describe(o: ServiceOutcome) -> str:
    """`ion-api 5% PASS` / `ion-api ROLLED BACK: error_rate 7.1% > 5%` / `payments error: ...`."""
    if o.error:
        return f"{o.service} error: {o.error}"
    sp = o.plan
    if sp is None:
        return o.service
    live = sp.after if o.applied else sp.before
    pct = live.percent_of(sp.canary) if sp.canary else 0
    if o.rolled_back:
        why = "; ".join(o.verdict.failures) if o.verdict else (sp.edit.summary if sp.edit else "")
        return f"{o.service} ROLLED BACK: {why}"
    verdict = o.verdict.outcome.value if o.verdict else "-"
    text = f"{o.service} {pct}% {verdict}"
    if o.applied:
        text += f" ({sp.reason.value}: {sp.before.describe()} -> {sp.after.describe()})"
    elif o.held:
        text += f" ({o.held})"
    elif sp.blocked:
        text += f" (blocked: {sp.blocked})"
    return text


def tick_line(n: int, at: datetime, result: RunResult) -> str:
    """One progress line for one tick."""
    # Degraded mode is said on every service's part, not once: each was held.
    mark = " [degraded: rollbacks only]" if result.degraded else ""
    parts = [describe(o) + mark for o in result.outcomes] or ["no services" + mark]
    if result.git_error:
        parts.append(result.git_error)
    return f"[{at.strftime('%Y-%m-%dT%H:%M:%SZ')}] tick {n}: " + " | ".join(parts)


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

    Exit code: when any tick rolled a canary back, 4 if the last tick left everything on
    the remote (a later push carries an earlier tick's record), else 5; otherwise the last
    tick's code.
    """
    stop = stop or threading.Event()
    start = clock()
    ticks = 0
    code = 0
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
            rolled_back = rolled_back or code in (ROLLED_BACK_EXIT, ROLLED_BACK_LOCAL_EXIT)
            if rolled_back:
                landed = not (result.git_error or result.degraded)
                code = ROLLED_BACK_EXIT if landed else ROLLED_BACK_LOCAL_EXIT
            report(tick_line(ticks, clock(), result))
            if stop.is_set():
                return WatchResult(ticks, code, "signal")
            elapsed = clock() - start
            if duration is not None and elapsed + interval > duration:
                return WatchResult(ticks, code, "duration")
            if stop.wait(interval.total_seconds()):
                return WatchResult(ticks, code, "signal")
