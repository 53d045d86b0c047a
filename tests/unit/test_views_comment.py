"""The PR comment, read as a reviewer reads it: snapshots at 1, 10 and 100 services.

The golden files under tests/golden/ are the comments as GitHub shows them; when a change to
the comment is intended, regenerate them with `RECONCILE_UPDATE_GOLDEN=1 pytest` and read
the diff like any other review.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from reconciler.model import (
    Coverage,
    GateResult,
    Outcome,
    ServiceRef,
    Target,
    TrafficSplit,
    Verdict,
)
from reconciler.plan import (
    Action,
    Change,
    Phase,
    Plan,
    Reason,
    ServiceError,
    ServicePlan,
    SpecEdit,
    coverage_note,
)
from reconciler.views.comment import MARKER, OFFLINE_NOTE, plan_markdown
from tests.builders import canary_moves

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)

FAILING = Verdict(
    Outcome.FAIL,
    (
        GateResult(
            "latency_p95",
            Outcome.PASS,
            0.3124,
            20.0,
            1_480,
            "latency_p95 312ms <= 20s (1,480 requests)",
        ),
        GateResult(
            "success_rate",
            Outcome.INCONCLUSIVE,
            0.93,
            0.9,
            1_480,
            "success_rate 93% < 90% in 1 of 2 windows needed to fail (1,480 requests)",
        ),
        GateResult(
            "error_rate",
            Outcome.FAIL,
            0.0712,
            0.05,
            1_480,
            "error_rate 7.12% > 5% (2 windows, 1,480 requests)",
            windows=2,
        ),
        GateResult("probe:chat-smoke", Outcome.PASS, None, None, 3, "probe chat-smoke ok (3 runs)"),
    ),
)
PASSING = Verdict(
    Outcome.PASS,
    (
        GateResult("error_rate", Outcome.PASS, 0.0008, 0.05, 2_310, "error_rate 0.08% <= 5%"),
        GateResult("latency_p95", Outcome.PASS, 0.25, 20.0, 2_310, "latency_p95 250ms <= 20s"),
    ),
)


def _split(name: str, stable: int, canary: int) -> TrafficSplit:
    targets = [Target(f"{name}-00041-abc", stable, "stable")]
    if canary or stable < 100:
        targets.append(Target(f"{name}-00042-xyz", canary, "canary"))
    return TrafficSplit.of(targets)


def _base(name: str) -> dict[str, Any]:
    """What every row's plan of `name` shares: identity, revisions, etag and generation."""
    return {
        "ref": ServiceRef("naeda-genesis", "us-central1", name),
        "etag": "etag-7",
        "generation": 7,
        "canary": f"{name}-00042-xyz",
        "stable": f"{name}-00041-abc",
    }


def _new_stage(name: str, before: int, after: int, **fields: Any) -> ServicePlan:
    """A row moving `name`'s canary from `before`% to `after`%, a new stage."""
    base = _base(name)
    return ServicePlan(
        before=_split(name, 100 - before, before),
        after=_split(name, 100 - after, after),
        changes=canary_moves(base["stable"], base["canary"], before, after),
        reason=Reason.STAGE,
        phase=Phase.PROGRESSING,
        canary_percent=after,
        **base,
        **fields,
    )


def _service(name: str, kind: str) -> ServicePlan:
    """One service of the fleet in the state `kind` names."""
    stable, canary = f"{name}-00041-abc", f"{name}-00042-xyz"
    base = _base(name)
    if kind == "rollback":
        return ServicePlan(
            before=_split(name, 95, 5),
            after=TrafficSplit.of([Target(stable, 100, "stable")]),
            changes=(
                Change(Action.CHANGE, stable, 95, 100, "stable", "stable"),
                Change(Action.REMOVE, canary, 5, 0, "canary", ""),
            ),
            reason=Reason.ROLLBACK,
            phase=Phase.ROLLED_BACK,
            canary_percent=5,
            edit=SpecEdit(
                Reason.ROLLBACK,
                {"canary_percent": 0},
                f"canary 5% -> 0% ({canary}): error_rate 7.12% > 5% (2 windows)",
            ),
            verdict=FAILING,
            **base,
        )
    if kind == "stage":
        return _new_stage(name, 5, 10, verdict=PASSING)
    if kind == "blocked":
        blocked = "canary_percent 25% skips stage 10% (stages: 5, 10, 25, 50, 100)"
        return _new_stage(name, 5, 25, blocked=blocked, verdict=PASSING)
    if kind == "forced":
        warning = "force: true - the bake gate is skipped for this change"
        return _new_stage(name, 0, 5, warnings=(warning,))
    if kind == "held":
        return ServicePlan(
            before=_split(name, 95, 5),
            after=_split(name, 95, 5),
            changes=(),
            reason=Reason.NONE,
            phase=Phase.PROGRESSING,
            canary_percent=5,
            verdict=QUIET,
            warnings=(HELD,),
            notes=(coverage_note(Coverage(96, 96)),),
            held=HELD,
            coverage=Coverage(96, 96),
            **base,
        )
    coverage = Coverage(2_310, 2_310) if kind == "ready" else Coverage(1_150, 1_200)
    ready = ("ready to promote: 5% -> 10% (reconcile promote)",) if kind == "ready" else ()
    return ServicePlan(
        before=_split(name, 95, 5),
        after=_split(name, 95, 5),
        changes=(),
        reason=Reason.NONE,
        phase=Phase.PROGRESSING,
        canary_percent=5,
        verdict=PASSING,
        notes=(*ready, coverage_note(coverage)),
        coverage=coverage,
        **base,
    )


HELD = (
    "HELD: error_rate inconclusive in 6 windows in a row (inconclusive_limit 6); not promoted "
    "until a window is judged (min_requests 100)"
)
QUIET = Verdict(
    Outcome.INCONCLUSIVE,
    (
        GateResult(
            "error_rate",
            Outcome.INCONCLUSIVE,
            0.0,
            0.05,
            16,
            "error_rate 0.0% inconclusive: 16 requests < min_requests 100",
        ),
    ),
)
NAMES = [
    "ion-api",
    "payments-api",
    "checkout-web",
    "search-api",
    "notifications-worker",
    "ledger-api",
]
KINDS = ["rollback", "stage", "blocked", "forced", "ready", "held"]


def fleet(n: int, *, offline: bool = False) -> Plan:
    """n services: the first five in every state a reviewer must see, the rest unchanged."""
    names = (NAMES + [f"catalog-europe-west1-{i:03d}" for i in range(n)])[:n]
    services = tuple(
        _service(name, KINDS[i] if i < len(KINDS) else "same") for i, name in enumerate(names)
    )
    errors = (ServiceError("billing-api", "rollout/billing-api.yaml:12: unknown key 'canary_pct'"),)
    return Plan(
        created_at=NOW, services=services, errors=errors if n >= 10 else (), offline=offline
    )


@pytest.mark.parametrize("n", [1, 10, 100], ids=["1-service", "10-services", "100-services"])
def test_comment_snapshot(n: int) -> None:
    md = plan_markdown(fleet(n, offline=n == 10))
    golden = GOLDEN / f"plan-comment-{n}.md"
    if os.environ.get("RECONCILE_UPDATE_GOLDEN"):
        golden.write_text(md, encoding="utf-8")
    assert md == golden.read_text(encoding="utf-8")


def test_one_marker_one_heading_one_offline_note() -> None:
    md = plan_markdown(fleet(10, offline=True))
    assert md.startswith(MARKER + "\n")
    assert md.count(MARKER) == 1 and md.count("### reconcile plan") == 1
    assert md.count(OFFLINE_NOTE) == 1


def test_values_carry_units_and_failed_gates_come_first() -> None:
    md = plan_markdown(fleet(1))
    gates = ("| error_rate", "| latency", "| success", "| probe")
    rows = [line for line in md.splitlines() if line.startswith(gates)]
    assert rows[0].startswith("| error_rate | ❌ FAIL | 7.12% | ≤ 5% |")
    assert "| latency_p95 | ✅ PASS | 312ms | ≤ 20s |" in md
    assert "0.05" not in md and "0.0712" not in md and "| 20 |" not in md
    assert "in 1 of 2 windows needed to fail" in md  # the reason is kept, not dropped


def test_unchanged_services_fold_into_one_details_line() -> None:
    md = plan_markdown(fleet(100))
    assert md.count("<details>") == 1
    assert "✅ 95 unchanged: <code>notifications-worker</code>" in md
    # the error, the blocked, the rollback, the change, the warning, the HELD
    assert md.count("#### ") == 6
    # 100 services still read as one screen of sections plus one folded table.
    assert len(md.splitlines()) < 215


def test_attention_order_errors_blocked_rollback_change_held() -> None:
    md = plan_markdown(fleet(10))
    heads = [line for line in md.splitlines() if line.startswith("#### ")]
    assert [h.split()[1] for h in heads] == ["❌", "⛔", "⏪", "🔀", "🔀", "⏸️"]


def test_held_and_coverage_are_said_once() -> None:
    md = plan_markdown(fleet(10))
    assert md.count("HELD: error_rate inconclusive in 6 windows") == 1
    assert "> ⚠️ HELD" not in md and "coverage: 100%" not in md  # not the text view's copies
    assert "Coverage at this stage: 100% (96 of 96 requests judged)." in md
    assert "| PASS | 96% (1,150 of 1,200 requests judged) |" in md
