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


def rollout_for(
    app: App, service: str, *, region: str | None = None, project: str | None = None
) -> RolloutSpec:
    """The one rollout of `service` a check acts on (`probe`, `bench`), from its rollout files
    in any folder of rollout/ (one region of a file with `waves:`); `region` and `project`
    pick it when the id is in several (`verbs.pick`), which is refused without them, in one
    line listing them. One line naming the file when there is none."""
    import re

    from reconciler import verbs
    from reconciler.loader import duplicate_identities, find_rollout_files, load_spec
    from reconciler.model import ServiceRef
    from reconciler.spec import SERVICE_RE
    from reconciler.waves import expand

    # Checked before it becomes a path: `../x` or `/tmp/x` would read a rollout file from
    # outside rollout/ (and `bench` would write its baseline outside state/).
    if not re.fullmatch(SERVICE_RE, service):
        raise ReconcileError(f"{service!r} is not a Cloud Run service id")
    folder = app.rollout_dir
    paths = [p for p in find_rollout_files(folder) if p.stem == service] if folder.is_dir() else []
    if not paths:
        raise ReconcileError(
            f"{folder / (service + '.yaml')}: no rollout file for service {service!r}"
        )
    by_file = {path: expand(load_spec(path)) for path in paths}
    clashes = duplicate_identities([(path, one) for path, ss in by_file.items() for one in ss])
    if clashes:
        raise ReconcileError(next(iter(clashes.values())))
    specs = {ServiceRef(s.project, s.region, s.service): s for ss in by_file.values() for s in ss}
    files = [
        verbs.FileRollouts(str(path), tuple(ServiceRef(s.project, s.region, s.service) for s in ss))
        for path, ss in by_file.items()
    ]
    try:
        picked = verbs.pick(service, files, [region] if region else (), project)
    except verbs.VerbError as exc:
        raise ReconcileError(str(exc)) from None
    refs = [r for f in picked for r in f.refs]
    if len(refs) > 1:
        raise ReconcileError(verbs.several(service, refs))
    return specs[refs[0]]


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
