"""A complete local world: the emulator, a bare git remote, and a working clone.

Used by the demo (`reconcile demo`) and by the integration and e2e tests, so both exercise the
same real parts: the official Google clients against the emulator, and real git repositories.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from reconciler.emulator import Emulator
from reconciler.testing.env import isolated_env
from reconciler.testing.git import git_environment, make_remote, run_git

EXAMPLE_ROLLOUT = """\
# Canary rollout of ion-api. A pull request that changes canary_percent is the promotion request.
service: ion-api                 # Cloud Run service id
project: naeda-genesis
region: us-central1
revisions:
  stable: ion-api-00041-abc      # pinned revision names; never LATEST during a canary
  canary: ion-api-00042-xyz
canary_percent: {canary_percent}                # what git wants live now
stages: [5, 10, 25, 50, 100]
auto_advance: {auto_advance}
bake: {bake}                        # minimum time at a stage, gates passing, before promotion
self_heal: true                  # correct drift (someone changed traffic by hand)
gates:
  window: {window}
  min_requests: {min_requests}
  consecutive_failures: 2        # FAIL only after this many failing windows in a row
  error_rate:   {{max: 5%, target: 1%}}                 # 5xx share; roll back above 5%
  latency_p95:  {{max: 20s, target: 15s}}
  success_rate: {{min: 90%, target: 95%}}
metrics: {{provider: cloud-monitoring}}
probes:
  - name: canary-health
    url: "{{canary_url}}/api/health"
    expect: {{status: healthy}}
dependencies:                    # must be healthy before any traffic moves
  - name: lumen-gateway
    url: {dependency_url}/api/health
    expect: {{status: healthy, gemini_api: connected}}
"""


def example_rollout(emu: Emulator, **over: Any) -> str:
    """The ion-api rollout file, pointed at the emulator's dependency endpoint."""
    values: dict[str, Any] = {
        "canary_percent": 5,
        "auto_advance": "false",
        "bake": "24h",
        "window": "5m",
        "min_requests": 100,
        "dependency_url": emu.dependency_url("lumen-gateway"),
    }
    values.update(over)
    return EXAMPLE_ROLLOUT.format(**values)


@dataclass
class Sandbox:
    """A running emulator plus a bare remote and one working clone with rollout/."""

    emu: Emulator
    base: Path
    remote: Path
    repo: Path
    env: dict[str, str | None]

    def git(self, *args: str, cwd: Path | None = None) -> str:
        """Run git as a human in the working clone."""
        return run_git(cwd or self.repo, *args)

    def rollout(self, service: str = "ion-api") -> Path:
        """Path of a rollout file in the working clone."""
        return self.repo / "rollout" / f"{service}.yaml"

    def commit_rollout(self, text: str, message: str, service: str = "ion-api") -> str:
        """A human's change of a rollout file, committed and pushed; returns the sha."""
        self.rollout(service).write_text(text, encoding="utf-8")
        self.git("add", "--all", "rollout")
        self.git("commit", "--quiet", "-m", message)
        self.git("push", "--quiet", "origin", "main")
        return self.git("rev-parse", "HEAD")

    def clone(self, name: str) -> Path:
        """Another working clone of the remote (a second reconciler, a second human)."""
        dest = self.base / name
        run_git(self.base, "clone", "--quiet", "--branch", "main", str(self.remote), str(dest))
        return dest

    def remote_log(self, *args: str) -> str:
        """`git log` of the bare remote's main."""
        return run_git(self.remote, "log", "main", *args)

    def remote_file(self, rel: str) -> str:
        """A file's content on the remote's main."""
        return run_git(self.remote, "show", f"main:{rel}")

    def now(self) -> datetime:
        """Emulator time: the clock the reconciler must use in this sandbox."""
        return self.emu.now()


@contextmanager
def sandbox(
    base: Path | None = None,
    *,
    scenario: Any = None,
    rollout: Mapping[str, str] | None = None,
    latency_mode: str = "simulated",
    seed: int | None = 7,
    keep: bool = False,
) -> Iterator[Sandbox]:
    """Start an emulator and a git remote + clone holding `rollout` (default: the example).

    The process environment points the clients at the emulator and isolates git (no real
    home, no leaked GIT_* variables) while the block runs.
    """
    own = base is None
    root = Path(tempfile.mkdtemp(prefix="reconcile-sandbox-")) if base is None else base
    try:
        home = root / "home"
        genv = git_environment(home)
        with Emulator.start(scenario, latency_mode=latency_mode, seed=seed) as emu:  # type: ignore[arg-type]
            env: dict[str, str | None] = {**genv, **emu.env}
            with isolated_env(env):
                files = (
                    dict(rollout)
                    if rollout is not None
                    else {"rollout/ion-api.yaml": example_rollout(emu)}
                )
                files.setdefault("README.md", "Rollouts of our Cloud Run services.\n")
                remote = make_remote(root, files)
                repo = root / "work"
                subprocess.run(
                    ["git", "clone", "--quiet", "--branch", "main", str(remote), str(repo)],
                    check=True,
                    capture_output=True,
                )
                yield Sandbox(emu, root, remote, repo, env)
    finally:
        if own and not keep:
            shutil.rmtree(root, ignore_errors=True)
