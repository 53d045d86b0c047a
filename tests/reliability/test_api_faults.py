"""API faults: 30% UNAVAILABLE on every method plus latency, and apply still converges.

Live traffic is sampled continuously from another thread through the official client, and
every UpdateService the emulator accepted is recorded: neither may ever show a split that is
not the old one or one the rollout file asked for.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.backends.cloudrun import CloudRunBackend
from reconciler.model import TrafficSplit
from reconciler.plan import split_for
from reconciler.reconcile import RunResult, apply_all, plan_all
from reconciler.sandbox import Sandbox, example_rollout, sandbox
from reconciler.state import read_events
from tests.refs import ION

from .support import (
    CANARY,
    STABLE,
    Sampler,
    WriteRecorder,
    context,
    live,
    paced_by_emulator,
    routing,
)

RUNS = 4
"""Runs allowed to converge: a run may end in a bounded-retry error; the next one goes on."""


@pytest.fixture
def sb(tmp_path: Path) -> Iterator[Sandbox]:
    with sandbox(tmp_path) as s:
        s.emu.behave(CANARY, error_rate=0.0)
        yield s


def converge(sb: Sandbox, wanted: TrafficSplit) -> list[RunResult]:
    """Apply until the run succeeds and `wanted` is live; every run is returned."""
    results: list[RunResult] = []
    for _ in range(RUNS):
        result = apply_all(context(sb))
        results.append(result)
        if result.exit_code == 0 and live(sb.emu).same_routing(wanted):
            return results
    raise AssertionError(f"no convergence in {RUNS} runs: {results}")


@pytest.mark.parametrize("lro_done", [True, False], ids=["lro-done", "lro-pending"])
def test_apply_converges_under_faults_and_never_serves_a_foreign_split(
    sb: Sandbox, lro_done: bool
) -> None:
    old = live(sb.emu)
    assert routing(old)[0] == {STABLE: 100}
    five = split_for(STABLE, CANARY, 5)
    fifty = split_for(STABLE, CANARY, 50)
    allowed = [old, five, fifty]
    recorder = WriteRecorder(sb.emu)
    if not lro_done:
        sb.emu.lro(done=False, polls=2)  # GetOperation polls go through the faults too
    sb.emu.fault("*", rate=0.3, latency_ms=15)

    with Sampler(sb.emu) as sampler:
        assert sampler.wait_until_seen(old), "the sampler never read the service"
        first = converge(sb, five)
        # The sampler must see the first stage live before the second one starts.
        assert sampler.wait_until_seen(five), "the sampler never saw the first stage"
        sb.commit_rollout(
            example_rollout(sb.emu, canary_percent=50) + "force: true\n", "canary to 50%, forced"
        )
        second = converge(sb, fifty)
    sb.emu.clear_faults()

    # The faults were real: the sampler and the reconciler both met UNAVAILABLE.
    assert sampler.failed > 0
    assert sampler.seen[0].same_routing(old), "the sampler started before the rollout"
    # Never a split that is neither the old nor a wanted one, seen live or accepted.
    foreign = [s.describe() for s in sampler.seen if not any(s.same_routing(a) for a in allowed)]
    assert foreign == []
    accepted = recorder.of("ion-api")
    assert [routing(s) for s in accepted] == [routing(five), routing(fifty)], (
        "exactly one accepted write per stage: retries never wrote twice"
    )
    assert any(s.same_routing(five) for s in sampler.seen)
    assert sampler.seen[-1].same_routing(fifty)

    # Converged in git as well: the remote has both records and nothing is pending.
    sb.git("pull", "--quiet", "--rebase")
    kinds = [e.kind.value for e in read_events(sb.repo, ION)]
    assert kinds.count("applied") == 2, (kinds, first, second)
    assert "canary_percent: 50" in sb.remote_file("rollout/ion-api.yaml")
    assert "force" not in sb.remote_file("rollout/ion-api.yaml")
    assert not plan_all(sb.repo, [], CloudRunBackend(), sb.now()).has_changes


def test_errors_after_bounded_retries_are_one_line_and_move_nothing(sb: Sandbox) -> None:
    sb.emu.fault("GetService", rate=1.0)  # an outage, not a blip
    result = apply_all(context(sb, backend=paced_by_emulator(sb.emu)))
    assert result.exit_code == 1
    (outcome,) = result.outcomes
    assert outcome.error is not None and "\n" not in outcome.error
    assert "still failing after" in outcome.error
    assert sb.emu.write_attempts == 0
    sb.emu.clear_faults()
    assert converge(sb, split_for(STABLE, CANARY, 5))[-1].exit_code == 0


def test_a_read_outage_google_s_client_would_ride_out_does_not_fail_the_run(
    sb: Sandbox,
) -> None:
    """GetService down for 6 s: longer than six quick attempts take, shorter than the 10 s
    Google's Cloud Run client retries its reads for; the run rides it out and goes on."""
    sb.emu.fault("GetService", rate=1.0, seconds=6)
    backend = paced_by_emulator(sb.emu)
    result = apply_all(context(sb, backend=backend))
    assert result.exit_code == 0, result
    assert backend.retries >= 6  # the outage was met, and outlasted six attempts
    assert routing(live(sb.emu)) == routing(split_for(STABLE, CANARY, 5))
