"""Corrupt state never disables the failing service's own rollback.

A truncated `events.jsonl` or wrong types in `status.yaml` (a bad merge, a hand edit, a disk
that filled up) used to fail the service on every run with a clear error while its canary
stayed at 5%. Now the readers keep what parses, the rest is rebuilt from live traffic and
git with an event saying so, and the 7%-failing canary is rolled back.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from reconciler.reconcile import apply_all
from reconciler.sandbox import Sandbox, sandbox
from tests.builders import context
from tests.refs import ION_DIR

from ..integration.test_gates import live_percents, tick
from .support import STABLE


@pytest.fixture
def sb(tmp_path: Path) -> Iterator[Sandbox]:
    with sandbox(tmp_path) as s:  # the built-in canary fails 7% of requests
        yield s


def _truncate_events(state: Path) -> None:
    path = state / "events.jsonl"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 25])


def _edit_status(change: dict[str, object]) -> Callable[[Path], None]:
    def edit(state: Path) -> None:
        path = state / "status.yaml"
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        data.update(change)
        path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")

    return edit


def _garbage_status(state: Path) -> None:
    (state / "status.yaml").write_text("schema: 1\nservice: ion-api\nphase: [\n")


CORRUPTIONS = [
    ("truncated-events", _truncate_events),
    ("windows-wrong-type", _edit_status({"windows": "many"})),
    ("stage-wrong-type", _edit_status({"stage": "five", "traffic": 12})),
    ("status-not-yaml", _garbage_status),
]


@pytest.mark.parametrize("corrupt", [c[1] for c in CORRUPTIONS], ids=[c[0] for c in CORRUPTIONS])
def test_a_failing_canary_with_corrupt_state_is_still_rolled_back(
    sb: Sandbox, corrupt: Callable[[Path], None]
) -> None:
    ctx = context(sb, metrics=True)
    assert apply_all(ctx).exit_code == 0  # 5% live
    # One window recorded, too small to judge (enough failing requests would fail fast and
    # roll back before the state is damaged).
    assert tick(sb, ctx, canary=50).exit_code == 0
    state = sb.repo / ION_DIR
    corrupt(state)
    sb.git("commit", "--quiet", "-am", "state damaged by a bad merge")
    sb.git("push", "--quiet", "origin", "main")

    codes = []
    # Rebuilt state knows no stage start but its own: with Cloud Monitoring's lag (windows end
    # 3 minutes back) the first windows after the rebuild may predate it and are not judged,
    # then two failing windows roll back: five 5-minute ticks at most.
    while len(codes) < 5 and 4 not in codes:
        result = tick(sb, ctx, canary=2000)
        codes.append(result.exit_code)
        assert all(o.error is None for o in result.outcomes), result
    assert codes[-1] == 4, codes
    assert live_percents(sb) == {STABLE: 100}
    assert "rolled_back" in sb.remote_file("rollout/ion-api.yaml")
    events = [json.loads(line) for line in sb.remote_file(f"{ION_DIR}/events.jsonl").split("\n")]
    kinds = [e["kind"] for e in events]
    assert "rolled_back" in kinds
    if corrupt is not _truncate_events:
        rebuilt = [e for e in events if e["kind"] == "state_rebuilt"]
        assert rebuilt and "status.yaml" in rebuilt[0]["reason"]
