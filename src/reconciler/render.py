"""Plans and statuses as text (terminal), markdown (PR comment) and json (machines).

Pure: values in, strings out. The json form is a stable, versioned schema (see
docs/plan-json.md) and `plan_from_json` reads it back for `reconcile apply PLANFILE`.
"""

from __future__ import annotations

import json
import shlex
from datetime import datetime
from typing import Any

from reconciler.model import (
    ServiceRef,
    Target,
    TrafficSplit,
    Verdict,
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

PLAN_FORMAT_VERSION = 1
MARKDOWN_MARKER = "<!-- reconcile-plan -->"


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
def _pct(n: int) -> str:
    return f"{n:>3}%"


def _change_line(c: Change) -> str:
    tag = c.tag_after or c.tag_before
    tag_part = ""
    if c.tag_before != c.tag_after:
        tag_part = f"  tag {c.tag_before or '-'} -> {c.tag_after or '-'}"
    elif tag:
        tag_part = f"  [{tag}]"
    return f"    {c.action.value} {c.revision:<40} {_pct(c.before)} -> {_pct(c.after)}{tag_part}"


def _symbol(sp: ServicePlan) -> str:
    if sp.blocked:
        return "!"
    return "~" if sp.has_changes else " "


def service_text(sp: ServicePlan) -> list[str]:
    """The text block of one service in a plan."""
    ref = sp.ref
    head = f"{_symbol(sp)} {ref.service} ({ref.project}/{ref.region})  reason: {sp.reason.value}"
    lines = [head, f"    phase {sp.phase.value}, canary {sp.canary_percent}%"]
    if sp.changes:
        lines += [_change_line(c) for c in sp.changes]
        lines.append(f"    split: {sp.before.describe()}  ->  {sp.after.describe()}")
    else:
        lines.append(f"    live: {sp.before.describe()} (no traffic change)")
    if sp.edit is not None:
        lines.append(f"    rollout file: {sp.edit.summary}")
    if sp.verdict is not None:
        lines.append(f"    verdict: {sp.verdict.summary()}")
    lines += [f"    warning: {w}" for w in sp.warnings]
    lines += [f"    note: {n}" for n in sp.notes]
    if sp.blocked:
        lines.append(f"    BLOCKED: {sp.blocked}")
    if sp.changes and not sp.blocked:
        lines.append(f"    $ {gcloud_command(sp)}")
    lines.append(f"    computed against generation {sp.generation}, etag {sp.etag or '-'}")
    return lines


def summary_line(plan: Plan) -> str:
    """`Plan: 1 to change, 2 unchanged, 0 blocked, 0 errors.`"""
    change = sum(1 for s in plan.services if s.has_changes)
    blocked = len(plan.blocked)
    same = len(plan.services) - change - blocked
    return (
        f"Plan: {change} to change, {same} unchanged, {blocked} blocked, {len(plan.errors)} errors."
    )


def plan_text(plan: Plan) -> str:
    """Terminal form, like `terraform plan`."""
    lines: list[str] = []
    if plan.offline:
        lines.append("(offline: planned against the last observed state in state/, not the API)")
    for sp in plan.services:
        lines += service_text(sp)
        lines.append("")
    for err in plan.errors:
        lines.append(f"x {err.service}: {err.message}")
        lines.append("")
    lines.append(summary_line(plan))
    return "\n".join(lines) + "\n"


# --- markdown --------------------------------------------------------------------------------
def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def plan_markdown(plan: Plan) -> str:
    """PR-comment form: a table per service, before -> after, reasons, warnings."""
    out = [MARKDOWN_MARKER, "### reconcile plan", ""]
    if plan.offline:
        out += [
            "> Offline plan: computed against the last observed state committed in `state/` "
            "(no cloud credentials on this run).",
            "",
        ]
    out += [f"**{summary_line(plan)}**", ""]
    for sp in plan.services:
        icon = "⛔" if sp.blocked else ("🔀" if sp.has_changes else "✅")
        out.append(f"#### {icon} `{sp.ref.service}` — {sp.reason.value}")
        out.append("")
        out.append(
            f"project `{sp.ref.project}`, region `{sp.ref.region}`, phase **{sp.phase.value}**, "
            f"canary **{sp.canary_percent}%**"
        )
        out.append("")
        if sp.changes:
            out += ["| | revision | tag | before | after |", "|---|---|---|---:|---:|"]
            for c in sp.changes:
                tag = c.tag_after or c.tag_before
                if c.tag_before != c.tag_after:
                    tag = f"{c.tag_before or '–'} → {c.tag_after or '–'}"
                out.append(
                    f"| `{c.action.value}` | `{c.revision}` | {tag} | {c.before}% | {c.after}% |"
                )
            out.append("")
        else:
            out += [f"No traffic change (live: `{sp.before.describe()}`).", ""]
        if sp.blocked:
            out += [f"> **Blocked:** {_md_escape(sp.blocked)}", ""]
        if sp.edit is not None:
            out += [f"Rollout file edit: {_md_escape(sp.edit.summary)}", ""]
        if sp.verdict is not None:
            out += _verdict_md(sp.verdict)
        for w in sp.warnings:
            out.append(f"> ⚠️ {_md_escape(w)}")
        for n in sp.notes:
            out.append(f"> {_md_escape(n)}")
        if sp.warnings or sp.notes:
            out.append("")
        if sp.changes and not sp.blocked:
            out += ["```sh", gcloud_command(sp), "```", ""]
    for err in plan.errors:
        out += [f"#### ❌ `{err.service}`", "", f"> {_md_escape(err.message)}", ""]
    return "\n".join(out).rstrip() + "\n"


def _verdict_md(verdict: Verdict) -> list[str]:
    out = [
        f"Verdict: **{verdict.outcome.value}**",
        "",
        "| gate | result | measured | threshold | samples |",
        "|---|---|---:|---:|---:|",
    ]
    for g in verdict.gates:
        out.append(
            f"| {g.gate} | {g.outcome.value} | {_num(g.value)} | {_num(g.threshold)} "
            f"| {g.samples} |"
        )
    out.append("")
    return out


def _num(v: float | None) -> str:
    return "–" if v is None else f"{v:.4g}"


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
        "gcloud": gcloud_command(sp) if sp.changes else None,
    }


def plan_dict(plan: Plan) -> dict[str, Any]:
    """The whole plan as a json-ready dict (format_version 1)."""
    return {
        "format_version": PLAN_FORMAT_VERSION,
        "created_at": plan.created_at.isoformat(),
        "offline": plan.offline,
        "has_changes": plan.has_changes,
        "services": [service_plan_dict(sp) for sp in plan.services],
        "errors": [{"service": e.service, "message": e.message} for e in plan.errors],
    }


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
                )
            )
        return Plan(
            created_at=datetime.fromisoformat(d["created_at"]),
            services=tuple(services),
            errors=tuple(ServiceError(e["service"], e["message"]) for e in d["errors"]),
            offline=bool(d["offline"]),
        )
    except PlanFileError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise PlanFileError(f"not a reconcile plan file ({type(exc).__name__}: {exc})") from None


def render_plan(plan: Plan, fmt: str) -> str:
    """Dispatch on `text`, `markdown` or `json`."""
    if fmt == "markdown":
        return plan_markdown(plan)
    if fmt == "json":
        return plan_json(plan)
    return plan_text(plan)


# --- status ----------------------------------------------------------------------------------
def status_text(plans: list[ServicePlan], errors: list[ServiceError]) -> str:
    """Desired vs live per service, phase and stage."""
    lines = [f"{'SERVICE':<28} {'PHASE':<12} {'CANARY':>6}  {'LIVE':<48} SYNC"]
    for sp in plans:
        sync = "in sync" if not sp.changes else ("drift" if sp.drift else "pending")
        if sp.blocked:
            sync = "blocked"
        lines.append(
            f"{sp.ref.service:<28} {sp.phase.value:<12} {sp.canary_percent:>5}%  "
            f"{sp.before.describe():<48} {sync}"
        )
        for n in (*sp.notes, *sp.warnings):
            lines.append(f"{'':<28} {n}")
        if sp.blocked:
            lines.append(f"{'':<28} blocked: {sp.blocked}")
    for e in errors:
        lines.append(f"{e.service:<28} error: {e.message}")
    return "\n".join(lines) + "\n"


def status_json(plans: list[ServicePlan], errors: list[ServiceError]) -> str:
    """Status as json: the per-service plan dicts plus errors."""
    return (
        json.dumps(
            {
                "services": [service_plan_dict(sp) for sp in plans],
                "errors": [{"service": e.service, "message": e.message} for e in errors],
            },
            indent=2,
            sort_keys=True,
            ensure_ascii=False,
        )
        + "\n"
    )
