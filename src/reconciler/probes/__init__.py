"""HTTP probes: dependency health checks, canary probes, canary-vs-stable comparison, bench.

Four modules: `checks` judges an answer (pure), `http` sends checks over one bounded client,
`compare` runs and judges the side-by-side probe, `bench` measures a check repeatedly and
compares it with a kept baseline. The public names are re-exported here.
"""

from reconciler.probes.bench import (
    Baseline,
    BaselineRule,
    BenchResult,
    BenchSample,
    bench,
    compare_to_baseline,
    load_baseline,
    save_baseline,
)
from reconciler.probes.checks import (
    MAX_BODY_BYTES,
    MIN_REDACTED_SECRET,
    MISSING,
    REDACTED,
    USER_AGENT,
    Exchange,
    ProbeConfigError,
    ProbeResult,
    Urls,
    evaluate,
    lookup,
    needs_json,
    parse_json,
    redact_exchange,
    redact_url,
    resolve_headers,
    resolve_url,
    result_of,
    urls_of,
)
from reconciler.probes.compare import compare, side_stats
from reconciler.probes.http import (
    Prober,
    all_ok,
    discover_urls,
    run_checks,
    run_dependencies,
    run_probes,
)
from reconciler.sidebyside import (
    CompareRule,
    Comparison,
    SideStats,
    compare_verdict,
    format_seconds,
)
from reconciler.stats import percentile

__all__ = [
    "MAX_BODY_BYTES",
    "MIN_REDACTED_SECRET",
    "MISSING",
    "REDACTED",
    "USER_AGENT",
    "Baseline",
    "BaselineRule",
    "BenchResult",
    "BenchSample",
    "CompareRule",
    "Comparison",
    "Exchange",
    "ProbeConfigError",
    "ProbeResult",
    "Prober",
    "SideStats",
    "Urls",
    "all_ok",
    "bench",
    "compare",
    "compare_to_baseline",
    "compare_verdict",
    "discover_urls",
    "evaluate",
    "format_seconds",
    "load_baseline",
    "lookup",
    "needs_json",
    "parse_json",
    "percentile",
    "redact_exchange",
    "redact_url",
    "resolve_headers",
    "resolve_url",
    "result_of",
    "run_checks",
    "run_dependencies",
    "run_probes",
    "save_baseline",
    "side_stats",
    "urls_of",
]
