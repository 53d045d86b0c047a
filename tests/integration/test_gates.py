"""Analysis scenarios on the emulator: metrics it measured from served traffic decide.

Each tick serves real requests through the data plane, moves the emulator clock one gate window
(5m) forward, and runs `apply` with the emulator's clock, so windows are real, distinct and
measured through the official Monitoring client, with Google's 60 s samples, 180 s ingestion
delay and the provider's default 3-minute lag: a window is judged once it is readable.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.builders import context, rollout_text

from reconciler import clients
from reconciler.backends.cloudrun import CloudRunBackend
from reconciler.loader import load_spec
from reconciler.model import Outcome
from reconciler.reconcile import Context, RunResult, apply_all, plan_all
from reconciler.sandbox import Sandbox, sandbox

STABLE = "ion-api-00041-abc"
CANARY = "ion-api-00042-xyz"
WINDOW = 300.0
LAG = 180.0
"""The provider's default ingestion lag: a window ends this long before `now`."""


def rollout(sb: Sandbox, *, probes: bool = True, **over: object) -> str:
    return rollout_text(sb.emu, probes=probes, **over)


@pytest.fixture
def sb(tmp_path: Path) -> Iterator[Sandbox]:
    with sandbox(tmp_path) as s:
        yield s


def tick(sb: Sandbox, ctx: Context, canary: int, service: int = 200) -> RunResult:
    """Serve traffic (service URL and canary tag URL), then apply one window later: the
    lagged window (ending 3 minutes ago) then holds this traffic and none of the last tick's."""
    if service:
        sb.emu.load("ion-api", service)
    if canary:
        sb.emu.load("ion-api", canary, tag="canary")
    sb.emu.advance_clock(WINDOW)
    return apply_all(ctx)


def live_percents(sb: Sandbox) -> dict[str, int]:
    svc = clients.services_client().get_service(name=sb.emu.service_name("ion-api"))
    return {t.revision: t.percent for t in svc.traffic_statuses if t.percent}


def test_canary_with_7_percent_errors_is_rolled_back_within_two_windows(sb: Sandbox) -> None:
    ctx = context(sb, metrics=True)
    assert apply_all(ctx).exit_code == 0  # 5% live; the built-in canary fails 7%
    # A window that began before 5% went live says nothing of the canary: let the lag pass
    # (nothing served meanwhile) so the next two windows are the canary's first two.
    sb.emu.advance_clock(LAG)
    codes = []
    for _ in range(2):  # two windows
        codes.append(tick(sb, ctx, canary=2000).exit_code)
        if codes[-1] == 4:
            break
    assert codes == [0, 4], codes  # the first failing window alone never rolls back
    assert live_percents(sb) == {STABLE: 100}

    # The rollback is in git with the measured values and the thresholds that caused it.
    body = sb.remote_log("-1", "--format=%s%n%b")
    assert body.startswith("reconcile: 1 rolled back [skip reconcile]\n")
    assert "\nreconcile(ion-api): rollback canary 5% -> 0% (ion-api-00042-xyz)\n" in body
    assert "error_rate: FAIL - error_rate" in body and "> 5%" in body
    spec = load_spec(sb.rollout())
    assert spec.rolled_back is not None and spec.canary_percent == 0
    assert "error_rate" in spec.rolled_back.reason and "> 5%" in spec.rolled_back.reason


def test_canary_with_p95_of_25s_is_rolled_back(sb: Sandbox) -> None:
    sb.emu.behave(CANARY, error_rate=0.0, latency_ms={"p50": 8000, "p95": 25000})
    sb.commit_rollout(rollout(sb, probes=False), "gates only")
    ctx = context(sb, metrics=True)
    assert apply_all(ctx).exit_code == 0
    codes: list[int] = []
    while len(codes) < 3 and 4 not in codes:
        codes.append(tick(sb, ctx, canary=300).exit_code)
    assert codes[-1] == 4, codes
    assert live_percents(sb) == {STABLE: 100}
    body = sb.remote_log("-1", "--format=%b")
    assert "latency_p95: FAIL" in body and "> 20s" in body


def test_healthy_canary_with_auto_advance_and_short_bake_advances_5_10_25(sb: Sandbox) -> None:
    sb.emu.behave(CANARY, error_rate=0.0)
    sb.commit_rollout(rollout(sb, auto_advance="true", bake="10m"), "auto advance, 10m bake")
    ctx = context(sb, metrics=True)
    assert apply_all(ctx).exit_code == 0
    seen = []
    for _ in range(10):
        result = tick(sb, ctx, canary=400, service=400)
        assert result.exit_code == 0, result
        seen.append(load_spec(sb.rollout()).canary_percent)
        if seen[-1] == 25:
            break
    assert seen[-1] == 25, seen
    assert seen.index(10) >= 2  # it waited for the bake at 5% (PASS held for 10m)
    assert live_percents(sb) == {STABLE: 75, CANARY: 25}
    subjects = sb.remote_log("--format=%b").splitlines()  # a line per service that acted
    assert any(s.startswith("reconcile(ion-api): advance canary 5% -> 10%") for s in subjects)
    assert any(s.startswith("reconcile(ion-api): advance canary 10% -> 25%") for s in subjects)


def test_canary_with_too_little_traffic_stays_inconclusive(sb: Sandbox) -> None:
    # A bad canary (50% errors) that gets 20 requests a window can neither be rolled back nor
    # promoted: the judge needs min_requests (100) per window.
    sb.emu.behave(CANARY, error_rate=0.5)
    sb.commit_rollout(
        rollout(sb, probes=False, auto_advance="true", bake="5m"), "quiet canary, auto advance"
    )
    ctx = context(sb, metrics=True)
    assert apply_all(ctx).exit_code == 0
    for _ in range(4):
        result = tick(sb, ctx, canary=20, service=0)
        assert result.exit_code == 0
        verdict = result.outcomes[0].verdict
        assert verdict is not None and verdict.outcome is Outcome.INCONCLUSIVE
    assert live_percents(sb) == {STABLE: 95, CANARY: 5}
    assert load_spec(sb.rollout()).canary_percent == 5
    # plan says why it waits, from the verdict recorded in state/
    plan = plan_all(sb.repo, [], CloudRunBackend(), sb.now())
    assert plan.services[0].verdict is not None
    assert "min_requests" in plan.services[0].verdict.summary()


def test_a_blatant_failure_rolls_back_on_the_first_run_with_enough_requests(sb: Sandbox) -> None:
    """Fail fast on the emulator clock with Google's delays: 600 canary requests failing 30%
    in the first minutes of the stage are judged as a partial span once readable, though no
    whole window has ended and two failing windows would be needed."""
    ctx = context(sb, metrics=True)
    assert apply_all(ctx).exit_code == 0
    sb.emu.behave(CANARY, error_rate=0.3)
    sb.emu.load("ion-api", 600, tag="canary")
    sb.emu.advance_clock(LAG + 120)  # readable, two minutes into the first 5m window
    assert apply_all(ctx).exit_code == 4
    assert live_percents(sb) == {STABLE: 100}
