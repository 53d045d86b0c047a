"""The monitor loop: ticks, duration, and a failing tick that does not end the loop."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

from reconciler.errors import ReconcileError
from reconciler.reconcile import ROLLED_BACK_EXIT, RunResult, ServiceOutcome
from reconciler.watch import watch


class FakeClock:
    """A clock the loop's waits move forward (no real sleeping)."""

    def __init__(self) -> None:
        self.now = datetime(2026, 11, 26, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


class TickingStop(threading.Event):
    """`wait(t)` advances the fake clock by t instead of sleeping."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__()
        self.clock = clock

    def wait(self, timeout: float | None = None) -> bool:
        self.clock.now += timedelta(seconds=timeout or 0)
        return self.is_set()


def run_watch(results: list[object], duration: timedelta) -> tuple[int, int, list[str]]:
    clock = FakeClock()
    lines: list[str] = []
    queue = list(results)

    def run_once() -> RunResult:
        item = queue.pop(0) if queue else RunResult(())
        if isinstance(item, Exception):
            raise item
        assert isinstance(item, RunResult)
        return item

    done = watch(
        run_once,
        interval=timedelta(minutes=30),
        duration=duration,
        clock=clock,
        report=lines.append,
        stop=TickingStop(clock),
    )
    return done.ticks, done.exit_code, lines


def test_ticks_until_the_duration_and_reports_each() -> None:
    ticks, code, lines = run_watch([], timedelta(hours=2))
    assert ticks == 5 and code == 0  # at 0, 30, 60, 90 and 120 minutes
    assert sum("] tick " in line for line in lines) == 5


def test_a_failing_tick_is_reported_and_the_loop_goes_on() -> None:
    rolled = RunResult((ServiceOutcome("ion-api", rolled_back=True),))
    ticks, code, lines = run_watch(
        [ReconcileError("fetch of main from origin failed"), rolled], timedelta(hours=1)
    )
    assert ticks == 3
    assert "tick failed: fetch of main from origin failed" in lines[1]
    assert code == ROLLED_BACK_EXIT  # a rollback in any tick is the loop's outcome
