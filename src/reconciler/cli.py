"""Command line: parse, call, render, exit code. Heavy imports live inside commands."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from reconciler import __version__
from reconciler.commands import App, color_wanted, echo_err, pass_app, service_option
from reconciler.commands.checks import bench, probe
from reconciler.commands.control import abort, canary, pause, promote, resume, retry, rollback
from reconciler.commands.monitor import report, watch
from reconciler.commands.validate import validate
from reconciler.errors import ReconcileError

if TYPE_CHECKING:
    from reconciler.plan import Plan
    from reconciler.shard import Shard


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="reconcile")
@click.option(
    "--repo",
    type=click.Path(file_okay=False, path_type=Path),
    default=".",
    show_default=True,
    help="Git working tree holding rollout/ and state/.",
)
@click.option("--no-color", is_flag=True, help="No colour, even on a terminal (as NO_COLOR=1).")
@click.pass_context
def cli(ctx: click.Context, repo: Path, no_color: bool) -> None:
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
    (plan --detailed-exitcode), 3 apply degraded (rollbacks only), 4 apply rolled a canary
    back and recorded it on the remote, 5 rolled back but not recorded there yet.
    Without CLOUD_RUN_EMULATOR_HOST, Application Default Credentials are used.
    Colour only on a terminal, never with --no-color or NO_COLOR set.
    """
    ctx.obj = App(repo, color=color_wanted(no_color))


def _parse_shard(_ctx: click.Context, _param: click.Parameter, value: str | None) -> Any:
    if value is None:
        return None
    from reconciler.shard import parse_shard

    try:
        return parse_shard(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


shard_option = click.option(
    "--shard",
    metavar="K/N",
    callback=_parse_shard,
    help="Only the rollouts of shard K of N (1-based; a stable hash of project/region/"
    "service), for splitting a fleet across N runners.",
)


@cli.command("schema")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the schema to this file instead of stdout.",
)
@click.option(
    "--defaults", is_flag=True, help="The schema of rollout/_defaults.yaml (shared defaults)."
)
def schema_command(out: Path | None, defaults: bool) -> None:
    """Print the JSON Schema of the rollout file (for editors and other tools).

    Rules that span several keys (stages increasing, canary_percent one of the stages)
    are beyond JSON Schema: `reconcile validate` checks them. See docs/rollout-file.md,
    "Editor support", to have yaml-language-server check rollout files as you type.

    \b
    Examples:
      reconcile schema > rollout.schema.json
      reconcile schema --out schema/rollout.schema.json
      reconcile schema --defaults --out schema/defaults.schema.json
    """
    from reconciler.spec import schema_text

    text = schema_text(defaults)
    if out is None:
        click.echo(text, nl=False)
        return
    try:
        out.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise ReconcileError(f"{out}: cannot write: {exc.strerror or exc}") from None
    click.echo(f"wrote {out}", err=True)


@cli.command()
@service_option
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "markdown", "json"]),
    default="text",
    show_default=True,
    help="text for terminals, markdown for a PR comment, json for machines.",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also save the applyable json plan to FILE, whatever --format shows.",
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
@shard_option
@pass_app
def plan(
    app: App,
    services: tuple[str, ...],
    fmt: str,
    out: Path | None,
    detailed_exitcode: bool,
    offline: bool,
    shard: Shard | None,
) -> None:
    """Show what apply would change on live Cloud Run traffic, like `terraform plan`.

    Reads each rollout file and the live service (Cloud Run Admin API v2), and prints the
    changes per service (+ added, ~ changed, - removed), the reason (new stage, drift,
    rollback, advance, finalize), and the equivalent gcloud command. A change that raises
    canary_percent past a stage whose gates have not passed for `bake` is BLOCKED (exit 1)
    unless the rollout file says `force: true`.

    --out always saves the json plan (like `terraform plan -out`): `reconcile apply FILE`
    applies exactly it, `reconcile show FILE` renders it again.

    \b
    Examples:
      reconcile plan
      reconcile plan --service ion-api --detailed-exitcode
      reconcile plan --format markdown > comment.md      # the PR comment
      reconcile plan --out plan.json                     # then: reconcile apply plan.json
    """
    from reconciler.reconcile import plan_all
    from reconciler.runtime import utc_now
    from reconciler.state import atomic_write_text
    from reconciler.views import render_plan
    from reconciler.views.plan import plan_json

    backend = None
    if not offline:
        from reconciler.backends.cloudrun import CloudRunBackend

        backend = CloudRunBackend()
    result = plan_all(app.repo, services, backend, utc_now(), offline=offline, shard=shard)
    if out is not None:
        try:
            atomic_write_text(out, plan_json(result))
        except OSError as exc:
            raise ReconcileError(f"{out}: cannot write the plan: {exc.strerror}") from None
        echo_err(f"saved the plan to {out}; apply it with `reconcile apply {out}`")
    click.echo(render_plan(result, fmt, color=app.color), nl=False)
    if result.errors or result.blocked:
        raise click.exceptions.Exit(1)
    if detailed_exitcode and result.has_changes:
        raise click.exceptions.Exit(2)


def _read_plan(path: Path) -> Plan:
    from reconciler.views.plan import PlanFileError, plan_from_json

    try:
        return plan_from_json(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ReconcileError(f"{path}: {exc.strerror}") from None
    except PlanFileError as exc:
        raise ReconcileError(
            f"{path}: {exc} (write one with `reconcile plan --out FILE`)"
        ) from None


@cli.command()
@click.argument("planfile", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "markdown", "json"]),
    default="text",
    show_default=True,
    help="text for terminals, markdown for a PR comment, json for machines.",
)
@pass_app
def show(app: App, planfile: Path, fmt: str) -> None:
    """Render a plan saved with `reconcile plan --out FILE`, without reading Cloud Run.

    \b
    Examples:
      reconcile plan --out plan.json && reconcile show plan.json
      reconcile show plan.json --format markdown > comment.md
    """
    from reconciler.views import render_plan

    click.echo(render_plan(_read_plan(planfile), fmt, color=app.color), nl=False)


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
@shard_option
@pass_app
def apply(
    app: App,
    services: tuple[str, ...],
    planfile: Path | None,
    dry_run: bool,
    no_commit: bool,
    no_push: bool,
    shard: Shard | None,
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
    from reconciler.runtime import build_context
    from reconciler.views.apply import run_lines
    from reconciler.views.plan import plan_text

    saved = _read_plan(planfile) if planfile is not None else None
    ctx = build_context(
        app.repo, commit=not (no_commit or dry_run), push=not no_push, progress=echo_err
    )
    if shard is not None:
        ctx = dataclasses.replace(ctx, shard=shard)
    from reconciler.notify import notified

    result = notified(
        app.repo,
        lambda: apply_all(ctx, services, dry_run=dry_run, saved=saved),
        warn=echo_err,
        now=ctx.clock,
        enabled=not dry_run,
    )
    if dry_run:
        plans = tuple(o.plan for o in result.outcomes if o.plan is not None)
        click.echo(
            plan_text(Plan(created_at=ctx.clock(), services=plans), color=app.color), nl=False
        )
    for line in run_lines(result, dry_run=dry_run, color=app.color):
        click.echo(line.text, err=line.err)
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
    import shutil

    from reconciler.reconcile import plan_all
    from reconciler.runtime import utc_now
    from reconciler.views.status import status_json, status_text

    backend = None
    if not offline:
        from reconciler.backends.cloudrun import CloudRunBackend

        backend = CloudRunBackend()
    result = plan_all(app.repo, services, backend, utc_now(), offline=offline)
    plans, errors = list(result.services), list(result.errors)
    if fmt == "json":
        click.echo(status_json(plans, errors), nl=False)
    else:
        # A pipe or a file gets whole names; a terminal gets a table that fits it.
        width = shutil.get_terminal_size().columns if sys.stdout.isatty() else None
        click.echo(status_text(plans, errors, width=width, color=app.color), nl=False)
    if result.errors:
        raise click.exceptions.Exit(1)


@cli.command()
@click.option(
    "--keep",
    type=click.Path(file_okay=False, path_type=Path),
    help="Keep the demo's repos in DIR (empty or new) instead of a temp dir.",
)
@pass_app
def demo(app: App, keep: Path | None) -> None:
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

    raise click.exceptions.Exit(run_demo(keep, color=app.color))


@cli.command()
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Write the site into this directory (created if missing).",
)
@pass_app
def site(app: App, out: Path) -> None:
    """Write a static status site from state/: a fleet table and a page per service.

    Each service page shows where the rollout stands, its stage timeline, canary-versus-
    stable charts of error rate and P95 (inline SVG), its events and latest reports. Plain
    HTML and CSS, no JavaScript: open DIR/index.html, or publish DIR to GitHub Pages
    (docs/status-site.md has the workflow job).

    
    Example:
      reconcile site --out site
    """
    from reconciler.runtime import utc_now
    from reconciler.sitegen import build

    written = build(app.repo, out, utc_now())
    click.echo(f"wrote {len(written)} pages to {out} (open {out / 'index.html'})")


from reconciler.emulator.cli import emulator  # noqa: E402

for command in (
    validate,
    rollback,
    promote,
    pause,
    resume,
    abort,
    retry,
    canary,
    probe,
    bench,
    watch,
    report,
    emulator,
):
    cli.add_command(command)

from reconciler.commands.migrate import state  # noqa: E402
from reconciler.setup_gcp import setup  # noqa: E402

cli.add_command(setup)
cli.add_command(state)


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
