"""Builders of test inputs shared across test modules: rollout specs and files, live
services, status files as an earlier run left them, the target changes of a plan, and the
context of a run on a sandbox.

Real values only (the product's own model types and text); nothing here fakes a Google
client or git. Every builder takes overrides, so a test states only what it is about.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from reconciler import state
from reconciler.backends.cloudrun import CloudRunBackend
from reconciler.emulator import Emulator
from reconciler.execute import Context
from reconciler.gitops import GitOps
from reconciler.metrics.cloud_monitoring import CloudMonitoringProvider
from reconciler.model import LiveService, Phase, ServiceRef, ServiceStatus, Target, TrafficSplit
from reconciler.plan import Action, Change, split_for
from reconciler.sandbox import Sandbox, example_rollout
from reconciler.spec import RolloutSpec

STABLE = "ion-api-00041-abc"
CANARY = "ion-api-00042-xyz"
OTHER = "ion-api-00040-old"
"""A third revision of ion-api that exists but takes no traffic."""
REF = ServiceRef("naeda-genesis", "us-central1", "ion-api")


# --- rollout files -------------------------------------------------------------------------------
def make_spec(**over: Any) -> RolloutSpec:
    """The ion-api rollout (5% of its canary, stages to 100, 1h bake, an error-rate gate on
    5m windows) with `over` replacing top-level keys; a None value removes its key (a file
    with `waves:` has no `region:`, one without gates uses the defaults)."""
    data: dict[str, Any] = {
        "service": "ion-api",
        "project": REF.project,
        "region": REF.region,
        "revisions": {"stable": STABLE, "canary": CANARY},
        "canary_percent": 5,
        "stages": [5, 10, 25, 50, 100],
        "bake": "1h",
        "gates": {"window": "5m", "min_requests": 100, "error_rate": {"max": "5%"}},
    }
    data.update(over)
    return RolloutSpec.model_validate({k: v for k, v in data.items() if v is not None})


REPORTED_ROLLOUT = f"""\
service: ion-api
project: naeda-genesis
region: us-central1
revisions: {{stable: {STABLE}, canary: {CANARY}}}
canary_percent: 25
stages: [5, 10, 25, 50, 100]
gates:
  window: 5m
  min_requests: 10
  error_rate: {{max: 5%, target: 1%}}
  latency_p95: {{max: 20s, target: 15s}}
  success_rate: {{min: 90%, target: 95%}}
"""
"""ion-api at 25% with every gate the reports show, judged on 10 requests a window."""


def without_probes(text: str) -> str:
    """A rollout file's text with its `probes:` block removed (evidence from metrics only)."""
    head, rest = text.split("probes:\n", 1)
    return head + rest[rest.index("dependencies:") :]


def rollout_text(emu: Emulator, *, probes: bool = True, **over: object) -> str:
    """The sandbox's ion-api rollout file (`example_rollout` with `over`), with or without its
    probes."""
    text = example_rollout(emu, **over)
    return text if probes else without_probes(text)


# --- live services and state/ --------------------------------------------------------------------
def live_with(
    *targets: Target,
    requested: TrafficSplit | None = None,
    revisions: tuple[str, ...] = (STABLE, CANARY, OTHER),
    **over: Any,
) -> LiveService:
    """ion-api serving `targets` (and asked for them, unless `requested` says otherwise),
    generation 3, with `revisions` existing; `over` replaces any other field."""
    split = TrafficSplit.of(targets)
    fields: dict[str, Any] = {
        "ref": REF,
        "traffic": split,
        "statuses": split,
        "etag": "etag-1",
        "generation": 3,
        "observed_generation": 3,
        "revisions": frozenset(revisions),
        "requested": requested or split,
    }
    fields.update(over)
    return LiveService(**fields)


def status_at(
    stage: int,
    since: datetime,
    /,
    *,
    service: str = "ion-api",
    stable: str = STABLE,
    canary: str = CANARY,
    **over: Any,
) -> ServiceStatus:
    """The status file an earlier run left: `service` progressing at `stage`% of its canary
    (tagged `stable` and `canary`) since `since`, last reconciled then, generation 2; `over`
    replaces any field (`stage` included, the traffic staying as built)."""
    base = ServiceStatus(
        service=service,
        phase=Phase.PROGRESSING,
        stable_revision=stable,
        canary_revision=canary,
        stage=stage,
        stage_since=since,
        traffic=split_for(stable, canary, stage),
        etag='W/"1"',
        generation=2,
        observed_generation=2,
        last_reconcile=since,
    )
    return replace(base, **over)


# --- runs ----------------------------------------------------------------------------------------
def context(sb: Sandbox, repo: Path | None = None, *, metrics: bool = False, **kw: Any) -> Context:
    """A reconcile context on the sandbox (or on `repo`, a clone of its remote): the official
    Cloud Run client against the emulator, its clock, real git, and with `metrics` the Cloud
    Monitoring provider with Google's lag (the emulator delays its points as Google does)."""
    where = repo or sb.repo
    if metrics:
        provider = CloudMonitoringProvider()
        kw.setdefault("metrics_for", lambda _config: provider)
    kw.setdefault("clock", sb.now)
    if "backend" not in kw:
        kw["backend"] = CloudRunBackend()
    return Context(repo=where, git=GitOps(where), **kw)


# --- plans ---------------------------------------------------------------------------------------
def canary_moves(stable: str, canary: str, before: int, after: int) -> tuple[Change, ...]:
    """The target changes of a plan moving the canary from `before`% to `after`% (both tagged;
    a canary that took no traffic before is added)."""
    return (
        Change(Action.CHANGE, stable, 100 - before, 100 - after, "stable", "stable"),
        Change(Action.CHANGE, canary, before, after, "canary", "canary")
        if before
        else Change(Action.ADD, canary, 0, after, "", "canary"),
    )


def emitter_text(data: Any) -> str:
    """What the status writer's emitter writes for `data` from PyYAML's representer nodes
    (libyaml, the writer's settings): the reference its direct writers are held to."""
    return yaml.dump(
        data,
        Dumper=state._StatusDumper,
        sort_keys=False,
        default_flow_style=False,
        allow_unicode=True,
        width=100,
    )
