"""The operator verbs (and `probe`, `bench`) when one service id is in several regions, on
the emulator and a real git repository with a bare remote: a file per region
(`rollout/<region>/ion-api.yaml`), and one file with `waves:`.

Without `--region`, a verb that edits one file refuses a service id in several files in one
line (exit 1, no API write, no commit); `--region` picks the rollout; `rollback` rolls back
every region (each its own traffic write, record and commit) unless told which; a file with
waves is edited for one region only where the file has per-region state (`rolled_back_regions`).
The status site and the plan's errors name the regions as apply and status do.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.builders import context
from tests.e2e.test_reconcile_cli import reconcile

from reconciler import clients
from reconciler.errors import ReconcileError
from reconciler.loader import load_spec
from reconciler.manual import abort, pause, promote, retry, rollback
from reconciler.reconcile import apply_all, plan_all
from reconciler.sandbox import Sandbox, sandbox
from reconciler.views.plan import plan_json, plan_text

PROJECT = "naeda-genesis"
STABLE = "ion-api-00001-aaa"
CANARY = "ion-api-00002-bbb"
US, EU, ASIA = "us-central1", "europe-west1", "asia-northeast1"
FILES = {
    region: f"rollout/{region}/ion-api.yaml" for region in (US, EU)
}  # sorted: europe-west1 first


def scenario(regions: tuple[str, ...], canary: int) -> dict[str, object]:
    """ion-api in `regions`, each serving its canary at `canary`%."""
    traffic = {STABLE: 100 - canary, CANARY: canary} if canary else {STABLE: 100}
    return {
        "project": PROJECT,
        "region": US,
        "services": [
            {
                "name": "ion-api",
                "region": region,
                "traffic": traffic,
                "revisions": [
                    {"name": STABLE, "behavior": {"error_rate": 0.0}},
                    {"name": CANARY, "behavior": {"error_rate": 0.0}},
                ],
            }
            for region in regions
        ],
    }


def per_region(region: str) -> str:
    return (
        f"service: ion-api\nproject: {PROJECT}\nregion: {region}\n"
        f"revisions: {{stable: {STABLE}, canary: {CANARY}}}\n"
        "canary_percent: 5\nstages: [5, 25, 100]\nbake: 1h\n"
    )


WAVES = (
    f"service: ion-api\nproject: {PROJECT}\nwaves: [[{US}], [{EU}, {ASIA}]]\n"
    f"revisions: {{stable: {STABLE}, canary: {CANARY}}}\n"
    "canary_percent: 5\nstages: [5, 25, 100]\nbake: 1h\n"
)


@pytest.fixture
def two(tmp_path: Path) -> Iterator[Sandbox]:
    """ion-api with a file per region, both regions applied at 5%."""
    files = {FILES[r]: per_region(r) for r in (US, EU)}
    with sandbox(tmp_path, scenario=scenario((US, EU), 0), rollout=files) as sb:
        assert apply_all(context(sb)).exit_code == 0
        yield sb


@pytest.fixture
def waves(tmp_path: Path) -> Iterator[Sandbox]:
    """ion-api in one file with waves over three regions, each serving its canary at 5%."""
    rollout = {"rollout/ion-api.yaml": WAVES}
    with sandbox(tmp_path, scenario=scenario((US, EU, ASIA), 5), rollout=rollout) as sb:
        yield sb


def canary_percent(region: str) -> int:
    name = f"projects/{PROJECT}/locations/{region}/services/ion-api"
    svc = clients.services_client().get_service(name=name)
    return sum(t.percent for t in svc.traffic_statuses if t.revision == CANARY)


def subjects(sb: Sandbox, n: int) -> list[str]:
    return sb.remote_log(f"-{n}", "--format=%s").splitlines()


# --- a file per region --------------------------------------------------------------------------
VERBS = [
    # the command, then what follows the service id
    (["promote"], ["--force"]),
    (["pause"], []),
    (["resume"], []),
    (["retry"], ["--reason", "fixed"]),
    (["abort"], []),
    (["canary", "start"], ["--revision", CANARY]),
]


@pytest.mark.parametrize(("verb", "rest"), VERBS, ids=[" ".join(v) for v, _ in VERBS])
def test_a_verb_on_a_service_in_two_files_is_refused_in_one_line(
    two: Sandbox, verb: list[str], rest: list[str]
) -> None:
    head, local = two.remote_log("-1", "--format=%H"), two.git("rev-parse", "HEAD")
    writes = two.emu.writes
    run = reconcile(two, *verb, "ion-api", *rest)
    assert run.returncode == 1, (run.stdout, run.stderr)
    assert run.stderr.splitlines() == [
        "error: ion-api is in 2 regions: europe-west1, us-central1; pass --region"
    ], run.stderr
    assert two.emu.writes == writes
    assert two.remote_log("-1", "--format=%H") == head
    assert two.git("rev-parse", "HEAD") == local
    assert two.git("status", "--porcelain") == ""


def test_region_picks_the_rollout_each_verb_acts_on(two: Sandbox) -> None:
    ctx = context(two)
    paused = pause(ctx, "ion-api", regions=[EU])
    assert paused.name == "ion-api (europe-west1)"
    assert load_spec(two.repo / FILES[EU]).paused and not load_spec(two.repo / FILES[US]).paused
    assert subjects(two, 1) == [
        "reconcile(ion-api (europe-west1)): pause paused: no advance, no drift correction "
        "until resume"
    ]
    trailers = two.remote_log("-1", "--format=%(trailers:key=Reconcile-Rollout,valueonly)")
    assert trailers.strip() == f"{PROJECT}/{EU}/ion-api"

    promote(ctx, "ion-api", regions=[US], force=True)
    assert load_spec(two.repo / FILES[US]).canary_percent == 25
    assert load_spec(two.repo / FILES[EU]).canary_percent == 5

    (aborted,) = abort(ctx, "ion-api", regions=[EU])
    assert aborted.name == "ion-api (europe-west1)"
    assert canary_percent(EU) == 0 and canary_percent(US) == 5
    assert load_spec(two.repo / FILES[US]).canary_percent == 25

    (back,) = rollback(ctx, "ion-api", "5xx in us", regions=[US])
    assert back.rolled_back and back.name == "ion-api (us-central1)"
    assert canary_percent(US) == 0
    assert load_spec(two.repo / FILES[US]).rolled_back is not None
    assert load_spec(two.repo / FILES[EU]).rolled_back is None

    retry(ctx, "ion-api", "fixed", regions=[US])
    assert load_spec(two.repo / FILES[US]).rolled_back is None
    assert "rolled_back" not in two.remote_file(FILES[US])


def test_rollback_without_region_rolls_back_every_region_each_with_its_own_record(
    two: Sandbox,
) -> None:
    assert canary_percent(US) == canary_percent(EU) == 5
    run = reconcile(two, "--no-color", "rollback", "ion-api", "--force", "--reason", "5xx")
    assert run.returncode == 0, (run.stdout, run.stderr)
    lines = sorted(run.stdout.splitlines())
    assert [x.split(":")[0] for x in lines] == [
        "rolled back ion-api (europe-west1)",
        "rolled back ion-api (us-central1)",
    ], lines
    assert canary_percent(US) == canary_percent(EU) == 0
    assert sorted(s.split(":")[0] for s in subjects(two, 2)) == [
        "reconcile(ion-api (europe-west1))",
        "reconcile(ion-api (us-central1))",
    ]
    for region in (US, EU):
        assert "rolled_back:" in two.remote_file(FILES[region])
        status = two.remote_file(f"state/{PROJECT}/{region}/ion-api/status.yaml")
        assert "phase: rolled_back" in status
    again = reconcile(two, "--no-color", "rollback", "ion-api", "--force")
    assert again.returncode == 0 and again.stdout.count("already rolled back") == 2


def test_the_status_site_names_each_region_as_status_does(two: Sandbox, tmp_path: Path) -> None:
    out = tmp_path / "site"
    built = reconcile(two, "site", "--out", str(out))
    assert built.returncode == 0, built.stderr
    index = (out / "index.html").read_text(encoding="utf-8")
    for region in (US, EU):
        assert f">ion-api ({region})</a>" in index, index
        page = (out / f"ion-api.{PROJECT}.{region}.html").read_text(encoding="utf-8")
        assert f"<title>ion-api ({region}): canary rollout</title>" in page
    status = reconcile(two, "status", "--offline")
    assert "ion-api (europe-west1)" in status.stdout and "ion-api (us-central1)" in status.stdout


def test_plan_errors_from_gather_name_the_region(two: Sandbox) -> None:
    # europe-west1's state is refused (a symbolic link), and a second file claims us-central1.
    status = two.repo / "state" / PROJECT / EU / "ion-api" / "status.yaml"
    target = status.with_name("elsewhere.yaml")
    status.rename(target)
    os.symlink(target, status)
    copy = two.repo / "rollout" / "team-b" / "ion-api.yaml"
    copy.parent.mkdir()
    copy.write_text(per_region(US), encoding="utf-8")
    plan = plan_all(two.repo, [], None, two.now(), offline=True)
    text = plan_text(plan)
    errors = [x for x in text.splitlines() if x.startswith("x ")]
    assert errors and all(
        x.startswith(("x ion-api (europe-west1): ", "x ion-api (us-central1): ")) for x in errors
    ), text
    assert any("ion-api (europe-west1): " in x and "status.yaml" in x for x in errors)
    assert sum("names the same rollout" in x and "(us-central1)" in x for x in errors) == 2
    regions = {e.get("region") for e in json.loads(plan_json(plan))["errors"]}
    assert regions == {US, EU}


def test_probe_and_bench_act_on_the_region_named(two: Sandbox) -> None:
    refused = reconcile(two, "probe", "ion-api")
    assert refused.returncode == 1
    assert refused.stderr.splitlines() == [
        "error: ion-api is in 2 regions: europe-west1, us-central1; pass --region"
    ]
    run = reconcile(two, "bench", "ion-api", "--iterations", "1", "--region", EU)
    assert run.returncode == 0, (run.stdout, run.stderr)
    assert (two.repo / "state" / PROJECT / EU / "ion-api" / "baselines" / "latest.json").is_file()
    assert not (two.repo / "state" / PROJECT / US / "ion-api" / "baselines").exists()


# --- one file with waves ------------------------------------------------------------------------
def test_rollback_of_a_file_with_waves_rolls_back_every_region_now(waves: Sandbox) -> None:
    assert [canary_percent(r) for r in (US, EU, ASIA)] == [5, 5, 5]
    done = rollback(context(waves), "ion-api", "5xx everywhere")
    assert [o.name for o in done] == [f"ion-api ({r})" for r in (US, EU, ASIA)]
    assert all(o.rolled_back and o.commit for o in done)
    assert [canary_percent(r) for r in (US, EU, ASIA)] == [0, 0, 0]
    spec = load_spec(waves.rollout())
    assert spec.canary_percent == 0 and spec.rolled_back is not None
    assert not spec.rolled_back_regions  # the file's block, not an entry per region
    assert [s.split(":")[0] for s in subjects(waves, 3)] == [
        f"reconcile(ion-api ({r}))" for r in (ASIA, EU, US)
    ]
    for region in (US, EU, ASIA):
        status = waves.remote_file(f"state/{PROJECT}/{region}/ion-api/status.yaml")
        assert "phase: rolled_back" in status


def test_some_regions_of_a_file_with_waves_roll_back_and_retry_alone(waves: Sandbox) -> None:
    ctx = context(waves)
    done = rollback(ctx, "ion-api", "5xx in wave 2", regions=[EU, ASIA])
    assert [o.name for o in done] == [f"ion-api ({r})" for r in (EU, ASIA)]
    assert [canary_percent(r) for r in (US, EU, ASIA)] == [5, 0, 0]
    spec = load_spec(waves.rollout())
    assert spec.rolled_back is None and spec.canary_percent == 5
    assert sorted(spec.rolled_back_regions) == sorted([EU, ASIA])

    with pytest.raises(ReconcileError, match="pass --reason"):
        retry(ctx, "ion-api", regions=[EU])
    result = retry(ctx, "ion-api", "config fixed in europe", regions=[EU])
    assert result.name == "ion-api (europe-west1)"
    spec = load_spec(waves.rollout())
    assert list(spec.rolled_back_regions) == [ASIA]  # Asia still holds the others
    assert "asia-northeast1:" in waves.remote_file("rollout/ion-api.yaml")
    assert subjects(waves, 1)[0].startswith("reconcile(ion-api (europe-west1)): retry")


def test_a_file_wide_verb_on_some_regions_of_a_file_with_waves_is_refused(
    waves: Sandbox,
) -> None:
    head, writes = waves.remote_log("-1", "--format=%H"), waves.emu.writes
    run = reconcile(waves, "pause", "ion-api", "--region", EU)
    assert run.returncode == 1, (run.stdout, run.stderr)
    assert len(run.stderr.strip().splitlines()) == 1
    assert (
        "pause edits the whole file, whose waves roll ion-api out in us-central1, europe-west1, "
        "asia-northeast1 together; it cannot act on europe-west1 alone" in run.stderr
    )
    assert waves.remote_log("-1", "--format=%H") == head and waves.emu.writes == writes
    whole = reconcile(waves, "pause", "ion-api")
    assert whole.returncode == 0, whole.stderr
    assert load_spec(waves.rollout()).paused


def test_abort_of_a_file_with_waves_sends_every_region_to_stable_now(waves: Sandbox) -> None:
    done = abort(context(waves), "ion-api")
    assert [o.name for o in done] == [f"ion-api ({r})" for r in (US, EU, ASIA)]
    assert [canary_percent(r) for r in (US, EU, ASIA)] == [0, 0, 0]
    spec = load_spec(waves.rollout())
    assert spec.paused and spec.canary_percent == 0 and spec.rolled_back is None
