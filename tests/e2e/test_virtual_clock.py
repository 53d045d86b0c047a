"""The README's by-hand walk-through on the emulator's virtual clock: each command a
subprocess, as typed, reaching a measured verdict with Google's timing and no real wait."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from reconciler.sandbox import Sandbox, sandbox


@pytest.fixture
def sb(tmp_path: Path) -> Iterator[Sandbox]:
    with sandbox(tmp_path) as s:
        yield s


def reconcile(sb: Sandbox, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "reconciler", *args],
        cwd=sb.repo,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_walk_through_reaches_a_verdict_by_moving_the_emulator_clock(sb: Sandbox) -> None:
    assert reconcile(sb, "apply").returncode == 0  # 95/5 live; 5m windows, 3m lag
    before = sb.now()
    assert reconcile(sb, "emulator", "clock", "+3m").returncode == 0
    load = reconcile(sb, "emulator", "load", "ion-api", "--requests", "300", "--tag", "canary")
    assert load.returncode == 0, load.stderr
    assert reconcile(sb, "emulator", "clock", "+5m").returncode == 0
    judged = reconcile(sb, "apply")
    # The built-in canary fails 7%: one window is measured, not yet enough to roll back.
    assert judged.returncode == 0, judged.stderr
    assert "no data" not in judged.stdout, judged.stdout
    assert "error_rate" in judged.stdout and "(300 requests)" in judged.stdout, judged.stdout
    assert sb.now() - before >= timedelta(minutes=8)
