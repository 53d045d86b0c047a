"""Git push races: several runners (processes, each in its own clone) apply different services
at the same moment and push to one remote. Every record lands; none is lost in a rebase."""

from __future__ import annotations

import subprocess
from pathlib import Path

from reconciler.sandbox import sandbox
from tests.refs import STATE

from .support import popen_cli

SERVICES = ("ion-api", "payments-api", "search-api", "auth-api")
SCENARIO = {
    "project": "naeda-genesis",
    "region": "us-central1",
    "services": [
        {
            "name": name,
            "traffic": {f"{name}-00001-aaa": 100},
            "revisions": [{"name": f"{name}-00001-aaa"}, {"name": f"{name}-00002-bbb"}],
        }
        for name in SERVICES
    ],
}


def rollout_for(name: str, percent: int, force: bool = False) -> str:
    return (
        f"service: {name}\nproject: naeda-genesis\nregion: us-central1\n"
        f"revisions: {{stable: {name}-00001-aaa, canary: {name}-00002-bbb}}\n"
        f"canary_percent: {percent}\nstages: [5, 25, 100]\n" + ("force: true\n" if force else "")
    )


def run_all(clones: dict[str, Path]) -> dict[str, subprocess.CompletedProcess[str]]:
    """`reconcile apply --service S` in every clone at once; their results."""
    procs = {name: popen_cli(repo, "apply", "--service", name) for name, repo in clones.items()}
    out: dict[str, subprocess.CompletedProcess[str]] = {}
    for name, proc in procs.items():
        try:
            stdout, stderr = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        out[name] = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    return out


def test_four_runners_pushing_at_once_all_land(tmp_path: Path) -> None:
    files = {f"rollout/{n}.yaml": rollout_for(n, 5) for n in SERVICES}
    with sandbox(tmp_path, scenario=SCENARIO, rollout=files) as sb:
        clones = {name: sb.clone(f"runner-{name}") for name in SERVICES}
        first = run_all(clones)
        for name, proc in first.items():
            assert proc.returncode == 0, (name, proc.stdout, proc.stderr)
        # The next stage for all four in one human commit, then four runners at once again.
        sb.git("pull", "--quiet", "--rebase")
        for name in SERVICES:
            sb.rollout(name).write_text(rollout_for(name, 25, force=True), encoding="utf-8")
        sb.git("commit", "--quiet", "-am", "every service to 25%, forced")
        sb.git("push", "--quiet", "origin", "main")
        second = run_all(clones)
        for name, proc in second.items():
            assert proc.returncode == 0, (name, proc.stdout, proc.stderr)

        subjects = sb.remote_log("--format=%s").splitlines()
        for name in SERVICES:
            for change in ("canary 0% -> 5%", "canary 5% -> 25%"):
                hits = [s for s in subjects if s.startswith(f"reconcile({name}): {change}")]
                assert len(hits) == 1, (name, change, subjects)
            events = sb.remote_file(f"{STATE}/{name}/events.jsonl").splitlines()
            assert len(events) == 2, (name, events)
            assert "force" not in sb.remote_file(f"rollout/{name}.yaml")
            assert "canary_percent: 25" in sb.remote_file(f"rollout/{name}.yaml")
        # One line of history, every commit reachable from main: nothing was force-pushed away.
        merges = sb.remote_log("--merges", "--format=%h").split()
        assert merges == []
        assert sb.emu.writes == 2 * len(SERVICES)
