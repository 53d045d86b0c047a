"""Commit what the reconciler did and push it, without ever losing or overwriting a record.

`GitOps` wraps one working tree (gitpython, running the `git` binary):

- `commit(paths, subject, ...)` commits only the given paths (state files, a rollout file),
  never unrelated changes in the tree, and nothing at all when they did not change.
- `push()` pushes the current branch; a non-fast-forward or a remote ref lock lost to a
  concurrent push (another reconciler pushed first) fetches, rebases and retries, bounded,
  with a short jittered backoff. It never force-pushes.
  A rebase conflict aborts the rebase, keeps the local commit and raises `ReconcileError`.
- `sync()` repairs the clone (below) and brings the branch onto the remote's tip before a
  run; its `SyncResult(at_tip, reason)` is the loop's signal for degraded mode. `pull()` is
  `sync()` raising when the tip cannot be reached.
- `unpushed()` counts local commits the remote does not have yet (an earlier push failed).
- `commit_to_branch(name, files, ...)` writes a commit on a new branch (for a pull request)
  without touching the working tree or the current branch.

Self-repair (`repair()`, run by `sync`, `commit` and `push`). A clone reused for weeks meets
kill -9 in the middle of git. Every run therefore first: removes a stale lock (`index.lock`,
`HEAD.lock`, `refs/**.lock` ...) that no live process holds, aborts a rebase, merge or
cherry-pick left in progress, and reattaches a detached HEAD to its branch (commits made on
the detached HEAD are kept: the branch is fast-forwarded to them, or they get a rescue
branch). A lock is stale when no `git` process has its working directory in this repository
(read from `/proc/<pid>/cwd`) and the lock is older than `lock_grace` seconds (a git started
after the scan has a younger lock); without `/proc`, only a lock older than
`STALE_LOCK_WITHOUT_PROC` counts as stale.

Rebuilding records. When local record commits cannot be rebased onto the remote's tip (two
runners' `rolled_back` blocks that differ only by their time always conflict), they are
rebuilt on the tip from what they recorded, one by one, never dropped and never force-pushed:
event and metric lines are unioned, the status snapshot with the later `last_reconcile`
wins, and a rollout-file edit is merged three-way, or else re-applied by meaning (a rollback
of the canary the remote still names is written again; one the remote already records, or
for a canary the remote has replaced, keeps the remote's file, whose desired state is newer).
A conflict in any other file stops the rebuild and leaves the branch as it was.

Loop prevention. The reconciler commits after it changed traffic, so replaying its commits
must never apply anything. Two independent rules make sure of it:
1. the workflow that runs `reconcile apply` on push only triggers on `paths: [rollout/**]`,
   so state-only commits (`state/**`) never start it; and
2. every commit that records something already applied (state, rollback, stage advance,
   finalization) carries the marker `[skip reconcile]` in its subject and the trailer
   `Reconcile-Skip: true`; the workflow skips a push whose head commit has it
   (`is_reconciler_commit`), which covers the rollout-file edits rule 1 lets through.
A `promote` commit is a request to move traffic, so it carries no marker: its push (or the
merge of its pull request) is meant to run `apply`.

Concurrent reconcilers (shards of a matrix, a manual run beside the scheduled one) rebase on
each other's commits. During that rebase, `state/**/*.jsonl` files merge with git's built-in
`union` driver (given through a temporary `core.attributesFile`, so the user's repository is
not changed), because two appends to the same events or metrics file are both true, and
`state/**/status.yaml` with `reconciler.statemerge`, which keeps the snapshot whose
`last_reconcile` is later (a rollback recorded by the run that pushes second is not lost).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import random
import re
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import git
import yaml

from reconciler import redact, statemerge, yamledit
from reconciler.errors import ReconcileError
from reconciler.model import CommitAction as Action  # defined with the pure values it records

__all__ = [
    "DEFAULT_EMAIL",
    "DEFAULT_NAME",
    "SKIP_MARKER",
    "SKIP_TRAILER",
    "Action",
    "BotIdentity",
    "GitOps",
    "GitOpsError",
    "SyncResult",
    "canary_change",
    "format_message",
    "format_subject",
    "is_reconciler_commit",
    "parse_trailers",
    "reconcile_trailers",
    "trailer_pairs",
]

log = logging.getLogger(__name__)

DEFAULT_NAME = "cloudrun-reconciler[bot]"
DEFAULT_EMAIL = "cloudrun-reconciler[bot]@users.noreply.github.com"
SKIP_MARKER = "[skip reconcile]"
SKIP_TRAILER = "Reconcile-Skip"
# Appended logs merge line-wise; a status snapshot written by two concurrent runs keeps the one
# with the later `last_reconcile` (both runs' events still land through the union merge).
UNION_ATTRIBUTES = "state/**/*.jsonl merge=union\nstate/**/status.yaml merge=reconcile-keep\n"
# git runs the driver through the shell; the interpreter running now has `reconciler` installed.
_STATUS_DRIVER = f"{shlex.quote(sys.executable)} -m reconciler.statemerge %O %A %B"

_TRAILER_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]*$")
_TRAILER_LINE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9-]*):\s*(.*)$")
# Another push moved the branch first. "cannot lock ref" is the same race lost a moment later:
# the remote's ref moved (or was being moved) between our push's check and its update, so it is
# answered alike (fetch and replay) rather than retried from the same stale base.
_REJECTED = ("[rejected]", "non-fast-forward", "fetch first", "cannot lock ref")
STALE_LOCK_WITHOUT_PROC = 600.0
"""Seconds after which a lock counts as stale where live processes cannot be listed."""


class GitOpsError(ReconcileError):
    """A git operation the operator has to look at (names the repository or branch)."""


@dataclass(frozen=True)
class SyncResult:
    """What `GitOps.sync` achieved: whether the branch now sits on the remote's tip.

    `at_tip` False means degraded: the remote is unreachable, rejected us, or local commits
    could not be brought onto its tip; `reason` says which. `repaired` lists what self-repair
    fixed, `rebuilt` the local commits rebuilt on the remote's tip, `notes` what a rebuild
    decided (for example that the remote's rollout file was kept).
    """

    at_tip: bool
    reason: str = ""
    repaired: tuple[str, ...] = ()
    rebuilt: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class BotIdentity:
    """Author and committer of the reconciler's commits."""

    name: str = DEFAULT_NAME
    email: str = DEFAULT_EMAIL

    def __post_init__(self) -> None:
        for what, value in (("name", self.name), ("email", self.email)):
            if not value.strip() or any(c in value for c in "<>\n\r"):
                raise GitOpsError(f"invalid git {what} for the reconciler: {value!r}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> BotIdentity:
        """`RECONCILE_GIT_NAME` / `RECONCILE_GIT_EMAIL`, each defaulting to the bot."""
        env = os.environ if environ is None else environ
        return cls(
            name=env.get("RECONCILE_GIT_NAME") or DEFAULT_NAME,
            email=env.get("RECONCILE_GIT_EMAIL") or DEFAULT_EMAIL,
        )

    def env(self) -> dict[str, str]:
        """Environment for git commands that create commits (commit, rebase, stash)."""
        return {
            "GIT_AUTHOR_NAME": self.name,
            "GIT_AUTHOR_EMAIL": self.email,
            "GIT_COMMITTER_NAME": self.name,
            "GIT_COMMITTER_EMAIL": self.email,
        }


# --- messages -------------------------------------------------------------------------------
def format_subject(service: str, summary: str) -> str:
    """`reconcile(ion-api): canary 0% -> 5% (ion-api-00042-xyz)`."""
    return f"reconcile({service}): {' '.join(summary.split())}"


def canary_change(before: int, after: int, revision: str | None) -> str:
    """`canary 0% -> 5% (ion-api-00042-xyz)`, the summary of a traffic change."""
    return f"canary {before}% -> {after}%" + (f" ({revision})" if revision else "")


def reconcile_trailers(service: str, action: Action, spec_id: str | None = None) -> dict[str, str]:
    """The structured trailers of a reconciler commit."""
    out = {"Reconcile-Service": service, "Reconcile-Action": action.value}
    if spec_id:
        out["Reconcile-Spec"] = spec_id
    return out


Trailers = Mapping[str, str] | Sequence[tuple[str, str]]
"""A commit's trailers: a mapping, or (key, value) pairs where a key may repeat (a run's
commit carries `Reconcile-Service`/`Reconcile-Action` once per service it records)."""


def _pairs(trailers: Trailers | None) -> list[tuple[str, str]]:
    if trailers is None:
        return []
    return list(trailers.items()) if isinstance(trailers, Mapping) else list(trailers)


def format_message(
    subject: str,
    body: str = "",
    trailers: Trailers | None = None,
    *,
    skip_reconcile: bool = True,
) -> str:
    """Subject, optional body, trailers; with the skip marker unless `skip_reconcile=False`."""
    # Commit messages reach the remote's history: scrubbed like every other sink.
    subject = " ".join(redact.scrub(subject).split())
    body = redact.scrub(body)
    if not subject:
        raise ValueError("a commit needs a subject")
    all_trailers = [(k, redact.scrub(v)) for k, v in _pairs(trailers)]
    if skip_reconcile:
        all_trailers = [(k, v) for k, v in all_trailers if k != SKIP_TRAILER]
        if SKIP_MARKER not in subject:
            subject = f"{subject} {SKIP_MARKER}"
        all_trailers.append((SKIP_TRAILER, "true"))
    for key, value in all_trailers:
        if not _TRAILER_KEY.match(key) or "\n" in value or not value.strip():
            raise ValueError(f"invalid trailer {key!r}: {value!r}")
    parts = [subject]
    if body.strip():
        parts.append(body.strip("\n"))
    if all_trailers:
        parts.append("\n".join(f"{k}: {v}" for k, v in all_trailers))
    return "\n\n".join(parts) + "\n"


def trailer_pairs(message: str) -> list[tuple[str, str]]:
    """Every trailer of a commit message in order, repeated keys kept: its last paragraph
    when every line is `Key: value`."""
    paragraphs = [p for p in re.split(r"\n\s*\n", message.strip()) if p.strip()]
    if len(paragraphs) < 2:
        return []
    out = []
    for line in paragraphs[-1].splitlines():
        m = _TRAILER_LINE.match(line.strip())
        if not m:
            return []
        out.append((m.group(1), m.group(2).strip()))
    return out


def parse_trailers(message: str) -> dict[str, str]:
    """The trailers of a commit message as a mapping (a repeated key keeps its last value;
    see `trailer_pairs` for a run's commit)."""
    return dict(trailer_pairs(message))


def is_reconciler_commit(message: str) -> bool:
    """True for a commit that records what the reconciler already applied: never apply it.

    It carries `[skip reconcile]` in its subject or `Reconcile-Skip: true` as a trailer.
    """
    subject = message.strip().splitlines()[0] if message.strip() else ""
    if SKIP_MARKER in subject:
        return True
    return parse_trailers(message).get(SKIP_TRAILER, "").lower() == "true"


# --- the repository -------------------------------------------------------------------------
class GitOps:
    """Commit and push in one git working tree as the reconciler's bot identity."""

    def __init__(
        self,
        repo_path: Path | str,
        identity: BotIdentity | None = None,
        *,
        remote: str = "origin",
        backoff: float = 0.25,
        lock_grace: float = 2.0,
    ) -> None:
        """Open the working tree at `repo_path` (its top level).

        `identity` defaults to `BotIdentity.from_env()`. `backoff` is the first retry delay
        of `push` in seconds; it doubles per attempt (capped at 4 s) with jitter. A lock no
        live git process holds is removed once older than `lock_grace` seconds.
        """
        try:
            self._repo = git.Repo(Path(repo_path))
        except (git.InvalidGitRepositoryError, git.NoSuchPathError):
            raise GitOpsError(
                f"{repo_path}: not a git repository (give the top of a working tree)"
            ) from None
        if self._repo.bare or self._repo.working_tree_dir is None:
            raise GitOpsError(f"{repo_path}: a bare repository has no working tree")
        self.root = Path(self._repo.working_tree_dir)
        self.identity = identity or BotIdentity.from_env()
        self.remote = remote
        self.backoff = backoff
        self.lock_grace = lock_grace
        self._git_dir = Path(self._repo.git_dir)

    # --- reading ----------------------------------------------------------------------------
    def head(self) -> str:
        """The sha of HEAD."""
        status, out, _ = self._git("rev-parse", "--verify", "--quiet", "HEAD^{commit}")
        if status != 0:
            raise GitOpsError(f"{self.root}: the repository has no commits yet")
        return out

    def branch(self) -> str:
        """The current branch; a detached HEAD is an error (commits there would be lost)."""
        status, out, _ = self._git("symbolic-ref", "--quiet", "--short", "HEAD")
        if status != 0:
            raise GitOpsError(
                f"{self.root}: HEAD is detached; check out a branch before reconciling"
            )
        return out

    def has_remote(self) -> bool:
        """True when the remote (default `origin`) is configured."""
        return self.remote in {r.name for r in self._repo.remotes}

    def unpushed(self) -> int:
        """How many commits of the current branch are not on `<remote>/<branch>` yet.

        Read from the remote-tracking ref as of the last fetch or push, without network: a
        run that committed nothing still pushes what an earlier failed push left behind.
        0 when the remote is not configured or its branch was never fetched.
        """
        branch = self.branch()
        if not self.has_remote():
            return 0
        upstream = f"refs/remotes/{self.remote}/{branch}"
        if self._git("rev-parse", "--verify", "--quiet", f"{upstream}^{{commit}}")[0] != 0:
            return 0
        return int(self._check("rev-list", "--count", f"{upstream}..HEAD"))

    def uncommitted(self, path: Path | str) -> list[str]:
        """Files under `path` that differ from HEAD (modified, staged, or untracked)."""
        # -z: NUL-separated and unquoted. Each entry is `XY path`; X or Y may be a space, so
        # the output must not be stripped (that once ate the `r` of `rollout/`). A rename
        # is followed by its old path as an entry of its own.
        status, out, _ = self._git(
            "--literal-pathspecs",
            "status",
            "--porcelain",
            "-z",
            "--untracked-files=all",
            "--",
            self._rel(path),
            strip=False,
        )
        if status != 0:
            return []
        entries = out.split("\0")
        files = []
        i = 0
        while i < len(entries):
            entry = entries[i]
            i += 1
            if len(entry) < 4:
                continue
            files.append(entry[3:])
            if entry[0] in "RC":
                i += 1  # skip the rename's source path
        return files

    # --- writing ----------------------------------------------------------------------------
    def commit(
        self,
        paths: Iterable[Path | str],
        subject: str,
        body: str = "",
        trailers: Trailers | None = None,
        *,
        skip_reconcile: bool = True,
    ) -> str | None:
        """Commit the current content of `paths` (files or directories, additions and
        deletions) and nothing else; returns the new sha, or None when nothing changed.

        Other changes in the working tree or the index, staged or not, stay as they are.
        The message is `format_message(subject, body, trailers, skip_reconcile=...)`.
        """
        self.repair()
        self.branch()
        message = format_message(subject, body, trailers, skip_reconcile=skip_reconcile)
        rel = sorted({self._rel(p) for p in paths})
        known = [p for p in rel if (self.root / p).exists() or self._tracked(p)]
        if not known:
            return None
        # A run's commit can name thousands of paths and carry a message of one line per
        # service: both go through files, since one argument is capped at 128 KiB and the
        # whole command line at the system's ARG_MAX.
        with tempfile.TemporaryDirectory(prefix="reconcile-commit-") as tmp:
            paths_file = Path(tmp) / "paths"
            paths_file.write_bytes(b"\0".join(os.fsencode(p) for p in known))
            from_file = (f"--pathspec-from-file={paths_file}", "--pathspec-file-nul")
            self._check("--literal-pathspecs", "add", "--all", *from_file)
            named = set(known)
            if not any(_under(name, named) for name in self._staged()):
                return None
            message_file = Path(tmp) / "message"
            message_file.write_text(message, encoding="utf-8")
            self._check(
                "--literal-pathspecs",
                "commit",
                "--only",
                "--quiet",
                "--cleanup=whitespace",
                f"--file={message_file}",
                *from_file,
                env=self.identity.env(),
            )
        return self.head()

    def _staged(self) -> list[str]:
        """Every path whose staged content differs from HEAD (both sides of a rename)."""
        out = self._check("diff", "--cached", "--name-only", "--no-renames", "-z")
        return [name for name in out.split("\0") if name]

    def push(self, retries: int = 5) -> bool:
        """Push the current branch; on a non-fast-forward fetch, rebase and retry.

        Bounded: at most `retries` retries after the first attempt, for rejections and for
        transient failures (unreachable remote) alike. Returns False (with a warning) when
        no remote is configured. Commits that do not rebase are rebuilt on the remote's tip
        (see the module docstring); when even that fails it raises at once, commits kept.
        """
        self.repair()
        branch = self.branch()
        if not self.has_remote():
            log.warning("%s: no remote %r; committed locally, not pushed", self.root, self.remote)
            return False
        error = ""
        for attempt in range(retries + 1):
            if attempt:
                self._sleep(attempt)
            status, out, err = self._git(
                "push", "--porcelain", self.remote, f"HEAD:refs/heads/{branch}"
            )
            if status == 0:
                return True
            error = _reason(err or out)
            rejected = any(r in out or r in err for r in _REJECTED)
            # Someone pushed first: replay our commits on theirs and try again.
            if rejected and self._fetch(branch):
                self._integrate(branch)
        raise GitOpsError(
            f"push of {branch} to {self.remote} failed after {retries + 1} attempts: {error}; "
            "the commits are kept locally, the next run pushes them"
        )

    def pull(self) -> str:
        """`sync()`, raising `GitOpsError` when the branch cannot reach the remote's tip;
        returns HEAD."""
        result = self.sync()
        if not result.at_tip:
            raise GitOpsError(result.reason)
        return self.head()

    def sync(self) -> SyncResult:
        """Repair the clone, fetch, and put the branch on the remote's tip, keeping local
        commits on top (rebased, or rebuilt when they do not rebase). Never raises for a
        git problem: the result says whether the tip was reached and why not.

        Without a remote, or when the remote has no such branch yet, the clone is its own
        tip (`at_tip` True).
        """
        try:
            repaired = tuple(self.repair())
            branch = self.branch()
        except GitOpsError as exc:
            return SyncResult(False, f"the clone cannot be repaired: {exc}")
        if not self.has_remote():
            return SyncResult(True, f"no remote {self.remote!r}", repaired)
        status, _, err = self._fetch_raw(branch)
        if status != 0:
            if "couldn't find remote ref" in err:
                return SyncResult(True, "", repaired)
            return SyncResult(
                False, f"fetch of {branch} from {self.remote} failed: {_reason(err)}", repaired
            )
        try:
            rebuilt, notes = self._integrate(branch)
        except GitOpsError as exc:
            return SyncResult(False, str(exc), repaired)
        return SyncResult(True, "", repaired, tuple(rebuilt), tuple(notes))

    # --- self-repair ------------------------------------------------------------------------
    def repair(self) -> list[str]:
        """Undo what a killed git left behind (see the module docstring); returns what it did.

        Raises `GitOpsError` only when HEAD cannot be reattached safely.
        """
        done = self._clear_stale_locks()
        for marker, command, what in (
            ("rebase-merge", ("rebase", "--abort"), "aborted a rebase in progress"),
            ("rebase-apply", ("rebase", "--abort"), "aborted a rebase in progress"),
            ("MERGE_HEAD", ("merge", "--abort"), "aborted a merge in progress"),
            ("CHERRY_PICK_HEAD", ("cherry-pick", "--abort"), "aborted a cherry-pick"),
        ):
            if (self._git_dir / marker).exists():
                if self._git(*command)[0] != 0 and command[0] == "rebase":
                    # A rebase killed half-way may not abort cleanly: forget it, keep HEAD
                    # (reattached below).
                    self._git("rebase", "--quit")
                done.append(what)
        reattached = self._reattach()
        if reattached:
            done.append(reattached)
        for what in done:
            log.warning("%s: git self-repair: %s", self.root, what)
        return done

    def _clear_stale_locks(self) -> list[str]:
        # Top-level locks include `next-index-*.lock`, the temporary index of `commit --only`.
        locks = sorted(self._git_dir.glob("*.lock"))
        refs = self._git_dir / "refs"
        locks.extend(refs.rglob("*.lock") if refs.is_dir() else ())
        present = [lock for lock in locks if lock.exists()]
        if not present:
            return []
        busy = self._git_running_here()
        grace = STALE_LOCK_WITHOUT_PROC if busy is None else self.lock_grace
        done = []
        for lock in present:
            try:
                age = time.time() - lock.stat().st_mtime
            except FileNotFoundError:
                continue  # its owner just finished
            if busy or age < grace:
                continue
            lock.unlink(missing_ok=True)
            done.append(f"removed stale {lock.relative_to(self._git_dir).as_posix()}")
        return done

    def _git_running_here(self) -> bool | None:
        """Whether a git process works in this repository; None when it cannot be known."""
        proc = Path("/proc")
        if not (proc / "self" / "cwd").exists():
            return None
        roots = {str(self.root.resolve()), str(self._git_dir.resolve())}
        for entry in proc.iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                name = (entry / "comm").read_text().strip()
                if not name.startswith("git"):
                    continue
                cwd = os.readlink(entry / "cwd")
            except OSError:
                continue  # gone, or not ours to look at
            if any(cwd == r or cwd.startswith(r + os.sep) for r in roots):
                return True
        return False

    def _reattach(self) -> str | None:
        if self._git("symbolic-ref", "--quiet", "HEAD")[0] == 0:
            return None
        head = self._git("rev-parse", "--verify", "--quiet", "HEAD^{commit}")[1]
        if not head:
            return None
        branch = self._home_branch()
        if branch is None:
            raise GitOpsError(
                f"{self.root}: HEAD is detached and no branch to reattach it to was found; "
                "check out a branch before reconciling"
            )
        ref = f"refs/heads/{branch}"
        tip = self._check("rev-parse", ref)
        if tip == head:
            self._check("symbolic-ref", "HEAD", ref)
            return f"reattached HEAD to {branch}"
        if self._is_ancestor(tip, head):
            # Commits made on the detached HEAD: the branch moves forward to them.
            self._check("update-ref", ref, head, tip)
            self._check("symbolic-ref", "HEAD", ref)
            return f"reattached HEAD to {branch} (fast-forwarded to {head[:10]})"
        rescue = ""
        if not self._is_ancestor(head, tip):
            rescue = f"reconcile-rescue-{head[:10]}"
            self._check("update-ref", f"refs/heads/{rescue}", head, "")
        if self._git("checkout", "--quiet", branch)[0] != 0:
            raise GitOpsError(
                f"{self.root}: HEAD is detached at {head[:10]} and {branch} cannot be checked "
                "out over the working tree's changes; check it out by hand"
            )
        kept = f"; its commits are kept on branch {rescue}" if rescue else ""
        return f"reattached HEAD to {branch} (was detached at {head[:10]}{kept})"

    def _home_branch(self) -> str | None:
        """The branch a detached HEAD belongs on: the remote's default branch when it exists
        locally, else the only local branch, else `main` or `master`."""
        local = self._git("for-each-ref", "--format=%(refname:short)", "refs/heads/")[1].split()
        remote_head = self._git("symbolic-ref", "--quiet", f"refs/remotes/{self.remote}/HEAD")[1]
        preferred = remote_head.rpartition("/")[2] if remote_head else ""
        candidates: list[str] = [preferred, *(local if len(local) == 1 else ()), "main", "master"]
        return next((name for name in candidates if name and name in local), None)

    def _is_ancestor(self, older: str, newer: str) -> bool:
        return self._git("merge-base", "--is-ancestor", older, newer)[0] == 0

    def commit_to_branch(
        self,
        branch: str,
        files: Mapping[Path | str, str],
        subject: str,
        body: str = "",
        trailers: Mapping[str, str] | None = None,
        *,
        skip_reconcile: bool = False,
        push: bool = True,
    ) -> str:
        """Create `branch` from HEAD with one commit setting `files` (path -> UTF-8 text).

        The working tree, the index and the current branch are not touched, so the caller
        passes the edited text instead of writing the file. The branch must not exist yet,
        locally or on the remote (never overwritten). With `push`, it is pushed when a
        remote is configured. Returns the commit's sha. No skip marker by default: merging
        the pull request is meant to apply the change.
        """
        if self._git("check-ref-format", "--branch", branch)[0] != 0:
            raise GitOpsError(f"{branch!r} is not a valid branch name")
        ref = f"refs/heads/{branch}"
        if self._git("rev-parse", "--verify", "--quiet", ref)[0] == 0:
            raise GitOpsError(f"{self.root}: branch {branch} already exists")
        base = self.head()
        message = format_message(subject, body, trailers, skip_reconcile=skip_reconcile)
        with tempfile.TemporaryDirectory(prefix="reconcile-index-") as tmp:
            env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
            self._check("read-tree", base, env=env)
            for path, text in files.items():
                rel = self._rel(path)
                blob_file = Path(tmp) / "blob"
                blob_file.write_bytes(text.encode("utf-8"))
                blob = self._check("hash-object", "-w", f"--path={rel}", "--", str(blob_file))
                mode = self._mode(base, rel)
                self._check("update-index", "--add", "--cacheinfo", f"{mode},{blob},{rel}", env=env)
            tree = self._check("write-tree", env=env)
        sha = self._check("commit-tree", tree, "-p", base, "-m", message, env=self.identity.env())
        self._check("update-ref", "-m", f"reconcile: create {branch}", ref, sha, "")
        if push and self.has_remote():
            status, out, err = self._git("push", "--porcelain", self.remote, f"{ref}:{ref}")
            if status != 0:
                raise GitOpsError(
                    f"push of new branch {branch} to {self.remote} failed: "
                    f"{_reason(err or out)}; the branch is kept locally"
                )
        elif push:
            log.warning("%s: no remote %r; branch %s not pushed", self.root, self.remote, branch)
        return sha

    # --- internals --------------------------------------------------------------------------
    def _git(
        self, *args: str, env: Mapping[str, str] | None = None, strip: bool = True
    ) -> tuple[int, str, str]:
        status, out, err = self._repo.git.execute(
            ["git", *args],
            with_extended_output=True,
            with_exceptions=False,
            strip_newline_in_stdout=strip,
            env=dict(env or {}),
        )
        text = str(out).strip() if strip else str(out)
        return int(status), text, str(err).strip()

    def _check(self, *args: str, env: Mapping[str, str] | None = None) -> str:
        status, out, err = self._git(*args, env=env)
        if status != 0:
            cmd = next(a for a in args if not a.startswith("-"))
            raise GitOpsError(f"{self.root}: git {cmd} failed: {_reason(err or out)}")
        return out

    def _rel(self, path: Path | str) -> str:
        p = Path(path)
        if p.is_absolute():
            try:
                p = p.relative_to(self.root)
            except ValueError:
                raise GitOpsError(f"{path} is outside the repository {self.root}") from None
        if ".." in p.parts or not p.parts:
            raise GitOpsError(f"{path}: not a path inside the repository")
        return p.as_posix()

    def _tracked(self, rel: str) -> bool:
        _, index, _ = self._git("--literal-pathspecs", "ls-files", "--", rel)
        if index:
            return True
        status, head, _ = self._git(
            "--literal-pathspecs", "ls-tree", "-r", "--name-only", "HEAD", "--", rel
        )
        return status == 0 and bool(head)

    def _mode(self, base: str, rel: str) -> str:
        status, out, _ = self._git("--literal-pathspecs", "ls-tree", base, "--", rel)
        mode = out.split(" ", 1)[0] if status == 0 and out else ""
        return mode if mode in ("100644", "100755") else "100644"

    def _fetch_raw(self, branch: str) -> tuple[int, str, str]:
        return self._git(
            "fetch",
            "--quiet",
            "--no-tags",
            self.remote,
            f"+refs/heads/{branch}:refs/remotes/{self.remote}/{branch}",
        )

    def _fetch(self, branch: str) -> bool:
        status, _, err = self._fetch_raw(branch)
        if status != 0:
            log.warning("fetch of %s from %s failed: %s", branch, self.remote, _reason(err))
        return status == 0

    def _integrate(self, branch: str) -> tuple[list[str], list[str]]:
        """Put local commits on the fetched remote tip: rebase, else rebuild. Returns the
        rebuilt commits and the rebuild's notes (both empty after a plain rebase)."""
        if self._rollout_edits_meet(branch):
            # A line-wise rebase of a rollout edit can succeed and still be wrong (a rollback
            # re-applied after a human cleared it): replay such commits by meaning.
            return self._rebuild(branch)
        try:
            self._rebase(branch)
            return [], []
        except _RebaseConflict as conflict:
            log.warning("%s; rebuilding the local commits on the remote's tip", conflict)
            try:
                return self._rebuild(branch)
            except GitOpsError as exc:
                raise GitOpsError(f"{conflict}; rebuilding them failed: {exc}") from None

    def _rollout_edits_meet(self, branch: str) -> bool:
        """Whether a local reconciler commit edits a rollout file the remote also changed."""
        upstream = f"refs/remotes/{self.remote}/{branch}"
        base = self._git("merge-base", "HEAD", upstream)[1]
        if not base:
            return False
        # Every file a remote commit touched, not the net diff: a rollback recorded and then
        # cleared by a human nets to nothing, yet must not be replayed.
        theirs = set(
            self._check(
                "log", "--format=", "--name-only", f"{base}..{upstream}", "--", "rollout"
            ).split()
        )
        if not theirs:
            return False
        for sha in self._check("rev-list", f"{upstream}..HEAD", "--", "rollout").split():
            if not is_reconciler_commit(self._check("log", "-1", "--format=%B", sha)):
                continue
            files = self._check("diff-tree", "-r", "--no-commit-id", "--name-only", sha).split()
            if theirs.intersection(files):
                return True
        return False

    def _rebase(self, branch: str) -> None:
        upstream = f"refs/remotes/{self.remote}/{branch}"
        with _union_attributes() as attributes:
            status, out, err = self._git(
                "-c",
                f"core.attributesFile={attributes}",
                "-c",
                f"merge.reconcile-keep.driver={_STATUS_DRIVER}",
                "rebase",
                "--autostash",
                upstream,
                env=self.identity.env(),
            )
        if status == 0:
            return
        conflicts = self._git("diff", "--name-only", "--diff-filter=U")[1].split()
        if self._rebasing():
            self._git("rebase", "--abort")
        what = f"conflicts in {', '.join(conflicts)}" if conflicts else _reason(err or out)
        raise _RebaseConflict(
            f"{self.root}: rebase of {branch} on {self.remote}/{branch} failed ({what}); "
            "rebase aborted, local commits kept"
        )

    def _rebuild(self, branch: str) -> tuple[list[str], list[str]]:
        """Rebuild the commits `<remote>/<branch>..HEAD` on the remote's tip from what each
        recorded (module docstring); move the branch there keeping the working tree's
        changes. Raises `GitOpsError` (branch untouched) when a file cannot be merged."""
        upstream = f"refs/remotes/{self.remote}/{branch}"
        old = self.head()
        parent = self._check("rev-parse", f"{upstream}^{{commit}}")
        if self._check("rev-list", "--merges", f"{upstream}..HEAD"):
            raise GitOpsError("a local merge commit cannot be rebuilt")
        commits = self._check("rev-list", "--reverse", f"{upstream}..HEAD").split()
        rebuilt: list[str] = []
        notes: list[str] = []
        with tempfile.TemporaryDirectory(prefix="reconcile-rebuild-") as tmp:
            env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
            for sha in commits:
                first_note = len(notes)
                message = self._check("log", "-1", "--format=%B", sha)
                ours_commit = is_reconciler_commit(message)
                self._check("read-tree", parent, env=env)
                changed = self._git(
                    "diff-tree",
                    "-r",
                    "-z",
                    "--no-commit-id",
                    "--name-only",
                    "--no-renames",
                    f"{sha}^",
                    sha,
                    strip=False,
                )[1].split("\0")
                for rel in filter(None, changed):
                    merged = _merge_record(
                        rel,
                        self._blob(f"{sha}^", rel),
                        self._blob(sha, rel),
                        self._blob(parent, rel),
                        reconciler=ours_commit,
                        notes=notes,
                        history=functools.partial(self._versions, f"{sha}^", upstream, rel),
                    )
                    self._stage(rel, merged, parent, env)
                tree = self._check("write-tree", env=env)
                decided = notes[first_note:]
                if not decided and tree == self._check("rev-parse", f"{parent}^{{tree}}"):
                    notes.append(f"{sha[:10]}: everything it recorded is on the remote already")
                    continue
                author = self._check("log", "-1", "--format=%an%x00%ae%x00%aI", sha).split("\0")
                commit_env = {
                    **self.identity.env(),
                    "GIT_AUTHOR_NAME": author[0],
                    "GIT_AUTHOR_EMAIL": author[1],
                    "GIT_AUTHOR_DATE": author[2],
                }
                parent = self._check(
                    "commit-tree",
                    tree,
                    "-p",
                    parent,
                    "-m",
                    _rebuilt_message(message, sha, decided),
                    env=commit_env,
                )
                rebuilt.append(sha)
        # --keep moves the branch and updates only the files that differ, refusing (branch
        # untouched) where that would overwrite a local change.
        if self._git("reset", "--quiet", "--keep", parent)[0] != 0:
            raise GitOpsError(
                f"{self.root}: the rebuilt commits cannot be checked out over local changes; "
                f"{branch} left at {old[:10]}"
            )
        for note in notes:
            log.warning("%s: rebuild: %s", self.root, note)
        return rebuilt, notes

    def _versions(self, since: str, until: str, rel: str) -> list[bytes]:
        """Every version of `rel` the commits `since..until` wrote, newest first."""
        shas = self._check("log", "--format=%H", f"{since}..{until}", "--", rel).split()
        return [blob for blob in (self._blob(sha, rel) for sha in shas) if blob is not None]

    def _blob(self, rev: str, rel: str) -> bytes | None:
        proc = subprocess.run(
            ["git", "cat-file", "blob", f"{rev}:{rel}"],
            cwd=self.root,
            capture_output=True,
            check=False,
        )
        return proc.stdout if proc.returncode == 0 else None

    def _stage(self, rel: str, data: bytes | None, base: str, env: Mapping[str, str]) -> None:
        if data is None:
            self._check("update-index", "--force-remove", "--", rel, env=env)
            return
        proc = subprocess.run(
            ["git", "hash-object", "-w", "--stdin"],
            cwd=self.root,
            input=data,
            capture_output=True,
            check=True,
        )
        blob = proc.stdout.decode().strip()
        mode = self._mode(base, rel)
        self._check("update-index", "--add", "--cacheinfo", f"{mode},{blob},{rel}", env=env)

    def _rebasing(self) -> bool:
        git_dir = Path(self._repo.git_dir)
        return (git_dir / "rebase-merge").exists() or (git_dir / "rebase-apply").exists()

    def _sleep(self, attempt: int) -> None:
        delay = min(self.backoff * 2 ** (attempt - 1), 4.0)
        # Jitter keeps concurrent reconcilers from retrying in lockstep.
        time.sleep(delay * random.uniform(0.5, 1.5))


class _RebaseConflict(GitOpsError):
    """A rebase stopped on a conflict and was aborted (the rebuild may still succeed)."""


def _merge_record(
    rel: str,
    base: bytes | None,
    ours: bytes | None,
    theirs: bytes | None,
    *,
    reconciler: bool,
    notes: list[str],
    history: Callable[[], list[bytes]],
) -> bytes | None:
    """One file of a rebuilt commit: `ours` replayed on `theirs` from `base` (None: absent).

    `history` gives the versions of the file the remote wrote since `base`, newest first.
    """
    if ours == theirs or base == ours:
        return theirs
    if reconciler and rel.startswith("rollout/") and ours is not None and theirs is not None:
        # By meaning first: the remote may have recorded the same rollback and a human then
        # cleared it, leaving the file as it was at `base`; a line merge would replay it.
        return _merge_rollout(rel, base, ours, theirs, notes, history())
    if base == theirs:
        return ours
    if rel.startswith("state/") and rel.endswith(".jsonl"):
        # Appended records: both sides' lines are true.
        have = (theirs or b"").splitlines(keepends=True)
        seen = set(have) | set((base or b"").splitlines(keepends=True))
        out = [line if line.endswith(b"\n") else line + b"\n" for line in have]
        out += [
            line if line.endswith(b"\n") else line + b"\n"
            for line in (ours or b"").splitlines(keepends=True)
            if line not in seen
        ]
        return b"".join(out)
    if rel.startswith("state/") and rel.endswith("/status.yaml"):
        mine = statemerge.last_reconcile((ours or b"").decode("utf-8", "replace"))
        other = statemerge.last_reconcile((theirs or b"").decode("utf-8", "replace"))
        return ours if mine is not None and (other is None or mine >= other) else theirs
    if ours is not None and theirs is not None:
        merged = _three_way(base or b"", ours, theirs)
        if merged is not None:
            return merged
    raise GitOpsError(f"{rel}: changed on both sides, cannot be rebuilt automatically")


def _three_way(base: bytes, ours: bytes, theirs: bytes) -> bytes | None:
    """git's line merge of the three versions; None when it conflicts."""
    with tempfile.TemporaryDirectory(prefix="reconcile-merge-") as tmp:
        paths = []
        for name, data in (("ours", ours), ("base", base), ("theirs", theirs)):
            path = Path(tmp) / name
            path.write_bytes(data)
            paths.append(str(path))
        proc = subprocess.run(
            ["git", "merge-file", "-p", "--quiet", *paths], capture_output=True, check=False
        )
    return proc.stdout if proc.returncode == 0 else None


def _merge_rollout(
    rel: str,
    base: bytes | None,
    ours: bytes,
    theirs: bytes,
    notes: list[str],
    remote_versions: list[bytes],
) -> bytes:
    """A reconciler's rollout edit replayed by meaning on the remote's newer file.

    A rollback (the `rolled_back` block, or `canary_percent` set to 0) is written again when
    the remote still names that canary and never recorded that rollback since `base`; once
    the remote did (another runner's block, then perhaps a human clearing it to retry), the
    remote's file wins. Any other edit yields to the remote's newer desired state.
    """
    try:
        mine: Any = yaml.safe_load(ours)
        other: Any = yaml.safe_load(theirs)
        before: Any = yaml.safe_load(base or b"")
    except yaml.YAMLError:
        mine = other = before = None
    if not isinstance(mine, dict) or not isinstance(other, dict):
        raise GitOpsError(f"{rel}: changed on both sides and not a readable rollout file")
    revisions = other.get("revisions")
    canary = revisions.get("canary") if isinstance(revisions, dict) else None
    if canary and any(_rolls_back(v, canary) for v in remote_versions):
        notes.append(f"{rel}: the remote recorded the rollback of {canary} already; kept its file")
        return theirs
    block = mine.get("rolled_back")
    revision = block.get("revision") if isinstance(block, dict) else None
    if not revision or not isinstance(block, dict):
        was = before.get("canary_percent") if isinstance(before, dict) else None
        mine_revisions = mine.get("revisions")
        my_canary = mine_revisions.get("canary") if isinstance(mine_revisions, dict) else None
        if mine.get("canary_percent") == 0 and was != 0 and canary and canary == my_canary:
            notes.append(f"{rel}: set canary_percent 0 again on the remote's version")
            try:
                return yamledit.set_canary_percent(theirs.decode("utf-8"), 0).encode("utf-8")
            except (ValueError, ReconcileError) as exc:
                raise GitOpsError(f"{rel}: cannot write canary_percent 0 again: {exc}") from None
        merged = _three_way(base or b"", ours, theirs)
        if merged is not None:
            return merged
        notes.append(f"{rel}: kept the remote's version (its desired state is newer)")
        return theirs
    theirs_block = other.get("rolled_back")
    if isinstance(theirs_block, dict) and theirs_block.get("revision") == revision:
        notes.append(f"{rel}: the remote already records the rollback of {revision}")
        return theirs
    if canary != revision:
        notes.append(
            f"{rel}: the remote names canary {canary} instead of {revision}; "
            "kept its version (the rollback stays recorded in state/)"
        )
        return theirs
    at = str(block.get("at", ""))
    try:
        when = datetime.fromisoformat(at.replace("Z", "+00:00"))
        text = yamledit.record_rollback(
            theirs.decode("utf-8"),
            revision=str(revision),
            at=when,
            reason=str(block.get("reason", "")),
        )
    except (ValueError, ReconcileError) as exc:
        raise GitOpsError(f"{rel}: cannot write the rollback again: {exc}") from None
    notes.append(f"{rel}: wrote the rollback of {revision} again on the remote's version")
    return text.encode("utf-8")


def _rolls_back(version: bytes, canary: str) -> bool:
    """Whether a version of a rollout file records a rollback of `canary` (a `rolled_back`
    block naming it, or the canary named at 0%)."""
    try:
        data: Any = yaml.safe_load(version)
    except yaml.YAMLError:
        return False
    if not isinstance(data, dict):
        return False
    block = data.get("rolled_back")
    if isinstance(block, dict) and block.get("revision") == canary:
        return True
    revisions = data.get("revisions")
    named = revisions.get("canary") if isinstance(revisions, dict) else None
    return named == canary and data.get("canary_percent") == 0


def _rebuilt_message(message: str, sha: str, decided: Sequence[str]) -> str:
    """The original message, what the rebuild decided (as body lines, so the record of an
    edit that yielded to the remote stays in history), and a `Reconcile-Rebuilt-From`
    trailer."""
    trailer = f"Reconcile-Rebuilt-From: {sha}"
    text = message.rstrip("\n")
    paragraphs = re.split(r"\n\s*\n", text)
    trailers = paragraphs.pop() if len(paragraphs) > 1 and parse_trailers(text) else ""
    if decided:
        paragraphs.append("Rebuilt on the remote's tip: " + "; ".join(decided))
    paragraphs.append(f"{trailers}\n{trailer}" if trailers else trailer)
    return "\n\n".join(paragraphs) + "\n"


@contextlib.contextmanager
def _union_attributes() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="reconcile-attrs-") as tmp:
        path = Path(tmp) / "attributes"
        path.write_text(UNION_ATTRIBUTES, encoding="utf-8")
        yield str(path)


def _reason(text: str) -> str:
    """The line of git's output that says what went wrong.

    git often ends with advice ("Please make sure ... and the repository exists."), so the
    first `fatal:`/`error:`/`remote:` line wins; `fatal:` and `error:` are dropped because the
    caller's message already says it failed. Otherwise the last non-empty line.
    """
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in lines:
        prefix, sep, rest = line.partition(":")
        if sep and prefix in ("fatal", "error") and rest.strip():
            return rest.strip()
        if sep and prefix == "remote" and rest.strip():
            return line
    return lines[-1] if lines else "unknown error"


def _under(name: str, paths: set[str] | frozenset[str]) -> bool:
    """Whether the repository path `name` is one of `paths` or inside one of them."""
    parts = name.split("/")
    return any("/".join(parts[:i]) in paths for i in range(1, len(parts) + 1))
