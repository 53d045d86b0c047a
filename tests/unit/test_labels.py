"""Naming a rollout in output: the service id alone, unless a run (a plan, a commit) holds the
same id in more than one region or project; then `service (region)` or the full
`project/region/service`, the same way in every view and in the run's commit."""

from __future__ import annotations

import os
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from reconciler.decide import Commit
from reconciler.gitops import format_message, trailer_pairs
from reconciler.model import Outcome, ServiceRef, Verdict, labels
from reconciler.notices import notice_of, title
from reconciler.outcome import RunResult, ServiceOutcome
from reconciler.plan import Plan, ServiceError
from reconciler.runcommit import Entry, named, run_commit
from reconciler.views.apply import closing_lines, outcome_lines
from reconciler.views.comment import plan_markdown
from reconciler.views.plan import plan_from_json, plan_json, plan_text
from reconciler.views.status import status_text
from reconciler.views.watch import tick_lines
from tests.unit.test_views_comment import GOLDEN, _service

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
P, Q = "naeda-genesis", "naeda-staging"
US, EU = "us-central1", "europe-west1"


def ref(service: str, region: str = US, project: str = P) -> ServiceRef:
    return ServiceRef(project, region, service)


LABELS = [
    ("one-service", [ref("ion-api")], ["ion-api"]),
    ("distinct-ids", [ref("ion-api"), ref("web", EU)], ["ion-api", "web"]),
    ("one-id-two-regions", [ref("ion-api"), ref("ion-api", EU)],
     ["ion-api (us-central1)", "ion-api (europe-west1)"]),
    ("one-id-two-projects", [ref("ion-api"), ref("ion-api", project=Q)],
     [f"{P}/{US}/ion-api", f"{Q}/{US}/ion-api"]),
    ("mixed-projects-name-the-whole-group-fully",
     [ref("ion-api"), ref("ion-api", EU), ref("ion-api", project=Q), ref("web")],
     [f"{P}/{US}/ion-api", f"{P}/{EU}/ion-api", f"{Q}/{US}/ion-api", "web"]),
    ("a-repeated-ref-is-one-rollout", [ref("ion-api"), ref("ion-api")], ["ion-api", "ion-api"]),
]  # fmt: skip


@pytest.mark.parametrize(("refs", "want"), [c[1:] for c in LABELS], ids=[c[0] for c in LABELS])
def test_labels(refs: list[ServiceRef], want: list[str]) -> None:
    names = labels(refs)
    assert [names[r] for r in refs] == want


# --- the run's commit -------------------------------------------------------------------------
def entry(r: ServiceRef, action: str) -> Entry:
    trailers = {"Reconcile-Service": r.service, "Reconcile-Action": action}
    return Entry(Commit(f"reconcile({r.service}): {action}", "why", trailers), ref=r)


def test_a_commit_holding_one_id_in_two_regions_names_each_region() -> None:
    us, eu = ref("ion-api"), ref("ion-api", EU)
    text = run_commit([entry(eu, "rollback"), entry(us, "advance"), entry(ref("web"), "apply")])
    assert text.body.splitlines() == [
        "reconcile(ion-api (europe-west1)): rollback",
        "  why",
        "reconcile(ion-api (us-central1)): advance",
        "  why",
        "reconcile(web): apply",
        "  why",
    ]
    message = format_message(text.subject, text.body, text.trailers)
    assert trailer_pairs(message)[:6] == [
        ("Reconcile-Service", "ion-api"),
        ("Reconcile-Rollout", f"{P}/{EU}/ion-api"),
        ("Reconcile-Action", "rollback"),
        ("Reconcile-Service", "ion-api"),
        ("Reconcile-Rollout", f"{P}/{US}/ion-api"),
        ("Reconcile-Action", "advance"),
    ]
    # The service without a twin is written as before: no `Reconcile-Rollout`.
    assert trailer_pairs(message)[6:] == [
        ("Reconcile-Service", "web"),
        ("Reconcile-Action", "apply"),
        ("Reconcile-Skip", "true"),
    ]


def test_the_run_names_a_rollout_even_when_its_twin_is_in_another_commit() -> None:
    """A run's rollback commit holds the failing region alone: named as the run names it."""
    us, eu = ref("ion-api"), ref("ion-api", EU)
    alone = run_commit([entry(eu, "rollback")])
    assert alone.body.splitlines()[0] == "reconcile(ion-api): rollback"
    text = run_commit([entry(eu, "rollback")], labels([us, eu]))
    assert text.body.splitlines()[0] == "reconcile(ion-api (europe-west1)): rollback"


def test_named_leaves_a_service_named_by_its_id_alone() -> None:
    commit = entry(ref("web"), "apply").commit
    assert named(commit, ref("web"), "web") is commit


# --- apply, watch ----------------------------------------------------------------------------
def outcome(r: ServiceRef, **kw: object) -> ServiceOutcome:
    sp = replace(_service(r.service, "stage"), ref=r)
    label = labels([ref("ion-api"), ref("ion-api", EU)]).get(r, "")
    return ServiceOutcome(r.service, plan=sp, label=label, **kw)  # type: ignore[arg-type]


def test_apply_lines_name_each_region_of_a_service() -> None:
    us = outcome(ref("ion-api"), applied=True)
    eu = outcome(ref("ion-api", EU), applied=True, rolled_back=True)
    err = ServiceOutcome("ion-api", error="permission denied", label="ion-api (europe-west1)")
    lines = [line.text for o in (us, eu, err) for line in outcome_lines(o)]
    assert lines[0].startswith("applied ion-api (us-central1): new stage,")
    assert any(x.startswith("ROLLED BACK ion-api (europe-west1): ") for x in lines)
    assert "error: ion-api (europe-west1): permission denied" in lines
    closing = closing_lines(RunResult((us, eu)), dry_run=True)
    assert [c.text for c in closing if "NOT yet recorded" in c.text] == [
        "warning: ion-api (europe-west1): the rollback is NOT yet recorded on the remote"
    ]


def test_a_single_region_line_is_unchanged() -> None:
    o = ServiceOutcome("web", plan=replace(_service("web", "stage"), ref=ref("web")), applied=True)
    assert outcome_lines(o)[0].text.startswith("applied web: new stage,")


def test_watch_keeps_one_line_per_region() -> None:
    steady = Verdict(Outcome.PASS)
    us = outcome(ref("ion-api"), verdict=steady)
    eu = outcome(ref("ion-api", EU), verdict=steady)
    lines, seen = tick_lines(1, NOW, RunResult((us, eu)), {})
    assert sorted(seen) == ["ion-api (europe-west1)", "ion-api (us-central1)"]
    assert lines[1:] == ["  ion-api (us-central1) 5% PASS", "  ion-api (europe-west1) 5% PASS"]
    # The next tick: nothing changed in either region.
    again, _ = tick_lines(2, NOW, RunResult((us, eu)), seen)
    assert again == ["[2026-11-26T12:00:00Z] tick 2: no change (2 services)"]


# --- plan, PR comment, status ----------------------------------------------------------------
def regions_plan() -> Plan:
    """ion-api in two regions of one project and in a second project, beside `web`."""
    services = (
        replace(_service("ion-api", "rollback"), ref=ref("ion-api", EU)),
        replace(_service("ion-api", "same"), ref=ref("ion-api")),
        replace(_service("web", "same"), ref=ref("web")),
        replace(_service("ledger-api", "same"), ref=ref("ledger-api")),
        replace(_service("ledger-api", "stage"), ref=ref("ledger-api", project=Q)),
    )
    error = ServiceError("ion-api", "no observed state", ref("ion-api", "asia-northeast1"))
    return Plan(created_at=NOW, services=services, errors=(error,))


def test_the_pull_request_comment_names_each_region() -> None:
    md = plan_markdown(regions_plan())
    golden = GOLDEN / "plan-comment-regions.md"
    if os.environ.get("RECONCILE_UPDATE_GOLDEN"):
        golden.write_text(md, encoding="utf-8")
    assert md == golden.read_text(encoding="utf-8")
    assert "#### ❌ `ion-api (asia-northeast1)`: error" in md
    assert "#### ⏪ `ion-api (europe-west1)`: rollback" in md
    assert f"`{Q}/{US}/ledger-api`" in md and "<code>web</code>" in md


def test_plan_text_names_an_error_s_region_and_json_keeps_it() -> None:
    plan = regions_plan()
    assert "x ion-api (asia-northeast1): no observed state" in plan_text(plan)
    assert plan_from_json(plan_json(plan)).errors == plan.errors


def test_status_names_the_same_id_in_two_projects_fully() -> None:
    plan = regions_plan()
    out = status_text(list(plan.services), list(plan.errors))
    rows = [line.split()[0] for line in out.splitlines()[1:] if line and not line[0].isspace()]
    assert f"{P}/{US}/ledger-api" in rows and f"{Q}/{US}/ledger-api" in rows
    assert "web" in rows
    assert "ion-api (europe-west1)" in out and "ion-api (asia-northeast1)" in out


def test_a_notice_title_names_the_region_as_the_run_does() -> None:
    sp = replace(_service("ion-api", "rollback"), ref=ref("ion-api", EU))
    notice = notice_of("rollback", sp, sp.verdict, now=NOW, name="ion-api (europe-west1)")
    assert title(notice).startswith("ion-api (europe-west1) rolled back: canary ")
    plain = notice_of("rollback", sp, sp.verdict, now=NOW, name="ion-api")
    assert title(plain).startswith("ion-api rolled back: canary ")
