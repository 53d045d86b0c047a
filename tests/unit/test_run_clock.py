"""A run's clock: its services share a reading for up to `CLOCK_RESOLUTION` seconds (a
reading of the emulator's clock is a call), and a new run always reads it again."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from reconciler.reconcile import CLOCK_RESOLUTION, _coarse

T0 = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def test_a_run_reads_its_clock_once_per_resolution() -> None:
    readings: list[datetime] = []
    elapsed = [100.0]

    def clock() -> datetime:
        readings.append(T0 + timedelta(seconds=len(readings)))
        return readings[-1]

    run = _coarse(clock, lambda: elapsed[0])
    assert {run() for _ in range(1000)} == {T0}
    elapsed[0] += CLOCK_RESOLUTION * 0.99
    assert run() == T0 and len(readings) == 1
    elapsed[0] += CLOCK_RESOLUTION * 0.01
    assert run() == T0 + timedelta(seconds=1) and len(readings) == 2
    # The next run (a clock moved in between, as tests and `emulator clock` do) reads at once.
    assert _coarse(clock, lambda: elapsed[0])() == T0 + timedelta(seconds=2)
