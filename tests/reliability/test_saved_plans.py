"""A saved plan names exact services present in the repository and is applied all or nothing.

A hand-edited plan naming `ion-*` once applied every matching service without the staleness
check, and a plan with one stale service was half applied.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.sandbox import Sandbox, sandbox

from .support import reconcile_cli

SERVICES = ("ion-api", "ion-web", "payments-api")
SCENARIO = {
    "project": "naeda-genesis",
    "region": "us-central1",
    "services": [
        {
            "name": name,
            "traffic": {f"{name}-00001-aaa": 100},
            "revisions": [{"name": f"{name}-00001-aaa"}, {"name": f"{name}-00002-bbb"}],
        }
        for name in SERVICES
    ],
}


def rollout_for(name: str) -> str:
    return (
        f"service: {name}\nproject: naeda-genesis\nregion: us-central1\n"
        f"revisions: {{stable: {name}-00001-aaa, canary: {name}-00002-bbb}}\n"
        "canary_percent: 5\nstages: [5, 25, 100]\n"
    )


@pytest.fixture
def sb(tmp_path: Path) -> Iterator[Sandbox]:
    files = {f"rollout/{n}.yaml": rollout_for(n) for n in SERVICES}
    with sandbox(tmp_path, scenario=SCENARIO, rollout=files) as s:
        yield s


def saved_plan(sb: Sandbox, *services: str) -> dict[str, object]:
    args = [a for s in services for a in ("--service", s)]
    out = sb.base / "plan.json"
    proc = reconcile_cli(sb.repo, "plan", *args, "--format", "json", "--out", str(out))
    assert proc.returncode in (0, 2), proc.stderr
    data: dict[str, object] = json.loads(out.read_text(encoding="utf-8"))
    return data


def apply_saved(sb: Sandbox, plan: dict[str, object]) -> tuple[int, str]:
    path = sb.base / "edited-plan.json"
    path.write_text(json.dumps(plan), encoding="utf-8")
    proc = reconcile_cli(sb.repo, "apply", str(path))
    return proc.returncode, proc.stdout + proc.stderr


@pytest.mark.parametrize("name", ["ion-*", "ion-ap?", "[i]on-api", "billing-api"])
def test_a_hand_edited_plan_must_name_exact_services(sb: Sandbox, name: str) -> None:
    plan = saved_plan(sb, "ion-api")
    services = plan["services"]
    assert isinstance(services, list) and len(services) == 1
    services[0]["service"] = name
    code, out = apply_saved(sb, plan)
    assert code == 1, out
    assert f"saved plan names {name!r}" in out
    assert sb.emu.write_attempts == 0


def test_one_stale_service_and_none_is_applied(sb: Sandbox) -> None:
    plan = saved_plan(sb, "ion-api", "ion-web", "payments-api")
    # Someone moves payments-api after the plan was saved.
    sb.emu.drift("payments-api", {"payments-api-00001-aaa": 90, "payments-api-00002-bbb": 10})
    attempts = sb.emu.write_attempts
    code, out = apply_saved(sb, plan)
    assert code == 1, out
    assert sb.emu.write_attempts == attempts  # nothing written, not even the fresh ones
    assert "payments-api: saved plan is stale" in out
    assert "ion-api: not applied, the saved plan is stale for payments-api" in out
    assert sb.remote_log("--format=%s").splitlines() == ["seed"]


def test_a_fresh_plan_of_several_services_is_applied_whole(sb: Sandbox) -> None:
    plan = saved_plan(sb, "ion-api", "payments-api")
    code, out = apply_saved(sb, plan)
    assert code == 0, out
    assert sb.emu.write_attempts == 2
