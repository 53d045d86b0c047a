"""The plan as a pull-request comment: what needs a reader first, units on every value.

One marker (the workflow finds and updates its earlier comment by it), one heading, the
offline note once; then errors, blocked services, rollbacks, changes and HELD services (too
little traffic to judge), each with its gate table (failed gates first, reasons kept) and
its coverage (judged out of served canary requests at the stage); the unchanged services
fold into one `<details>`, with their coverage.
"""

from __future__ import annotations

from collections.abc import Mapping

from reconciler.model import Coverage, GateResult, Outcome, ServiceRef, Verdict
from reconciler.plan import Plan, Reason, ServicePlan, coverage_note
from reconciler.views.plan import (
    error_name,
    gcloud_command,
    plan_names,
    summary_line,
    verdict_summary,
)
from reconciler.views.units import gate_limit, gate_value

MARKER = "<!-- reconcile-plan -->"
HEADING = "### reconcile plan"
OFFLINE_NOTE = (
    "> **Offline plan**: computed against the last observed state committed in `state/`, "
    "not live traffic (this run has no Google credentials, e.g. a pull request from a fork)."
)
# Names listed in the folded line before "and N more": enough to spot a service at a glance.
_NAMES_SHOWN = 5
_OUTCOME = {
    Outcome.FAIL: "❌ FAIL",
    Outcome.INCONCLUSIVE: "❔ INCONCLUSIVE",
    Outcome.PASS: "✅ PASS",
}
_ORDER = {Outcome.FAIL: 0, Outcome.INCONCLUSIVE: 1, Outcome.PASS: 2}


def _cell(text: str) -> str:
    """Text safe inside a table cell or a quote: no pipe ends the cell, no newline the row."""
    return text.replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def _code(text: str) -> str:
    return f"`{_cell(text)}`"


def _attention(sp: ServicePlan) -> bool:
    """A service that gets its own section: it changes, is blocked, or carries a warning."""
    return sp.has_changes or bool(sp.blocked) or bool(sp.warnings)


def _rank(sp: ServicePlan) -> int:
    if sp.blocked:
        return 0
    if sp.reason is Reason.ROLLBACK:
        return 1
    if sp.has_changes:
        return 2
    return 3 if sp.held else 4


def coverage_text(coverage: Coverage | None) -> str:
    """`98% (1,176 of 1,200 requests judged)`, or `–` when nothing was served yet."""
    return coverage.describe() if coverage is not None and coverage.served else "–"


def plan_markdown(plan: Plan) -> str:
    """The PR comment: a complete markdown document, starting with the marker."""
    out = [MARKER, HEADING, ""]
    if plan.offline:
        out += [OFFLINE_NOTE, ""]
    out += [f"**{summary_line(plan)}**", ""]
    # The same service id in several regions or projects is named with them (`labels`).
    names = plan_names(plan)
    for err in plan.errors:
        name = error_name(err, names)
        out += [f"#### ❌ {_code(name)}: error", "", f"> {_cell(err.message)}", ""]
    shown = sorted((sp for sp in plan.services if _attention(sp)), key=_rank)
    for sp in shown:
        out += _service(sp, names[sp.ref])
    folded = [sp for sp in plan.services if not _attention(sp)]
    if folded:
        out += _unchanged(folded, names)
    return "\n".join(out).rstrip() + "\n"


def _title(sp: ServicePlan, name: str) -> str:
    if sp.blocked:
        icon, what = "⛔", f"blocked ({sp.reason.value})"
    elif sp.reason is Reason.ROLLBACK:
        icon, what = "⏪", sp.reason.value
    elif sp.has_changes:
        icon, what = "🔀", sp.reason.value
    elif sp.held:
        icon, what = "⏸️", "HELD, too little traffic to judge"
    else:
        icon, what = "⚠️", "no change, with warnings"
    move = ""
    if sp.canary:
        before, after = sp.before.percent_of(sp.canary), sp.canary_percent_after
        move = f", canary {before}% → {after}%" if before != after else f", canary {after}%"
    return f"#### {icon} {_code(name)}: {what}{move}"


def _service(sp: ServicePlan, name: str) -> list[str]:
    out = [
        _title(sp, name),
        "",
        f"{_code(sp.ref.project)} / {_code(sp.ref.region)}"
        + (f" · wave {sp.wave} of {len(sp.waves)}" if sp.wave else "")
        + f" · phase **{sp.phase.value}**",
        "",
    ]
    if sp.blocked:
        out += [f"> **Blocked:** {_cell(sp.blocked)}", ""]
    if sp.changes:
        out += ["| | revision | tag | before | after |", "|---|---|---|---:|---:|"]
        for c in sp.changes:
            tag = c.tag_after or c.tag_before
            if c.tag_before != c.tag_after:
                tag = f"{c.tag_before or '–'} → {c.tag_after or '–'}"
            out.append(
                f"| `{c.action.value}` | {_code(c.revision)} | {tag} | {c.before}% | {c.after}% |"
            )
        out.append("")
    else:
        out += [f"No traffic change (live: {_code(sp.before.describe())}).", ""]
    if sp.edit is not None:
        out += [f"Rollout file edit: {_cell(sp.edit.summary)}", ""]
    if sp.held:
        out += [f"> ⏸️ **{_cell(sp.held)}**", ""]
    if sp.verdict is not None:
        out += verdict_table(sp.verdict)
    if sp.coverage is not None and sp.coverage.served:
        out += [f"Coverage at this stage: {coverage_text(sp.coverage)}.", ""]
    # HELD and coverage are shown above; the text view's copies are left out here.
    warnings = [w for w in sp.warnings if w != sp.held]
    notes = [n for n in sp.notes if sp.coverage is None or n != coverage_note(sp.coverage)]
    quoted = [f"> ⚠️ {_cell(w)}" for w in warnings] + [f"> {_cell(n)}" for n in notes]
    if quoted:
        out += [*quoted, ""]
    if sp.changes and not sp.blocked:
        out += ["```sh", gcloud_command(sp), "```", ""]
    return out


def verdict_table(verdict: Verdict) -> list[str]:
    """The verdict and a row per gate, failed gates first, each value in its unit."""
    out = [
        f"Verdict: **{verdict.outcome.value}**",
        "",
        "| gate | result | measured | limit | samples | why |",
        "|---|---|---:|---:|---:|---|",
    ]
    for g in sorted(verdict.gates, key=lambda g: _ORDER.get(g.outcome, 1)):
        out.append(_gate_row(g))
    out.append("")
    return out


def _gate_row(g: GateResult) -> str:
    return (
        f"| {_cell(g.gate)} | {_OUTCOME.get(g.outcome, g.outcome.value)} "
        f"| {gate_value(g.gate, g.value)} | {gate_limit(g.gate, g.threshold)} "
        f"| {g.samples:,} | {_cell(g.reason)} |"
    )


def _unchanged(plans: list[ServicePlan], named: Mapping[ServiceRef, str]) -> list[str]:
    names = ", ".join(f"<code>{named[sp.ref]}</code>" for sp in plans[:_NAMES_SHOWN])
    if len(plans) > _NAMES_SHOWN:
        names += f" and {len(plans) - _NAMES_SHOWN} more"
    out = [
        f"<details><summary>✅ {len(plans)} unchanged: {names}</summary>",
        "",
        "| service | phase | canary | verdict | coverage |",
        "|---|---|---:|---|---:|",
    ]
    # In sync, so the live split is the rollout file's: the canary percent says it all.
    for sp in plans:
        verdict = verdict_summary(sp.verdict) if sp.verdict is not None else "–"
        kept = [n for n in sp.notes if sp.coverage is None or n != coverage_note(sp.coverage)]
        notes = "".join(f"; {n}" for n in kept)
        out.append(
            f"| {_code(named[sp.ref])} | {sp.phase.value} | {sp.canary_percent}% "
            f"| {_cell(verdict + notes)} | {coverage_text(sp.coverage)} |"
        )
    out += ["", "</details>", ""]
    return out
