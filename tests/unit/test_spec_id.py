"""A rollout's spec identity is its content: git's blob ids, computed without git."""

from __future__ import annotations

from pathlib import Path

from reconciler.loader import blob_id, spec_id_of

EMPTY_BLOB = "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"  # `git hash-object /dev/null`
HELLO_BLOB = "ce013625030ba8dba906f756967f9e9ca394464a"  # 'hello\n' | git hash-object --stdin


def test_blob_id_is_gits() -> None:
    assert blob_id(b"") == EMPTY_BLOB
    assert blob_id(b"hello\n") == HELLO_BLOB


def test_the_shared_defaults_are_part_of_the_identity(tmp_path: Path) -> None:
    rollout = tmp_path / "rollout"
    rollout.mkdir()
    path = rollout / "ion-api.yaml"
    path.write_bytes(b"hello\n")
    assert spec_id_of(path) == HELLO_BLOB
    (rollout / "_defaults.yaml").write_bytes(b"")
    assert spec_id_of(path) == f"{HELLO_BLOB}+{EMPTY_BLOB}"
    # An edit of the defaults alone is a new spec for every file under them.
    (rollout / "_defaults.yaml").write_bytes(b"bake: 1h\n")
    changed = spec_id_of(path)
    assert changed.startswith(f"{HELLO_BLOB}+") and changed != f"{HELLO_BLOB}+{EMPTY_BLOB}"
    # Defaults of another folder do not count.
    (rollout / "eu").mkdir()
    other = rollout / "eu" / "ion-api.yaml"
    other.write_bytes(b"hello\n")
    assert spec_id_of(other) == HELLO_BLOB
