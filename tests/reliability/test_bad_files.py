"""Every bad rollout file of the corpus: `reconcile apply` exits 1 and makes no API write.

Each file of tests/data/bad/ is committed as the service's rollout file (its own service and
revision names changed to ion-api's, so the file's one flaw is the only one and the revisions
it names exist). The emulator's `write_attempts` counts every UpdateService it received.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.cli import main
from reconciler.errors import ReconcileError
from reconciler.loader import load_spec
from reconciler.sandbox import Sandbox, example_rollout, sandbox

from .support import CANARY, reconcile_cli

BAD = Path(__file__).resolve().parents[1] / "data" / "bad"
FILES = sorted(BAD.glob("*.yaml"))
KEEP_NAME = {"name-mismatch"}
"""Files whose flaw is their file name: copied under their own name, not as ion-api.yaml."""
CLI_SAMPLE = ("alias-bomb", "duplicate-key", "latin1", "service-path-escape", "yaml11-no")


@pytest.fixture(scope="module")
def sb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    with sandbox(tmp_path_factory.mktemp("bad-files")) as s:
        s.emu.behave(CANARY, error_rate=0.0)
        yield s


def as_ion_api(path: Path) -> tuple[str, bytes]:
    """The rollout path and the bytes to commit for one bad file."""
    data = path.read_bytes()
    if path.stem in KEEP_NAME:
        return f"{path.stem}.yaml", data
    return "ion-api.yaml", data.replace(path.stem.encode(), b"ion-api")


def install(sb: Sandbox, path: Path) -> Path:
    """Commit and push `path` as the only rollout file of the sandbox repo."""
    name, data = as_ion_api(path)
    for old in (sb.repo / "rollout").iterdir():
        old.unlink()
    target = sb.repo / "rollout" / name
    target.write_bytes(data)
    sb.git("add", "--all", "rollout")
    sb.git("commit", "--quiet", "--allow-empty", "-m", f"rollout: {path.stem}")
    sb.git("push", "--quiet", "origin", "main")
    return target


def test_the_corpus_is_what_this_suite_thinks() -> None:
    assert len(FILES) >= 50
    assert {f"{s}.yaml" for s in CLI_SAMPLE} <= {p.name for p in FILES}


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_bad_file_exits_1_without_any_api_write(sb: Sandbox, path: Path) -> None:
    target = install(sb, path)
    # Still bad after the renaming (else this case would prove nothing).
    with pytest.raises(ReconcileError):
        load_spec(target)
    attempts = sb.emu.write_attempts
    if path.stem in CLI_SAMPLE:
        proc = reconcile_cli(sb.repo, "apply")
        code, err = proc.returncode, proc.stderr
        assert "Traceback" not in err, err
    else:
        code = main(["--repo", str(sb.repo), "apply"])
    assert code == 1
    assert sb.emu.write_attempts == attempts, "an API write was attempted"
    assert sb.emu.writes == 0


def test_the_harness_can_see_a_write(sb: Sandbox) -> None:
    """The same harness with a good file: apply writes (so the zeros above mean something)."""
    good = sb.repo / "good.yaml"
    good.write_text(example_rollout(sb.emu), encoding="utf-8")
    try:
        install(sb, good)
    finally:
        good.unlink()
    assert main(["--repo", str(sb.repo), "apply"]) == 0
    assert sb.emu.write_attempts >= 1 and sb.emu.writes == 1
