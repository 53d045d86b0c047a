"""`reconcile setup gcp`: the idempotent gcloud (and gh) commands that give the reconciler
least-privilege Google Cloud identities trusted only from this GitHub repository.

`steps()` is pure: the rollout files' specs and the options in, the list of commands out;
`script()` renders them as one bash script, which `execute()` runs as printed.

What it sets up (the README's permission table explains each grant):
- a read-only *plan* identity for same-repository pull requests: services and revisions
  get/list and Monitoring time series list, on the project (list calls have no narrower
  resource);
- an *apply* identity for `refs/heads/main` jobs in a protected GitHub environment: the same
  reads, plus `run.services.update` and `run.operations.get` bound per service (never per
  project), `actAs` on each service's runtime service account (UpdateService requires it),
  and `run.routes.invoke` on services whose probes send `auth: id_token`;
- a Workload Identity Federation pool and GitHub OIDC provider whose attribute condition
  pins the repository by its immutable ids, not its renamable name.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import click

from reconciler.errors import ReconcileError

if TYPE_CHECKING:
    # Only click at import time: the CLI registers this command on every start.
    from reconciler.spec import RolloutSpec

GITHUB_ISSUER = "https://token.actions.githubusercontent.com"
APIS = (
    "run.googleapis.com",
    "monitoring.googleapis.com",
    "iam.googleapis.com",
    "iamcredentials.googleapis.com",
    "sts.googleapis.com",
    "cloudresourcemanager.googleapis.com",
)
READ_PERMISSIONS = (
    "run.services.get",
    "run.services.list",
    "run.revisions.get",
    "run.revisions.list",
    "monitoring.timeSeries.list",
)
APPLY_PERMISSIONS = ("run.services.update", "run.operations.get")
ACT_AS_PERMISSIONS = ("iam.serviceAccounts.actAs",)
INVOKE_PERMISSIONS = ("run.routes.invoke",)
# TailLogEntries (entries.tail) needs logging.logEntries.list on its parent `projects/P`;
# roles/logging.viewer would add sinks, buckets, views and log metrics the stream never reads.
LOG_PERMISSIONS = ("logging.logEntries.list",)
STREAM_APIS = ("logging.googleapis.com", "secretmanager.googleapis.com")
SECRET_ACCESSOR = "roles/secretmanager.secretAccessor"
IMAGE_RE = re.compile(
    r"[a-z0-9.-]+(?::[0-9]+)?(?:/[a-z0-9._-]+)+(?::[A-Za-z0-9_.-]{1,128}|@sha256:[0-9a-f]{64})?"
)
REPO_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})/[A-Za-z0-9._-]{1,100}")
ENVIRONMENT_RE = re.compile(r"[A-Za-z0-9_.-]{1,255}")


@dataclass(frozen=True)
class Options:
    """What `setup gcp` is told on the command line."""

    project: str
    repo: str  # OWNER/NAME
    repository_id: int | None = None  # looked up with `gh api` when not given
    owner_id: int | None = None
    environment: str = "production"
    pool: str = "github"
    provider: str = "github"
    plan_account: str = "reconcile-plan"
    apply_account: str = "reconcile-apply"
    stream_image: str | None = None  # deploy `watch --stream` from this image when given
    stream_region: str | None = None  # default: the region most rollout files name
    stream_service: str = "reconcile-stream"
    git_token_secret: str = "reconcile-git-token"

    def __post_init__(self) -> None:
        from reconciler.spec import PROJECT_RE, REGION_RE

        if not re.fullmatch(PROJECT_RE, self.project):
            raise ReconcileError(f"--project {self.project!r} is not a valid GCP project id")
        if not REPO_RE.fullmatch(self.repo) or self.repo.endswith((".git", "/.", "/..")):
            raise ReconcileError(f"--repo {self.repo!r}: expected OWNER/NAME, like acme/infra")
        if (self.repository_id is None) != (self.owner_id is None):
            raise ReconcileError("--repository-id and --owner-id go together (or neither)")
        for value in (self.repository_id, self.owner_id):
            if value is not None and value <= 0:
                raise ReconcileError("--repository-id and --owner-id are positive numbers")
        if not ENVIRONMENT_RE.fullmatch(self.environment):
            raise ReconcileError(f"--environment {self.environment!r} is not an environment name")
        if self.stream_image is not None and not IMAGE_RE.fullmatch(self.stream_image):
            raise ReconcileError(
                f"--stream-image {self.stream_image!r}: expected an image reference, like "
                "us-central1-docker.pkg.dev/PROJECT/reconciler/stream:1"
            )
        if self.stream_region is not None and not re.fullmatch(REGION_RE, self.stream_region):
            raise ReconcileError(f"--stream-region {self.stream_region!r} is not a region")

    def email(self, account: str) -> str:
        return f"{account}@{self.project}.iam.gserviceaccount.com"


@dataclass(frozen=True)
class Step:
    """One idempotent command: `run`, or `update` instead when `exists` finds the resource.

    `capture` names a shell variable that receives the command's output.
    """

    why: str
    run: tuple[str, ...]
    exists: tuple[str, ...] | None = None
    update: tuple[str, ...] | None = None
    capture: str | None = None
    notes: tuple[str, ...] = field(default=())


def _role(options: Options, role_id: str) -> str:
    return f"projects/{options.project}/roles/{role_id}"


def _custom_role(options: Options, role_id: str, title: str, permissions: Sequence[str]) -> Step:
    # update re-states the permissions, so a role created by an older setup (or edited by
    # hand) converges to exactly this list instead of keeping extra grants.
    common = (
        "--project",
        options.project,
        "--title",
        title,
        "--permissions",
        ",".join(permissions),
        "--stage",
        "GA",
    )
    return Step(
        why=f"custom role {role_id}: {', '.join(permissions)}",
        exists=("gcloud", "iam", "roles", "describe", role_id, "--project", options.project),
        update=("gcloud", "iam", "roles", "update", role_id, *common),
        run=("gcloud", "iam", "roles", "create", role_id, *common),
    )


def _service_account(options: Options, account: str, title: str) -> Step:
    return Step(
        why=f"service account {account}: {title}",
        exists=(
            "gcloud",
            "iam",
            "service-accounts",
            "describe",
            options.email(account),
            "--project",
            options.project,
        ),
        run=(
            "gcloud",
            "iam",
            "service-accounts",
            "create",
            account,
            "--project",
            options.project,
            "--display-name",
            title,
        ),
    )


def _bind(
    why: str,
    resource: tuple[str, ...],
    where: tuple[str, ...],
    member: str,
    role: str,
    *,
    notes: tuple[str, ...] = (),
) -> Step:
    """`gcloud RESOURCE add-iam-policy-binding NAME ...`: one role for one member on one
    resource (`resource` is the command group and the resource's name). Adding a binding
    that exists is a no-op, so the step needs no `exists` check."""
    *group, name = resource
    return Step(
        why=why,
        run=(
            "gcloud",
            *group,
            "add-iam-policy-binding",
            name,
            *where,
            "--member",
            member,
            "--role",
            role,
            *(("--condition=None",) if group == ["projects"] else ()),
            "--format=none",
        ),
        notes=notes,
    )


def _shell_name(service: str) -> str:
    return "RUNTIME_SA_" + service.upper().replace("-", "_")


def needs_id_token(spec: RolloutSpec) -> bool:
    """Whether a probe or dependency of `spec` sends an ID token to the service itself."""
    return any(
        check.auth == "id_token" and check.url.startswith("{")
        for check in (*spec.probes, *spec.dependencies)
    )


def _foreign_id_token_urls(spec: RolloutSpec) -> list[str]:
    return [
        check.url
        for check in (*spec.probes, *spec.dependencies)
        if check.auth == "id_token" and not check.url.startswith("{")
    ]


def steps(specs: Iterable[RolloutSpec], options: Options) -> list[Step]:
    """Every command that sets the project and repository up, in order (pure).

    Services in another project than `options.project` are an operator error: the
    identities, roles and pool live in one project.
    """
    services = sorted(specs, key=lambda s: (s.service, s.region))
    for spec in services:
        if spec.project != options.project:
            raise ReconcileError(
                f"rollout/{spec.service}.yaml: project {spec.project} is not --project "
                f"{options.project}; set up one project at a time"
            )
    project = options.project
    plan_sa, apply_sa = options.email(options.plan_account), options.email(options.apply_account)
    pool_path = (
        f"projects/${{PROJECT_NUMBER}}/locations/global/workloadIdentityPools/{options.pool}"
    )
    principals = f"principalSet://iam.googleapis.com/{pool_path}"
    repository_id = "${REPOSITORY_ID}" if options.repository_id is None else options.repository_id
    owner_id = "${OWNER_ID}" if options.owner_id is None else options.owner_id
    out: list[Step] = [
        Step(
            why="the project number names the pool in principal sets",
            run=("gcloud", "projects", "describe", project, "--format=value(projectNumber)"),
            capture="PROJECT_NUMBER",
        ),
    ]
    if options.repository_id is None:
        out += [
            Step(
                why="the repository's immutable ids (a renamed or re-created repository "
                "keeps no trust)",
                run=("gh", "api", f"repos/{options.repo}", "--jq", ".id"),
                capture="REPOSITORY_ID",
            ),
            Step(
                why="the owner's immutable id",
                run=("gh", "api", f"repos/{options.repo}", "--jq", ".owner.id"),
                capture="OWNER_ID",
            ),
        ]
    out += [
        Step(
            why="the APIs the reconciler and Workload Identity Federation call",
            run=(
                "gcloud",
                "services",
                "enable",
                *APIS,
                *(STREAM_APIS if options.stream_image else ()),
                "--project",
                project,
            ),
        ),
        _custom_role(options, "reconcilerRead", "Cloud Run reconciler: read", READ_PERMISSIONS),
        _custom_role(
            options, "reconcilerApply", "Cloud Run reconciler: move traffic", APPLY_PERMISSIONS
        ),
        _custom_role(
            options,
            "reconcilerActAs",
            "Cloud Run reconciler: act as a runtime service account",
            ACT_AS_PERMISSIONS,
        ),
        _service_account(options, options.plan_account, "reconcile plan (read-only)"),
        _service_account(options, options.apply_account, "reconcile apply"),
    ]
    out += [
        _bind(
            f"{email} reads services, revisions and metrics of the project",
            ("projects", project),
            (),
            f"serviceAccount:{email}",
            _role(options, "reconcilerRead"),
        )
        for email in (plan_sa, apply_sa)
    ]
    invoked = [spec for spec in services if needs_id_token(spec)]
    if invoked:
        out.append(
            _custom_role(
                options,
                "reconcilerInvoke",
                "Cloud Run reconciler: call a private service",
                INVOKE_PERMISSIONS,
            )
        )
    apply_member = f"serviceAccount:{apply_sa}"
    for spec in services:
        where = ("--project", project, "--region", spec.region)
        service = ("run", "services", spec.service)
        out.append(
            _bind(
                f"{spec.service} ({spec.region}): traffic changes on this service only",
                service,
                where,
                apply_member,
                _role(options, "reconcilerApply"),
            )
        )
        if spec in invoked:
            out.append(
                _bind(
                    f"{spec.service}: probes with auth: id_token call the private service",
                    service,
                    where,
                    apply_member,
                    _role(options, "reconcilerInvoke"),
                )
            )
        variable = _shell_name(spec.service)
        notes = tuple(
            f"{spec.service}: grant run.routes.invoke to {apply_sa} on the service behind "
            f"{url} (outside the rollout files)"
            for url in _foreign_id_token_urls(spec)
        )
        runtime = f"${{{variable}:-${{PROJECT_NUMBER}}-compute@developer.gserviceaccount.com}}"
        out += [
            Step(
                why=f"{spec.service}: its runtime service account (empty: the Compute Engine "
                "default)",
                run=(
                    "gcloud",
                    "run",
                    "services",
                    "describe",
                    spec.service,
                    *where,
                    "--format=value(spec.template.spec.serviceAccountName)",
                ),
                capture=variable,
            ),
            _bind(
                f"{spec.service}: UpdateService needs actAs on the runtime service account",
                ("iam", "service-accounts", runtime),
                ("--project", project),
                apply_member,
                _role(options, "reconcilerActAs"),
                notes=notes,
            ),
        ]
    if invoked:
        out.append(
            _bind(
                "under Workload Identity Federation the apply identity signs its own ID "
                "tokens for auth: id_token probes",
                ("iam", "service-accounts", apply_sa),
                ("--project", project),
                apply_member,
                "roles/iam.serviceAccountOpenIdTokenCreator",
            )
        )
    pool_args = ("--project", project, "--location", "global")
    provider_args = (
        *pool_args,
        "--workload-identity-pool",
        options.pool,
        # A composite attribute: a principal set matches one attribute, and the apply
        # identity needs two facts at once (the branch and the protected environment). The
        # environment claim exists only in jobs that name one.
        "--attribute-mapping",
        ",".join(
            (
                "google.subject=assertion.sub",
                "attribute.repository_id=assertion.repository_id",
                "attribute.repository_owner_id=assertion.repository_owner_id",
                "attribute.event_name=assertion.event_name",
                "attribute.ref_environment=assertion.ref + ':' + "
                "(has(assertion.environment) ? assertion.environment : '')",
            )
        ),
        "--attribute-condition",
        f"assertion.repository_id == '{repository_id}' "
        f"&& assertion.repository_owner_id == '{owner_id}'",
    )
    out += [
        Step(
            why=f"Workload Identity Federation pool {options.pool}",
            exists=(
                "gcloud",
                "iam",
                "workload-identity-pools",
                "describe",
                options.pool,
                *pool_args,
            ),
            run=(
                "gcloud",
                "iam",
                "workload-identity-pools",
                "create",
                options.pool,
                *pool_args,
                "--display-name",
                "GitHub Actions",
            ),
        ),
        Step(
            why=f"GitHub OIDC provider {options.provider}: only {options.repo}, by its ids",
            exists=(
                "gcloud",
                "iam",
                "workload-identity-pools",
                "providers",
                "describe",
                options.provider,
                *pool_args,
                "--workload-identity-pool",
                options.pool,
            ),
            update=(
                "gcloud",
                "iam",
                "workload-identity-pools",
                "providers",
                "update-oidc",
                options.provider,
                *provider_args,
            ),
            run=(
                "gcloud",
                "iam",
                "workload-identity-pools",
                "providers",
                "create-oidc",
                options.provider,
                *provider_args,
                "--issuer-uri",
                GITHUB_ISSUER,
            ),
        ),
    ]
    trusted = (
        (
            plan_sa,
            "attribute.event_name/pull_request",
            "the plan identity: pull requests from branches of the repository (GitHub gives "
            "fork pull requests no token)",
        ),
        (
            apply_sa,
            f"attribute.ref_environment/refs/heads/main:{options.environment}",
            f"the apply identity: refs/heads/main in the {options.environment} environment only",
        ),
    )
    out += [
        _bind(
            why,
            ("iam", "service-accounts", email),
            ("--project", project),
            f"{principals}/{attribute}",
            "roles/iam.workloadIdentityUser",
        )
        for email, attribute, why in trusted
    ]
    out.append(
        Step(
            why=f"GitHub environment {options.environment}: only protected branches deploy to "
            "it (protect main); the apply identity itself trusts refs/heads/main only",
            run=(
                "gh",
                "api",
                "--method",
                "PUT",
                f"repos/{options.repo}/environments/{options.environment}",
                "-F",
                "deployment_branch_policy[protected_branches]=true",
                "-F",
                "deployment_branch_policy[custom_branch_policies]=false",
                "--silent",
            ),
        )
    )
    variables = (
        (
            "GCP_WORKLOAD_IDENTITY_PROVIDER",
            f"{pool_path}/providers/{options.provider}",
        ),
        ("GCP_PLAN_SERVICE_ACCOUNT", plan_sa),
        ("GCP_APPLY_SERVICE_ACCOUNT", apply_sa),
    )
    for name, value in variables:
        out.append(
            Step(
                why=f"repository variable {name} for .github/workflows/reconcile.yml",
                run=("gh", "variable", "set", name, "--repo", options.repo, "--body", value),
            )
        )
    if options.stream_image is not None:
        # Last: the deployment needs a token only a human can put in the secret, so a first
        # run may stop there with everything else done; the next run finishes it.
        out += _stream_steps(options, services)
    return out


def stream_region(options: Options, specs: Sequence[RolloutSpec]) -> str:
    """Where the streaming controller runs: `--stream-region`, else the region most rollout
    files name (ties: the first in alphabetical order). One controller serves every region."""
    if options.stream_region is not None:
        return options.stream_region
    regions = sorted(spec.region for spec in specs)
    return max(sorted(set(regions)), key=regions.count)


def _stream_steps(options: Options, specs: Sequence[RolloutSpec]) -> list[Step]:
    """The streaming controller (`reconcile watch --stream`, docs/streaming.md): Cloud
    Logging read for the apply identity it runs as, the git token's secret, and its
    deployment as a Cloud Run service of exactly one always-on instance."""
    project, apply_sa = options.project, options.email(options.apply_account)
    member = f"serviceAccount:{apply_sa}"
    secret = options.git_token_secret
    on_project = ("--project", project)
    return [
        _custom_role(
            options,
            "reconcilerLogRead",
            "Cloud Run reconciler: tail request logs",
            LOG_PERMISSIONS,
        ),
        _bind(
            f"{apply_sa} tails the request logs of the project (TailLogEntries: a project is "
            "its narrowest parent)",
            ("projects", project),
            (),
            member,
            _role(options, "reconcilerLogRead"),
        ),
        Step(
            why=f"secret {secret}: the git token the controller pushes rollbacks with",
            exists=("gcloud", "secrets", "describe", secret, *on_project),
            run=(
                "gcloud",
                "secrets",
                "create",
                secret,
                *on_project,
                "--replication-policy",
                "automatic",
            ),
        ),
        _bind(
            f"{apply_sa} reads that one secret",
            ("secrets", secret),
            on_project,
            member,
            SECRET_ACCESSOR,
        ),
        Step(
            why=f"the token must be in {secret} before the controller starts",
            run=(
                "gcloud",
                "secrets",
                "versions",
                "describe",
                "latest",
                "--secret",
                secret,
                *on_project,
                "--format=none",
            ),
            notes=(
                f"if this fails, add the token once and run the script again: a GitHub token "
                f"that may push to {options.repo} (contents: write), piped to "
                f"`gcloud secrets versions add {secret} --project {project} --data-file=-`",
            ),
        ),
        Step(
            why=f"{options.stream_service}: `reconcile watch --stream` as the apply identity, "
            "one instance, always on (CPU outside requests); the stream lease keeps a second "
            "controller (a redeploy's overlap, a laptop) standing by",
            run=(
                "gcloud",
                "run",
                "deploy",
                options.stream_service,
                "--image",
                str(options.stream_image),
                *on_project,
                "--region",
                stream_region(options, specs),
                "--service-account",
                apply_sa,
                "--no-allow-unauthenticated",
                "--min-instances",
                "1",
                "--max-instances",
                "1",
                "--no-cpu-throttling",
                "--set-env-vars",
                f"RECONCILE_GIT_URL=https://github.com/{options.repo}.git",
                "--set-secrets",
                f"RECONCILE_GIT_TOKEN={secret}:latest",
            ),
        ),
    ]


# --- rendering -----------------------------------------------------------------------------
_PLAIN = re.compile(r"[A-Za-z0-9_@%+=:,./-]+")
_VARIABLE = re.compile(
    r"\$\{[A-Z_][A-Z0-9_]*(?::-[^${}\"\\`]*(?:\$\{[A-Z_][A-Z0-9_]*\})?[^${}\"\\`]*)?\}"
)


def quote(arg: str) -> str:
    """One argument as bash reads it: `${NAME}` references expand, nothing else does."""
    if _PLAIN.fullmatch(arg):
        return arg
    if "${" not in arg:
        # CEL string literals are single-quoted: double quotes keep them readable.
        if "'" in arg and not any(c in arg for c in '"\\`!$'):
            return f'"{arg}"'
        return shlex.quote(arg)
    literal = _VARIABLE.sub("", arg)
    if any(c in literal for c in '$"\\`'):
        raise ValueError(f"cannot quote {arg!r} for bash")
    return f'"{arg}"'


def _line(argv: Sequence[str]) -> str:
    return " ".join(quote(a) for a in argv)


def _render(step: Step) -> list[str]:
    lines = [f"# {step.why}"] + [f"# NOTE: {note}" for note in step.notes]
    if step.capture is not None:
        lines.append(f'{step.capture}="$({_line(step.run)})"')
    elif step.exists is None:
        lines.append(_line(step.run))
    elif step.update is None:
        lines.append(f"{_line(step.exists)} >/dev/null 2>&1 || {_line(step.run)}")
    else:
        lines += [
            f"if {_line(step.exists)} >/dev/null 2>&1; then",
            f"  {_line(step.update)}",
            "else",
            f"  {_line(step.run)}",
            "fi",
        ]
    return lines


def script(all_steps: Sequence[Step], command: str) -> str:
    """The bash script that runs `all_steps`; `command` is how it was generated."""
    lines = [
        "#!/usr/bin/env bash",
        f"# Generated by `{command}` from the rollout files.",
        "# Idempotent: run it again after adding a service; existing resources are kept or",
        "# converged, bindings are added once.",
        "set -euo pipefail",
        "export CLOUDSDK_CORE_DISABLE_PROMPTS=1",
    ]
    for step in all_steps:
        lines.append("")
        lines += _render(step)
    return "\n".join(lines) + "\n"


def execute(text: str) -> int:
    """Run a script from `script()` with bash, as printed; its exit code."""
    return subprocess.run(["bash", "-s"], input=text, text=True, check=False).returncode


# --- the command ---------------------------------------------------------------------------
@click.group()
def setup() -> None:
    """Set up the cloud and GitHub side once (idempotent; safe to run again)."""


@setup.command("gcp")
@click.option("--project", required=True, help="Project of the services, identities and pool.")
@click.option("--repo", "github_repo", required=True, metavar="OWNER/NAME", help="The repository.")
@click.option("--repository-id", type=int, help="Its numeric id (default: `gh api` looks it up).")
@click.option("--owner-id", type=int, help="Its owner's numeric id (with --repository-id).")
@click.option(
    "--environment",
    default="production",
    show_default=True,
    help="The protected GitHub environment of apply and rollback jobs.",
)
@click.option(
    "--stream-image",
    metavar="IMAGE",
    help="Also deploy `watch --stream` from this image (deploy/stream/Dockerfile), with "
    "Cloud Logging read for the apply identity.",
)
@click.option(
    "--stream-region",
    metavar="REGION",
    help="Region of the streaming controller (default: the region most rollout files name).",
)
@click.option(
    "--execute", "run_now", is_flag=True, help="Run the commands instead of printing them."
)
@click.pass_context
def setup_gcp(
    ctx: click.Context,
    project: str,
    github_repo: str,
    repository_id: int | None,
    owner_id: int | None,
    environment: str,
    stream_image: str | None,
    stream_region: str | None,
    run_now: bool,
) -> None:
    """Print (or run with --execute) the gcloud and gh commands that create least-privilege
    identities for plan and apply and trust this repository through Workload Identity
    Federation. Reads every rollout file: each service gets its own bindings.

    \b
    Examples:
      reconcile setup gcp --project naeda-genesis --repo acme/infra > setup.sh
      reconcile setup gcp --project naeda-genesis --repo acme/infra --execute
    """
    from reconciler.loader import find_rollout_files, load_spec
    from reconciler.waves import expand

    repo_dir: Path = ctx.find_root().obj.repo
    rollout_dir = repo_dir / "rollout"
    if not rollout_dir.is_dir():
        raise ReconcileError(
            f"{rollout_dir}: no such directory; run in the repository or use --repo"
        )
    files = find_rollout_files(rollout_dir)
    if not files:
        raise ReconcileError(f"{rollout_dir}: no rollout files (*.yaml) found")
    # Every region of a file with waves needs its grants.
    specs = [spec for path in files for spec in expand(load_spec(path))]
    options = Options(
        project=project,
        repo=github_repo,
        repository_id=repository_id,
        owner_id=owner_id,
        environment=environment,
        stream_image=stream_image,
        stream_region=stream_region,
    )
    command = _line(
        [
            "reconcile",
            "setup",
            "gcp",
            "--project",
            project,
            "--repo",
            github_repo,
            *(
                ["--repository-id", str(repository_id), "--owner-id", str(owner_id)]
                if repository_id is not None
                else []
            ),
            *(["--environment", environment] if environment != "production" else []),
            *(["--stream-image", stream_image] if stream_image else []),
            *(["--stream-region", stream_region] if stream_region else []),
        ]
    )
    text = script(steps(specs, options), command)
    if not run_now:
        click.echo(text, nl=False)
        return
    code = execute(text)
    if code != 0:
        raise ReconcileError(f"setup stopped: a command exited {code} (see its output above)")
