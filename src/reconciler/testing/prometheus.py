"""A real Prometheus server for tests: started from the `prometheus` binary, stopped after.

    binary = prometheus_binary()          # None: not installed (skip, or fail in CI)
    with PrometheusServer.start([emu.http_url + "/metrics"], binary=binary) as prom:
        prom.wait_for_targets()
        emu.load("ion-api", 500)
        prom.wait_until('sum(cloudrun_request_count_total)', lambda v: v == 500)
        provider = PrometheusProvider(prom.url)

Each server has its own temporary config and TSDB directory and listens on a free loopback
port; it never touches a system-wide Prometheus (the Debian package's service is not used).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import httpx

__all__ = ["PROMETHEUS_BIN_ENV", "PrometheusError", "PrometheusServer", "prometheus_binary"]

PROMETHEUS_BIN_ENV = "PROMETHEUS_BIN"
_START_ATTEMPTS = 3


class PrometheusError(RuntimeError):
    """The test Prometheus did not start, or a wait ran out of time."""


def prometheus_binary() -> str | None:
    """Path of the `prometheus` binary: $PROMETHEUS_BIN, else the one on PATH, else None."""
    configured = os.environ.get(PROMETHEUS_BIN_ENV)
    if configured:
        return configured if Path(configured).is_file() else None
    return shutil.which("prometheus")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _config(targets: Sequence[str], scrape_interval: str) -> str:
    jobs = []
    for i, target in enumerate(targets):
        parts = urlsplit(target if "://" in target else f"http://{target}")
        jobs.append(
            f"  - job_name: target-{i}\n"
            f"    scheme: {parts.scheme}\n"
            f"    metrics_path: {parts.path or '/metrics'}\n"
            f"    static_configs:\n"
            f'      - targets: ["{parts.netloc}"]\n'
        )
    return (
        "global:\n"
        f"  scrape_interval: {scrape_interval}\n"
        f"  scrape_timeout: {scrape_interval}\n"
        f"  evaluation_interval: {scrape_interval}\n"
        "scrape_configs:\n" + "".join(jobs)
    )


class PrometheusServer:
    """A running Prometheus; build it with `PrometheusServer.start(...)`."""

    def __init__(self, process: subprocess.Popen[bytes], port: int, workdir: Path) -> None:
        self.process = process
        self.port = port
        self.workdir = workdir
        self.url = f"http://127.0.0.1:{port}"
        self._http = httpx.Client(base_url=self.url, timeout=5.0)

    @classmethod
    def start(
        cls,
        targets: Sequence[str],
        *,
        binary: str | None = None,
        scrape_interval: str = "1s",
        timeout: float = 30.0,
    ) -> PrometheusServer:
        """Start Prometheus scraping `targets` (URLs like `http://127.0.0.1:8080/metrics`, or
        `host:port`) every `scrape_interval`; returns once it answers `/-/ready`."""
        exe = binary or prometheus_binary()
        if exe is None:
            raise PrometheusError("prometheus binary not found (install the prometheus package)")
        workdir = Path(tempfile.mkdtemp(prefix="prometheus-test-"))
        config = workdir / "prometheus.yml"
        config.write_text(_config(targets, scrape_interval), encoding="utf-8")
        last = ""
        # A port picked free can be taken before Prometheus binds it: try another one.
        for _ in range(_START_ATTEMPTS):
            port = _free_port()
            log = (workdir / "prometheus.log").open("wb")
            process = subprocess.Popen(
                [
                    exe,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=workdir,
            )
            log.close()
            server = cls(process, port, workdir)
            try:
                server._wait_ready(timeout)
                return server
            except PrometheusError as exc:
                last = str(exc)
                server._http.close()
                server._terminate()
        shutil.rmtree(workdir, ignore_errors=True)
        raise PrometheusError(f"prometheus did not start: {last}")

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise PrometheusError(f"exited with {self.process.returncode}: {self.log_tail()}")
            try:
                if self._http.get("/-/ready").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise PrometheusError(f"not ready after {timeout:g}s: {self.log_tail()}")

    def log_tail(self, lines: int = 5) -> str:
        """The last lines of the server's log (for error messages)."""
        try:
            text = (self.workdir / "prometheus.log").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return " | ".join(text.strip().splitlines()[-lines:])

    def query(self, promql: str, at: float | None = None) -> list[dict[str, Any]]:
        """The result of an instant query (`data.result`); raises on an API error."""
        params = {"query": promql} | ({"time": f"{at:.3f}"} if at is not None else {})
        body = self._http.get("/api/v1/query", params=params).json()
        if body.get("status") != "success":
            raise PrometheusError(f"query {promql!r}: {body.get('error')}")
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def wait_for_targets(self, timeout: float = 30.0) -> None:
        """Block until every configured target has been scraped successfully."""
        deadline = time.monotonic() + timeout
        states: list[str] = []
        while time.monotonic() < deadline:
            active = self._http.get("/api/v1/targets").json()["data"]["activeTargets"]
            states = [t.get("health", "") for t in active]
            if states and all(s == "up" for s in states):
                return
            time.sleep(0.2)
        raise PrometheusError(f"targets not up after {timeout:g}s: {states}")

    def wait_until(
        self, promql: str, predicate: Callable[[float], bool], timeout: float = 30.0
    ) -> float:
        """Block until the single-value query `promql` satisfies `predicate`; returns it.

        Scrapes are periodic: use it to wait until what was served has been scraped.
        """
        deadline = time.monotonic() + timeout
        value = float("nan")
        while time.monotonic() < deadline:
            result = self.query(promql)
            if len(result) == 1:
                value = float(result[0]["value"][1])
                if predicate(value):
                    return value
            time.sleep(0.2)
        raise PrometheusError(f"{promql!r} still {value} after {timeout:g}s")

    def stop(self) -> None:
        """Stop the server and delete its config and data."""
        self._http.close()
        self._terminate()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def _terminate(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

    def __enter__(self) -> PrometheusServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
