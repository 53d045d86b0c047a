"""How many Cloud Monitoring queries does a run make for a service some windows behind?

A run that writes nothing (between checkpoints) leaves the last judged window where the last
record put it, and the next run measures every whole window since (`gather.spans`). The
floor, measured in the same run on the same traffic: asking each span alone, one listing
per metric per window (what `gather.measure` did before). Against it, `gather.measure` as
shipped: one listing per metric for each run of consecutive whole windows
(`MetricsProvider.windows_stats`), plus the partial span up to the ingestion horizon.

Each row builds a fresh sandbox (the project's emulator in this process, with Google's
60 s samples and 180 s ingestion delay; a bare git remote and a clone), puts `ion-api` at a
95/5 canary with the example 5-minute gates (`reconcile apply`, recorded), then serves
traffic for N windows on the emulator clock without any run recording it, and measures once
both ways with the official Cloud Monitoring client. It prints the spans measured, the
listings and RPCs (pages included) each way, their ratio, and whether the windows agree.

Run: `python benchmarks/catchup_queries.py [--behind 2 12 36 48] [--page-size 0]`.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import time
from dataclasses import replace

from reconciler import clients
from reconciler.backends.cloudrun import CloudRunBackend
from reconciler.decide import CATCHUP
from reconciler.execute import Context
from reconciler.gather import SAMPLE_PERIOD, measure, ref_of, spans
from reconciler.gitops import GitOps
from reconciler.loader import load_spec
from reconciler.metrics import StatsQuery
from reconciler.metrics.cloud_monitoring import CloudMonitoringProvider
from reconciler.model import WindowStats
from reconciler.reconcile import apply_all
from reconciler.sandbox import example_rollout, sandbox
from reconciler.state import read_status

STABLE, CANARY = "ion-api-00041-abc", "ion-api-00042-xyz"
WINDOW = 300.0


def _key(w: WindowStats) -> tuple[object, ...]:
    return (w.revision, w.start, w.end, w.span, w.provisional, w.requests, w.errors, w.p95)


def row(behind: int, page_size: int) -> dict[str, object]:
    """One sandbox `behind` windows after its last record: both ways of measuring."""
    with sandbox() as sb:
        # No probes: only metrics are measured here.
        head, rest = example_rollout(sb.emu).split("probes:\n", 1)
        text = head + rest[rest.index("dependencies:") :]
        sb.commit_rollout(text, "ion-api canary")
        sb.emu.behave(CANARY, error_rate=0.02)

        def ctx(provider: CloudMonitoringProvider) -> Context:
            return Context(
                repo=sb.repo,
                backend=CloudRunBackend(),
                clock=sb.now,
                git=GitOps(sb.repo),
                metrics_for=lambda _config: provider,
            )

        with contextlib.redirect_stdout(io.StringIO()):
            assert apply_all(ctx(CloudMonitoringProvider())).exit_code == 0
        for i in range(behind):
            sb.emu.load("ion-api", 100 + i)
            sb.emu.load("ion-api", 30 + i, tag="canary")
            sb.emu.advance_clock(WINDOW)
        spec = load_spec(sb.rollout())
        ref = ref_of(spec)
        live = CloudRunBackend().get_service(ref)
        status = read_status(sb.repo, ref)
        now = sb.now()
        client = clients.metric_client()

        floor = CloudMonitoringProvider(client, page_size=page_size)
        wanted = spans(spec, status, live, now, floor.ingestion_lag)
        query = StatsQuery(ref, (CANARY, STABLE))
        t0 = time.perf_counter()
        expected = []
        for start, end, kind in wanted:
            got = floor.window_stats([query], end - start, end + floor.ingestion_lag)
            provisional = end > now - floor.ingestion_lag - SAMPLE_PERIOD
            expected += [
                replace(got[("ion-api", rev)], start=start, end=end, span=kind,
                        provisional=provisional)
                for rev in (CANARY, STABLE)
            ]  # fmt: skip
        floor_s = time.perf_counter() - t0

        shipped = CloudMonitoringProvider(client, page_size=page_size)
        t0 = time.perf_counter()
        windows, errors = measure(ctx(shipped), [(spec, live, status)], now)
        shipped_s = time.perf_counter() - t0
        measured = [w for rev in (CANARY, STABLE) for w in windows.get((ref.key, rev), [])]
        same = not errors and sorted(map(_key, measured)) == sorted(map(_key, expected))
        return {
            "behind": behind,
            "windows": sum(1 for *_, k in wanted if k == "window"),
            "gaps": sum(1 for *_, k in wanted if k == "gap"),
            "partial": sum(1 for *_, k in wanted if k == "partial"),
            "floor_listings": sum(floor.calls.values()),
            "floor_rpcs": floor.rpcs,
            "floor_s": floor_s,
            "listings": sum(shipped.calls.values()),
            "rpcs": shipped.rpcs,
            "shipped_s": shipped_s,
            "same": same,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--behind", type=int, nargs="+", default=[2, 12, 36, 48])
    parser.add_argument("--page-size", type=int, default=0, help="0: the API's default")
    args = parser.parse_args()
    print(f"catch-up queries: one service, 5-minute gates, CATCHUP = {CATCHUP} windows")
    print()
    print(
        "| windows behind | whole windows | gap | partial | listings, one per span (floor) "
        "| listings, one per run | ratio | RPCs floor / shipped | seconds floor / shipped "
        "| same windows |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    ok = True
    for behind in args.behind:
        r = row(behind, args.page_size)
        ok = ok and bool(r["same"])
        ratio = int(r["listings"]) / int(r["floor_listings"])  # type: ignore[call-overload]
        print(
            f"| {r['behind']} | {r['windows']} | {r['gaps']} | {r['partial']} "
            f"| {r['floor_listings']} | {r['listings']} | {ratio:.2f}x "
            f"| {r['floor_rpcs']} / {r['rpcs']} "
            f"| {r['floor_s']:.2f} / {r['shipped_s']:.2f} | {'yes' if r['same'] else 'NO'} |"
        )
    print()
    print(
        "target: a catch-up is one listing per metric for its whole windows (plus the partial "
        f"span), the same windows as one query each: {'met' if ok else 'NOT met'}"
    )
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
