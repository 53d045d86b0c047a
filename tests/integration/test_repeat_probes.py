"""`repeat:` synthetic load on the emulator data plane: a low-traffic canary can be judged.

With 20 real requests per window and `min_requests: 100`, every window is INCONCLUSIVE (see
tests/integration/test_gates.py): a canary failing 20% is never rolled back. A probe with
`repeat:` sends the canary enough requests, through its tag URL, that the windows Cloud
Monitoring measures reach `min_requests`: the same canary is judged and rolled back, and the
coverage says how many requests were synthetic.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.builders import context

from reconciler.loader import load_spec
from reconciler.model import Outcome, ServiceRef
from reconciler.reconcile import Context, RunResult, apply_all
from reconciler.sandbox import Sandbox, example_rollout, sandbox
from reconciler.state import read_status

CANARY = "ion-api-00042-xyz"
ION = ServiceRef("naeda-genesis", "us-central1", "ion-api")
WINDOW = 300.0
LAG = 180.0
REPEAT = "{rate: 50/s, max: 150, budget: 10s}"


@pytest.fixture
def sb(tmp_path: Path) -> Iterator[Sandbox]:
    with sandbox(tmp_path) as s:
        yield s


def rollout(sb: Sandbox, repeat: str | None) -> str:
    text = example_rollout(sb.emu)
    head, rest = text.split("probes:\n", 1)
    probe = '  - name: synthetic\n    url: "{canary_url}/"\n    expect_status: 200\n'
    if repeat is not None:
        probe += f"    repeat: {repeat}\n"
    return head + "probes:\n" + probe + rest[rest.index("dependencies:") :]


def canary_served(sb: Sandbox) -> int:
    return sum(1 for r in sb.emu.world.served() if r.revision == CANARY)


def quiet_tick(sb: Sandbox, ctx: Context) -> RunResult:
    """20 real requests to the canary, one window later an apply."""
    sb.emu.load("ion-api", 20, tag="canary")
    sb.emu.advance_clock(WINDOW)
    return apply_all(ctx)


def test_repeat_makes_a_quiet_failing_canary_judged_and_rolled_back(sb: Sandbox) -> None:
    sb.emu.behave(CANARY, error_rate=0.2)
    sb.commit_rollout(rollout(sb, REPEAT), "quiet canary, synthetic load")
    ctx = context(sb, metrics=True)
    assert apply_all(ctx).exit_code == 0  # 5% live (probes run once the canary is live)
    sb.emu.advance_clock(LAG)

    before = canary_served(sb)
    codes = [quiet_tick(sb, ctx).exit_code]
    # 20 real requests, the probe, then exactly `max` synthetic ones.
    assert canary_served(sb) - before == 20 + 1 + 150
    status = read_status(sb.repo, ION)
    assert status is not None
    (record,) = status.probes
    assert record.name == "synthetic" and record.synthetic == 150
    assert status.coverage.synthetic == 150
    verdicts = []
    while len(codes) < 4 and 4 not in codes:
        result = quiet_tick(sb, ctx)
        codes.append(result.exit_code)
        verdicts.append(result.outcomes[0].verdict)
    assert codes[-1] == 4, (codes, verdicts)  # rolled back: judged, though users sent 20
    spec = load_spec(sb.rollout())
    assert spec.rolled_back is not None and "error_rate" in spec.rolled_back.reason
    judged = [g for v in verdicts if v is not None for g in v.gates if g.gate == "error_rate"]
    assert judged and judged[-1].outcome is Outcome.FAIL and judged[-1].samples >= 100


def test_without_repeat_the_same_canary_stays_inconclusive(sb: Sandbox) -> None:
    sb.emu.behave(CANARY, error_rate=0.2)
    sb.commit_rollout(rollout(sb, None), "quiet canary, no synthetic load")
    ctx = context(sb, metrics=True)
    assert apply_all(ctx).exit_code == 0
    sb.emu.advance_clock(LAG)
    for _ in range(3):
        result = quiet_tick(sb, ctx)
        assert result.exit_code == 0
        verdict = result.outcomes[0].verdict
        assert verdict is not None and verdict.outcome is not Outcome.FAIL
        assert "min_requests" in verdict.summary()
    status = read_status(sb.repo, ION)
    assert status is not None and status.coverage.synthetic == 0


def test_repeat_stops_at_its_wall_clock_budget(sb: Sandbox) -> None:
    sb.emu.behave(CANARY, error_rate=0.0)
    # 2/s for 1 s: the budget, not `max`, ends the burst (the first request goes at once).
    sb.commit_rollout(rollout(sb, "{rate: 2/s, max: 200, budget: 1s}"), "tight budget")
    ctx = context(sb, metrics=True)
    assert apply_all(ctx).exit_code == 0  # 5% live
    before = canary_served(sb)
    assert apply_all(ctx).exit_code == 0
    assert canary_served(sb) - before == 1 + 2
    status = read_status(sb.repo, ION)
    assert status is not None and status.probes[0].synthetic == 2
