"""The emulator's HTTP data plane, scenario loading and state file, seen as a client sees them."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from google.cloud import monitoring_v3, run_v2

from reconciler import clients
from reconciler.emulator import Emulator
from reconciler.emulator.scenario import ScenarioError

STABLE = "ion-api-00041-abc"
CANARY = "ion-api-00042-xyz"


def test_service_and_tag_urls_answer_per_revision_behaviour(emulator: Emulator) -> None:
    emulator.drift("ion-api", {STABLE: 100}, tags={"canary": CANARY, "stable": STABLE})
    canary = emulator.url("ion-api", "canary")
    assert canary.startswith("http://127.0.0.1:")

    health = httpx.get(f"{emulator.url('ion-api')}/api/health")
    assert health.status_code == 200
    assert health.json()["revision"] == STABLE
    assert health.json()["lumen_gateway"] == "enabled"

    emulator.behave(CANARY, error_rate=0.0, chat={"success": True, "confidence": 0.91})
    chat = httpx.post(f"{canary}/chat", json={"message": "hi", "user_id": "test-canary-001"})
    assert chat.json() == {
        "success": True,
        "confidence": 0.91,
        "user_id": "test-canary-001",
        "revision": CANARY,
    }
    # A tag URL only ever reaches its tagged revision, even at 0%.
    result = emulator.load("ion-api", 50, tag="canary")
    assert dict(result.by_revision) == {CANARY: 50}

    emulator.behave(CANARY, error_rate=1.0)
    broken = httpx.get(f"{canary}/api/health")
    assert broken.status_code == 500
    assert broken.json()["status"] == "unhealthy"
    emulator.behave(CANARY, error_rate=0.0, client_error_rate=1.0)
    assert httpx.get(f"{canary}/").status_code == 429


def test_unknown_service_and_tag_are_404(emulator: Emulator) -> None:
    assert httpx.get(emulator.url("ion-api", "nope")).status_code == 404
    base = emulator.url("ion-api").rsplit("/", 1)[0]
    assert httpx.get(f"{base}/missing/api/health").status_code == 404
    assert httpx.get(f"{emulator.http_url}/elsewhere").status_code == 404


def test_dependencies_are_served(emulator: Emulator) -> None:
    gateway = httpx.get(f"{emulator.dependency_url('lumen-gateway')}/api/health")
    assert gateway.json() == {
        "status": "healthy",
        "gemini_api": "connected",
        "confidence_system": "active",
    }
    emulator.set_dependency("lumen-gateway", {"status": "degraded"}, status_code=503)
    down = httpx.get(f"{emulator.dependency_url('lumen-gateway')}/api/health")
    assert (down.status_code, down.json()) == (503, {"status": "degraded"})
    assert httpx.get(emulator.dependency_url("unknown")).status_code == 404


def test_prometheus_exposition_counts_served_requests(emulator: Emulator) -> None:
    emulator.behave(STABLE, error_rate=0.0)
    emulator.load("ion-api", 12)
    text = httpx.get(f"{emulator.http_url}/metrics").text
    labels = f'response_code_class="2xx",revision="{STABLE}",service="ion-api"'
    assert f"cloudrun_request_count_total{{{labels}}} 12.0" in text
    assert f"cloudrun_request_latencies_seconds_count{{{labels}}} 12.0" in text
    assert 'le="15.0"' in text


def test_real_latency_mode_sleeps_and_measures() -> None:
    scenario = {
        "project": "real-proj",
        "services": [
            {
                "name": "api",
                "revisions": [{"name": "api-00001-aaa", "behavior": {"latency_ms": 60}}],
            }
        ],
    }
    with Emulator.start(scenario) as emu:
        started = time.monotonic()
        assert httpx.get(emu.url("api")).status_code == 200
        assert time.monotonic() - started >= 0.06
    with Emulator.start(scenario, latency_scale=0.0) as emu:
        emu.load("api", 20)
        emu.advance_clock(60 + 180)  # one sample plus Cloud Monitoring's ingestion delay
        metrics = clients.metric_client(emu.grpc_target)
        end = emu.now()
        [series] = metrics.list_time_series(
            name="projects/real-proj",
            filter='metric.type = "run.googleapis.com/request_latencies"',
            interval=monitoring_v3.TimeInterval(start_time=end.replace(year=2000), end_time=end),
        )
        # Scaled to no sleep: what is measured is the real (tiny) handling time.
        assert sum(p.value.distribution_value.count for p in series.points) == 20
        assert all(p.value.distribution_value.mean < 60 for p in series.points)


def test_scenario_file_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "scenario.yaml"
    bad.write_text("services:\n  - name: a\n    traffic: {a-1: 50}\n    revisions: [{name: a-1}]\n")
    with pytest.raises(ScenarioError, match=r"scenario\.yaml: services\.0"):
        Emulator.start(bad)
    bad.write_text("services: [\n")
    with pytest.raises(ScenarioError, match="invalid YAML"):
        Emulator.start(bad)


def test_state_file_keeps_the_world_across_restarts(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    with Emulator.start(state=state, latency_mode="simulated") as emu:
        new = emu.deploy("ion-api", "ion-api-00043-new", {"error_rate": 0.0})
        emu.drift("ion-api", {STABLE: 50, new: 50})
        emu.load("ion-api", 40)
        emu.advance_clock(60 + 180)  # one sample plus Cloud Monitoring's ingestion delay
        name = emu.service_name("ion-api")
        generation = clients.services_client(emu.grpc_target).get_service(name=name).generation
    with Emulator.start(state=state) as emu:
        svc = clients.services_client(emu.grpc_target).get_service(name=name)
        assert svc.generation == generation
        assert sorted((t.revision, t.percent) for t in svc.traffic_statuses) == [
            (STABLE, 50),
            (new, 50),
        ]
        revisions = clients.revisions_client(emu.grpc_target).list_revisions(parent=name)
        assert next(iter(revisions)).name.rsplit("/", 1)[1] == new
        end = emu.now()
        series = clients.metric_client(emu.grpc_target).list_time_series(
            name=f"projects/{emu.project}",
            filter='metric.type = "run.googleapis.com/request_count"',
            interval=monitoring_v3.TimeInterval(start_time=end.replace(year=2000), end_time=end),
        )
        assert sum(p.value.int64_value for ts in series for p in ts.points) == 40


def test_clients_follow_the_environment_variable(emulator: Emulator) -> None:
    # The fixture exported CLOUD_RUN_EMULATOR_HOST; no address is passed here.
    services = clients.services_client()
    assert isinstance(services, run_v2.ServicesClient)
    assert services.get_service(name=emulator.service_name("ion-api")).uri == emulator.url(
        "ion-api"
    )
    assert emulator.calls["GetService"] == 1


def test_unusable_state_file_and_busy_ports_are_reported(
    tmp_path: Path, emulator: Emulator
) -> None:
    state = tmp_path / "state.json"
    state.write_text("{not json")
    with pytest.raises(ScenarioError, match=r"state\.json: not a usable emulator state file"):
        Emulator.start(state=state)
    with pytest.raises(OSError):
        Emulator.start(port=emulator.grpc_port)
    with pytest.raises(OSError):
        Emulator.start(http_port=emulator.http_port)
