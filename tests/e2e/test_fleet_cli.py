"""A fleet's rollout files: sub-folders of rollout/, one file per rollout, `--shard K/N`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.sandbox import Sandbox, sandbox
from tests.e2e.test_reconcile_cli import reconcile


@pytest.fixture
def sb(tmp_path: Path) -> Iterator[Sandbox]:
    with sandbox(tmp_path) as s:
        yield s


def _move_to_region_folder(sb: Sandbox) -> Path:
    folder = sb.repo / "rollout" / "us-central1"
    folder.mkdir()
    moved = folder / "ion-api.yaml"
    sb.rollout().rename(moved)
    sb.git("add", "-A")
    sb.git("commit", "--quiet", "-m", "rollout files by region")
    return moved


def test_a_rollout_file_in_a_sub_folder_is_planned_and_validated(sb: Sandbox) -> None:
    moved = _move_to_region_folder(sb)
    plan = reconcile(sb, "plan", "--format", "json")
    assert plan.returncode == 0, plan.stderr
    assert [s["service"] for s in json.loads(plan.stdout)["services"]] == ["ion-api"]
    valid = reconcile(sb, "validate")
    assert valid.returncode == 0, valid.stderr
    assert f"{moved.relative_to(sb.repo)}: ok" in valid.stdout or f"{moved}: ok" in valid.stdout


def test_two_files_naming_one_rollout_are_an_error_naming_both(sb: Sandbox) -> None:
    moved = _move_to_region_folder(sb)
    copy = sb.repo / "rollout" / "team-b" / "ion-api.yaml"
    copy.parent.mkdir()
    copy.write_text(moved.read_text(encoding="utf-8"), encoding="utf-8")
    sb.git("add", "-A")
    sb.git("commit", "--quiet", "-m", "a second file for the same rollout")
    plan = reconcile(sb, "plan")
    assert plan.returncode == 1
    assert "names the same rollout" in plan.stdout + plan.stderr
    for out in (plan.stdout + plan.stderr, reconcile(sb, "validate").stderr):
        assert "team-b/ion-api.yaml" in out and "us-central1/ion-api.yaml" in out
    applied = reconcile(sb, "apply")
    assert applied.returncode == 1 and "names the same rollout" in applied.stderr
    assert sb.emu.writes == 0  # neither file is applied


TWO_REGIONS = {
    "project": "naeda-genesis",
    "region": "us-central1",
    "services": [
        {
            "name": "ion-api",
            "region": region,
            "traffic": {"ion-api-00001-aaa": 100},
            "revisions": [{"name": "ion-api-00001-aaa"}, {"name": "ion-api-00002-bbb"}],
        }
        for region in ("us-central1", "europe-west1")
    ],
}


def _rollout(region: str, percent: int) -> str:
    return (
        f"service: ion-api\nproject: naeda-genesis\nregion: {region}\n"
        "revisions: {stable: ion-api-00001-aaa, canary: ion-api-00002-bbb}\n"
        f"canary_percent: {percent}\nstages: [5, 25, 100]\n"
    )


def test_the_same_service_in_two_regions_is_two_rollouts_with_two_state_folders(
    tmp_path: Path,
) -> None:
    files = {
        "rollout/us-central1/ion-api.yaml": _rollout("us-central1", 5),
        "rollout/europe-west1/ion-api.yaml": _rollout("europe-west1", 5),
    }
    with sandbox(tmp_path, scenario=TWO_REGIONS, rollout=files) as sb:
        assert reconcile(sb, "validate").returncode == 0
        applied = reconcile(sb, "apply")
        assert applied.returncode == 0, applied.stdout + applied.stderr
        for region, percent in (("us-central1", 5), ("europe-west1", 5)):
            status = sb.remote_file(f"state/naeda-genesis/{region}/ion-api/status.yaml")
            assert f"stage: {percent}\n" in status, status
            assert f"percent: {100 - percent}\n" in status.split("etag:")[0], status
        assert sb.emu.writes == 2  # one traffic write per region
        assert not (sb.repo / "state" / "ion-api").exists()


def test_shards_partition_the_fleet_and_a_bad_shard_is_a_usage_error(sb: Sandbox) -> None:
    seen = []
    for k in (1, 2, 3):
        plan = reconcile(sb, "plan", "--format", "json", "--shard", f"{k}/3")
        assert plan.returncode == 0, plan.stderr
        seen += [s["service"] for s in json.loads(plan.stdout)["services"]]
    assert seen == ["ion-api"]
    bad = reconcile(sb, "apply", "--shard", "4/3")
    assert bad.returncode == 1 and "K must be between 1 and N" in bad.stderr


def test_state_migrate_moves_old_state_once_and_refuses_two_claimants(sb: Sandbox) -> None:
    assert reconcile(sb, "apply").returncode == 0
    sb.git("mv", "state/naeda-genesis/us-central1/ion-api", "state/ion-api")
    sb.git("commit", "--quiet", "-m", "state as the older version kept it")
    dry = reconcile(sb, "state", "migrate", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout == ("would move state/ion-api/ -> state/naeda-genesis/us-central1/ion-api/\n")
    assert (sb.repo / "state" / "ion-api" / "status.yaml").is_file()

    other = sb.repo / "rollout" / "europe-west1" / "ion-api.yaml"
    other.parent.mkdir()
    other.write_text(
        sb.rollout().read_text(encoding="utf-8").replace("us-central1", "europe-west1"),
        encoding="utf-8",
    )
    refused = reconcile(sb, "state", "migrate")
    assert refused.returncode == 1
    assert refused.stderr.startswith("state/ion-api/: old-layout state claimed by 2 rollouts")
    other.unlink()

    moved = reconcile(sb, "state", "migrate")
    assert moved.returncode == 0, moved.stderr
    assert "moved state/ion-api/ -> state/naeda-genesis/us-central1/ion-api/" in moved.stdout
    assert sb.git("status", "--porcelain", "--", "state") == ""  # committed
    again = reconcile(sb, "state", "migrate")
    assert again.returncode == 0 and again.stdout.startswith("nothing to migrate")
