"""The canary the emulator-based benchmarks roll back: `ion-api` at 95/5, both revisions
healthy and tagged, with the example gates; shared by breach_to_rollback.py and
stream_breach.py so both measure the same set-up."""

from __future__ import annotations

from typing import Any

SERVICE = "ion-api"
STABLE, CANARY = "ion-api-00041-abc", "ion-api-00042-xyz"
HEALTHY = {"error_rate": 0.0, "latency_ms": {"p50": 120, "p95": 300}}


def rollout(window: str = "5m", min_requests: int = 100) -> str:
    """The rollout file: ion-api at 5% with the example gates (the windowed settings given)."""
    return f"""\
service: {SERVICE}
project: naeda-genesis
region: us-central1
revisions:
  stable: {STABLE}
  canary: {CANARY}
canary_percent: 5
stages: [5, 10, 25, 50, 100]
auto_advance: false
bake: 24h
self_heal: true
gates:
  window: {window}
  min_requests: {min_requests}
  consecutive_failures: 2
  error_rate:   {{max: 5%, target: 1%}}
  latency_p95:  {{max: 20s, target: 15s}}
  success_rate: {{min: 90%, target: 95%}}
metrics: {{provider: cloud-monitoring}}
"""


def scenario() -> dict[str, Any]:
    """The emulator's world: ion-api at 95/5 with both tags; both revisions healthy."""
    return {
        "project": "naeda-genesis",
        "region": "us-central1",
        "services": [
            {
                "name": SERVICE,
                "revisions": [
                    {"name": STABLE, "behavior": HEALTHY},
                    {"name": CANARY, "behavior": HEALTHY},
                ],
                "traffic": {STABLE: 95, CANARY: 5},
                "tags": {"stable": STABLE, "canary": CANARY},
            }
        ],
    }


def canary_percent(emu: Any) -> int:
    """The canary's share of the emulator's live (applied) split (`traffic_statuses`)."""
    for svc in emu.status()["services"]:
        if svc["name"].endswith(f"/services/{SERVICE}"):
            return sum(t["percent"] for t in svc["traffic"] if t["revision"] == CANARY)
    raise RuntimeError(f"{SERVICE} not in the emulator")
