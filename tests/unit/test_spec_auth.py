"""`auth: id_token` and `audience` in rollout files: accepted shapes and file:line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.loader import SpecError, parse_spec

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = (ROOT / "rollout" / "ion-api.yaml").read_text(encoding="utf-8")
PROBE = """  - name: canary-health
    url: "{canary_url}/api/health"
"""


def _with(extra: str) -> bytes:
    assert PROBE in EXAMPLE
    return EXAMPLE.replace(PROBE, PROBE + extra).encode()


def test_id_token_with_default_audience() -> None:
    spec = parse_spec(_with("    auth: id_token\n"), Path("rollout/ion-api.yaml"))
    assert spec.probes[0].auth == "id_token"
    assert spec.probes[0].audience is None


def test_audience_override() -> None:
    text = _with("    auth: id_token\n    audience: https://api.example.com\n")
    spec = parse_spec(text, Path("rollout/ion-api.yaml"))
    assert spec.probes[0].audience == "https://api.example.com"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("    auth: oauth\n", "auth"),
        ("    audience: https://api.example.com\n", "audience needs auth: id_token"),
        ("    auth: id_token\n    audience: api\n", "not a valid ID token audience"),
        (
            "    auth: id_token\n    headers: {authorization: Bearer x}\n",
            "auth: id_token sends the Authorization header",
        ),
    ],
    ids=["unknown-kind", "audience-alone", "audience-not-url", "authorization-header-too"],
)
def test_errors_name_the_line(extra: str, message: str) -> None:
    with pytest.raises(SpecError) as err:
        parse_spec(_with(extra), Path("rollout/ion-api.yaml"))
    text = str(err.value)
    assert text.startswith("rollout/ion-api.yaml:"), text
    assert int(text.split(":")[1]) > 20
    assert message in text
