"""`reconcile probe` and `reconcile bench` as a user types them, against a running emulator."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import reconciler
from reconciler.emulator import Emulator
from reconciler.emulator.scenario import Behavior
from tests.refs import ION_DIR

STABLE, CANARY = "ion-api-00041-abc", "ion-api-00042-xyz"
SECRET = "tok-e2e-4b1d-do-not-print"
SCENARIO: dict[str, Any] = {
    "project": "naeda-genesis",
    "region": "us-central1",
    "latency_mode": "real",
    "seed": 11,
    "services": [
        {
            "name": "ion-api",
            "traffic": {STABLE: 95, CANARY: 5},
            "tags": {"stable": STABLE, "canary": CANARY},
            "revisions": [
                {"name": STABLE, "behavior": {"latency_ms": 3}},
                {"name": CANARY, "behavior": {"latency_ms": 3}},
            ],
        }
    ],
    "dependencies": [{"name": "lumen-gateway", "body": {"status": "healthy"}}],
}
ROLLOUT = """\
service: ion-api
project: naeda-genesis
region: us-central1
revisions: {{stable: {stable}, canary: {canary}}}
canary_percent: 5
stages: [5, 10, 25, 50, 100]
probes:
  - name: canary-health
    url: "{{canary_url}}/api/health"
    expect: {{status: healthy, lumen_gateway: enabled}}
  - name: chat-smoke
    method: POST
    url: "{{canary_url}}/chat"
    json: {{message: "Python의 장점을 간단히 설명해주세요", user_id: test-canary-001}}
    headers: {{Authorization: {{env: PROBE_TOKEN}}}}
    expect: {{success: true}}
    expect_min: {{confidence: 0.8}}
    max_latency: 15s
    timeout: 20s
dependencies:
  - name: lumen-gateway
    url: {dependency}/api/health
    expect: {{status: healthy}}
"""


@pytest.fixture(scope="module")
def running() -> Iterator[Emulator]:
    with Emulator.start(SCENARIO) as started:
        yield started


@pytest.fixture
def emu(running: Emulator) -> Iterator[Emulator]:
    yield running
    service = SCENARIO["services"][0]
    running.drift("ion-api", service["traffic"], service["tags"])
    for revision in service["revisions"]:
        running.behave(revision["name"], Behavior.model_validate(revision["behavior"]).model_dump())


@pytest.fixture
def repo(tmp_path: Path, emu: Emulator) -> Path:
    (tmp_path / "rollout").mkdir()
    text = ROLLOUT.format(
        stable=STABLE, canary=CANARY, dependency=emu.dependency_url("lumen-gateway")
    )
    (tmp_path / "rollout" / "ion-api.yaml").write_text(text, encoding="utf-8")
    return tmp_path


def reconcile(
    emu: Emulator, repo: Path, *args: str, token: str | None = SECRET
) -> subprocess.CompletedProcess[str]:
    """Run `reconcile --repo REPO ARGS...` in a fresh process, as a user (or CI) would."""
    env = {k: v for k, v in os.environ.items() if k not in {"PROBE_TOKEN", "CI"}}
    env.update(emu.env)
    env["PYTHONPATH"] = str(Path(reconciler.__file__).resolve().parents[1])
    if token is not None:
        env["PROBE_TOKEN"] = token
    return subprocess.run(
        [sys.executable, "-m", "reconciler", "--repo", str(repo), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def no_secret(run: subprocess.CompletedProcess[str]) -> None:
    assert SECRET not in run.stdout and SECRET not in run.stderr


def test_probe_healthy_canary(emu: Emulator, repo: Path) -> None:
    run = reconcile(emu, repo, "probe", "ion-api")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "dependencies (must pass before traffic moves):" in run.stdout
    for name in ("lumen-gateway", "canary-health", "chat-smoke"):
        assert f"PASS  {name}" in run.stdout
    assert emu.url("ion-api", "canary") + "/chat" in run.stdout
    assert "3 passed, 0 failed" in run.stdout
    no_secret(run)


def test_probe_failing_canary_exits_1_with_reasons(emu: Emulator, repo: Path) -> None:
    emu.behave(CANARY, error_rate=1.0)
    run = reconcile(emu, repo, "probe", "ion-api")
    assert run.returncode == 1
    assert "canary-health: HTTP 500, expected 2xx" in run.stdout
    assert "1 passed, 2 failed" in run.stdout
    no_secret(run)


def test_probe_missing_secret_names_the_variable(emu: Emulator, repo: Path) -> None:
    run = reconcile(emu, repo, "probe", "ion-api", token=None)
    assert run.returncode == 1
    assert run.stderr.strip() == (
        "error: chat-smoke: header Authorization reads environment variable PROBE_TOKEN, "
        "which is not set"
    )
    assert "Traceback" not in run.stderr


def test_probe_canary_url_override(emu: Emulator, repo: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    run = reconcile(emu, repo, "probe", "ion-api", "--canary-url", closed)
    assert run.returncode == 1
    assert "canary-health: connection refused" in run.stdout


def test_probe_without_a_canary_tag_says_which_flag_helps(emu: Emulator, repo: Path) -> None:
    emu.drift("ion-api", {STABLE: 100}, {"stable": STABLE})
    run = reconcile(emu, repo, "probe", "ion-api", "--compare")
    assert run.returncode == 1
    assert run.stderr.strip() == (
        "error: ion-api: no canary URL (no traffic target is tagged 'canary'); pass --canary-url"
    )


def test_compare_inconclusive_then_fail(emu: Emulator, repo: Path) -> None:
    args = ("probe", "ion-api", "--compare", "--requests", "3", "--delay", "10ms")
    ok = reconcile(emu, repo, *args)
    # Three requests a side cannot tell: said plainly, and not an error exit.
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "verdict: INCONCLUSIVE" in ok.stdout
    assert "about 65 per side would detect" in ok.stdout
    assert "ion-api: GET /api/health, 3 requests each, 10ms apart" in ok.stdout
    assert "  success   3/3 (100%)" in ok.stdout
    assert "200x3" in ok.stdout
    # Not a terminal: progress is plain lines on stderr, one per round.
    assert ok.stderr.splitlines()[-1].startswith("compare 3/3 ")

    emu.behave(CANARY, error_rate=1.0)
    bad = reconcile(emu, repo, *args, "--probe", "chat-smoke")
    assert bad.returncode == 1
    assert "verdict: FAIL" in bad.stdout
    assert "success 0% on canary vs 100% on stable: lower by more than 2%" in bad.stdout
    assert "canary failure: HTTP 500, expected 2xx" in bad.stdout
    no_secret(bad)


def test_compare_with_enough_requests_passes(emu: Emulator, repo: Path) -> None:
    run = reconcile(
        emu, repo, "probe", "ion-api", "--compare", "--requests", "70", "--delay", "1ms"
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "verdict: PASS" in run.stdout


def test_bench_saves_the_baseline(emu: Emulator, repo: Path) -> None:
    run = reconcile(emu, repo, "bench", "ion-api", "--iterations", "3")
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"bench of stable {emu.url('ion-api', 'stable')}, 3 iterations" in run.stdout
    assert "chat-smoke: success 3/3 (100%)" in run.stdout
    assert "confidence 0.87" in run.stdout
    no_secret(run)
    folder = repo / ION_DIR / "baselines"
    saved = json.loads((folder / "latest.json").read_text(encoding="utf-8"))
    assert saved["target"] == "stable" and saved["revision"] == STABLE
    assert [r["name"] for r in saved["results"]] == ["canary-health", "chat-smoke"]
    assert [len(r["samples"]) for r in saved["results"]] == [3, 3]
    stamped = [p for p in folder.glob("*.json") if p.name != "latest.json"]
    assert len(stamped) == 1 and stamped[0].read_text() == (folder / "latest.json").read_text()
    assert SECRET not in (folder / "latest.json").read_text()


def test_bench_is_judged_against_the_previous_baseline(emu: Emulator, repo: Path) -> None:
    args = ("bench", "ion-api", "--iterations", "5", "--probe", "canary-health")
    first = reconcile(emu, repo, *args)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "previous baseline" not in first.stdout

    emu.behave(STABLE, latency_ms=300)
    second = reconcile(emu, repo, *args)
    # Informational: a bench still saves its baseline, so the exit code stays 0.
    assert second.returncode == 0, second.stdout + second.stderr
    assert "against the previous baseline (" in second.stdout
    assert "  canary-health: FAIL" in second.stdout
    assert "    bench slower than 1.2x and 100ms over baseline at 95% confidence" in second.stdout


def test_unknown_service_is_one_line(emu: Emulator, repo: Path) -> None:
    run = reconcile(emu, repo, "probe", "payments")
    assert run.returncode == 1
    assert (
        run.stderr.startswith("error: ") and "no rollout file for service 'payments'" in run.stderr
    )
