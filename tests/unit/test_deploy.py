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


def test_a_cloud_run_service_finds_its_port_answered(tmp_path: Path) -> None:
    # A Cloud Run service counts an instance as started once $PORT listens (a worker pool
    # sets no PORT): the entrypoint starts the probe answerer only then.
    import socket
    import time
    import urllib.request

    script = ENTRYPOINT.read_text(encoding="utf-8")
    assert 'if [ -n "${PORT:-}" ]; then' in script
    assert "python3 /usr/local/bin/reconcile-health &" in script
    assert "COPY deploy/stream/health.py /usr/local/bin/reconcile-health" in (
        DOCKERFILE.read_text(encoding="utf-8")
    )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PORT": str(port)}
    health = ROOT / "deploy" / "stream" / "health.py"
    proc = subprocess.Popen([sys.executable, str(health), "127.0.0.1"], env=env)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as got:
                    assert got.status == 204
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
