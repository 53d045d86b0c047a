"""plan / apply / status / rollback / promote / watch / demo as a user types them.

Each command runs as a subprocess (`python -m reconciler ...`) against an in-process emulator
and a real git clone with a bare remote, exactly as in a terminal or a CI job.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler import clients
from reconciler.sandbox import Sandbox, sandbox

STABLE, CANARY = "ion-api-00041-abc", "ion-api-00042-xyz"


@pytest.fixture
def sb(tmp_path: Path) -> Iterator[Sandbox]:
    with sandbox(tmp_path) as s:
        s.emu.behave(CANARY, error_rate=0.0)
        yield s


def reconcile(
    sb: Sandbox, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if v is not None}
    return subprocess.run(
        [sys.executable, "-m", "reconciler", *args],
        cwd=sb.repo,
        env=env,
        capture_output=True,
        text=True,
        input=stdin,
        timeout=120,
        check=False,
    )


def live(sb: Sandbox) -> dict[str, tuple[int, str]]:
    svc = clients.services_client().get_service(name=sb.emu.service_name("ion-api"))
    return {t.revision: (t.percent, t.tag) for t in svc.traffic_statuses}


def test_plan_apply_plan(sb: Sandbox) -> None:
    plan = reconcile(sb, "plan", "--detailed-exitcode")
    assert plan.returncode == 2, plan.stderr
    assert "100% ->  95%" in plan.stdout and "  0% ->   5%" in plan.stdout
    assert (
        "gcloud run services update-traffic ion-api --project naeda-genesis --region "
        f"us-central1 --to-revisions {STABLE}=95,{CANARY}=5" in plan.stdout
    )
    applied = reconcile(sb, "apply")
    assert applied.returncode == 0, applied.stderr
    assert "applied ion-api: new stage" in applied.stdout
    assert live(sb) == {STABLE: (95, "stable"), CANARY: (5, "canary")}
    again = reconcile(sb, "plan", "--detailed-exitcode")
    assert again.returncode == 0, again.stdout
    assert "Plan: 0 to change, 1 unchanged" in again.stdout
    status = reconcile(sb, "status")
    assert status.returncode == 0 and "in sync" in status.stdout


def test_out_always_saves_the_applyable_plan_and_show_renders_it(sb: Sandbox) -> None:
    md = reconcile(sb, "plan", "--format", "markdown", "--out", "plan.json")
    assert md.returncode == 0, md.stderr
    assert md.stdout.startswith("<!-- reconcile-plan -->")  # --format decides what is shown
    data = json.loads((sb.repo / "plan.json").read_text())  # --out always saves json
    assert data["services"][0]["reason"] == "new stage"
    assert "saved the plan to plan.json" in md.stderr
    shown = reconcile(sb, "show", "plan.json")
    assert shown.returncode == 0, shown.stderr
    assert "reason: new stage" in shown.stdout and "Plan: 1 to change" in shown.stdout
    assert reconcile(sb, "show", "plan.json", "--format", "markdown").stdout == md.stdout
    assert json.loads(reconcile(sb, "show", "plan.json", "--format", "json").stdout) == data
    sb.emu.drift("ion-api", {STABLE: 90, CANARY: 10})
    stale = reconcile(sb, "apply", "plan.json")
    assert stale.returncode == 1
    assert "saved plan is stale" in stale.stderr
    assert sb.emu.write_attempts == 0
    (sb.repo / "plan.md").write_text(md.stdout)
    for command in ("apply", "show"):
        bad = reconcile(sb, command, "plan.md")
        assert bad.returncode == 1 and "not a reconcile plan file" in bad.stderr
        assert "Traceback" not in bad.stderr


def test_dry_run_changes_nothing(sb: Sandbox) -> None:
    head = sb.git("rev-parse", "HEAD")
    out = reconcile(sb, "apply", "--dry-run")
    assert out.returncode == 0, out.stderr
    assert "$ gcloud run services update-traffic ion-api" in out.stdout
    assert sb.emu.write_attempts == 0
    assert sb.git("rev-parse", "HEAD") == head


def test_unknown_service_and_bad_file_are_one_line_errors(sb: Sandbox) -> None:
    out = reconcile(sb, "plan", "--service", "payments")
    assert out.returncode == 1
    assert (
        out.stderr.strip().count("\n") == 0 and "payments.yaml: no such rollout file" in out.stderr
    )
    text = sb.rollout().read_text().replace("canary_percent: 5", "canary_percent: 7")
    sb.rollout().write_text(text)
    out = reconcile(sb, "apply")
    assert out.returncode == 1  # not committed: refused before anything else
    assert "uncommitted change in rollout/" in out.stderr and "Traceback" not in out.stderr
    sb.commit_rollout(text, "a stage that does not exist")
    out = reconcile(sb, "apply")
    assert out.returncode == 1
    assert "rollout/ion-api.yaml:" in out.stderr and "canary_percent" in out.stderr
    assert "Traceback" not in out.stderr
    assert sb.emu.write_attempts == 0


def test_rollback_needs_force_without_a_terminal(sb: Sandbox) -> None:
    assert reconcile(sb, "apply").returncode == 0
    refused = reconcile(sb, "rollback", "ion-api")
    assert refused.returncode == 1 and "pass --force" in refused.stderr
    assert live(sb)[CANARY] == (5, "canary")
    done = reconcile(sb, "rollback", "ion-api", "--force", "--reason", "5xx spike")
    assert done.returncode == 0, done.stderr
    assert live(sb) == {STABLE: (100, "stable")}
    text = sb.remote_file("rollout/ion-api.yaml")
    assert "canary_percent: 0" in text and "rolled_back:" in text and "5xx spike" in text


def test_promote_refused_before_bake_then_forced_apply_is_green(sb: Sandbox) -> None:
    assert reconcile(sb, "apply").returncode == 0
    refused = reconcile(sb, "promote", "ion-api")
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert "stage 5% has not passed its gates for bake 24h" in refused.stderr
    assert refused.stderr.strip().count("\n") == 0
    dry = reconcile(sb, "promote", "ion-api", "--force", "--dry-run")
    assert dry.returncode == 0 and dry.stdout.startswith("would promote ion-api: canary 5% -> 10%")
    assert "force" not in sb.rollout().read_text()
    out = reconcile(sb, "promote", "ion-api", "--force")
    assert out.returncode == 0 and "canary 5% -> 10%" in out.stdout, out.stderr
    applied = reconcile(sb, "apply")
    assert applied.returncode == 0, applied.stderr
    assert live(sb)[CANARY] == (10, "canary")


def test_pause_abort_resume_from_the_command_line(sb: Sandbox) -> None:
    assert reconcile(sb, "apply").returncode == 0
    assert "paused ion-api" in reconcile(sb, "pause", "ion-api").stdout
    out = reconcile(sb, "abort", "ion-api")
    assert out.returncode == 0, out.stderr
    assert "aborted ion-api" in out.stdout and live(sb) == {STABLE: (100, "stable")}
    assert reconcile(sb, "apply").returncode == 0
    assert "resumed ion-api" in reconcile(sb, "resume", "ion-api").stdout


def test_watch_ticks_and_stops_after_its_duration(sb: Sandbox) -> None:
    out = reconcile(sb, "watch", "--interval", "1s", "--duration", "4s")
    assert out.returncode == 0, out.stderr
    ticks = [line for line in out.stdout.splitlines() if "] tick " in line]
    # The duration guarantees the first tick and an end: no tick starts once the next would
    # end past 4s, so at most 5 (0s..4s). How many fit depends on how long each apply takes
    # on the machine (a loaded one fits one), so only those bounds are asserted.
    assert 1 <= len(ticks) <= 5, out.stdout
    assert "ion-api 5%" in ticks[0] and "new stage" in ticks[0]
    # Later ticks print what changed (the first verdict), then a short line, never the
    # whole fleet again.
    for line in ticks[1:]:
        assert "new stage" not in line
        assert "ion-api 5%" in line or line.endswith("no change (1 service)"), line
    assert f"stopped after {len(ticks)} ticks (duration)" in out.stdout


def test_watch_stream_follows_the_canary_and_stops_after_its_duration(sb: Sandbox) -> None:
    out = reconcile(sb, "watch", "--stream", "--duration", "3s")
    assert out.returncode == 0, out.stderr
    assert f"streaming request logs of ion-api ({CANARY})" in out.stdout
    assert "stream stopped (duration); rolled back: nothing" in out.stdout


def test_demo_shows_a_rollback_commit(tmp_path: Path) -> None:
    keep = tmp_path / "demo"
    out = subprocess.run(
        [sys.executable, "-m", "reconciler", "demo", "--keep", str(keep)],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    # The git log of the demo: a commit per run, its subject summing the run.
    assert "reconcile: 1 rolled back [skip reconcile]" in out.stdout
    assert "reconcile: 1 advanced [skip reconcile]" in out.stdout
    rollback = subprocess.run(
        ["git", "log", "--format=%B", "main"],
        cwd=keep / "remote.git",
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "reconcile(ion-api): rollback canary 5% -> 0% (ion-api-00043-bad)" in rollback
    assert "reconcile(ion-api): advance canary 5% -> 10%" in rollback
    assert (keep / "remote.git").is_dir()


def test_no_credentials_is_one_line_not_a_traceback(sb: Sandbox) -> None:
    env = {k: v for k, v in os.environ.items() if k != "CLOUD_RUN_EMULATOR_HOST"}
    out = subprocess.run(
        [sys.executable, "-m", "reconciler", "plan"],
        cwd=sb.repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    assert out.stderr.strip().count("\n") == 0, out.stderr
    assert "no usable Google credentials" in out.stderr and "--offline" in out.stderr


def on_a_terminal(sb: Sandbox, *args: str, **env: str) -> str:
    """What `reconcile ARGS` prints when its stdout is a terminal (a pseudo-terminal)."""
    import pty

    leader, follower = pty.openpty()
    environ = {k: v for k, v in os.environ.items() if k not in {"NO_COLOR", "TERM", "CI"}}
    proc = subprocess.Popen(
        [sys.executable, "-m", "reconciler", *args],
        cwd=sb.repo,
        env={**environ, "TERM": "xterm", **env},
        stdout=follower,
        stderr=subprocess.DEVNULL,
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the terminal closes when the process ends
            break
        if not chunk:
            break
        chunks.append(chunk)
    proc.wait(timeout=120)
    os.close(leader)
    return b"".join(chunks).decode()


def test_colour_on_a_terminal_only_and_never_against_no_color(sb: Sandbox) -> None:
    green_plus, escape = "\x1b[32m+\x1b[0m", "\x1b["
    assert green_plus in on_a_terminal(sb, "plan")
    assert escape not in on_a_terminal(sb, "plan", NO_COLOR="1")
    assert escape not in on_a_terminal(sb, "--no-color", "plan")
    piped = reconcile(sb, "plan")
    assert escape not in piped.stdout and "+ ion-api-00042-xyz" in piped.stdout
