"""The status.yaml merge driver picks the snapshot of the later reconcile."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.statemerge import main


def _status(when: str) -> str:
    return f"service: ion-api\nlast_reconcile: {when}\nphase: progressing\n"


@pytest.mark.parametrize(
    ("upstream", "replayed", "winner"),
    [
        (_status("'2026-05-01T12:00:00Z'"), _status("'2026-05-01T12:00:01Z'"), "replayed"),
        (_status("'2026-05-01T12:00:01Z'"), _status("'2026-05-01T12:00:00Z'"), "upstream"),
        (_status("'2026-05-01T12:00:00Z'"), _status("'2026-05-01T12:00:00.5Z'"), "replayed"),
        (_status("'2026-05-01T12:00:00.5Z'"), _status("'2026-05-01T12:00:00Z'"), "upstream"),
        (_status("2026-05-01T12:00:00Z"), _status('"2026-05-02T00:00:00Z"'), "replayed"),
        (_status("'2026-05-01T12:00:00Z'"), _status("'2026-05-01T12:00:00Z'"), "replayed"),
        (_status("'2026-05-02T00:00:00Z'"), "phase: broken\n", "replayed"),
        ("<<<<<<< garbage\n", _status("'2026-05-01T00:00:00Z'"), "replayed"),
        (_status("'2026-05-02T00:00:00+00:00'"), _status("'2026-05-01T00:00:00Z'"), "replayed"),
        (
            "  last_reconcile: '2026-05-09T00:00:00Z'\n",
            _status("'2026-05-01T00:00:00Z'"),
            "replayed",
        ),
    ],
    ids=[
        "replayed-later",
        "upstream-later",
        "fraction-later",
        "fraction-earlier-side",
        "quoting-differs",
        "equal-keeps-replayed",
        "replayed-unreadable",
        "upstream-unreadable",
        "non-utc-unreadable",
        "nested-key-ignored",
    ],
)
def test_later_last_reconcile_wins(
    tmp_path: Path, upstream: str, replayed: str, winner: str
) -> None:
    base, current, other = tmp_path / "O", tmp_path / "A", tmp_path / "B"
    base.write_text(_status("'2026-04-01T00:00:00Z'"))
    current.write_text(upstream)
    other.write_text(replayed)
    assert main([str(base), str(current), str(other)]) == 0
    assert current.read_text() == (replayed if winner == "replayed" else upstream)


def test_wrong_arguments_are_a_usage_error() -> None:
    assert main(["only-one"]) == 2
