"""`reconcile probe` and `reconcile bench`: check a canary now, take the pre-deploy baseline."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import click

from reconciler.commands import App, echo_lines, parse_seconds, pass_app, rollout_for
from reconciler.errors import ReconcileError

if TYPE_CHECKING:
    from reconciler.probes import Urls
    from reconciler.spec import Check, RolloutSpec


def _live_urls(spec: RolloutSpec, needed: set[str], overrides: dict[str, str | None]) -> Urls:
    """The URLs the checks need: the overrides, and Cloud Run for whatever they leave out."""
    from reconciler.probes import Urls, discover_urls

    given = {kind: url for kind, url in overrides.items() if url}
    found = discover_urls(spec) if needed - given.keys() else Urls()
    return Urls(
        canary=given.get("canary", found.canary),
        stable=given.get("stable", found.stable),
        service=given.get("service", found.service),
    )


def _require(spec: RolloutSpec, urls: Urls, kinds: set[str]) -> None:
    """Fail in one line, with the flag that helps, when a needed URL is unknown."""
    known = {"canary": urls.canary, "stable": urls.stable, "service": urls.service}
    for kind in sorted(kinds):
        if known[kind]:
            continue
        if kind == "service":
            raise ReconcileError(f"{spec.service}: Cloud Run reports no service URL")
        raise ReconcileError(
            f"{spec.service}: no {kind} URL (no traffic target is tagged {kind!r}); "
            f"pass --{kind}-url"
        )


def _placeholders(checks: Sequence[Check]) -> set[str]:
    kinds = {"{canary_url}": "canary", "{stable_url}": "stable", "{service_url}": "service"}
    return {kind for c in checks for mark, kind in kinds.items() if c.url.startswith(mark)}


@click.command()
@click.argument("service")
@click.option("--compare", is_flag=True, help="Canary and stable side by side, with a verdict.")
@click.option(
    "--requests",
    "requests_",
    type=click.IntRange(1, 1000),
    default=10,
    show_default=True,
    help="With --compare: requests to each side.",
)
@click.option(
    "--delay",
    default="1s",
    show_default=True,
    metavar="DURATION",
    callback=parse_seconds,
    help="With --compare: pause between rounds (500ms, 1s, ...).",
)
@click.option(
    "--path",
    default="/api/health",
    show_default=True,
    help="With --compare: the path to GET on both sides.",
)
@click.option(
    "--probe",
    "probe_name",
    metavar="NAME",
    help="With --compare: send this probe of the rollout file instead of GET --path.",
)
@click.option("--canary-url", metavar="URL", help="Use this canary URL, not Cloud Run's tag URL.")
@click.option("--stable-url", metavar="URL", help="Use this stable URL, not Cloud Run's tag URL.")
@click.option(
    "--region", metavar="REGION", help="The rollout in REGION, when the service is in several."
)
@click.option("--project", metavar="PROJECT", help="The rollout in PROJECT, when it is in several.")
@pass_app
def probe(
    app: App,
    service: str,
    compare: bool,
    requests_: int,
    delay: float,
    path: str,
    probe_name: str | None,
    canary_url: str | None,
    stable_url: str | None,
    region: str | None,
    project: str | None,
) -> None:
    """Check a service's canary now: its `dependencies:` and `probes:`, or --compare.

    Without --compare, runs the rollout file's dependency checks and canary probes against
    the live canary (the URL Cloud Run reports for the tag `canary`); exits 1 when any fails.

    With --compare, sends the same request to canary and stable, one round every --delay,
    and prints success, status codes and latency p50/p95 per side. Verdict FAIL only when a
    test shows the canary worse than the stable beyond the margin at 95% confidence (success
    rate more than 2 points lower; answers slower than 1.2x and 20ms more); INCONCLUSIVE
    when too few requests to tell, with how many would be needed; PASS otherwise. Exits 1
    on FAIL only (0 on PASS and INCONCLUSIVE).

    A service in several regions or projects (a file with `waves:`, or a file per region)
    is probed in one: --region (and --project) picks it.

    \b
    Example:
      reconcile probe ion-api
      reconcile probe ion-api --compare --requests 10 --delay 1s
      reconcile probe ion-api --region europe-west1
    """
    from reconciler.probes import run_checks
    from reconciler.views.checks import checks_summary, results_table

    spec = rollout_for(app, service, region=region, project=project)
    overrides = {"canary": canary_url, "stable": stable_url}
    if compare:
        _compare(spec, overrides, requests_, delay, path, probe_name, app.color)
        return
    checks = [*spec.dependencies, *spec.probes]
    if not checks:
        raise ReconcileError(f"{service}: the rollout file has no probes or dependencies")
    needed = _placeholders(checks)
    urls = _live_urls(spec, needed, overrides)
    _require(spec, urls, needed)
    results = run_checks(checks, urls)
    deps, probes = results[: len(spec.dependencies)], results[len(spec.dependencies) :]
    if deps:
        title = "dependencies (must pass before traffic moves):"
        echo_lines(results_table(title, deps, color=app.color))
    if probes:
        where = f" against canary {urls.canary}" if urls.canary else ""
        echo_lines(results_table(f"probes{where}:", probes, color=app.color))
    click.echo(checks_summary(results))
    if not all(r.ok for r in results):
        raise click.exceptions.Exit(1)


def _compare(
    spec: RolloutSpec,
    overrides: dict[str, str | None],
    requests: int,
    delay: float,
    path: str,
    probe_name: str | None,
    color: bool,
) -> None:
    from reconciler.model import Outcome
    from reconciler.probes import compare
    from reconciler.progress import Progress
    from reconciler.views.checks import compare_table

    check = None
    if probe_name is not None:
        check = next((c for c in spec.probes if c.name == probe_name), None)
        if check is None:
            names = ", ".join(c.name for c in spec.probes) or "none"
            raise ReconcileError(f"{spec.service}: no probe named {probe_name!r} (probes: {names})")
    urls = _live_urls(spec, {"canary", "stable"}, overrides)
    _require(spec, urls, {"canary", "stable"})
    bases = {"canary": urls.canary or "", "stable": urls.stable or ""}
    with Progress("compare", requests) as progress:
        result = compare(
            bases["canary"],
            bases["stable"],
            requests=requests,
            delay=delay,
            path=path,
            check=check,
            progress=progress,
        )

    what = check.name if check is not None else f"{result.method} {result.path}"
    echo_lines(compare_table(spec.service, what, requests, delay, result, color=color))
    # INCONCLUSIVE is not evidence against the canary: only FAIL is an error exit.
    if result.outcome is Outcome.FAIL:
        raise click.exceptions.Exit(1)


@click.command()
@click.argument("service")
@click.option(
    "--iterations",
    type=click.IntRange(1, 1000),
    default=5,
    show_default=True,
    help="Requests per probe, one after the other.",
)
@click.option(
    "--probe",
    "probe_names",
    metavar="NAME",
    multiple=True,
    help="Bench only this probe of the rollout file (repeatable; default: all).",
)
@click.option(
    "--path",
    default="/api/health",
    show_default=True,
    help="GET this path when the rollout file has no probes.",
)
@click.option("--stable-url", metavar="URL", help="Bench this URL, not Cloud Run's stable tag URL.")
@click.option(
    "--region", metavar="REGION", help="The rollout in REGION, when the service is in several."
)
@click.option("--project", metavar="PROJECT", help="The rollout in PROJECT, when it is in several.")
@pass_app
def bench(
    app: App,
    service: str,
    iterations: int,
    probe_names: tuple[str, ...],
    path: str,
    stable_url: str | None,
    region: str | None,
    project: str | None,
) -> None:
    """Take the pre-deploy baseline: the service's probes, --iterations times each.

    Measures the stable revision (its `stable` tag URL, else the service URL): response time
    per iteration, p50/p95/mean, success rate and the `confidence` field where the answer
    has one. Saves state/PROJECT/REGION/SERVICE/baselines/<UTC time>.json and latest.json,
    which later stages are compared against. A service in several regions or projects is
    benched in one: --region (and --project) picks it.

    \b
    Example:
      reconcile bench ion-api --iterations 5
      reconcile bench ion-api --iterations 5 --region europe-west1
    """
    from reconciler.model import ServiceRef
    from reconciler.probes import (
        Baseline,
        Urls,
        bench,
        judge_to_baseline,
        load_baseline,
        save_baseline,
    )
    from reconciler.progress import Progress
    from reconciler.runtime import utc_now
    from reconciler.state import state_dir
    from reconciler.views.checks import baseline_lines, bench_lines

    spec = rollout_for(app, service, region=region, project=project)
    # Baselines sit in the rollout's state folder: state/<project>/<region>/<service>/.
    folder = state_dir(app.repo, ServiceRef(spec.project, spec.region, spec.service)).parent
    checks = list(spec.probes)
    if probe_names:
        unknown = sorted(set(probe_names) - {c.name for c in checks})
        if unknown:
            names = ", ".join(c.name for c in checks) or "none"
            raise ReconcileError(f"{service}: no probe named {unknown[0]!r} (probes: {names})")
        checks = [c for c in checks if c.name in probe_names]
    found = _live_urls(spec, {"stable"}, {"stable": stable_url})
    target, base = ("stable", found.stable) if found.stable else ("service", found.service)
    if not base:
        raise ReconcileError(f"{service}: Cloud Run reports no URL; pass --stable-url")
    urls = Urls(canary=base, stable=base, service=base)
    revision = spec.revisions.stable if target == "stable" else None
    click.echo(f"{service}: bench of {target} {base}, {iterations} iterations")
    taken_at = utc_now()
    results = []
    with Progress("bench", iterations * max(len(checks), 1)) as progress:
        if not checks:
            url = base.rstrip("/") + "/" + path.lstrip("/")
            results.append(bench(url, iterations=iterations, name="health", progress=progress))
        for check in checks:
            results.append(bench(check, iterations=iterations, urls=urls, progress=progress))
    echo_lines(bench_lines(results))
    taken = Baseline(service, taken_at, target, revision, tuple(results))
    try:
        previous = load_baseline(folder, service)
    except ReconcileError as exc:  # an unreadable old baseline must not block a new one
        click.echo(f"previous baseline not compared: {exc}")
        previous = None
    if previous is not None:
        echo_lines(baseline_lines(previous.taken_at, judge_to_baseline(taken, previous)))
    saved = save_baseline(folder, taken)
    click.echo(f"baseline saved: {saved}")


# --- plan / apply / status / rollback / promote / watch ---------------------------------------
