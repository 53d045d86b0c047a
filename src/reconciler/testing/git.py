"""Real git repositories in temporary directories, isolated from the user's git config.

Typical use in a pytest fixture:

    for key, value in git_environment(tmp_path / "home").items():
        if value is None:
            monkeypatch.delenv(key)
        else:
            monkeypatch.setenv(key, value)
    remote = make_remote(tmp_path, {"rollout/ion-api.yaml": text})
    work = clone(remote, tmp_path / "a")

Nothing here mocks git: every function runs the `git` binary.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from pathlib import Path

from reconciler.testing.env import set_env

__all__ = [
    "TEST_EMAIL",
    "TEST_NAME",
    "clone",
    "git_environment",
    "isolate_git",
    "make_remote",
    "run_git",
    "write",
]

TEST_NAME = "Test Human"
TEST_EMAIL = "human@example.com"


def git_environment(home: Path, environ: Mapping[str, str] | None = None) -> dict[str, str | None]:
    """Environment changes that isolate git: every leaked `GIT_*` variable unset (None),
    `HOME` and `XDG_CONFIG_HOME` in `home` (created), system config ignored.

    A git hook or CI runner exports variables like `GIT_DIR` or `GIT_INDEX_FILE` that would
    silently point the tests at another repository; a real `~/.gitconfig` would change
    defaults (branch names, signing, hooks).
    """
    env = os.environ if environ is None else environ
    home.mkdir(parents=True, exist_ok=True)
    (home / ".config").mkdir(exist_ok=True)
    changes: dict[str, str | None] = {k: None for k in env if k.startswith("GIT_")}
    changes.update(
        {
            "HOME": str(home),
            "XDG_CONFIG_HOME": str(home / ".config"),
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_TERMINAL_PROMPT": "0",
        }
    )
    return changes


def isolate_git(home: Path) -> None:
    """Isolate git (`git_environment(home)`) for the rest of this process: for scripts that
    own their process, such as the benchmarks; a test changes its environment for itself
    (pytest's `monkeypatch`, or `testing.env.isolated_env`)."""
    set_env(git_environment(home))


def run_git(cwd: Path, *args: str) -> str:
    """Run git as a human would (test identity); stdout without its final newline.

    Raises RuntimeError on failure.
    """
    proc = subprocess.run(
        ["git", "-c", f"user.name={TEST_NAME}", "-c", f"user.email={TEST_EMAIL}", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed in {cwd}: {proc.stderr.strip()}")
    return proc.stdout.rstrip("\n")


def write(repo: Path, rel: str, text: str) -> Path:
    """Write `text` to `repo/rel`, creating directories; returns the path."""
    path = repo / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def make_remote(
    base: Path, files: Mapping[str, str] | None = None, *, branch: str = "main"
) -> Path:
    """A bare repository `base/remote.git` whose `branch` holds one commit with `files`."""
    remote = base / "remote.git"
    run_git(base, "init", "--quiet", "--bare", f"--initial-branch={branch}", str(remote))
    seed = base / "seed"
    run_git(base, "init", "--quiet", f"--initial-branch={branch}", str(seed))
    for rel, text in (files or {"README.md": "seed\n"}).items():
        write(seed, rel, text)
    run_git(seed, "add", "--all")
    run_git(seed, "commit", "--quiet", "-m", "seed")
    run_git(seed, "push", "--quiet", str(remote), f"{branch}:{branch}")
    return remote


def clone(remote: Path, dest: Path, *, branch: str = "main") -> Path:
    """A working clone of `remote` at `dest` on `branch`."""
    run_git(dest.parent, "clone", "--quiet", "--branch", branch, str(remote), str(dest))
    return dest
