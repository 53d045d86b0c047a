"""`watch` output: per tick, only what changed since the tick before (a count for the rest)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from reconciler.views.outcomes import RunResult, ServiceOutcome


def describe(o: ServiceOutcome) -> str:
    """`ion-api 5% PASS` / `ion-api ROLLED BACK: error_rate 7.1% > 5%` / `payments error: ...`."""
    name = o.name
    if o.error:
        return f"{name} error: {o.error}"
    sp = o.plan
    if sp is None:
        return name
    live = sp.after if o.applied else sp.before
    pct = live.percent_of(sp.canary) if sp.canary else 0
    if o.rolled_back:
        why = "; ".join(o.verdict.failures) if o.verdict else (sp.edit.summary if sp.edit else "")
        return f"{name} ROLLED BACK: {why}"
    verdict = o.verdict.outcome.value if o.verdict else "-"
    text = f"{name} {pct}% {verdict}"
    if o.applied:
        text += f" ({sp.reason.value}: {sp.before.describe()} -> {sp.after.describe()})"
    elif o.held:
        text += f" ({o.held})"
    elif o.left_alone:
        text += f" ({o.left_alone})"
    elif sp.blocked:
        text += f" (blocked: {sp.blocked})"
    return text


def _news(o: ServiceOutcome, text: str, seen: Mapping[str, str]) -> bool:
    # A write or an error is always news; a steady state only when it differs from last tick.
    return o.applied or o.rolled_back or bool(o.error) or seen.get(o.name) != text


def tick_lines(
    n: int, at: datetime, result: RunResult, seen: Mapping[str, str]
) -> tuple[list[str], dict[str, str]]:
    """The lines of tick `n` and what each service looked like (pass it to the next tick).

    One changed service fits on the tick's line; several go one per line below it; a tick
    where nothing changed is one short line, whatever the number of services.
    """
    # Degraded mode is said on every service's line, not once: each one was held.
    mark = " [degraded: rollbacks only]" if result.degraded else ""
    # Keyed by name: the same service id in two regions is two rollouts, each with its line.
    now = {o.name: describe(o) + mark for o in result.outcomes}
    changed = [now[o.name] for o in result.outcomes if _news(o, now[o.name], seen)]
    if result.git_error:
        changed.append(result.git_error)
    same = len(result.outcomes) - len(changed) + bool(result.git_error)
    head = f"[{at.strftime('%Y-%m-%dT%H:%M:%SZ')}] tick {n}: "
    if not result.outcomes and not result.git_error:
        return [head + "no services"], now
    if not changed:
        return [head + f"no change ({_services(same)})"], now
    rest = f" ({same} unchanged)" if same else ""
    if len(changed) == 1:
        return [head + changed[0] + rest], now
    return [head + f"{len(changed)} changed{rest}", *(f"  {c}" for c in changed)], now


def _services(n: int) -> str:
    return f"{n} service" + ("" if n == 1 else "s")
