"""`probe`, `probe --compare` and `bench` output, rendered from the probes' result values.

The results are read through structural types (the probes are an edge this pure module may
not import), and only the fields printed here are required of them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Protocol

from reconciler.model import Outcome
from reconciler.views.style import paint
from reconciler.views.units import seconds


class CheckResult(Protocol):
    """One dependency check or probe run."""

    @property
    def name(self) -> str: ...
    @property
    def ok(self) -> bool: ...
    @property
    def status(self) -> int | None: ...
    @property
    def latency(self) -> float: ...
    @property
    def reason(self) -> str: ...
    @property
    def url(self) -> str: ...


class Side(Protocol):
    """One side (canary or stable) of a comparison."""

    @property
    def label(self) -> str: ...
    @property
    def url(self) -> str: ...
    @property
    def requests(self) -> int: ...
    @property
    def successes(self) -> int: ...
    @property
    def success_rate(self) -> float: ...
    @property
    def status_counts(self) -> Mapping[str, int]: ...
    @property
    def p50(self) -> float | None: ...
    @property
    def p95(self) -> float | None: ...
    @property
    def failures(self) -> Sequence[str]: ...


class Rule(Protocol):
    def describe(self) -> str: ...


class Comparison(Protocol):
    """Canary against stable, with a verdict."""

    @property
    def canary(self) -> Side: ...
    @property
    def stable(self) -> Side: ...
    @property
    def outcome(self) -> Outcome: ...
    @property
    def reasons(self) -> Sequence[str]: ...
    @property
    def rule(self) -> Rule: ...


class Sample(Protocol):
    @property
    def ok(self) -> bool: ...
    @property
    def reason(self) -> str: ...


class Bench(Protocol):
    """The runs of one probe in a bench."""

    @property
    def samples(self) -> Sequence[Sample]: ...
    def summary(self) -> str: ...


class Judged(Protocol):
    """A verdict with its reasons (a bench judged against the kept baseline)."""

    @property
    def outcome(self) -> Outcome: ...
    @property
    def reasons(self) -> Sequence[str]: ...


def _verdict(ok: bool, color: bool) -> str:
    return paint("PASS", "good", color) if ok else paint("FAIL", "bad", color)


def results_table(title: str, results: Sequence[CheckResult], *, color: bool = False) -> list[str]:
    """A titled table of checks: verdict, name, HTTP status, latency, URL, and why it failed."""
    lines = [title]
    width = max((len(r.name) for r in results), default=0)
    for r in results:
        status = f"HTTP {r.status}" if r.status is not None else "no answer"
        lines.append(
            f"  {_verdict(r.ok, color)}  {r.name:<{width}}  {status:<9}  "
            f"{seconds(r.latency):>6}  {r.url}"
        )
        if not r.ok:
            lines.append(f"        {r.reason}")
    return lines


def checks_summary(results: Sequence[CheckResult]) -> str:
    """`3 passed, 1 failed`."""
    failed = sum(not r.ok for r in results)
    return f"{len(results) - failed} passed, {failed} failed"


def compare_table(
    service: str, what: str, requests: int, delay: float, result: Comparison, *, color: bool = False
) -> list[str]:
    """Canary and stable side by side (url, success, status codes, p50, p95), then the verdict."""

    def share(side: Side) -> str:
        return f"{side.successes}/{side.requests} ({side.success_rate:.0%})"

    def codes(counts: Mapping[str, int]) -> str:
        return " ".join(f"{code}x{n}" for code, n in counts.items())

    c, s = result.canary, result.stable
    rows = [
        ("url", c.url, s.url),
        ("success", share(c), share(s)),
        ("status", codes(c.status_counts), codes(s.status_counts)),
        ("p50", seconds(c.p50), seconds(s.p50)),
        ("p95", seconds(c.p95), seconds(s.p95)),
    ]
    left = max(len(r[1]) for r in rows)
    lines = [
        f"{service}: {what}, {requests} requests each, {seconds(delay)} apart",
        f"  {'':<8}  {'canary':<{left}}  stable",
        *(f"  {label:<8}  {a:<{left}}  {b}" for label, a, b in rows),
    ]
    for side in (c, s):
        lines += [f"  {side.label} failure: {why}" for why in side.failures]
    style = {Outcome.PASS: "good", Outcome.FAIL: "bad"}.get(result.outcome, "change")
    lines.append(f"verdict: {paint(result.outcome.value, style, color)}")
    lines += [f"  {why}" for why in result.reasons]
    lines.append(f"rule: {result.rule.describe()}")
    return lines


def bench_lines(results: Sequence[Bench]) -> list[str]:
    """A summary line per benched probe and each distinct failure reason under it."""
    lines = []
    for result in results:
        lines.append(f"  {result.summary()}")
        failed = [s.reason for s in result.samples if not s.ok]
        lines += [f"    failure: {why}" for why in dict.fromkeys(failed)]
    return lines


def baseline_lines(taken_at: datetime, judged: Iterable[tuple[str, Judged]]) -> list[str]:
    """Each benched probe's verdict against the previous baseline, with its reasons."""
    lines = [f"against the previous baseline ({taken_at:%Y-%m-%d %H:%M} UTC):"]
    for name, judgement in judged:
        lines.append(f"  {name}: {judgement.outcome.value}")
        lines += [f"    {why}" for why in judgement.reasons]
    return lines
