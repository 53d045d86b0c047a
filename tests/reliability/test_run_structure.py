"""The run structure: rollbacks first, degraded mode, honest exit codes, with real git.

A leftover uncommitted rollout edit once made `apply` refuse to run at all, so a failing
canary elsewhere stayed live; a clone that could not reach the remote's tip went on applying
its stale desired state and still exited 4 as if the rollback were recorded.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from reconciler import yamledit
from reconciler.backends.cloudrun import CloudRunBackend
from reconciler.emulator.scenario import DEFAULT_SCENARIO
from reconciler.execute import Context
from reconciler.plan import split_for
from reconciler.reconcile import (
    DEGRADED_EXIT,
    ROLLED_BACK_EXIT,
    ROLLED_BACK_LOCAL_EXIT,
    RunResult,
    apply_all,
    plan_all,
)
from reconciler.sandbox import Sandbox, sandbox
from tests.builders import context
from tests.refs import ION_DIR

from ..integration.test_gates import WINDOW, live_percents, tick
from .support import CANARY, STABLE, WriteRecorder, live, reconcile_cli, routing
from .test_races import in_thread


@pytest.fixture
def sb(tmp_path: Path) -> Iterator[Sandbox]:
    with sandbox(tmp_path) as s:  # the built-in canary fails 7% of requests
        yield s


def _failing_window(sb: Sandbox) -> None:
    """5% live and one window recorded, too small to judge (a window with enough failing
    requests fails fast and would roll back at once): the next failing window rolls back."""
    ctx = context(sb, metrics=True)
    first = apply_all(ctx)
    assert first.exit_code == 0, [o.error for o in first.outcomes]
    second = tick(sb, ctx, canary=50)
    assert second.exit_code == 0, [o.error for o in second.outcomes]


def _until_rolled_back(sb: Sandbox, make: Callable[[], Context]) -> RunResult:
    """Failing windows until a run rolls back (the gates need a run of failing windows)."""
    for _ in range(3):
        result = tick(sb, make(), canary=2000)
        if any(o.rolled_back or o.rollback_failed for o in result.outcomes):
            break
    return result


def _break_remote(sb: Sandbox) -> Path:
    moved = sb.remote.with_name(sb.remote.name + ".unreachable")
    sb.remote.rename(moved)
    return moved


def test_an_uncommitted_edit_of_another_service_never_blocks_a_rollback(sb: Sandbox) -> None:
    _failing_window(sb)
    # A failed commit left another service's rollout file behind, uncommitted.
    other = sb.repo / "rollout" / "payments-api.yaml"
    other.write_text(sb.rollout().read_text().replace("ion-api", "payments-api"))
    result = _until_rolled_back(sb, lambda: context(sb, metrics=True))
    by = {o.service: o for o in result.outcomes}
    assert by["ion-api"].rolled_back, result
    assert by["payments-api"].error is not None
    assert result.exit_code == ROLLED_BACK_EXIT, result
    assert live_percents(sb) == {STABLE: 100}
    assert "rolled_back" in sb.remote_file("rollout/ion-api.yaml")


def test_a_leftover_edit_of_the_failing_service_never_blocks_its_rollback(sb: Sandbox) -> None:
    _failing_window(sb)
    rollout = sb.rollout()
    rollout.write_text(rollout.read_text() + "# left behind by a failed commit\n")
    result = _until_rolled_back(sb, lambda: context(sb, metrics=True))
    assert result.exit_code == ROLLED_BACK_EXIT, result
    assert live_percents(sb) == {STABLE: 100}
    assert "rolled_back" in sb.remote_file("rollout/ion-api.yaml")


def test_an_uncommitted_edit_holds_only_its_own_service(sb: Sandbox) -> None:
    rollout = sb.rollout()
    rollout.write_text(rollout.read_text() + "# not committed\n")
    result = apply_all(context(sb, metrics=True))  # ion-api wants 0% -> 5%
    (outcome,) = result.outcomes
    assert outcome.error is not None and "uncommitted change" in outcome.error
    assert outcome.error.startswith("rollout/ion-api.yaml")
    assert "nothing moved" in outcome.error
    assert result.exit_code == 1
    assert live_percents(sb) == {STABLE: 100}


def test_degraded_rolls_back_exits_5_and_recovers_when_the_remote_returns(sb: Sandbox) -> None:
    _failing_window(sb)
    moved = _break_remote(sb)
    result = _until_rolled_back(sb, lambda: context(sb, metrics=True))
    (outcome,) = result.outcomes
    assert result.degraded is not None, result
    assert outcome.rolled_back and outcome.commit is not None
    # Live, but not recorded on the remote: never 4.
    assert result.exit_code == ROLLED_BACK_LOCAL_EXIT, result
    assert live_percents(sb) == {STABLE: 100}
    moved.rename(sb.remote)
    again = apply_all(context(sb, metrics=True))
    assert again.degraded is None and again.pushed is True, again
    assert again.exit_code == 0, again
    assert "rolled_back" in sb.remote_file("rollout/ion-api.yaml")
    assert live_percents(sb) == {STABLE: 100}


def test_degraded_applies_no_new_stage_says_so_and_recovers(sb: Sandbox) -> None:
    sb.emu.behave(CANARY, error_rate=0.0)
    assert reconcile_cli(sb.repo, "apply").returncode == 0  # 0% -> 5%, pushed
    # A desired-state change committed in this clone; the remote then becomes unreachable.
    forced = yamledit.set_canary_percent(sb.rollout().read_text(), 25) + "force: true\n"
    sb.rollout().write_text(forced)
    sb.git("commit", "--quiet", "-am", "canary to 25%, forced")
    moved = _break_remote(sb)
    run = reconcile_cli(sb.repo, "apply")
    assert run.returncode == DEGRADED_EXIT, (run.stdout, run.stderr)
    lines = [x for x in (run.stdout + run.stderr).splitlines() if "ion-api" in x]
    assert lines and all("degraded" in x for x in lines), (run.stdout, run.stderr)
    assert routing(live(sb.emu)) == routing(split_for(STABLE, CANARY, 5))
    moved.rename(sb.remote)
    healed = reconcile_cli(sb.repo, "apply")
    assert healed.returncode == 0, (healed.stdout, healed.stderr)
    assert "degraded" not in healed.stdout + healed.stderr
    assert routing(live(sb.emu)) == routing(split_for(STABLE, CANARY, 25))
    assert "canary_percent: 25" in sb.remote_file("rollout/ion-api.yaml")


def test_a_rejected_push_is_not_reported_as_a_recorded_rollback(sb: Sandbox) -> None:
    _failing_window(sb)
    # The remote refuses every push (a protected branch); fetching still works.
    hook = sb.remote / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'protected branch' >&2\nexit 1\n")
    hook.chmod(0o755)

    def make() -> Context:
        ctx = context(sb, metrics=True)
        ctx.git.backoff = 0.01  # type: ignore[union-attr]
        return ctx

    result = _until_rolled_back(sb, make)
    (outcome,) = result.outcomes
    assert outcome.rolled_back
    assert result.git_error is not None and "ion-api moved" in result.git_error
    assert result.exit_code == ROLLED_BACK_LOCAL_EXIT, result
    assert live_percents(sb) == {STABLE: 100}


def test_plan_salvages_a_corrupt_status_file(sb: Sandbox) -> None:
    sb.emu.behave(CANARY, error_rate=0.0)
    assert apply_all(context(sb, metrics=True)).exit_code == 0
    path = sb.repo / ION_DIR / "status.yaml"
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    data.update({"windows": "many"})
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    plan = plan_all(sb.repo, (), CloudRunBackend(), sb.now())
    assert plan.errors == (), plan.errors
    (sp,) = plan.services
    assert any("state:" in w and "windows" in w for w in sp.warnings), sp.warnings


class _SlowTarget:
    """A loopback HTTP target that holds every request until released (bounded)."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.entered.set()
                outer.release.wait(30)
                body = json.dumps({"status": "healthy"}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/health"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def test_a_slow_probe_of_one_service_never_delays_another_services_rollback(
    tmp_path: Path,
) -> None:
    slow = _SlowTarget()
    scenario = {
        "services": [
            *DEFAULT_SCENARIO["services"],
            {
                "name": "aaa-slow",  # sorts first: a one-by-one run would probe it first
                "traffic": {"aaa-slow-00041-abc": 100},
                "revisions": [
                    {"name": "aaa-slow-00041-abc", "behavior": {"error_rate": 0.0}},
                    {"name": "aaa-slow-00042-xyz", "behavior": {"error_rate": 0.0}},
                ],
            },
        ],
        "dependencies": DEFAULT_SCENARIO["dependencies"],
    }
    try:
        with sandbox(tmp_path, scenario=scenario) as sb:
            text = sb.rollout().read_text()
            other = (
                text.replace("ion-api-", "aaa-slow-")
                .replace("service: ion-api", "service: aaa-slow")
                .replace('"{canary_url}/api/health"', f'"{slow.url}"\n    timeout: 40s')
            )
            assert slow.url in other
            (sb.repo / "rollout" / "aaa-slow.yaml").write_text(other)
            sb.git("add", "rollout")
            sb.git("commit", "--quiet", "-m", "aaa-slow canary")
            sb.git("push", "--quiet", "origin", "main")
            slow.release.set()  # the first runs answer at once
            _failing_window(sb)
            slow.release.clear()
            slow.entered.clear()
            recorder = WriteRecorder(sb.emu)
            for _ in range(3):  # failing windows until the gates roll ion-api back
                slow.release.clear()
                slow.entered.clear()
                sb.emu.load("ion-api", 200)
                sb.emu.load("ion-api", 2000, tag="canary")
                sb.emu.advance_clock(WINDOW)
                thread, out = in_thread(lambda: apply_all(context(sb, metrics=True)))
                assert slow.entered.wait(30), "the slow probe never started"
                deadline = time.monotonic() + 30  # ends as soon as the write lands
                while not recorder.of("ion-api") and time.monotonic() < deadline:
                    if not thread.is_alive():
                        break
                    time.sleep(0.05)
                landed_while_held = bool(recorder.of("ion-api")) and not slow.release.is_set()
                slow.release.set()
                thread.join(60)
                (result,) = out
                if any(o.rolled_back for o in result.outcomes):
                    break
            # ion-api's rollback landed while aaa-slow's probe was still being held.
            assert landed_while_held, recorder.splits
            assert [routing(s) for s in recorder.of("ion-api")] == [
                routing(split_for(STABLE, None, 0))
            ], recorder.splits
            assert {o.service for o in result.outcomes if o.rolled_back} == {"ion-api"}, result
    finally:
        slow.close()
