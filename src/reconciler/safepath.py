"""The one gate for every path the reconciler reads or writes under `rollout/` and `state/`.

A repository is input from anyone who can open a pull request, so a symbolic link in it is
hostile until proven otherwise: `state/<project>` pointing at `/etc` would make the reconciler
write there (and prune "old month files" there), and `rollout/x.yaml` pointing at a
credentials file would print the token in `validate` and in the plan posted as a PR comment.
`inside(root, path)` therefore refuses a path that
- lies outside `root` once written out (`..`, an absolute path elsewhere), or
- has a symbolic link at any component from `root` down to the path itself (which is the
  only way a path written out inside `root` can resolve to somewhere outside it).

Components that do not exist yet are fine (they are about to be created, as directories the
reconciler makes itself). `guard(path)` finds the repository from the path (the nearest
ancestor holding `.git`) and applies the same rule when the path is under its `rollout/` or
`state/`; writers that are not handed a root call it. The message names the path and never
the link's target (its name may itself be sensitive, and its content never is printed).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Final

from reconciler.errors import ReconcileError

__all__ = ["GUARDED", "UnsafePathError", "guard", "inside", "repository_of"]

GUARDED: Final = ("rollout", "state")
"""Top-level folders whose every path goes through the check."""


class UnsafePathError(ReconcileError):
    """A path under rollout/ or state/ is a symbolic link or leads outside the repository."""


def inside(root: Path, path: Path | str) -> Path:
    """`path` (absolute, or relative to `root`) after the checks above; returns it unresolved."""
    # On strings, not `Path` objects: every state and rollout file a run reads or writes
    # passes here, several times a service, and pathlib's parsing was most of the cost.
    base = os.path.abspath(root)
    full = os.path.abspath(os.path.join(base, path))
    rel = _below(base, full)
    if rel is None:
        raise UnsafePathError(f"{path}: outside the repository {base}")
    current = base
    for part in rel.split(os.sep) if rel else ():
        current = os.path.join(current, part)
        try:
            mode = os.lstat(current).st_mode
        except FileNotFoundError:
            break  # nothing below a missing component exists either
        except NotADirectoryError:
            raise UnsafePathError(f"{_show(base, current)}: a parent is not a directory") from None
        if stat.S_ISLNK(mode):
            raise UnsafePathError(
                f"{_show(base, current)}: is a symbolic link; the reconciler reads and writes "
                "only regular files and directories inside the repository"
            )
    # No `..` (abspath removed them) and no link below `root`: the path cannot resolve
    # anywhere but under `root`, so no realpath call is needed (plan reads hundreds of files).
    return Path(full)


def _below(base: str, full: str) -> str | None:
    """`full` relative to `base` ('' when equal), None when it is not under `base` (both
    absolute and normalized)."""
    if full == base:
        return ""
    prefix = base if base.endswith(os.sep) else base + os.sep
    return full[len(prefix) :] if full.startswith(prefix) else None


def repository_of(path: Path | str) -> Path | None:
    """The working tree holding `path`: its nearest ancestor with a `.git` entry, if any."""
    folder = os.path.dirname(os.path.abspath(path))
    # Cached when found: a run checks every rollout and state file, in a few folders per
    # service. A miss is not cached (a repository may be created there later).
    found = _REPOSITORIES.get(folder)
    if found is None:
        here = Path(folder)
        found = next((c for c in (here, *here.parents) if (c / ".git").exists()), None)
        if found is not None:
            if len(_REPOSITORIES) >= _MAX_REPOSITORIES:
                # Full: start again rather than stop caching (a fleet has thousands of
                # folders; a cache that stopped at the first 1,024 missed on most of them).
                _REPOSITORIES.clear()
            _REPOSITORIES[folder] = found
    return found


_REPOSITORIES: dict[str, Path] = {}
_MAX_REPOSITORIES = 16384


def guard(path: Path | str) -> Path:
    """`path`, checked by `inside` when it lies under a repository's rollout/ or state/."""
    root = repository_of(path)
    if root is None:
        return Path(path)
    full = os.path.abspath(path)
    rel = _below(str(root), full)
    if rel and rel.split(os.sep, 1)[0] in GUARDED:
        inside(root, full)
    return Path(path)


def _show(base: str, path: str) -> str:
    rel = _below(base, path)
    return str(path) if rel is None else rel.replace(os.sep, "/")
