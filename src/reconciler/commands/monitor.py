"""`reconcile watch` and `reconcile report`: the monitor loop and the stage reports."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import click

from reconciler.commands import (
    App,
    echo_err,
    parse_interval,
    parse_span,
    pass_app,
    service_option,
    state_refs_for,
)
from reconciler.errors import ReconcileError


@click.command()
@service_option
@click.option(
    "--interval",
    default="30m",
    show_default=True,
    callback=parse_interval,
    help="Time between reconciles (s, m, h).",
)
@click.option(
    "--duration",
    default="24h",
    show_default=True,
    callback=parse_interval,
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
    """The monitor loop: apply every --interval for --duration, printing what changed.

    Each tick measures, judges, rolls back or advances exactly like `apply`. It prints the
    services whose state changed since the tick before (every write, rollback and error),
    and one short line when nothing did. Ctrl-C or SIGTERM stops cleanly after the current
    tick. Exit 4 if any tick rolled a canary back.

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

    from reconciler.notify import notified
    from reconciler.reconcile import apply_all
    from reconciler.runtime import build_context
    from reconciler.watch import watch as watch_loop

    assert isinstance(interval, timedelta) and isinstance(duration, timedelta)
    ctx = build_context(app.repo, commit=not no_commit, push=not no_push, progress=echo_err)
    if stream:
        from reconciler.stream import watch_stream

        raise click.exceptions.Exit(watch_stream(ctx, services, duration, click.echo))
    result = watch_loop(
        lambda: notified(app.repo, lambda: apply_all(ctx, services), warn=echo_err, now=ctx.clock),
        interval=interval,
        duration=duration,
        clock=ctx.clock,
        report=lambda line: click.echo(line),
    )
    click.echo(f"stopped after {result.ticks} ticks ({result.stopped_by})")
    raise click.exceptions.Exit(result.exit_code)


@click.command()
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
    callback=parse_span,
    help="Cover the last DURATION (24h, 7d, ...) instead of the kind's span.",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="FILE",
    help="Write the report to FILE instead of the rollout's reports/ in state/.",
)
@click.option("--stdout", "to_stdout", is_flag=True, help="Print the report; write no file.")
@click.option(
    "--offline",
    is_flag=True,
    help="Ask no metrics provider: figures from the windows recorded in state/ only.",
)
@click.option(
    "--region",
    metavar="REGION",
    help="Only the rollout in REGION (a file with waves, or the service in several regions).",
)
@click.option("--project", metavar="PROJECT", help="Only the rollout in PROJECT.")
@pass_app
def report(
    app: App,
    service: str,
    kind: str,
    since: timedelta | None,
    out: Path | None,
    to_stdout: bool,
    offline: bool,
    region: str | None,
    project: str | None,
) -> None:
    """Write a stage report of SERVICE (markdown that renders on GitHub).

    Traffic figures come from the rollout file's metrics provider, asked once per metric
    for the whole span; when it cannot answer (unreachable, no credentials, span older than
    its retention) or with --offline, from the windows recorded in state/. The report says
    which, and why.

    Covers the stages and the time span, traffic, request counts, error and success rate,
    P50/P95/P99 of canary and stable against the rollout file's targets and rollback
    thresholds, charts of error rate and P95 per window, probe results, the baseline
    comparison, the events, and the decision: advance, hold or roll back (go/no-go in a
    final report). Saved as state/PROJECT/REGION/SERVICE/reports/<kind>-<UTC time>.md and
    <kind>-latest.md.

    A service in several regions (a rollout file with `waves:`, or one file per region) gets
    one report per region, each in its own state folder; --region (and --project) picks one,
    which --stdout and --out need.

    \b
    Example:
      reconcile report ion-api --kind interim
      reconcile report ion-api --kind final --stdout
      reconcile report ion-api --since 6h --out /tmp/ion-api.md
      reconcile report ion-api --region europe-west1 --stdout
    """
    from reconciler.metrics import provider_for
    from reconciler.model import labels
    from reconciler.report import generate, save, source_text
    from reconciler.runtime import utc_now
    from reconciler.state import atomic_write_text

    refs = state_refs_for(app, service, region=region, project=project)
    if len(refs) > 1 and (to_stdout or out is not None):
        keys = ", ".join(r.key for r in refs)
        flag = "--stdout" if to_stdout else "--out"
        raise ReconcileError(
            f"{service}: {len(refs)} rollouts ({keys}); {flag} takes one: name it with --region"
        )
    if out is not None and not out.parent.is_dir():
        raise ReconcileError(f"{out}: no such directory {out.parent}")
    now = utc_now()
    # Every report is made before any is written: one that cannot be made writes none.
    made = [
        generate(
            app.repo,
            ref,
            "final" if kind == "final" else "interim",
            now=now,
            since=since,
            metrics_for=None if offline else provider_for,
        )
        for ref in refs
    ]
    if to_stdout:
        click.echo(made[0].markdown, nl=False)
        return
    names = labels(refs)
    for ref, one in zip(refs, made, strict=True):
        if out is not None:
            try:
                atomic_write_text(out, one.markdown)
            except OSError as exc:
                raise ReconcileError(f"{out}: cannot write the report: {exc.strerror}") from None
            path = out
        else:
            path = save(app.repo, ref, one)
        decision = one.decision
        click.echo(f"{names[ref]}: {kind} report written to {path}")
        click.echo(f"decision: {decision.action.value} ({'; '.join(decision.reasons)})")
        click.echo(f"figures: {source_text(one.source)}")
