"""`reconcile emulator serve` as its own process, for benchmarks and tests that need the API
server off the client's CPU and GIL (as Cloud Run would be)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def emulator_process(*args: str) -> Iterator[dict[str, str]]:
    """Serve on free ports with simulated latency (plus `args`, e.g. `--scenario FILE`);
    yields the environment variables the emulator prints for its clients."""
    cmd = [sys.executable, "-m", "reconciler", "emulator", "serve", "--port", "0"]
    cmd += ["--http-port", "0", "--simulate-latency", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        env: dict[str, str] = {}
        assert proc.stdout is not None
        while len(env) < 2:
            line = proc.stdout.readline()
            if not line:
                raise RuntimeError(f"emulator exited with {proc.wait()} before it was ready")
            key, _, value = line.removeprefix("export ").strip().partition("=")
            env[key] = value
        yield env
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
