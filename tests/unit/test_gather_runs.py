"""`gather.runs`: the spans a run measures, joined into the runs a provider answers in one
query per metric (consecutive whole windows of one length), the rest one span each."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from reconciler.gather import Run, runs
from reconciler.model import SpanKind

T0 = datetime(2026, 5, 1, 12, tzinfo=UTC)
FIVE = timedelta(minutes=5)
TEN = timedelta(minutes=10)


def span(
    start: int, minutes: int, kind: SpanKind = "window"
) -> tuple[datetime, datetime, SpanKind]:
    """A span `minutes` long starting `start` minutes after T0."""
    return T0 + timedelta(minutes=start), T0 + timedelta(minutes=start + minutes), kind


def run(
    start: int, length: timedelta, count: int, kind: SpanKind = "window"
) -> tuple[Run, SpanKind]:
    return (T0 + timedelta(minutes=start), length, count), kind


@pytest.mark.parametrize(
    ("spans", "expected"),
    [
        ([], []),
        ([span(0, 5)], [run(0, FIVE, 1)]),
        ([span(0, 5), span(5, 5), span(10, 5)], [run(0, FIVE, 3)]),
        (  # a gap, then the whole windows, then the partial span
            [span(0, 60, "gap"), span(60, 5), span(65, 5), span(70, 3, "partial")],
            [run(0, timedelta(hours=1), 1, "gap"), run(60, FIVE, 2),
             run(70, timedelta(minutes=3), 1, "partial")],
        ),
        (  # a kept provisional window, then a gap: the gap ends the run
            [span(0, 5), span(5, 240, "gap"), span(245, 5), span(250, 5)],
            [run(0, FIVE, 1), run(5, timedelta(hours=4), 1, "gap"), run(245, FIVE, 2)],
        ),
        (  # not consecutive: two runs
            [span(0, 5), span(10, 5)], [run(0, FIVE, 1), run(10, FIVE, 1)],
        ),
        (  # two gate lengths: one run each
            [span(0, 5), span(5, 5), span(0, 10), span(10, 10)],
            [run(0, FIVE, 2), run(0, TEN, 2)],
        ),
        (  # windows of another length never join a run
            [span(0, 5), span(5, 10)], [run(0, FIVE, 1), run(5, TEN, 1)],
        ),
    ],
    ids=["none", "one", "three", "gap-windows-partial", "window-gap-windows", "apart",
         "two-lengths", "other-length"],
)  # fmt: skip
def test_runs(
    spans: list[tuple[datetime, datetime, SpanKind]], expected: list[tuple[Run, SpanKind]]
) -> None:
    assert runs(spans) == expected
