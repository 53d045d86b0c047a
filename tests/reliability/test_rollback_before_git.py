"""A manual (or streamed) rollback never waits for git: the traffic is back on stable before
a hanging remote gives up, and an unreachable one leaves the rollback live and its record
committed locally for the next run to push."""

from __future__ import annotations

import shlex
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.errors import ReconcileError
from reconciler.manual import rollback
from reconciler.plan import split_for
from reconciler.reconcile import apply_all
from reconciler.sandbox import Sandbox, sandbox

from .support import CANARY, STABLE, WriteRecorder, context, live, routing

HANG = 3.0
"""Seconds the hanging remote holds every git connection before failing it."""


@pytest.fixture
def sb(tmp_path: Path) -> Iterator[Sandbox]:
    with sandbox(tmp_path) as s:
        s.emu.behave(CANARY, error_rate=0.0)
        assert apply_all(context(s)).exit_code == 0
        assert routing(live(s.emu)) == routing(split_for(STABLE, CANARY, 5))
        yield s


def hanging_remote(sb: Sandbox, tmp_path: Path) -> Path:
    """Point the clone's origin at a local `ext::` remote that holds each connection for
    `HANG` seconds and then fails; returns the log of (start, end) times it writes."""
    journal = tmp_path / "remote-calls.log"
    script = tmp_path / "hang.py"
    script.write_text(
        textwrap.dedent(
            f"""\
            import time
            start = time.time()
            time.sleep({HANG})
            with open({str(journal)!r}, "a") as f:
                f.write(f"{{start}} {{time.time()}}\\n")
            raise SystemExit(1)
            """
        ),
        encoding="utf-8",
    )
    sb.git("config", "protocol.ext.allow", "always")
    sb.git("remote", "set-url", "origin", f"ext::{shlex.quote(sys.executable)} {script}")
    return journal


def on_stable(sb: Sandbox) -> bool:
    return routing(live(sb.emu)) == routing(split_for(STABLE, None, 0))


def test_traffic_is_on_stable_before_a_hanging_remote_gives_up(sb: Sandbox, tmp_path: Path) -> None:
    journal = hanging_remote(sb, tmp_path)
    # When the emulator accepted the write, not when a watcher got to see it: the order is
    # the rollback's, whatever the load.
    recorder = WriteRecorder(sb.emu)
    started = time.time()
    # The failure is told honestly: live and committed locally, not pushed.
    with pytest.raises(ReconcileError, match="rolled back and recorded locally, not pushed"):
        rollback(context(sb), "ion-api", "error burst")
    assert [routing(s) for s in recorder.of("ion-api")] == [routing(split_for(STABLE, None, 0))]
    (stable_at,) = recorder.at
    calls = [tuple(map(float, line.split())) for line in journal.read_text().splitlines()]
    assert calls, "the rollback never tried the remote"
    gave_up = calls[0][1]
    print(
        f"\ntraffic on stable after {stable_at - started:.2f}s; "
        f"first git call to the remote ended after {gave_up - started:.2f}s"
    )
    assert stable_at < gave_up, "the rollback waited for git before moving traffic"
    assert on_stable(sb)


def test_an_unreachable_remote_leaves_the_rollback_live_and_committed_locally(
    sb: Sandbox, tmp_path: Path
) -> None:
    gone = tmp_path / "moved-away.git"
    sb.remote.rename(gone)  # the remote's path no longer exists
    try:
        with pytest.raises(ReconcileError, match="rolled back and recorded locally, not pushed"):
            rollback(context(sb), "ion-api", "error burst")
        assert on_stable(sb)
        assert sb.git("status", "--porcelain", "--", "rollout", "state") == ""
        assert "error burst" in sb.git("log", "-1", "--format=%B")
        assert "rolled_back:" in sb.git("show", "HEAD:rollout/ion-api.yaml")
    finally:
        gone.rename(sb.remote)
    assert "rolled_back:" not in sb.remote_file("rollout/ion-api.yaml")
    # The next run, with the remote back, pushes the record and keeps the rollback.
    writes = sb.emu.writes
    assert apply_all(context(sb)).exit_code == 0
    assert "rolled_back:" in sb.remote_file("rollout/ion-api.yaml")
    assert sb.emu.writes == writes
    assert on_stable(sb)
