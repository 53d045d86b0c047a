"""An advance killed after its traffic write and before its record, on a clone that is used again.

The kill is simulated with the product's own functions: the run's tick is gathered and decided
(`servicetick.prepare`), its stamped traffic write made (`execute.write_traffic`, and with
`edited` also the rollout-file edit, `execute.carry_out`), and nothing after it: no record,
no commit. A run within `recover_after` of that write must leave the service alone (the write
may belong to a run still recording it), a later run must record it, and a canary that breaches
its gates meanwhile must still be rolled back.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from reconciler.decide import Decision
from reconciler.execute import carry_out, write_traffic
from reconciler.gather import measure
from reconciler.loader import load_spec
from reconciler.plan import Reason, split_for
from reconciler.reconcile import Context, apply_all, ref_of
from reconciler.sandbox import Sandbox, sandbox
from reconciler.servicetick import prepare
from reconciler.state import read_events, read_status
from reconciler.testing.git import run_git
from tests.builders import rollout_text
from tests.refs import ION, ION_DIR

from .support import CANARY, STABLE, context, live, reconcile_cli, routing

WINDOW = 300.0
LAG = 180.0
TEN = split_for(STABLE, CANARY, 10)
FIVE = split_for(STABLE, CANARY, 5)


@pytest.fixture
def sb(tmp_path: Path) -> Iterator[Sandbox]:
    with sandbox(tmp_path) as s:
        s.emu.behave(CANARY, error_rate=0.0)
        s.commit_rollout(
            rollout_text(s.emu, probes=False, auto_advance="true", bake="1m"), "auto advance"
        )
        yield s


def serve(sb: Sandbox, canary: int = 400) -> None:
    """Requests to the service and to its canary, then one gate window later."""
    sb.emu.load("ion-api", 200)
    sb.emu.load("ion-api", canary, tag="canary")
    sb.emu.advance_clock(WINDOW)


def killed_advance(ctx: Context, path: Path, *, edited: bool) -> Decision:
    """Decide the tick with the product's functions, write its traffic (stamped) and, with
    `edited`, the rollout-file edit; then stop as a killed process would: no record."""
    spec = load_spec(path)
    ref = ref_of(spec)
    current = ctx.backend.get_service(ref)
    status = read_status(ctx.state_root, ref)
    windows, errors = measure(ctx, [(spec, current, status)], ctx.clock())
    revisions = (spec.revisions.canary, spec.revisions.stable)
    measured = [w for rev in revisions if rev for w in windows.get((ref.key, rev), [])]
    tick = prepare(ctx, path, spec, current, measured, errors.get(ref.key))
    d = tick.decision
    assert d.plan.reason is Reason.ADVANCE, d.plan
    if edited:
        carried, _ = carry_out(ctx, tick.run, d, tick.redecide)
        return carried
    return write_traffic(ctx, d, tick.redecide, tick.run.now)[0]


def ready_to_advance(sb: Sandbox) -> None:
    """5% live and recorded, its gates passing for the bake: the next run advances."""
    assert apply_all(context(sb, metrics=True)).exit_code == 0
    sb.emu.advance_clock(LAG)
    serve(sb)
    passing = apply_all(context(sb, metrics=True))
    assert passing.exit_code == 0 and not any(o.applied for o in passing.outcomes), passing
    serve(sb)


def advance_then_kill(sb: Sandbox, *, edited: bool) -> None:
    """The advance to 10%, killed after its traffic write."""
    ready_to_advance(sb)
    killed_advance(context(sb, metrics=True), sb.rollout(), edited=edited)
    assert routing(live(sb.emu)) == routing(TEN)
    assert "canary_percent: 5" in sb.remote_file("rollout/ion-api.yaml")


def remote_head(sb: Sandbox) -> str:
    return run_git(sb.remote, "rev-parse", "main")


@pytest.mark.parametrize("edited", [False, True], ids=["before-the-edit", "after-the-edit"])
def test_a_run_soon_after_a_killed_advance_leaves_the_service_alone(
    sb: Sandbox, edited: bool
) -> None:
    advance_then_kill(sb, edited=edited)
    writes, head = sb.emu.writes, remote_head(sb)
    local = run_git(sb.repo, "rev-parse", "HEAD")

    sb.emu.advance_clock(30)
    # plan and a dry run say what apply will do: nothing, and why.
    for args in (("plan", "--detailed-exitcode"), ("apply", "--dry-run")):
        shown = reconcile_cli(sb.repo, *args)
        assert shown.returncode == 0, shown.stdout + shown.stderr
        assert "left alone: a write" in shown.stdout, shown.stdout
        assert "drift" not in shown.stdout, shown.stdout
    soon = reconcile_cli(sb.repo, "apply")

    # Not taken for drift: 10% keeps serving, and nothing is written or recorded.
    assert sb.emu.writes == writes, soon.stdout + soon.stderr
    assert routing(live(sb.emu)) == routing(TEN)
    assert remote_head(sb) == head
    assert run_git(sb.repo, "rev-parse", "HEAD") == local
    assert soon.returncode == 0, soon.stderr
    line = (
        r"ion-api: left alone: a write (\d+) s ago is not yet recorded; recovered after 2m "
        r"if no run records it\n"
    )
    said = re.fullmatch(line, soon.stderr)
    assert said is not None and 30 <= int(said[1]) < 120, soon.stderr

    # Once `recover_after` has passed, the next run on the same clone records the advance.
    sb.emu.advance_clock(LAG)
    later = apply_all(context(sb, metrics=True))
    assert later.exit_code == 0, later
    assert sb.emu.writes == writes
    assert routing(live(sb.emu)) == routing(TEN)
    assert "canary_percent: 10" in sb.remote_file("rollout/ion-api.yaml")
    assert "recorded late" in sb.remote_file(f"{ION_DIR}/events.jsonl")
    assert run_git(sb.repo, "status", "--porcelain") == ""
    late = [e for e in read_events(sb.repo, ION) if e.details.get("recovered")]
    assert len(late) == 1, late


@pytest.mark.parametrize("edited", [False, True], ids=["before-the-edit", "after-the-edit"])
def test_a_canary_failing_after_a_killed_advance_is_still_rolled_back(
    sb: Sandbox, edited: bool
) -> None:
    """A rollback to the stable revision is always safe: it goes ahead while the write is
    young (here `recover_after` is long, so every run of the test falls inside it)."""
    advance_then_kill(sb, edited=edited)
    sb.emu.behave(CANARY, error_rate=0.3)
    for _ in range(2):  # `consecutive_failures: 2`, judged on what the 10% stage served
        serve(sb, canary=600)
    sb.emu.advance_clock(LAG)
    run = apply_all(context(sb, metrics=True, recover_after=timedelta(hours=1)))
    assert run.exit_code == 4, run
    assert live(sb.emu).percents() == {STABLE: 100}
    text = sb.remote_file("rollout/ion-api.yaml")
    assert "rolled_back:" in text and "canary_percent: 0" in text
    assert run_git(sb.repo, "status", "--porcelain") == ""
    # Sticky: later runs keep the canary out, whatever the killed advance stamped.
    sb.emu.advance_clock(LAG)
    assert apply_all(context(sb, metrics=True)).exit_code == 0
    assert live(sb.emu).percents() == {STABLE: 100}


def test_a_write_another_runner_recorded_goes_on_once_the_sync_brings_its_record(
    sb: Sandbox,
) -> None:
    """A runner whose clone has not pulled yet sees a young write its git does not record;
    the sync brings the record, and the run goes on as usual rather than leaving it alone."""
    ready_to_advance(sb)
    other = sb.clone("other-runner")
    advanced = apply_all(context(sb, metrics=True))
    (o,) = advanced.outcomes
    assert o.applied and o.plan is not None and o.plan.reason is Reason.ADVANCE, advanced
    writes = sb.emu.writes

    sb.emu.advance_clock(30)
    run = apply_all(context(sb, other, metrics=True))
    (o,) = run.outcomes
    assert o.left_alone is None and not o.error and not o.applied, run
    assert run.exit_code == 0, run
    assert sb.emu.writes == writes
    assert routing(live(sb.emu)) == routing(TEN)
    assert load_spec(other / "rollout" / "ion-api.yaml").canary_percent == 10


def test_the_late_record_judges_the_canary_from_the_write_and_rolls_a_breach_back(
    sb: Sandbox,
) -> None:
    """The stage a killed write made began at that write, not at the run that records it
    late: what the canary served in between is judged, and a breach rolls it back at once."""
    advance_then_kill(sb, edited=False)
    sb.emu.behave(CANARY, error_rate=0.3)
    for _ in range(2):
        serve(sb, canary=600)
    sb.emu.advance_clock(LAG)
    run = apply_all(context(sb, metrics=True))
    assert run.exit_code == 4, run
    assert live(sb.emu).percents() == {STABLE: 100}
    kinds = [(e.kind.value, bool(e.details.get("recovered"))) for e in read_events(sb.repo, ION)]
    assert ("advanced", True) in kinds and kinds[-1] == ("rolled_back", False), kinds
    assert "rolled_back:" in sb.remote_file("rollout/ion-api.yaml")
