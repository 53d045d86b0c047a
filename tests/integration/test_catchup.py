"""A run catching up on windows no record judged asks them in one query per metric.

Runs that write nothing (between checkpoints) leave the last judged window where the last
record put it, so the next run measures every whole window since: with the official Cloud
Monitoring client against the emulator, that whole run of windows is one ListTimeSeries per
metric (one point per window), and each window is what asking it alone answers.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import pytest
from tests.builders import context, rollout_text

from reconciler.gather import SAMPLE_PERIOD, measure, ref_of, spans
from reconciler.loader import load_spec
from reconciler.metrics import StatsQuery
from reconciler.metrics.cloud_monitoring import (
    REQUEST_COUNT,
    REQUEST_LATENCIES,
    CloudMonitoringProvider,
)
from reconciler.model import SpanKind, WindowStats
from reconciler.reconcile import apply_all
from reconciler.sandbox import Sandbox, sandbox
from reconciler.state import read_status

STABLE, CANARY = "ion-api-00041-abc", "ion-api-00042-xyz"
WINDOW = 300.0


@pytest.fixture
def sb(tmp_path: Path) -> Iterator[Sandbox]:
    with sandbox(tmp_path) as s:
        yield s


def _key(w: WindowStats) -> tuple[object, ...]:
    return (w.revision, w.start, w.end, w.span, w.provisional, w.requests, w.errors, w.p95)


@pytest.mark.parametrize("behind", [12, 36])
def test_a_catch_up_is_one_query_per_metric_and_measures_what_single_queries_do(
    sb: Sandbox, behind: int
) -> None:
    sb.commit_rollout(rollout_text(sb.emu, probes=False), "ion-api canary")
    sb.emu.behave(CANARY, error_rate=0.03)
    ctx = context(sb, metrics=True)
    assert apply_all(ctx).exit_code == 0  # the canary goes live at 5% and is recorded
    for i in range(behind):  # runs that wrote nothing: traffic no record judged
        sb.emu.load("ion-api", 100 + 10 * i)
        sb.emu.load("ion-api", 40 + i, tag="canary")
        sb.emu.advance_clock(WINDOW)
    spec = load_spec(sb.rollout())
    live = ctx.backend.get_service(ref_of(spec))
    status = read_status(sb.repo, ref_of(spec))
    now = sb.now()

    batched = CloudMonitoringProvider()
    paged = CloudMonitoringProvider(page_size=7)  # every series cut across pages
    got = {
        name: measure(
            context(sb, metrics_for=lambda _c, p=provider: p), [(spec, live, status)], now
        )
        for name, provider in (("batched", batched), ("paged", paged))
    }
    wanted = spans(spec, status, live, now, batched.ingestion_lag)
    whole = [s for s in wanted if s[2] == "window"]
    assert len(whole) >= behind - 1, wanted
    others = len(wanted) - len(whole)  # the partial span up to the ingestion horizon
    # The whole run of windows is ONE listing per metric, not one per window.
    assert dict(batched.calls) == {
        (spec.project, REQUEST_COUNT): 1 + others,
        (spec.project, REQUEST_LATENCIES): 1 + others,
    }
    assert paged.rpcs > batched.rpcs  # the small pages were followed

    # The same windows as asking each span alone (the way before), across page cuts too.
    single = CloudMonitoringProvider()
    query = StatsQuery(ref_of(spec), (CANARY, STABLE))
    expected: list[WindowStats] = []
    for start, end, kind in wanted:
        answer = single.window_stats([query], end - start, end + single.ingestion_lag)
        for rev in (CANARY, STABLE):
            w = answer[("ion-api", rev)]
            expected.append(_as_measured(w, start, end, kind, now, single))
    assert single.calls[(spec.project, REQUEST_COUNT)] == len(wanted)
    for windows, errors in got.values():
        assert not errors
        measured = [w for rev in (CANARY, STABLE) for w in windows[(ref_of(spec).key, rev)]]
        assert sorted(map(_key, measured)) == sorted(map(_key, expected))
    canary = got["batched"][0][(ref_of(spec).key, CANARY)]
    assert sum(w.requests for w in canary if w.span == "window") > 0
    assert all(w.requests for w in canary if w.span == "window")


def _as_measured(
    w: WindowStats,
    start: datetime,
    end: datetime,
    kind: SpanKind,
    now: datetime,
    provider: CloudMonitoringProvider,
) -> WindowStats:
    """A single answer as `measure` stamps it (its span, start, end and provisional flag)."""
    provisional = end > now - provider.ingestion_lag - SAMPLE_PERIOD
    return replace(w, start=start, end=end, span=kind, provisional=provisional)
