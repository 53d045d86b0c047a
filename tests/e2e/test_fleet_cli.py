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


def test_the_same_service_in_another_region_is_refused_while_state_is_per_service(
    sb: Sandbox,
) -> None:
    moved = _move_to_region_folder(sb)
    other = sb.repo / "rollout" / "europe-west1" / "ion-api.yaml"
    other.parent.mkdir()
    other.write_text(
        moved.read_text(encoding="utf-8").replace("us-central1", "europe-west1"),
        encoding="utf-8",
    )
    valid = reconcile(sb, "validate")
    assert valid.returncode == 1
    assert "names service ion-api too (project naeda-genesis, region" in valid.stderr


def test_shards_partition_the_fleet_and_a_bad_shard_is_a_usage_error(sb: Sandbox) -> None:
    seen = []
    for k in (1, 2, 3):
        plan = reconcile(sb, "plan", "--format", "json", "--shard", f"{k}/3")
        assert plan.returncode == 0, plan.stderr
        seen += [s["service"] for s in json.loads(plan.stdout)["services"]]
    assert seen == ["ion-api"]
    bad = reconcile(sb, "apply", "--shard", "4/3")
    assert bad.returncode == 1 and "K must be between 1 and N" in bad.stderr
