"""The state/<service>/ files: round trips, deterministic bytes, atomic writes, bounded growth."""

from __future__ import annotations

import math
import os
import re
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml

from reconciler import blockyaml, redact, state
from reconciler.analysis import judge
from reconciler.model import (
    GateResult,
    LatencyBucket,
    Outcome,
    ServiceRef,
    Target,
    TrafficSplit,
    Verdict,
    WindowStats,
)
from reconciler.spec import Gates, parse_latency
from reconciler.state import (
    Event,
    EventKind,
    Phase,
    ProbeRecord,
    ServiceStatus,
    StateError,
    Streak,
    append_events,
    append_metrics,
    atomic_write_text,
    format_time,
    keep_windows,
    metrics_path,
    parse_time,
    read_events,
    read_events_salvaged,
    read_metrics,
    read_status,
    stage_since,
    state_dir,
    state_refs,
    status_path,
    status_unread,
    with_windows,
    write_status,
)
from tests.builders import emitter_text
from tests.refs import ION, ION_DIR, ref

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
STABLE, CANARY = "ion-api-00041-abc", "ion-api-00042-xyz"


def _window(revision: str, n: int, *, service: str = "ion-api", at: datetime = T0) -> WindowStats:
    start = at + timedelta(minutes=5 * n)
    return WindowStats(
        service=service,
        revision=revision,
        start=start,
        end=start + timedelta(minutes=5),
        requests=1000 + n,
        errors=7 * n,
        successes=990 - n,
        p50=0.12,
        p95=0.3 + n / 1000,
        p99=None if n % 2 else 1.5,
    )


def _recorded(w: WindowStats) -> WindowStats:
    """`w` as status.yaml keeps it: the judge reads p95 alone (p50 and p99 are in the
    metrics files)."""
    return replace(w, p50=None, p99=None)


def _status(**changes: Any) -> ServiceStatus:
    base = ServiceStatus(
        service="ion-api",
        phase=Phase.PROGRESSING,
        stable_revision=STABLE,
        canary_revision=CANARY,
        stage=5,
        stage_since=T0,
        traffic=TrafficSplit.of(
            [Target(STABLE, 95, "stable"), Target(CANARY, 5, "canary"), Target(CANARY, 0, "x")]
        ),
        etag='W/"abc"',
        generation=7,
        observed_generation=7,
        last_reconcile=T0 + timedelta(minutes=30),
        spec_id="0123456789abcdef0123456789abcdef01234567",
        verdict=Verdict(
            Outcome.FAIL,
            (
                GateResult("error_rate", Outcome.FAIL, 0.071, 0.05, 1002, "error_rate 7.1% > 5%"),
                GateResult("latency_p95", Outcome.PASS, 0.301, 20.0, 1002, "ok"),
                GateResult("success_rate", Outcome.INCONCLUSIVE, None, 0.9, 0, "no data"),
                GateResult("vs_stable", Outcome.PASS, 0.002, 0.02, 1002, "ok"),
            ),
        ),
        verdict_at=T0 + timedelta(minutes=30),
        # The newest final window per revision: what status.yaml keeps without a failing streak
        # (the stable revision's because a `vs_stable` gate reads it).
        windows=(_recorded(_window(STABLE, 1)), _recorded(_window(CANARY, 1))),
    )
    return replace(base, **changes)


# --- status.yaml ----------------------------------------------------------------------------
STATUSES = [
    ("full", _status()),
    (
        "minimal",
        _status(
            canary_revision=None,
            phase=Phase.PROMOTED,
            stage=0,
            stage_since=None,
            spec_id=None,
            verdict=None,
            verdict_at=None,
            windows=(),
            traffic=TrafficSplit.of([Target(STABLE, 100, "stable")]),
        ),
    ),
    ("rolled-back", _status(phase=Phase.ROLLED_BACK, stage=0)),
    ("non-utc-times", _status(stage_since=T0.astimezone(timezone(timedelta(hours=9))))),
    (
        "streaks",
        _status(streaks={"error_rate": Streak(13, T0), "probe:health": Streak(0, T0)}),
    ),
    (
        "probe-runs",
        _status(
            probes=(
                ProbeRecord("canary-health", True, T0, latency=0.125),
                ProbeRecord("chat-smoke", False, T0, "timeout after 15s"),  # no answer
            )
        ),
    ),
]


def test_a_status_written_before_streaks_still_loads(tmp_path: Path) -> None:
    write_status(tmp_path, ION, _status())
    text = status_path(tmp_path, ION).read_text(encoding="utf-8")
    assert "streaks" not in text  # no streak: the file keeps its old bytes
    status = read_status(tmp_path, ION)
    assert status is not None and status.streaks == {}


@pytest.mark.parametrize("status", [s[1] for s in STATUSES], ids=[s[0] for s in STATUSES])
def test_status_round_trips(status: ServiceStatus, tmp_path: Path) -> None:
    path = write_status(tmp_path, ION, status)
    assert path == tmp_path / ION_DIR / "status.yaml"
    assert read_status(tmp_path, ION) == status


def test_status_is_deterministic_and_readable(tmp_path: Path) -> None:
    write_status(tmp_path, ION, _status())
    first = status_path(tmp_path, ION).read_bytes()
    write_status(tmp_path, ION, read_status(tmp_path, ION))  # type: ignore[arg-type]
    assert status_path(tmp_path, ION).read_bytes() == first
    text = first.decode()
    keys = [line.split(":")[0] for line in text.splitlines() if line and line[0].isalpha()]
    assert keys == [
        "schema",
        "service",
        "phase",
        "revisions",
        "stage",
        "stage_since",
        "traffic",
        "etag",
        "generation",
        "observed_generation",
        "last_reconcile",
        "spec_id",
        "verdict",
        "windows",
        "applied",
        "passing_since",
        "probes",
    ]
    assert "stage_since: '2026-05-01T12:00:00Z'\n" in text
    assert "  canary: ion-api-00042-xyz\n" in text


def test_a_new_observation_changes_few_lines(tmp_path: Path) -> None:
    write_status(tmp_path, ION, _status())
    before = status_path(tmp_path, ION).read_text().splitlines()
    write_status(tmp_path, ION, _status(last_reconcile=T0 + timedelta(hours=1), generation=8))
    after = status_path(tmp_path, ION).read_text().splitlines()
    assert len(before) == len(after)
    assert sum(a != b for a, b in zip(before, after, strict=True)) == 2


def test_missing_status_reads_as_none(tmp_path: Path) -> None:
    assert read_status(tmp_path, ION) is None


BAD_STATUS = [
    ("not-yaml", "a: [", "invalid status file"),
    ("not-a-mapping", "- 1\n", "invalid status file: not a mapping"),
    ("missing-key", "schema: 1\nservice: ion-api\n", "invalid status file: missing key 'phase'"),
    ("future-schema", "schema: 2\n", "schema 2 is not 1"),
]


@pytest.mark.parametrize(
    ("text", "match"), [b[1:] for b in BAD_STATUS], ids=[b[0] for b in BAD_STATUS]
)
def test_invalid_status_names_the_file(text: str, match: str, tmp_path: Path) -> None:
    path = status_path(tmp_path, ION)
    atomic_write_text(path, text)
    with pytest.raises(StateError, match=match) as err:
        read_status(tmp_path, ION)
    assert str(err.value).startswith(f"{path}: ")


def test_status_of_another_service_is_refused(tmp_path: Path) -> None:
    write_status(tmp_path, ION, _status())
    os.rename(state_dir(tmp_path, ION), state_dir(tmp_path, ref("other")))
    with pytest.raises(StateError, match="holds the status of 'ion-api', not 'other'"):
        read_status(tmp_path, ref("other"))


def test_naive_times_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no timezone"):
        write_status(tmp_path, ION, _status(last_reconcile=datetime(2026, 1, 1)))


# --- stage_since and windows ----------------------------------------------------------------
LATER = T0 + timedelta(hours=3)
SINCE = [
    ("first-run", None, CANARY, 5, LATER),
    ("same-stage-keeps", _status(), CANARY, 5, T0),
    ("new-stage", _status(), CANARY, 10, LATER),
    ("new-canary", _status(), "ion-api-00043-new", 5, LATER),
    ("unknown-since", _status(stage_since=None), CANARY, 5, LATER),
]


@pytest.mark.parametrize(
    ("previous", "canary", "stage", "expected"), [s[1:] for s in SINCE], ids=[s[0] for s in SINCE]
)
def test_stage_since_survives_runs(
    previous: ServiceStatus | None, canary: str, stage: int, expected: datetime
) -> None:
    assert stage_since(previous, canary=canary, stage=stage, now=LATER) == expected


def test_keep_windows_is_bounded_per_revision_and_deduplicated() -> None:
    old = [_window(r, n) for n in range(5) for r in (STABLE, CANARY)]
    new = [_window(r, n) for n in range(3, 8) for r in (STABLE, CANARY)]  # 3 and 4 repeat
    kept = keep_windows(old, new, keep=3)
    assert [(w.revision, w.start) for w in kept] == [
        (r, _window(r, n).start) for n in (5, 6, 7) for r in sorted((STABLE, CANARY))
    ]
    assert len(keep_windows(old, new, keep=10_000)) == 16  # capped at MAX_WINDOWS, 8 each
    assert len(keep_windows(old, [], keep=0)) == 2  # at least one per revision


def test_with_windows_merges_into_the_status(tmp_path: Path) -> None:
    status = with_windows(_status(), [_recorded(_window(CANARY, 2))], keep=2)
    assert [(w.revision, w.start) for w in status.windows] == [
        (STABLE, _window(STABLE, 1).start),
        (CANARY, _window(CANARY, 1).start),
        (CANARY, _window(CANARY, 2).start),
    ]
    write_status(tmp_path, ION, status)
    # The newest final window per revision is written (no gate is failing).
    assert read_status(tmp_path, ION) == replace(status, windows=status.windows[::2])


# --- events.jsonl ---------------------------------------------------------------------------
def _event(n: int, kind: EventKind = EventKind.ADVANCED) -> Event:
    return Event(
        time=T0 + timedelta(minutes=n),
        kind=kind,
        actor="cloudrun-reconciler[bot]",
        before=f"{STABLE}=95 {CANARY}=5",
        after=f"{STABLE}=90 {CANARY}=10",
        reason=f"gates passed for 24h ({n})",
        spec_id="abc123",
        details={"windows": 3, "error_rate": 0.002, "forced": False, "note": None},
    )


@pytest.mark.parametrize("kind", list(EventKind), ids=[k.value for k in EventKind])
def test_event_round_trips(kind: EventKind, tmp_path: Path) -> None:
    append_events(tmp_path, ION, [_event(1, kind), Event(T0, kind, "alice")])
    assert read_events(tmp_path, ION) == [Event(T0, kind, "alice"), _event(1, kind)]


def test_events_append_one_compact_line_each(tmp_path: Path) -> None:
    path = append_events(tmp_path, ION, [_event(1)])
    append_events(tmp_path, ION, [_event(2), _event(3)])
    lines = path.read_text().splitlines()
    assert len(lines) == 3
    assert lines[0] == (
        '{"time":"2026-05-01T12:01:00Z","kind":"advanced","actor":"cloudrun-reconciler[bot]",'
        '"before":"ion-api-00041-abc=95 ion-api-00042-xyz=5",'
        '"after":"ion-api-00041-abc=90 ion-api-00042-xyz=10","reason":"gates passed for 24h (1)",'
        '"spec_id":"abc123","details":{"windows":3,"error_rate":0.002,"forced":false,'
        '"note":null}}'
    )


def test_events_are_capped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(state, "MAX_EVENTS", 5)
    for n in range(8):
        append_events(tmp_path, ION, [_event(n)])
    assert [e.time for e in read_events(tmp_path, ION)] == [_event(n).time for n in range(3, 8)]


def test_events_read_in_time_order_after_a_union_merge(tmp_path: Path) -> None:
    append_events(tmp_path, ION, [_event(5), _event(1), _event(3)])
    assert [e.time for e in read_events(tmp_path, ION)] == [_event(n).time for n in (1, 3, 5)]


def test_invalid_event_line_is_skipped_and_named(tmp_path: Path) -> None:
    path = append_events(tmp_path, ION, [_event(1)])
    path.write_text(path.read_text() + '{"time": "x"}\n')
    events, dropped = read_events_salvaged(tmp_path, ION)
    assert events == [_event(1)]
    assert len(dropped) == 1 and dropped[0].startswith(f"{path}:2: invalid event skipped")
    assert read_events(tmp_path, ION) == [_event(1)]


# --- metrics --------------------------------------------------------------------------------
def test_metrics_go_to_day_files_and_round_trip(tmp_path: Path) -> None:
    may_end = datetime(2026, 5, 31, 23, 55, tzinfo=UTC)
    windows = [_window(CANARY, 0, at=may_end), _window(STABLE, 0, at=may_end), _window(CANARY, 1)]
    written = append_metrics(tmp_path, ION, windows)
    assert [p.name for p in written] == [
        "windows-2026-05-01.6bfbca.jsonl",
        "windows-2026-06-01.b8b4b5.jsonl",
    ]
    # Beside status.yaml: no `metrics/` folder (its tree was rewritten by every record).
    assert {p.parent for p in written} == {state_dir(tmp_path, ION)}
    assert not (state_dir(tmp_path, ION) / "metrics").exists()
    assert read_metrics(tmp_path, ION) == sorted(
        windows, key=lambda w: (w.end, w.revision, w.start)
    )
    # Windows ending at midnight on 1 June belong to June; `since` keeps later ends only.
    since = datetime(2026, 5, 15, tzinfo=UTC)
    assert read_metrics(tmp_path, ION, since=since) == [windows[1], windows[0]]


def test_metrics_line_is_compact_and_exact(tmp_path: Path) -> None:
    (path,) = append_metrics(tmp_path, ION, [_window(CANARY, 1)])
    assert path == metrics_path(tmp_path, ION, _window(CANARY, 1).end)
    assert path.read_text() == (
        '{"r":"00042-xyz","e":1777637400,"w":300,"n":1001,"x":7,"k":989,"p":[0.12,0.301,null]}\n'
    )
    odd = replace(
        _window(CANARY, 1),
        revision="hand-named",
        end=_window(CANARY, 1).end + timedelta(microseconds=12785),
        p50=0.1150495542609,
    )
    append_metrics(tmp_path, ION, [odd])
    line = path.read_text().splitlines()[1]
    assert line.startswith('{"R":"hand-named","e":1777637400,"u":12785,"w":300,"v":12785,')
    assert '"p":[0.115,0.301,null]' in line
    (back,) = [w for w in read_metrics(tmp_path, ION) if w.revision == "hand-named"]
    assert back == replace(odd, p50=0.115)


def test_metrics_are_appended_never_rewritten(tmp_path: Path) -> None:
    (path,) = append_metrics(tmp_path, ION, [_window(CANARY, 0)])
    first = path.read_bytes()
    path.write_bytes(first + b'{"r":"00042-xyz","e":17776')  # a crash cut the last line
    append_metrics(tmp_path, ION, [_window(CANARY, 1)])
    lines = path.read_bytes().split(b"\n")
    assert path.read_bytes().startswith(first)  # what was there is untouched
    assert lines[1] == b'{"r":"00042-xyz","e":17776' and lines[2].startswith(b'{"r":')
    assert read_metrics(tmp_path, ION) == [_window(CANARY, 0), _window(CANARY, 1)]


def test_old_month_files_and_union_merged_repeats_read_once(tmp_path: Path) -> None:
    old = state_dir(tmp_path, ION) / "metrics" / "2026-04.jsonl"
    old.parent.mkdir(parents=True)
    line = (
        '{"service":"ion-api","revision":"ion-api-00042-xyz","start":"2026-04-30T12:05:00Z",'
        '"end":"2026-04-30T12:10:00Z","requests":1001,"errors":7,"successes":989,'
        '"error_rate":0.007,"success_rate":0.988,"p50":0.12,"p95":0.301,"p99":null,'
        '"latency_buckets":[[0.0,0.1,3],[0.1,null,2]]}\n'
    )
    old.write_text(line + line, encoding="utf-8")  # both sides' lines after a union merge
    append_metrics(tmp_path, ION, [_window(CANARY, 0), _window(CANARY, 0)])
    (april, may) = read_metrics(tmp_path, ION)
    assert april.end == datetime(2026, 4, 30, 12, 10, tzinfo=UTC) and april.errors == 7
    assert april.latency_buckets is not None and april.latency_buckets[1].upper is None
    assert may == _window(CANARY, 0)
    assert read_metrics(tmp_path, ION, since=datetime(2026, 5, 1, tzinfo=UTC)) == [may]


def test_metrics_are_not_recorded_twice(tmp_path: Path) -> None:
    append_metrics(tmp_path, ION, [_window(CANARY, 0), _window(CANARY, 1)])
    assert append_metrics(tmp_path, ION, [_window(CANARY, 1), _window(CANARY, 1)]) == []
    assert append_metrics(tmp_path, ION, [_window(CANARY, 2), _window(CANARY, 2)]) != []
    got = read_metrics(tmp_path, ION)
    assert [w.rolled for w in got] == [2, 1]
    assert sum(w.requests for w in got) == sum(_window(CANARY, n).requests for n in range(3))


def test_a_record_repeated_after_a_failed_push_writes_only_the_newer_windows(
    tmp_path: Path,
) -> None:
    append_metrics(tmp_path, ION, [_window(CANARY, n) for n in range(4)])
    path = metrics_path(tmp_path, ION, T0)
    before = path.read_text(encoding="utf-8")
    # The repeated run measures again from the same last record, one window further.
    append_metrics(tmp_path, ION, [_window(CANARY, n) for n in range(5)])
    added = path.read_text(encoding="utf-8")[len(before) :].splitlines()
    assert len(added) == 1 and '"w":300,' in added[0] and '"c"' not in added[0]
    got = read_metrics(tmp_path, ION)
    assert [(w.start, w.end, w.rolled) for w in got] == [
        (T0, T0 + timedelta(minutes=20), 4),
        (T0 + timedelta(minutes=20), T0 + timedelta(minutes=25), 1),
    ]


def _bucketed(revision: str, n: int, **changes: Any) -> WindowStats:
    counts = [(0.0, 0.1, 500 + n), (0.1, 0.2, 300 + 7 * n), (0.2, None, 200 + n)]
    return replace(
        _window(revision, n),
        latency_buckets=tuple(LatencyBucket(lo, hi, c) for lo, hi, c in counts),
        **changes,
    )


def test_a_record_rolls_its_windows_up_into_one_line_per_revision(tmp_path: Path) -> None:
    windows = [_bucketed(rev, n) for n in range(6) for rev in (CANARY, STABLE)]
    append_metrics(tmp_path, ION, windows)
    lines = metrics_path(tmp_path, ION, T0).read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2 and all('"w":1800,' in ln and '"c":6' in ln for ln in lines)
    assert not any('"p":' in ln for ln in lines)  # read back from the merged distribution
    canary = next(w for w in read_metrics(tmp_path, ION) if w.revision == CANARY)
    mine = [w for w in windows if w.revision == CANARY]
    assert (canary.start, canary.end, canary.rolled) == (T0, mine[-1].end, 6)
    assert canary.step == timedelta(minutes=5) and canary.window == timedelta(minutes=30)
    assert canary.requests == sum(w.requests for w in mine)
    assert canary.errors == sum(w.errors for w in mine)
    assert canary.successes == sum(w.successes for w in mine)
    assert canary.latency_buckets == (
        LatencyBucket(0.0, 0.1, 3015),
        LatencyBucket(0.1, 0.2, 1905),
        LatencyBucket(0.2, None, 1215),
    )
    # From the merged distribution: P50's rank 3067.5 of 6135 lies in the second bucket,
    # P95's in the overflow one.
    assert canary.p95 == 0.2 and canary.p50 == pytest.approx(0.1 + 0.1 * 52.5 / 1905, abs=1e-4)


def test_only_consecutive_final_windows_are_rolled_up(tmp_path: Path) -> None:
    late = _bucketed(CANARY, 7, provisional=True)
    partial = _bucketed(CANARY, 8, incomplete="1 of 2 regions answered")
    windows = [_bucketed(CANARY, n) for n in (0, 1, 3, 4)] + [late, partial]
    append_metrics(tmp_path, ION, windows)
    got = read_metrics(tmp_path, ION)
    assert [(w.start, w.rolled) for w in got] == [
        (T0, 2),  # 0 and 1
        (T0 + timedelta(minutes=15), 2),  # 3 and 4: window 2 was not measured
        (late.start, 1),
        (partial.start, 1),
    ]
    assert got[2].provisional and got[3].incomplete == "1 of 2 regions answered"


def test_windows_of_other_lengths_are_rolled_up_apart(tmp_path: Path) -> None:
    long = [
        replace(_bucketed(CANARY, 3 * k), end=T0 + timedelta(minutes=15 * (k + 1)))
        for k in range(2)
    ]
    append_metrics(tmp_path, ION, [*(_bucketed(CANARY, n) for n in range(6)), *long])
    got = read_metrics(tmp_path, ION)
    assert sorted((w.step, w.rolled) for w in got) == [
        (timedelta(minutes=5), 6),
        (timedelta(minutes=15), 2),
    ]


def test_a_roll_up_goes_to_the_file_of_its_end(tmp_path: Path) -> None:
    late = datetime(2026, 5, 1, 23, 45, tzinfo=UTC)
    append_metrics(tmp_path, ION, [_window(CANARY, n, at=late) for n in range(6)])
    files = sorted(state_dir(tmp_path, ION).glob("*.jsonl"))
    assert [p.name for p in files] == ["windows-2026-05-02.c0edb7.jsonl"]
    (one,) = read_metrics(tmp_path, ION, since=datetime(2026, 5, 2, tzinfo=UTC))
    assert one.start == late and one.rolled == 6


def test_per_window_lines_and_roll_ups_read_together(tmp_path: Path) -> None:
    path = metrics_path(tmp_path, ION, T0)
    path.parent.mkdir(parents=True)
    # Lines an older version wrote (one per window), then a union merge brings a roll-up
    # of the same windows: each window is read once.
    append_metrics(tmp_path, ION, [_window(CANARY, 0)])
    append_metrics(tmp_path, ION, [_window(CANARY, 1)])
    rolled = tmp_path / "rolled"
    append_metrics(rolled, ION, [_window(CANARY, n) for n in range(3)])
    merged = path.read_text(encoding="utf-8") + metrics_path(rolled, ION, T0).read_text(
        encoding="utf-8"
    )
    path.write_text(merged, encoding="utf-8")
    (one,) = read_metrics(tmp_path, ION)
    assert one.rolled == 3 and one.requests == sum(_window(CANARY, n).requests for n in range(3))


def test_old_metrics_months_are_pruned(tmp_path: Path) -> None:
    old = state_dir(tmp_path, ION) / "metrics" / "2026-01.jsonl"
    old.parent.mkdir(parents=True)
    old.write_text("{}\n", encoding="utf-8")  # a month file of an older version
    write_status(tmp_path, ION, _status())
    append_events(tmp_path, ION, [_event(0)])
    # Named like nothing this version writes: never pruned (nor read as metrics).
    others = ["windows-2026-01.jsonl", "windows-2026-01-02.jsonl", "2026-01-02.abcdef.jsonl"]
    for name in others:
        (state_dir(tmp_path, ION) / name).write_text("{}\n", encoding="utf-8")
    for month in range(1, 7):
        for day in (2, 3):
            at = datetime(2026, month, day, tzinfo=UTC)
            append_metrics(tmp_path, ION, [_window(CANARY, 0, at=at)])
    names = sorted(p.name for p in state_dir(tmp_path, ION).iterdir())
    assert names == sorted(
        ["events.jsonl", "metrics", "status.yaml", *others]
        + [_day_file(f"2026-0{m}-0{d}") for m in (4, 5, 6) for d in (2, 3)]
    )
    assert not any((state_dir(tmp_path, ION) / "metrics").iterdir())
    assert read_events(tmp_path, ION) == [_event(0)]
    assert read_status(tmp_path, ION) == _status()


def _day_file(day: str) -> str:
    """The name of ION's day file of `day` (`YYYY-MM-DD`)."""
    return f"windows-{day}.{state.day_file_hash(ION, day)}.jsonl"


def _old_hashed_day_file(day: str) -> str:
    """The name an older version gave ION's day file of `day` in `metrics/`."""
    return f"{day}.{state.day_file_hash(ION, day)}.jsonl"


@pytest.mark.parametrize(
    ("project", "region", "service", "day", "digits"),
    [
        ("naeda-genesis", "us-central1", "ion-api", "2026-05-01", "6bfbca"),
        ("naeda-genesis", "us-central1", "ion-api", "2026-05-02", "c0edb7"),
        ("naeda-genesis", "europe-west1", "ion-api", "2026-05-01", "f21584"),
        ("other-project", "us-central1", "ion-api", "2026-05-01", "4a48e5"),
    ],
    ids=["ion-api", "next-day", "another-region", "another-project"],
)
def test_a_day_file_is_named_by_its_day_and_a_stable_hash(
    tmp_path: Path, project: str, region: str, service: str, day: str, digits: str
) -> None:
    # Pinned: a new hash for the same rollout and day would start a second file that day.
    rollout = ServiceRef(project, region, service)
    assert state.day_file_hash(rollout, day) == digits
    path = metrics_path(tmp_path, rollout, datetime.fromisoformat(day).replace(tzinfo=UTC))
    assert path.relative_to(tmp_path).as_posix() == (
        f"state/{project}/{region}/{service}/windows-{day}.{digits}.jsonl"
    )


def _name_hash(path: str) -> int:
    """git's 32-bit name hash of a path (pack-objects sorts delta candidates by it): each
    character enters at the top, shifted down two bits per later one, whitespace skipped."""
    value = 0
    for c in path.encode():
        if not chr(c).isspace():
            value = ((value >> 2) + (c << 24)) & 0xFFFFFFFF
    return value


def test_day_files_look_different_to_gits_delta_search(tmp_path: Path) -> None:
    refs = [ServiceRef("bench-project", "us-central1", f"svc-{i:04d}") for i in range(1000)]

    def hashes(refs: list[ServiceRef], days: int) -> Counter[int]:
        return Counter(
            _name_hash(
                metrics_path(tmp_path, r, T0 + timedelta(days=d)).relative_to(tmp_path).as_posix()
            )
            for r in refs
            for d in range(days)
        )

    # One day's files of 1,000 rollouts: at most two to a hash (the date alone gave all
    # 1,000 one hash); 20 rollouts' files over three months: at most two to a hash too,
    # so a repack from scratch finds each file's versions next to each other.
    assert len(hashes(refs, 1)) > 950 and max(hashes(refs, 1).values()) <= 2
    assert max(hashes(refs[:20], 92).values()) <= 2
    undistinguished = {_name_hash(f"state/{r.key}/metrics/2026-05-01.jsonl") for r in refs}
    assert len(undistinguished) == 1


def _old_day_file(root: Path, windows: list[WindowStats]) -> Path:
    """The windows as an older version wrote them: one line each, a day file without a hash
    in `metrics/`."""
    elsewhere = root / "old-version"
    for w in windows:
        (path,) = append_metrics(elsewhere, ION, [w])
    day = path.name.removeprefix("windows-").split(".")[0]
    old = state_dir(root, ION) / "metrics" / f"{day}.jsonl"
    old.parent.mkdir(parents=True, exist_ok=True)
    old.write_bytes(path.read_bytes())
    return old


def _new_lines(root: Path, windows: list[WindowStats]) -> bytes:
    """The bytes this version writes for `windows` (one record), elsewhere than `root`."""
    elsewhere = root / f"record-{len(list(root.glob('record-*')))}"
    (path,) = append_metrics(elsewhere, ION, windows)
    return path.read_bytes()


def test_a_day_split_across_the_old_and_the_new_name_is_read_once(tmp_path: Path) -> None:
    # The day of an upgrade: an older version wrote the morning to metrics/2026-05-01.jsonl,
    # this one appends to windows-2026-05-01.<hash>.jsonl; a run repeated after a failed push
    # measures the morning's last window again, which must not be written a second time.
    old = _old_day_file(tmp_path, [_window(CANARY, n) for n in range(3)])
    assert old.name == "2026-05-01.jsonl"
    (new,) = append_metrics(tmp_path, ION, [_window(CANARY, n) for n in range(2, 5)])
    assert new.name == _day_file("2026-05-01")
    assert len(new.read_text(encoding="utf-8").splitlines()) == 1  # windows 3 and 4, rolled
    got = read_metrics(tmp_path, ION)
    assert sum(w.requests for w in got) == sum(_window(CANARY, n).requests for n in range(5))
    assert [(w.start, w.rolled) for w in got] == [
        (T0 + timedelta(minutes=5 * n), 1) for n in range(3)
    ] + [(T0 + timedelta(minutes=15), 2)]
    since = T0 + timedelta(minutes=12)
    assert [w.start for w in read_metrics(tmp_path, ION, since=since)] == [
        T0 + timedelta(minutes=10),
        T0 + timedelta(minutes=15),
    ]
    # The same lines in both files (copied by hand, or merged twice): still read once.
    new.write_text(new.read_text(encoding="utf-8") + old.read_text(encoding="utf-8"))
    assert read_metrics(tmp_path, ION) == got


def test_a_day_split_across_metrics_and_the_service_folder_is_read_once(tmp_path: Path) -> None:
    # The day of this upgrade: the previous version recorded the morning, rolled up, in
    # metrics/<day>.<hash>.jsonl; this one appends beside status.yaml. A run repeated after a
    # failed push measures the morning again: only what is not recorded in either is written.
    old = state_dir(tmp_path, ION) / "metrics" / _old_hashed_day_file("2026-05-01")
    old.parent.mkdir(parents=True)
    old.write_bytes(_new_lines(tmp_path, [_window(CANARY, n) for n in range(3)]))
    before = old.read_bytes()
    (new,) = append_metrics(tmp_path, ION, [_window(CANARY, n) for n in range(5)])
    assert new == metrics_path(tmp_path, ION, T0) and new.parent == state_dir(tmp_path, ION)
    assert len(new.read_text(encoding="utf-8").splitlines()) == 1  # windows 3 and 4, rolled
    assert old.read_bytes() == before  # never rewritten, moved or appended to
    got = read_metrics(tmp_path, ION)
    assert [(w.start, w.rolled) for w in got] == [(T0, 3), (T0 + timedelta(minutes=15), 2)]
    assert sum(w.requests for w in got) == sum(_window(CANARY, n).requests for n in range(5))
    assert append_metrics(tmp_path, ION, [_window(CANARY, n) for n in range(5)]) == []
    # The same lines in both places (a union merge of a clone still on the older version):
    # each window is still read once.
    new.write_text(new.read_text(encoding="utf-8") + old.read_text(encoding="utf-8"))
    old.write_text(old.read_text(encoding="utf-8") + new.read_text(encoding="utf-8"))
    assert read_metrics(tmp_path, ION) == got


def test_old_day_files_are_pruned_with_their_month(tmp_path: Path) -> None:
    _old_day_file(tmp_path, [_window(CANARY, 0, at=datetime(2026, 1, 5, tzinfo=UTC))])
    older = state_dir(tmp_path, ION) / "metrics"
    unknown = older / "notes.jsonl"
    unknown.write_text("{}\n", encoding="utf-8")
    for month in (2, 3):  # what the previous version wrote in `metrics/`, one file a month
        (older / _old_hashed_day_file(f"2026-0{month}-02")).write_bytes(
            _new_lines(tmp_path, [_window(CANARY, 0, at=datetime(2026, month, 2, tzinfo=UTC))])
        )
    for month in range(4, 6):
        append_metrics(tmp_path, ION, [_window(CANARY, 0, at=datetime(2026, month, 2, tzinfo=UTC))])
    # The months of both places count: February and January are beyond the newest three.
    assert sorted(p.name for p in older.iterdir()) == [
        _old_hashed_day_file("2026-03-02"),
        "notes.jsonl",
    ]
    assert sorted(p.name for p in state_dir(tmp_path, ION).glob("windows-*")) == [
        _day_file(f"2026-0{m}-02") for m in (4, 5)
    ]
    assert [w.start.month for w in read_metrics(tmp_path, ION)] == [3, 4, 5]


def test_metrics_of_another_service_are_refused(tmp_path: Path) -> None:
    with pytest.raises(
        ValueError,
        match=f"window of other appended to the metrics of {ION.key}",
    ):
        append_metrics(tmp_path, ION, [_window(CANARY, 0, service="other")])


# --- paths and atomic writes ----------------------------------------------------------------
BAD_NAMES = ["..", "../x", "a/b", "/etc", "", ".", "Ion-Api", "a" * 50, "x-", "-x", "a\x00", "a b"]


@pytest.mark.parametrize("name", BAD_NAMES, ids=[repr(n) for n in BAD_NAMES])
@pytest.mark.parametrize("part", ["service", "region", "project"])
def test_ids_cannot_escape_state(name: str, part: str, tmp_path: Path) -> None:
    bad = replace(ION, **{part: name})
    what = {"service": "Cloud Run service id", "region": "Cloud Run region"}
    with pytest.raises(StateError, match=f"not a valid {what.get(part, 'GCP project id')}"):
        state_dir(tmp_path, bad)
    with pytest.raises(StateError):
        append_events(tmp_path, bad, [])
    assert not (tmp_path / "state").exists()


def test_the_same_service_in_two_regions_keeps_two_histories(tmp_path: Path) -> None:
    europe = ref("ion-api", region="europe-west1")
    write_status(tmp_path, ION, _status())
    write_status(tmp_path, europe, _status(generation=99))
    assert read_status(tmp_path, ION) == _status()
    assert read_status(tmp_path, europe) == _status(generation=99)
    assert state_refs(tmp_path) == [europe, ION]
    with pytest.raises(ValueError, match=r"ion-api written as the status of .*/other"):
        write_status(tmp_path, ref("other"), _status())


def test_atomic_write_leaves_no_temporary_files(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "dir" / "f.txt"
    atomic_write_text(path, "one\n")
    atomic_write_text(path, "two\n")
    assert path.read_bytes() == b"two\n"
    assert os.listdir(path.parent) == ["f.txt"]
    assert path.stat().st_mode & 0o777 == 0o644


def test_a_failed_write_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "status.yaml"
    atomic_write_text(path, "old\n")

    def no_rename(src: str, dst: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", no_rename)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_text(path, "new\n")
    assert path.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["status.yaml"]


def test_time_format_round_trips() -> None:
    when = datetime(2026, 5, 1, 21, 0, 0, 123456, tzinfo=timezone(timedelta(hours=9)))
    assert format_time(when) == "2026-05-01T12:00:00.123456Z"
    assert parse_time(format_time(when)) == when
    with pytest.raises(ValueError, match="no zone"):
        parse_time("2026-05-01T12:00:00")


@pytest.mark.parametrize(
    "text",
    [
        "a: text\nb: 12\nc: -3\nd: 0\ne: null\nf: ~\ng: true\nh: False\ni: 'quoted'\n",
        "octal: 010\nhex: 0x1f\nunder: 1_000\nbase60: 1:30\nfloat: 1.5\ninf: .inf\nexp: 1e+3\n",
        "when: 2026-12-07T10:00:00Z\nday: 2026-12-07\nbin: !!binary aGVsbG8=\nyes: yes\n",
        "set: !!set {a, b}\nomap: !!omap [{a: 1}, {b: 2}]\nlist: [1, [2, {x: y}]]\n",
        "base: &b {x: 1, y: [1, 2]}\nsame: *b\nmerged:\n  <<: *b\n  y: 3\n",
        "1: int key\n3.5: float key\nnull: null key\n",
        "a: 1\na: 2\n",
        "",
        "- just\n- a list\n",
        "plain scalar",
    ],
)
def test_status_yaml_reads_as_pyyaml_does(text: str) -> None:
    # The status reader builds common nodes itself; whatever it builds must be what the
    # constructor would (values and types alike).
    fast = state._load_yaml(text)
    slow = yaml.load(text, Loader=state._SafeLoader)
    assert fast == slow
    assert repr(fast) == repr(slow)


def test_a_recursive_alias_in_a_status_file_is_read_not_a_crash() -> None:
    got = state._load_yaml("a: &x [1, *x]\n")
    assert got["a"][1] is got["a"]


def test_service_ref_key_is_one_string_per_rollout() -> None:
    a = ServiceRef("p", "us-central1", "api")
    b = ServiceRef("p", "europe-west1", "api")
    assert a.key == "p/us-central1/api"
    assert a.key != b.key
    assert ServiceRef("p", "us-central1", "api").key == a.key


def test_metrics_are_appended_not_rewritten(tmp_path: Path) -> None:
    # A run costs the same however full the day's file is: the lines already there are never
    # rewritten (a cut line a crash left stays, skipped; the next append starts a new line).
    (path,) = append_metrics(tmp_path, ION, [_window(CANARY, 0)])
    with path.open("a", encoding="utf-8") as fh:
        fh.write('{"cut by a cra')
    before = path.read_bytes()
    append_metrics(tmp_path, ION, [_window(CANARY, 1)])
    after = path.read_bytes()
    assert after.startswith(before)
    assert after[len(before) : len(before) + 1] == b"\n"
    assert read_metrics(tmp_path, ION) == [_window(CANARY, 0), _window(CANARY, 1)]


@pytest.mark.parametrize(
    ("streaks", "newest"),
    [
        ({}, 1),
        ({"error_rate": Streak(0, T0, inconclusive=3)}, 1),
        ({"latency_p95": Streak(1, T0)}, 2),  # a failing reason pools the streak's windows
        ({"probe:health": Streak(2, T0)}, 2),
    ],
    ids=["no-streak", "inconclusive-only", "failing-gate", "failing-probe"],
)
def test_status_keeps_provisional_windows_and_the_newest_final_ones_per_length(
    streaks: dict[str, Streak], newest: int, tmp_path: Path
) -> None:
    five, fifteen = timedelta(minutes=5), timedelta(minutes=15)
    short = [_window(rev, n) for n in range(8) for rev in (CANARY, STABLE)]
    long = [replace(_window(CANARY, 3 * k), end=T0 + fifteen * (k + 1)) for k in range(2)]
    late = replace(_window(CANARY, 8), provisional=True)
    windows = keep_windows([], [*short, *long, late], keep=12)
    write_status(tmp_path, ION, _status(windows=windows, streaks=streaks))
    status = read_status(tmp_path, ION)
    assert status is not None
    kept = sorted((w.revision, w.window, w.start, w.provisional) for w in status.windows)
    at = [T0 + timedelta(minutes=m) for m in (0, 15, 30, 35, 40)]
    expected = [
        (CANARY, fifteen, at[1], False),
        (CANARY, five, at[3], False),
        (CANARY, five, at[4], True),  # measured again by the next run
        (STABLE, five, at[3], False),
    ]
    if newest == 2:
        expected += [(CANARY, fifteen, at[0], False), (CANARY, five, at[2], False)]
        expected += [(STABLE, five, at[2], False)]
    assert kept == sorted(expected)


@pytest.mark.parametrize(
    ("gates", "stable_kept"),
    [
        (("error_rate", "latency_p95"), False),
        (("error_rate", "vs_stable"), True),  # the one gate that reads them back
        ((), True),  # no verdict: nothing says which windows are read, all are kept
    ],
    ids=["no-vs-stable", "vs-stable", "no-verdict"],
)
def test_status_keeps_the_stable_windows_only_when_a_vs_stable_gate_reads_them(
    gates: tuple[str, ...], stable_kept: bool, tmp_path: Path
) -> None:
    verdict = (
        Verdict(
            Outcome.PASS, tuple(GateResult(g, Outcome.PASS, 0.0, 0.05, 1002, "ok") for g in gates)
        )
        if gates
        else None
    )
    provisional = replace(_window(STABLE, 2), provisional=True)
    windows = (_window(STABLE, 1), _window(CANARY, 1), provisional)
    write_status(tmp_path, ION, _status(verdict=verdict, windows=windows))
    status = read_status(tmp_path, ION)
    assert status is not None
    assert status_unread(status) == (None if stable_kept else STABLE)
    kept = {(w.revision, w.provisional) for w in status.windows}
    stable = {(STABLE, False), (STABLE, True)}
    assert kept == ({(CANARY, False)} | stable if stable_kept else {(CANARY, False)})
    # The metrics files keep both revisions whatever status.yaml leaves out.
    append_metrics(tmp_path, ION, windows[:2])
    assert {w.revision for w in read_metrics(tmp_path, ION)} == {STABLE, CANARY}


def test_status_windows_keep_what_the_judge_reads(tmp_path: Path) -> None:
    w = replace(_window(CANARY, 1), p50=0.1234567891, p95=0.2762853674079367, p99=0.9)
    write_status(tmp_path, ION, _status(windows=(w,)))
    text = status_path(tmp_path, ION).read_text(encoding="utf-8")
    block = text[text.index("windows:") : text.index("applied:")]
    assert re.findall(r"^[- ] (\w+):", block, re.M) == [
        "service", "revision", "start", "end", "requests", "errors", "successes",
        "p50", "p95", "p99",
    ]  # fmt: skip
    # Rounded up to six significant digits; p50 and p99 are the metrics files' to keep (the
    # keys stay, so that a previous version reads the file).
    assert "  p50: null\n  p95: 0.276286\n  p99: null\n" in block
    status = read_status(tmp_path, ION)
    assert status is not None
    assert status.windows == (replace(w, p50=None, p95=0.276286, p99=None),)


def test_a_status_written_with_every_window_field_still_reads(tmp_path: Path) -> None:
    # As versions before this one wrote it: the service, derived rates, p50/p95/p99 at full
    # precision, the newest two final windows per revision.
    write_status(tmp_path, ION, _status())
    text = status_path(tmp_path, ION).read_text(encoding="utf-8")
    old = [_window(rev, n) for n in (0, 1) for rev in (STABLE, CANARY)]
    lines = []
    for w in old:
        lines += [
            f"- service: {w.service}",
            f"  revision: {w.revision}",
            f"  start: '{format_time(w.start)}'",
            f"  end: '{format_time(w.end)}'",
            f"  requests: {w.requests}",
            f"  errors: {w.errors}",
            f"  successes: {w.successes}",
            f"  error_rate: {w.errors / w.requests:.4g}",
            f"  success_rate: {w.successes / w.requests:.4g}",
            f"  p50: {w.p50!r}",
            f"  p95: {w.p95!r}",
            f"  p99: {'null' if w.p99 is None else repr(w.p99)}",
        ]
    head, rest = text.split("windows:\n", 1)
    text = head + "windows:\n" + "\n".join(lines) + "\n" + rest[rest.index("applied:") :]
    status_path(tmp_path, ION).write_text(text, encoding="utf-8")
    assert read_status(tmp_path, ION) == _status(windows=tuple(old))
    assert state.load_status(tmp_path, ION).problem is None


# --- distributions in metrics lines ---------------------------------------------------------
def _layout(k: int) -> float:
    """Cloud Monitoring's exponential request_latencies layout, in seconds."""
    return 0.001 * 1.4**k


@pytest.mark.parametrize(
    "buckets",
    [
        # busy buckets around 100 ms, with a gap
        [LatencyBucket(_layout(k), _layout(k + 1), 10 * k) for k in (11, 12, 13, 15, 16)],
        # the underflow and overflow buckets too, and an explicit empty bucket
        [
            LatencyBucket(0.0, _layout(0), 3),
            LatencyBucket(_layout(0), _layout(1), 0),
            LatencyBucket(_layout(4), _layout(5), 7),
            LatencyBucket(_layout(39), None, 2),
        ],
        [LatencyBucket(0.0, 0.5, 4), LatencyBucket(0.5, 1.0, 6)],  # a layout of two: `g`
    ],
)
def test_a_geometric_distribution_is_written_by_its_layout(
    tmp_path: Path, buckets: list[LatencyBucket]
) -> None:
    window = replace(_window(CANARY, 1), latency_buckets=tuple(buckets))
    (path,) = append_metrics(tmp_path, ION, [window])
    line = path.read_text()
    assert '"g":[' in line and '"b":' not in line
    (back,) = read_metrics(tmp_path, ION)
    assert back.latency_buckets is not None
    assert [b.count for b in back.latency_buckets] == [b.count for b in buckets]
    for got, want in zip(back.latency_buckets, buckets, strict=True):
        assert got.lower == pytest.approx(want.lower, rel=1e-9, abs=0)
        assert (got.upper is None) == (want.upper is None)
        if want.upper is not None:
            assert got.upper == pytest.approx(want.upper, rel=1e-9)


def test_a_geometric_line_is_several_times_shorter() -> None:
    buckets = tuple(LatencyBucket(_layout(k), _layout(k + 1), 100 + k) for k in range(8, 22))
    window = replace(_window(CANARY, 1), latency_buckets=buckets)
    compact = len(state._json_line(state._metric_to_data(window)))
    listed = len(
        state._json_line(
            state._metric_to_data(window) | {"b": [[b.lower, b.upper, b.count] for b in buckets]}
        )
    )
    assert compact * 3 < listed


@pytest.mark.parametrize(
    "buckets",
    [
        [LatencyBucket(0.1, 0.2, 1), LatencyBucket(0.2, 0.5, 1)],  # not one growth
        [LatencyBucket(0.2, 0.4, 1), LatencyBucket(0.1, 0.2, 1)],  # out of order
        [LatencyBucket(0.0, 0.1, 1), LatencyBucket(0.1, None, 1)],  # no bucket gives a growth
        [LatencyBucket(0.1, 0.2, 1), LatencyBucket(0.15, 0.3, 1)],  # overlapping
    ],
)
def test_any_other_distribution_keeps_its_bounds(
    tmp_path: Path, buckets: list[LatencyBucket]
) -> None:
    window = replace(_window(CANARY, 1), latency_buckets=tuple(buckets))
    (path,) = append_metrics(tmp_path, ION, [window])
    assert '"b":[' in path.read_text() and '"g":' not in path.read_text()
    (back,) = read_metrics(tmp_path, ION)
    assert back.latency_buckets == tuple(buckets)


@pytest.mark.parametrize(
    "g",
    ['[0.1,2,0,[1]]', '[0,2,0,[1],null,null]', '[0.1,1,0,[1],null,null]', '[0.1,2,0,5,null,null]',
     '[0.1,2,0,[1],[3],null]'],
)  # fmt: skip
def test_a_bad_geometric_distribution_is_skipped_and_named(
    tmp_path: Path, g: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = metrics_path(tmp_path, ION, T0)
    path.parent.mkdir(parents=True)
    path.write_text('{"r":"00042-xyz","e":1777637400,"w":300,"n":1,"x":0,"k":1,"g":' + g + "}\n")
    assert read_metrics(tmp_path, ION) == []
    assert f"{path}:1: invalid metrics line skipped" in caplog.text


@pytest.mark.parametrize(("name", "status"), STATUSES)
def test_status_text_is_the_representer_s_bytes(name: str, status: ServiceStatus) -> None:
    data = state._scrubbed(state._status_to_data(status))
    assert state.status_text(status) == emitter_text(data)


def test_a_usual_status_is_written_without_the_emitter() -> None:
    # The fast path is taken for ordinary statuses (the test above then compares it).
    plain = [s for name, s in STATUSES if "\u2028" not in state.status_text(s)]
    assert plain
    for status in plain:
        data = state._status_to_data(status)
        assert blockyaml.text(data, state._scalar_tag, redact.scrub) is not None


def test_status_nodes_are_the_representer_s_for_random_data() -> None:
    # Keys and values a state file can hold, and ones that resolve to other types when plain.
    import random

    rng = random.Random(15)
    words = [
        *["null", "true", "No", "~", "1e3", "0x1f", "1_000", "2026-12-07", "12:30", "-", ""],
        *["a: b", "# x", "'q'", '"d"', "ion-api", "é", "x\u2028y", "a\nb", "tab\tx", " lead"],
        *["trail ", "[x]", "{y}", "&a", "*b", "!t", "%p", "@", "`", "? k", "1.5", ".inf"],
    ]

    def value(depth: int) -> Any:
        pick = rng.randrange(12 if depth < 4 else 8)
        if pick < 3:
            return rng.choice(words) + rng.choice(["", "", " " + "long " * rng.randrange(30)])
        if pick == 3:
            return rng.choice([0, -1, 7, 2**70, True, False, None])
        if pick == 4:
            return rng.choice([0.0, -0.0, 0.1, 1e20, 1e-7, float("inf"), float("nan"), 2.5])
        if pick == 5:
            return T0 + timedelta(seconds=rng.randrange(10**6))  # the representer's path
        if pick < 8:
            return rng.choice(words)
        if pick < 10:
            return [value(depth + 1) for _ in range(rng.randrange(4))]
        return {rng.choice(words) + str(i): value(depth + 1) for i in range(rng.randrange(4))}

    for _ in range(300):
        data = {"k": value(0), "l": [value(1) for _ in range(3)]}
        assert state._yaml_text(data) == emitter_text(data)


# --- a recorded p95 judged again ------------------------------------------------------------
def _judged_again(p95: float, limit: str, tmp_path: Path) -> tuple[tuple[Any, ...], ...]:
    """The latency gate's outcome and target, judged on a canary window as measured and as
    status.yaml gives it back to the next run."""
    gates = Gates.model_validate(
        {"latency_p95": {"max": limit, "target": limit}, "consecutive_failures": 1}
    )
    measured = replace(_window(CANARY, 1), p95=p95)
    write_status(tmp_path, ION, _status(windows=(measured,)))
    status = read_status(tmp_path, ION)
    assert status is not None
    (recorded,) = status.windows
    out = []
    for w in (measured, recorded):
        (gate,) = judge([w], gates).gates
        out.append((gate.outcome, gate.target_met))
    return tuple(out)


# Relative offsets from the threshold, and the float next to it on either side.
OFFSETS = [-1e-3, -1e-5, -1e-7, "below", 0.0, "above", 1e-7, 1e-5, 1e-3]


def _near(threshold: float, offset: float | str) -> float:
    if offset == "below":
        return math.nextafter(threshold, 0.0)
    if offset == "above":
        return math.nextafter(threshold, math.inf)
    assert isinstance(offset, float)
    return threshold * (1 + offset)


@pytest.mark.parametrize("offset", OFFSETS, ids=str)
@pytest.mark.parametrize("limit", ["20s", "15s", "500ms", "300ms", "250ms", "1.5s", "2m"])
def test_a_recorded_p95_gives_the_verdict_its_measurement_gave(
    limit: str, offset: float | str, tmp_path: Path
) -> None:
    # A threshold that parses to the float of a number of at most six significant digits
    # (the usual ones): the p95 rounded up to six digits is judged exactly as measured,
    # however close to it.
    threshold = parse_latency(limit)
    assert threshold == float(f"{threshold:.6g}")
    measured, recorded = _judged_again(_near(threshold, offset), limit, tmp_path)
    assert recorded == measured


@pytest.mark.parametrize("offset", OFFSETS, ids=str)
@pytest.mark.parametrize("limit", ["123.456ms", "123.4567891ms"])
def test_a_recorded_p95_never_hides_a_breach_of_any_threshold(
    limit: str, offset: float | str, tmp_path: Path
) -> None:
    # Any other threshold (more digits than the p95 keeps, or a float just above its
    # decimal: 123.456ms parses to 0.12345600000000001): a failing window still fails; a
    # passing one can read as failing only within the documented bound (1e-5 relative).
    threshold = parse_latency(limit)
    p95 = _near(threshold, offset)
    measured, recorded = _judged_again(p95, limit, tmp_path)
    if measured[0] is Outcome.FAIL or p95 < threshold * (1 - 1e-5):
        assert recorded == measured
    else:
        assert recorded in (measured, (Outcome.FAIL, False))


def test_a_file_named_without_a_folder_is_written_in_the_current_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `plan --out plan.json` names a file relative to where it runs.
    monkeypatch.chdir(tmp_path)
    state.atomic_write_text(Path("plan.json"), "{}\n")
    state.append_lines(Path("lines.jsonl"), ["{}"])
    assert (tmp_path / "plan.json").read_text() == "{}\n"
    assert (tmp_path / "lines.jsonl").read_text() == "{}\n"
