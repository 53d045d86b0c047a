"""`reconcile validate`: strict checks of rollout files and (--env) of the variables they read."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import click

from reconciler.commands import App, pass_app
from reconciler.errors import ReconcileError

if TYPE_CHECKING:
    from reconciler.spec import Channel, RolloutSpec


@click.command()
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
    With --env, every `{env: NAME}` a probe or dependency reads, or a `notify:` channel
    names (webhook URL, HMAC key), that the current environment lacks is one more
    `path:line: ...` line (run it where apply runs).

    \b
    Examples:
      reconcile validate
      reconcile validate --env
      reconcile validate rollout/ion-api.yaml
      reconcile --repo ../infra validate
    """
    from reconciler.loader import SpecError, duplicate_identities
    from reconciler.waves import expand

    files = rollout_files(paths or (app.rollout_dir,), named=bool(paths))
    env = _UnsetEnv(check_env)
    valid: list[tuple[Path, RolloutSpec]] = []
    failed = 0
    for path in files:
        try:
            spec = _check_file(path, env)
        except SpecError as exc:
            failed += 1
            click.echo(str(exc), err=True)
            continue
        if spec is not None:
            # A file with waves claims every region it names.
            valid.extend((path, s) for s in expand(spec))
    clashes = duplicate_identities(valid)
    for message in clashes.values():
        click.echo(message, err=True)
    failed += len(clashes)
    if failed:
        raise ReconcileError(f"{failed} of {len(files)} rollout files invalid")
    if env.unset:
        raise ReconcileError(
            f"{env.unset} environment variables the rollout files read are not set"
        )


def rollout_files(paths: Sequence[Path], named: bool) -> list[Path]:
    """The files to check: each file named, and every rollout file of each directory named
    (its shared defaults first). A missing default directory is an error naming it; a missing
    file the operator named is checked, so it fails with its own one-line message."""
    from reconciler.loader import find_rollout_files
    from reconciler.spec import DEFAULTS_FILE

    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = find_rollout_files(path)
            if not found:
                raise ReconcileError(f"{path}: no rollout files (*.yaml) found")
            if (path / DEFAULTS_FILE).is_file():
                files.append(path / DEFAULTS_FILE)
            files += found
        elif path.exists() or named:
            files.append(path)
        else:
            raise ReconcileError(f"{path}: no such directory; run in the repository or use --repo")
    return files


def _check_file(path: Path, env: _UnsetEnv) -> RolloutSpec | None:
    """Load one file (SpecError when invalid) and print its `ok` line or its unset variables:
    the rollout it declares, None for the shared defaults (which declare none)."""
    from reconciler.loader import is_defaults_file, load_defaults, load_spec

    if is_defaults_file(path):
        if not env.channels(path, load_defaults(path).notify):
            click.echo(f"{path}: ok (shared defaults)")
        return None
    spec = load_spec(path)
    unset = env.checks(path, spec) + env.channels(path, spec.notify)
    if not unset:
        click.echo(f"{path}: ok ({spec.service}, canary {spec.canary_percent}%)")
    return spec


class _UnsetEnv:
    """With --env, prints one `path:line:` error per variable a file reads that is unset here
    and counts them; without it, finds nothing."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.unset = 0
        # A variable named once in the shared defaults is reported once, not per inheritor.
        self._told: set[tuple[Path, int, str]] = set()

    def checks(self, path: Path, spec: RolloutSpec) -> int:
        """Report the unset variables the probes' and dependencies' headers read."""
        from reconciler.decide import env_needs

        missing = [n for n in env_needs(spec) if not os.environ.get(n[2])] if self.enabled else []
        for check, header, var in missing:
            click.echo(
                f"{path}:{_line_of(path, _env_pattern(var))}: {check}: header {header} reads "
                f"environment variable {var}, which is not set",
                err=True,
            )
        self.unset += len(missing)
        return len(missing)

    def channels(self, path: Path, channels: Sequence[Channel] | None) -> int:
        """Report the unset variables `notify:` channels name, at the line that names each
        (in the shared defaults when the file inherits them there; once per line)."""
        from reconciler.decide import channel_env
        from reconciler.spec import DEFAULTS_FILE

        count = 0
        for what, var in channel_env(channels or []) if self.enabled else []:
            if os.environ.get(var):
                continue
            pattern = _env_pattern(var)
            where = path
            defaults = path.parent / DEFAULTS_FILE
            if not _has_line(path, pattern) and _has_line(defaults, pattern):
                where = defaults
            line = _line_of(where, pattern)
            if (where, line, var) in self._told:
                continue
            self._told.add((where, line, var))
            click.echo(
                f"{where}:{line}: {what} reads environment variable {var}, which is not set",
                err=True,
            )
            count += 1
        self.unset += count
        return count


def _env_pattern(var: str) -> str:
    """A line that reads `var` through `{env: VAR}` (quoted or not)."""
    return rf"\benv\s*:\s*[\"']?{re.escape(var)}\b"


def _has_line(path: Path, pattern: str) -> bool:
    """Whether a line of `path` (when it exists) matches `pattern`."""
    if not path.is_file():
        return False
    text = path.read_text(encoding="utf-8", errors="replace")
    return any(re.search(pattern, line) for line in text.splitlines())


def _line_of(path: Path, pattern: str) -> int:
    """The first line of `path` matching `pattern` (1 when none does)."""
    text = path.read_text(encoding="utf-8", errors="replace")
    for n, line in enumerate(text.splitlines(), 1):
        if re.search(pattern, line):
            return n
    return 1
