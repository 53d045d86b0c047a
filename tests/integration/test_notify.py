"""Notifications after a real run (emulator + git) to a loopback server that records them."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from reconciler.backends.cloudrun import CloudRunBackend
from reconciler.gitops import GitOps
from reconciler.metrics.cloud_monitoring import CloudMonitoringProvider
from reconciler.notices import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify
from reconciler.notify import notified
from reconciler.reconcile import Context, RunResult, apply_all
from reconciler.sandbox import Sandbox, example_rollout, sandbox
from reconciler.testing.webhooks import Recorded, WebhookRecorder

KEY = "k3y-for-hmac"
NOTIFY = """\
notify:
  - kind: slack
    url: {env: SLACK_URL}
  - kind: google-chat
    url: {env: CHAT_URL}
    on: [rollback]
  - kind: webhook
    url: {env: HOOK_URL}
    secret: {env: HOOK_KEY}
"""


@pytest.fixture
def sb(tmp_path: Path, hooks: WebhookRecorder) -> Iterator[Sandbox]:
    with sandbox(tmp_path) as s:
        # Shared defaults carry the channels: the rollout file itself names none.
        (s.repo / "rollout" / "_defaults.yaml").write_text(NOTIFY, encoding="utf-8")
        s.commit_rollout(example_rollout(s.emu), "notify via shared defaults")
        yield s


def env(hooks: WebhookRecorder, **over: str) -> dict[str, str]:
    values = {
        "SLACK_URL": hooks.url("/slack/T000/B000/secretpart"),
        "CHAT_URL": hooks.url("/chat?key=chat-secret"),
        "HOOK_URL": hooks.url("/hook"),
        "HOOK_KEY": KEY,
        "GITHUB_SERVER_URL": "https://github.example",
        "GITHUB_REPOSITORY": "acme/infra",
    }
    return values | over


LAG = timedelta(minutes=3)
"""Cloud Monitoring's ingestion delay, as the emulator applies it by default."""


def run(
    sb: Sandbox, environ: dict[str, str], warnings: list[str], budget: float = 20.0
) -> RunResult:
    provider = CloudMonitoringProvider(ingestion_lag=LAG)
    ctx = Context(
        repo=sb.repo,
        backend=CloudRunBackend(),
        clock=sb.now,
        git=GitOps(sb.repo),
        metrics_for=lambda _cfg: provider,
        run_probes=False,
    )
    return notified(
        sb.repo,
        lambda: apply_all(ctx),
        warn=warnings.append,
        now=sb.now,
        environ=environ,
        budget=budget,
    )


def tick(sb: Sandbox, environ: dict[str, str], warnings: list[str], **kw: float) -> RunResult:
    """Serve traffic, then apply one window later: the lagged window (ending LAG ago, as
    Cloud Monitoring shows it) holds this traffic and none of the last tick's."""
    sb.emu.load("ion-api", 200)
    sb.emu.load("ion-api", 2000, tag="canary")
    sb.emu.advance_clock(300)
    return run(sb, environ, warnings, **kw)


def by_path(requests: list[Recorded], prefix: str) -> list[Recorded]:
    return [r for r in requests if r.path.startswith(prefix)]


def test_rollback_is_told_to_every_channel_with_signed_evidence(
    sb: Sandbox, hooks: WebhookRecorder
) -> None:
    committed_first: list[bool] = []
    hooks.on_request = lambda _r: committed_first.append(
        "rolled_back:" in sb.remote_file("rollout/ion-api.yaml")
    )
    warnings: list[str] = []
    environ = env(hooks)
    assert run(sb, environ, warnings).exit_code == 0  # stage 1: 5% live
    advance = by_path(hooks.requests, "/hook")
    assert [json.loads(r.body)["event"] for r in advance] == ["advance"]
    assert by_path(hooks.requests, "/chat") == []  # chat wants rollbacks only
    hooks.requests.clear()
    committed_first.clear()
    # A window that began before 5% went live says nothing of the canary: let the lag pass.
    sb.emu.advance_clock(LAG.total_seconds())

    codes = [tick(sb, environ, warnings).exit_code for _ in range(2)]
    assert codes == [0, 4], codes  # the built-in canary fails 7%: a hold, then the rollback
    assert warnings == []

    hook = by_path(hooks.requests, "/hook")
    assert [json.loads(r.body)["event"] for r in hook] == ["hold", "rollback"]
    rollback = hook[-1]
    now = int(time.time())
    assert verify(KEY.encode(), rollback.headers, rollback.body, now)
    assert not verify(b"wrong key", rollback.headers, rollback.body, now)
    assert not verify(KEY.encode(), rollback.headers, rollback.body + b" ", now)
    assert rollback.headers[SIGNATURE_HEADER].startswith("v1=")
    assert abs(int(rollback.headers[TIMESTAMP_HEADER]) - now) < 60

    payload = json.loads(rollback.body)
    assert payload["service"] == "ion-api" and payload["verdict"] == "FAIL"
    assert payload["canary_percent"] == {"before": 5, "after": 0}
    gate = payload["gates"][0]  # failing gates first
    assert (gate["gate"], gate["outcome"], gate["threshold"]) == ("error_rate", "FAIL", "5%")
    assert gate["value"].endswith("%") and gate["samples"] > 0
    head = sb.git("rev-parse", "HEAD")
    assert payload["links"]["commit"] == f"https://github.example/acme/infra/commit/{head}"

    (slack,) = [r for r in by_path(hooks.requests, "/slack") if b"rolled back" in r.body]
    text = json.loads(slack.body)["text"]
    assert text.startswith("*ion-api rolled back: canary ion-api-00042-xyz 5% -> 0%*")
    assert "error_rate FAIL" in text and "threshold 5%" in text
    (chat,) = by_path(hooks.requests, "/chat")
    assert "rolled back" in json.loads(chat.body)["text"]
    # Every notice left after the rollback was committed and pushed.
    assert committed_first[-3:] == [True, True, True]


def test_a_repeated_hold_is_not_told_twice(sb: Sandbox, hooks: WebhookRecorder) -> None:
    sb.emu.behave("ion-api-00042-xyz", error_rate=0.0)
    warnings: list[str] = []
    environ = env(hooks)
    run(sb, environ, warnings)
    hooks.requests.clear()
    sb.emu.advance_clock(300)
    run(sb, environ, warnings)  # no traffic: INCONCLUSIVE, a hold
    sb.emu.advance_clock(300)
    run(sb, environ, warnings)  # still the same hold
    events = [json.loads(r.body)["event"] for r in by_path(hooks.requests, "/hook")]
    assert events == ["hold"]


def test_failing_receivers_are_warnings_with_secrets_redacted(
    sb: Sandbox, hooks: WebhookRecorder
) -> None:
    hooks.respond = [500, 503, 502, 500, 503, 502]  # slack and webhook: 3 attempts each fail
    warnings: list[str] = []
    environ = env(hooks, CHAT_URL="")
    result = run(sb, environ, warnings)
    assert result.exit_code == 0  # the stage was applied; notices do not fail a run
    assert len(hooks.requests) == 6  # bounded: 3 attempts per channel
    assert len(warnings) == 2, warnings
    assert all("failed: HTTP 5" in w and "after 3 attempts" in w for w in warnings)
    assert "$SLACK_URL" in " ".join(warnings)
    for secret in ("secretpart", "/slack/T000", KEY, "chat-secret", str(hooks.url())):
        assert secret not in " ".join(warnings)


def test_unset_variables_are_warnings(sb: Sandbox, hooks: WebhookRecorder) -> None:
    warnings: list[str] = []
    result = run(sb, env(hooks, SLACK_URL="", HOOK_KEY=""), warnings)
    assert result.exit_code == 0
    assert any("$SLACK_URL is not set" in w for w in warnings), warnings
    assert any("$HOOK_KEY (its HMAC key) is not set" in w for w in warnings), warnings
    assert hooks.requests == []  # chat is rollback-only; the others had no URL or key


def test_a_hanging_receiver_costs_at_most_the_budget(sb: Sandbox, hooks: WebhookRecorder) -> None:
    hooks.delay = 5.0
    warnings: list[str] = []
    environ = env(hooks, SLACK_URL="")
    timings: list[float] = []
    hooks.on_request = lambda r: timings.append(r.at)
    result = run(sb, environ, warnings, budget=1.0)
    returned = time.monotonic()
    assert result.exit_code == 0
    assert len(hooks.requests) == 1  # no second attempt once the budget is spent
    assert returned - timings[0] < 2.5  # the 5 s receiver was not waited for
    assert any("$HOOK_URL" in w and "after 1 attempt" in w for w in warnings), warnings
