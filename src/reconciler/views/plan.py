"""A plan as text (terminal, like `terraform plan`) and as json (the saved, applyable plan).

Pure: values in, strings out. The json form is a stable, versioned schema (see
docs/plan-json.md) and `plan_from_json` reads it back for `reconcile apply PLANFILE` and
`reconcile show PLANFILE`. The PR comment is in `views.comment`.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any

from reconciler.model import (
    Outcome,
    ServiceRef,
    Target,
    TrafficSplit,
    Verdict,
    labels,
    verdict_from_data,
    verdict_to_data,
)
from reconciler.plan import (
    Action,
    Change,
    Phase,
    Plan,
    Reason,
    ServiceError,
    ServicePlan,
    SpecEdit,
)
from reconciler.views.style import action_style, paint

PLAN_FORMAT_VERSION = 1


# --- gcloud ----------------------------------------------------------------------------------
def gcloud_command(sp: ServicePlan) -> str:
    """The equivalent `gcloud run services update-traffic` command for a service's new split."""
    percents = [(r, p) for r, p in sorted(sp.after.percents().items()) if p > 0]
    args = [
        "gcloud",
        "run",
        "services",
        "update-traffic",
        sp.ref.service,
        "--project",
        sp.ref.project,
        "--region",
        sp.ref.region,
        "--to-revisions",
        ",".join(f"{r}={p}" for r, p in percents),
    ]
    tags_after = sp.after.tags()
    if tags_after != sp.before.tags():
        if tags_after:
            args += ["--set-tags", ",".join(f"{t}={r}" for t, r in sorted(tags_after.items()))]
        else:
            args += ["--clear-tags"]
    return shlex.join(args)


# --- text ------------------------------------------------------------------------------------
def verdict_summary(verdict: Verdict) -> str:
    """`FAIL: <failed gates>; <inconclusive gates>`: what failed leads, whatever the gate order."""
    failed = [g.reason for g in verdict.gates if g.outcome is Outcome.FAIL]
    unsure = [g.reason for g in verdict.gates if g.outcome is Outcome.INCONCLUSIVE]
    why = "; ".join([*failed, *unsure])
    return verdict.outcome.value + (f": {why}" if why else "")


def _pct(n: int) -> str:
    return f"{n:>3}%"


def _change_line(c: Change, color: bool) -> str:
    tag = c.tag_after or c.tag_before
    tag_part = ""
    if c.tag_before != c.tag_after:
        tag_part = f"  tag {c.tag_before or '-'} -> {c.tag_after or '-'}"
    elif tag:
        tag_part = f"  [{tag}]"
    symbol = paint(c.action.value, action_style(c.action), color)
    return f"    {symbol} {c.revision:<40} {_pct(c.before)} -> {_pct(c.after)}{tag_part}"


def _symbol(sp: ServicePlan, color: bool) -> str:
    if sp.blocked:
        return paint("!", "bad", color)
    return paint("~", "change", color) if sp.has_changes else " "


def service_text(sp: ServicePlan, *, color: bool = False) -> list[str]:
    """The text block of one service in a plan (ANSI colour on `+ ~ -` when `color`)."""
    ref = sp.ref
    head = (
        f"{_symbol(sp, color)} {paint(ref.service, 'bold', color)} "
        f"({ref.project}/{ref.region})  reason: {sp.reason.value}"
    )
    lines = [head, f"    phase {sp.phase.value}, canary {sp.canary_percent}%"]
    if sp.changes:
        lines += [_change_line(c, color) for c in sp.changes]
        lines.append(f"    split: {sp.before.describe()}  ->  {sp.after.describe()}")
    else:
        lines.append(f"    live: {sp.before.describe()} (no traffic change)")
    if sp.edit is not None:
        lines.append(f"    rollout file: {sp.edit.summary}")
    if sp.verdict is not None:
        lines.append(f"    verdict: {verdict_summary(sp.verdict)}")
    lines += [f"    {paint('warning:', 'change', color)} {w}" for w in sp.warnings]
    lines += [f"    note: {n}" for n in sp.notes]
    if sp.blocked:
        lines.append(f"    {paint('BLOCKED:', 'bad', color)} {sp.blocked}")
    if sp.changes and not sp.blocked:
        lines.append(f"    $ {gcloud_command(sp)}")
    lines.append(f"    computed against generation {sp.generation}, etag {sp.etag or '-'}")
    return lines


def summary_line(plan: Plan) -> str:
    """`Plan: 1 to change, 2 unchanged, 0 blocked, 0 errors.`"""
    change = sum(1 for s in plan.services if s.has_changes)
    blocked = len(plan.blocked)
    same = len(plan.services) - change - blocked
    errors = len(plan.errors)
    return (
        f"Plan: {change} to change, {same} unchanged, {blocked} blocked, "
        f"{errors} {'error' if errors == 1 else 'errors'}."
    )


def waves_text(group: list[ServicePlan], *, color: bool = False) -> list[str]:
    """The regions of one rollout file with `waves:`, drawn as its waves: a head naming the
    waves, the hold (once) when a rolled-back region holds the others, then each wave's
    regions (their service blocks, indented)."""
    first = group[0]
    waves = first.waves
    symbol = (
        paint("!", "bad", color)
        if any(sp.blocked for sp in group)
        else (paint("~", "change", color) if any(sp.has_changes for sp in group) else " ")
    )
    plan_waves = "  ".join(f"{i}: [{', '.join(w)}]" for i, w in enumerate(waves, 1))
    lines = [
        f"{symbol} {paint(first.ref.service, 'bold', color)} ({first.ref.project}) "
        f"in {len(waves)} waves  {plan_waves}"
    ]
    hold = next((sp.hold for sp in group if sp.hold), None)
    if hold:
        lines.append(f"  {paint('HOLD:', 'bad', color)} {hold.removeprefix('HOLD: ')}")
    for number, wave in enumerate(waves, 1):
        mine = [sp for sp in group if sp.wave == number]
        mine.sort(key=lambda sp: wave.index(sp.ref.region) if sp.ref.region in wave else 0)
        lines.append(f"  wave {number}: {', '.join(wave)}")
        for sp in mine:
            # The hold is said once, above; the notes name the wave already.
            shown = replace(sp, warnings=tuple(w for w in sp.warnings if w != sp.hold))
            lines += ["    " + line for line in service_text(shown, color=color)]
    return lines


def _grouped(services: tuple[ServicePlan, ...]) -> list[list[ServicePlan]]:
    """Services in plan order, the regions of one file with waves together (one group)."""
    groups: dict[tuple[str, str, str], list[ServicePlan]] = {}
    for sp in services:
        key = (sp.ref.project, sp.ref.service, "waves" if sp.wave else sp.ref.region)
        groups.setdefault(key, []).append(sp)
    return list(groups.values())


def plan_names(plan: Plan) -> dict[ServiceRef, str]:
    """How a plan's views name its rollouts (`model.labels`), errors included."""
    refs = [sp.ref for sp in plan.services] + [e.ref for e in plan.errors if e.ref is not None]
    return labels(refs)


def error_name(err: ServiceError, names: Mapping[ServiceRef, str]) -> str:
    """An error's service as the plan's views name it (`plan_names`)."""
    return names.get(err.ref, err.service) if err.ref is not None else err.service


def plan_text(plan: Plan, *, color: bool = False) -> str:
    """Terminal form, like `terraform plan` (ANSI colour when `color`); the regions of a
    rollout file with `waves:` are drawn as its waves (`waves_text`)."""
    lines: list[str] = []
    if plan.offline:
        lines.append("(offline: planned against the last observed state in state/, not the API)")
    for group in _grouped(plan.services):
        if group[0].wave:
            lines += waves_text(group, color=color)
        else:
            for sp in group:
                lines += service_text(sp, color=color)
        lines.append("")
    names = plan_names(plan)
    for err in plan.errors:
        lines.append(f"{paint('x', 'bad', color)} {error_name(err, names)}: {err.message}")
        lines.append("")
    lines.append(summary_line(plan))
    return "\n".join(lines) + "\n"


# --- json ------------------------------------------------------------------------------------
def _split_json(split: TrafficSplit) -> list[dict[str, Any]]:
    return [{"revision": t.revision, "percent": t.percent, "tag": t.tag} for t in split.targets]


def _verdict_json(v: Verdict | None) -> dict[str, Any] | None:
    return None if v is None else verdict_to_data(v)


def service_plan_dict(sp: ServicePlan) -> dict[str, Any]:
    """One service of the json plan."""
    return {
        "service": sp.ref.service,
        "project": sp.ref.project,
        "region": sp.ref.region,
        "reason": sp.reason.value,
        "phase": sp.phase.value,
        "has_changes": sp.has_changes,
        "blocked": sp.blocked,
        "drift": sp.drift,
        "stable": sp.stable,
        "canary": sp.canary,
        "canary_percent": sp.canary_percent,
        "before": _split_json(sp.before),
        "after": _split_json(sp.after),
        "changes": [
            {
                "action": c.action.value,
                "revision": c.revision,
                "before": c.before,
                "after": c.after,
                "tag_before": c.tag_before,
                "tag_after": c.tag_after,
            }
            for c in sp.changes
        ],
        "edit": None
        if sp.edit is None
        else {
            "kind": sp.edit.kind.value,
            "values": dict(sp.edit.values),
            "summary": sp.edit.summary,
        },
        "verdict": _verdict_json(sp.verdict),
        "warnings": list(sp.warnings),
        "notes": list(sp.notes),
        "generation": sp.generation,
        "etag": sp.etag,
        "spec_id": sp.spec_id,
        "gcloud": gcloud_command(sp) if sp.changes else None,
        "wave": sp.wave,
        "waves": [list(w) for w in sp.waves],
        "hold": sp.hold,
    }


def plan_dict(plan: Plan) -> dict[str, Any]:
    """The whole plan as a json-ready dict (format_version 1)."""
    return {
        "format_version": PLAN_FORMAT_VERSION,
        "created_at": plan.created_at.isoformat(),
        "offline": plan.offline,
        "has_changes": plan.has_changes,
        "services": [service_plan_dict(sp) for sp in plan.services],
        "errors": [_error_dict(e) for e in plan.errors],
    }


def _error_dict(e: ServiceError) -> dict[str, Any]:
    where = {"project": e.ref.project, "region": e.ref.region} if e.ref is not None else {}
    return {"service": e.service, **where, "message": e.message}


def plan_json(plan: Plan) -> str:
    """Stable json (sorted keys, 2-space indent)."""
    return json.dumps(plan_dict(plan), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


class PlanFileError(ValueError):
    """A saved plan file cannot be read."""


def _split_from(items: list[dict[str, Any]]) -> TrafficSplit:
    return TrafficSplit.of(
        Target(str(i["revision"]), int(i["percent"]), str(i.get("tag", ""))) for i in items
    )


def _verdict_from(d: dict[str, Any] | None) -> Verdict | None:
    return None if d is None else verdict_from_data(d)


def plan_from_json(text: str) -> Plan:
    """Read a plan written by `plan_json`. Raises PlanFileError on anything else."""
    try:
        d = json.loads(text)
        if d.get("format_version") != PLAN_FORMAT_VERSION:
            raise PlanFileError(
                f"unsupported plan format_version {d.get('format_version')!r} "
                f"(this reconciler reads {PLAN_FORMAT_VERSION})"
            )
        services = []
        for s in d["services"]:
            edit = s["edit"]
            services.append(
                ServicePlan(
                    ref=ServiceRef(s["project"], s["region"], s["service"]),
                    before=_split_from(s["before"]),
                    after=_split_from(s["after"]),
                    changes=tuple(
                        Change(
                            Action(c["action"]),
                            c["revision"],
                            c["before"],
                            c["after"],
                            c["tag_before"],
                            c["tag_after"],
                        )
                        for c in s["changes"]
                    ),
                    reason=Reason(s["reason"]),
                    phase=Phase(s["phase"]),
                    etag=s["etag"],
                    generation=s["generation"],
                    canary=s["canary"],
                    stable=s["stable"],
                    canary_percent=s["canary_percent"],
                    edit=None
                    if edit is None
                    else SpecEdit(Reason(edit["kind"]), edit["values"], edit["summary"]),
                    blocked=s["blocked"],
                    warnings=tuple(s["warnings"]),
                    notes=tuple(s["notes"]),
                    verdict=_verdict_from(s["verdict"]),
                    drift=s["drift"],
                    # Added within format_version 1: older plan files have none.
                    spec_id=s.get("spec_id"),
                    wave=int(s.get("wave", 0)),
                    waves=tuple(tuple(str(r) for r in w) for w in s.get("waves", [])),
                    hold=s.get("hold"),
                )
            )
        return Plan(
            created_at=datetime.fromisoformat(d["created_at"]),
            services=tuple(services),
            errors=tuple(
                ServiceError(
                    e["service"],
                    e["message"],
                    ServiceRef(e["project"], e["region"], e["service"]) if "region" in e else None,
                )
                for e in d["errors"]
            ),
            offline=bool(d["offline"]),
        )
    except PlanFileError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise PlanFileError(f"not a reconcile plan file ({type(exc).__name__}: {exc})") from None
