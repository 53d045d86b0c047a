"""kill -9 in the middle of git never wedges the clone: a real process committing, pushing or
rebasing through `GitOps` is killed with its whole process group (git and its hooks
included), and the next run repairs the clone by itself and lands every record.

Hooks in the clone's `.git/hooks` hold git at the exact point to kill in: `pre-commit` runs
while `index.lock` is held, `pre-push` while the push is under way, and `reference-transaction`
while a rebase is half done (HEAD detached, `rebase-merge/` present).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import reconciler
from reconciler.gitops import BotIdentity, GitOps
from reconciler.testing.git import clone, make_remote, run_git, write

BOT = BotIdentity("reconciler-test[bot]", "bot@example.com")
HOLD = "#!/bin/sh\n{condition}sleep 60\n"


pytestmark = pytest.mark.usefixtures("isolated_git")


@pytest.fixture
def remote(tmp_path: Path) -> Path:
    return make_remote(
        tmp_path, {"rollout/ion-api.yaml": "service: ion-api\n", "README.md": "hi\n"}
    )


def _hook(repo: Path, name: str, condition: str = "") -> Path:
    path = repo / ".git" / "hooks" / name
    path.write_text(HOLD.format(condition=condition))
    path.chmod(0o755)
    return path


SCRIPT = """
import sys
from reconciler.gitops import BotIdentity, GitOps
ops = GitOps(sys.argv[1], BotIdentity("reconciler-test[bot]", "bot@example.com"), backoff=0.01)
if sys.argv[2] == "commit":
    ops.commit(["state/ion-api"], "reconcile(ion-api): observed state")
ops.push()
"""


def _group_alive(pgid: int) -> bool:
    """Whether a process of group `pgid` still runs (zombies excluded: they hold no working
    directory, so `GitOps` no longer counts them as a git at work)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue  # gone meanwhile
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL `proc`'s whole group and wait until every member is dead, not only `proc`:
    a killed git still counts as a live git in the clone (and `GitOps` rightly leaves its
    locks alone) until the kernel has torn it down, which under load can come after `proc`
    has been reaped."""
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    deadline = time.monotonic() + 30
    while _group_alive(proc.pid):
        assert time.monotonic() < deadline, "a killed process outlived SIGKILL"
        time.sleep(0.01)


@pytest.fixture
def killed() -> Iterator[Callable[[Path, str, Callable[[], bool]], None]]:
    """Run `GitOps` commit+push (or push) in a new process group; SIGKILL the whole group
    once `ready()` holds (git is inside the hook)."""
    started: list[subprocess.Popen[bytes]] = []

    def run(repo: Path, what: str, ready: Callable[[], bool]) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = str(Path(reconciler.__file__).resolve().parents[1])
        proc = subprocess.Popen(
            [sys.executable, "-c", SCRIPT, str(repo), what],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        started.append(proc)
        deadline = time.monotonic() + 30
        while not ready():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "git never reached the hook"
            time.sleep(0.02)
        _kill_group(proc)

    yield run
    for proc in started:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def _hooked(repo: Path, name: str) -> Callable[[], bool]:
    """True once a hook's `sleep` runs (its marker file appears)."""
    marker = repo / ".git" / f"in-{name}"
    hook = repo / ".git" / "hooks" / name
    hook.write_text(hook.read_text().replace("sleep 60", f"touch {marker}; sleep 60"))
    return marker.exists


def _remote_subjects(remote: Path) -> list[str]:
    return run_git(remote, "log", "--format=%s", "main").splitlines()


def test_kill_during_commit_leaves_a_lock_the_next_run_clears(
    remote: Path, tmp_path: Path, killed: Callable[[Path, str, Callable[[], bool]], None]
) -> None:
    work = clone(remote, tmp_path / "a")
    _hook(work, "pre-commit")
    write(work, "state/ion-api/status.yaml", "phase: progressing\n")
    killed(work, "commit", _hooked(work, "pre-commit"))
    (work / ".git" / "hooks" / "pre-commit").unlink()
    assert (work / ".git" / "index.lock").exists()  # wedged: every git write fails now
    assert subprocess.run(["git", "add", "-A"], cwd=work, capture_output=True).returncode != 0

    ops = GitOps(work, BOT, backoff=0.01, lock_grace=0.0)
    result = ops.sync()
    assert result.at_tip, result
    assert "removed stale index.lock" in result.repaired
    assert ops.commit(["state/ion-api"], "reconcile(ion-api): observed state") is not None
    assert ops.push() is True
    assert _remote_subjects(remote)[0].startswith("reconcile(ion-api): observed state")


def test_a_lock_a_live_git_holds_is_left_alone(remote: Path, tmp_path: Path) -> None:
    work = clone(remote, tmp_path / "a")
    _hook(work, "pre-commit")
    ready = _hooked(work, "pre-commit")
    write(work, "notes.txt", "x\n")
    run_git(work, "add", "notes.txt")
    human = subprocess.Popen(
        ["git", "-c", "user.name=h", "-c", "user.email=h@x", "commit", "-qm", "h", "notes.txt"],
        cwd=work,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not ready():
            assert time.monotonic() < deadline
            time.sleep(0.02)
        locks = sorted((work / ".git").glob("*.lock"))
        assert locks, "git holds a lock while its pre-commit hook runs"
        ops = GitOps(work, BOT, lock_grace=0.0)
        assert ops.repair() == []
        assert all(lock.exists() for lock in locks)
    finally:
        os.killpg(human.pid, signal.SIGKILL)
        human.wait(timeout=10)


def test_kill_during_push_loses_nothing(
    remote: Path, tmp_path: Path, killed: Callable[[Path, str, Callable[[], bool]], None]
) -> None:
    work = clone(remote, tmp_path / "a")
    _hook(work, "pre-push")
    write(work, "state/ion-api/status.yaml", "phase: progressing\n")
    killed(work, "commit", _hooked(work, "pre-push"))
    (work / ".git" / "hooks" / "pre-push").unlink()
    ops = GitOps(work, BOT, backoff=0.01, lock_grace=0.0)
    assert ops.unpushed() == 1  # committed, never pushed
    assert ops.sync().at_tip
    assert ops.push() is True
    assert _remote_subjects(remote)[0].startswith("reconcile(ion-api): observed state")


def test_kill_during_the_rebase_of_a_rejected_push_is_repaired(
    remote: Path, tmp_path: Path, killed: Callable[[Path, str, Callable[[], bool]], None]
) -> None:
    work = clone(remote, tmp_path / "a")
    other = GitOps(clone(remote, tmp_path / "other"), BOT)
    write(other.root, "state/payments-api/status.yaml", "phase: progressing\n")
    other.commit(["state/payments-api"], "reconcile(payments-api): observed state")
    other.push()
    write(work, "state/ion-api/status.yaml", "phase: progressing\n")
    GitOps(work, BOT).commit(["state/ion-api"], "reconcile(ion-api): observed state")
    # Rejected (the other runner pushed first): fetch, rebase ... killed mid-rebase.
    # Held once the rebase has detached HEAD (the state a kill leaves at its worst).
    _hook(
        work,
        "reference-transaction",
        condition="[ -d .git/rebase-merge ] || exit 0\ngrep -q '^ref:' .git/HEAD && exit 0\n",
    )
    killed(work, "push", _hooked(work, "reference-transaction"))
    (work / ".git" / "hooks" / "reference-transaction").unlink()
    assert (work / ".git" / "rebase-merge").exists()
    ops = GitOps(work, BOT, backoff=0.01, lock_grace=0.0)
    detached = subprocess.run(["git", "symbolic-ref", "-q", "HEAD"], cwd=work).returncode != 0
    assert detached

    result = ops.sync()
    assert result.at_tip, result
    assert "aborted a rebase in progress" in result.repaired
    assert ops.branch() == "main" and ops.push() is True
    subjects = _remote_subjects(remote)
    assert subjects[0].startswith("reconcile(ion-api)")
    assert subjects[1].startswith("reconcile(payments-api)")
    assert run_git(remote, "log", "--merges", "--format=%h", "main") == ""


@pytest.mark.parametrize("when", [0.05, 0.15, 0.3, 0.6, 1.0], ids=lambda s: f"{s}s")
def test_kill_at_any_moment_of_commit_and_push_never_wedges(
    remote: Path, tmp_path: Path, when: float
) -> None:
    """No hook: SIGKILL after `when` seconds of a real commit+push, wherever that lands."""
    work = clone(remote, tmp_path / "a")
    other = GitOps(clone(remote, tmp_path / "other"), BOT)
    write(other.root, "state/payments-api/status.yaml", "phase: progressing\n")
    other.commit(["state/payments-api"], "reconcile(payments-api): observed state")
    other.push()  # so the killed push is rejected, and fetches and rebases
    write(work, "state/ion-api/status.yaml", "phase: progressing\n")
    env = dict(os.environ)
    env["PYTHONPATH"] = str(Path(reconciler.__file__).resolve().parents[1])
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, str(work), "commit"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    time.sleep(when)
    if proc.poll() is None:
        _kill_group(proc)
    proc.wait(timeout=30)

    ops = GitOps(work, BOT, backoff=0.01, lock_grace=0.0)
    assert ops.sync().at_tip
    ops.commit(["state/ion-api"], "reconcile(ion-api): observed state")
    assert ops.push() is True
    subjects = _remote_subjects(remote)
    assert sum(s.startswith("reconcile(ion-api): observed state") for s in subjects) == 1
    assert run_git(remote, "show", "main:state/ion-api/status.yaml") == "phase: progressing"
