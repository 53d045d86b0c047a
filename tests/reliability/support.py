"""Shared pieces of the reliability tests: contexts, live reads, a write recorder, the CLI.

Everything here drives real parts: the official Google clients against the emulator, real git
repositories, and `python -m reconciler` in a fresh process.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import reconciler
from reconciler import clients
from reconciler.backends.cloudrun import CloudRunBackend
from reconciler.emulator import Emulator
from reconciler.model import Target, TrafficSplit
from tests.builders import context as context  # re-exported: the reliability tests' context

STABLE = "ion-api-00041-abc"
CANARY = "ion-api-00042-xyz"


def split_of(targets: Any) -> TrafficSplit:
    """The split of `run_v2` traffic targets (or of emulator routes)."""
    return TrafficSplit.of(Target(str(t.revision), int(t.percent), str(t.tag)) for t in targets)


def live(emu: Emulator, service: str = "ion-api") -> TrafficSplit:
    """What the service serves now, from the emulator's admin view (immune to injected faults;
    `Sampler` reads through the official client)."""
    return split_of(emu.world.get_service(emu.service_name(service)).statuses)


def paced_by_emulator(emu: Emulator) -> CloudRunBackend:
    """The Cloud Run backend with its pacing and retry waits in emulator time: a backoff moves
    the emulator's clock instead of sleeping, so an outage of a set length (`emu.fault(...,
    seconds=S)`) and the retries that ride it out play out at once, whatever the load."""
    return CloudRunBackend(pace_clock=emu.world.now, pace_sleep=emu.advance_clock)


def routing(split: TrafficSplit) -> tuple[dict[str, int], dict[str, str]]:
    """Percents (of revisions taking traffic) and tags: what `same_routing` compares."""
    return {r: p for r, p in split.percents().items() if p}, split.tags()


class WriteRecorder:
    """Every traffic split the emulator accepted through UpdateService, in order.

    Wraps the emulator world's `update_service` (the emulator is this project's code, not a
    Google client): a call that returns was accepted, and the split it made is recorded under
    the world's lock, so concurrent writers are recorded in the order they landed.
    """

    def __init__(self, emu: Emulator) -> None:
        self.splits: list[tuple[str, TrafficSplit]] = []
        self.at: list[float] = []
        """When each of `splits` was accepted (`time.time()`)."""
        world = emu.world
        inner = world.update_service
        lock = threading.Lock()

        def update_service(name: str, **kw: Any) -> Any:
            with world._lock:
                op = inner(name, **kw)
                if not kw.get("validate_only") and kw.get("traffic") is not None:
                    with lock:
                        self.splits.append((name, split_of(world.services[name].traffic)))
                        self.at.append(time.time())
                return op

        world.update_service = update_service  # type: ignore[method-assign]

    def of(self, service: str) -> list[TrafficSplit]:
        """Accepted splits of one service (by short name)."""
        return [s for name, s in self.splits if name.endswith(f"/services/{service}")]


class Sampler:
    """Reads the live split through the official client in a loop, from its own thread."""

    def __init__(self, emu: Emulator, service: str = "ion-api") -> None:
        self.emu = emu
        self.service = service
        self.seen: list[TrafficSplit] = []
        self.failed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="split-sampler", daemon=True)

    def _run(self) -> None:
        from google.api_core import exceptions as gexc

        client = clients.services_client()
        name = self.emu.service_name(self.service)
        while not self._stop.is_set():
            try:
                svc = client.get_service(name=name, retry=None, timeout=5)
            except gexc.GoogleAPICallError:
                self.failed += 1  # injected faults hit the sampler too
                continue
            self.seen.append(split_of(svc.traffic_statuses))
            self._stop.wait(0.005)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def wait_until_seen(self, split: TrafficSplit, timeout: float = 30.0) -> bool:
        """Wait until the sampler has observed `split` live (bounded)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(s.same_routing(split) for s in list(self.seen)):
                return True
            time.sleep(0.01)
        return False

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def reconcile_cli(
    cwd: Path,
    *args: str,
    env: Mapping[str, str | None] | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """`python -m reconciler ARGS...` in a fresh process, as a user types it."""
    full = dict(os.environ)
    full["PYTHONPATH"] = str(Path(reconciler.__file__).resolve().parents[1])
    for key, value in (env or {}).items():
        if value is None:
            full.pop(key, None)
        else:
            full[key] = value
    return subprocess.run(
        [sys.executable, "-m", "reconciler", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=full,
        timeout=timeout,
        check=False,
    )


def popen_cli(cwd: Path, *args: str) -> subprocess.Popen[str]:
    """Start `python -m reconciler ARGS...` without waiting (to kill it mid-run)."""
    full = dict(os.environ)
    full["PYTHONPATH"] = str(Path(reconciler.__file__).resolve().parents[1])
    return subprocess.Popen(
        [sys.executable, "-m", "reconciler", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=full,
    )
