"""A written rollback is never undone: its record survives a failed read-back, and a late
record is never mistaken for another event of the same second."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from reconciler.errors import ReconcileError
from reconciler.execute import _recorded
from reconciler.manual import rollback
from reconciler.plan import split_for
from reconciler.reconcile import apply_all
from reconciler.sandbox import Sandbox, sandbox
from reconciler.state import Event, EventKind, Phase, append_events, parse_time, read_status
from tests.refs import ION

from .support import CANARY, STABLE, context, live, paced_by_emulator, routing


@pytest.fixture
def sb(tmp_path: Path) -> Iterator[Sandbox]:
    with sandbox(tmp_path) as s:
        s.emu.behave(CANARY, error_rate=0.0)
        yield s


def fail_read_back(sb: Sandbox) -> None:
    """Once the emulator accepts a traffic write, GetService is unavailable for a minute of
    emulator time, and the write's operation answers without what serves: the read-back right
    after the write fails after its bounded retries (which take less than that minute)."""
    world = sb.emu.world
    world.set_lro(done=True, response="no-status")
    inner = world.update_service

    def update_service(name: str, **kw: Any) -> Any:
        op = inner(name, **kw)
        if kw.get("traffic") is not None and not kw.get("validate_only"):
            world.set_fault("GetService", 1.0, seconds=60)
        return op

    world.update_service = update_service  # type: ignore[method-assign]


def test_a_rollback_whose_read_back_failed_is_recorded_and_never_undone(sb: Sandbox) -> None:
    assert apply_all(context(sb)).exit_code == 0
    assert routing(live(sb.emu)) == routing(split_for(STABLE, CANARY, 5))
    fail_read_back(sb)
    with pytest.raises(ReconcileError, match="not confirmed serving"):
        # Retry waits in emulator time: the outage and the retries play out at once.
        rollback(context(sb, backend=paced_by_emulator(sb.emu)), "ion-api", "error burst")
    sb.emu.clear_faults()
    # The write landed; git has the sticky block and state/ the rollback, though unconfirmed.
    assert routing(live(sb.emu)) == routing(split_for(STABLE, None, 0))
    text = sb.remote_file("rollout/ion-api.yaml")
    assert "rolled_back:" in text and "error burst" in text
    status = read_status(sb.repo, ION)
    assert status is not None and status.phase is Phase.ROLLED_BACK
    # The next run sees the rollback, not drift: nothing goes back to the canary.
    writes = sb.emu.writes
    result = apply_all(context(sb))
    assert result.exit_code == 0, result
    assert sb.emu.writes == writes
    assert routing(live(sb.emu)) == routing(split_for(STABLE, None, 0))


def test_a_late_record_is_not_another_event_of_the_same_second(tmp_path: Path) -> None:
    # A rollback's read-back failed in the second the run also logged a probe failure: that
    # event is no record of the rollback, so the next run must still record it.
    at = parse_time("2026-11-26T12:00:00Z")
    append_events(tmp_path, ION, [Event(at, EventKind.PROBE_FAILED, "reconciler")])
    assert not _recorded(tmp_path, ION, at, EventKind.ROLLED_BACK)
    append_events(tmp_path, ION, [Event(at, EventKind.ROLLED_BACK, "reconciler")])
    assert _recorded(tmp_path, ION, at, EventKind.ROLLED_BACK)
