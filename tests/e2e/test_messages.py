"""Messages that used to mislead, as a user sees them in a terminal."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.sandbox import Sandbox, sandbox
from tests.refs import ION_DIR

from ..reliability.support import CANARY, reconcile_cli


@pytest.fixture
def sb(tmp_path: Path) -> Iterator[Sandbox]:
    with sandbox(tmp_path) as s:
        s.emu.behave(CANARY, error_rate=0.0)
        yield s


@pytest.mark.parametrize("command", ["plan", "apply"])
@pytest.mark.parametrize(
    ("pattern", "hint"),
    [("ion-apj", "did you mean 'ion-api'?"), ("ino-*", "did you mean 'ion-api'?")],
    ids=["typo", "glob-typo"],
)
def test_a_service_pattern_matching_nothing_is_an_error_with_a_hint(
    sb: Sandbox, command: str, pattern: str, hint: str
) -> None:
    out = reconcile_cli(sb.repo, command, "--service", pattern)
    assert out.returncode == 1, out.stdout
    assert hint in out.stderr and out.stderr.strip().count("\n") == 0, out.stderr
    assert sb.emu.write_attempts == 0


def test_the_uncommitted_file_error_names_the_whole_path(sb: Sandbox) -> None:
    sb.rollout().write_text(
        sb.rollout().read_text().replace("canary_percent: 5", "canary_percent: 10")
    )
    out = reconcile_cli(sb.repo, "apply")
    assert out.returncode == 1
    assert out.stderr.startswith("error: rollout/ion-api.yaml: uncommitted change"), out.stderr
    assert sb.emu.write_attempts == 0


def test_a_canary_answer_with_line_separators_never_splits_a_record(sb: Sandbox) -> None:
    """The canary answers with U+2028 (and friends) inside a JSON string; its failing
    probe's reason is recorded, and every later run still reads the events file."""
    answer = {"status": "degraded\u2028line two\u2029para\x85next"}
    sb.emu.behave(CANARY, error_rate=0.0, health=answer)
    codes: list[int] = []
    while len(codes) < 6 and codes[-2:-1] != [4]:
        # The failing probe rolls the canary back (4); the run after it reads on (0).
        out = reconcile_cli(sb.repo, "apply")
        assert "invalid" not in out.stderr and "Traceback" not in out.stderr, out.stderr
        codes.append(out.returncode)
    assert codes[-2:] == [4, 0] and set(codes) <= {0, 4}, codes
    events = (sb.repo / ION_DIR / "events.jsonl").read_text(encoding="utf-8")
    lines = events.splitlines()  # the strictest reader: splits at every separator
    records = [json.loads(line) for line in lines]
    assert any("degraded\u2028line two" in r["reason"] for r in records), records
