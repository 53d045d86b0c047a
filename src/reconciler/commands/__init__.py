"""What the command modules share: the application object, common options and helpers.

Only click is imported here, so `reconcile --help` stays fast; everything heavy is imported
inside the command that needs it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import click

from reconciler.errors import ReconcileError

if TYPE_CHECKING:
    from reconciler.model import ServiceRef
    from reconciler.spec import RolloutSpec


class App:
    """What every command shares: the git working tree holding rollout/ and state/, colour."""

    def __init__(self, repo: Path, color: bool = False) -> None:
        self.repo = repo
        self.color = color

    @property
    def rollout_dir(self) -> Path:
        return self.repo / "rollout"

    @property
    def state_dir(self) -> Path:
        return self.repo / "state"


pass_app = click.make_pass_decorator(App)


service_option = click.option(
    "--service",
    "-s",
    "services",
    multiple=True,
    metavar="NAME|GLOB",
    help="Only these services (a name or a glob like 'payments-*'; may repeat). Default: all.",
)


def color_wanted(no_color: bool) -> bool:
    """Colour on a terminal only, and never against --no-color or NO_COLOR (no-color.org)."""
    if no_color or os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    return sys.stdout.isatty()


def echo_lines(lines: Sequence[str], err: bool = False) -> None:
    """Print a view's lines (nothing for none)."""
    if lines:
        click.echo("\n".join(lines), err=err)


def echo_err(message: str) -> None:
    """One line on stderr."""
    click.echo(message, err=True)


def rollout_for(app: App, service: str) -> RolloutSpec:
    """The loaded rollout file of `service`; one line naming the file when it is missing."""
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


def state_refs_for(
    app: App, service: str, *, region: str | None = None, project: str | None = None
) -> list[ServiceRef]:
    """The rollout identities of SERVICE for commands that read its state folders: from its
    rollout files (in any folder of rollout/, every region of a file with `waves:`), else the
    state folders naming it; only those in `region` and `project` when given. One line when
    the id is unknown or none is left."""
    import re

    from reconciler.loader import find_rollout_files, load_spec
    from reconciler.model import ServiceRef
    from reconciler.spec import SERVICE_RE
    from reconciler.state import state_refs
    from reconciler.waves import expand

    if not re.fullmatch(SERVICE_RE, service):
        raise ReconcileError(f"{service!r} is not a valid Cloud Run service id")
    files = find_rollout_files(app.rollout_dir) if app.rollout_dir.is_dir() else []
    found = [
        ServiceRef(s.project, s.region, s.service)
        for path in files
        if path.stem == service
        for s in expand(load_spec(path))
    ]
    if not found:
        found = [r for r in state_refs(app.repo) if r.service == service]
    if not found:
        raise ReconcileError(
            f"{app.state_dir / '*' / '*' / service / 'status.yaml'}: no state yet for {service} "
            "(nothing reconciled; run `reconcile apply` first)"
        )
    chosen = [
        r
        for r in found
        if (region is None or r.region == region) and (project is None or r.project == project)
    ]
    if not chosen:
        where = " ".join(f"{k} {v}" for k, v in (("project", project), ("region", region)) if v)
        names = ", ".join(r.key for r in found)
        raise ReconcileError(f"{service}: no rollout in {where} (its rollouts: {names})")
    return sorted(set(chosen))


def parse_interval(ctx: click.Context, param: click.Parameter, value: str | None) -> object:
    """A click callback: a duration of at least 1s (a loop's interval or length)."""
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


def parse_span(ctx: click.Context, param: click.Parameter, value: str | None) -> timedelta | None:
    """A click callback: a positive duration (a report's span), None when not given."""
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


def parse_seconds(ctx: click.Context, param: click.Parameter, value: str) -> float:
    """A click callback: a duration (500ms, 1s) as seconds."""
    from reconciler.spec import parse_duration

    try:
        return parse_duration(value).total_seconds()
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
