"""The judge: measured windows and probe runs in, one verdict out.

Pure: no I/O, no clock. The caller measures (metrics providers, probes), keeps recent
windows in state, and calls `judge()` once per tick.

The rules, per gate:
- A window with fewer than `gates.min_requests` requests is INCONCLUSIVE: never PASS or FAIL;
  so is a window whose data the provider reported incomplete (`WindowStats.incomplete`).
- Rates are judged on a Wilson score interval (95% by default), not the point estimate: an
  error-rate window FAILs only when the interval's lower bound is above `max`, PASSes only
  when its upper bound is at or below `max`, and is INCONCLUSIVE in between. So a handful of
  requests can neither roll a canary back nor promote it. Success rate mirrors this against
  `min`; canary-vs-stable uses Newcombe's interval of the difference, which accounts for both
  sample sizes.
- Latency p95 is compared with `max` directly (the provider already aggregates the whole
  window); a window without a p95 is INCONCLUSIVE.
- A gate FAILs once `gates.consecutive_failures` windows failed with no PASS window between
  them. A PASS resets the count; an INCONCLUSIVE window neither counts nor resets, so a bad
  canary whose traffic dips below `min_requests` every other window is still caught.
- A gate PASSes when its newest window passes; otherwise it is INCONCLUSIVE. No data is
  never a PASS.
- `target` values are promotion goals, not rollback thresholds: they are reported
  (`GateResult.target_met`, the reason's "target ... met/missed") and never cause a FAIL.
- The one promotion-readiness rule (`promotion_blockers`): a canary is ready to promote when
  the verdict PASSes and no gate misses its `target`. The bake timer counts how long it has
  been ready; the planner, `reconcile report` and the docs all use this rule.
- Failing streaks are counters (`count_streaks`), kept in state/ between runs: each window
  (and probe run) is counted once, so any `consecutive_failures` works however few windows
  are kept and however many window lengths the gates use.
- Fail fast, pass slowly: the span since the last judged window (a `partial` window, shorter
  than the gate's window) is judged too, but only as failing evidence: when it has
  `min_requests` and its rate interval lies wholly beyond the limit, the gate FAILs at once,
  whatever `consecutive_failures` says. It never passes a gate and is never counted in a
  streak; latency p95 (no interval) ignores it.
- Provisional windows (newer than the ingestion horizon) are judged on their current numbers
  but never advance the stored streak counters: the caller counts them on top of the stored
  counts for one verdict and measures them again until final.
- `gates.inconclusive_limit`: INCONCLUSIVE windows in a row are counted too (`Streak.
  inconclusive`); at the limit the service is HELD (`held_reason`).
- A failing probe counts as a failing gate: each probe is a gate whose runs (one per tick)
  are its windows, under the same `consecutive_failures` rule.
- The verdict FAILs when any gate FAILs, PASSes only when every gate PASSes (and there is at
  least one gate or probe), and is INCONCLUSIVE otherwise.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from reconciler.model import GateResult, Outcome, ProbeRecord, Streak, Verdict, WindowStats
from reconciler.spec import Gates, format_duration, format_percent
from reconciler.stats import difference_interval, wilson_interval, z_score


@dataclass(frozen=True)
class ProbeRun:
    """One run of one probe: its name, whether every expectation held, and why not."""

    name: str
    ok: bool
    reason: str = ""


def gate_windows(gates: Gates) -> tuple[timedelta, ...]:
    """The window lengths the configured gates judge on, shortest first.

    The caller measures one series of windows per length and passes them all to `judge()`.
    """
    lengths = {rule.window for rule in _rules(gates)}
    return tuple(sorted(lengths))


def judge(
    canary: Sequence[WindowStats],
    gates: Gates,
    *,
    stable: Sequence[WindowStats] = (),
    probes: Sequence[ProbeRun] = (),
    expected_probes: Collection[str] = (),
    confidence: float = 0.95,
    streaks: Mapping[str, int] | None = None,
    partial: Sequence[WindowStats] = (),
) -> Verdict:
    """Judge a canary on its recent windows and probe runs.

    `canary`: the canary revision's recent, distinct windows, oldest first, of every length
    `gate_windows(gates)` names; each gate uses the windows of its own length. Pass enough of
    them to cover `consecutive_failures` (e.g. the windows of the current stage, or the last
    hour): the verdict depends only on what is passed. Windows should not overlap, or one
    burst of errors would count as several failing windows.
    `stable`: the stable revision's stats for the same windows (matched by start and end),
    for the `vs_stable` gate.
    `probes`: probe runs, oldest first (runs of one probe are matched by name).
    `expected_probes`: names of the configured probes; one with no run is INCONCLUSIVE, so a
    probe the caller failed to run can never let a canary pass.
    `confidence`: two-sided level of the rate intervals.
    `streaks`: failing-streak counts per gate from `count_streaks`; when given they decide
    FAIL (the windows passed only supply the values reported), so a streak longer than the
    windows kept still fails.
    `partial`: the canary's span since its last judged window, of any length (its stable
    counterpart goes in `stable`): failing evidence only (see the module doc).
    """
    z = z_score(confidence)
    ctx = _Context(
        gates=gates,
        z=z,
        level=f"{confidence * 100:g}%",
        stable={(s.start, s.end): s for s in stable},
        streaks=streaks,
    )
    by_length: dict[timedelta, list[WindowStats]] = {}
    for w in sorted(canary, key=lambda w: w.end):
        by_length.setdefault(w.window, []).append(w)

    results = [
        _fail_fast(ctx, rule, partial) or _gate(ctx, rule, by_length.get(rule.window, []))
        for rule in _rules(gates)
    ]
    results.extend(_probe_gates(probes, expected_probes, gates.consecutive_failures, streaks))
    return Verdict(outcome=_overall(results), gates=tuple(results) or (_NOTHING,))


VS_STABLE = "vs_stable"
"""The name of the canary-versus-stable gate: the one gate that reads the stable revision's
windows (a verdict names every configured gate, so a verdict without it read none)."""


def _rules(gates: Gates) -> list[_Rule]:
    """The configured gates, in the rollout file's order."""
    rules = []
    if (e := gates.error_rate) is not None:
        rules.append(
            _Rule(
                "error_rate",
                e.max,
                e.target,
                e.window or gates.window,
                _rate_error,
                pool=_pool_errors,
            )
        )
    if (lat := gates.latency_p95) is not None:
        rules.append(
            _Rule(
                "latency_p95",
                lat.max,
                lat.target,
                lat.window or gates.window,
                _latency,
                pool=_pool_p95,
                limit=_secs_limit,
            )
        )
    if (s := gates.success_rate) is not None:
        rules.append(
            _Rule(
                "success_rate",
                s.min,
                s.target,
                s.window or gates.window,
                _rate_success,
                pool=_pool_successes,
                worse="<",
                better=">=",
            )
        )
    if (v := gates.vs_stable) is not None:
        rules.append(
            _Rule(VS_STABLE, v.error_rate_delta, None, gates.window, _vs_stable, pool=_pool_delta)
        )
    return rules


# --- formatting for human one-liners ----------------------------------------------------------
def _pct(x: float) -> str:
    """A measured share: one decimal, two below 0.1% so small rates do not read as zero."""
    pct = x * 100
    return f"{pct:.2f}%" if 0 < abs(pct) < 0.1 else f"{pct:.1f}%"


def _secs(x: float) -> str:
    return f"{x * 1000:.0f}ms" if x < 1 else f"{x:.1f}s"


def _secs_limit(x: float) -> str:
    """A configured latency, as the rollout file writes it: `20s`, `500ms`."""
    return f"{x * 1000:g}ms" if x < 1 else f"{x:g}s"


def _plural(n: int, noun: str) -> str:
    return f"{n:,} {noun}" + ("" if n == 1 else "s")


def _requests(seen: list[_Seen]) -> str:
    text = _plural(sum(s.canary.requests for s in seen), "request")
    stables = [s.stable for s in seen if s.stable is not None]
    if stables:
        text += f" vs {sum(s.requests for s in stables):,} stable"
    return text


# --- per-window judgements ----------------------------------------------------------------
@dataclass(frozen=True)
class _Context:
    gates: Gates
    z: float
    level: str
    stable: dict[tuple[datetime, datetime], WindowStats]
    streaks: Mapping[str, int] | None = None


@dataclass(frozen=True)
class _Seen:
    """One window as one gate saw it."""

    outcome: Outcome
    canary: WindowStats
    stable: WindowStats | None = None
    detail: str = ""
    """Why the window is INCONCLUSIVE."""
    enough: bool = True
    """The window had `min_requests`: its value means something (for targets)."""


@dataclass(frozen=True)
class _Rule:
    """What distinguishes one gate from another: name, limits, how to judge and report."""

    name: str
    threshold: float
    target: float | None
    window: timedelta
    measure: Callable[[_Context, _Rule, WindowStats], _Seen]
    """Judges one window."""
    pool: Callable[[list[_Seen]], tuple[float | None, str]]
    """The value over several windows and its text."""
    limit: Callable[[float], str] = format_percent
    """Formats a configured limit the way the rollout file writes it."""
    worse: str = ">"
    """How a failing value compares with the threshold (`>` for a max, `<` for a min)."""
    better: str = "<="


def _low_count(ctx: _Context, w: WindowStats) -> _Seen | None:
    if w.incomplete is not None:
        # Partial data can hide the errors (or the successes): it proves nothing either way.
        return _Seen(
            Outcome.INCONCLUSIVE, w, detail=f"incomplete data: {w.incomplete}", enough=False
        )
    if w.requests < ctx.gates.min_requests:
        detail = f"{w.requests:,} requests < min_requests {ctx.gates.min_requests:,}"
        return _Seen(Outcome.INCONCLUSIVE, w, detail=detail, enough=False)
    return None


def _rate_error(ctx: _Context, rule: _Rule, w: WindowStats) -> _Seen:
    low = _low_count(ctx, w)
    if low is not None:
        return low
    lo, hi = wilson_interval(w.errors, w.requests, ctx.z)
    if lo > rule.threshold:
        return _Seen(Outcome.FAIL, w)
    if hi <= rule.threshold:
        return _Seen(Outcome.PASS, w)
    return _Seen(Outcome.INCONCLUSIVE, w, detail=_straddles(ctx, lo, hi, rule))


def _rate_success(ctx: _Context, rule: _Rule, w: WindowStats) -> _Seen:
    low = _low_count(ctx, w)
    if low is not None:
        return low
    lo, hi = wilson_interval(w.successes, w.requests, ctx.z)
    if hi < rule.threshold:
        return _Seen(Outcome.FAIL, w)
    if lo >= rule.threshold:
        return _Seen(Outcome.PASS, w)
    return _Seen(Outcome.INCONCLUSIVE, w, detail=_straddles(ctx, lo, hi, rule))


def _latency(ctx: _Context, rule: _Rule, w: WindowStats) -> _Seen:
    low = _low_count(ctx, w)
    if low is not None:
        return low
    if w.p95 is None:
        return _Seen(Outcome.INCONCLUSIVE, w, detail="no p95 measured")
    return _Seen(Outcome.FAIL if w.p95 > rule.threshold else Outcome.PASS, w)


def _vs_stable(ctx: _Context, rule: _Rule, w: WindowStats) -> _Seen:
    low = _low_count(ctx, w)
    if low is not None:
        return low
    s = ctx.stable.get((w.start, w.end))
    if s is None:
        return _Seen(Outcome.INCONCLUSIVE, w, detail="no stable stats for the same window")
    if s.requests < ctx.gates.min_requests:
        detail = f"stable {s.requests:,} requests < min_requests {ctx.gates.min_requests:,}"
        return _Seen(Outcome.INCONCLUSIVE, w, s, detail=detail, enough=False)
    lo, hi = difference_interval(w.errors, w.requests, s.errors, s.requests, ctx.z)
    if lo > rule.threshold:
        return _Seen(Outcome.FAIL, w, s)
    if hi <= rule.threshold:
        return _Seen(Outcome.PASS, w, s)
    return _Seen(Outcome.INCONCLUSIVE, w, s, detail=_straddles(ctx, lo, hi, rule))


def _straddles(ctx: _Context, lo: float, hi: float, rule: _Rule) -> str:
    return f"{ctx.level} interval {_pct(lo)}..{_pct(hi)} straddles {rule.limit(rule.threshold)}"


# --- from windows to a gate result ----------------------------------------------------------
def _fail_fast(ctx: _Context, rule: _Rule, partial: Sequence[WindowStats]) -> GateResult | None:
    """A FAIL from a partial window whose interval lies wholly beyond the limit, else None."""
    if rule.measure is _latency:
        return None  # a p95 has no interval: one partial span is no blatant evidence
    for w in partial:
        seen = rule.measure(ctx, rule, w)
        if seen.outcome is Outcome.FAIL:
            value, text = rule.pool([seen])
            return _result(
                rule,
                Outcome.FAIL,
                value,
                [seen],
                f"{rule.name} {text} {rule.worse} {rule.limit(rule.threshold)}"
                f" in the {format_duration(w.end - w.start)} since the last judged window"
                f" ({_requests([seen])}; {ctx.level} interval wholly beyond the limit)",
            )
    return None


def _gate(ctx: _Context, rule: _Rule, windows: list[WindowStats]) -> GateResult:
    needed = ctx.gates.consecutive_failures
    if not windows:
        return GateResult(
            gate=rule.name,
            outcome=Outcome.INCONCLUSIVE,
            value=None,
            threshold=rule.threshold,
            samples=0,
            reason=f"{rule.name} no data (no {format_duration(rule.window)} window measured)",
            target=rule.target,
        )
    seen = [rule.measure(ctx, rule, w) for w in windows]
    # The failing streak: FAIL windows back from the newest, skipping INCONCLUSIVE ones,
    # ended by the first PASS.
    streak: list[_Seen] = []
    for s in reversed(seen):
        if s.outcome is Outcome.PASS:
            break
        if s.outcome is Outcome.FAIL:
            streak.append(s)
    newest = seen[-1]
    count = len(streak) if ctx.streaks is None else ctx.streaks.get(rule.name, 0)

    if count >= needed and count > 0:
        shown = streak or [newest]
        value, text = rule.pool(shown)
        return _result(
            rule,
            Outcome.FAIL,
            value,
            shown,
            f"{rule.name} {text} {rule.worse} {rule.limit(rule.threshold)}"
            f" ({_plural(count, 'window')}, {_requests(shown)})",
        )
    if newest.outcome is Outcome.PASS:
        value, text = rule.pool([newest])
        return _result(
            rule,
            Outcome.PASS,
            value,
            [newest],
            f"{rule.name} {text} {rule.better} {rule.limit(rule.threshold)}"
            f" ({_requests([newest])})",
        )
    if streak:
        value, text = rule.pool(streak)
        return _result(
            rule,
            Outcome.INCONCLUSIVE,
            value,
            streak,
            f"{rule.name} {text} {rule.worse} {rule.limit(rule.threshold)}"
            f" in {count or len(streak)} of {needed} windows needed to fail"
            f" ({_requests(streak)})",
        )
    value, text = rule.pool([newest])
    return _result(
        rule,
        Outcome.INCONCLUSIVE,
        value,
        [newest],
        f"{rule.name} {text} inconclusive: {newest.detail}"
        + (f" ({_requests([newest])})" if newest.enough else ""),
    )


def _result(
    rule: _Rule, outcome: Outcome, value: float | None, seen: list[_Seen], reason: str
) -> GateResult:
    # A target is judged on the reported value, and only when the windows had enough traffic
    # for that value to mean something.
    target_met: bool | None = None
    if rule.target is not None and value is not None and all(s.enough for s in seen):
        target_met = value >= rule.target if rule.worse == "<" else value <= rule.target
        # A rollback reason names the breach only; the target is beside the point there.
        if outcome is not Outcome.FAIL:
            reason += f"; target {rule.limit(rule.target)} {'met' if target_met else 'missed'}"
    return GateResult(
        gate=rule.name,
        outcome=outcome,
        value=value,
        threshold=rule.threshold,
        samples=sum(s.canary.requests for s in seen),
        reason=reason,
        target=rule.target,
        target_met=target_met,
        windows=len(seen),
    )


def _pool_errors(seen: list[_Seen]) -> tuple[float | None, str]:
    rate = _pooled_rate(seen, lambda w: w.errors)
    return rate, _pct(rate) if rate is not None else "no data"


def _pool_successes(seen: list[_Seen]) -> tuple[float | None, str]:
    rate = _pooled_rate(seen, lambda w: w.successes)
    return rate, _pct(rate) if rate is not None else "no data"


def _pool_p95(seen: list[_Seen]) -> tuple[float | None, str]:
    # The smallest p95 of a failing streak is the one claim true of every window in it.
    p95s = [s.canary.p95 for s in seen if s.canary.p95 is not None]
    return (min(p95s), _secs(min(p95s))) if p95s else (None, "no data")


def _pool_delta(seen: list[_Seen]) -> tuple[float | None, str]:
    canary = _pooled_rate(seen, lambda w: w.errors)
    pairs = [s.stable for s in seen if s.stable is not None]
    stable = _rate(sum(w.errors for w in pairs), sum(w.requests for w in pairs))
    if canary is None:
        return None, "no data"
    if stable is None:
        return None, f"canary error_rate {_pct(canary)} (stable unknown)"
    delta = canary - stable
    return delta, f"error_rate {delta * 100:+.1f}% over stable ({_pct(canary)} vs {_pct(stable)})"


def _pooled_rate(seen: list[_Seen], count: Callable[[WindowStats], int]) -> float | None:
    return _rate(sum(count(s.canary) for s in seen), sum(s.canary.requests for s in seen))


def _rate(events: int, requests: int) -> float | None:
    return events / requests if requests else None


# --- probes ---------------------------------------------------------------------------------
def _probe_gates(
    runs: Sequence[ProbeRun],
    expected: Collection[str],
    needed: int,
    streaks: Mapping[str, int] | None = None,
) -> list[GateResult]:
    by_name: dict[str, list[ProbeRun]] = {name: [] for name in expected}
    for run in runs:
        by_name.setdefault(run.name, []).append(run)
    out = []
    for name, history in by_name.items():
        gate = f"probe:{name}"
        if not history:
            out.append(
                GateResult(gate, Outcome.INCONCLUSIVE, None, None, 0, f"probe {name} not run")
            )
            continue
        if streaks is not None:
            streak = 0 if history[-1].ok else streaks.get(gate, 0)
        else:
            streak = next((i for i, r in enumerate(reversed(history)) if r.ok), len(history))
        failing = f"probe {name} failing" + (
            f": {history[-1].reason}" if history[-1].reason else ""
        )
        if streak >= needed:
            outcome = Outcome.FAIL
            reason = f"{failing} ({_plural(streak, 'run')} in a row)"
        elif streak:
            outcome = Outcome.INCONCLUSIVE
            reason = f"{failing} ({streak} of {needed} runs needed to fail)"
        else:
            outcome = Outcome.PASS
            reason = f"probe {name} ok"
        runs_judged = max(streak, 1)
        out.append(GateResult(gate, outcome, None, None, runs_judged, reason, windows=runs_judged))
    return out


# --- the verdict ----------------------------------------------------------------------------
_NOTHING = GateResult(
    gate="gates",
    outcome=Outcome.INCONCLUSIVE,
    value=None,
    threshold=None,
    samples=0,
    reason="no gates or probes configured: nothing to judge",
)


def _overall(results: Sequence[GateResult]) -> Outcome:
    if any(r.outcome is Outcome.FAIL for r in results):
        return Outcome.FAIL
    if results and all(r.outcome is Outcome.PASS for r in results):
        return Outcome.PASS
    return Outcome.INCONCLUSIVE


# --- streak counters and the promotion rule -------------------------------------------------
def count_streaks(
    previous: Mapping[str, Streak],
    canary: Sequence[WindowStats],
    gates: Gates,
    *,
    stable: Sequence[WindowStats] = (),
    probes: Sequence[ProbeRecord] = (),
    confidence: float = 0.95,
) -> dict[str, Streak]:
    """Advance each gate's failing-streak counter over the windows and probe runs it has not
    counted yet (those ending after its `through`), oldest first.

    A FAIL window adds one, a PASS resets to zero, an INCONCLUSIVE one changes nothing (the
    same rule as `judge`). Pass the windows and runs of the current stage only: a new stage
    starts from `previous={}`. Only whole windows count (`span == "window"`); the caller
    leaves provisional ones out of what it stores (see the module doc).
    """
    z = z_score(confidence)
    ctx = _Context(
        gates=gates,
        z=z,
        level=f"{confidence * 100:g}%",
        stable={(s.start, s.end): s for s in stable},
    )
    out: dict[str, Streak] = {}
    for rule in _rules(gates):
        k = previous.get(rule.name, Streak())
        whole = (w for w in canary if w.window == rule.window and w.span == "window")
        for w in sorted(whole, key=lambda w: w.end):
            if k.through is not None and w.end <= k.through:
                continue
            outcome = rule.measure(ctx, rule, w).outcome
            k = Streak(
                _next_count(k.failures, outcome),
                w.end,
                k.inconclusive + 1 if outcome is Outcome.INCONCLUSIVE else 0,
            )
        out[rule.name] = k
    for run in sorted(probes, key=lambda p: p.at):
        gate = f"probe:{run.name}"
        k = out.get(gate, previous.get(gate, Streak()))
        if k.through is not None and run.at <= k.through:
            continue
        out[gate] = Streak(0 if run.ok else k.failures + 1, run.at)
    return {g: k for g, k in out.items() if k.through is not None}


def _next_count(failures: int, outcome: Outcome) -> int:
    if outcome is Outcome.PASS:
        return 0
    return failures + 1 if outcome is Outcome.FAIL else failures


def held_reason(gates: Gates, streaks: Mapping[str, Streak]) -> str | None:
    """`HELD: ...` when a gate has had `inconclusive_limit` INCONCLUSIVE windows in a row
    (too little traffic to judge): the canary is not promoted, and the operator is told."""
    limit = gates.inconclusive_limit
    if limit is None:
        return None
    stuck = sorted(g for g, k in streaks.items() if k.inconclusive >= limit)
    if not stuck:
        return None
    worst = max(streaks[g].inconclusive for g in stuck)
    return (
        f"HELD: {', '.join(stuck)} inconclusive in {_plural(worst, 'window')} in a row"
        f" (inconclusive_limit {limit}); not promoted until a window is judged"
        f" (min_requests {gates.min_requests:,})"
    )


def promotion_blockers(verdict: Verdict | None) -> list[str]:
    """Why the canary is not ready to promote; empty when it is.

    The one promotion-readiness rule: the verdict PASSes (every gate and probe passes) and
    no gate misses its `target`. How long it must have held is the `bake` (see plan.baked).
    """
    if verdict is None:
        return ["no verdict yet: the canary has not been judged"]
    word = "inconclusive" if verdict.outcome is Outcome.INCONCLUSIVE else "failing"
    out = [f"{word}: {r}" for r in verdict.reasons]
    if verdict.outcome is not Outcome.PASS and not out:
        out = [f"verdict {verdict.outcome.value}"]
    # A gate that did not pass is listed already, its target included.
    out += [
        f"target missed: {g.reason}"
        for g in verdict.gates
        if g.target_met is False and g.outcome is Outcome.PASS
    ]
    return out
