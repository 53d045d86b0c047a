"""Command line: parse, call, render, exit code. Heavy imports live inside commands."""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import click

from reconciler import __version__
from reconciler.errors import ReconcileError

if TYPE_CHECKING:
    from datetime import timedelta

    from reconciler.probes import ProbeResult, SideStats, Urls
    from reconciler.spec import Check, RolloutSpec


class App:
    """What every command shares: the git working tree holding rollout/ and state/."""

    def __init__(self, repo: Path) -> None:
        self.repo = repo

    @property
    def rollout_dir(self) -> Path:
        return self.repo / "rollout"

    @property
    def state_dir(self) -> Path:
        return self.repo / "state"


pass_app = click.make_pass_decorator(App)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="reconcile")
@click.option(
    "--repo",
    type=click.Path(file_okay=False, path_type=Path),
    default=".",
    show_default=True,
    help="Git working tree holding rollout/ and state/.",
)
@click.pass_context
def cli(ctx: click.Context, repo: Path) -> None:
    """Declarative canary rollouts for Google Cloud Run, driven from git.

    Desired traffic stages live in rollout/<service>.yaml; `plan` shows what would change on
    live Cloud Run traffic, `apply` makes the change, gates it on metrics and probes, and
    commits what it observed to state/.

    \b
    Start here:
      reconcile demo                the whole story on the embedded emulator
      reconcile validate            check every rollout file
      reconcile plan                what would change, like `terraform plan`
      reconcile apply               make it so: gates, rollback, commit to git
    \b
    Exit codes: 0 ok or no changes, 1 error or blocked, 2 changes pending
    (plan --detailed-exitcode), 4 apply rolled a canary back.
    Without CLOUD_RUN_EMULATOR_HOST, Application Default Credentials are used.
    """
    ctx.obj = App(repo)


@cli.command()
@click.argument("paths", nargs=-1, metavar="[PATH]...", type=click.Path(path_type=Path))
@click.option(
    "--env",
    "check_env",
    is_flag=True,
    help="Also report every environment variable the files read that is not set here.",
)
@pass_app
def validate(app: App, paths: tuple[Path, ...], check_env: bool) -> None:
    """Check rollout files strictly (default: every rollout/*.yaml).

    PATH may be a file or a directory of rollout files. Each invalid file prints one line
    `path:line: message` on stderr, then a count; exit 1 if any file is invalid, else 0.
    Units are required (5%, 20s, 5m); unknown or duplicate keys, YAML 1.1 surprises
    (no, on, 010, 1:30) and a file name that differs from its service are errors.
    With --env, every `{env: NAME}` a probe or dependency reads that the current
    environment lacks is one more `path:line: ...` line (run it where apply runs).

    \b
    Examples:
      reconcile validate
      reconcile validate --env
      reconcile validate rollout/ion-api.yaml
      reconcile --repo ../infra validate
    """
    from reconciler.loader import SpecError, find_rollout_files, load_spec

    files: list[Path] = []
    failed = 0
    for path in paths or (app.rollout_dir,):
        if path.is_dir():
            found = find_rollout_files(path)
            if not found:
                raise ReconcileError(f"{path}: no rollout files (*.yaml) found")
            files += found
        elif path.exists() or paths:
            files.append(path)
        else:
            raise ReconcileError(f"{path}: no such directory; run in the repository or use --repo")
    from reconciler.decide import env_needs

    unset = 0
    for path in files:
        try:
            spec = load_spec(path)
        except SpecError as exc:
            failed += 1
            click.echo(str(exc), err=True)
            continue
        missing = [n for n in env_needs(spec) if not os.environ.get(n[2])] if check_env else []
        for check, header, var in missing:
            line = _line_of(path, rf"\benv\s*:\s*[\"']?{re.escape(var)}\b")
            click.echo(
                f"{path}:{line}: {check}: header {header} reads environment variable {var}, "
                "which is not set",
                err=True,
            )
        unset += len(missing)
        if not missing:
            click.echo(f"{path}: ok ({spec.service}, canary {spec.canary_percent}%)")
    if failed:
        raise ReconcileError(f"{failed} of {len(files)} rollout files invalid")
    if unset:
        raise ReconcileError(f"{unset} environment variables the rollout files read are not set")


def _line_of(path: Path, pattern: str) -> int:
    """The first line of `path` matching `pattern` (1 when none does)."""
    text = path.read_text(encoding="utf-8", errors="replace")
    for n, line in enumerate(text.splitlines(), 1):
        if re.search(pattern, line):
            return n
    return 1


@cli.command("schema")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the schema to this file instead of stdout.",
)
def schema_command(out: Path | None) -> None:
    """Print the JSON Schema of the rollout file (for editors and other tools).

    Rules that span several keys (stages increasing, canary_percent one of the stages)
    are beyond JSON Schema: `reconcile validate` checks them. See docs/rollout-file.md,
    "Editor support", to have yaml-language-server check rollout files as you type.

    \b
    Examples:
      reconcile schema > rollout.schema.json
      reconcile schema --out schema/rollout.schema.json
    """
    from reconciler.spec import schema_text

    text = schema_text()
    if out is None:
        click.echo(text, nl=False)
        return
    try:
        out.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise ReconcileError(f"{out}: cannot write: {exc.strerror or exc}") from None
    click.echo(f"wrote {out}", err=True)


def _rollout_for(app: App, service: str) -> RolloutSpec:
    import re

    from reconciler.loader import load_spec
    from reconciler.spec import SERVICE_RE

    # Checked before it becomes a path: `../x` or `/tmp/x` would read a rollout file from
    # outside rollout/ (and `bench` would write its baseline outside state/).
    if not re.fullmatch(SERVICE_RE, service):
        raise ReconcileError(f"{service!r} is not a Cloud Run service id")
    path = app.rollout_dir / f"{service}.yaml"
    if not path.is_file():
        raise ReconcileError(f"{path}: no rollout file for service {service!r}")
    return load_spec(path)


def _seconds(ctx: click.Context, param: click.Parameter, value: str) -> float:
    from reconciler.spec import parse_duration

    try:
        return parse_duration(value).total_seconds()
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


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


def _show_results(title: str, results: Sequence[ProbeResult]) -> None:
    from reconciler.probes import format_seconds

    click.echo(title)
    width = max(len(r.name) for r in results)
    for r in results:
        status = f"HTTP {r.status}" if r.status is not None else "no answer"
        click.echo(
            f"  {'PASS' if r.ok else 'FAIL'}  {r.name:<{width}}  {status:<9}  "
            f"{format_seconds(r.latency):>6}  {r.url}"
        )
        if not r.ok:
            click.echo(f"        {r.reason}")


@cli.command()
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
    callback=_seconds,
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

    \b
    Example:
      reconcile probe ion-api
      reconcile probe ion-api --compare --requests 10 --delay 1s
    """
    from reconciler.probes import run_checks

    spec = _rollout_for(app, service)
    overrides = {"canary": canary_url, "stable": stable_url}
    if compare:
        _compare(spec, overrides, requests_, delay, path, probe_name)
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
        _show_results("dependencies (must pass before traffic moves):", deps)
    if probes:
        where = f" against canary {urls.canary}" if urls.canary else ""
        _show_results(f"probes{where}:", probes)
    failed = sum(not r.ok for r in results)
    click.echo(f"{len(results) - failed} passed, {failed} failed")
    if failed:
        raise click.exceptions.Exit(1)


def _compare(
    spec: RolloutSpec,
    overrides: dict[str, str | None],
    requests: int,
    delay: float,
    path: str,
    probe_name: str | None,
) -> None:
    from reconciler.model import Outcome
    from reconciler.probes import compare, format_seconds
    from reconciler.progress import Progress

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

    def cell(value: float | None) -> str:
        return format_seconds(value) if value is not None else "-"

    def share(side: SideStats) -> str:
        return f"{side.successes}/{side.requests} ({side.success_rate:.0%})"

    def codes(counts: Mapping[str, int]) -> str:
        return " ".join(f"{code}x{n}" for code, n in counts.items())

    rows = [
        ("url", result.canary.url, result.stable.url),
        ("success", share(result.canary), share(result.stable)),
        ("status", codes(result.canary.status_counts), codes(result.stable.status_counts)),
        ("p50", cell(result.canary.p50), cell(result.stable.p50)),
        ("p95", cell(result.canary.p95), cell(result.stable.p95)),
    ]
    what = check.name if check is not None else f"{result.method} {result.path}"
    click.echo(f"{spec.service}: {what}, {requests} requests each, {format_seconds(delay)} apart")
    left = max(len(r[1]) for r in rows)
    click.echo(f"  {'':<8}  {'canary':<{left}}  stable")
    for label, a, b in rows:
        click.echo(f"  {label:<8}  {a:<{left}}  {b}")
    for side in (result.canary, result.stable):
        for why in side.failures:
            click.echo(f"  {side.label} failure: {why}")
    click.echo(f"verdict: {result.outcome.value}")
    for why in result.reasons:
        click.echo(f"  {why}")
    click.echo(f"rule: {result.rule.describe()}")
    # INCONCLUSIVE is not evidence against the canary: only FAIL is an error exit.
    if result.outcome is Outcome.FAIL:
        raise click.exceptions.Exit(1)


@cli.command()
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
@pass_app
def bench(
    app: App,
    service: str,
    iterations: int,
    probe_names: tuple[str, ...],
    path: str,
    stable_url: str | None,
) -> None:
    """Take the pre-deploy baseline: the service's probes, --iterations times each.

    Measures the stable revision (its `stable` tag URL, else the service URL): response time
    per iteration, p50/p95/mean, success rate and the `confidence` field where the answer
    has one. Saves state/SERVICE/baselines/<UTC time>.json and latest.json, which later
    stages are compared against.

    \b
    Example:
      reconcile bench ion-api --iterations 5
    """
    from datetime import UTC, datetime

    from reconciler.probes import (
        Baseline,
        Urls,
        bench,
        judge_to_baseline,
        load_baseline,
        save_baseline,
    )
    from reconciler.progress import Progress

    spec = _rollout_for(app, service)
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
    taken_at = datetime.now(UTC)
    results = []
    with Progress("bench", iterations * max(len(checks), 1)) as progress:
        if not checks:
            url = base.rstrip("/") + "/" + path.lstrip("/")
            results.append(bench(url, iterations=iterations, name="health", progress=progress))
        for check in checks:
            results.append(bench(check, iterations=iterations, urls=urls, progress=progress))
    for result in results:
        click.echo(f"  {result.summary()}")
        failed = [s.reason for s in result.samples if not s.ok]
        for why in dict.fromkeys(failed):
            click.echo(f"    failure: {why}")
    taken = Baseline(service, taken_at, target, revision, tuple(results))
    try:
        previous = load_baseline(app.state_dir, service)
    except ReconcileError as exc:  # an unreadable old baseline must not block a new one
        click.echo(f"previous baseline not compared: {exc}")
        previous = None
    if previous is not None:
        click.echo(f"against the previous baseline ({previous.taken_at:%Y-%m-%d %H:%M} UTC):")
        for name, judgement in judge_to_baseline(taken, previous):
            click.echo(f"  {name}: {judgement.outcome.value}")
            for why in judgement.reasons:
                click.echo(f"    {why}")
    saved = save_baseline(app.state_dir, taken)
    click.echo(f"baseline saved: {saved}")


# --- plan / apply / status / rollback / promote / watch ---------------------------------------
service_option = click.option(
    "--service",
    "-s",
    "services",
    multiple=True,
    metavar="NAME|GLOB",
    help="Only these services (a name or a glob like 'payments-*'; may repeat). Default: all.",
)


def _echo_err(message: str) -> None:
    click.echo(message, err=True)


@cli.command()
@service_option
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "markdown", "json"]),
    default="text",
    show_default=True,
    help="text for terminals, markdown for a PR comment, json for machines (and apply PLANFILE).",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the plan (in --format) to FILE; a json plan can be applied later.",
)
@click.option(
    "--detailed-exitcode",
    is_flag=True,
    help="Exit 2 when there are changes to apply (0: none, 1: error or blocked).",
)
@click.option(
    "--offline",
    is_flag=True,
    help="Plan against the last observed state in state/ instead of the API (fork PRs).",
)
@pass_app
def plan(
    app: App,
    services: tuple[str, ...],
    fmt: str,
    out: Path | None,
    detailed_exitcode: bool,
    offline: bool,
) -> None:
    """Show what apply would change on live Cloud Run traffic, like `terraform plan`.

    Reads each rollout file and the live service (Cloud Run Admin API v2), and prints the
    changes per service (+ added, ~ changed, - removed), the reason (new stage, drift,
    rollback, advance, finalize), and the equivalent gcloud command. A change that raises
    canary_percent past a stage whose gates have not passed for `bake` is BLOCKED (exit 1)
    unless the rollout file says `force: true`.

    \b
    Examples:
      reconcile plan
      reconcile plan --service ion-api --detailed-exitcode
      reconcile plan --format markdown --out plan.md      # the PR comment
      reconcile plan --format json --out plan.json        # then: reconcile apply plan.json
    """
    from reconciler.reconcile import plan_all
    from reconciler.render import plan_text, render_plan
    from reconciler.runtime import utc_now

    backend = None
    if not offline:
        from reconciler.backends.cloudrun import CloudRunBackend

        backend = CloudRunBackend()
    result = plan_all(app.repo, services, backend, utc_now(), offline=offline)
    rendered = render_plan(result, fmt)
    if out is not None:
        try:
            out.write_text(rendered, encoding="utf-8")
        except OSError as exc:
            raise ReconcileError(f"{out}: cannot write the plan: {exc.strerror}") from None
        click.echo(plan_text(result) if fmt != "text" else rendered, nl=False)
    else:
        click.echo(rendered, nl=False)
    if result.errors or result.blocked:
        raise click.exceptions.Exit(1)
    if detailed_exitcode and result.has_changes:
        raise click.exceptions.Exit(2)


@cli.command()
@service_option
@click.argument("planfile", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--dry-run", is_flag=True, help="Judge and plan, print the gcloud commands, change nothing."
)
@click.option(
    "--no-commit", is_flag=True, help="Change traffic and write state/, but commit nothing."
)
@click.option("--no-push", is_flag=True, help="Commit locally, do not push.")
@pass_app
def apply(
    app: App,
    services: tuple[str, ...],
    planfile: Path | None,
    dry_run: bool,
    no_commit: bool,
    no_push: bool,
) -> None:
    """Reconcile live traffic with git: measure, probe, judge, move traffic, record.

    For each service: read the live split, measure the canary's window (metrics provider),
    run its probes, judge the gates, then apply the plan: a new stage, drift correction
    (self_heal), an automatic rollback on FAIL (exit 4), an automatic advance after `bake`
    (auto_advance), or the finalize at 100%. Every write uses the etag it read, waits for the
    operation and reads the split back. What was observed is written to state/ and committed
    with any rollout-file edit, then pushed (fetch-rebase-retry on a race).

    \b
    Exit codes: 0 ok, 1 error, blocked or a failed rollback, 3 degraded (the clone cannot
    reach the remote's tip: rollbacks only), 4 a canary was rolled back and that is recorded
    on the remote, 5 rolled back but not recorded on the remote yet (see README).
    \b
    Examples:
      reconcile apply
      reconcile apply --service ion-api --dry-run
      reconcile apply plan.json          # exactly a saved plan; refused when stale
    """
    from reconciler.plan import Plan
    from reconciler.reconcile import apply_all
    from reconciler.render import PlanFileError, plan_from_json, plan_text
    from reconciler.runtime import build_context

    saved = None
    if planfile is not None:
        try:
            saved = plan_from_json(planfile.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ReconcileError(f"{planfile}: {exc.strerror}") from None
        except PlanFileError as exc:
            raise ReconcileError(
                f"{planfile}: {exc} (write one with `reconcile plan --format json --out FILE`)"
            ) from None
    ctx = build_context(
        app.repo, commit=not (no_commit or dry_run), push=not no_push, progress=_echo_err
    )
    result = apply_all(ctx, services, dry_run=dry_run, saved=saved)
    if dry_run:
        plans = tuple(o.plan for o in result.outcomes if o.plan is not None)
        click.echo(plan_text(Plan(created_at=ctx.clock(), services=plans)), nl=False)
    # Degraded mode is said on every service line: each one was held to rollbacks only.
    mark = " [degraded: rollbacks only]" if result.degraded else ""
    for o in result.outcomes:
        if o.error:
            _echo_err(
                (
                    # An error that already names its service (or its file) is not prefixed.
                    f"error: {o.service}: {o.error}"
                    if o.service not in o.error.split(":", 1)[0]
                    else f"error: {o.error}"
                )
                + mark
            )
            continue
        if dry_run or o.plan is None:
            continue
        sp = o.plan
        commit = f" (commit {o.commit[:10]})" if o.commit else ""
        if o.rolled_back:
            where = "" if result.recorded else ", NOT yet recorded on the remote"
            summary = sp.edit.summary if sp.edit else ""
            click.echo(f"ROLLED BACK {o.service}: {summary}{commit}{where}{mark}")
        elif o.applied:
            change = f"{sp.before.describe()} -> {sp.after.describe()}"
            click.echo(f"applied {o.service}: {sp.reason.value}, {change}{commit}{mark}")
        elif o.held:
            _echo_err(f"held {o.service}: {o.held}{mark}")
        elif sp.blocked:
            _echo_err(f"blocked {o.service}: {sp.blocked}{mark}")
        else:
            verdict = f", verdict {o.verdict.summary()}" if o.verdict else ""
            click.echo(f"ok {o.service}: in sync ({sp.before.describe()}){verdict}{mark}")
        for note in (*sp.notes, *sp.warnings):
            click.echo(f"  {note}")
    if result.degraded:
        _echo_err(f"degraded: {result.degraded}; only rollbacks were applied")
    if result.git_error:
        _echo_err(f"error: {result.git_error}")
    raise click.exceptions.Exit(result.exit_code)


@cli.command()
@service_option
@click.option(
    "--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True
)
@click.option("--offline", is_flag=True, help="From state/ only, without the API.")
@pass_app
def status(app: App, services: tuple[str, ...], fmt: str, offline: bool) -> None:
    """Desired vs live traffic per service: phase, stage, sync, "ready to promote".

    \b
    Example:
      reconcile status
      reconcile status --service 'payments-*' --format json
    """
    from reconciler.reconcile import plan_all
    from reconciler.render import status_json, status_text
    from reconciler.runtime import utc_now

    backend = None
    if not offline:
        from reconciler.backends.cloudrun import CloudRunBackend

        backend = CloudRunBackend()
    result = plan_all(app.repo, services, backend, utc_now(), offline=offline)
    render = status_json if fmt == "json" else status_text
    click.echo(render(list(result.services), list(result.errors)), nl=False)
    if result.errors:
        raise click.exceptions.Exit(1)


@cli.command()
@click.argument("service")
@click.option("--force", is_flag=True, help="Do not ask: the emergency path.")
@click.option(
    "--reason", default="manual rollback", show_default=True, help="Recorded in git and state/."
)
@click.option("--no-push", is_flag=True, help="Commit locally, do not push.")
@pass_app
def rollback(app: App, service: str, force: bool, reason: str, no_push: bool) -> None:
    """Send 100% of SERVICE's traffic to the stable revision now, and make it stick.

    Then commits `canary_percent: 0` and a `rolled_back` block to the rollout file: the
    reconciler never routes to that canary again until a human names a new one or deletes
    the block.

    \b
    Examples:
      reconcile rollback ion-api --reason "5xx spike after deploy"
      reconcile rollback ion-api --force        # no prompt (CI, 3 a.m.)
    """
    from reconciler import manual
    from reconciler.runtime import build_context

    if not force:
        if not sys.stdin.isatty():
            raise ReconcileError("refusing to prompt without a terminal; pass --force to roll back")
        click.confirm(f"Roll back {service}: 100% of traffic to its stable revision?", abort=True)
    ctx = build_context(app.repo, push=not no_push, with_metrics=False)
    outcome = manual.rollback(ctx, service, reason)
    sp = outcome.plan
    commit = f" (commit {outcome.commit[:10]})" if outcome.commit else ""
    if sp is None:
        click.echo(f"{service}: already rolled back (100% on the stable revision); nothing to do")
    else:
        click.echo(
            f"rolled back {service}: {sp.before.describe()} -> {sp.after.describe()}{commit}"
        )


@cli.command()
@click.argument("service")
@click.option("--branch", metavar="NAME", help="Commit on a new branch (for a pull request).")
@click.option("--no-push", is_flag=True, help="Commit locally, do not push.")
@pass_app
def promote(app: App, service: str, branch: str | None, no_push: bool) -> None:
    """Write SERVICE's next stage into its rollout file and commit it.

    The next `apply` moves the traffic (the bake gate still applies).

    \b
    Examples:
      reconcile promote ion-api
      reconcile promote ion-api --branch promote/ion-api-10   # then open a PR
    """
    from reconciler import manual
    from reconciler.runtime import build_context

    ctx = build_context(app.repo, push=not no_push, with_metrics=False)
    summary, sha = manual.promote(ctx, service, branch)
    where = f" on branch {branch}" if branch else ""
    click.echo(f"promoted {service}: {summary}{where}" + (f" (commit {sha[:10]})" if sha else ""))


def _duration(ctx: click.Context, param: click.Parameter, value: str | None) -> object:
    from reconciler.spec import parse_duration

    if value is None:
        return None
    try:
        duration = parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    if duration.total_seconds() < 1:
        raise click.BadParameter(f"{value!r} is shorter than 1s (a tight loop against the API)")
    return duration


@cli.command()
@service_option
@click.option(
    "--interval",
    default="30m",
    show_default=True,
    callback=_duration,
    help="Time between reconciles (s, m, h).",
)
@click.option(
    "--duration",
    default="24h",
    show_default=True,
    callback=_duration,
    help="Stop after this long (s, m, h, d).",
)
@click.option("--no-commit", is_flag=True, help="Change traffic and write state/, commit nothing.")
@click.option("--no-push", is_flag=True, help="Commit locally, do not push.")
@click.option(
    "--stream",
    is_flag=True,
    help="Tail the canaries' request logs and roll back within seconds (never promotes).",
)
@pass_app
def watch(
    app: App,
    services: tuple[str, ...],
    interval: object,
    duration: object,
    no_commit: bool,
    no_push: bool,
    stream: bool,
) -> None:
    """The monitor loop: apply every --interval for --duration, a line per tick.

    Each tick measures, judges, rolls back or advances exactly like `apply`, and prints the
    verdict per service. Ctrl-C or SIGTERM stops cleanly after the current tick. Exit 4 if
    any tick rolled a canary back.

    With --stream, one Cloud Logging tail follows every live canary's request logs instead
    (--interval is unused): an anytime-valid test of the error rate rolls a canary back
    seconds after a breach, through the same path as `reconcile rollback`. It never
    promotes; the scheduled `apply` still does (docs/streaming.md).

    \b
    Examples:
      reconcile watch                              # every 30m for 24h
      reconcile watch --interval 1m --duration 2h --service ion-api
      reconcile watch --stream --duration 24h      # roll back within seconds
    """
    from datetime import timedelta

    from reconciler.reconcile import apply_all
    from reconciler.runtime import build_context
    from reconciler.watch import watch as watch_loop

    assert isinstance(interval, timedelta) and isinstance(duration, timedelta)
    ctx = build_context(app.repo, commit=not no_commit, push=not no_push, progress=_echo_err)
    if stream:
        from reconciler.stream import watch_stream

        raise click.exceptions.Exit(watch_stream(ctx, services, duration, click.echo))
    result = watch_loop(
        lambda: apply_all(ctx, services),
        interval=interval,
        duration=duration,
        clock=ctx.clock,
        report=lambda line: click.echo(line),
    )
    click.echo(f"stopped after {result.ticks} ticks ({result.stopped_by})")
    raise click.exceptions.Exit(result.exit_code)


@cli.command()
@click.option(
    "--keep",
    type=click.Path(file_okay=False, path_type=Path),
    help="Keep the demo's repos in DIR (empty or new) instead of a temp dir.",
)
def demo(keep: Path | None) -> None:
    """The whole story on the embedded emulator, no cloud account (under a minute).

    Starts the Cloud Run emulator in-process and a git repo with a bare remote in a temp
    dir, then runs the real commands: validate, plan, apply 5%, healthy traffic and an
    automatic advance, a bad revision and its automatic rollback; prints the git log and
    the observed state. Leaves nothing behind (unless --keep).

    \b
    Example:
      reconcile demo
      reconcile demo --keep /tmp/reconcile-demo && git -C /tmp/reconcile-demo/work log
    """
    from reconciler.demo import run_demo

    raise click.exceptions.Exit(run_demo(keep))


def _since(ctx: click.Context, param: click.Parameter, value: str | None) -> timedelta | None:
    from datetime import timedelta

    from reconciler.spec import parse_duration

    if value is None:
        return None
    try:
        span = parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    if span <= timedelta(0):
        raise click.BadParameter(f"{value!r} must be a positive duration")
    return span


@cli.command()
@click.argument("service")
@click.option(
    "--kind",
    type=click.Choice(["interim", "final"]),
    default="interim",
    show_default=True,
    help="interim: the last 24h; final: the whole rollout, with a go/no-go.",
)
@click.option(
    "--since",
    metavar="DURATION",
    callback=_since,
    help="Cover the last DURATION (24h, 7d, ...) instead of the kind's span.",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="FILE",
    help="Write the report to FILE instead of state/SERVICE/reports/.",
)
@click.option("--stdout", "to_stdout", is_flag=True, help="Print the report; write no file.")
@pass_app
def report(
    app: App,
    service: str,
    kind: str,
    since: timedelta | None,
    out: Path | None,
    to_stdout: bool,
) -> None:
    """Write a stage report of SERVICE from its state/ (markdown that renders on GitHub).

    Covers the stages and the time span, traffic, request counts, error and success rate,
    P50/P95/P99 of canary and stable against the rollout file's targets and rollback
    thresholds, charts of error rate and P95 per window, probe results, the baseline
    comparison, the events, and the decision: advance, hold or roll back (go/no-go in a
    final report). Saved as state/SERVICE/reports/<kind>-<UTC time>.md and <kind>-latest.md.

    \b
    Example:
      reconcile report ion-api --kind interim
      reconcile report ion-api --kind final --stdout
      reconcile report ion-api --since 6h --out /tmp/ion-api.md
    """
    from datetime import UTC, datetime

    from reconciler.report import generate, save
    from reconciler.state import atomic_write_text

    made = generate(
        app.repo,
        service,
        "final" if kind == "final" else "interim",
        now=datetime.now(UTC),
        since=since,
    )
    if to_stdout:
        click.echo(made.markdown, nl=False)
        return
    if out is not None:
        if not out.parent.is_dir():
            raise ReconcileError(f"{out}: no such directory {out.parent}")
        try:
            atomic_write_text(out, made.markdown)
        except OSError as exc:
            raise ReconcileError(f"{out}: cannot write the report: {exc.strerror}") from None
        path = out
    else:
        path = save(app.repo, made)
    decision = made.decision
    click.echo(f"{service}: {kind} report written to {path}")
    click.echo(f"decision: {decision.action.value} ({'; '.join(decision.reasons)})")


from reconciler.emulator.cli import emulator  # noqa: E402

cli.add_command(emulator)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 ok, 1 error, 2 changes pending, 4 rolled back).

    stdout and stderr are sinks like any other: every line is scrubbed of probe secrets.
    """
    from reconciler.redact import RedactingStream

    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = RedactingStream(saved[0]), RedactingStream(saved[1])
    try:
        return _main(argv)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        sys.stdout, sys.stderr = saved


def _main(argv: Sequence[str] | None) -> int:
    try:
        # Without standalone mode, click returns (not raises) the code of `Exit(n)` raised
        # inside a command.
        code = cli.main(
            args=list(argv) if argv is not None else None,
            prog_name="reconcile",
            standalone_mode=False,
        )
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.Abort:
        click.echo("aborted", err=True)
        return 1
    except click.ClickException as exc:
        exc.show()
        # A command-line mistake is an error (1); click's 2 would read as "changes pending".
        return 1 if isinstance(exc, click.UsageError) else exc.exit_code
    except ReconcileError as exc:
        click.echo(f"error: {exc}", err=True)
        return exc.exit_code
    return code if isinstance(code, int) else 0


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
