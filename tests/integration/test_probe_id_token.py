"""`auth: id_token` probes: the token reaches the private service and nothing else.

The minting path runs for real through google-auth against a loopback stand-in of the
metadata server (a fresh interpreter: google-auth reads the metadata host on import).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import asdict
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
from tests.servers import LoopbackServer, serving

from reconciler import redact
from reconciler.idtoken import IdTokenError, default_audience
from reconciler.probes import ProbeConfigError, Prober, Urls, run_checks
from reconciler.spec import Check
from reconciler.testing.metadata import MetadataServer

TOKEN = "eyJhbGciOiJSUzI1NiJ9.eyJhdWQiOiJ4In0.c2lnbmF0dXJlLW9mLXRoZS10b2tlbg"


class _Handler(BaseHTTPRequestHandler):
    server: _Private

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        auth = self.headers.get("Authorization", "")
        self.server.auth.append(auth)
        if not auth.startswith("Bearer "):
            body, status = b'{"error": "unauthenticated"}', 401
        elif self.path == "/echo":
            # A debug endpoint quoting the request back: the reason of a failed check quotes it.
            body, status = json.dumps({"status": "down", "seen": auth}).encode(), 200
        else:
            body, status = b'{"status": "healthy"}', 200
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _Private(LoopbackServer):
    """A service that, like Cloud Run with IAM, refuses requests without a bearer token."""

    def __init__(self) -> None:
        super().__init__(_Handler)
        self.auth: list[str] = []


@pytest.fixture
def private() -> Iterator[_Private]:
    with serving(_Private()) as srv:
        yield srv


def check(**fields: Any) -> Check:
    return Check.model_validate({"name": "health", "url": "{canary_url}/health", **fields})


class Tokens:
    """An injected token source that records the audiences asked for."""

    def __init__(self, token: str = TOKEN) -> None:
        self.token = token
        self.audiences: list[str] = []

    def __call__(self, audience: str) -> str:
        self.audiences.append(audience)
        return self.token


@pytest.mark.parametrize(
    ("url", "audience"),
    [
        ("https://ion-api-abc-uc.a.run.app/api/health", "https://ion-api-abc-uc.a.run.app"),
        ("https://canary---ion-api-abc-uc.a.run.app/x?y=1", "https://ion-api-abc-uc.a.run.app"),
        ("https://user:pw@gateway.example.com:8443/h", "https://gateway.example.com:8443"),
        ("http://127.0.0.1:8080/run/p/r/canary---svc/h", "http://127.0.0.1:8080"),
    ],
    ids=["service-url", "tag-url", "userinfo-dropped", "path-not-host"],
)
def test_default_audience(url: str, audience: str) -> None:
    assert default_audience(url) == audience


def test_private_service_without_auth_answers_401(private: _Private) -> None:
    (result,) = run_checks([check()], Urls(canary=private.url), environ={})
    assert not result.ok
    assert private.auth == [""]


def test_token_is_sent_for_the_service_url(private: _Private) -> None:
    tokens = Tokens()
    with Prober(environ={}, id_tokens=tokens) as prober:
        (result,) = run_checks(
            [check(auth="id_token")], Urls(canary=private.url), environ={}, prober=prober
        )
    assert result.ok, result.reason
    assert private.auth == [f"Bearer {TOKEN}"]
    assert tokens.audiences == [private.url]


def test_audience_override(private: _Private) -> None:
    tokens = Tokens()
    with Prober(environ={}, id_tokens=tokens) as prober:
        prober.run(
            check(auth="id_token", audience="https://api.example.com"), Urls(canary=private.url)
        )
    assert tokens.audiences == ["https://api.example.com"]


def test_echoed_token_is_redacted_everywhere(private: _Private) -> None:
    tokens = Tokens()
    with Prober(environ={}, id_tokens=tokens) as prober:
        result = prober.run(
            check(url="{canary_url}/echo", auth="id_token", expect={"seen": "nothing"}),
            Urls(canary=private.url),
        )
    assert not result.ok
    assert "[redacted]" in result.reason
    for text in (repr(result), str(asdict(result)), result.reason, repr(prober)):
        assert TOKEN not in text
        # The signature alone would be enough to replay the token.
        assert TOKEN.rsplit(".", 1)[1] not in text
    # Every sink (state files, commit messages, stdout) scrubs it too.
    assert redact.scrub(f"seen: Bearer {TOKEN}") == "seen: Bearer [redacted]"


def test_minting_failure_is_a_configuration_error(private: _Private) -> None:
    def refuse(audience: str) -> str:
        raise IdTokenError(f"cannot mint an ID token for {audience}: no credentials")

    with Prober(environ={}, id_tokens=refuse) as prober, pytest.raises(ProbeConfigError) as err:
        prober.run(check(auth="id_token"), Urls(canary=private.url))
    assert str(err.value) == (f"health: cannot mint an ID token for {private.url}: no credentials")
    assert private.auth == []


MINT = """
import json, sys
from reconciler.probes import Prober, Urls
from reconciler.spec import Check

check = Check.model_validate({"name": "health", "url": "{canary_url}/health", "auth": "id_token"})
with Prober(environ={}) as prober:
    first = prober.run(check, Urls(canary=sys.argv[1]))
    second = prober.run(check, Urls(canary=sys.argv[1]))
print(json.dumps([first.ok, second.ok, first.reason, second.reason]))
"""


def _no_credentials_env(extra: dict[str, str]) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("GOOGLE_APPLICATION_CREDENTIALS", "NO_GCE_CHECK")
        and not k.startswith(("GCE_METADATA", "CLOUD_RUN_"))
    }
    return {**env, **extra}


def test_google_auth_mints_through_the_metadata_server(private: _Private) -> None:
    with MetadataServer.start() as mds:
        result = subprocess.run(
            [sys.executable, "-c", MINT, private.url],
            env=_no_credentials_env(mds.environ()),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        first_ok, second_ok, *reasons = json.loads(result.stdout)
        assert first_ok and second_ok, reasons
        # One token, minted once for the service URL and reused by the second probe.
        assert mds.audiences == [private.url]
        (token,) = mds.tokens
    assert private.auth == [f"Bearer {token}"] * 2
    assert token not in result.stdout + result.stderr


def test_no_credentials_is_a_configuration_error_naming_the_check(
    private: _Private, tmp_path: Path
) -> None:
    # The session's guard points the metadata host at a closed loopback port.
    env = _no_credentials_env(
        {"GCE_METADATA_HOST": "127.0.0.1:9", "GCE_METADATA_IP": "127.0.0.1:9"}
    )
    env["CLOUDSDK_CONFIG"] = str(tmp_path)
    env["GCE_METADATA_DETECT_RETRIES"] = "1"
    result = subprocess.run(
        [sys.executable, "-c", MINT, private.url],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode != 0
    assert "ProbeConfigError: health: cannot mint an ID token for " + private.url in result.stderr
    assert private.auth == []
