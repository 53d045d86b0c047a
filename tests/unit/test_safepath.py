"""One safe-path helper for every read and write under rollout/ and state/: a symbolic link
anywhere on the path, or a path leading out of the repository, is refused, for each kind of
path the reconciler touches."""

from __future__ import annotations

import os
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from reconciler import safepath, state
from reconciler.cli import main
from reconciler.loader import SpecError, load_spec
from reconciler.model import Phase, ServiceStatus, TrafficSplit, WindowStats
from reconciler.probes import Baseline, save_baseline
from reconciler.state import (
    Event,
    EventKind,
    StateError,
    append_events,
    append_metrics,
    atomic_write_text,
    load_status,
    metrics_path,
    read_events,
    read_metrics,
    read_status,
    write_status,
)
from tests.refs import ION, ION_DIR

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
TOKEN = "ghp_credentials-file-token-0123456789"
ROLLOUT = """\
service: ion-api
project: naeda-genesis
region: us-central1
revisions: {stable: ion-api-00041-abc, canary: ion-api-00042-xyz}
canary_percent: 5
stages: [5, 10, 25, 50, 100]
"""


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    subprocess.run(["git", "init", "--quiet", str(root)], check=True)
    (root / "state").mkdir()
    (root / "rollout").mkdir()
    return root


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "keep.txt").write_text("not the reconciler's\n")
    return folder


STATUS = ServiceStatus(
    service="ion-api",
    phase=Phase.PROGRESSING,
    stable_revision="ion-api-00041-abc",
    canary_revision="ion-api-00042-xyz",
    stage=5,
    stage_since=T0,
    traffic=TrafficSplit.of([]),
    etag="e1",
    generation=1,
    observed_generation=1,
    last_reconcile=T0,
)


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _window(month: int) -> WindowStats:
    start = T0.replace(month=month)
    return WindowStats("ion-api", "r1", start, start + timedelta(minutes=5), 10, 0, 10)


def test_a_symlinked_service_dir_is_refused(repo: Path, outside: Path) -> None:
    (repo / ION_DIR).parent.mkdir(parents=True)
    (repo / ION_DIR).symlink_to(outside)
    before = _snapshot(outside)
    with pytest.raises(StateError, match=rf"^{ION_DIR}: is a symbolic link"):
        append_events(repo, ION, [Event(T0, EventKind.APPLIED, "bot")])
    with pytest.raises(StateError, match="symbolic link"):
        read_status(repo, ION)
    with pytest.raises(StateError, match=rf"^{ION_DIR}: is a symbolic link"):
        append_metrics(repo, ION, [_window(5)])
    with pytest.raises(StateError, match=rf"^{ION_DIR}: is a symbolic link"):
        read_metrics(repo, ION)
    assert _snapshot(outside) == before


@pytest.mark.parametrize("level", ["project", "region"])
def test_a_symlinked_project_or_region_dir_is_refused(
    repo: Path, outside: Path, level: str
) -> None:
    link = (repo / ION_DIR).parent if level == "region" else (repo / ION_DIR).parent.parent
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(outside)
    with pytest.raises(StateError, match="is a symbolic link"):
        append_events(repo, ION, [Event(T0, EventKind.APPLIED, "bot")])
    assert _snapshot(outside) == {"keep.txt": b"not the reconciler's\n"}


def test_a_symlinked_state_dir_is_refused(repo: Path, outside: Path) -> None:
    (repo / "state").rmdir()
    (repo / "state").symlink_to(outside)
    with pytest.raises(StateError, match=r"^state: is a symbolic link"):
        read_events(repo, ION)
    assert not (outside / "ion-api").exists()


def test_a_symlinked_metrics_dir_is_never_written_or_pruned(repo: Path, outside: Path) -> None:
    for month in ("2026-01", "2026-02", "2026-03", "2026-04"):
        (outside / f"{month}.jsonl").write_text("someone else's file\n")
    (repo / ION_DIR).mkdir(parents=True)
    (repo / ION_DIR / "metrics").symlink_to(outside)
    before = _snapshot(outside)
    with pytest.raises(StateError, match=f"{ION_DIR}/metrics"):
        append_metrics(repo, ION, [_window(5)])
    with pytest.raises(StateError, match="symbolic link"):
        read_metrics(repo, ION)
    assert _snapshot(outside) == before


def test_a_symlinked_day_file_is_neither_followed_nor_pruned(repo: Path, outside: Path) -> None:
    append_metrics(repo, ION, [_window(1)])
    january = metrics_path(repo, ION, _window(1).end)
    january.unlink()
    january.symlink_to(outside / "keep.txt")
    with pytest.raises(StateError, match=rf"{january.name}: is a symbolic link"):
        append_metrics(repo, ION, [_window(1)])
    append_metrics(repo, ION, [_window(m) for m in (2, 3, 4, 5)])  # prunes months
    assert (outside / "keep.txt").read_text() == "not the reconciler's\n"
    assert read_metrics(repo, ION) == [_window(m) for m in (3, 4, 5)]  # 3 months kept


@pytest.mark.parametrize("name", ["2026-01.jsonl", "2026-01-01.jsonl", "2026-01-01.6bfbca.jsonl"])
def test_a_symlinked_file_in_an_old_metrics_folder_is_neither_followed_nor_pruned(
    repo: Path, outside: Path, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    # What older versions wrote in `metrics/` is read and pruned with the same care.
    line = '{"r":"r1","e":1767225900,"w":300,"n":9,"x":0,"k":9,"p":[0.1,0.2,null]}'
    (outside / "keep.txt").write_text(line + "\n")  # a window of 1 January, if followed
    (repo / ION_DIR / "metrics").mkdir(parents=True)
    (repo / ION_DIR / "metrics" / name).symlink_to(outside / "keep.txt")
    assert read_metrics(repo, ION) == []
    assert f"metrics/{name}: a symbolic link; skipped" in caplog.text
    append_metrics(repo, ION, [_window(m) for m in (2, 3, 4, 5)])  # prunes January
    assert (repo / ION_DIR / "metrics" / name).is_symlink()
    assert _snapshot(outside)["keep.txt"].startswith(b'{"r":"r1"')
    assert read_metrics(repo, ION) == [_window(m) for m in (3, 4, 5)]


def test_a_symlinked_status_file_is_refused(repo: Path, outside: Path) -> None:
    (repo / ION_DIR).mkdir(parents=True)
    (outside / "status.yaml").write_text(f"token: {TOKEN}\n")
    (repo / ION_DIR / "status.yaml").symlink_to(outside / "status.yaml")
    with pytest.raises(StateError, match=r"status\.yaml: is a symbolic link") as err:
        read_status(repo, ION)
    assert TOKEN not in str(err.value)


def test_a_symlinked_reports_dir_is_refused(repo: Path, outside: Path) -> None:
    (repo / ION_DIR).mkdir(parents=True)
    (repo / ION_DIR / "reports").symlink_to(outside)
    with pytest.raises(safepath.UnsafePathError, match=f"{ION_DIR}/reports: is a symbolic"):
        atomic_write_text(repo / ION_DIR / "reports" / "final-latest.md", "# r\n")
    assert _snapshot(outside) == {"keep.txt": b"not the reconciler's\n"}


def test_a_symlinked_baselines_dir_is_refused(repo: Path, outside: Path) -> None:
    (repo / ION_DIR).mkdir(parents=True)
    (repo / ION_DIR / "baselines").symlink_to(outside)
    with pytest.raises(safepath.UnsafePathError, match="baselines: is a symbolic link"):
        save_baseline((repo / ION_DIR).parent, Baseline("ion-api", T0, "canary", "r1", ()))
    assert _snapshot(outside) == {"keep.txt": b"not the reconciler's\n"}


def test_a_path_leading_out_of_the_repository_is_refused(repo: Path, outside: Path) -> None:
    with pytest.raises(safepath.UnsafePathError, match="outside the repository"):
        safepath.inside(repo, Path("state") / ".." / ".." / "outside" / "x")
    with pytest.raises(safepath.UnsafePathError, match="outside the repository"):
        safepath.inside(repo, outside / "x")
    assert safepath.inside(repo, "state/ion-api/new/file") == repo / "state/ion-api/new/file"


def test_a_sibling_whose_name_starts_with_the_repository_s_is_outside(repo: Path) -> None:
    sibling = repo.parent / f"{repo.name}-other" / "state" / "x"
    with pytest.raises(safepath.UnsafePathError, match="outside the repository"):
        safepath.inside(repo, sibling)
    with pytest.raises(safepath.UnsafePathError, match="outside the repository"):
        safepath.inside(repo, Path("..") / f"{repo.name}-other" / "x")
    assert safepath.inside(repo, repo / "state" / "." / "x") == repo / "state" / "x"
    assert safepath.inside(repo, ".") == repo
    assert safepath.inside(Path("/"), "no-such-dir/x") == Path("/no-such-dir/x")


def test_a_symlinked_rollout_file_is_an_error_naming_it(repo: Path, outside: Path) -> None:
    (outside / "creds.yaml").write_text(f"service: {TOKEN}\n")
    link = repo / "rollout" / "ion-api.yaml"
    link.symlink_to(outside / "creds.yaml")
    with pytest.raises(SpecError, match=r"rollout/ion-api.yaml: is a symbolic link") as err:
        load_spec(link)
    assert TOKEN not in str(err.value) and "outside" not in str(err.value)


def test_a_symlinked_rollout_dir_is_an_error(repo: Path, outside: Path) -> None:
    (repo / "rollout").rmdir()
    (outside / "ion-api.yaml").write_text(ROLLOUT)
    (repo / "rollout").symlink_to(outside)
    with pytest.raises(SpecError, match=r"^rollout: is a symbolic link"):
        load_spec(repo / "rollout" / "ion-api.yaml")


def test_validate_and_plan_never_print_a_linked_file(
    repo: Path, outside: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (repo / "rollout" / "ion-api.yaml").write_text(ROLLOUT)
    (outside / "creds.yaml").write_text(f"token: {TOKEN}\nservice: [{TOKEN}\n")
    (repo / "rollout" / "leak.yaml").symlink_to(outside / "creds.yaml")
    os.chdir(repo)
    assert main(["--repo", str(repo), "validate"]) == 1
    assert main(["--repo", str(repo), "plan", "--offline", "--format", "markdown"]) == 1
    out = capsys.readouterr()
    assert "leak.yaml: is a symbolic link" in out.out + out.err
    assert TOKEN not in out.out + out.err


def test_the_repository_of_every_folder_of_a_fleet_is_remembered(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A fleet has thousands of state folders: the cache of where their repository is must
    # keep serving past any size (it starts again when full, never stops caching).
    monkeypatch.setattr(safepath, "_REPOSITORIES", {})
    monkeypatch.setattr(safepath, "_MAX_REPOSITORIES", 3)
    folders = [repo / "state" / f"svc-{i}" for i in range(5)]
    for folder in folders:
        assert safepath.repository_of(folder / "status.yaml") == repo
    assert {str(folders[3]): repo, str(folders[4]): repo} == safepath._REPOSITORIES


def _swap_for_link(folder: Path, outside: Path) -> None:
    """What a hostile change does to a folder the reconciler already wrote in."""
    for child in sorted(folder.rglob("*"), reverse=True):
        child.rmdir() if child.is_dir() else child.unlink()
    folder.rmdir()
    folder.symlink_to(outside)


def test_a_folder_replaced_by_a_link_after_a_record_is_refused_at_the_next(
    repo: Path, outside: Path
) -> None:
    # Each record checks its folders again (nothing verified is remembered across records).
    write_status(repo, ION, STATUS)
    append_metrics(repo, ION, [_window(1)])
    _swap_for_link(repo / ION_DIR, outside)
    before = _snapshot(outside)
    with pytest.raises(StateError, match="symbolic link"):
        write_status(repo, ION, STATUS)
    with pytest.raises(StateError, match="symbolic link"):
        append_metrics(repo, ION, [_window(2)])
    with pytest.raises(StateError, match="symbolic link"):
        load_status(repo, ION)
    assert _snapshot(outside) == before


def test_a_link_swapped_in_while_a_status_is_serialized_is_refused(
    repo: Path, outside: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The status path is checked after its text is made, right before the write.
    write_status(repo, ION, STATUS)
    serialize = state.status_text

    def racing(status: ServiceStatus) -> str:
        _swap_for_link(repo / ION_DIR, outside)
        return serialize(status)

    monkeypatch.setattr(state, "status_text", racing)
    with pytest.raises(StateError, match="symbolic link"):
        write_status(repo, ION, STATUS)
    assert _snapshot(outside) == {"keep.txt": b"not the reconciler's\n"}


def test_a_link_swapped_in_before_a_day_file_is_appended_to_is_refused(
    repo: Path, outside: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The service folder is checked and listed first; the day file is checked when named.
    append_metrics(repo, ION, [_window(1)])
    roll_up = state.roll_up

    def racing(windows: Any) -> Any:
        _swap_for_link(repo / ION_DIR, outside)
        return roll_up(windows)

    monkeypatch.setattr(state, "roll_up", racing)
    with pytest.raises(StateError, match=f"{ION_DIR}: is a symbolic link"):
        append_metrics(repo, ION, [_window(2)])
    assert _snapshot(outside) == {"keep.txt": b"not the reconciler's\n"}


def test_an_old_metrics_folder_swapped_for_a_link_before_pruning_is_not_pruned(
    repo: Path, outside: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The folders are checked again right before anything in them is deleted.
    (repo / ION_DIR / "metrics").mkdir(parents=True)
    (repo / ION_DIR / "metrics" / "2026-01.jsonl").write_text("{}\n")
    (outside / "2026-01.jsonl").write_text("someone else's file\n")
    before = _snapshot(outside)
    roll_up = state.roll_up

    def racing(windows: Any) -> Any:
        _swap_for_link(repo / ION_DIR / "metrics", outside)
        return roll_up(windows)

    monkeypatch.setattr(state, "roll_up", racing)
    with pytest.raises(StateError, match="metrics: is a symbolic link"):
        append_metrics(repo, ION, [_window(m) for m in (2, 3, 4, 5)])
    assert _snapshot(outside) == before
