"""Multi-region waves on the emulator: one rollout file, ion-api in three regions.

The emulator serves the same service (same revision names) in us-central1, europe-west1 and
asia-northeast1; each tick serves real requests in every region where the canary has
traffic, moves the emulator clock one gate window and runs `apply`, so each region is judged
on its own measured windows (Cloud Monitoring series filtered by location) and keeps its
own observed state.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.builders import context

from reconciler import clients
from reconciler.backends.cloudrun import CloudRunBackend
from reconciler.loader import load_spec
from reconciler.manual import retry
from reconciler.reconcile import Context, RunResult, apply_all, plan_all
from reconciler.sandbox import Sandbox, sandbox
from reconciler.views.plan import plan_text

PROJECT = "naeda-genesis"
STABLE = "ion-api-00041-abc"
CANARY = "ion-api-00042-xyz"
US, EU, ASIA = "us-central1", "europe-west1", "asia-northeast1"
REGIONS = (US, EU, ASIA)
WINDOW = 300.0
LAG = 180.0

SCENARIO = {
    "project": PROJECT,
    "region": US,
    "services": [
        {
            "name": "ion-api",
            "region": region,
            "traffic": {STABLE: 100},
            "revisions": [
                {"name": STABLE, "behavior": {"error_rate": 0.0}},
                {"name": CANARY, "behavior": {"error_rate": 0.0}},
            ],
        }
        for region in REGIONS
    ],
}

ROLLOUT = f"""\
service: ion-api
project: {PROJECT}
waves: [[{US}], [{EU}, {ASIA}]]
revisions: {{stable: {STABLE}, canary: {CANARY}}}
canary_percent: 5
stages: [5, 10, 25, 50, 100]
auto_advance: true
bake: 10m
gates:
  window: 5m
  min_requests: 100
  consecutive_failures: 2
  error_rate: {{max: 5%}}
metrics: {{provider: cloud-monitoring}}
"""


@pytest.fixture
def sb(tmp_path: Path) -> Iterator[Sandbox]:
    with sandbox(tmp_path, scenario=SCENARIO, rollout={"rollout/ion-api.yaml": ROLLOUT}) as s:
        yield s


def name(region: str) -> str:
    return f"projects/{PROJECT}/locations/{region}/services/ion-api"


def canary_percent(region: str) -> int:
    svc = clients.services_client().get_service(name=name(region))
    return sum(t.percent for t in svc.traffic_statuses if t.revision == CANARY)


def percents() -> dict[str, int]:
    return {region: canary_percent(region) for region in REGIONS}


def tick(sb: Sandbox, ctx: Context) -> RunResult:
    """Serve every region (its service URL, and its canary tag where the canary serves), then
    apply one window later."""
    for region in REGIONS:
        sb.emu.load(name(region), 200)
        if canary_percent(region):
            sb.emu.load(name(region), 300, tag="canary")
    sb.emu.advance_clock(WINDOW)
    return apply_all(ctx)


def file_percent(sb: Sandbox) -> int:
    return load_spec(sb.rollout()).canary_percent


def test_wave_two_starts_a_stage_only_after_wave_one_passed_it_for_bake(sb: Sandbox) -> None:
    ctx = context(sb, metrics=True)
    assert apply_all(ctx).exit_code == 0
    assert percents() == {US: 5, EU: 0, ASIA: 0}
    sb.emu.advance_clock(LAG)
    history = [(percents(), file_percent(sb))]
    for _ in range(12):
        result = tick(sb, ctx)
        assert result.exit_code == 0, result
        history.append((percents(), file_percent(sb)))
        if history[-1][0][EU] >= 10:
            break
    # Wave 2 waits at 0% until wave 1 passed 5% for bake, which is also when the lead moved
    # the file to 10%; it takes 10% only once wave 1 passed 10% for bake (file at 25%).
    first_eu = next(i for i, (p, _) in enumerate(history) if p[EU] > 0)
    first_ten = next(i for i, (_, f) in enumerate(history) if f >= 10)
    assert first_eu >= first_ten, history
    assert all(p[EU] == p[ASIA] for p, _ in history), history
    assert all(p[EU] <= p[US] for p, _ in history), history
    ten = next(i for i, (p, _) in enumerate(history) if p[EU] >= 10)
    assert history[ten][1] >= 25, history
    # Each region's observed state is its own.
    assert "canary 0% -> 5%" in sb.remote_log("--format=%s%n%b")


def test_a_failing_region_in_wave_two_rolls_back_at_once_and_its_sibling_holds(
    sb: Sandbox,
) -> None:
    ctx = context(sb, metrics=True)
    assert apply_all(ctx).exit_code == 0
    sb.emu.advance_clock(LAG)
    for _ in range(12):
        assert tick(sb, ctx).exit_code == 0
        if percents()[ASIA] > 0:
            break
    assert percents()[EU] == percents()[ASIA] == 5

    # Asia's canary breaks: Asia alone is rolled back, in the run that judges it failing.
    sb.emu.behave(f"{name(ASIA)}/revisions/{CANARY}", error_rate=0.5)
    codes = []
    while len(codes) < 3 and 4 not in codes:
        before = percents()
        codes.append(tick(sb, ctx).exit_code)
    assert codes[-1] == 4 and set(codes[:-1]) <= {0}, codes
    now = percents()
    assert now[ASIA] == 0
    assert now[EU] == before[EU] and now[US] == before[US]
    spec = load_spec(sb.rollout())
    assert spec.rolled_back is None and spec.canary_percent == file_percent(sb)
    assert list(spec.rolled_back_regions) == [ASIA]
    assert "error_rate" in spec.rolled_back_regions[ASIA].reason
    assert ASIA in sb.remote_file("rollout/ion-api.yaml")

    # Everyone else holds, however long their gates pass: no stage starts anywhere.
    for _ in range(5):
        assert tick(sb, ctx).exit_code == 0
        assert percents() == now
    plan = plan_all(sb.repo, [], CloudRunBackend(), sb.now())
    out = plan_text(plan)
    assert out.count("HOLD:") == 1 and "asia-northeast1 rolled back" in out
    assert "wave 2: europe-west1, asia-northeast1" in out

    # The operator retries: the hold lifts and Asia climbs back from the first stage.
    sb.emu.behave(f"{name(ASIA)}/revisions/{CANARY}", error_rate=0.0)
    retry(ctx, "ion-api", "the 5xx came from a bad config, fixed")
    assert not load_spec(sb.rollout()).rolled_back_regions
    assert tick(sb, ctx).exit_code == 0
    assert percents()[ASIA] == 5
