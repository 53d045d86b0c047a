"""`watch --stream` end to end: the official logging client against the emulator, a real git
remote; a breach rolled back in seconds, an emulator restart and a git outage survived."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from reconciler.emulator import Emulator
from reconciler.lease import Lease
from reconciler.reconcile import Context
from reconciler.runtime import build_context
from reconciler.sandbox import Sandbox, example_rollout, sandbox
from reconciler.spec import ErrorRateGate
from reconciler.stream import (
    Canary,
    CloudLogging,
    Controller,
    StreamResult,
    live_canaries,
    roll_back,
)
from reconciler.testing.webhooks import WebhookRecorder

SERVICE, STABLE, CANARY = "ion-api", "ion-api-00041-abc", "ion-api-00042-xyz"
LOG_DELAY = 0.3
HEALTHY = {"error_rate": 0.0, "latency_ms": {"p50": 120, "p95": 300}}
SCENARIO: dict[str, Any] = {
    "project": "naeda-genesis",
    "region": "us-central1",
    "services": [
        {
            "name": SERVICE,
            "revisions": [
                {"name": STABLE, "behavior": HEALTHY},
                {"name": CANARY, "behavior": HEALTHY},
            ],
            "traffic": {STABLE: 95, CANARY: 5},
            "tags": {"stable": STABLE, "canary": CANARY},
        }
    ],
}


def canary_percent(emu: Emulator) -> int:
    svc = emu.status()["services"][0]
    return sum(t["percent"] for t in svc["traffic"] if t["revision"] == CANARY)


@contextmanager
def running(
    sb: Sandbox,
    repo: Path | None = None,
    lease: str | None = None,
    rollback: Callable[[Context, Canary, str], bool] = roll_back,
    clock: Callable[[Callable[[], datetime]], Callable[[], datetime]] = lambda c: c,
) -> Iterator[tuple[threading.Event, list[str], list[StreamResult]]]:
    """The controller on its own thread, as `watch --stream` runs it (with a lease held as
    `lease` when given; `rollback` and `clock(ctx.clock)` in place of the product's, for
    tests that make them fail); setting the yielded event stops it, as leaving the block
    does."""
    ctx = build_context(repo or sb.repo, with_metrics=False)
    assert ctx.git is not None
    ctx.git.backoff = 0.01  # git outages in these tests: retry fast
    ctx = replace(ctx, clock=clock(ctx.clock))
    lines: list[str] = []
    results: list[StreamResult] = []
    controller = Controller(
        ctx,
        CloudLogging(),
        refresh=timedelta(seconds=1),
        report=lines.append,
        rollback=rollback,
        lease=Lease(ctx.repo, lease, timedelta(seconds=10)) if lease else None,
    )
    stop = threading.Event()
    thread = threading.Thread(target=lambda: results.append(controller.run(stop)), daemon=True)
    thread.start()
    try:
        yield stop, lines, results
    finally:
        stop.set()
        thread.join(timeout=20)
        assert not thread.is_alive()


def until(check: Callable[[], bool], emu: Emulator | None, timeout: float = 20.0) -> bool:
    """Keep canary traffic flowing (none when `emu` is None: it is down) until `check()`
    holds (or the timeout passes)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        if emu is not None:
            emu.load(SERVICE, 5, tag="canary", concurrency=1)
        time.sleep(0.05)
    return False


@pytest.fixture
def sb() -> Iterator[Sandbox]:
    with sandbox(scenario=SCENARIO) as sb:
        sb.emu.logs.delay = LOG_DELAY
        yield sb


def test_a_breach_is_rolled_back_in_seconds_and_recorded_in_git(sb: Sandbox) -> None:
    with running(sb) as (_, lines, results):
        assert until(lambda: any("streaming" in line for line in lines), sb.emu)
        assert until(lambda: False, sb.emu, timeout=1.0) is False  # healthy: nothing happens
        assert canary_percent(sb.emu) == 5
        sb.emu.behave(CANARY, error_rate=0.5)
        started = time.monotonic()
        assert until(lambda: canary_percent(sb.emu) == 0, sb.emu), lines
        assert time.monotonic() - started < 15
        assert until(lambda: "rolled_back:" in sb.remote_file("rollout/ion-api.yaml"), sb.emu)
        assert "canary_percent: 0" in sb.remote_file("rollout/ion-api.yaml")
        assert "stream: error_rate above 5%" in sb.remote_log("-1", "--format=%B")
        # A human deletes the block to retry the canary: the stream watches it again.
        streams = sum("streaming" in line for line in lines)
        # From a clone of their own: a pull in the controller's clone races its fetches
        # (both write FETCH_HEAD), which no human shares with a running controller.
        human = sb.clone("human")
        (human / "rollout" / "ion-api.yaml").write_text(example_rollout(sb.emu), "utf-8")
        sb.git("commit", "--quiet", "-am", "retry the canary", cwd=human)
        sb.git("push", "--quiet", "origin", "main", cwd=human)
        assert until(lambda: sum("streaming" in line for line in lines) > streams, sb.emu), lines
    assert results[0].rollbacks == [SERVICE]
    assert results[0].exit_code == 4
    rolled = next(line for line in lines if "ROLLED BACK" in line)
    assert "stream: error_rate above 5%" in rolled


def test_a_slow_canary_is_rolled_back_by_its_latency(sb: Sandbox) -> None:
    # Every answer succeeds, but the canary's p95 is 30 s against the gate's 20 s: the
    # latency test rolls it back from the request logs' `httpRequest.latency`.
    with running(sb) as (_, lines, results):
        assert until(lambda: any("streaming" in line for line in lines), sb.emu)
        assert until(lambda: False, sb.emu, timeout=1.0) is False  # fast: nothing happens
        assert canary_percent(sb.emu) == 5
        sb.emu.behave(CANARY, latency_ms={"p50": 25_000, "p95": 30_000})
        assert until(lambda: canary_percent(sb.emu) == 0, sb.emu), lines
        assert until(lambda: "rolled_back:" in sb.remote_file("rollout/ion-api.yaml"), sb.emu)
        assert "stream: latency_p95 above 20s" in sb.remote_log("-1", "--format=%B")
    assert results[0].rollbacks == [SERVICE]
    rolled = next(line for line in lines if "ROLLED BACK" in line)
    assert "stream: latency_p95 above 20s" in rolled
    assert "error_rate" not in rolled


def test_the_stream_survives_an_emulator_restart(sb: Sandbox) -> None:
    with running(sb) as (_, lines, _results):
        assert until(lambda: any("streaming" in line for line in lines), sb.emu)
        ports = sb.emu.grpc_port, sb.emu.http_port
        sb.emu.stop()
        # The emulator is down: no traffic to send while the stream notices.
        assert until(lambda: any("log stream lost" in line for line in lines), None, 10)
        with Emulator.start(
            SCENARIO,
            port=ports[0],
            http_port=ports[1],
            latency_mode="simulated",
            log_delay=LOG_DELAY,
        ) as emu:
            emu.behave(CANARY, error_rate=0.5)
            assert until(lambda: canary_percent(emu) == 0, emu, timeout=40), lines


def test_a_git_outage_delays_the_record_never_the_rollback(sb: Sandbox) -> None:
    with running(sb) as (_, lines, results):
        assert until(lambda: any("streaming" in line for line in lines), sb.emu)
        hidden = sb.remote.with_name("remote-away")
        sb.remote.rename(hidden)  # the git host is down
        try:
            sb.emu.behave(CANARY, error_rate=0.5)
            assert until(lambda: canary_percent(sb.emu) == 0, sb.emu), lines
            assert until(lambda: any("retrying" in line for line in lines), sb.emu)
        finally:
            hidden.rename(sb.remote)
        assert until(lambda: "rolled_back:" in sb.remote_file("rollout/ion-api.yaml"), sb.emu)
        assert until(lambda: any("ROLLED BACK" in line for line in lines), sb.emu)
    assert results[0].rollbacks == [SERVICE]


def test_live_canaries_skip_rolled_back_and_zero_percent(sb: Sandbox) -> None:
    found, errors = live_canaries(sb.repo)
    assert [(c.service, c.canary, c.stable) for c in found] == [(SERVICE, CANARY, STABLE)]
    assert found[0].gates.error_rate == ErrorRateGate(max=0.05, target=0.01)
    assert errors == []
    sb.rollout().write_text(example_rollout(sb.emu, canary_percent=0), encoding="utf-8")
    assert live_canaries(sb.repo) == ([], [])
    sb.rollout().write_text("service: [", encoding="utf-8")
    found, errors = live_canaries(sb.repo)
    assert found == [] and len(errors) == 1 and "ion-api.yaml" in errors[0]


def test_an_api_outage_during_the_rollback_is_retried_until_it_is_live(sb: Sandbox) -> None:
    with running(sb) as (_, lines, results):
        assert until(lambda: any("streaming" in line for line in lines), sb.emu)
        sb.emu.fault("UpdateService", rate=1.0)  # Cloud Run refuses every write
        sb.emu.behave(CANARY, error_rate=0.5)
        assert until(lambda: any("rollback incomplete" in line for line in lines), sb.emu, 30)
        assert canary_percent(sb.emu) == 5
        sb.emu.clear_faults()
        assert until(lambda: canary_percent(sb.emu) == 0, sb.emu), lines
        assert until(lambda: "rolled_back:" in sb.remote_file("rollout/ion-api.yaml"), sb.emu)
    assert results[0].rollbacks == [SERVICE]


def test_an_unexpected_error_in_a_rollback_is_retried_not_the_end_of_the_stream(
    sb: Sandbox,
) -> None:
    calls: list[str] = []

    def failing_twice(ctx: Context, canary: Canary, reason: str) -> bool:
        calls.append(threading.current_thread().name)
        if len(calls) <= 2:  # not a ReconcileError: say a full disk under the rollout file
            raise OSError(28, "No space left on device")
        return roll_back(ctx, canary, reason)

    with running(sb, rollback=failing_twice) as (_, lines, results):
        assert until(lambda: any("streaming" in line for line in lines), sb.emu)
        sb.emu.behave(CANARY, error_rate=0.5)
        assert until(lambda: canary_percent(sb.emu) == 0, sb.emu), lines
        assert until(lambda: "rolled_back:" in sb.remote_file("rollout/ion-api.yaml"), sb.emu)
    assert len(calls) == 3
    assert any("rollback incomplete, retrying: OSError" in line for line in lines), lines
    assert results[0].rollbacks == [SERVICE]


def test_the_refresh_thread_outlives_a_failing_round_and_still_retries_rollbacks(
    sb: Sandbox,
) -> None:
    broken = threading.Event()
    broken.set()

    def clock(inner: Callable[[], datetime]) -> Callable[[], datetime]:
        def read() -> datetime:
            if broken.is_set() and threading.current_thread().name == "stream-refresh":
                raise RuntimeError("clock unreadable")
            return inner()

        return read

    with running(sb, clock=clock) as (_, lines, results):
        assert until(lambda: any("stream refresh failed" in line for line in lines), sb.emu)
        assert until(lambda: any("streaming" in line for line in lines), sb.emu)
        broken.clear()
        sb.emu.fault("UpdateService", rate=1.0)  # the first rollback attempt cannot land
        sb.emu.behave(CANARY, error_rate=0.5)
        assert until(lambda: any("rollback incomplete" in line for line in lines), sb.emu, 30)
        sb.emu.clear_faults()
        # Only the refresh thread retries a pending rollback: it must still be running.
        assert until(lambda: canary_percent(sb.emu) == 0, sb.emu), lines
    refresh_failures = [line for line in lines if "stream refresh failed" in line]
    assert refresh_failures == ["stream refresh failed (RuntimeError: clock unreadable); "
                                "trying again every second"]  # fmt: skip
    assert results[0].rollbacks == [SERVICE]


def test_a_second_controller_stands_by_until_the_lease_is_released(sb: Sandbox) -> None:
    second = sb.clone("second")
    with running(sb, lease="first") as (stop_first, first_lines, first_results):
        assert until(lambda: any("streaming" in line for line in first_lines), sb.emu)
        with running(sb, second, lease="second") as (_, lines, results):
            assert until(lambda: any("standing by" in line for line in lines), sb.emu)
            assert "lease is held by first until" in next(x for x in lines if "standing by" in x)
            assert not any("streaming" in line for line in lines)
            stop_first.set()  # the first controller stops and releases the lease
            assert until(lambda: any("streaming" in line for line in lines), sb.emu)
            sb.emu.behave(CANARY, error_rate=0.5)
            assert until(lambda: canary_percent(sb.emu) == 0, sb.emu), lines
    assert first_results[0].rollbacks == []
    assert results[0].rollbacks == [SERVICE]


def test_a_streamed_rollback_is_told_after_its_record_and_never_waits_for_it(
    sb: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    with WebhookRecorder.start() as hooks:
        hooks.delay = 3.0  # a slow receiver (answered within one attempt's timeout)
        monkeypatch.setenv("HOOK_URL", hooks.url("/hook"))
        monkeypatch.setenv("HOOK_KEY", "k3y-for-hmac")
        notify = (
            "notify:\n  - kind: webhook\n    url: {env: HOOK_URL}\n    secret: {env: HOOK_KEY}\n"
        )
        sb.commit_rollout(sb.rollout().read_text(encoding="utf-8") + notify, "notify")
        recorded_first: list[bool] = []
        hooks.on_request = lambda _r: recorded_first.append(
            "rolled_back:" in sb.rollout().read_text(encoding="utf-8")
        )
        with running(sb) as (_, lines, _results):
            assert until(lambda: any("streaming" in line for line in lines), sb.emu)
            sb.emu.behave(CANARY, error_rate=0.5)
            assert until(lambda: canary_percent(sb.emu) == 0, sb.emu), lines
            assert until(lambda: "rolled_back:" in sb.remote_file("rollout/ion-api.yaml"), sb.emu)
            pushed = time.monotonic()
            assert until(lambda: bool(hooks.requests), sb.emu), lines
        (request,) = hooks.requests
        # The record was pushed while the receiver still held the notice: never waited for.
        assert pushed < request.at + hooks.delay
    assert recorded_first == [True]
    payload = json.loads(request.body)
    assert (payload["event"], payload["service"]) == ("rollback", SERVICE)
    assert payload["canary_percent"] == {"before": 5, "after": 0}
    assert "stream: error_rate above 5%" in json.dumps(payload)
