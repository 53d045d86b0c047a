"""`reconcile emulator serve` as a separate process, driven by the official clients and by the
admin subcommands."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from google.api_core import exceptions
from google.cloud import run_v2

from reconciler import clients
from reconciler.cli import main
from reconciler.runtime import utc_now

SCENARIO = """\
project: cli-project
region: europe-west4
services:
  - name: shop
    traffic: {shop-00001-one: 100}
    revisions:
      - name: shop-00001-one
        behavior: {latency_ms: {p50: 40, p95: 90}}
"""


@contextmanager
def serve(scenario: Path, state: Path) -> Iterator[dict[str, str]]:
    """Run `reconcile emulator serve` on free ports; yield the variables it told us to export."""
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "reconciler", "emulator", "serve",
            "--port", "0", "--http-port", "0", "--simulate-latency",
            "--scenario", str(scenario), "--state", str(state),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        exported: dict[str, str] = {}
        lines: queue.Queue[str] = queue.Queue()
        stdout = proc.stdout
        assert stdout is not None
        threading.Thread(target=lambda: [lines.put(x) for x in stdout], daemon=True).start()
        deadline = time.monotonic() + 30
        while len(exported) < 2 and time.monotonic() < deadline:
            try:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            key, _, value = line.strip().removeprefix("export ").partition("=")
            exported[key] = value
        assert set(exported) == {"CLOUD_RUN_EMULATOR_HOST", "CLOUD_RUN_EMULATOR_HTTP"}, (
            proc.stderr.read() if proc.poll() is not None and proc.stderr else exported
        )
        yield exported
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            assert proc.wait(timeout=15) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def reconcile(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    capsys.readouterr()
    assert main(["emulator", *args]) == 0
    return capsys.readouterr().out


def test_serve_speaks_to_the_official_clients_and_keeps_state(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    scenario = tmp_path / "scenario.yaml"
    scenario.write_text(SCENARIO)
    state = tmp_path / "state.json"
    name = "projects/cli-project/locations/europe-west4/services/shop"

    with serve(scenario, state) as env:
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        services = clients.services_client()
        assert services.get_service(name=name).uri.startswith(env["CLOUD_RUN_EMULATOR_HTTP"])

        new = reconcile(capsys, "deploy", "shop", "--revision", "shop-00002-two", "--p50", "30")
        assert new.strip() == "shop-00002-two"
        reconcile(capsys, "behave", "shop-00002-two", "--error-rate", "1.0")
        svc = services.get_service(name=name)
        svc.traffic = [
            run_v2.TrafficTarget(revision="shop-00001-one", percent=50, tag="stable"),
            run_v2.TrafficTarget(revision="shop-00002-two", percent=50, tag="canary"),
        ]
        services.update_service(service=svc).result(timeout=10)

        loaded = json.loads(reconcile(capsys, "load", "shop", "-n", "20", "--tag", "canary"))
        assert loaded == {
            "sent": 20,
            "by_revision": {"shop-00002-two": 20},
            "by_status": {"500": 20},
        }
        status = json.loads(reconcile(capsys, "status"))
        assert status["writes"] == 1
        assert status["services"][0]["generation"] == svc.generation + 1

        reconcile(capsys, "fault", "--method", "GetService", "--times", "1")
        with pytest.raises(exceptions.ServiceUnavailable):
            services.get_service(name=name, retry=None)
        assert services.get_service(name=name, retry=None).name == name
        # An outage of a set length: over once the clock has moved past it.
        reconcile(capsys, "fault", "--method", "GetService", "--seconds", "60")
        with pytest.raises(exceptions.ServiceUnavailable):
            services.get_service(name=name, retry=None)
        reconcile(capsys, "clock", "+1m")
        assert services.get_service(name=name, retry=None).name == name

        # Google's failure modes: a revision that cannot start, an operation that fails.
        reconcile(capsys, "deploy", "shop", "--revision", "shop-00003-bad", "--not-ready")
        svc = services.get_service(name=name)
        svc.traffic = [run_v2.TrafficTarget(revision="shop-00003-bad", percent=100)]
        with pytest.raises(exceptions.FailedPrecondition, match="is not ready"):
            services.update_service(service=svc).result(timeout=10)
        reconcile(capsys, "fault", "--method", "Operation", "--code", "INTERNAL", "--times", "1")
        svc = services.get_service(name=name)
        svc.traffic = [run_v2.TrafficTarget(revision="shop-00001-one", percent=100)]
        with pytest.raises(exceptions.InternalServerError):
            services.update_service(service=svc).result(timeout=10)
        # An operation's response that does not say what serves: a client must read it back.
        reconcile(capsys, "lro", "--response", "no-status")
        svc = services.get_service(name=name)
        svc.traffic = [
            run_v2.TrafficTarget(revision="shop-00001-one", percent=50, tag="stable"),
            run_v2.TrafficTarget(revision="shop-00002-two", percent=50, tag="canary"),
        ]
        done = services.update_service(service=svc).result(timeout=10)
        assert len(done.traffic) == 2 and not done.traffic_statuses
        assert len(services.get_service(name=name).traffic_statuses) == 2
        reconcile(capsys, "lro", "--done")

        # One virtual clock: the reconciler reads the emulator's time, which the CLI moves.
        before = utc_now()
        moved = datetime.fromisoformat(reconcile(capsys, "clock", "+5m").strip())
        after = utc_now()
        assert timedelta(minutes=5) <= after - before < timedelta(minutes=6)
        assert before + timedelta(minutes=5) <= moved <= after

        monkeypatch.setenv("CLOUD_RUN_EMULATOR_HTTP", "http://127.0.0.1:1")
        assert main(["emulator", "status"]) == 1
        assert "not reachable" in capsys.readouterr().err

    saved = json.loads(state.read_text())
    assert "shop-00002-two" in {r["name"] for r in saved["revisions"]}

    # A second process on the same state file sees the same world.
    with serve(scenario, state) as env:
        again = clients.services_client(env["CLOUD_RUN_EMULATOR_HOST"]).get_service(name=name)
        assert sorted((t.tag, t.percent) for t in again.traffic_statuses) == [
            ("canary", 50),
            ("stable", 50),
        ]
