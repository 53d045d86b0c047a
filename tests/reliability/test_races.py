"""Races on one service: reconcilers and humans writing at once, resolved by the etag.

The winner's write stands, the loser re-reads and converges, and nothing is overwritten
silently: the final live split is one that git asks for, or the run says why not.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import pytest

from reconciler.plan import split_for
from reconciler.reconcile import RunResult, apply_all
from reconciler.sandbox import Sandbox, example_rollout, sandbox
from reconciler.state import read_events
from tests.refs import ION

from .support import CANARY, STABLE, WriteRecorder, context, live, routing

HUMAN = {STABLE: 70, CANARY: 30}


@pytest.fixture
def sb(tmp_path: Path) -> Iterator[Sandbox]:
    with sandbox(tmp_path) as s:
        s.emu.behave(CANARY, error_rate=0.0)
        yield s


def wait_for(cond: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


class GatedClock:
    """The run's clock that holds the run right after it observed live traffic.

    `apply_all` reads the clock once after observing every service and before planning:
    holding it there lets the test act between a reconciler's read and its write.
    """

    def __init__(self, sb: Sandbox) -> None:
        self.sb = sb
        self.reached = threading.Event()
        self.release = threading.Event()

    def __call__(self) -> datetime:
        if not self.reached.is_set():
            self.reached.set()
            assert self.release.wait(30), "the test never released the run"
        return self.sb.now()


class RacingClock:
    """Each racing run's clock, holding the run right after it observed live traffic until
    every racer has (the seam `GatedClock` uses): all of them then hold the same etag, so their
    writes race by construction, however far apart the threads started."""

    def __init__(self, sb: Sandbox, barrier: threading.Barrier) -> None:
        self.sb = sb
        self.barrier = barrier
        self.held = False

    def __call__(self) -> datetime:
        if not self.held:
            self.held = True
            try:
                self.barrier.wait()
            except threading.BrokenBarrierError:
                raise AssertionError("the racing runs never all observed live traffic") from None
        return self.sb.now()


def in_thread(fn: Callable[[], RunResult]) -> tuple[threading.Thread, list[RunResult]]:
    out: list[RunResult] = []
    thread = threading.Thread(target=lambda: out.append(fn()))
    thread.start()
    return thread, out


def test_human_drift_between_read_and_write_is_never_overwritten_blindly(sb: Sandbox) -> None:
    assert apply_all(context(sb)).exit_code == 0  # 95/5 live and recorded
    text = (
        sb.rollout().read_text(encoding="utf-8").replace("canary_percent: 5 ", "canary_percent: 10")
    )
    sb.commit_rollout(text + "force: true\n", "canary to 10%, forced")
    recorder = WriteRecorder(sb.emu)
    clock = GatedClock(sb)
    thread, out = in_thread(lambda: apply_all(context(sb, clock=clock)))
    assert clock.reached.wait(30)
    sb.emu.drift("ion-api", HUMAN, {"stable": STABLE, "canary": CANARY})  # etag changes
    clock.release.set()
    thread.join(60)
    (result,) = out
    (outcome,) = result.outcomes
    # The run's write used the etag it read: the drift made it conflict, so it re-read and
    # re-planned against the human's split (the plan's "before" is that split, not 95/5).
    assert outcome.plan is not None
    assert outcome.plan.before.percents() == HUMAN
    assert result.exit_code == 0, result
    assert routing(live(sb.emu)) == routing(split_for(STABLE, CANARY, 10))
    assert [routing(s) for s in recorder.of("ion-api")] == [routing(split_for(STABLE, CANARY, 10))]
    sb.git("pull", "--quiet", "--rebase")
    last = read_events(sb.repo, ION)[-1]
    assert last.before is not None and "ion-api-00042-xyz=30" in last.before, last


def test_human_drift_stays_when_self_heal_is_off(sb: Sandbox) -> None:
    assert apply_all(context(sb)).exit_code == 0
    text = sb.rollout().read_text(encoding="utf-8")
    sb.commit_rollout(text.replace("self_heal: true", "self_heal: false"), "no self-heal")
    writes = sb.emu.writes
    clock = GatedClock(sb)
    thread, out = in_thread(lambda: apply_all(context(sb, clock=clock)))
    assert clock.reached.wait(30)
    sb.emu.drift("ion-api", HUMAN, {"stable": STABLE, "canary": CANARY})
    clock.release.set()
    thread.join(60)
    (result,) = out
    # The run planned against a stale read (in sync); whatever it did, the human's split is
    # live, no write landed, and a fresh run reports the drift instead of correcting it.
    assert live(sb.emu).percents() == HUMAN
    assert sb.emu.writes == writes
    again = apply_all(context(sb))
    (outcome,) = again.outcomes
    assert outcome.plan is not None and outcome.plan.drift
    assert any("self_heal is off" in w for w in outcome.plan.warnings)
    assert live(sb.emu).percents() == HUMAN and sb.emu.writes == writes
    assert result.exit_code in (0, 1)


def test_a_reconciler_with_older_git_never_undoes_a_newer_apply(sb: Sandbox) -> None:
    """A (git at 5%) reads live, then B applies a newer PR (25%, forced) and pushes; when A
    writes, its etag is stale. A must not re-plan its older desire over B's change."""
    other = sb.clone("second")
    recorder = WriteRecorder(sb.emu)
    clock = GatedClock(sb)
    thread, out = in_thread(lambda: apply_all(context(sb, clock=clock)))
    assert clock.reached.wait(30)
    # A human merges the next stage; reconciler B (another runner) applies it at once.
    (other / "rollout" / "ion-api.yaml").write_text(
        example_rollout(sb.emu, canary_percent=25) + "force: true\n", encoding="utf-8"
    )
    sb.git("commit", "--quiet", "-am", "canary to 25%, forced", cwd=other)
    sb.git("push", "--quiet", "origin", "main", cwd=other)
    b = apply_all(context(sb, other))
    assert b.exit_code == 0, b
    assert routing(live(sb.emu)) == routing(split_for(STABLE, CANARY, 25))
    clock.release.set()
    thread.join(60)
    (a,) = out
    (outcome,) = a.outcomes
    # A syncs with the remote before any write that is not a rollback, so it either sees
    # B's newer rollout file (in sync) or, racing it, refuses to overwrite B's write.
    if outcome.error is not None:
        assert a.exit_code == 1
        assert "another reconciler changed traffic" in outcome.error
        assert "nothing overwritten" in outcome.error
    else:
        assert a.exit_code == 0 and not outcome.applied, a
    # Live is what the remote's rollout file says (25%), not A's older 5%.
    assert routing(live(sb.emu)) == routing(split_for(STABLE, CANARY, 25)), (a, recorder.splits)
    assert [routing(s) for s in recorder.of("ion-api")] == [
        routing(split_for(STABLE, CANARY, 25))
    ], "A wrote over B"
    assert "canary_percent: 25" in sb.remote_file("rollout/ion-api.yaml")
    # The next run of A (now with fresh git) is in sync and changes nothing.
    writes = sb.emu.writes
    nxt = apply_all(context(sb))
    assert nxt.exit_code == 0, nxt
    assert sb.emu.writes == writes


def test_four_reconcilers_racing_one_change_write_once_and_record_once(sb: Sandbox) -> None:
    repos = [sb.repo, *(sb.clone(f"runner-{i}") for i in range(3))]
    # Every run reads live before any writes, so all four send the same etag: one lands, the
    # others are refused. A slow UpdateService (the delay is served before the write is
    # judged) makes the writes overlap in flight too.
    racing = threading.Barrier(len(repos), timeout=60)
    sb.emu.fault("UpdateService", rate=0.0, latency_ms=800)
    results: list[RunResult] = []
    lock = threading.Lock()

    def run(repo: Path) -> None:
        result = apply_all(context(sb, repo, clock=RacingClock(sb, racing)))
        with lock:
            results.append(result)

    threads = [threading.Thread(target=run, args=(r,)) for r in repos]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads), "a run outlasted its join"
    assert sorted(r.exit_code for r in results) == [0, 0, 0, 0], [
        (
            r.exit_code,
            r.git_error,
            r.degraded,
            [(o.error, o.held, o.left_alone) for o in r.outcomes],
        )
        for r in results
    ]
    assert sb.emu.writes == 1
    assert sb.emu.write_attempts >= 2, "the writes did not race"
    assert routing(live(sb.emu)) == routing(split_for(STABLE, CANARY, 5))
    sb.git("pull", "--quiet", "--rebase")
    kinds = [e.kind.value for e in read_events(sb.repo, ION)]
    assert kinds == ["applied"], kinds
    subjects = sb.remote_log("--format=%b").splitlines()  # a line per service that acted
    assert sum("canary 0% -> 5%" in s for s in subjects) == 1, subjects
