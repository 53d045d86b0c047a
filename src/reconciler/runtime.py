"""Wires the real edges into a reconcile `Context`: Cloud Run backend, metrics, git, clock."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from reconciler.errors import ReconcileError
from reconciler.metrics import MetricsProvider
from reconciler.reconcile import Context
from reconciler.spec import Metrics

_CLOCKS: dict[str, Callable[[], datetime]] = {}
_CLOCKS_LOCK = threading.Lock()


def utc_now() -> datetime:
    """Now, in UTC: the only clock the reconciler reads. With $CLOUD_RUN_EMULATOR_HOST set it
    is the emulator's clock (one virtual time for the API, the metrics and the reconciler, so
    `reconcile emulator clock +5m` plays five minutes out at once); else the wall clock."""
    from reconciler.clients import emulator_clock, emulator_host

    host = emulator_host()
    if host is None:
        return datetime.now(UTC)
    with _CLOCKS_LOCK:
        if host not in _CLOCKS:
            _CLOCKS[host] = emulator_clock(host)
        clock = _CLOCKS[host]
    return clock()


def metrics_factory() -> Callable[[Metrics], MetricsProvider]:
    """One provider per distinct metrics configuration, created on first use."""
    from reconciler.metrics import provider_for

    cache: dict[str, MetricsProvider] = {}
    lock = threading.Lock()

    def get(config: Metrics) -> MetricsProvider:
        key = config.model_dump_json()
        with lock:
            if key not in cache:
                cache[key] = provider_for(config)
            return cache[key]

    return get


def actor() -> str:
    """Who is acting, for events: the CI actor when there is one, else the local user."""
    for var in ("RECONCILE_ACTOR", "GITHUB_ACTOR", "USER"):
        if os.environ.get(var):
            who = os.environ[var]
            return f"{who} (github actions)" if var == "GITHUB_ACTOR" else who
    return "reconciler"


def build_context(
    repo: Path,
    *,
    commit: bool = True,
    push: bool = True,
    with_metrics: bool = True,
    progress: Callable[[str], None] | None = None,
) -> Context:
    """The production context: google-cloud-run backend, metrics providers, git working tree."""
    from reconciler.backends.cloudrun import CloudRunBackend
    from reconciler.gitops import GitOps

    if not (repo / "rollout").is_dir():
        raise ReconcileError(f"{repo}: no rollout/ directory here (use --repo DIR)")
    git = GitOps(repo) if commit else None
    return Context(
        repo=repo,
        backend=CloudRunBackend(),
        clock=utc_now,
        metrics_for=metrics_factory() if with_metrics else None,
        git=git,
        push=push,
        actor=actor(),
        progress=progress or (lambda _msg: None),
    )
