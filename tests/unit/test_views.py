"""Run views: colour, the status table's width, apply's summary, watch's changed-only ticks."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import pytest

from reconciler.model import Outcome, Verdict
from reconciler.plan import Plan, ServiceError, ServicePlan
from reconciler.views.apply import outcome_lines, summary
from reconciler.views.plan import plan_text, verdict_summary
from reconciler.views.status import status_text
from reconciler.views.style import truncate
from reconciler.views.watch import tick_lines
from tests.unit.test_views_comment import FAILING, fleet

AT = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass(frozen=True)
class Outcome_:
    service: str
    plan: ServicePlan | None = None
    applied: bool = False
    rolled_back: bool = False
    error: str | None = None
    commit: str | None = None
    verdict: Verdict | None = None
    held: str | None = None
    left_alone: str | None = None
    label: str = ""

    @property
    def name(self) -> str:
        return self.label or self.service


@dataclass(frozen=True)
class Run:
    outcomes: tuple[Outcome_, ...]
    git_error: str | None = None
    degraded: str | None = None
    recorded: bool = True
    commits: tuple[str, ...] = ()


def test_colour_only_when_asked_and_the_text_is_the_same_without_it() -> None:
    plan = fleet(5)
    plain, coloured = plan_text(plan), plan_text(plan, color=True)
    assert "\x1b[" not in plain
    assert "\x1b[32m+\x1b[0m" in coloured  # added: green
    assert "\x1b[33m~\x1b[0m" in coloured  # changed: yellow
    assert "\x1b[31m-\x1b[0m" in coloured  # removed: red
    assert ANSI.sub("", coloured) == plain


@pytest.mark.parametrize(
    ("text", "width", "cut"),
    [
        ("ion-api", 10, "ion-api"),
        ("payments-api-europe-west1", 12, "paymen…west1"),
        ("abcdef", 1, "a"),
    ],
    ids=["fits", "middle-cut", "one-column"],
)
def test_truncate_keeps_both_ends(text: str, width: int, cut: str) -> None:
    assert truncate(text, width) == cut
    assert len(truncate(text, width)) == min(len(text), width)


def long_names(n: int) -> list[ServicePlan]:
    suffix = "-with-a-long-regional-suffix-europe-west1"
    return [
        replace(sp, ref=replace(sp.ref, service=sp.ref.service + suffix))
        for sp in fleet(n).services
    ]


@pytest.mark.parametrize("width", [60, 80, 120])
def test_status_fits_the_terminal(width: int) -> None:
    out = status_text(long_names(10), [ServiceError("billing-api", "x " * 80)], width=width)
    assert all(len(line) <= width for line in out.splitlines()), out
    rows = [line for line in out.splitlines() if line.split()[0].endswith("west1")]
    assert len(rows) == 10  # every service keeps its distinguishing end
    assert ("…" in out) == (width < 120)  # cut in the middle only when they do not fit


def test_status_without_a_width_keeps_whole_names() -> None:
    plans = long_names(3)
    out = status_text(plans, [])
    assert all(sp.ref.service in out for sp in plans) and "…" not in out


def test_apply_summary_counts_every_kind_of_outcome() -> None:
    plans = fleet(5).services
    run = Run(
        (
            Outcome_("ion-api", plans[0], applied=True, rolled_back=True),
            Outcome_("payments-api", plans[1], applied=True, commit="0123456789abcdef"),
            Outcome_("checkout-web", plans[2]),
            Outcome_("notifications-worker", plans[4]),
            Outcome_("billing-api", error="permission denied"),
        ),
        git_error="push to origin failed",
    )
    assert summary(run) == "Apply: 1 changed, 1 rolled back, 1 in sync, 1 blocked, 2 errors."
    lines = outcome_lines(run.outcomes[1])
    assert lines[0].text.startswith("applied payments-api: new stage") and not lines[0].err
    assert lines[0].text.endswith("(commit 0123456789)")
    blocked = outcome_lines(run.outcomes[2])
    assert blocked[0].err and blocked[0].text.startswith("blocked checkout-web: ")


def test_a_service_left_alone_says_why_on_stderr() -> None:
    why = (
        "left alone: a write 31 s ago is not yet recorded; recovered after 2m if no run records it"
    )
    (line, *_notes) = outcome_lines(Outcome_("ion-api", fleet(1).services[0], left_alone=why))
    assert line.err and line.text == f"ion-api: {why}"


def _steady(name: str, plan: ServicePlan) -> Outcome_:
    return Outcome_(name, plan, verdict=Verdict(Outcome.PASS))


def test_watch_prints_changes_not_the_whole_fleet_every_tick() -> None:
    plans = fleet(30).services
    steady = Run(tuple(_steady(sp.ref.service, sp) for sp in plans))
    first, seen = tick_lines(1, AT, steady, {})
    assert first[0].startswith("[2026-11-26T12:00:00Z] tick 1: 30 changed")
    assert len(first) == 31  # the first tick introduces every service once
    again, seen = tick_lines(2, AT, steady, seen)
    assert again == ["[2026-11-26T12:00:00Z] tick 2: no change (30 services)"]
    one = list(steady.outcomes)
    one[3] = Outcome_(one[3].service, one[3].plan, applied=True, verdict=Verdict(Outcome.PASS))
    moved, seen = tick_lines(3, AT, Run(tuple(one)), seen)
    assert len(moved) == 1 and "search-api 5% PASS (new stage" in moved[0]
    assert moved[0].endswith("(29 unchanged)") and len(moved[0]) < 200


def test_watch_repeats_errors_and_rollbacks_every_tick() -> None:
    failing = Run((Outcome_("billing-api", error="permission denied"),), git_error="push failed")
    _, seen = tick_lines(1, AT, failing, {})
    lines, _ = tick_lines(2, AT, failing, seen)
    assert lines[0].endswith("2 changed") and "  billing-api error: permission denied" in lines
    assert "  push failed" in lines


def test_empty_plan_renders() -> None:
    assert plan_text(Plan(created_at=AT)).endswith(
        "Plan: 0 to change, 0 unchanged, 0 blocked, 0 errors.\n"
    )


def test_verdict_lines_lead_with_what_failed() -> None:
    line = verdict_summary(FAILING)
    assert line.startswith("FAIL: error_rate 7.12% > 5%")
    assert line.index("error_rate") < line.index("in 1 of 2 windows needed to fail")
    assert "latency_p95" not in line  # a passing gate is no reason


def test_degraded_is_said_on_every_line_and_an_unpushed_rollback_says_so() -> None:
    from reconciler.views.apply import run_lines

    result = Run(
        (Outcome_("billing-api", error="permission denied"), Outcome_("ion-api", held="degraded")),
        degraded="the clone is not at the remote's tip (fetch failed)",
        recorded=False,
    )
    lines = [line.text for line in run_lines(result)]
    services = [x for x in lines if "billing-api" in x or "ion-api" in x]
    assert services and all("[degraded: rollbacks only]" in x for x in services), lines
    assert any(x.startswith("degraded:") for x in lines), lines
