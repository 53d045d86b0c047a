"""Names that try to leave state/ (or rollout/): path separators, `..`, absolute paths.

Every way a name reaches the reconciler - a command argument, `--service`, the `service:` of
a rollout file - is rejected with exit 1, and nothing is read or written outside the repo.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.cli import main
from reconciler.sandbox import Sandbox, example_rollout, sandbox
from reconciler.state import StateError, state_dir
from tests.refs import ref

from .support import CANARY, reconcile_cli


@pytest.fixture(scope="module")
def sb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    with sandbox(tmp_path_factory.mktemp("names")) as s:
        s.emu.behave(CANARY, error_rate=0.0)
        # A valid rollout file outside the repo, where an escaping name would find it.
        outside = s.base / "outside"
        outside.mkdir()
        (outside / "ion-api.yaml").write_text(example_rollout(s.emu), encoding="utf-8")
        yield s


def snapshot(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if ".git" not in p.parts}


ESCAPES = ["../outside/ion-api", "../../etc", "a/b", "ion-api/..", "..", "/abs/ion-api"]


def commands(sb: Sandbox, name: str) -> list[list[str]]:
    absolute = str(sb.base / "outside" / "ion-api") if name == "/abs/ion-api" else name
    return [
        ["apply", "--service", absolute],
        ["plan", "--service", absolute],
        ["status", "--service", absolute],
        ["rollback", absolute, "--force"],
        ["promote", absolute],
        ["report", absolute, "--kind", "interim"],
        ["probe", absolute],
        ["bench", absolute, "--iterations", "1"],
    ]


@pytest.mark.parametrize("name", ESCAPES, ids=ESCAPES)
def test_escaping_names_are_rejected_everywhere(sb: Sandbox, name: str) -> None:
    before_repo, before_base = snapshot(sb.repo), snapshot(sb.base)
    attempts = sb.emu.write_attempts
    for argv in commands(sb, name):
        code = main(["--repo", str(sb.repo), *argv])
        assert code == 1, argv
    assert snapshot(sb.repo) == before_repo, "something was written in the repo"
    assert snapshot(sb.base) == before_base, "something was written outside the repo"
    assert sb.emu.write_attempts == attempts


def test_a_fresh_process_says_why_in_one_line(sb: Sandbox) -> None:
    proc = reconcile_cli(sb.repo, "bench", str(sb.base / "outside" / "ion-api"))
    assert proc.returncode == 1
    assert "is not a Cloud Run service id" in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    proc = reconcile_cli(sb.repo, "apply", "--service", "../outside/*")
    assert proc.returncode == 1 and "not a path" in proc.stderr


@pytest.mark.parametrize(
    "service", ["../../etc", "a/b", "..", "/etc", "ion-api\n", "ION-API", ""], ids=repr
)
def test_state_dir_refuses_a_name_that_is_not_a_service_id(tmp_path: Path, service: str) -> None:
    with pytest.raises(StateError):
        state_dir(tmp_path, ref(service))


def test_a_rollout_file_naming_an_escaping_service_is_invalid(sb: Sandbox) -> None:
    bad = sb.repo / "rollout" / "etc.yaml"
    bad.write_text(
        example_rollout(sb.emu).replace("service: ion-api", "service: ../../etc"), encoding="utf-8"
    )
    try:
        before = snapshot(sb.base)
        assert main(["--repo", str(sb.repo), "apply", "--service", "etc", "--no-commit"]) == 1
        assert snapshot(sb.base) == before
        assert not (sb.base / "etc").exists()
    finally:
        bad.unlink()
