"""Moves the older `state/<service>/` layout to `state/<project>/<region>/<service>/`, once.

Before observed state was kept per identity, each service had one folder named after its
service id. `migrate(root, refs)` moves what such a folder holds (status.yaml, events.jsonl,
metrics/, reports/, baselines/) to the folder of the one rollout (`ServiceRef`) that names
that service id: one rename per entry, so every file keeps its bytes and git records the
move as a rename (`git log --follow` still finds the history). It is idempotent: moved
entries are no longer in the old folder, so a second run finds nothing to do, and a run
killed half way finishes the move the next time.

It refuses, per old folder, and says so in one line naming the folder:
- when two or more rollouts (the same service id in several regions or projects) claim it:
  which one it belongs to is the operator's call (`git mv` it by hand);
- when an entry exists in both folders (both layouts at once, for example a runner of the
  old version pushed after the move): merging two histories is the operator's call too;
- when its status.yaml names another service, or it or the target is a symbolic link.
Those rollouts are not reconciled until the operator resolves it; every other rollout is.
An old folder no rollout names is left as it is (its rollout file may live on another
branch, or be gone; deleting observed state is never automatic).
"""

from __future__ import annotations

import os
import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from reconciler import safepath
from reconciler import state as st
from reconciler.model import ServiceRef
from reconciler.spec import SERVICE_RE

__all__ = ["LEGACY_ENTRIES", "Migration", "Move", "commit_message", "legacy_folders", "migrate"]

LEGACY_ENTRIES = frozenset({"status.yaml", "events.jsonl", "metrics", "reports", "baselines"})
"""What a `state/<service>/` folder of the old layout holds. None of these is a region id,
so a project folder of the new layout (`state/<project>/`, holding region folders) is
never taken for an old service folder, even when a project id equals a service id."""
_SERVICE = re.compile(SERVICE_RE)


@dataclass(frozen=True)
class Move:
    """One old folder and where it goes (both relative to the repository)."""

    old: Path
    new: Path
    ref: ServiceRef


@dataclass(frozen=True)
class Migration:
    """What a migration moved (or would move, on a dry run) and what it refused.

    `refused` maps each rollout that cannot be reconciled until the operator resolves its
    old folder (`ServiceRef.key`) to the one-line reason.
    """

    moves: tuple[Move, ...] = ()
    refused: Mapping[str, str] = field(default_factory=dict)

    @property
    def paths(self) -> list[Path]:
        """Every path a commit of the moves must hold (old folders and new ones)."""
        return [p for m in self.moves for p in (m.old, m.new)]


def legacy_folders(root: Path) -> list[str]:
    """The service ids that still have a `state/<service>/` folder of the old layout."""
    base = root / "state"
    if not base.is_dir() or base.is_symlink():
        return []
    out = []
    for entry in sorted(os.scandir(base), key=lambda e: e.name):
        name = entry.name
        if entry.is_symlink() or not entry.is_dir() or not _SERVICE.fullmatch(name):
            continue
        if any(child in LEGACY_ENTRIES for child in os.listdir(entry.path)):
            out.append(name)
    return out


def migrate(
    root: Path,
    refs: Iterable[ServiceRef],
    *,
    owned: Collection[str] | None = None,
    unloadable: Collection[str] = (),
    dry_run: bool = False,
) -> Migration:
    """Move every old folder claimed by exactly one of `refs` to that rollout's folder.

    `refs` must be every rollout of the repository (not one shard's share): a second claimant
    elsewhere must make the move refused, not silently decided. `owned` (identities) limits
    the moves and refusals to those rollouts, so shards running side by side never move the
    same folder. `unloadable` are the service ids of rollout files that do not load: their
    identity is unknown, so their old folder waits. With `dry_run`, nothing is moved and the
    result says what would be.
    """
    claims: dict[str, list[ServiceRef]] = {}
    for ref in sorted(set(refs), key=lambda r: r.key):
        claims.setdefault(ref.service, []).append(ref)
    moves: list[Move] = []
    refused: dict[str, str] = {}
    for name in legacy_folders(root):
        mine = claims.get(name, [])
        if not mine or (owned is not None and not any(r.key in owned for r in mine)):
            continue
        old = Path("state", name)
        problem = _problem(root, name, mine, unloadable)
        if problem is not None:
            for ref in mine:
                if owned is None or ref.key in owned:
                    refused[ref.key] = f"{old}/: {problem}"
            continue
        ref = mine[0]
        new = st.state_dir(root, ref).relative_to(root)
        if not dry_run:
            try:
                _move(root, old, new)
            except OSError as exc:  # what moved stays moved; the rest moves next time
                refused[ref.key] = f"{old}/: cannot move to {new}/: {exc.strerror or exc}"
                continue
        moves.append(Move(old, new, ref))
    return Migration(tuple(moves), refused)


def commit_message(migration: Migration) -> tuple[str, str]:
    """Subject and body of the commit that records the moves."""
    n = len(migration.moves)
    subject = (
        f"state: move {n} rollout{'s' if n != 1 else ''} to state/<project>/<region>/<service>/"
    )
    body = "\n".join(f"{m.old.as_posix()}/ -> {m.new.as_posix()}/" for m in migration.moves)
    return subject, body


def _problem(
    root: Path, name: str, mine: list[ServiceRef], unloadable: Collection[str]
) -> str | None:
    """Why the old folder of `name` cannot be moved for `mine`, None when it can."""
    if name in unloadable:
        return f"a rollout file of {name} does not load; its state moves once it does"
    if len(mine) > 1:
        keys = ", ".join(r.key for r in mine)
        return (
            f"old-layout state claimed by {len(mine)} rollouts ({keys}); move it by hand "
            f"with `git mv state/{name} state/<project>/<region>/{name}` for the one it "
            "belongs to"
        )
    try:
        for entry in ["", *_entries(root / "state" / name)]:
            safepath.inside(root, Path("state", name, entry))
        target = st.state_dir(root, mine[0])
    except (safepath.UnsafePathError, st.StateError) as exc:
        return str(exc)
    both = sorted(e for e in _entries(root / "state" / name) if (target / e).exists())
    if both:
        rel = target.relative_to(root).as_posix()
        return (
            f"old-layout state, and {rel}/ holds {', '.join(both)} too; merge them by hand "
            "(keep one status.yaml, join the events and metrics lines) and remove the old one"
        )
    named = _named_service(root / "state" / name / "status.yaml")
    if named is not None and named != name:
        return f"status.yaml names service {named!r}, not {name!r}; not moved"
    return None


def _named_service(path: Path) -> str | None:
    """The `service:` of an old status file, None when absent or unreadable (the folder's
    name is the identity then: a corrupt status is salvaged after the move, as before)."""
    try:
        data: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    service = data.get("service") if isinstance(data, dict) else None
    return service if isinstance(service, str) else None


def _entries(folder: Path) -> list[str]:
    """The old-layout entries a folder holds."""
    return sorted(n for n in os.listdir(folder) if n in LEGACY_ENTRIES)


def _move(root: Path, old: Path, new: Path) -> None:
    """Rename each old-layout entry into the new folder (one rename each, atomic on one file
    system: no file is ever half moved), then remove the old folder when nothing else is in
    it. Entry by entry, not the folder whole: when a project id equals the service id, the
    old folder is also the new layout's project folder and keeps its region folders."""
    source = root / old
    target = root / new
    target.mkdir(parents=True, exist_ok=True)
    for entry in _entries(source):
        os.rename(source / entry, target / entry)
    if not any(source.iterdir()):  # else it is also a project folder, or holds other files
        source.rmdir()
