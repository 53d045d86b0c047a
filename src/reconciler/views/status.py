"""The fleet status: one row per service (phase, canary, live split, sync), fitted to a width."""

from __future__ import annotations

import json
import textwrap

from reconciler.plan import ServiceError, ServicePlan
from reconciler.views.plan import service_plan_dict
from reconciler.views.style import paint, truncate

# The narrowest the SERVICE and LIVE columns get before the table stops shrinking them.
_MIN_SERVICE = 12
_MIN_LIVE = 16
_SYNC_STYLE = {"in sync": "good", "pending": "change", "drift": "change", "blocked": "bad"}


def _sync(sp: ServicePlan) -> str:
    if sp.blocked:
        return "blocked"
    if not sp.changes:
        return "in sync"
    return "drift" if sp.drift else "pending"


def status_text(
    plans: list[ServicePlan],
    errors: list[ServiceError],
    *,
    width: int | None = None,
    color: bool = False,
) -> str:
    """Desired vs live per service; long names are cut in the middle to fit `width` columns.

    `width` None draws every column at its natural width (output to a file or a pipe).
    """
    rows = [
        (sp.ref.service, sp.phase.value, f"{sp.canary_percent}%", sp.before.describe(), _sync(sp))
        for sp in plans
    ]
    service_w = max([len("SERVICE"), *(len(r[0]) for r in rows), *(len(e.service) for e in errors)])
    phase_w = max([len("PHASE"), *(len(r[1]) for r in rows)])
    live_w = max([len("LIVE"), *(len(r[3]) for r in rows)])
    sync_w = max([len("SYNC"), *(len(r[4]) for r in rows)])
    fixed = phase_w + 6 + sync_w + 4 * 2  # PHASE, CANARY, SYNC and the four gaps
    if width is not None:
        over = service_w + live_w + fixed - width
        if over > 0:
            cut = min(over, max(live_w - _MIN_LIVE, 0))
            live_w -= cut
            service_w -= min(over - cut, max(service_w - _MIN_SERVICE, 0))
    indent = " " * (service_w + 2)
    wrap_w = max((width or 0) - len(indent), 40) if width is not None else None

    def row(service: str, phase: str, canary: str, live: str, sync: str) -> str:
        cells = f"{truncate(service, service_w):<{service_w}}  {phase:<{phase_w}}  {canary:>6}  "
        return cells + f"{truncate(live, live_w):<{live_w}}  {sync}".rstrip()

    def note(text: str, first: str = indent) -> list[str]:
        if wrap_w is None:
            return [first + text]
        parts = textwrap.wrap(text, wrap_w) or [""]
        return [first + parts[0], *(indent + part for part in parts[1:])]

    lines = [row("SERVICE", "PHASE", "CANARY", "LIVE", "SYNC")]
    for sp, cells in zip(plans, rows, strict=True):
        line = row(*cells)
        sync = cells[4]
        lines.append(line[: len(line) - len(sync)] + paint(sync, _SYNC_STYLE[sync], color))
        for n in (*sp.notes, *sp.warnings):
            lines += note(n)
        if sp.blocked:
            lines += note(f"blocked: {sp.blocked}")
    for e in errors:
        name = f"{truncate(e.service, service_w):<{service_w}}  "
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
