"""Pure renderers of everything a human reads: values in, strings out.

plan (text, json), comment (the PR comment), apply (run lines and the closing summary),
checks (probe, compare and bench tables), watch (tick lines), status (the fleet table);
style holds colour and fitting text to a width, units the display of measured values.
No I/O, no clock, no environment: the caller decides colour and width.
"""

from __future__ import annotations

from reconciler.plan import Plan
from reconciler.views.comment import plan_markdown
from reconciler.views.plan import plan_json, plan_text


def render_plan(plan: Plan, fmt: str, *, color: bool = False) -> str:
    """A plan in one of FORMATS; only text is ever coloured."""
    if fmt == "markdown":
        return plan_markdown(plan)
    if fmt == "json":
        return plan_json(plan)
    return plan_text(plan, color=color)
