"""One tick as a value: the rules of `decide` as tables, each defect of the loop a row."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from reconciler.analysis import promotion_blockers
from reconciler.decide import Decision, decide, decide_rollback, left_alone_plan, missing_env
from reconciler.model import (
    EventKind,
    GateResult,
    LiveService,
    Outcome,
    Phase,
    ProbeRecord,
    ServiceStatus,
    Target,
    Verdict,
    WindowStats,
)
from reconciler.plan import Reason, split_for
from reconciler.spec import RolloutSpec
from tests.builders import CANARY, OTHER, STABLE, live_with, make_spec
from tests.builders import status_at as status

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
T0 = NOW - timedelta(hours=1)
FIVE = timedelta(minutes=5)
TEN = timedelta(minutes=10)


ALL_STABLE = live_with(Target(STABLE, 100, "stable"))
AT_5 = live_with(Target(STABLE, 95, "stable"), Target(CANARY, 5, "canary"))
AT_100 = live_with(Target(STABLE, 0, "stable"), Target(CANARY, 100, "canary"))


def status_at(live: LiveService, **over: Any) -> ServiceStatus:
    """state/ after an earlier run that applied `live` at its stage since T0."""
    applied = {
        "traffic": live.traffic,
        "etag": live.etag,
        "generation": live.generation,
        "observed_generation": live.observed_generation,
        "applied": live.traffic,
    }
    return status(live.traffic.percent_of(CANARY), T0, **{**applied, **over})


def win(i: int, errors: int, *, length: timedelta = FIVE, requests: int = 1000) -> WindowStats:
    start = T0 + i * length
    return WindowStats(
        "ion-api", CANARY, start, start + length, requests, errors, requests - errors, p95=0.3
    )


BAKING = {"passing_since": T0}  # ready to promote for an hour: baked at bake 1h
UNSET = ["chat-smoke: header Authorization reads environment variable CHAT_TOKEN, which is not set"]

CASES = [
    # id, spec overrides, live, status overrides (None: no status), windows, probe runs,
    # config errors -> reason, blocked (substring or None), edit values (None: no edit)
    ("first-stage", {}, ALL_STABLE, None, [], [], [], Reason.STAGE, None, None),
    ("in-sync-passing", {}, AT_5, {}, [win(0, 1)], [], [], Reason.NONE, None, None),
    ("fail-rolls-back", {"gates": {"window": "5m", "consecutive_failures": 1,
                                   "error_rate": {"max": "5%"}}},
     AT_5, {}, [win(0, 90)], [], [], Reason.ROLLBACK, None,
     {"canary_percent": 0, "rolled_back": {
         "revision": CANARY, "at": "2026-11-26T12:00:00Z",
         "reason": "error_rate 9.0% > 5% (1 window, 1,000 requests)"}}),
    ("auto-advance-ready-and-baked", {"auto_advance": True}, AT_5, BAKING, [win(0, 1)], [], [],
     Reason.ADVANCE, None, {"canary_percent": 10}),
    # defect 2: the planner advanced on PASS + bake although a target was missed
    ("defect2-target-missed-holds", {"auto_advance": True, "gates": {
        "window": "5m", "error_rate": {"max": "5%", "target": "1%"}}},
     AT_5, BAKING, [win(0, 30)], [], [], Reason.NONE, None, None),
    # defect 3: the executor removed `force` behind the plan's back
    ("defect3-forced-stage-removes-force", {"canary_percent": 10, "force": True}, AT_5, {}, [],
     [], [], Reason.STAGE, None, {"force": None}),
    ("defect3-forced-advance-removes-force", {"auto_advance": True, "force": True}, AT_5,
     BAKING, [win(0, 1)], [], [], Reason.ADVANCE, None, {"canary_percent": 10, "force": None}),
    ("defect3-forced-finalize-removes-force", {"canary_percent": 100, "force": True}, AT_100,
     {}, [], [], [], Reason.FINALIZE, None,
     {"revisions.stable": CANARY, "revisions.canary": None, "canary_percent": 0,
      "force": None}),
    # defect 4: a new stable moved 95% in one step
    ("defect4-stable-changed-refused", {"revisions": {"stable": OTHER, "canary": CANARY}},
     AT_5, {}, [], [], [], Reason.STAGE, "revisions.stable changed", None),
    ("defect4-stable-changed-forced", {"revisions": {"stable": OTHER, "canary": CANARY},
                                       "force": True},
     AT_5, {}, [], [], [], Reason.STAGE, None, {"force": None}),
    ("defect4-stable-is-canary-at-100",
     {"revisions": {"stable": CANARY}, "canary_percent": 0}, AT_100, {}, [], [], [],
     Reason.STAGE, None, None),
    # defect 5: an unset variable made every probe run fail like a broken canary
    ("defect5-unset-variable-blocks", {"canary_percent": 10}, AT_5, BAKING, [win(0, 1)], [],
     UNSET, Reason.STAGE, "CHAT_TOKEN", None),
    ("defect5-unset-variable-blocks-in-sync", {}, AT_5, {}, [win(0, 1)], [], UNSET,
     Reason.NONE, "CHAT_TOKEN", None),
    # defect 6: drift correction sent traffic back to a canary whose rollback was not recorded
    ("defect6-no-drift-to-rolled-back", {}, ALL_STABLE,
     {"phase": Phase.ROLLED_BACK, "applied": split_for(STABLE, CANARY, 5)}, [], [], [],
     Reason.DRIFT, "was rolled back", None),
    ("drift-healed", {}, live_with(Target(STABLE, 90, "stable"), Target(CANARY, 10, "canary")),
     {"applied": split_for(STABLE, CANARY, 5)}, [], [], [], Reason.DRIFT, None, None),
    # what serves: a requested split that does not serve is a failed rollout, not in sync
    ("requested-not-serving", {}, live_with(
        Target(STABLE, 95, "stable"), Target(CANARY, 5, "canary"),
        requested=split_for(STABLE, CANARY, 10)), {}, [], [], [], Reason.NONE,
     "is not serving", None),
    ("terminal-condition-failed", {}, live_with(
        Target(STABLE, 95, "stable"), Target(CANARY, 5, "canary"),
        failure="Revision ion-api-00042-xyz is not ready"), {}, [], [], [], Reason.NONE,
     "not ready", None),
]  # fmt: skip


@pytest.mark.parametrize(
    ("over", "live", "status", "windows", "probes", "config", "reason", "blocked", "edit"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_decide_rules(
    over: dict[str, Any],
    live: LiveService,
    status: dict[str, Any] | None,
    windows: list[WindowStats],
    probes: list[ProbeRecord],
    config: list[str],
    reason: Reason,
    blocked: str | None,
    edit: dict[str, Any] | None,
) -> None:
    d = decide(
        make_spec(**over),
        None if status is None else status_at(live, **status),
        live,
        now=NOW,
        windows=windows,
        probe_runs=probes,
        config_errors=config,
    )
    assert d.plan.reason is reason
    if blocked is None:
        assert d.blocked is None
    else:
        assert d.blocked is not None and blocked in d.blocked
        assert "\n" not in d.blocked
        assert not d.acts and not d.rollback
    assert (dict(d.edit.values) if d.edit is not None and d.acts else None) == edit


def ticks(spec: RolloutSpec, n: int, errors: int, lengths: Sequence[timedelta]) -> list[Decision]:
    """n runs, five minutes apart, each measuring the windows that just ended (one of every
    length that fits), carrying state/ from one run to the next as the loop does."""
    status: ServiceStatus | None = status_at(AT_5)
    out = []
    for i in range(n):
        now = T0 + (i + 1) * FIVE
        new = [
            win((i + 1) * FIVE // length - 1, errors, length=length)
            for length in lengths
            if (i + 1) * FIVE % length == timedelta(0)
        ]
        d = decide(spec, status, AT_5, now=now, windows=new)
        out.append(d)
        status = d.status if d.acts else d.held
    return out


@pytest.mark.parametrize("needed", [2, 12, 13, 50, 100], ids=lambda n: f"cf{n}")
@pytest.mark.parametrize("two_lengths", [False, True], ids=["one-length", "two-lengths"])
def test_defect1_any_consecutive_failures_rolls_back(needed: int, two_lengths: bool) -> None:
    # 7% errors against a 5% limit; the default loop keeps 12 windows per revision, which
    # made any consecutive_failures above 12 (above 9 with a 10m gate too) never fail.
    gates: dict[str, Any] = {
        "window": "5m",
        "min_requests": 100,
        "consecutive_failures": needed,
        "error_rate": {"max": "5%"},
    }
    if two_lengths:
        gates["latency_p95"] = {"max": "20s", "window": "10m"}
    decisions = ticks(
        make_spec(gates=gates), needed + 1, 70, [FIVE, TEN] if two_lengths else [FIVE]
    )
    rollbacks = [i for i, d in enumerate(decisions) if d.rollback]
    assert rollbacks and rollbacks[0] == needed - 1, [d.verdict for d in decisions[-2:]]
    assert decisions[needed - 2].status.streaks["error_rate"].failures == needed - 1
    assert f"({needed} windows" in decisions[needed - 1].plan.edit.values["rolled_back"]["reason"]  # type: ignore[union-attr]


def test_a_window_is_counted_once_however_often_it_is_seen() -> None:
    spec = make_spec(gates={"window": "5m", "consecutive_failures": 3, "error_rate": {"max": "5%"}})
    status = status_at(AT_5)
    for _ in range(5):  # the same failing window, measured again by five runs
        d = decide(spec, status, AT_5, now=NOW, windows=[win(0, 70)])
        status = d.held
    assert status.streaks["error_rate"].failures == 1
    assert not d.rollback


def test_a_passing_window_resets_the_streak_and_inconclusive_keeps_it() -> None:
    spec = make_spec(gates={"window": "5m", "consecutive_failures": 3, "error_rate": {"max": "5%"}})
    d = decide(spec, status_at(AT_5), AT_5, now=NOW, windows=[win(0, 70), win(1, 70)])
    assert d.held.streaks["error_rate"].failures == 2
    d2 = decide(spec, d.held, AT_5, now=NOW, windows=[win(2, 1, requests=10)])
    assert d2.held.streaks["error_rate"].failures == 2  # too few requests: inconclusive
    d3 = decide(spec, d2.held, AT_5, now=NOW, windows=[win(3, 1)])
    assert d3.held.streaks["error_rate"].failures == 0


def test_a_new_stage_starts_new_streaks_and_bake() -> None:
    spec = make_spec(canary_percent=10, force=True)
    d = decide(spec, status_at(AT_5, passing_since=T0), AT_5, now=NOW, windows=[win(0, 70)])
    assert d.acts and d.status.stage == 10 and d.status.stage_since == NOW
    assert d.status.streaks == {} and d.status.passing_since is None
    assert d.held.streaks["error_rate"].failures == 1


def test_defect2_one_promotion_rule() -> None:
    missed = Verdict(
        Outcome.PASS,
        (GateResult("error_rate", Outcome.PASS, 0.03, 0.05, 900, "3%", 0.01, False),),
    )
    met = Verdict(
        Outcome.PASS,
        (GateResult("error_rate", Outcome.PASS, 0.003, 0.05, 900, "0.3%", 0.01, True),),
    )
    assert promotion_blockers(missed) and not promotion_blockers(met)
    assert promotion_blockers(None) and promotion_blockers(Verdict(Outcome.INCONCLUSIVE))
    # The bake timer counts readiness, so a missed target never bakes.
    spec = make_spec(gates={"window": "5m", "error_rate": {"max": "5%", "target": "1%"}})
    d = decide(spec, status_at(AT_5), AT_5, now=NOW, windows=[win(0, 30)])
    assert d.verdict is not None and d.verdict.outcome is Outcome.PASS
    assert d.held.passing_since is None


def test_defect5_config_error_never_counts_against_the_canary() -> None:
    spec = make_spec(
        gates={"window": "5m", "consecutive_failures": 1, "error_rate": {"max": "5%"}},
        probes=[{"name": "chat-smoke", "url": "{canary_url}/chat"}],
    )
    d = decide(spec, status_at(AT_5), AT_5, now=NOW, windows=[win(0, 1)], config_errors=UNSET)
    assert not d.rollback and not d.acts
    assert d.verdict is not None and d.verdict.outcome is Outcome.INCONCLUSIVE
    assert "probe:chat-smoke" not in d.held.streaks


def test_missing_env_names_every_variable() -> None:
    spec = make_spec(
        probes=[
            {"name": "chat", "url": "{canary_url}/c", "headers": {"Authorization": {"env": "A"}}}
        ],
        dependencies=[{"name": "gw", "url": "http://gw/h", "headers": {"X-Key": {"env": "B"}}}],
    )
    assert missing_env(spec, {"A": "x"}) == [
        "gw: header X-Key reads environment variable B, which is not set"
    ]
    assert len(missing_env(spec, {"A": ""})) == 2


def test_decision_is_complete() -> None:
    spec = make_spec(gates={"window": "5m", "consecutive_failures": 1, "error_rate": {"max": "5%"}})
    d = decide(spec, status_at(AT_5), AT_5, now=NOW, windows=[win(0, 90)], spec_id="abc")
    assert d.rollback and d.status.phase is Phase.ROLLED_BACK
    assert d.status.applied == split_for(STABLE, None, 0) and d.status.stage == 0
    assert [e.kind for e in d.done] == [EventKind.ROLLED_BACK]
    assert d.commit.subject == f"reconcile(ion-api): rollback canary 5% -> 0% ({CANARY})"
    assert d.commit.trailers == {
        "Reconcile-Service": "ion-api",
        "Reconcile-Action": "rollback",
        "Reconcile-Spec": "abc",
    }
    assert "Verdict: FAIL" in d.commit.body
    assert d.added == (win(0, 90),)


def test_failing_probe_runs_are_events_either_way() -> None:
    spec = make_spec(probes=[{"name": "health", "url": "{canary_url}/h"}])
    runs = [ProbeRecord("health", False, NOW, "status 500")]
    d = decide(spec, status_at(AT_5), AT_5, now=NOW, probe_runs=runs)
    assert [(e.kind, e.reason) for e in d.events] == [(EventKind.PROBE_FAILED, "status 500")]
    assert d.held.streaks["probe:health"].failures == 1


def test_manual_rollback_is_a_decision() -> None:
    d = decide_rollback(make_spec(), status_at(AT_5), AT_5, now=NOW, reason="by hand")
    assert d.rollback and d.edit is not None
    assert d.edit.values["rolled_back"]["reason"] == "by hand"
    assert d.status.phase is Phase.ROLLED_BACK and d.done[0].details == {"manual": True}


def test_idle_when_nothing_new() -> None:
    spec = make_spec(revisions={"stable": STABLE}, canary_percent=0)
    status = status_at(ALL_STABLE, canary_revision=None, phase=Phase.STABLE)
    assert decide(spec, status, ALL_STABLE, now=NOW).idle
    assert not decide(spec, status, ALL_STABLE, now=NOW, windows=[win(0, 0)]).idle


# --- scheduled reports (`reports:`) ------------------------------------------------------------
H = timedelta(hours=1)
MIN = timedelta(minutes=1)
REPORT_CASES = [
    # id, spec overrides, live, stage live for, already reported, -> due keys (closing marked !)
    ("nothing-yet", {}, AT_5, 23 * H, {}, []),
    ("interim-at-24h", {}, AT_5, 24 * H, {}, ["interim@5"]),
    ("interim-once", {}, AT_5, 30 * H, {"interim@5": NOW - 6 * H}, []),
    ("go-no-go-at-48h", {}, AT_5, 48 * H, {"interim@5": NOW}, ["final@5"]),
    ("go-no-go-stands-for-a-missed-interim", {}, AT_5, 50 * H, {}, ["final@5"]),
    ("no-interim-after-the-go-no-go", {}, AT_5, 50 * H, {"final@5": NOW}, []),
    ("custom-schedule", {"reports": {"interim": "30m", "final": "1h"}}, AT_5, 40 * MIN, {},
     ["interim@5"]),
    ("interim-off", {"reports": {"interim": None}}, AT_5, 30 * H, {}, []),
    ("finalize-closes", {"canary_percent": 100, "force": True}, AT_100, 2 * H, {},
     ["!final"]),
    ("finalize-closes-once", {"canary_percent": 100, "force": True}, AT_100, 2 * H,
     {"final": NOW}, []),
    ("no-canary-live", {"canary_percent": 0}, ALL_STABLE, 30 * H, {}, []),
]  # fmt: skip


@pytest.mark.parametrize(
    ("spec_over", "live", "live_for", "reported", "expected"),
    [c[1:] for c in REPORT_CASES],
    ids=[c[0] for c in REPORT_CASES],
)
def test_reports_due(
    spec_over: dict[str, Any],
    live: LiveService,
    live_for: timedelta,
    reported: dict[str, datetime],
    expected: list[str],
) -> None:
    spec = make_spec(**spec_over)
    status = status_at(live, stage_since=NOW - live_for, reported=reported)
    d = decide(spec, status, live, now=NOW)
    got = [("!" if r.closing else "") + r.key for r in d.reports]
    assert got == expected
    # Carried out, every due report is kept as written; held, the closing one is not (its
    # finalize or rollback did not happen), so a later run writes it with its action.
    assert set(d.status.reported) == set(reported) | {k.lstrip("!") for k in expected}
    assert set(d.held.reported) == set(reported) | {k for k in expected if "!" not in k}
    assert [r.key for r in d.reports_due(applied=False)] == [k for k in expected if "!" not in k]
    assert d.commit.body.count("Report: ") == len(expected)


def test_a_new_canary_starts_its_reports_afresh() -> None:
    status = status_at(
        AT_5, stage_since=NOW - 25 * H, canary_revision=OTHER, reported={"interim@5": T0}
    )
    d = decide(make_spec(), status, AT_5, now=NOW)
    assert d.reports == () and d.held.reported == {}  # the other canary's reports are gone
    later = decide(make_spec(), d.held, AT_5, now=NOW + 24 * H)
    assert [r.key for r in later.reports] == ["interim@5"]
    assert later.held.reported == {"interim@5": NOW + 24 * H}


def test_a_rollback_closes_with_the_final_report() -> None:
    spec = make_spec(gates={"window": "5m", "consecutive_failures": 1, "error_rate": {"max": "5%"}})
    d = decide(spec, status_at(AT_5), AT_5, now=NOW, windows=[win(0, 90)])
    assert d.plan.reason is Reason.ROLLBACK
    assert [(r.kind, r.key, r.closing) for r in d.reports] == [("final", "final", True)]
    assert "Report: final report: the rollout rolled back" in d.commit.body
    assert "Report:" not in d.held_commit.body


def test_a_rollback_by_hand_closes_with_the_final_report_once() -> None:
    d = decide_rollback(make_spec(), status_at(AT_5), AT_5, now=NOW, reason="by hand")
    assert [(r.key, r.closing) for r in d.reports] == [("final", True)]
    assert d.status.reported == {"final": NOW}
    again = decide_rollback(
        make_spec(), status_at(AT_5, reported={"final": T0}), AT_5, now=NOW, reason="again"
    )
    assert again.reports == ()


# --- a write live traffic shows and state/ does not record yet (execute.recover) -----------------
AT_10 = live_with(Target(STABLE, 90, "stable"), Target(CANARY, 10, "canary"))
WRITTEN = T0 + 2 * FIVE
"""When the unrecorded write moved the canary from 5% to 10%."""


@pytest.mark.parametrize(
    ("written", "want"),
    [(None, Outcome.INCONCLUSIVE), (WRITTEN, Outcome.FAIL)],
    ids=["stage-begins-now", "stage-begins-at-the-write"],
)
def test_an_unrecorded_write_starts_its_stage_when_it_was_made(
    written: datetime | None, want: Outcome
) -> None:
    spec = make_spec(gates={"window": "5m", "consecutive_failures": 1, "error_rate": {"max": "5%"}})
    d = decide(
        spec,
        status_at(AT_5),
        AT_10,
        now=NOW,
        windows=[win(2, errors=90), win(3, errors=90)],  # served at 10%, since the write
        unrecorded_write=written,
    )
    assert d.verdict is not None and d.verdict.outcome is want
    assert d.rollback is (want is Outcome.FAIL)


def test_a_service_left_alone_keeps_its_traffic_and_says_why() -> None:
    d = decide(make_spec(), status_at(AT_5), AT_10, now=NOW)
    assert d.plan.drift and d.plan.changes  # what the run would do without the rule
    why = (
        "left alone: a write 30 s ago is not yet recorded; recovered after 2m if no run records it"
    )
    held = left_alone_plan(d.plan, why)
    assert held.changes == () and held.edit is None and not held.drift
    assert held.after == held.before == AT_10.traffic and held.reason is Reason.NONE
    assert held.notes[-1] == why
