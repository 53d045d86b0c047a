"""`reconcile state migrate`: move old-layout `state/<service>/` folders per identity."""

from __future__ import annotations

import sys

import click

from reconciler.commands import App, echo_err, pass_app


@click.group()
def state() -> None:
    """Maintain the observed state in state/."""


@state.command()
@click.option("--dry-run", is_flag=True, help="Say what would move, move nothing.")
@click.option("--no-commit", is_flag=True, help="Move the files, commit nothing.")
@pass_app
def migrate(app: App, dry_run: bool, no_commit: bool) -> None:
    """Move old-layout state/SERVICE/ folders to state/PROJECT/REGION/SERVICE/.

    Each old folder goes to the one rollout file naming its service id (apply does the same
    at the start of every run, so this is only needed to do it ahead of time or to check).
    The move is committed locally (not pushed) as one commit of renames. A folder that two
    rollouts claim (the same service id in several regions or projects), or whose new folder
    already holds the same files, is not moved: the line says why, and the exit code is 1.
    Running it again changes nothing.

    \b
    Example:
      reconcile state migrate --dry-run
      reconcile state migrate && git push
    """
    from reconciler import statemigrate
    from reconciler.gather import load_all, ref_of, rollout_files
    from reconciler.gitops import GitOps

    specs, errors = load_all(rollout_files(app.rollout_dir))
    for e in errors:
        echo_err(e.message)
    done = statemigrate.migrate(
        app.repo,
        [ref_of(s) for _, s in specs],
        unloadable={e.service for e in errors},
        dry_run=dry_run,
    )
    verb = "would move" if dry_run else "moved"
    for m in done.moves:
        click.echo(f"{verb} {m.old.as_posix()}/ -> {m.new.as_posix()}/")
    for problem in sorted(set(done.refused.values())):
        echo_err(problem)
    if not done.moves and not done.refused:
        click.echo("nothing to migrate: state/ is kept per project, region and service")
    if done.moves and not (dry_run or no_commit):
        subject, body = statemigrate.commit_message(done)
        sha = GitOps(app.repo).commit(done.paths, subject, body)
        if sha:
            click.echo(f"committed {sha[:12]}: {subject}")
    if done.refused or errors:
        sys.exit(1)
