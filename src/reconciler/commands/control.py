"""The control verbs: `rollback`, `promote`, `pause`, `resume`, `abort`, `retry`, `canary start`.

Each is one commit of the rollout file (and, for rollback and abort, one traffic write per
region), ruled by the pure `verbs` module and carried out by `manual`. A service id in
several regions or projects takes `--region` and `--project` to pick (docs/fleet.md, "Control
verbs in several regions").
"""

from __future__ import annotations

import sys

import click

from reconciler.commands import App, echo_err, pass_app
from reconciler.errors import ReconcileError

_region = click.option(
    "--region",
    "regions",
    multiple=True,
    metavar="REGION",
    help="The rollout in REGION, when the service is in several (repeatable).",
)
_project = click.option(
    "--project", metavar="PROJECT", help="The rollout in PROJECT, when it is in several."
)


@click.command()
@click.argument("service")
@click.option("--force", is_flag=True, help="Do not ask: the emergency path.")
@click.option(
    "--reason", default="manual rollback", show_default=True, help="Recorded in git and state/."
)
@click.option("--no-push", is_flag=True, help="Commit locally, do not push.")
@_region
@_project
@pass_app
def rollback(
    app: App,
    service: str,
    force: bool,
    reason: str,
    no_push: bool,
    regions: tuple[str, ...],
    project: str | None,
) -> None:
    """Send 100% of SERVICE's traffic to the stable revision now, and make it stick.

    Then commits `canary_percent: 0` and a `rolled_back` block to the rollout file: the
    reconciler never routes to that canary again until a human names a new one or deletes
    the block.

    A service in several regions or projects (a file with `waves:`, or a file per region)
    is rolled back EVERYWHERE unless --region/--project pick some: the safe default in a
    hurry, since a rollback only returns traffic to the revision that served before. Each
    region gets its own traffic write and record. Some regions of a file with waves are
    rolled back alone (their `rolled_back_regions` entries) and the others hold.

    \b
    Examples:
      reconcile rollback ion-api --reason "5xx spike after deploy"
      reconcile rollback ion-api --force        # no prompt (CI, 3 a.m.); every region
      reconcile rollback ion-api --region europe-west1 --force   # that region only
    """
    from reconciler import manual
    from reconciler.runtime import build_context
    from reconciler.views.apply import rollback_line

    if not force:
        if not sys.stdin.isatty():
            raise ReconcileError("refusing to prompt without a terminal; pass --force to roll back")
        where = f" in {', '.join(regions)}" if regions else " (every region it runs in)"
        click.confirm(
            f"Roll back {service}{where}: 100% of traffic to its stable revision?", abort=True
        )
    from reconciler.notify import notified
    from reconciler.reconcile import RunResult

    ctx = build_context(app.repo, push=not no_push, with_metrics=False)
    outcomes = notified(
        app.repo,
        lambda: RunResult(manual.rollback(ctx, service, reason, regions, project)),
        warn=echo_err,
        now=ctx.clock,
    ).outcomes
    for outcome in outcomes:
        click.echo(rollback_line(outcome.name, outcome.plan, outcome.commit))


_dry_run = click.option(
    "--dry-run", is_flag=True, help="Show what would be written; write and commit nothing."
)
_no_push = click.option("--no-push", is_flag=True, help="Commit locally, do not push.")


def _say_verb(
    service: str, verb: tuple[str, str], result: object, branch: str | None = None
) -> None:
    from reconciler.manual import VerbResult
    from reconciler.views.apply import verb_line

    assert isinstance(result, VerbResult)
    click.echo(
        verb_line(
            result.name or service,
            verb,
            result.summary,
            branch=branch,
            commit=result.commit,
            dry_run=result.dry_run,
            noop=result.noop,
        )
    )


@click.command()
@click.argument("service")
@click.option("--to", "to", type=int, metavar="N", help="Promote to stage N% (a stage above now).")
@click.option("--full", is_flag=True, help="Promote to 100% (with --force unless next).")
@click.option(
    "--force",
    is_flag=True,
    help="Skip the bake gate (and stages) once: writes `force: true`, shown loudly in plan.",
)
@click.option("--branch", metavar="NAME", help="Commit on a new branch (for a pull request).")
@_dry_run
@_no_push
@_region
@_project
@pass_app
def promote(
    app: App,
    service: str,
    to: int | None,
    full: bool,
    force: bool,
    branch: str | None,
    dry_run: bool,
    no_push: bool,
    regions: tuple[str, ...],
    project: str | None,
) -> None:
    """Write SERVICE's next stage into its rollout file and commit it.

    Refused while the current stage has not passed its gates for `bake` (what the next
    `apply` would block on anyway), unless --force. The next `apply` moves the traffic.

    \b
    Examples:
      reconcile promote ion-api
      reconcile promote ion-api --dry-run
      reconcile promote ion-api --to 50 --force     # skip stages and bake, once
      reconcile promote ion-api --full --force      # straight to 100%
      reconcile promote ion-api --branch promote/ion-api-10   # then open a PR
      reconcile promote ion-api --region europe-west1   # ion-api has a file per region

    A service in several files (a file per region, or per project) needs --region or
    --project to pick one; a file with `waves:` is promoted as a whole (its regions follow
    the wave rule), so it takes no --region naming some of its regions only.
    """
    from reconciler import manual
    from reconciler.runtime import build_context

    ctx = build_context(app.repo, push=not no_push, with_metrics=False)
    result = manual.promote(
        ctx,
        service,
        branch,
        to=to,
        full=full,
        force=force,
        dry_run=dry_run,
        regions=regions,
        project=project,
    )
    _say_verb(service, ("promote", "promoted"), result, branch)


@click.command()
@click.argument("service")
@_dry_run
@_no_push
@_region
@_project
@pass_app
def pause(
    app: App,
    service: str,
    dry_run: bool,
    no_push: bool,
    regions: tuple[str, ...],
    project: str | None,
) -> None:
    """Commit `paused: true`: apply makes no advance and no drift correction for SERVICE.

    A rollback (a failing gate, `reconcile rollback`) still happens while paused. A service
    in several files needs --region (or --project) to pick one; a file with `waves:` is
    paused as a whole.

    \b
    Examples:
      reconcile pause ion-api
      reconcile pause ion-api --region europe-west1     # a file per region
      reconcile resume ion-api
    """
    from reconciler import manual
    from reconciler.runtime import build_context

    ctx = build_context(app.repo, push=not no_push, with_metrics=False)
    result = manual.pause(ctx, service, dry_run=dry_run, regions=regions, project=project)
    _say_verb(service, ("pause", "paused"), result)


@click.command()
@click.argument("service")
@_dry_run
@_no_push
@_region
@_project
@pass_app
def resume(
    app: App,
    service: str,
    dry_run: bool,
    no_push: bool,
    regions: tuple[str, ...],
    project: str | None,
) -> None:
    """Remove `paused` from SERVICE's rollout file: apply advances and self-heals again.

    \b
    Examples:
      reconcile resume ion-api
      reconcile resume ion-api --region europe-west1    # a file per region
    """
    from reconciler import manual
    from reconciler.runtime import build_context

    ctx = build_context(app.repo, push=not no_push, with_metrics=False)
    result = manual.resume(ctx, service, dry_run=dry_run, regions=regions, project=project)
    _say_verb(service, ("resume", "resumed"), result)


@click.command()
@click.argument("service")
@_dry_run
@_no_push
@_region
@_project
@pass_app
def abort(
    app: App,
    service: str,
    dry_run: bool,
    no_push: bool,
    regions: tuple[str, ...],
    project: str | None,
) -> None:
    """Send SERVICE's traffic back to stable now and leave the rollout paused.

    Unlike `rollback`, no sticky `rolled_back` block: the canary stays named, and
    `resume` then `promote` start it again from its first stage. A service in several
    files needs --region (or --project) to pick one; a file with `waves:` is aborted as a
    whole, every region's traffic written now.

    \b
    Examples:
      reconcile abort ion-api --dry-run
      reconcile abort ion-api
      reconcile abort ion-api --region europe-west1     # a file per region
    """
    from reconciler import manual
    from reconciler.runtime import build_context

    ctx = build_context(app.repo, push=not no_push, with_metrics=False)
    for outcome in manual.abort(ctx, service, dry_run=dry_run, regions=regions, project=project):
        sp = outcome.plan
        assert sp is not None
        lead = "would abort" if dry_run else "aborted"
        sha = f" (commit {outcome.commit[:10]})" if outcome.commit else ""
        split = f"{sp.before.describe()} -> {sp.after.describe()}"
        click.echo(f"{lead} {outcome.name}: {split}, paused{sha}")


@click.command()
@click.argument("service")
@click.option("--reason", help="Why the same rolled-back canary is tried again (recorded).")
@_dry_run
@_no_push
@_region
@_project
@pass_app
def retry(
    app: App,
    service: str,
    reason: str | None,
    dry_run: bool,
    no_push: bool,
    regions: tuple[str, ...],
    project: str | None,
) -> None:
    """Clear SERVICE's `rolled_back` block so its canary may take traffic again.

    Once a new canary is named the old block is simply cleared; trying the very canary
    that was rolled back again needs --reason. A service in several files needs --region
    (or --project) to pick one. In a file with `waves:`, --region clears only that region's
    `rolled_back_regions` entry (the hold stays while another region's entry names the
    canary); without it, every entry.

    \b
    Examples:
      reconcile retry ion-api
      reconcile retry ion-api --reason "the 5xx came from a dependency, fixed"
      reconcile retry ion-api --region europe-west1 --reason "bad config there, fixed"
    """
    from reconciler import manual
    from reconciler.runtime import build_context

    ctx = build_context(app.repo, push=not no_push, with_metrics=False)
    result = manual.retry(ctx, service, reason, dry_run=dry_run, regions=regions, project=project)
    _say_verb(service, ("retry", "retried"), result)


@click.group()
def canary() -> None:
    """Start a canary rollout."""


@canary.command("start")
@click.argument("service")
@click.option("--revision", metavar="R", help="The revision to roll out.")
@click.option("--latest", is_flag=True, help="Cloud Run's latest ready revision (the default).")
@click.option("--branch", metavar="NAME", help="Commit on a new branch (for a pull request).")
@_dry_run
@_no_push
@_region
@_project
@pass_app
def canary_start(
    app: App,
    service: str,
    revision: str | None,
    latest: bool,
    branch: str | None,
    dry_run: bool,
    no_push: bool,
    regions: tuple[str, ...],
    project: str | None,
) -> None:
    """Name a revision as SERVICE's canary at the first stage, and commit it.

    A service in several files needs --region (or --project) to pick one; a file with
    `waves:` starts the canary in every region (its first wave first).

    \b
    Examples:
      reconcile canary start ion-api --latest
      reconcile canary start ion-api --revision ion-api-00043-new --branch canary/ion-api
      reconcile canary start ion-api --latest --region europe-west1   # a file per region
    """
    from reconciler import manual
    from reconciler.runtime import build_context

    if revision and latest:
        raise ReconcileError("--revision and --latest are exclusive")
    ctx = build_context(app.repo, push=not no_push, with_metrics=False)
    result = manual.canary_start(
        ctx,
        service,
        revision,
        branch=branch,
        dry_run=dry_run,
        regions=regions,
        project=project,
    )
    _say_verb(service, ("start a canary of", "started a canary of"), result, branch)
