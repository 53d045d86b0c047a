"""The side-by-side probe: the same request to canary and stable, summarised and judged."""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from reconciler.model import Outcome
from reconciler.probes.checks import (
    _PLACEHOLDER,
    ProbeConfigError,
    ProbeResult,
    Urls,
    format_seconds,
    percentile,
    redact_url,
    resolve_headers,
)
from reconciler.probes.http import Prober
from reconciler.spec import Check

if TYPE_CHECKING:
    from reconciler.progress import Progress


@dataclass(frozen=True)
class SideStats:
    """One side (canary or stable) of a side-by-side probe."""

    label: str
    url: str
    requests: int
    successes: int
    status_counts: Mapping[str, int]
    """`"200"` -> 9, `"no response"` -> 1."""
    p50: float | None
    p95: float | None
    failures: tuple[str, ...] = ()
    """Distinct failure reasons, most frequent first."""

    @property
    def success_rate(self) -> float:
        """Share of requests that passed (0.0 without requests)."""
        return self.successes / self.requests if self.requests else 0.0


@dataclass(frozen=True)
class CompareRule:
    """When the canary is worse than the stable.

    FAIL when the canary's success rate is more than `success_margin` below the stable's,
    or when the canary's p95 is above `latency_ratio` times the stable's p95 *and* at least
    `latency_slack` seconds slower (so 8 ms against 5 ms is noise, not a regression).
    INCONCLUSIVE when neither side had a single success. PASS otherwise.
    """

    success_margin: float = 0.10
    latency_ratio: float = 1.5
    latency_slack: float = 0.1

    def describe(self) -> str:
        """The rule in one sentence."""
        return (
            f"FAIL when the canary's success rate is more than {self.success_margin:.0%} below "
            f"the stable's, or its p95 is over {self.latency_ratio:g}x the stable's and "
            f"{format_seconds(self.latency_slack)} slower"
        )


@dataclass(frozen=True)
class Comparison:
    """The side-by-side probe of canary and stable, with its verdict."""

    method: str
    path: str
    canary: SideStats
    stable: SideStats
    outcome: Outcome
    reasons: tuple[str, ...]
    rule: CompareRule


def side_stats(label: str, url: str, results: Sequence[ProbeResult]) -> SideStats:
    """Summarise one side's results (pure). Latency percentiles count answered requests."""
    counts: Counter[str] = Counter(
        str(r.status) if r.status is not None else "no response" for r in results
    )
    latencies = [r.latency for r in results if r.answered]
    failures = Counter(r.why for r in results if not r.ok)
    return SideStats(
        label=label,
        url=redact_url(url),
        requests=len(results),
        successes=sum(r.ok for r in results),
        status_counts=dict(sorted(counts.items())),
        p50=percentile(latencies, 50),
        p95=percentile(latencies, 95),
        failures=tuple(reason for reason, _ in failures.most_common()),
    )


def compare_verdict(
    canary: SideStats, stable: SideStats, rule: CompareRule = CompareRule()
) -> tuple[Outcome, tuple[str, ...]]:
    """The verdict of a side-by-side probe under `rule` (pure); reasons explain a non-PASS."""
    if canary.successes == 0 and stable.successes == 0:
        return Outcome.INCONCLUSIVE, ("neither canary nor stable answered successfully",)
    reasons: list[str] = []
    if canary.success_rate < stable.success_rate - rule.success_margin - 1e-9:
        reasons.append(
            f"success {canary.success_rate:.0%} on canary vs {stable.success_rate:.0%} on "
            f"stable (more than {rule.success_margin:.0%} lower)"
        )
    if (
        canary.p95 is not None
        and stable.p95 is not None
        and canary.p95 > stable.p95 * rule.latency_ratio
        and canary.p95 - stable.p95 >= rule.latency_slack
    ):
        reasons.append(
            f"p95 {format_seconds(canary.p95)} on canary vs {format_seconds(stable.p95)} on "
            f"stable (over {rule.latency_ratio:g}x)"
        )
    return (Outcome.FAIL if reasons else Outcome.PASS), tuple(reasons)


def _side_check(check: Check | None, path: str) -> Check:
    # The side-by-side probe sends the same request to both sides: a rollout-file check
    # rebased on each side's URL, or a plain GET of `path`.
    if check is None:
        return Check(
            name="compare", url="{service_url}" + (path if path.startswith("/") else "/" + path)
        )
    if not _PLACEHOLDER.match(check.url):
        raise ProbeConfigError(
            f"{check.name}: url {check.url} has no {{canary_url}} / {{stable_url}} placeholder, "
            "so it cannot be sent to both canary and stable"
        )
    return check


def compare(
    canary_url: str,
    stable_url: str,
    *,
    requests: int = 10,
    delay: float = 1.0,
    path: str = "/api/health",
    check: Check | None = None,
    rule: CompareRule = CompareRule(),
    environ: Mapping[str, str] | None = None,
    progress: Progress | None = None,
    sleep: Callable[[float], None] = time.sleep,
    prober: Prober | None = None,
) -> Comparison:
    """Send the same request `requests` times to canary and stable, `delay` seconds apart.

    Each round hits the canary then the stable, so both sides see the same moments. With
    `check`, success means passing that check; without, a 2xx answer to GET `path`.
    """
    if requests < 1:
        raise ValueError("requests must be at least 1")
    probe = _side_check(check, path)
    sides = {"canary": canary_url, "stable": stable_url}
    env = environ if environ is not None else os.environ
    resolve_headers(probe, env)
    results: dict[str, list[ProbeResult]] = {"canary": [], "stable": []}
    own = prober is None
    engine = prober if prober is not None else Prober(environ=environ)
    try:
        for i in range(requests):
            if i and delay > 0:
                sleep(delay)
            for label, base in sides.items():
                urls = Urls(canary=base, stable=base, service=base)
                results[label].append(engine.run(probe, urls))
            if progress is not None:
                progress.update(
                    " ".join(
                        f"{label} {sum(r.ok for r in rs)}/{len(rs)} ok"
                        for label, rs in results.items()
                    )
                )
    finally:
        if own:
            engine.close()
    canary = side_stats("canary", canary_url, results["canary"])
    stable = side_stats("stable", stable_url, results["stable"])
    outcome, reasons = compare_verdict(canary, stable, rule)
    m = _PLACEHOLDER.match(probe.url)
    shown = probe.url[m.end() :] if m else probe.url
    return Comparison(
        method=probe.method,
        path=shown or "/",
        canary=canary,
        stable=stable,
        outcome=outcome,
        reasons=reasons,
        rule=rule,
    )
