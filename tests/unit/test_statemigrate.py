"""Moving old-layout `state/<service>/` folders: once, whole, never guessing an owner."""

from __future__ import annotations

from pathlib import Path

from reconciler.statemigrate import Move, legacy_folders, migrate
from tests.refs import ION, ION_DIR, ref

EUROPE = ref("ion-api", region="europe-west1")


def _old(root: Path, service: str = "ion-api", *, status_of: str | None = None) -> dict[str, str]:
    """An old-layout folder; returns its files (relative to it) and contents."""
    files = {
        "status.yaml": f"schema: 1\nservice: {status_of or service}\nphase: progressing\n",
        "events.jsonl": '{"kind":"applied"}\n',
        "metrics/2026-05.jsonl": '{"revision":"r1"}\n',
        "reports/interim-latest.md": "# report\n",
        "baselines/latest.json": "{}\n",
    }
    for name, text in files.items():
        path = root / "state" / service / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return files


def _tree(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): p.read_text(encoding="utf-8")
        for p in folder.rglob("*")
        if p.is_file()
    }


def test_an_old_folder_moves_whole_to_its_one_rollout_and_only_once(tmp_path: Path) -> None:
    files = _old(tmp_path)
    assert legacy_folders(tmp_path) == ["ion-api"]
    done = migrate(tmp_path, [ION, ref("other")])
    assert done.moves == (Move(Path("state/ion-api"), Path(ION_DIR), ION),)
    assert not done.refused
    assert _tree(tmp_path / ION_DIR) == files
    assert not (tmp_path / "state" / "ion-api").exists()
    assert legacy_folders(tmp_path) == []
    assert migrate(tmp_path, [ION]).moves == ()  # idempotent


def test_a_dry_run_moves_nothing(tmp_path: Path) -> None:
    files = _old(tmp_path)
    done = migrate(tmp_path, [ION], dry_run=True)
    assert [m.new for m in done.moves] == [Path(ION_DIR)]
    assert _tree(tmp_path / "state" / "ion-api") == files
    assert not (tmp_path / ION_DIR).exists()


def test_two_rollouts_claiming_one_old_folder_are_both_refused(tmp_path: Path) -> None:
    files = _old(tmp_path)
    done = migrate(tmp_path, [ION, EUROPE])
    assert done.moves == ()
    assert set(done.refused) == {ION.key, EUROPE.key}
    assert done.refused[ION.key].startswith("state/ion-api/: old-layout state claimed by 2")
    assert "git mv state/ion-api state/<project>/<region>/ion-api" in done.refused[ION.key]
    assert _tree(tmp_path / "state" / "ion-api") == files


def test_a_shard_moves_only_what_it_owns_but_sees_every_claimant(tmp_path: Path) -> None:
    _old(tmp_path)
    _old(tmp_path, "payments")
    pay = ref("payments")
    done = migrate(tmp_path, [ION, EUROPE, pay], owned={pay.key, EUROPE.key})
    assert [m.ref for m in done.moves] == [pay]
    assert set(done.refused) == {EUROPE.key}  # ION's refusal is its own shard's to report
    assert (tmp_path / "state" / "ion-api").is_dir()


def test_an_entry_in_both_layouts_is_refused_and_nothing_moves(tmp_path: Path) -> None:
    files = _old(tmp_path)
    (tmp_path / ION_DIR).mkdir(parents=True)
    (tmp_path / ION_DIR / "status.yaml").write_text("newer\n", encoding="utf-8")
    done = migrate(tmp_path, [ION])
    assert "holds status.yaml too; merge them by hand" in done.refused[ION.key]
    assert _tree(tmp_path / "state" / "ion-api") == files
    assert _tree(tmp_path / ION_DIR) == {"status.yaml": "newer\n"}


def test_a_move_killed_half_way_finishes_next_time(tmp_path: Path) -> None:
    files = _old(tmp_path)
    (tmp_path / ION_DIR).mkdir(parents=True)
    (tmp_path / "state" / "ion-api" / "metrics").rename(tmp_path / ION_DIR / "metrics")
    assert migrate(tmp_path, [ION]).refused == {}
    assert _tree(tmp_path / ION_DIR) == files


def test_an_unloadable_claimant_or_a_foreign_status_is_refused(tmp_path: Path) -> None:
    _old(tmp_path)
    waits = migrate(tmp_path, [ION], unloadable={"ion-api"})
    assert "a rollout file of ion-api does not load" in waits.refused[ION.key]
    _old(tmp_path, "payments", status_of="ion-api")
    foreign = migrate(tmp_path, [ref("payments")])
    assert (
        "status.yaml names service 'ion-api', not 'payments'"
        in foreign.refused[ref("payments").key]
    )
    assert (tmp_path / "state" / "payments" / "status.yaml").is_file()


def test_a_service_id_equal_to_its_project_id_keeps_the_project_folder(tmp_path: Path) -> None:
    same = ref("naeda-genesis")
    files = _old(tmp_path, "naeda-genesis")
    (tmp_path / ION_DIR).mkdir(parents=True)  # the project folder of the new layout, in use
    (tmp_path / ION_DIR / "status.yaml").write_text("ion\n", encoding="utf-8")
    done = migrate(tmp_path, [same, ION])
    assert [m.new.as_posix() for m in done.moves] == [
        "state/naeda-genesis/us-central1/naeda-genesis"
    ]
    assert _tree(tmp_path / "state/naeda-genesis/us-central1/naeda-genesis") == files
    assert _tree(tmp_path / ION_DIR) == {"status.yaml": "ion\n"}
    assert legacy_folders(tmp_path) == []


def test_a_symlinked_entry_is_refused(tmp_path: Path) -> None:
    _old(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "state" / "ion-api" / "reports").rename(outside / "reports")
    (tmp_path / "state" / "ion-api" / "reports").symlink_to(outside / "reports")
    (tmp_path / ".git").mkdir()
    done = migrate(tmp_path, [ION])
    assert "reports: is a symbolic link" in done.refused[ION.key]
    assert not (tmp_path / ION_DIR).exists()


def test_a_new_layout_project_folder_is_not_an_old_folder(tmp_path: Path) -> None:
    (tmp_path / ION_DIR / "metrics").mkdir(parents=True)
    (tmp_path / ION_DIR / "status.yaml").write_text("new\n", encoding="utf-8")
    assert legacy_folders(tmp_path) == []
