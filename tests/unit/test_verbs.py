"""What each operator verb may write in which phase: the pure rules of `verbs`, as tables."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from reconciler import verbs
from reconciler.decide import decide
from reconciler.model import GateResult, Outcome, Phase, ServiceRef, Target, Verdict
from reconciler.plan import Reason
from reconciler.verbs import FileRollouts, VerbError
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


THREE = [["us-central1"], ["europe-west1", "asia-northeast1"]]
RETRY_REGIONS = [
    # id, spec overrides, reason, regions -> values or error part
    (
        "one-region-of-two-keeps-the-other-entry",
        {
            "waves": THREE,
            "rolled_back_regions": {"europe-west1": RB, "asia-northeast1": RB},
        },
        "fixed",
        ["europe-west1"],
        {"rolled_back_regions.europe-west1": None},
    ),
    (
        "the-last-entry-removes-the-key",
        {"waves": THREE, "rolled_back_regions": {"europe-west1": RB}},
        "fixed",
        ["europe-west1"],
        {"rolled_back_regions": None},
    ),
    (
        "a-region-not-rolled-back",
        {"waves": THREE, "rolled_back_regions": {"europe-west1": RB}},
        "fixed",
        ["asia-northeast1"],
        "asia-northeast1 not rolled back \\(rolled back: europe-west1\\)",
    ),
    (
        "the-same-canary-needs-a-reason",
        {"waves": THREE, "rolled_back_regions": {"europe-west1": RB}},
        None,
        ["europe-west1"],
        "pass --reason",
    ),
    (
        "the-file-wide-block-is-not-a-region-s",
        {"waves": THREE, "canary_percent": 0, "rolled_back": RB},
        "fixed",
        ["europe-west1"],
        "the whole file's .*retry it without --region",
    ),
]


@pytest.mark.parametrize(
    ("over", "reason", "regions", "expected"),
    [c[1:] for c in RETRY_REGIONS],
    ids=[c[0] for c in RETRY_REGIONS],
)
def test_retry_of_some_regions_of_a_file_with_waves(
    over: dict[str, Any], reason: str | None, regions: list[str], expected: Any
) -> None:
    spec = make_spec(**over)
    if isinstance(expected, str):
        with pytest.raises(VerbError, match=expected):
            verbs.retry(spec, reason, regions)
    else:
        edit = verbs.retry(spec, reason, regions)
        assert dict(edit.values) == expected
        assert "europe-west1" in edit.summary


# --- which rollouts of a service id a verb acts on -----------------------------------------------
def _ref(region: str, project: str = "naeda-genesis") -> ServiceRef:
    return ServiceRef(project, region, "ion-api")


US, EU, ASIA = _ref("us-central1"), _ref("europe-west1"), _ref("asia-northeast1")
PER_REGION = [FileRollouts("us/ion-api.yaml", (US,)), FileRollouts("eu/ion-api.yaml", (EU,))]
WAVES = [FileRollouts("ion-api.yaml", (US, EU, ASIA))]
MIXED = [FileRollouts("ion-api.yaml", (US, EU)), FileRollouts("asia/ion-api.yaml", (ASIA,))]
PROJECTS = [
    FileRollouts("a/ion-api.yaml", (_ref("us-central1", "proj-a"),)),
    FileRollouts("b/ion-api.yaml", (_ref("us-central1", "proj-b"),)),
]

ONE_FILE = [
    # id, files, --region, --project, per_region -> (file, regions) or error text
    (
        "one-file-needs-nothing",
        [FileRollouts("ion-api.yaml", (US,))],
        [],
        None,
        False,
        ("ion-api.yaml", ["us-central1"]),
    ),
    (
        "two-files-are-refused-listing-the-regions",
        PER_REGION,
        [],
        None,
        False,
        "ion-api is in 2 regions: us-central1, europe-west1; pass --region",
    ),
    (
        "region-picks-its-file",
        PER_REGION,
        ["europe-west1"],
        None,
        False,
        ("eu/ion-api.yaml", ["europe-west1"]),
    ),
    (
        "an-unknown-region-lists-the-known",
        PER_REGION,
        ["asia-northeast1"],
        None,
        False,
        "ion-api: no rollout in region asia-northeast1 (its rollouts: us-central1, europe-west1)",
    ),
    (
        "a-file-with-waves-is-one-file",
        WAVES,
        [],
        None,
        False,
        ("ion-api.yaml", ["us-central1", "europe-west1", "asia-northeast1"]),
    ),
    (
        "some-regions-of-waves-are-refused-for-a-file-wide-verb",
        WAVES,
        ["europe-west1"],
        None,
        False,
        "ion-api.yaml: pause edits the whole file, whose waves roll ion-api out in us-central1, "
        "europe-west1, asia-northeast1 together; it cannot act on europe-west1 alone",
    ),
    (
        "some-regions-of-waves-for-a-per-region-verb",
        WAVES,
        ["europe-west1"],
        None,
        True,
        ("ion-api.yaml", ["europe-west1"]),
    ),
    (
        "waves-and-a-file-need-every-region-of-the-waves",
        MIXED,
        ["us-central1", "europe-west1"],
        None,
        False,
        ("ion-api.yaml", ["us-central1", "europe-west1"]),
    ),
    (
        "waves-and-a-file-are-refused-without-region",
        MIXED,
        [],
        None,
        False,
        "ion-api is in 3 regions: us-central1, europe-west1, asia-northeast1; pass --region",
    ),
    (
        "two-projects-one-region-need-project",
        PROJECTS,
        [],
        None,
        False,
        "ion-api is in 2 projects: proj-a/us-central1/ion-api, proj-b/us-central1/ion-api; "
        "pass --project",
    ),
    ("project-picks-its-file", PROJECTS, [], "proj-b", False, ("b/ion-api.yaml", ["us-central1"])),
    (
        "an-unknown-project-lists-the-rollouts",
        PROJECTS,
        [],
        "proj-c",
        False,
        "no rollout in project proj-c (its rollouts: proj-a/us-central1/ion-api, "
        "proj-b/us-central1/ion-api)",
    ),
]


@pytest.mark.parametrize(
    ("files", "regions", "project", "per_region", "expected"),
    [c[1:] for c in ONE_FILE],
    ids=[c[0] for c in ONE_FILE],
)
def test_one_file_picks_the_file_a_verb_edits_or_refuses_in_one_line(
    files: list[FileRollouts],
    regions: list[str],
    project: str | None,
    per_region: bool,
    expected: Any,
) -> None:
    def chosen() -> FileRollouts:
        picked = verbs.pick("ion-api", files, regions, project)
        return verbs.one_file("ion-api", "pause", picked, files, per_region=per_region)

    if isinstance(expected, str):
        with pytest.raises(VerbError) as err:
            chosen()
        assert expected in str(err.value)
        assert "\n" not in str(err.value)
    else:
        got = chosen()
        assert (got.file, [r.region for r in got.refs]) == expected


def test_pick_chooses_every_rollout_by_default_and_the_named_ones_otherwise() -> None:
    assert verbs.pick("ion-api", MIXED) == MIXED
    assert verbs.pick("ion-api", MIXED, ["asia-northeast1", "europe-west1"]) == [
        FileRollouts("ion-api.yaml", (EU,)),
        FileRollouts("asia/ion-api.yaml", (ASIA,)),
    ]
    with pytest.raises(VerbError, match="no rollout in region mars-1"):
        verbs.pick("ion-api", MIXED, ["europe-west1", "mars-1"])


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
