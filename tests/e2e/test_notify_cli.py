"""`reconcile apply` with a `notify:` section, as a user runs it, to a loopback receiver."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.notices import verify
from reconciler.sandbox import Sandbox, example_rollout, sandbox
from reconciler.testing.webhooks import WebhookRecorder

KEY = "e2e-hmac-key"


@pytest.fixture
def sb(tmp_path: Path) -> Iterator[Sandbox]:
    with sandbox(tmp_path) as s:
        s.emu.behave("ion-api-00042-xyz", error_rate=0.0)
        text = example_rollout(s.emu) + (
            "notify:\n  - kind: webhook\n    url: {env: HOOK_URL}\n    secret: {env: HOOK_KEY}\n"
        )
        s.commit_rollout(text, "notify a webhook")
        yield s


def reconcile(sb: Sandbox, hooks: WebhookRecorder, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if v is not None}
    env |= {"HOOK_URL": hooks.url("/hook"), "HOOK_KEY": KEY}
    return subprocess.run(
        [sys.executable, "-m", "reconciler", *args],
        cwd=sb.repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_apply_sends_a_signed_notice_and_dry_run_sends_none(
    sb: Sandbox, hooks: WebhookRecorder
) -> None:
    dry = reconcile(sb, hooks, "apply", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert hooks.requests == []
    applied = reconcile(sb, hooks, "apply")
    assert applied.returncode == 0, applied.stderr
    (req,) = hooks.requests
    assert verify(KEY.encode(), req.headers, req.body, int(time.time()))
    payload = json.loads(req.body)
    assert payload["event"] == "advance" and payload["canary_percent"] == {"before": 0, "after": 5}


def test_a_failing_receiver_is_a_warning_not_a_failure(sb: Sandbox, hooks: WebhookRecorder) -> None:
    hooks.respond = [500, 500, 500]
    applied = reconcile(sb, hooks, "apply")
    assert applied.returncode == 0, applied.stderr
    assert "applied ion-api: new stage" in applied.stdout
    assert "notify: ion-api advance: webhook ($HOOK_URL) failed: HTTP 500 after 3 attempts" in (
        applied.stderr
    )
    assert hooks.url() not in applied.stderr and KEY not in applied.stderr
