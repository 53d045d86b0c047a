"""GitOps against real repositories: a bare remote and clones in temporary directories."""

from __future__ import annotations

import logging
import shutil
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from tests.refs import ION, ION_DIR

from reconciler import yamledit
from reconciler.gitops import (
    DEFAULT_NAME,
    UNION_ATTRIBUTES,
    Action,
    BotIdentity,
    GitOps,
    GitOpsError,
    canary_change,
    format_subject,
    is_reconciler_commit,
    parse_trailers,
    reconcile_trailers,
)
from reconciler.loader import spec_id_of
from reconciler.model import WindowStats
from reconciler.state import append_metrics, metrics_path, read_metrics
from reconciler.testing.git import clone, make_remote, run_git, write

ROLLOUT = "service: ion-api\ncanary_percent: 5  # keep me\n"
BOT = BotIdentity("reconciler-test[bot]", "bot@example.com")


pytestmark = pytest.mark.usefixtures("isolated_git")


@pytest.fixture
def remote(tmp_path: Path) -> Path:
    return make_remote(tmp_path, {"rollout/ion-api.yaml": ROLLOUT, "README.md": "hi\n"})


def _ops(path: Path) -> GitOps:
    return GitOps(path, BOT, backoff=0.01)


def _remote_log(remote: Path, fmt: str = "%s") -> list[str]:
    return run_git(remote, "log", f"--format={fmt}", "main").splitlines()


def _remote_file(remote: Path, rel: str) -> str:
    return run_git(remote, "show", f"main:{rel}")


# --- commit ---------------------------------------------------------------------------------
def test_commit_only_the_given_paths_and_leave_other_changes(remote: Path, tmp_path: Path) -> None:
    work = clone(remote, tmp_path / "a")
    ops = _ops(work)
    write(work, "README.md", "edited by a human, not staged\n")
    write(work, "notes.txt", "staged by a human\n")
    run_git(work, "add", "notes.txt")
    write(work, "state/ion-api/status.yaml", "phase: progressing\n")

    sha = ops.commit(["state/ion-api"], format_subject("ion-api", "record state"))

    assert sha == ops.head()
    changed = run_git(work, "show", "--name-only", "--format=", sha).splitlines()
    assert changed == ["state/ion-api/status.yaml"]
    assert (work / "README.md").read_text() == "edited by a human, not staged\n"
    status = run_git(work, "status", "--porcelain").splitlines()
    assert " M README.md" in status
    assert "A  notes.txt" in status


def test_commit_returns_none_when_nothing_changed(remote: Path, tmp_path: Path) -> None:
    work = clone(remote, tmp_path / "a")
    ops = _ops(work)
    before = ops.head()
    assert ops.commit(["rollout/ion-api.yaml"], "reconcile(ion-api): nothing") is None
    assert ops.commit(["state/never-written"], "reconcile(ion-api): nothing") is None
    write(work, "state/ion-api/events.jsonl", "{}\n")
    assert ops.commit(["state/ion-api"], "reconcile(ion-api): first") is not None
    assert ops.commit(["state/ion-api"], "reconcile(ion-api): again") is None
    assert run_git(work, "rev-list", "--count", f"{before}..HEAD") == "1"


def test_commit_of_a_fleet_run_past_the_command_line_limits(remote: Path, tmp_path: Path) -> None:
    # One run's commit at 2,000 services: a message over the 128 KiB cap of one argument and
    # 2,000 paths; only the named ones are committed.
    work = clone(remote, tmp_path / "a")
    ops = _ops(work)
    names = [f"state/p/r/svc-{i:04d}" for i in range(2000)]
    for name in names:
        write(work, f"{name}/status.yaml", "phase: progressing\n")
    write(work, "state/p/r/other/status.yaml", "not named\n")
    body = "\n".join(f"svc-{i:04d}: observed, {'x' * 60}" for i in range(2000))
    assert len(body) > 128 * 1024

    sha = ops.commit(names, "reconcile: 2000 observed", body)

    assert sha is not None
    changed = run_git(work, "show", "--name-only", "--format=", sha).splitlines()
    assert changed == [f"{name}/status.yaml" for name in names]
    assert run_git(work, "log", "-1", "--format=%b", sha).strip().startswith(body[:200])
    assert "?? state/p/r/other/" in run_git(work, "status", "--porcelain").splitlines()
    # Nothing new is nothing; a change under the last named path alone is seen.
    assert ops.commit(names, "reconcile: again") is None
    write(work, f"{names[-1]}/status.yaml", "phase: done\n")
    assert ops.commit(names, "reconcile: the last one") is not None


def test_commit_records_deletions_inside_a_directory(remote: Path, tmp_path: Path) -> None:
    work = clone(remote, tmp_path / "a")
    ops = _ops(work)
    write(work, "state/ion-api/metrics/2026-01.jsonl", "{}\n")
    write(work, "state/ion-api/metrics/2026-02.jsonl", "{}\n")
    ops.commit(["state/ion-api"], "reconcile(ion-api): metrics")
    (work / "state/ion-api/metrics/2026-01.jsonl").unlink()
    sha = ops.commit([work / "state/ion-api"], "reconcile(ion-api): prune")
    assert sha is not None
    assert run_git(work, "show", "--name-status", "--format=", sha) == (
        "D\tstate/ion-api/metrics/2026-01.jsonl"
    )


def test_commit_message_identity_and_trailers(remote: Path, tmp_path: Path) -> None:
    work = clone(remote, tmp_path / "a")
    ops = _ops(work)
    spec_id = spec_id_of(work / "rollout/ion-api.yaml")
    write(work, "rollout/ion-api.yaml", ROLLOUT.replace("5 ", "10"))
    subject = format_subject("ion-api", canary_change(5, 10, "ion-api-00042-xyz"))
    sha = ops.commit(
        ["rollout/ion-api.yaml"],
        subject,
        body="error_rate 0.2% <= 1% over 3 windows",
        trailers=reconcile_trailers("ion-api", Action.ADVANCE, spec_id),
    )
    assert sha is not None
    message = run_git(work, "log", "-1", "--format=%B", sha)
    assert message.splitlines()[0] == (
        "reconcile(ion-api): canary 5% -> 10% (ion-api-00042-xyz) [skip reconcile]"
    )
    assert parse_trailers(message) == {
        "Reconcile-Service": "ion-api",
        "Reconcile-Action": "advance",
        "Reconcile-Spec": str(spec_id),
        "Reconcile-Skip": "true",
    }
    assert is_reconciler_commit(message)
    who = run_git(work, "log", "-1", "--format=%an <%ae>|%cn <%ce>", sha)
    assert who == "reconciler-test[bot] <bot@example.com>|reconciler-test[bot] <bot@example.com>"
    # The spec's identity is the blob id git gives the file (no git call computes it).
    assert spec_id_of(work / "rollout/ion-api.yaml") == run_git(
        work, "rev-parse", f"{sha}:rollout/ion-api.yaml"
    )


def test_identity_from_environment(
    remote: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RECONCILE_GIT_NAME", "shard-7[bot]")
    monkeypatch.setenv("RECONCILE_GIT_EMAIL", "shard7@example.com")
    work = clone(remote, tmp_path / "a")
    ops = GitOps(work)
    write(work, "state/ion-api/status.yaml", "x\n")
    sha = ops.commit(["state/ion-api"], "reconcile(ion-api): record")
    assert run_git(work, "log", "-1", "--format=%an <%ae>", str(sha)) == (
        "shard-7[bot] <shard7@example.com>"
    )
    monkeypatch.delenv("RECONCILE_GIT_NAME")
    assert BotIdentity.from_env().name == DEFAULT_NAME


def test_promote_commit_has_no_skip_marker(remote: Path, tmp_path: Path) -> None:
    work = clone(remote, tmp_path / "a")
    ops = _ops(work)
    write(work, "rollout/ion-api.yaml", ROLLOUT.replace("5 ", "10"))
    sha = ops.commit(
        ["rollout/ion-api.yaml"],
        format_subject("ion-api", "promote to 10%"),
        trailers=reconcile_trailers("ion-api", Action.PROMOTE),
        skip_reconcile=False,
    )
    message = run_git(work, "log", "-1", "--format=%B", str(sha))
    assert not is_reconciler_commit(message)
    assert parse_trailers(message)["Reconcile-Action"] == "promote"


def test_a_detached_head_is_reattached_before_committing(remote: Path, tmp_path: Path) -> None:
    work = clone(remote, tmp_path / "a")
    run_git(work, "checkout", "--quiet", "--detach")
    ops = _ops(work)
    write(work, "state/ion-api/status.yaml", "x\n")
    sha = ops.commit(["state/ion-api"], "reconcile(ion-api): record")
    assert ops.branch() == "main" and ops.head() == sha
    assert ops.push() is True
    assert _remote_log(remote, "%H")[0] == sha


def test_not_a_repository(tmp_path: Path) -> None:
    with pytest.raises(GitOpsError, match="not a git repository"):
        GitOps(tmp_path)


def test_path_outside_the_repository_is_refused(remote: Path, tmp_path: Path) -> None:
    work = clone(remote, tmp_path / "a")
    with pytest.raises(GitOpsError, match="outside the repository"):
        _ops(work).commit([tmp_path / "elsewhere.txt"], "reconcile(x): no")
    with pytest.raises(GitOpsError, match="not a path inside"):
        _ops(work).commit(["../elsewhere.txt"], "reconcile(x): no")


# --- push -----------------------------------------------------------------------------------
def test_no_remote_commits_locally_and_warns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    work = tmp_path / "solo"
    run_git(tmp_path, "init", "--quiet", "--initial-branch=main", str(work))
    write(work, "README.md", "x\n")
    run_git(work, "add", "README.md")
    run_git(work, "commit", "--quiet", "-m", "init")
    ops = _ops(work)
    write(work, "state/ion-api/status.yaml", "x\n")
    assert ops.commit(["state/ion-api"], "reconcile(ion-api): record") is not None
    with caplog.at_level(logging.WARNING, logger="reconciler.gitops"):
        assert ops.push() is False
        assert ops.pull() == ops.head()
    assert "no remote" in caplog.text


def test_push_creates_the_commit_on_the_remote(remote: Path, tmp_path: Path) -> None:
    work = clone(remote, tmp_path / "a")
    ops = _ops(work)
    write(work, "state/ion-api/status.yaml", "x\n")
    sha = ops.commit(["state/ion-api"], "reconcile(ion-api): record")
    assert ops.push() is True
    assert run_git(remote, "rev-parse", "main") == sha


def test_push_rebases_on_a_non_fast_forward(remote: Path, tmp_path: Path) -> None:
    a, b = _ops(clone(remote, tmp_path / "a")), _ops(clone(remote, tmp_path / "b"))
    write(a.root, "state/api-a/status.yaml", "a\n")
    a.commit(["state/api-a"], "reconcile(api-a): record")
    a.push()
    write(b.root, "state/api-b/status.yaml", "b\n")
    b.commit(["state/api-b"], "reconcile(api-b): record")
    write(b.root, "README.md", "human edit in b, not committed\n")
    assert b.push() is True
    assert _remote_log(remote)[:2] == [
        "reconcile(api-b): record [skip reconcile]",
        "reconcile(api-a): record [skip reconcile]",
    ]
    assert (b.root / "README.md").read_text() == "human edit in b, not committed\n"


def _reconcile_loop(ops: GitOps, service: str, rounds: int, start: threading.Barrier) -> None:
    start.wait(timeout=30)
    for n in range(rounds):
        write(ops.root, f"state/{service}/status.yaml", f"round: {n}\n")
        events = ops.root / "state/shared/events.jsonl"
        existing = events.read_text() if events.exists() else ""
        write(ops.root, "state/shared/events.jsonl", existing + f'{{"by":"{service}","n":{n}}}\n')
        ops.commit([f"state/{service}", "state/shared"], f"reconcile({service}): round {n}")
        ops.push(retries=20)


def test_two_clones_pushing_at_the_same_time_both_land(remote: Path, tmp_path: Path) -> None:
    """Two reconcilers commit and push concurrently; every record of both reaches the remote.

    Both also append to the same events.jsonl: the union merge during rebase keeps both lines.
    """
    rounds = 4
    clones = {s: _ops(clone(remote, tmp_path / s)) for s in ("api-a", "api-b")}
    start = threading.Barrier(len(clones))
    errors: list[BaseException] = []

    def run(service: str) -> None:
        try:
            _reconcile_loop(clones[service], service, rounds, start)
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(s,)) for s in clones]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    subjects = _remote_log(remote)
    for service in clones:
        for n in range(rounds):
            assert f"reconcile({service}): round {n} [skip reconcile]" in subjects
        assert _remote_file(remote, f"state/{service}/status.yaml") == f"round: {rounds - 1}"
    events = _remote_file(remote, "state/shared/events.jsonl").splitlines()
    assert sorted(events) == sorted(
        f'{{"by":"{s}","n":{n}}}' for s in clones for n in range(rounds)
    )
    # Each clone's own order survives the union merges.
    for service in clones:
        mine = [e for e in events if service in e]
        assert mine == [f'{{"by":"{service}","n":{n}}}' for n in range(rounds)]


def test_two_clones_appending_to_one_day_file_both_land(remote: Path, tmp_path: Path) -> None:
    """Two runners record windows of the same rollout and day: the second push rebases on the
    first, and the day file beside status.yaml keeps both lines (union merge)."""
    start = datetime(2026, 5, 1, 12, tzinfo=UTC)
    windows = [
        WindowStats("ion-api", f"ion-api-{rev}", start, start + timedelta(minutes=5), 100, 1, 99)
        for rev in ("00041-abc", "00042-xyz")
    ]
    a, b = (_ops(clone(remote, tmp_path / name)) for name in ("a", "b"))
    for ops, window in ((a, windows[0]), (b, windows[1])):
        append_metrics(ops.root, ION, [window])
        assert ops.commit([ION_DIR], f"reconcile(ion-api): {window.revision}") is not None
    assert a.push() and b.push()
    day_file = metrics_path(remote, ION, start).relative_to(remote).as_posix()
    assert day_file.startswith(f"{ION_DIR}/windows-2026-05-01.")
    assert len(_remote_file(remote, day_file).splitlines()) == 2
    fresh = clone(remote, tmp_path / "fresh")
    assert read_metrics(fresh, ION) == windows
    # A rebase merges the file with git's union driver: the attributes name it.
    attributes = tmp_path / "attributes"
    attributes.write_text(UNION_ATTRIBUTES, encoding="utf-8")
    merge = run_git(
        fresh, "-c", f"core.attributesFile={attributes}", "check-attr", "merge", "--", day_file
    )
    assert merge.strip() == f"{day_file}: merge: union"


def test_a_push_that_loses_the_remote_ref_lock_fetches_and_lands(
    remote: Path, tmp_path: Path
) -> None:
    """Another runner's push moves the branch while ours is being received: git refuses ours
    with "cannot lock ref" ([remote rejected]), not a non-fast-forward. That is the same race
    lost, so the retry must replay on the new tip; retried from the stale base it is refused
    again as a non-fast-forward and a whole attempt is wasted per competing push."""
    other = _ops(clone(remote, tmp_path / "other"))
    write(other.root, "state/api-b/status.yaml", "b\n")
    theirs = other.commit(["state/api-b"], "reconcile(api-b): record")
    run_git(other.root, "push", "--quiet", "origin", "HEAD:refs/heads/side")
    # The remote's update hook lands that commit on main once, between our push's ref check
    # and its ref update, as a concurrent receive-pack would.
    hook = remote / "hooks" / "update"
    write(remote, "race-once", theirs + "\n")
    hook.write_text(
        "#!/bin/sh\n"
        'if [ -f race-once ]; then git update-ref refs/heads/main "$(cat race-once)"; '
        "rm race-once; fi\n"
    )
    hook.chmod(0o755)
    ops = _ops(clone(remote, tmp_path / "a"))
    write(ops.root, "state/api-a/status.yaml", "a\n")
    ops.commit(["state/api-a"], "reconcile(api-a): record")
    assert ops.push(retries=1) is True
    assert _remote_log(remote)[:2] == [
        "reconcile(api-a): record [skip reconcile]",
        "reconcile(api-b): record [skip reconcile]",
    ]


def test_push_to_an_unreachable_remote_fails_and_the_next_call_recovers(
    remote: Path, tmp_path: Path
) -> None:
    ops = _ops(clone(remote, tmp_path / "a"))
    write(ops.root, "state/ion-api/status.yaml", "x\n")
    sha = ops.commit(["state/ion-api"], "reconcile(ion-api): record")
    moved = tmp_path / "moved.git"
    shutil.move(remote, moved)
    with pytest.raises(GitOpsError, match=r"push of main to origin failed after 3 attempts"):
        ops.push(retries=2)
    assert ops.head() == sha  # the record is kept locally

    shutil.move(moved, remote)
    assert ops.push() is True
    assert run_git(remote, "rev-parse", "main") == sha


def test_unpushed_counts_commits_a_failed_push_left_behind(remote: Path, tmp_path: Path) -> None:
    work = clone(remote, tmp_path / "a")
    ops = _ops(work)
    assert ops.unpushed() == 0
    write(work, "state/ion-api/status.yaml", "x\n")
    ops.commit(["state/ion-api"], "reconcile(ion-api): record")
    write(work, "state/ion-api/status.yaml", "y\n")
    ops.commit(["state/ion-api"], "reconcile(ion-api): record again")
    moved = tmp_path / "moved.git"
    shutil.move(remote, moved)
    with pytest.raises(GitOpsError):
        ops.push(retries=0)

    shutil.move(moved, remote)
    next_run = _ops(work)  # a later run that has nothing new to commit
    assert next_run.unpushed() == 2
    assert next_run.push() is True
    assert next_run.unpushed() == 0
    assert run_git(remote, "rev-parse", "main") == next_run.head()


def test_unpushed_is_zero_without_a_remote_or_an_upstream_branch(
    remote: Path, tmp_path: Path
) -> None:
    work = clone(remote, tmp_path / "a")
    run_git(work, "switch", "--quiet", "-c", "feature")
    write(work, "state/ion-api/status.yaml", "x\n")
    ops = _ops(work)
    ops.commit(["state/ion-api"], "reconcile(ion-api): record")
    assert ops.unpushed() == 0  # no origin/feature yet
    run_git(work, "remote", "remove", "origin")
    assert ops.unpushed() == 0


CANARY_FILE = "service: ion-api\nrevisions: {stable: s-1, canary: c-2}\ncanary_percent: 5  # keep\n"
AT = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def _rollback(text: str, at: datetime) -> str:
    return yamledit.record_rollback(text, revision="c-2", at=at, reason="error_rate 7% > 5%")


@pytest.mark.parametrize(
    "theirs",
    [
        lambda t: yamledit.set_canary_percent(t, 10),
        lambda t: _rollback(t, AT + timedelta(seconds=3)),
        lambda t: t.replace("c-2", "c-3"),
    ],
    ids=["advance-vs-rollback", "two-rollbacks-differing-by-time", "new-canary-merged"],
)
def test_a_conflicting_rollback_is_rebuilt_on_the_remote_tip(
    remote: Path, tmp_path: Path, theirs: Callable[[str], str]
) -> None:
    seed = _ops(clone(remote, tmp_path / "human"))
    write(seed.root, "rollout/ion-api.yaml", CANARY_FILE)
    seed.commit(["rollout/ion-api.yaml"], "canary c-2", skip_reconcile=False)
    seed.push()
    a, b = _ops(clone(remote, tmp_path / "a")), _ops(clone(remote, tmp_path / "b"))
    write(a.root, "rollout/ion-api.yaml", theirs(CANARY_FILE))
    write(a.root, "state/ion-api/events.jsonl", '{"n":"a"}\n')
    a.commit(["rollout/ion-api.yaml", "state/ion-api"], "reconcile(ion-api): theirs")
    a.push()
    write(b.root, "rollout/ion-api.yaml", _rollback(CANARY_FILE, AT))
    write(b.root, "state/ion-api/events.jsonl", '{"n":"b"}\n')
    mine = b.commit(["rollout/ion-api.yaml", "state/ion-api"], "reconcile(ion-api): rollback")
    write(b.root, "README.md", "unrelated human edit\n")

    result = b.sync()

    assert result.at_tip and result.rebuilt == (mine,), result
    assert b.push() is True and b.branch() == "main"
    assert not (b.root / ".git/rebase-merge").exists()
    on_remote = yaml.safe_load(_remote_file(remote, "rollout/ion-api.yaml"))
    theirs_data = yaml.safe_load(theirs(CANARY_FILE))
    if theirs_data["revisions"]["canary"] != "c-2":
        assert on_remote == theirs_data  # the remote moved to another canary: its file stays
    elif "rolled_back" in theirs_data:
        assert on_remote == theirs_data  # the same rollback, recorded once (the first)
    else:
        assert on_remote["canary_percent"] == 0 and on_remote["rolled_back"]["revision"] == "c-2"
    # Both runners' records landed, nothing was force-pushed, the commit is kept.
    assert _remote_file(remote, "state/ion-api/events.jsonl").splitlines() == [
        '{"n":"a"}',
        '{"n":"b"}',
    ]
    log_text = run_git(remote, "log", "--format=%B", "main")
    assert f"Reconcile-Rebuilt-From: {mine}" in log_text
    assert "reconcile(ion-api): theirs" in log_text
    assert (b.root / "README.md").read_text() == "unrelated human edit\n"
    assert run_git(b.root, "status", "--porcelain") == " M README.md"


def test_a_conflict_outside_records_aborts_cleanly_and_keeps_the_local_commit(
    remote: Path, tmp_path: Path
) -> None:
    a, b = _ops(clone(remote, tmp_path / "a")), _ops(clone(remote, tmp_path / "b"))
    write(a.root, "README.md", "theirs\n")
    a.commit(["README.md"], "reconcile(ion-api): readme")
    a.push()
    write(b.root, "README.md", "mine\n")
    mine = b.commit(["README.md"], "reconcile(ion-api): readme too")
    write(b.root, "rollout/ion-api.yaml", "unrelated human edit\n")

    with pytest.raises(GitOpsError, match=r"conflicts in README\.md.*rebase aborted"):
        b.push()
    result = b.sync()
    assert not result.at_tip and "README.md: changed on both sides" in result.reason

    assert b.head() == mine
    assert b.branch() == "main"
    assert not (b.root / ".git/rebase-merge").exists()
    assert (b.root / "README.md").read_text() == "mine\n"
    assert run_git(b.root, "status", "--porcelain") == " M rollout/ion-api.yaml"
    assert b.uncommitted(b.root / "rollout") == ["rollout/ion-api.yaml"]
    assert _remote_file(remote, "README.md") == "theirs"


def _status(when: str, phase: str) -> str:
    return f"service: ion-api\nphase: {phase}\nlast_reconcile: '{when}'\n"


EARLY, LATE = "2026-05-01T12:00:00Z", "2026-05-01T12:00:00.250000Z"


@pytest.mark.parametrize(
    ("first", "second", "kept"),
    [
        ((EARLY, "progressing"), (LATE, "rolled_back"), (LATE, "rolled_back")),
        ((LATE, "rolled_back"), (EARLY, "progressing"), (LATE, "rolled_back")),
    ],
    ids=["later-pushes-second", "later-pushes-first"],
)
def test_concurrent_status_writes_keep_the_later_reconcile(
    tmp_path: Path,
    first: tuple[str, str],
    second: tuple[str, str],
    kept: tuple[str, str],
) -> None:
    remote = make_remote(
        tmp_path, {"state/ion-api/status.yaml": _status("2026-05-01T11:00:00Z", "progressing")}
    )
    a, b = _ops(clone(remote, tmp_path / "a")), _ops(clone(remote, tmp_path / "b"))
    write(a.root, "state/ion-api/status.yaml", _status(*first))
    a.commit(["state/ion-api"], "reconcile(ion-api): first")
    assert a.push() is True
    write(b.root, "state/ion-api/status.yaml", _status(*second))
    b.commit(["state/ion-api"], "reconcile(ion-api): second")

    assert b.push() is True

    assert _remote_file(remote, "state/ion-api/status.yaml") == _status(*kept).strip()
    assert run_git(remote, "rev-parse", "main") == b.head()


# --- pull -----------------------------------------------------------------------------------
def test_pull_fast_forwards_and_keeps_unpushed_commits_on_top(remote: Path, tmp_path: Path) -> None:
    a, b = _ops(clone(remote, tmp_path / "a")), _ops(clone(remote, tmp_path / "b"))
    write(a.root, "state/api-a/status.yaml", "a\n")
    pushed = a.commit(["state/api-a"], "reconcile(api-a): record")
    a.push()

    assert b.pull() == pushed  # fast-forward

    write(a.root, "state/api-a/status.yaml", "a2\n")
    a.commit(["state/api-a"], "reconcile(api-a): record 2")
    a.push()
    write(b.root, "state/api-b/status.yaml", "b\n")
    b.commit(["state/api-b"], "reconcile(api-b): unpushed")
    head = b.pull()
    assert run_git(b.root, "log", "-2", "--format=%s", head).splitlines() == [
        "reconcile(api-b): unpushed [skip reconcile]",
        "reconcile(api-a): record 2 [skip reconcile]",
    ]


def test_pull_with_a_missing_remote_branch_does_nothing(remote: Path, tmp_path: Path) -> None:
    work = clone(remote, tmp_path / "a")
    run_git(work, "switch", "--quiet", "-c", "feature")
    ops = _ops(work)
    assert ops.pull() == ops.head()


def test_pull_from_an_unreachable_remote_is_an_error(remote: Path, tmp_path: Path) -> None:
    ops = _ops(clone(remote, tmp_path / "a"))
    shutil.rmtree(remote)
    with pytest.raises(GitOpsError, match="fetch of main from origin failed") as info:
        ops.pull()
    # git's own reason, not the filler line it prints last ("and the repository exists.").
    assert str(info.value).endswith("does not appear to be a git repository"), info.value
    assert "fatal:" not in str(info.value)


def test_push_error_names_the_reason_git_gave(remote: Path, tmp_path: Path) -> None:
    ops = _ops(clone(remote, tmp_path / "a"))
    run_git(ops.root, "remote", "set-url", "origin", str(tmp_path / "missing.git"))
    write(ops.root, "state/ion-api/status.yaml", "x\n")
    ops.commit(["state/ion-api"], "reconcile(ion-api): record")
    with pytest.raises(GitOpsError, match=r"does not appear to be a git repository; the commits"):
        ops.push(retries=0)


# --- branch commits -------------------------------------------------------------------------
def test_commit_to_branch_leaves_the_working_tree_alone(remote: Path, tmp_path: Path) -> None:
    work = clone(remote, tmp_path / "a")
    ops = _ops(work)
    write(work, "README.md", "dirty\n")
    base = ops.head()
    new_text = ROLLOUT.replace("5 ", "10")
    sha = ops.commit_to_branch(
        "promote/ion-api-10",
        {"rollout/ion-api.yaml": new_text, work / "rollout/new.yaml": "x: 1\n"},
        format_subject("ion-api", "promote canary to 10%"),
        trailers=reconcile_trailers("ion-api", Action.PROMOTE),
    )
    assert ops.branch() == "main"
    assert ops.head() == base
    assert (work / "rollout/ion-api.yaml").read_text() == ROLLOUT
    assert run_git(work, "status", "--porcelain") == " M README.md"
    assert run_git(remote, "rev-parse", "promote/ion-api-10") == sha
    assert run_git(remote, "rev-parse", "promote/ion-api-10^") == base
    assert run_git(remote, "show", "promote/ion-api-10:rollout/ion-api.yaml") == new_text.strip()
    message = run_git(remote, "log", "-1", "--format=%B", sha)
    assert not is_reconciler_commit(message)
    assert run_git(remote, "show", "--name-only", "--format=", sha).splitlines() == [
        "rollout/ion-api.yaml",
        "rollout/new.yaml",
    ]

    with pytest.raises(GitOpsError, match="already exists"):
        ops.commit_to_branch("promote/ion-api-10", {"rollout/ion-api.yaml": "y\n"}, "again")
    with pytest.raises(GitOpsError, match="not a valid branch name"):
        ops.commit_to_branch("bad..name", {"rollout/ion-api.yaml": "y\n"}, "again")


def test_commit_to_branch_refuses_to_overwrite_a_remote_branch(
    remote: Path, tmp_path: Path
) -> None:
    a, b = _ops(clone(remote, tmp_path / "a")), _ops(clone(remote, tmp_path / "b"))
    first = a.commit_to_branch("promote/x", {"rollout/ion-api.yaml": "a\n"}, "promote a")
    with pytest.raises(GitOpsError, match="push of new branch promote/x"):
        b.commit_to_branch("promote/x", {"rollout/ion-api.yaml": "b\n"}, "promote b")
    assert run_git(remote, "rev-parse", "promote/x") == first
