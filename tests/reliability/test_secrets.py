"""Probe header secrets from environment variables never reach state/, logs, reports or git.

The rollout file sends `{env: NAME}` headers to the canary, to a dependency, and to an
upstream that echoes the Authorization header back in its JSON answer (a misbehaving service
does that), so a failing check's reason would carry the secret unless it is redacted.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import ClassVar
from urllib.parse import quote

import pytest

from reconciler.probes import REDACTED, Exchange, redact_exchange
from reconciler.sandbox import Sandbox, sandbox
from tests.refs import ION_DIR
from tests.servers import LoopbackServer, serving

from .support import CANARY, STABLE, reconcile_cli

PROBE_SECRET = "probe-9f3Kx2-SECRET-never-print"
DEP_SECRET = "dep-77Qw1z-SECRET-never-print"


class Echo(BaseHTTPRequestHandler):
    """Answers with the Authorization header it received, inside its JSON body."""

    seen: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        auth = self.headers.get("Authorization", "")
        Echo.seen.append(auth)
        body = json.dumps({"status": f"revoked: {auth}"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def echo() -> Iterator[str]:
    with serving(LoopbackServer(Echo)) as server:
        yield server.url


def rollout(sb: Sandbox, echo: str) -> str:
    dep = sb.emu.dependency_url("lumen-gateway")
    return f"""\
service: ion-api
project: naeda-genesis
region: us-central1
revisions: {{stable: {STABLE}, canary: {CANARY}}}
canary_percent: 5
stages: [5, 10, 25, 50, 100]
probes:
  - name: canary-health
    url: "{{canary_url}}/api/health"
    headers: {{Authorization: {{env: PROBE_TOKEN}}}}
    expect: {{status: healthy}}
  - name: upstream-echo
    url: {echo}/api/health
    headers: {{Authorization: {{env: PROBE_TOKEN}}, X-Dep-Token: {{env: DEP_TOKEN}}}}
    expect: {{status: healthy}}
dependencies:
  - name: lumen-gateway
    url: {dep}/api/health
    headers: {{Authorization: {{env: DEP_TOKEN}}}}
    expect: {{status: healthy}}
"""


@pytest.fixture
def sb(tmp_path: Path) -> Iterator[Sandbox]:
    with sandbox(tmp_path) as s:
        s.emu.behave(CANARY, error_rate=0.0)
        yield s


def test_header_secrets_never_leave_the_process(sb: Sandbox, echo: str) -> None:
    Echo.seen.clear()
    sb.commit_rollout(rollout(sb, echo), "probes with secret headers")
    env = {"PROBE_TOKEN": PROBE_SECRET, "DEP_TOKEN": DEP_SECRET}
    runs = [
        reconcile_cli(sb.repo, "apply", env=env),  # 0% -> 5%: dependency checked
        reconcile_cli(sb.repo, "apply", env=env),  # canary live: the probes run and fail
        reconcile_cli(sb.repo, "probe", "ion-api", env=env),
        reconcile_cli(sb.repo, "bench", "ion-api", "--iterations", "2", env=env),
        reconcile_cli(sb.repo, "plan", "--format", "json", env=env),
        reconcile_cli(sb.repo, "status", env=env),
        reconcile_cli(sb.repo, "report", "ion-api", "--kind", "interim", env=env),
        reconcile_cli(sb.repo, "report", "ion-api", "--kind", "final", "--stdout", env=env),
    ]
    assert runs[0].returncode == 0, runs[0].stderr
    assert all("Traceback" not in r.stderr for r in runs), [r.stderr for r in runs]
    # The secrets were really sent (else their absence would prove nothing) ...
    assert PROBE_SECRET in Echo.seen and len(Echo.seen) >= 2
    # ... and the failing check was really recorded, with its reason.
    events = (sb.repo / ION_DIR / "events.jsonl").read_text(encoding="utf-8")
    assert "upstream-echo" in events and "probe_failed" in events
    assert f"revoked: {REDACTED}" in events  # the echoed answer is in the reason, redacted

    # Commit whatever bench and report wrote, so git history is checked for them too.
    sb.git("add", "--all", "state")
    sb.git("commit", "--quiet", "--allow-empty", "-m", "baseline and report")
    sb.git("push", "--quiet", "origin", "main")

    for secret in (PROBE_SECRET, DEP_SECRET):
        for r in runs:
            assert secret not in r.stdout and secret not in r.stderr, r.args
        for path in (sb.repo / "state").rglob("*"):
            if path.is_file():
                assert secret.encode() not in path.read_bytes(), path
        assert secret not in sb.git("log", "-p", "--all", cwd=sb.remote)
        assert secret not in sb.remote_log("--all", "--format=%B")


def test_an_unset_secret_is_named_never_guessed(sb: Sandbox, echo: str) -> None:
    sb.commit_rollout(rollout(sb, echo), "probes with secret headers")
    proc = reconcile_cli(sb.repo, "apply", env={"PROBE_TOKEN": PROBE_SECRET, "DEP_TOKEN": None})
    assert proc.returncode == 1
    assert "DEP_TOKEN" in proc.stderr and "not set" in proc.stderr
    assert PROBE_SECRET not in proc.stderr + proc.stdout
    assert sb.emu.write_attempts == 0


@pytest.mark.parametrize(
    ("body", "error", "secrets", "want_body", "want_error"),
    [
        (b'{"a": "x-SECRET1-y"}', None, ["SECRET1"], b'{"a": "x-[redacted]-y"}', None),
        (b"SECRET1SECRET1", "saw SECRET1", ["SECRET1"], b"[redacted][redacted]", "saw [redacted]"),
        (b"LONGSECRET", None, ["SECRET", "LONGSECRET"], b"[redacted]", None),
        (b"nothing here", None, ["SECRET1"], b"nothing here", None),
    ],
    ids=["in-json", "repeated-and-error", "longest-first", "untouched"],
)
def test_redact_exchange(
    body: bytes, error: str | None, secrets: list[str], want_body: bytes, want_error: str | None
) -> None:
    got = redact_exchange(Exchange(200, 0.1, body, "application/json", error), secrets)
    assert (got.body, got.error) == (want_body, want_error)


# A 51-character token with characters JSON escapes (`"` and `\`), so its JSON-escaped form
# differs from the raw one.
ESCAPED_SECRET = 'tk_"live\\9f3Kx2Qw1z-SECRET-never-print-this-value-x'


class EchoForms(BaseHTTPRequestHandler):
    """Echoes the Authorization header transformed (`form`), inside a long JSON value."""

    form: ClassVar[str] = "json"

    def do_GET(self) -> None:
        auth = self.headers.get("Authorization", "")
        token = auth.partition(" ")[2]
        shown = {
            "json": json.dumps(auth),
            "url": quote(token, safe=""),
            "base64": base64.b64encode(f"user:{token}".encode()).decode(),
        }[EchoForms.form]
        body = json.dumps({"status": f"echo: {shown}"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.parametrize("form", ["json", "url", "base64"])
def test_an_echoed_token_leaks_in_no_form_into_any_sink(sb: Sandbox, form: str) -> None:
    EchoForms.form = form
    with serving(LoopbackServer(EchoForms)) as server:
        sb.commit_rollout(rollout(sb, server.url), "probes with secret headers")
        env = {
            "PROBE_TOKEN": f"Bearer {ESCAPED_SECRET}",
            "DEP_TOKEN": DEP_SECRET,
        }
        runs = [reconcile_cli(sb.repo, "apply", env=env) for _ in range(3)]
        runs.append(reconcile_cli(sb.repo, "probe", "ion-api", env=env))
        runs.append(reconcile_cli(sb.repo, "report", "ion-api", "--kind", "interim", env=env))
    events = (sb.repo / ION_DIR / "events.jsonl").read_text(encoding="utf-8")
    assert "upstream-echo" in events, events  # the echo was really judged and recorded
    sb.git("add", "--all", "state")
    sb.git("commit", "--quiet", "--allow-empty", "-m", "report")
    sb.git("push", "--quiet", "origin", "main")
    sinks = [r.stdout + r.stderr for r in runs]
    sinks += [p.read_text(encoding="utf-8") for p in (sb.repo / "state").rglob("*") if p.is_file()]
    sinks += [sb.git("log", "-p", "--all", cwd=sb.remote), sb.remote_log("--all", "--format=%B")]
    sinks.append(sb.rollout().read_text(encoding="utf-8"))
    pieces = _pieces(ESCAPED_SECRET)
    for text in sinks:
        leaked = [p for p in pieces if p in text]
        assert not leaked, (leaked, text[:2000])


def _pieces(secret: str) -> set[str]:
    """Every 12-character piece of the secret in each form a sink could hold it."""
    forms = {
        secret,
        json.dumps(secret)[1:-1],
        json.dumps(json.dumps(secret)[1:-1])[1:-1],
        quote(secret, safe=""),
        base64.b64encode(f"user:{secret}".encode()).decode()[8:-4],
    }
    return {f[i : i + 12] for f in forms for i in range(len(f) - 11)}
