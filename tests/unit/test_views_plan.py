"""Plan views: text like terraform, markdown for PRs, json that reads back."""

from __future__ import annotations

import json

import pytest

from reconciler.plan import History, Plan, ServiceError, plan_service
from reconciler.views.comment import MARKER, plan_markdown
from reconciler.views.plan import (
    PlanFileError,
    gcloud_command,
    plan_from_json,
    plan_json,
    plan_text,
)
from reconciler.views.status import status_text
from tests.unit.test_plan import (
    ALL_STABLE,
    AT_5,
    CANARY,
    FAIL,
    FRESH,
    NOW,
    PASS,
    STABLE,
    make_spec,
)


def first_stage_plan() -> Plan:
    return Plan(created_at=NOW, services=(plan_service(make_spec(), ALL_STABLE, now=NOW),))


def test_gcloud_command_for_first_stage() -> None:
    sp = plan_service(make_spec(), ALL_STABLE, now=NOW)
    assert gcloud_command(sp) == (
        "gcloud run services update-traffic ion-api --project naeda-genesis "
        f"--region us-central1 --to-revisions {STABLE}=95,{CANARY}=5 "
        f"--set-tags canary={CANARY},stable={STABLE}"
    )


def test_gcloud_command_without_tag_change_has_no_tag_flags() -> None:
    sp = plan_service(make_spec(canary_percent=10, force=True), AT_5, now=NOW)
    assert gcloud_command(sp).endswith(f"--to-revisions {STABLE}=90,{CANARY}=10")


def test_text_shows_symbols_split_and_summary() -> None:
    out = plan_text(first_stage_plan())
    assert f"~ {STABLE}" in out and f"+ {CANARY}" in out
    assert "100% ->  95%" in out and "  0% ->   5%" in out
    assert "reason: new stage" in out
    assert "$ gcloud run services update-traffic ion-api" in out
    assert out.rstrip().endswith("Plan: 1 to change, 0 unchanged, 0 blocked, 0 errors.")


def test_text_blocked_and_errors() -> None:
    blocked = plan_service(make_spec(canary_percent=10), AT_5, now=NOW, verdict=PASS, history=FRESH)
    out = plan_text(
        Plan(created_at=NOW, services=(blocked,), errors=(ServiceError("payments", "boom"),))
    )
    assert "BLOCKED: stage 5% has not passed its gates for bake 1h" in out
    assert "x payments: boom" in out
    assert "gcloud" not in out  # never suggest a command for a blocked change
    assert "1 blocked, 1 error." in out


def test_markdown_has_marker_table_and_reasons() -> None:
    rb = plan_service(make_spec(), AT_5, now=NOW, verdict=FAIL)
    md = plan_markdown(Plan(created_at=NOW, services=(rb,)))
    assert md.startswith(MARKER)
    assert "| `~` | `ion-api-00041-abc` | stable | 95% | 100% |" in md
    assert "| `-` | `ion-api-00042-xyz` | canary → – | 5% | 0% |" in md
    assert "rollback" in md and "7.1% > 5%" in md
    # Units on every value, and the gate's reason kept.
    assert "| error_rate | ❌ FAIL | 7.1% | ≤ 5% | 900 | error_rate 7.1% > 5% |" in md


def test_json_round_trip() -> None:
    plans = (
        plan_service(make_spec(), ALL_STABLE, now=NOW),
        plan_service(make_spec(), AT_5, now=NOW, verdict=FAIL),
        plan_service(make_spec(canary_percent=10), AT_5, now=NOW, history=History()),
    )
    plan = Plan(created_at=NOW, services=plans, errors=(ServiceError("x", "y"),))
    text = plan_json(plan)
    data = json.loads(text)
    assert data["format_version"] == 1
    assert data["services"][0]["after"] == [
        {"percent": 95, "revision": STABLE, "tag": "stable"},
        {"percent": 5, "revision": CANARY, "tag": "canary"},
    ]
    assert plan_from_json(text) == plan


@pytest.mark.parametrize(
    "text",
    ["", "{}", '{"format_version": 99}', "[1,2]", '{"format_version": 1, "services": [{}]}'],
    ids=["empty", "no-version", "future-version", "list", "broken-service"],
)
def test_plan_file_errors_are_clear(text: str) -> None:
    with pytest.raises(PlanFileError):
        plan_from_json(text)


def test_status_text() -> None:
    sp = plan_service(make_spec(), AT_5, now=NOW)
    out = status_text([sp], [ServiceError("payments", "permission denied")])
    assert "ion-api" in out and "progressing" in out and "in sync" in out
    assert "payments" in out and "permission denied" in out
