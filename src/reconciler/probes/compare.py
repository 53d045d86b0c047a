"""The side-by-side probe: the same request to canary and stable, summarised and judged.

The verdict and its value types live in the pure `reconciler.sidebyside`; they are
re-exported here for callers of the probe.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from reconciler.probes.checks import (
    _PLACEHOLDER,
    ProbeConfigError,
    ProbeResult,
    Urls,
    redact_url,
    resolve_headers,
)
from reconciler.probes.http import Prober
from reconciler.sidebyside import (
    CompareRule,
    Comparison,
    SideStats,
    judge,
)
from reconciler.spec import Check
from reconciler.stats import percentile

if TYPE_CHECKING:
    from reconciler.progress import Progress


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
        latencies=tuple(latencies),
        failures=tuple(reason for reason, _ in failures.most_common()),
    )


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
    judgement = judge(canary.sample, stable.sample, rule)
    m = _PLACEHOLDER.match(probe.url)
    shown = probe.url[m.end() :] if m else probe.url
    return Comparison(
        method=probe.method,
        path=shown or "/",
        canary=canary,
        stable=stable,
        outcome=judgement.outcome,
        reasons=judgement.reasons,
        rule=rule,
        needed=judgement.needed,
    )
