"""`reconcile validate` and `reconcile schema --defaults` with a rollout/_defaults.yaml."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SERVICE = """\
service: ion-api
project: naeda-genesis
region: us-central1
revisions: {stable: ion-api-00041-abc}
canary_percent: 0
stages: [5, 100]
"""


def reconcile(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "reconciler", *args],
        cwd=cwd,
        env={k: v for k, v in os.environ.items() if not k.startswith("GIT_")},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_validate_checks_the_defaults_and_blames_them(tmp_path: Path) -> None:
    rollout = tmp_path / "rollout"
    rollout.mkdir()
    (rollout / "ion-api.yaml").write_text(SERVICE, encoding="utf-8")
    (rollout / "_defaults.yaml").write_text("gates:\n  window: 5m\n", encoding="utf-8")
    ok = reconcile("validate", cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.splitlines() == [
        "rollout/_defaults.yaml: ok (shared defaults)",
        "rollout/ion-api.yaml: ok (ion-api, canary 0%)",
    ]
    (rollout / "_defaults.yaml").write_text("gates:\n  window: 5\n", encoding="utf-8")
    bad = reconcile("validate", cwd=tmp_path)
    assert bad.returncode == 1
    line = "rollout/_defaults.yaml:2: gates.window: expected a duration like '5m'"
    # Once on its own, once as the service's file reads it: both name the defaults.
    assert [x for x in bad.stderr.splitlines() if x.startswith(line)] != []
    assert bad.stderr.count("rollout/_defaults.yaml:2:") == 2
    assert bad.stderr.rstrip().endswith("error: 2 of 2 rollout files invalid")


def test_schema_of_the_defaults(tmp_path: Path) -> None:
    done = reconcile("schema", "--defaults", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    schema = json.loads(done.stdout)
    assert schema["title"].startswith("Shared rollout defaults")
    assert "service" not in schema["properties"] and "notify" in schema["properties"]
