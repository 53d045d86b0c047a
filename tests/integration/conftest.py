"""Integration fixtures: an in-process emulator that the official Google clients talk to."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from reconciler.emulator import Emulator


@pytest.fixture
def emulator(monkeypatch: pytest.MonkeyPatch) -> Iterator[Emulator]:
    """The built-in ion-api scenario on free loopback ports, simulated latency (no sleeping).

    CLOUD_RUN_EMULATOR_HOST is set for the test, so `reconciler.clients` reach this emulator.
    Tests that need another world start their own: `with Emulator.start(scenario) as emu:`.
    """
    with Emulator.start(latency_mode="simulated", seed=7) as emu:
        for key, value in emu.env.items():
            monkeypatch.setenv(key, value)
        yield emu
