"""What each operator verb may write in which phase: the pure rules of `verbs`, as tables."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from reconciler import verbs
from reconciler.decide import decide
from reconciler.model import GateResult, Outcome, Phase, Target, Verdict
from reconciler.plan import Reason
from reconciler.verbs import VerbError
from tests.unit.test_decide import (
    ALL_STABLE,
    AT_5,
    CANARY,
    NOW,
    OTHER,
    STABLE,
    T0,
    live_with,
    make_spec,
    status_at,
    win,
)

PASSING = Verdict(Outcome.PASS, (GateResult("error_rate", Outcome.PASS, 0.01, 0.05, 900, "1%"),))
FAILING = Verdict(Outcome.FAIL, (GateResult("error_rate", Outcome.FAIL, 0.09, 0.05, 900, "9%"),))
BAKED = {"passing_since": T0, "verdict": PASSING}  # passing for 1h at bake 1h
RB = {"revision": CANARY, "at": "2026-11-26T11:00:00Z", "reason": "5xx"}

PROMOTE = [
    # id, spec overrides, status overrides (None: no state/), kwargs -> values or error part
    ("baked-next-stage", {}, BAKED, {}, {"canary_percent": 10}),
    ("first-stage-needs-no-bake", {"canary_percent": 0}, None, {}, {"canary_percent": 5}),
    (
        "bake-not-passed",
        {},
        {"passing_since": NOW - timedelta(minutes=10), "verdict": PASSING},
        {},
        "has not passed its gates for bake 1h",
    ),
    ("never-passing", {}, {}, {}, "passing: never"),
    ("gates-failing", {}, {"passing_since": T0, "verdict": FAILING}, {}, "gates: failing: 9%"),
    ("no-state", {}, None, {}, "not live yet (no state recorded)"),
    ("stage-not-applied-yet", {"canary_percent": 10}, {}, {}, "not live yet (live stage 5%)"),
    ("force-skips-bake", {}, {}, {"force": True}, {"canary_percent": 10, "force": True}),
    ("to-skips-a-stage", {}, BAKED, {"to": 50}, "skips stage 10%"),
    ("to-forced", {}, {}, {"to": 50, "force": True}, {"canary_percent": 50, "force": True}),
    ("full-forced", {}, {}, {"full": True, "force": True}, {"canary_percent": 100, "force": True}),
    ("to-not-a-stage", {}, BAKED, {"to": 30}, "30% is not one of the stages"),
    ("to-below", {"canary_percent": 25}, BAKED, {"to": 10}, "not above the current stage"),
    ("to-and-full", {}, BAKED, {"to": 50, "full": True}, "exclusive"),
    ("at-100", {"canary_percent": 100}, BAKED, {}, "already at 100%"),
    ("no-canary", {"revisions": {"stable": STABLE}, "canary_percent": 0}, None, {}, "no canary"),
    (
        "rolled-back",
        {"canary_percent": 0, "rolled_back": RB},
        None,
        {"force": True},
        "was rolled back",
    ),
    ("paused", {"paused": True}, BAKED, {}, "paused; reconcile resume first"),
]


@pytest.mark.parametrize(
    ("over", "status", "kwargs", "expected"),
    [c[1:] for c in PROMOTE],
    ids=[c[0] for c in PROMOTE],
)
def test_promote_rules(
    over: dict[str, Any], status: dict[str, Any] | None, kwargs: dict[str, Any], expected: Any
) -> None:
    spec = make_spec(**over)
    st = None if status is None else status_at(AT_5, **status)
    if isinstance(expected, str):
        with pytest.raises(VerbError, match=expected.replace("(", r"\(").replace(")", r"\)")):
            verbs.promote(spec, st, now=NOW, **kwargs)
    else:
        assert dict(verbs.promote(spec, st, now=NOW, **kwargs).values) == expected


def test_pause_and_resume_are_idempotent_edits() -> None:
    assert verbs.pause(make_spec()).values == {"paused": True}  # type: ignore[union-attr]
    assert verbs.pause(make_spec(paused=True)) is None
    assert verbs.resume(make_spec(paused=True)).values == {"paused": None}  # type: ignore[union-attr]
    assert verbs.resume(make_spec()) is None


RETRY = [
    (
        "new-canary-clears-stale-block",
        {"rolled_back": {**RB, "revision": OTHER}},
        None,
        {"rolled_back": None},
    ),
    ("same-canary-needs-a-reason", {"canary_percent": 0, "rolled_back": RB}, None, "pass --reason"),
    (
        "same-canary-with-reason",
        {"canary_percent": 0, "rolled_back": RB},
        "dependency fixed",
        {"rolled_back": None},
    ),
    ("nothing-to-clear", {}, "x", "no rolled_back block"),
    (
        "waves-region-needs-a-reason",
        {"waves": [["us-central1"], ["europe-west1"]], "rolled_back_regions": {"europe-west1": RB}},
        None,
        "rolled back in europe-west1 \\(5xx\\); name a new canary, or pass --reason",
    ),
    (
        "waves-region-with-reason-lifts-the-hold",
        {"waves": [["us-central1"], ["europe-west1"]], "rolled_back_regions": {"europe-west1": RB}},
        "dependency fixed",
        {"rolled_back_regions": None},
    ),
    (
        "waves-stale-entries-cleared",
        {
            "waves": [["us-central1"], ["europe-west1"]],
            "rolled_back_regions": {"europe-west1": {**RB, "revision": OTHER}},
        },
        None,
        {"rolled_back_regions": None},
    ),
]


@pytest.mark.parametrize(
    ("over", "reason", "expected"), [c[1:] for c in RETRY], ids=[c[0] for c in RETRY]
)
def test_retry_rules(over: dict[str, Any], reason: str | None, expected: Any) -> None:
    spec = make_spec(**over)
    if isinstance(expected, str):
        with pytest.raises(VerbError, match=expected):
            verbs.retry(spec, reason)
    else:
        assert dict(verbs.retry(spec, reason).values) == expected


NEW = "ion-api-00043-new"
KNOWN = {STABLE, CANARY, NEW}
START = [
    (
        "no-canary-yet",
        {"revisions": {"stable": STABLE}, "canary_percent": 0},
        NEW,
        {"revisions.canary": NEW, "canary_percent": 5},
    ),
    (
        "after-a-rollback-clears-block-and-pause",
        {"canary_percent": 0, "rolled_back": RB, "paused": True},
        NEW,
        {"revisions.canary": NEW, "canary_percent": 5, "rolled_back": None, "paused": None},
    ),
    ("canary-in-flight", {}, NEW, "is at 5%"),
    (
        "the-stable-revision",
        {"revisions": {"stable": STABLE}, "canary_percent": 0},
        STABLE,
        "already the stable revision",
    ),
    (
        "unknown-revision",
        {"revisions": {"stable": STABLE}, "canary_percent": 0},
        "ion-api-00099-nope",
        "does not exist",
    ),
]


@pytest.mark.parametrize(
    ("over", "revision", "expected"), [c[1:] for c in START], ids=[c[0] for c in START]
)
def test_canary_start_rules(over: dict[str, Any], revision: str, expected: Any) -> None:
    spec = make_spec(**over)
    if isinstance(expected, str):
        with pytest.raises(VerbError, match=expected):
            verbs.canary_start(spec, revision, KNOWN)
    else:
        assert dict(verbs.canary_start(spec, revision, KNOWN).values) == expected


def test_abort_routes_all_to_stable_pauses_and_leaves_no_block() -> None:
    d = verbs.decide_abort(make_spec(), status_at(AT_5), AT_5, now=NOW)
    assert d.plan.after.percents() == {STABLE: 100}
    assert dict(d.edit.values) == {"canary_percent": 0, "paused": True, "force": None}  # type: ignore[union-attr]
    assert d.status.phase is Phase.PAUSED and d.acts
    assert d.commit.trailers["Reconcile-Action"] == "abort"
    with pytest.raises(VerbError, match="no canary"):
        verbs.abort(make_spec(revisions={"stable": STABLE}, canary_percent=0))


PAUSED = [
    # id, spec overrides, live, status overrides, windows -> reason after pause
    ("holds-a-new-stage", {"paused": True, "canary_percent": 10}, AT_5, {}, [], Reason.NONE),
    ("holds-the-first-stage", {"paused": True}, ALL_STABLE, None, [], Reason.NONE),
    (
        "holds-drift-correction",
        {"paused": True},
        live_with(Target(STABLE, 50, "stable"), Target(CANARY, 50, "canary")),
        {},
        [],
        Reason.NONE,
    ),
    (
        "holds-an-advance",
        {"paused": True, "auto_advance": True},
        AT_5,
        {"passing_since": T0},
        [win(0, 1)],
        Reason.NONE,
    ),
    (
        "never-holds-a-rollback",
        {
            "paused": True,
            "gates": {"window": "5m", "consecutive_failures": 1, "error_rate": {"max": "5%"}},
        },
        AT_5,
        {},
        [win(0, 90)],
        Reason.ROLLBACK,
    ),
    (
        "unpaused-still-advances",
        {"auto_advance": True},
        AT_5,
        {"passing_since": T0},
        [win(0, 1)],
        Reason.ADVANCE,
    ),
]


@pytest.mark.parametrize(
    ("over", "live", "status", "windows", "reason"),
    [c[1:] for c in PAUSED],
    ids=[c[0] for c in PAUSED],
)
def test_paused_holds_everything_but_a_rollback(
    over: dict[str, Any], live: Any, status: dict[str, Any] | None, windows: Any, reason: Reason
) -> None:
    spec = make_spec(**over)
    st = None if status is None else status_at(AT_5, **status)
    d = decide(spec, st, live, now=NOW, windows=windows)
    assert d.plan.reason is reason
    if spec.paused and reason is Reason.NONE:
        assert not d.acts and d.blocked is None
        assert any(n.startswith("paused: traffic held at") for n in d.plan.notes)
        assert d.plan.phase is Phase.PAUSED
