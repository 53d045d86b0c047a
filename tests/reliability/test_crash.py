"""A real `reconcile apply` process killed (SIGKILL) after its traffic write, before its commit.

The write stamps the service; the next run finds traffic live that git never recorded and
writes the missing record, without writing traffic again.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from reconciler.backends.cloudrun import CloudRunBackend
from reconciler.loader import load_spec
from reconciler.model import Phase
from reconciler.plan import split_for
from reconciler.reconcile import apply_all, read_stamp, ref_of
from reconciler.sandbox import Sandbox, sandbox
from reconciler.state import (
    MAX_EVENTS,
    Event,
    EventKind,
    append_events,
    load_status,
    read_events,
)
from tests.refs import ION, ION_DIR

from .support import CANARY, STABLE, context, live, popen_cli, reconcile_cli, routing

FIVE = split_for(STABLE, CANARY, 5)


@pytest.fixture
def sb(tmp_path: Path) -> Iterator[Sandbox]:
    with sandbox(tmp_path) as s:
        s.emu.behave(CANARY, error_rate=0.0)
        yield s


def kill_after_write(sb: Sandbox, repo: Path, *args: str) -> None:
    """Run `reconcile ARGS` (default: apply) in `repo`; SIGKILL it once the emulator accepted
    its write.

    The write's operation answers without what serves, so the reconciler reads the service
    back, and from the write on GetService is slowed down: that read-back, between the write
    and the commit, leaves a wide window to kill in (the crash, not the read-back, is under
    test), however late a loaded machine lets this test see the write.
    """
    writes = sb.emu.writes
    sb.emu.lro(done=True, response="no-status")
    world = sb.emu.world
    inner = world.update_service

    def update_service(name: str, **kw: Any) -> Any:
        op = inner(name, **kw)
        if kw.get("traffic") is not None and not kw.get("validate_only"):
            world.set_fault("GetService", 0.0, 5000.0)
        return op

    world.update_service = update_service  # type: ignore[method-assign]
    proc = popen_cli(repo, *(args or ("apply",)))
    try:
        deadline = time.monotonic() + 60
        while sb.emu.writes == writes:
            assert proc.poll() is None, f"apply ended before writing: {proc.communicate()}"
            assert time.monotonic() < deadline, f"{args} never wrote"
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=30)
        world.update_service = inner  # type: ignore[method-assign]
        sb.emu.clear_faults()
        sb.emu.lro(done=True)
    assert proc.returncode == -signal.SIGKILL


def remote_subjects(sb: Sandbox) -> list[str]:
    """The run commits' subjects and their lines per service."""
    return sb.remote_log("--format=%B").splitlines()


def test_killed_apply_is_recorded_by_the_next_run(sb: Sandbox) -> None:
    kill_after_write(sb, sb.repo)
    # Traffic is live, stamped, and git knows nothing of it.
    assert routing(live(sb.emu)) == routing(FIVE)
    stamp = read_stamp(CloudRunBackend().get_service(ref_of(load_spec(sb.rollout()))))
    assert stamp is not None and stamp["action"] == "new stage"
    assert not any("0% -> 5%" in s for s in remote_subjects(sb))
    writes = sb.emu.writes

    # The next runner starts from a fresh clone (the killed runner's disk is gone), later
    # than a concurrent run could still be recording (emulator clock moved on).
    fresh = sb.clone("next-runner")
    sb.emu.advance_clock(180)
    result = apply_all(context(sb, fresh))
    assert result.exit_code == 0, result
    assert sb.emu.writes == writes, "the next run wrote traffic again"
    assert routing(live(sb.emu)) == routing(FIVE)
    events = [e for e in read_events(fresh, ION) if e.details.get("recovered")]
    assert len(events) == 1 and events[0].reason is not None
    assert "recorded late" in events[0].reason
    assert "recorded late" in sb.remote_file(f"{ION_DIR}/events.jsonl")
    assert any("record missed write" in s for s in remote_subjects(sb))


def test_a_run_too_soon_after_the_crash_does_not_lose_the_record(sb: Sandbox) -> None:
    """A run within `recover_after` of the crash must leave the stamp for a later run (it
    could belong to a run still recording); the record must still be written by then."""
    kill_after_write(sb, sb.repo)
    writes = sb.emu.writes
    fresh = sb.clone("next-runner")
    soon = reconcile_cli(fresh, "apply")
    assert soon.returncode == 0, soon.stderr
    assert sb.emu.writes == writes
    sb.emu.advance_clock(180)
    assert apply_all(context(sb, fresh)).exit_code == 0
    assert sb.emu.writes == writes
    assert "recorded late" in sb.remote_file(f"{ION_DIR}/events.jsonl")


def test_killed_rollback_writes_the_sticky_block_on_the_next_run(sb: Sandbox) -> None:
    assert apply_all(context(sb)).exit_code == 0
    kill_after_write(sb, sb.repo, "rollback", "ion-api", "--force", "--reason", "5xx burst")
    assert live(sb.emu).percents().get(CANARY, 0) == 0
    assert "rolled_back" not in sb.remote_file("rollout/ion-api.yaml")
    writes = sb.emu.writes
    fresh = sb.clone("next-runner")
    sb.emu.advance_clock(180)
    assert apply_all(context(sb, fresh)).exit_code == 0
    assert sb.emu.writes == writes
    text = sb.remote_file("rollout/ion-api.yaml")
    assert "rolled_back:" in text and "5xx burst" in text
    assert "canary_percent: 0" in text
    # Sticky: a later run does not route to the canary again.
    sb.emu.advance_clock(60)
    assert apply_all(context(sb, fresh)).exit_code == 0
    assert live(sb.emu).percents() == {STABLE: 100}


def test_killed_abort_is_recorded_as_an_abort_on_the_next_run(sb: Sandbox) -> None:
    """An abort sends traffic to stable like a rollback, but records a paused rollout and no
    sticky block: the recovered record must be the abort's, not a rollback's."""
    assert apply_all(context(sb)).exit_code == 0
    kill_after_write(sb, sb.repo, "abort", "ion-api")
    assert live(sb.emu).percents().get(CANARY, 0) == 0
    assert "paused" not in sb.remote_file("rollout/ion-api.yaml")
    writes = sb.emu.writes
    fresh = sb.clone("next-runner")
    assert apply_all(context(sb, fresh)).exit_code == 0  # at once: 100% stable is no drift
    assert sb.emu.writes == writes
    spec = load_spec(fresh / "rollout" / "ion-api.yaml")
    assert spec.rolled_back is None
    assert (spec.paused, spec.canary_percent, spec.revisions.canary) == (True, 0, CANARY)
    assert "paused: true" in sb.remote_file("rollout/ion-api.yaml")
    (late,) = [e for e in read_events(fresh, ION) if e.details.get("recovered")]
    assert late.details.get("abort") is True and "aborted" in (late.reason or "")
    status = load_status(fresh, ION).status
    assert status is not None and status.phase is Phase.PAUSED
    # Held, not blocked: resumed and promoted, the same canary takes traffic again.
    sb.emu.advance_clock(60)
    assert apply_all(context(sb, fresh)).exit_code == 0
    assert live(sb.emu).percents() == {STABLE: 100}
    assert reconcile_cli(fresh, "resume", "ion-api").returncode == 0
    assert reconcile_cli(fresh, "promote", "ion-api").returncode == 0
    assert apply_all(context(sb, fresh)).exit_code == 0
    assert routing(live(sb.emu)) == routing(FIVE)


def test_a_recorded_write_is_not_recorded_again_after_its_event_was_trimmed(sb: Sandbox) -> None:
    """events.jsonl keeps the newest MAX_EVENTS lines: a write whose event fell out of a full
    file is still known as recorded (no second, late record of it)."""
    assert apply_all(context(sb)).exit_code == 0
    later = sb.now() + timedelta(seconds=1)
    filler = [
        Event(later + timedelta(milliseconds=i), EventKind.PROBE_FAILED, "test", reason="x")
        for i in range(MAX_EVENTS)
    ]
    append_events(sb.repo, ION, filler)
    assert all(e.kind is EventKind.PROBE_FAILED for e in read_events(sb.repo, ION))
    sb.git("commit", "--quiet", "-am", "a full events file")
    sb.git("push", "--quiet", "origin", "main")
    sb.emu.advance_clock(180)
    assert apply_all(context(sb)).exit_code == 0
    assert not any(e.details.get("recovered") for e in read_events(sb.repo, ION))
