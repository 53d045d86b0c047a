"""Git write-back against the emulator: rollback, finalize, races, crash recovery (the other
operator verbs: test_verbs.py)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.builders import context
from tests.refs import ION, ION_DIR, STATE

from reconciler import clients
from reconciler.backends.cloudrun import CloudRunBackend
from reconciler.errors import ReconcileError
from reconciler.loader import load_spec
from reconciler.manual import promote, rollback
from reconciler.plan import Reason
from reconciler.reconcile import apply_all, ref_of
from reconciler.sandbox import Sandbox, example_rollout, sandbox
from reconciler.state import read_events

STABLE = "ion-api-00041-abc"
CANARY = "ion-api-00042-xyz"


@pytest.fixture
def sb(tmp_path: Path) -> Iterator[Sandbox]:
    with sandbox(tmp_path) as s:
        s.emu.behave(CANARY, error_rate=0.0)
        yield s


def live_percents(sb: Sandbox) -> dict[str, int]:
    svc = clients.services_client().get_service(name=sb.emu.service_name("ion-api"))
    return {t.revision: t.percent for t in svc.traffic_statuses if t.percent}


def test_manual_rollback_keeps_every_comment_and_is_sticky(sb: Sandbox) -> None:
    assert apply_all(context(sb)).exit_code == 0
    before = sb.rollout().read_text(encoding="utf-8")
    (outcome,) = rollback(context(sb), "ion-api", "5xx spike after deploy")
    assert outcome.rolled_back
    assert live_percents(sb) == {STABLE: 100}

    after = sb.remote_file("rollout/ion-api.yaml")
    old_lines, new_lines = before.splitlines(), after.splitlines()
    changed = [(a, b) for a, b in zip(old_lines, new_lines, strict=False) if a != b]
    assert [b for _, b in changed] == ["canary_percent: 0                # what git wants live now"]
    assert new_lines[len(old_lines) :][0] == "rolled_back:"
    assert "5xx spike after deploy" in after
    for line in old_lines:
        if "#" in line and not line.startswith("canary_percent"):
            assert line in new_lines  # every comment kept
    log = sb.remote_log("-1", "--format=%s")
    assert log.startswith("reconcile(ion-api): rollback canary 5% -> 0%")

    # Sticky: the next apply does not route to the rolled-back canary again.
    assert apply_all(context(sb)).exit_code == 0
    assert live_percents(sb) == {STABLE: 100}


def test_forced_stage_then_finalize_at_100(sb: Sandbox) -> None:
    text = example_rollout(sb.emu, canary_percent=100) + "force: true\n"
    sb.commit_rollout(text, "ship it: force the canary to 100%")
    result = apply_all(context(sb))
    assert result.exit_code == 0, result
    assert live_percents(sb) == {CANARY: 100}
    assert "force" not in sb.rollout().read_text(encoding="utf-8")  # force applies once
    # The next run finalizes: the canary becomes the stable revision, in git and live.
    result = apply_all(context(sb))
    assert result.outcomes[0].plan is not None
    assert result.outcomes[0].plan.reason is Reason.FINALIZE
    spec = load_spec(sb.rollout())
    assert spec.revisions.stable == CANARY and spec.revisions.canary is None
    svc = CloudRunBackend().get_service(ref_of(spec))
    assert svc.traffic.tags() == {"stable": CANARY}
    assert apply_all(context(sb)).outcomes[0].plan.reason is Reason.NONE  # type: ignore[union-attr]


def test_two_reconcilers_on_one_service_one_wins_no_lost_update(sb: Sandbox) -> None:
    other = sb.clone("second")
    results = []

    def run(repo: Path) -> None:
        results.append(apply_all(context(sb, repo)))

    threads = [threading.Thread(target=run, args=(r,)) for r in (sb.repo, other)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(r.exit_code for r in results) == [0, 0], results
    assert live_percents(sb) == {STABLE: 95, CANARY: 5}
    # Exactly one of them moved traffic (the other hit the etag conflict or found it done),
    # and the remote has that record.
    assert sb.emu.writes == 1
    sb.git("pull", "--quiet", "--rebase")
    events = read_events(sb.repo, ION)
    assert [e.kind.value for e in events] == ["applied"]


TWO_SERVICES = {
    "project": "naeda-genesis",
    "region": "us-central1",
    "services": [
        {
            "name": name,
            "traffic": {f"{name}-00001-aaa": 100},
            "revisions": [{"name": f"{name}-00001-aaa"}, {"name": f"{name}-00002-bbb"}],
        }
        for name in ("ion-api", "payments-api")
    ],
    "dependencies": [{"name": "lumen-gateway", "body": {"status": "healthy"}}],
}


def rollout_for(name: str) -> str:
    return (
        f"service: {name}\nproject: naeda-genesis\nregion: us-central1\n"
        f"revisions: {{stable: {name}-00001-aaa, canary: {name}-00002-bbb}}\n"
        "canary_percent: 5\nstages: [5, 25, 100]\n"
    )


def test_two_reconcilers_sharded_by_service_both_records_land(tmp_path: Path) -> None:
    files = {f"rollout/{n}.yaml": rollout_for(n) for n in ("ion-api", "payments-api")}
    with sandbox(tmp_path, scenario=TWO_SERVICES, rollout=files) as s:
        other = s.clone("second")
        results = []

        def run(repo: Path, service: str) -> None:
            results.append(apply_all(context(s, repo), [service]))

        threads = [
            threading.Thread(target=run, args=(s.repo, "ion-api")),
            threading.Thread(target=run, args=(other, "payments-*")),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert sorted(r.exit_code for r in results) == [0, 0], results
        subjects = s.remote_log("--format=%b").splitlines()  # a line per service that acted
        assert any(x.startswith("reconcile(ion-api): canary 0% -> 5%") for x in subjects)
        assert any(x.startswith("reconcile(payments-api): canary 0% -> 5%") for x in subjects)
        assert "applied" in s.remote_file(f"{ION_DIR}/events.jsonl")
        assert "applied" in s.remote_file(f"{STATE}/payments-api/events.jsonl")


def test_crash_between_traffic_and_commit_is_recovered(sb: Sandbox) -> None:
    # A run that changed traffic and died before committing: traffic live, git unaware.
    crashed = context(sb)
    crashed.git = None
    assert apply_all(crashed).exit_code == 0
    sb.git("checkout", "--quiet", "--", ".")
    sb.git("clean", "--quiet", "-fdx", "state")
    assert not (sb.repo / "state").exists()
    writes = sb.emu.writes
    sb.emu.advance_clock(180)  # the stamp is older than a concurrent run's recording takes
    # The next run converges without writing again and records what happened.
    assert apply_all(context(sb)).exit_code == 0
    assert sb.emu.writes == writes
    events = read_events(sb.repo, ION)
    assert any(e.details.get("recovered") for e in events), events
    assert "recorded late" in sb.remote_file(f"{ION_DIR}/events.jsonl")


def test_crashed_rollback_writes_the_sticky_block_on_the_next_run(sb: Sandbox) -> None:
    assert apply_all(context(sb)).exit_code == 0
    crashed = context(sb)
    crashed.git = None
    rollback(crashed, "ion-api", "error burst")
    sb.git("checkout", "--quiet", "--", ".")  # the uncommitted edit is lost with the runner
    assert "rolled_back" not in sb.rollout().read_text(encoding="utf-8")
    sb.emu.advance_clock(180)
    assert apply_all(context(sb)).exit_code == 0
    assert live_percents(sb) == {STABLE: 100}
    text = sb.remote_file("rollout/ion-api.yaml")
    assert "rolled_back:" in text and "error burst" in text


def test_crash_after_a_forced_stage_still_removes_force(sb: Sandbox) -> None:
    assert apply_all(context(sb)).exit_code == 0
    text = example_rollout(sb.emu, canary_percent=25) + "force: true\n"
    sb.commit_rollout(text, "skip ahead to 25%")
    crashed = context(sb)
    crashed.git = None
    assert apply_all(crashed).exit_code == 0
    sb.git("checkout", "--quiet", "--", ".")
    sb.git("clean", "--quiet", "-fdx", "state")
    assert "force: true" in sb.rollout().read_text(encoding="utf-8")
    sb.emu.advance_clock(180)
    assert apply_all(context(sb)).exit_code == 0
    assert "force" not in sb.remote_file("rollout/ion-api.yaml")
    assert live_percents(sb) == {STABLE: 75, CANARY: 25}


def test_a_second_rollback_is_a_no_op(sb: Sandbox) -> None:
    assert apply_all(context(sb)).exit_code == 0
    assert rollback(context(sb), "ion-api", "first")[0].rolled_back
    head, writes = sb.git("rev-parse", "HEAD"), sb.emu.writes
    (again,) = rollback(context(sb), "ion-api", "second")
    assert again.plan is None and again.commit is None
    assert sb.git("rev-parse", "HEAD") == head and sb.emu.writes == writes


def test_manual_actions_name_one_service(sb: Sandbox) -> None:
    with pytest.raises(ReconcileError, match="name one service, not a pattern"):
        rollback(context(sb), "ion-*", "oops")
    with pytest.raises(ReconcileError, match="no such rollout file"):
        promote(context(sb), "payments")
