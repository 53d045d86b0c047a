"""A saved plan (`apply PLANFILE`) held against the fleet now: which services it names, and
why it no longer describes what apply would do (all or nothing)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from reconciler.errors import ReconcileError
from reconciler.gather import rollout_files
from reconciler.model import LiveService
from reconciler.plan import Plan, ServicePlan


def saved_services(rollout_dir: Path, saved: Plan) -> list[str]:
    """The services a saved plan names, each an exact service with a rollout file here.

    A hand-edited plan naming `ion-*` (or a service that has no rollout file) is refused
    as a whole: a saved plan is an exact list, never a pattern.
    """
    present = {p.stem for p in rollout_files(rollout_dir)}
    names = [s.service for s in saved.services]
    for name in names:
        if name not in present:
            why = "a pattern" if any(ch in name for ch in "*?[]") else "not a service"
            raise ReconcileError(
                f"saved plan names {name!r}, {why} in {rollout_dir}; a saved plan lists exact "
                "services: run plan again"
            )
    return names


def refusals(saved: Plan, fresh: Plan) -> dict[str, str]:
    """All or nothing: the saved plan against a fresh read-only plan of the same services.

    Returns why each service is refused (empty when every service still matches): with one
    stale service, none is applied.
    """
    by_name = {p.ref.key: p for p in fresh.services}
    failed = {e.service: e.message for e in fresh.errors}
    for sp in saved.services:
        now = by_name.get(sp.ref.key)
        if now is None:
            failed.setdefault(sp.service, f"{sp.ref.name}: cannot be planned now")
            continue
        problem = _stale_at(sp, now.etag, now.generation) or differs(sp, now)
        if problem:
            failed[sp.service] = problem
    if not failed:
        return {}
    stale = ", ".join(sorted(failed))
    return {
        sp.service: failed.get(sp.service)
        or f"{sp.ref.name}: not applied, the saved plan is stale for {stale}"
        for sp in saved.services
    }


def stale(saved: ServicePlan, live: LiveService) -> str | None:
    """Why the live service moved on since the plan was saved (None: it did not)."""
    return _stale_at(saved, live.etag, live.generation)


def _stale_at(saved: ServicePlan, etag: str, generation: int) -> str | None:
    if saved.etag != etag or saved.generation != generation:
        return (
            f"{saved.ref.name}: saved plan is stale (computed against generation "
            f"{saved.generation}, live is generation {generation}); run plan again"
        )
    return None


def differs(saved: ServicePlan, fresh: ServicePlan) -> str | None:
    """Why the saved plan no longer describes what apply would do (None: it does)."""
    if not saved.after.same_routing(fresh.after) or saved.reason is not fresh.reason:
        return (
            f"{saved.ref.name}: saved plan is stale (it would now do {fresh.reason.value}: "
            f"{fresh.after.describe()}); run plan again"
        )
    if _edit_keys(saved) != _edit_keys(fresh):
        return (
            f"{saved.ref.name}: saved plan is stale (the rollout-file edit would now write "
            f"{', '.join(_edit_keys(fresh)) or 'nothing'}); run plan again"
        )
    if saved.spec_id and fresh.spec_id and saved.spec_id != fresh.spec_id:
        # Same traffic, other desired state (gates, bake, stages, shared defaults): what was
        # reviewed is not what would be applied.
        return (
            f"{saved.ref.name}: saved plan is stale (its rollout file or the _defaults.yaml "
            "it inherits changed since it was planned); run plan again"
        )
    return None


def _edit_keys(sp: ServicePlan) -> tuple[str, ...]:
    # Keys, not values: a rollback's block carries the time it is written.
    return tuple(sorted(sp.edit.values)) if sp.edit is not None else ()


def by_service(saved: Plan | None) -> Mapping[str, ServicePlan]:
    """The saved plan's services by identity (`ServiceRef.key`; empty without a plan)."""
    return {s.ref.key: s for s in saved.services} if saved else {}
