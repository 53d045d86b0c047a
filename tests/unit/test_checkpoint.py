"""Checkpoints: when a run writes a service's record (`decide.record_due`), how long a
steady canary may go without one (`decide.checkpoint_interval`), and that runs which wrote
nothing leave no traffic unjudged and count no window twice."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import pytest

from reconciler.decide import checkpoint_interval, decide, record_due
from reconciler.gather import spans
from reconciler.model import (
    Coverage,
    GateResult,
    Outcome,
    ServiceStatus,
    Streak,
    Verdict,
    WindowStats,
)
from tests.unit.test_decide import AT_5, CANARY, STABLE, T0, make_spec, status_at

MIN = timedelta(minutes=1)
LAG = timedelta(minutes=3)


@pytest.mark.parametrize(
    ("gates", "interval"),
    [
        ({"window": "1m", "error_rate": {"max": "5%"}}, 38 * MIN),  # 48m - 10m
        ({"window": "5m", "error_rate": {"max": "5%"}}, 180 * MIN),  # capped at 3h (< 230m)
        ({"window": "10m", "error_rate": {"max": "5%"}}, 180 * MIN),
        ({"window": "1h", "error_rate": {"max": "5%"}}, 180 * MIN),
        ({"window": "3m", "error_rate": {"max": "5%"}}, 134 * MIN),  # 144m - 10m
        (  # the shortest gate length decides
            {"window": "10m", "error_rate": {"max": "5%"},
             "latency_p95": {"max": "20s", "window": "3m"}},
            134 * MIN,
        ),
    ],
)  # fmt: skip
def test_checkpoint_interval(gates: dict[str, Any], interval: timedelta) -> None:
    assert checkpoint_interval(make_spec(gates=gates)) == interval


def verdict(outcome: Outcome, value: float = 0.01) -> Verdict:
    return Verdict(outcome, (GateResult("error_rate", outcome, value, 0.05, 1000, "r"),))


BASE = status_at(
    AT_5,
    verdict=verdict(Outcome.PASS),
    verdict_at=T0,
    passing_since=T0,
    streaks={"error_rate": Streak(0, T0 + 5 * MIN)},
    coverage=Coverage(1000, 1000),
)
WINDOW = WindowStats("ion-api", CANARY, T0, T0 + 5 * MIN, 1000, 1, 999)
SOON, LATE = T0 + 10 * MIN, T0 + 50 * MIN


@pytest.mark.parametrize(
    ("name", "status", "now", "elsewhere", "due"),
    [
        ("nothing new, young record", BASE, SOON, False, False),
        ("only times moved", replace(BASE, last_reconcile=SOON, verdict_at=SOON), SOON, False,
         False),
        ("newer windows", replace(BASE, windows=(WINDOW,)), SOON, False, False),
        ("same verdict, other values", replace(BASE, verdict=verdict(Outcome.PASS, 0.02)), SOON,
         False, False),
        ("streak moved its newest window only",
         replace(BASE, streaks={"error_rate": Streak(0, SOON)}), SOON, False, False),
        ("coverage grew, no gap", replace(BASE, coverage=Coverage(3000, 3000)), SOON, False,
         False),
        ("checkpoint due", BASE, LATE, False, True),
        ("first observation", None, SOON, False, True),
        ("verdict kind", replace(BASE, verdict=verdict(Outcome.INCONCLUSIVE)), SOON, False, True),
        ("failing streak", replace(BASE, streaks={"error_rate": Streak(1, SOON)}), SOON, False,
         True),
        ("inconclusive streak",
         replace(BASE, streaks={"error_rate": Streak(0, SOON, inconclusive=1)}), SOON, False,
         True),
        ("a gap lowers coverage", replace(BASE, coverage=Coverage(1000, 3000)), SOON, False,
         True),
        ("bake stopped", replace(BASE, passing_since=None), SOON, False, True),
        ("stage", replace(BASE, stage=10), SOON, False, True),
        ("spec id", replace(BASE, spec_id="f" * 40), SOON, False, True),
        ("report written", replace(BASE, reported={"interim@5": SOON}), SOON, False, True),
        ("event, edit, traffic write or report", BASE, SOON, True, True),
    ],
)  # fmt: skip
def test_record_due(
    name: str, status: ServiceStatus | None, now: datetime, elsewhere: bool, due: bool
) -> None:
    previous = None if status is None else BASE
    current = BASE if status is None else status
    got = record_due(previous, current, now=now, interval=50 * MIN, news_elsewhere=elsewhere)
    assert got is due, name


# --- runs that write nothing judge the same traffic again -------------------------------------
ERRORS = [
    0,
    0,
    0,
    0,
    0,
    0,
    0,
    0,
    90,
    0,
    0,
    90,
    90,
    0,
    0,
    0,
    0,
    0,
    0,
    90,
    0,
    90,
    0,
    0,
    90,
    90,
    90,
    90,
    0,
    0,
]
"""Errors per 5-minute slot of 1000 canary requests since the stage began (9% fails 5%)."""


def measured(start: datetime, end: datetime, kind: Any, revision: str) -> WindowStats:
    """What the metrics provider answers for a span: the slots it covers, summed."""
    slots = range(int((start - T0) / (5 * MIN)), int((end - T0) / (5 * MIN)))
    requests = 1000 * len(slots) if revision == CANARY else 19000 * len(slots)
    errors = sum(ERRORS[i] for i in slots if i < len(ERRORS)) if revision == CANARY else 0
    return WindowStats(
        "ion-api", revision, start, end, requests, errors, requests - errors, p95=0.2, span=kind
    )


def run(
    spec: Any, committed: ServiceStatus, now: datetime
) -> tuple[ServiceStatus, Outcome | None, bool]:
    """One run from the committed status: (status it would write, verdict, rollback)."""
    wanted = spans(spec, committed, AT_5, now, LAG)
    windows = [measured(a, b, k, rev) for a, b, k in wanted for rev in (CANARY, STABLE)]
    d = decide(spec, committed, AT_5, now=now, windows=windows)
    assert d.verdict is not None
    return d.held, d.verdict.outcome, d.rollback


@pytest.mark.parametrize("limit", [2, 3])
def test_skipped_runs_give_the_same_streaks_verdicts_and_rollback(limit: int) -> None:
    """Every run writing its record, against runs writing only when `record_due`: the
    same verdict each run, the same rollback at the same run, the same streaks and
    coverage at each record, and every request judged."""
    spec = make_spec(
        gates={"window": "5m", "min_requests": 100, "consecutive_failures": limit,
               "error_rate": {"max": "5%"}}
    )  # fmt: skip
    every = skipping = status_at(AT_5)
    interval = checkpoint_interval(spec)
    skipped = 0
    for k in range(1, len(ERRORS)):
        now = T0 + k * 5 * MIN + LAG + timedelta(seconds=30)
        a, outcome_a, rollback_a = run(spec, every, now)
        b, outcome_b, rollback_b = run(spec, skipping, now)
        assert (outcome_a, rollback_a) == (outcome_b, rollback_b), k
        every = a
        if record_due(skipping, b, now=now, interval=interval):
            assert b.streaks == a.streaks and b.coverage == a.coverage, k
            skipping = b
        else:
            skipped += 1
        if rollback_a:
            break
    else:
        pytest.fail("the failing windows never rolled back")
    assert skipped >= 4  # runs that wrote nothing, judged again by the next ones
    assert every.coverage.judged == every.coverage.served


def test_a_catch_up_longer_than_the_kept_windows_counts_every_window() -> None:
    """A run measuring more windows than the verdict keeps (`window_keep`, 12) after runs
    that wrote nothing still counts the oldest ones: two failing windows, then inconclusive
    ones (too few requests), roll back as they did when every run recorded."""
    spec = make_spec(
        gates={"window": "5m", "min_requests": 100, "consecutive_failures": 2,
               "error_rate": {"max": "5%"}}
    )  # fmt: skip
    committed = status_at(AT_5)
    now = T0 + 20 * 5 * MIN + LAG + timedelta(seconds=30)
    windows = []
    for start, end, kind in spans(spec, committed, AT_5, now, LAG):
        slot = int((start - T0) / (5 * MIN))
        canary = (1000, 90) if slot < 2 else (50, 0)
        for rev, (requests, errors) in ((CANARY, canary), (STABLE, (19000, 0))):
            windows.append(
                WindowStats("ion-api", rev, start, end, requests, errors, requests - errors,
                            p95=0.2, span=kind)
            )  # fmt: skip
    assert sum(1 for w in windows if w.span == "window" and w.revision == CANARY) == 20
    d = decide(spec, committed, AT_5, now=now, windows=windows)
    assert d.verdict is not None and d.verdict.outcome is Outcome.FAIL
    assert d.rollback
