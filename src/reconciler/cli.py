"""Command line: parse, call, render, exit code. Heavy imports live inside commands."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import click

from reconciler import __version__
from reconciler.errors import ReconcileError


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
      reconcile validate            check every rollout file
      reconcile plan                what would change, like `terraform plan`
    """
    ctx.obj = App(repo)


@cli.command()
@click.argument("paths", nargs=-1, metavar="[PATH]...", type=click.Path(path_type=Path))
@pass_app
def validate(app: App, paths: tuple[Path, ...]) -> None:
    """Check rollout files strictly (default: every rollout/*.yaml).

    PATH may be a file or a directory of rollout files. Each invalid file prints one line
    `path:line: message` on stderr, then a count; exit 1 if any file is invalid, else 0.
    Units are required (5%, 20s, 5m); unknown or duplicate keys, YAML 1.1 surprises
    (no, on, 010, 1:30) and a file name that differs from its service are errors.

    \b
    Examples:
      reconcile validate
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
    for path in files:
        try:
            spec = load_spec(path)
        except SpecError as exc:
            failed += 1
            click.echo(str(exc), err=True)
            continue
        click.echo(f"{path}: ok ({spec.service}, canary {spec.canary_percent}%)")
    if failed:
        raise ReconcileError(f"{failed} of {len(files)} rollout files invalid")


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


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 ok, 1 error, 2 changes pending, 4 rolled back)."""
    try:
        cli.main(args=list(argv) if argv is not None else None, prog_name="reconcile",
                 standalone_mode=False)
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.Abort:
        click.echo("aborted", err=True)
        return 1
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except ReconcileError as exc:
        click.echo(f"error: {exc}", err=True)
        return exc.exit_code
    return 0


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
