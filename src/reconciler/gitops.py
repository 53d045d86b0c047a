"""Commit what the reconciler did and push it, without ever losing or overwriting a record.

`GitOps` wraps one working tree (gitpython, running the `git` binary):

- `commit(paths, subject, ...)` commits only the given paths (state files, a rollout file),
  never unrelated changes in the tree, and nothing at all when they did not change.
- `push()` pushes the current branch; a non-fast-forward (another reconciler pushed first)
  fetches, rebases and retries, bounded, with a short jittered backoff. It never force-pushes.
  A rebase conflict aborts the rebase, keeps the local commit and raises `ReconcileError`.
- `pull()` brings the branch up to date before a run.
- `unpushed()` counts local commits the remote does not have yet (an earlier push failed).
- `commit_to_branch(name, files, ...)` writes a commit on a new branch (for a pull request)
  without touching the working tree or the current branch.

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
import enum
import logging
import os
import random
import re
import shlex
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import git

from reconciler import redact
from reconciler.errors import ReconcileError

__all__ = [
    "DEFAULT_EMAIL",
    "DEFAULT_NAME",
    "SKIP_MARKER",
    "SKIP_TRAILER",
    "Action",
    "BotIdentity",
    "GitOps",
    "GitOpsError",
    "canary_change",
    "format_message",
    "format_subject",
    "is_reconciler_commit",
    "parse_trailers",
    "reconcile_trailers",
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
_REJECTED = ("[rejected]", "non-fast-forward", "fetch first")


class GitOpsError(ReconcileError):
    """A git operation the operator has to look at (names the repository or branch)."""


class Action(enum.Enum):
    """What a reconciler commit records (the `Reconcile-Action` trailer)."""

    APPLY = "apply"
    DRIFT = "drift"
    ADVANCE = "advance"
    ROLLBACK = "rollback"
    PROMOTE = "promote"
    FINALIZE = "finalize"
    RECORD = "record"


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


def reconcile_trailers(
    service: str, action: Action, spec_commit: str | None = None
) -> dict[str, str]:
    """The structured trailers of a reconciler commit."""
    out = {"Reconcile-Service": service, "Reconcile-Action": action.value}
    if spec_commit:
        out["Reconcile-Spec-Commit"] = spec_commit
    return out


def format_message(
    subject: str,
    body: str = "",
    trailers: Mapping[str, str] | None = None,
    *,
    skip_reconcile: bool = True,
) -> str:
    """Subject, optional body, trailers; with the skip marker unless `skip_reconcile=False`."""
    # Commit messages reach the remote's history: scrubbed like every other sink.
    subject = " ".join(redact.scrub(subject).split())
    body = redact.scrub(body)
    if not subject:
        raise ValueError("a commit needs a subject")
    all_trailers = {k: redact.scrub(v) for k, v in (trailers or {}).items()}
    if skip_reconcile:
        if SKIP_MARKER not in subject:
            subject = f"{subject} {SKIP_MARKER}"
        all_trailers[SKIP_TRAILER] = "true"
    for key, value in all_trailers.items():
        if not _TRAILER_KEY.match(key) or "\n" in value or not value.strip():
            raise ValueError(f"invalid trailer {key!r}: {value!r}")
    parts = [subject]
    if body.strip():
        parts.append(body.strip("\n"))
    if all_trailers:
        parts.append("\n".join(f"{k}: {v}" for k, v in all_trailers.items()))
    return "\n\n".join(parts) + "\n"


def parse_trailers(message: str) -> dict[str, str]:
    """The trailers of a commit message: its last paragraph when every line is `Key: value`."""
    paragraphs = [p for p in re.split(r"\n\s*\n", message.strip()) if p.strip()]
    if len(paragraphs) < 2:
        return {}
    out = {}
    for line in paragraphs[-1].splitlines():
        m = _TRAILER_LINE.match(line.strip())
        if not m:
            return {}
        out[m.group(1)] = m.group(2).strip()
    return out


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
    ) -> None:
        """Open the working tree at `repo_path` (its top level).

        `identity` defaults to `BotIdentity.from_env()`. `backoff` is the first retry delay
        of `push` in seconds; it doubles per attempt (capped at 4 s) with jitter.
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
        _, out, _ = self._git(
            "--literal-pathspecs",
            "status",
            "--porcelain",
            "--untracked-files=all",
            "--",
            self._rel(path),
        )
        return [line[3:] for line in out.splitlines() if line.strip()]

    def last_commit_touching(self, path: Path | str) -> str | None:
        """The newest commit on HEAD that changed `path` (the spec commit applied), if any."""
        status, out, _ = self._git(
            "--literal-pathspecs", "log", "-1", "--format=%H", "HEAD", "--", self._rel(path)
        )
        return (out or None) if status == 0 else None

    # --- writing ----------------------------------------------------------------------------
    def commit(
        self,
        paths: Iterable[Path | str],
        subject: str,
        body: str = "",
        trailers: Mapping[str, str] | None = None,
        *,
        skip_reconcile: bool = True,
    ) -> str | None:
        """Commit the current content of `paths` (files or directories, additions and
        deletions) and nothing else; returns the new sha, or None when nothing changed.

        Other changes in the working tree or the index, staged or not, stay as they are.
        The message is `format_message(subject, body, trailers, skip_reconcile=...)`.
        """
        self.branch()
        message = format_message(subject, body, trailers, skip_reconcile=skip_reconcile)
        rel = sorted({self._rel(p) for p in paths})
        known = [p for p in rel if (self.root / p).exists() or self._tracked(p)]
        if not known:
            return None
        self._check("--literal-pathspecs", "add", "--all", "--", *known)
        status, _, _ = self._git("--literal-pathspecs", "diff", "--cached", "--quiet", "--", *known)
        if status == 0:
            return None
        self._check(
            "--literal-pathspecs",
            "commit",
            "--only",
            "--quiet",
            "--cleanup=whitespace",
            "-m",
            message,
            "--",
            *known,
            env=self.identity.env(),
        )
        return self.head()

    def push(self, retries: int = 5) -> bool:
        """Push the current branch; on a non-fast-forward fetch, rebase and retry.

        Bounded: at most `retries` retries after the first attempt, for rejections and for
        transient failures (unreachable remote) alike. Returns False (with a warning) when
        no remote is configured. A rebase conflict raises at once; the local commits stay.
        """
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
                self._rebase(branch)
        raise GitOpsError(
            f"push of {branch} to {self.remote} failed after {retries + 1} attempts: {error}; "
            "the commits are kept locally, the next run pushes them"
        )

    def pull(self) -> str:
        """Rebase the current branch on its remote counterpart before a run; returns HEAD.

        Local commits that were not pushed yet are kept on top. Without a remote, or when
        the remote has no such branch yet, nothing happens.
        """
        branch = self.branch()
        if not self.has_remote():
            log.warning("%s: no remote %r; not pulling", self.root, self.remote)
            return self.head()
        status, _, err = self._fetch_raw(branch)
        if status != 0:
            if "couldn't find remote ref" in err:
                return self.head()
            raise GitOpsError(f"fetch of {branch} from {self.remote} failed: {_reason(err)}")
        self._rebase(branch)
        return self.head()

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
    def _git(self, *args: str, env: Mapping[str, str] | None = None) -> tuple[int, str, str]:
        status, out, err = self._repo.git.execute(
            ["git", *args],
            with_extended_output=True,
            with_exceptions=False,
            env=dict(env or {}),
        )
        return int(status), str(out).strip(), str(err).strip()

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
        raise GitOpsError(
            f"{self.root}: rebase of {branch} on {self.remote}/{branch} failed ({what}); "
            "rebase aborted, local commits kept: resolve by hand, then push"
        )

    def _rebasing(self) -> bool:
        git_dir = Path(self._repo.git_dir)
        return (git_dir / "rebase-merge").exists() or (git_dir / "rebase-apply").exists()

    def _sleep(self, attempt: int) -> None:
        delay = min(self.backoff * 2 ** (attempt - 1), 4.0)
        # Jitter keeps concurrent reconcilers from retrying in lockstep.
        time.sleep(delay * random.uniform(0.5, 1.5))


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
