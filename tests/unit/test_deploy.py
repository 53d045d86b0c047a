"""The streaming controller's container: its entrypoint passes shellcheck and runs the
streaming watch on a clone, with the git token kept out of URLs and files."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ENTRYPOINT = ROOT / "deploy" / "stream" / "entrypoint.sh"
DOCKERFILE = ROOT / "deploy" / "stream" / "Dockerfile"


def _shellcheck() -> str:
    beside = Path(sys.executable).parent / "shellcheck"
    found = str(beside) if beside.is_file() else shutil.which("shellcheck")
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("shellcheck not found: install the dev extra")
        pytest.skip("shellcheck not found: install the dev extra")
    return found


def test_entrypoint_passes_shellcheck() -> None:
    done = subprocess.run(
        [_shellcheck(), "--shell=sh", str(ENTRYPOINT)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout


def test_entrypoint_refuses_to_start_without_a_repository(tmp_path: Path) -> None:
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}
    done = subprocess.run(
        ["sh", str(ENTRYPOINT)], capture_output=True, text=True, env=env, check=False
    )
    assert done.returncode != 0
    assert "RECONCILE_GIT_URL" in done.stderr


def test_image_runs_the_streaming_watch_from_the_entrypoint() -> None:
    docker = DOCKERFILE.read_text(encoding="utf-8")
    assert 'ENTRYPOINT ["/usr/local/bin/reconcile-stream"]' in docker
    assert "COPY deploy/stream/entrypoint.sh /usr/local/bin/reconcile-stream" in docker
    script = ENTRYPOINT.read_text(encoding="utf-8")
    assert 'exec reconcile --repo "$repo" watch --stream "$@"' in script
    assert "http.extraHeader" in script and "RECONCILE_GIT_TOKEN@" not in script
