"""`reconcile validate` and `reconcile schema` as a user types them (a real subprocess)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "rollout" / "ion-api.yaml"
BAD = ROOT / "tests" / "data" / "bad"


def reconcile(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GIT_", "CLOUD_RUN_"))}
    return subprocess.run(
        [sys.executable, "-m", "reconciler", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A working tree with the example rollout file."""
    (tmp_path / "rollout").mkdir()
    shutil.copy(EXAMPLE, tmp_path / "rollout" / "ion-api.yaml")
    return tmp_path


def assert_error_lines(stderr: str, count: int) -> list[str]:
    """`count` lines `path:line: message` (every file invalid), the summary, no traceback."""
    assert "Traceback" not in stderr
    lines = stderr.splitlines()
    assert len(lines) == count + 1, stderr
    for line in lines[:-1]:
        assert re.match(r"^[^:\s]+\.ya?ml:\d+: \S", line), line
    assert lines[-1] == f"error: {count} of {count} rollout files invalid"
    return lines[:-1]


def test_validate_defaults_to_every_rollout_file(repo: Path) -> None:
    result = reconcile("validate", cwd=repo)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "rollout/ion-api.yaml: ok (ion-api, canary 5%)\n"
    assert result.stderr == ""


def test_validate_with_repo_option(repo: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    result = reconcile("--repo", str(repo), "validate", cwd=elsewhere)
    assert result.returncode == 0, result.stderr
    assert "ion-api.yaml: ok" in result.stdout


def test_one_bad_file_among_good_ones(repo: Path) -> None:
    bad = repo / "rollout" / "payments.yaml"
    bad.write_text(
        EXAMPLE.read_text().replace("ion-api", "payments").replace("max: 20s", "max: 20")
    )
    result = reconcile("validate", cwd=repo)
    assert result.returncode == 1
    assert result.stdout == "rollout/ion-api.yaml: ok (ion-api, canary 5%)\n"
    assert result.stderr.splitlines() == [
        "rollout/payments.yaml:20: gates.latency_p95.max: expected a latency like '20s' "
        "(ms, s, m), got 20",
        "error: 1 of 2 rollout files invalid",
    ]


def test_every_bad_file_is_one_line(repo: Path) -> None:
    result = reconcile("validate", str(BAD), cwd=repo)
    assert result.returncode == 1
    assert result.stdout == ""
    names = sorted(p.name for p in BAD.iterdir())
    lines = assert_error_lines(result.stderr, len(names))
    assert [Path(line.split(":", 1)[0]).name for line in lines] == names


def test_missing_path_is_one_clear_line(repo: Path) -> None:
    result = reconcile("validate", "rollout/ion-api.yaml", "rollout/nope.yaml", cwd=repo)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "rollout/nope.yaml: no such file or directory",
        "error: 1 of 2 rollout files invalid",
    ]


def test_missing_rollout_directory(tmp_path: Path) -> None:
    result = reconcile("validate", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr == (
        "error: rollout: no such directory; run in the repository or use --repo\n"
    )


def test_empty_rollout_directory(tmp_path: Path) -> None:
    (tmp_path / "rollout").mkdir()
    result = reconcile("validate", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr == "error: rollout: no rollout files (*.yaml) found\n"


def test_validate_does_not_import_cloud_clients(repo: Path) -> None:
    # `validate` must start fast: the Google clients alone take about a second to import.
    env = {**os.environ, "PYTHONPROFILEIMPORTTIME": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "reconciler", "validate"],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines()}
    assert "reconciler.loader" in imported
    heavy = sorted(m for m in imported if m.split(".")[0] in ("google", "grpc", "git", "httpx"))
    assert heavy == []


@pytest.mark.parametrize("command", ["validate", "schema"])
def test_help_teaches_with_an_example(command: str, repo: Path) -> None:
    result = reconcile(command, "--help", cwd=repo)
    assert result.returncode == 0
    assert "Example" in result.stdout
    assert f"reconcile {command}" in result.stdout


def test_schema_prints_json_schema(repo: Path) -> None:
    result = reconcile("schema", cwd=repo)
    assert result.returncode == 0, result.stderr
    schema = json.loads(result.stdout)
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    assert result.stdout == (ROOT / "schema" / "rollout.schema.json").read_text(encoding="utf-8")


def test_schema_out_writes_a_file(repo: Path) -> None:
    result = reconcile("schema", "--out", "rollout.schema.json", cwd=repo)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert result.stderr == "wrote rollout.schema.json\n"
    assert json.loads((repo / "rollout.schema.json").read_text())["type"] == "object"


def test_schema_out_to_a_missing_directory_is_one_line(repo: Path) -> None:
    result = reconcile("schema", "--out", "nowhere/rollout.schema.json", cwd=repo)
    assert result.returncode == 1
    assert result.stderr.startswith("error: nowhere/rollout.schema.json: cannot write:")
    assert len(result.stderr.splitlines()) == 1


def test_help_loads_no_heavy_module() -> None:
    """`reconcile --help` starts fast because the commands import their work inside."""
    code = (
        "import sys; from reconciler.cli import main; main(['--help']); "
        "heavy = [m for m in ('pydantic', 'google', 'git', 'httpx', 'reconciler.views', "
        "'reconciler.reconcile') if m in sys.modules]; print('heavy:', heavy)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.stdout.strip().endswith("heavy: []"), out.stdout + out.stderr


def test_validate_env_reports_every_unset_variable(repo: Path) -> None:
    path = repo / "rollout" / "ion-api.yaml"
    text = path.read_text(encoding="utf-8")
    text = text.replace(
        "  - name: chat-smoke\n",
        "  - name: chat-smoke\n    headers: {Authorization: {env: CHAT_TOKEN}}\n",
    ).replace(
        "  - name: lumen-gateway\n",
        "  - name: lumen-gateway\n    headers:\n      X-Key: {env: GATEWAY_KEY}\n",
    )
    path.write_text(text, encoding="utf-8")
    assert reconcile("validate", cwd=repo).returncode == 0  # without --env: the file is valid
    result = reconcile("validate", "--env", cwd=repo)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    line_of = {
        v: n
        for n, t in enumerate(text.splitlines(), 1)
        for v in ("CHAT_TOKEN", "GATEWAY_KEY")
        if v in t
    }
    assert lines == [
        f"rollout/ion-api.yaml:{line_of['CHAT_TOKEN']}: chat-smoke: header Authorization reads "
        "environment variable CHAT_TOKEN, which is not set",
        f"rollout/ion-api.yaml:{line_of['GATEWAY_KEY']}: lumen-gateway: header X-Key reads "
        "environment variable GATEWAY_KEY, which is not set",
        "error: 2 environment variables the rollout files read are not set",
    ]
