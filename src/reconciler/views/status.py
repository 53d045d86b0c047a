"""The fleet status: one row per service (phase, canary, live split, sync), fitted to a width."""

from __future__ import annotations

import json
import textwrap

from reconciler.model import TrafficSplit, labels
from reconciler.plan import ServiceError, ServicePlan
from reconciler.views.plan import error_name, service_plan_dict
from reconciler.views.style import paint, truncate

# The narrowest the SERVICE and LIVE columns get before the table stops shrinking them.
_MIN_SERVICE = 16
_MIN_LIVE = 12
_INDENT = "    "
_SYNC_STYLE = {"in sync": "good", "pending": "change", "drift": "change", "blocked": "bad"}


def _sync(sp: ServicePlan) -> str:
    if sp.blocked:
        return "blocked"
    if not sp.changes:
        return "in sync"
    return "drift" if sp.drift else "pending"


def _name(sp: ServicePlan, name: str) -> str:
    """The SERVICE cell: a region of a file with waves says which region and wave it is;
    another rollout is named as `model.labels` names it among the rows."""
    if sp.wave:
        return f"{sp.ref.service} {sp.ref.region} (wave {sp.wave})"
    return name


def _short(split: TrafficSplit) -> str:
    """The split by tag (`stable=95 canary=5`): what a narrow table has room for."""
    return " ".join(f"{t.tag or t.revision}={t.percent}" for t in split.targets) or "(none)"


def status_text(
    plans: list[ServicePlan],
    errors: list[ServiceError],
    *,
    width: int | None = None,
    color: bool = False,
) -> str:
    """Desired vs live per service, fitted to `width` columns when given.

    Too wide, the LIVE column first drops revision names for tags (`stable=95 canary=5`),
    then long names are cut in the middle; notes wrap. `width` None draws every column
    whole (output to a file or a pipe).
    """
    live = [sp.before.describe() for sp in plans]
    named = labels([sp.ref for sp in plans] + [e.ref for e in errors if e.ref is not None])
    rows = [
        [_name(sp, named[sp.ref]), sp.phase.value, f"{sp.canary_percent}%", text, _sync(sp)]
        for sp, text in zip(plans, live, strict=True)
    ]
    names = [r[0] for r in rows] + [error_name(e, named) for e in errors]

    def widths() -> list[int]:
        heads = ["SERVICE", "PHASE", "CANARY", "LIVE", "SYNC"]
        return [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(heads)]

    w = widths()
    w[0] = max([w[0], *(len(n) for n in names)])
    if width is not None and sum(w) + 8 > width:
        for r, sp in zip(rows, plans, strict=True):
            r[3] = _short(sp.before)
        w[3] = widths()[3]
        over = sum(w) + 8 - width
        if over > 0:
            w[0] -= min(over, max(w[0] - _MIN_SERVICE, 0))
            over = sum(w) + 8 - width
        if over > 0:
            w[3] -= min(over, max(w[3] - _MIN_LIVE, 0))

    def row(cells: list[str], sync: str) -> str:
        service, phase, canary, split = cells[:4]
        return (
            f"{truncate(service, w[0]):<{w[0]}}  {phase:<{w[1]}}  {canary:>{w[2]}}  "
            f"{truncate(split, w[3]):<{w[3]}}  {sync}"
        ).rstrip()

    def note(text: str, first: str = _INDENT) -> list[str]:
        if width is None:
            return [first + text]
        room = max(width, len(first) + 20)
        return textwrap.wrap(
            text, room, initial_indent=first, subsequent_indent=_INDENT, break_on_hyphens=False
        ) or [first]

    lines = [row(["SERVICE", "PHASE", "CANARY", "LIVE"], "SYNC")]
    for sp, cells in zip(plans, rows, strict=True):
        sync = cells[4]
        lines.append(row(cells, paint(sync, _SYNC_STYLE[sync], color)))
        for n in (*sp.notes, *sp.warnings):
            lines += note(n)
        if sp.blocked:
            lines += note(f"blocked: {sp.blocked}")
    for e in errors:
        name = f"{truncate(error_name(e, named), w[0]):<{w[0]}}  "
        lines += note(f"{paint('error:', 'bad', color)} {e.message}", first=name)
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
