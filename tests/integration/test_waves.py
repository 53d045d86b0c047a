"""Multi-region waves on the emulator: one rollout file, ion-api in three regions.

The emulator serves the same service (same revision names) in us-central1, europe-west1 and
asia-northeast1; each tick serves real requests in every region where the canary has
traffic, moves the emulator clock one gate window and runs `apply`, so each region is judged
on its own measured windows (Cloud Monitoring series filtered by location) and keeps its
own observed state.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from tests.builders import context
from tests.reliability.support import reconcile_cli

from reconciler import clients
from reconciler.backends.cloudrun import CloudRunBackend
from reconciler.gitops import trailer_pairs
from reconciler.loader import load_spec
from reconciler.manual import retry
from reconciler.notices import verify
from reconciler.notify import notified
from reconciler.reconcile import Context, RunResult, apply_all, plan_all
from reconciler.runtime import build_context
from reconciler.sandbox import Sandbox, sandbox
from reconciler.stream import CloudLogging, Controller, StreamResult
from reconciler.testing.webhooks import WebhookRecorder
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


# --- naming the regions: apply's output and the run's commit -------------------------------------
def test_apply_output_and_the_run_s_commit_name_each_region(sb: Sandbox) -> None:
    run = reconcile_cli(sb.repo, "--no-color", "apply")
    assert run.returncode == 0, (run.stdout, run.stderr)
    lines = run.stdout.splitlines()
    # The lead takes 5%; wave 2 tags its canary at 0%: one line per region, each named.
    heads = sorted(x.split(": ")[0] for x in lines if x.startswith("applied "))
    assert heads == [f"applied ion-api ({region})" for region in sorted(REGIONS)], lines
    message = sb.remote_log("-1", "--format=%B")
    assert "reconcile(ion-api (us-central1)): canary 0% -> 5%" in message
    # Each region's trailers: `Reconcile-Rollout` right after its `Reconcile-Service`.
    pairs = trailer_pairs(message)
    after = [pairs[i + 1] for i, p in enumerate(pairs) if p == ("Reconcile-Service", "ion-api")]
    assert after == [("Reconcile-Rollout", f"{PROJECT}/{r}/ion-api") for r in sorted(REGIONS)]


# --- notices: every region's, and the wave hold's own, told once ---------------------------------
NOTIFY = """\
notify:
  - kind: webhook
    url: {env: HOOK_URL}
    secret: {env: HOOK_KEY}
"""


@pytest.fixture
def sb_fleet(tmp_path: Path) -> Iterator[Sandbox]:
    """The waves file in a sub-folder of rollout/, with a signed webhook channel."""
    files = {"rollout/fleet/ion-api.yaml": ROLLOUT + NOTIFY}
    with sandbox(tmp_path, scenario=SCENARIO, rollout=files) as s:
        yield s


def test_a_region_s_rollback_and_the_wave_hold_are_told_once_each(
    sb_fleet: Sandbox, hooks: WebhookRecorder
) -> None:
    sb = sb_fleet
    ctx = context(sb, metrics=True)
    warnings: list[str] = []
    environ = {"HOOK_URL": hooks.url("/hook"), "HOOK_KEY": "k3y"}

    def notified_tick() -> RunResult:
        return notified(
            sb.repo, lambda: tick(sb, ctx), warn=warnings.append, now=sb.now, environ=environ
        )

    assert apply_all(ctx).exit_code == 0
    sb.emu.advance_clock(LAG)
    for _ in range(12):
        assert notified_tick().exit_code == 0
        if percents()[ASIA] > 0:
            break
    assert percents()[ASIA] == 5
    sb.emu.behave(f"{name(ASIA)}/revisions/{CANARY}", error_rate=0.5)
    codes: list[int] = []
    while len(codes) < 3 and 4 not in codes:
        codes.append(notified_tick().exit_code)
    assert codes[-1] == 4, codes
    for _ in range(3):  # holding: nothing new to tell, however many runs
        assert notified_tick().exit_code == 0
    assert not warnings, warnings

    told = [json.loads(r.body) for r in hooks.requests]
    rollbacks = [t for t in told if t["event"] == "rollback"]
    holds = [t for t in told if t["event"] == "wave_hold"]
    assert [(t["region"], t["title"].split(":")[0]) for t in rollbacks] == [
        (ASIA, "ion-api (asia-northeast1) rolled back")
    ], told
    assert len(holds) == 1, told
    assert holds[0]["region"] == US  # told by the first region holding, the lead
    assert holds[0]["title"] == f"ion-api held in every region: canary {CANARY}"
    assert holds[0]["reason"].startswith("asia-northeast1 rolled back (error_rate")
    for r in hooks.requests:
        assert verify(b"k3y", r.headers, r.body, int(time.time()))


# --- reports: one per region, or the one --region names ------------------------------------------
def test_report_writes_one_report_per_region_or_the_one_named(sb: Sandbox) -> None:
    assert apply_all(context(sb, metrics=True)).exit_code == 0
    run = reconcile_cli(sb.repo, "report", "ion-api", "--offline")
    assert run.returncode == 0, (run.stdout, run.stderr)
    for region in REGIONS:
        assert f"ion-api ({region}): interim report written to " in run.stdout
        reports = sb.repo / "state" / PROJECT / region / "ion-api" / "reports"
        assert (reports / "interim-latest.md").is_file()

    whole = reconcile_cli(sb.repo, "report", "ion-api", "--offline", "--stdout")
    assert whole.returncode == 1 and not whole.stdout
    assert whole.stderr.strip().count("\n") == 0
    assert "3 rollouts" in whole.stderr and "--region" in whole.stderr

    one = reconcile_cli(sb.repo, "report", "ion-api", "--stdout", "--region", EU)
    assert one.returncode == 0, one.stderr
    assert one.stdout.startswith("# ion-api (europe-west1): interim report\n")

    nowhere = reconcile_cli(sb.repo, "report", "ion-api", "--region", "us-east4")
    assert nowhere.returncode == 1 and nowhere.stderr.strip().count("\n") == 0
    assert "no rollout in region us-east4" in nowhere.stderr


# --- the stream: every region judged on its own request logs ------------------------------------
LIVE = {
    **SCENARIO,
    "services": [
        {
            **svc,
            "traffic": {STABLE: 95, CANARY: 5},
            "tags": {"stable": STABLE, "canary": CANARY},
        }
        for svc in SCENARIO["services"]
    ],
}


def stream_until_europe_is_rolled_back(sb: Sandbox) -> tuple[list[str], StreamResult]:
    """Run the stream controller (as `watch --stream` does) while every region's canary
    serves and Europe's fails, until Europe's canary is off; its lines and result."""
    sb.emu.logs.delay = 0.3
    ctx = build_context(sb.repo, with_metrics=False)
    lines: list[str] = []
    results: list[StreamResult] = []
    controller = Controller(ctx, CloudLogging(), refresh=timedelta(seconds=1), report=lines.append)
    stop = threading.Event()
    thread = threading.Thread(target=lambda: results.append(controller.run(stop)))
    thread.start()
    try:
        deadline = time.monotonic() + 30
        sb.emu.behave(f"{name(EU)}/revisions/{CANARY}", error_rate=0.5)
        while time.monotonic() < deadline and canary_percent(EU) != 0:
            for region in REGIONS:
                sb.emu.load(name(region), 5, tag="canary", concurrency=1)
            time.sleep(0.05)
        assert canary_percent(EU) == 0, lines
        assert canary_percent(US) == canary_percent(ASIA) == 5
    finally:
        stop.set()
        thread.join(timeout=20)
    return lines, results[0]


def test_the_stream_rolls_back_the_failing_region_alone(tmp_path: Path) -> None:
    with sandbox(tmp_path, scenario=LIVE, rollout={"rollout/ion-api.yaml": ROLLOUT}) as sb:
        lines, result = stream_until_europe_is_rolled_back(sb)
        assert result.rollbacks == ["ion-api (europe-west1)"], lines
        assert any("ion-api (europe-west1) ROLLED BACK: stream: error_rate" in x for x in lines)
        # The file records Europe's rollback as its gates would: the others hold, the file's
        # stage stays and no file-wide block stops them.
        spec = load_spec(sb.rollout())
        assert list(spec.rolled_back_regions) == [EU] and spec.rolled_back is None
        assert spec.canary_percent == 5
        message = sb.remote_log("-1", "--format=%B")
        assert message.startswith("reconcile(ion-api (europe-west1)): rollback canary 5% -> 0%")
        assert ("Reconcile-Rollout", f"{PROJECT}/{EU}/ion-api") in trailer_pairs(message)


def test_the_stream_tells_one_file_per_region_apart(tmp_path: Path) -> None:
    """The same service id in a file per region (sub-folders): Europe's file is rolled back,
    the others are left alone."""
    waves = f"waves: [[{US}], [{EU}, {ASIA}]]"
    files = {f"rollout/{r}/ion-api.yaml": ROLLOUT.replace(waves, f"region: {r}") for r in REGIONS}
    with sandbox(tmp_path, scenario=LIVE, rollout=files) as sb:
        lines, result = stream_until_europe_is_rolled_back(sb)
        assert result.rollbacks == ["ion-api (europe-west1)"], lines
        for region in REGIONS:
            spec = load_spec(sb.repo / "rollout" / region / "ion-api.yaml")
            assert (spec.rolled_back is not None) == (region == EU), region
