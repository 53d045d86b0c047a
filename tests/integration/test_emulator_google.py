"""The emulator behaves as Google documents Cloud Run and Cloud Monitoring, on its defaults,
driven only by the official clients. docs/emulator.md lists each rule with its source."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from google.api_core import exceptions
from google.cloud import monitoring_v3, run_v2
from google.longrunning import operations_pb2, operations_pb2_grpc
from google.protobuf import duration_pb2

from reconciler import clients
from reconciler.emulator import Emulator
from reconciler.emulator.world import ApiError
from reconciler.errors import ReconcileError
from reconciler.runtime import utc_now

STABLE = "ion-api-00041-abc"
CANARY = "ion-api-00042-xyz"
_REV = run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION
_FAILED = run_v2.Condition.State.CONDITION_FAILED
COUNT = "run.googleapis.com/request_count"


def target(revision: str, percent: int, tag: str = "") -> run_v2.TrafficTarget:
    return run_v2.TrafficTarget(type_=_REV, revision=revision, percent=percent, tag=tag)


def split(items: Any) -> list[tuple[str, int, str]]:
    return sorted((t.revision, t.percent, t.tag) for t in items)


@pytest.fixture
def services(emulator: Emulator) -> run_v2.ServicesClient:
    return clients.services_client()


@pytest.fixture
def name(emulator: Emulator) -> str:
    return emulator.service_name("ion-api")


def write(services: run_v2.ServicesClient, name: str, *targets: run_v2.TrafficTarget) -> Any:
    svc = services.get_service(name=name)
    svc.traffic = list(targets)
    return services.update_service(service=svc)


# --- 1. a revision that cannot serve --------------------------------------------------------
def test_routing_to_a_revision_that_is_not_ready_fails_its_operation(
    emulator: Emulator, services: run_v2.ServicesClient, name: str
) -> None:
    bad = emulator.deploy("ion-api", "ion-api-00043-bad", ready=False)
    op = write(services, name, target(STABLE, 95, "stable"), target(bad, 5, "canary"))
    with pytest.raises(exceptions.FailedPrecondition, match=f"Revision '{bad}' is not ready"):
        op.result(timeout=10)
    svc = services.get_service(name=name)
    assert split(svc.traffic) == [(STABLE, 95, "stable"), (bad, 5, "canary")]  # as requested
    assert split(svc.traffic_statuses) == [(STABLE, 100, "")]  # what serves: the old split
    assert svc.terminal_condition.state == _FAILED
    assert bad in svc.terminal_condition.message
    assert not svc.reconciling
    assert svc.observed_generation == svc.generation
    # A later write that routes only to ready revisions serves and clears the failure.
    write(services, name, target(STABLE, 90), target(CANARY, 10)).result(timeout=10)
    after = services.get_service(name=name)
    assert split(after.traffic_statuses) == [(STABLE, 90, ""), (CANARY, 10, "")]
    assert after.terminal_condition.state == run_v2.Condition.State.CONDITION_SUCCEEDED


def test_the_failed_operation_code_is_configurable() -> None:
    scenario = {
        "lro": {"failure_code": "INTERNAL"},
        "services": [{"name": "api", "revisions": [{"name": "api-00001-one"}]}],
    }
    with Emulator.start(scenario, latency_mode="simulated") as emu:
        bad = emu.deploy("api", "api-00002-bad", ready=False)
        client = clients.services_client(emu.grpc_target)
        name = emu.service_name("api")
        op = write(client, name, target(bad, 100))
        with pytest.raises(exceptions.InternalServerError, match="not ready"):
            op.result(timeout=10)
        assert split(client.get_service(name=name).traffic_statuses) == [("api-00001-one", 100, "")]


# --- 2. tag URLs fit one DNS label ----------------------------------------------------------
@pytest.mark.parametrize(("length", "ok"), [(40, True), (41, False)], ids=["46-chars", "47-chars"])
def test_tag_and_service_name_over_46_characters_are_refused(length: int, ok: bool) -> None:
    service = "s" + "x" * (length - 1)
    rev = f"{service}-00001-one"
    scenario = {"services": [{"name": service, "revisions": [{"name": rev}]}]}
    with Emulator.start(scenario, latency_mode="simulated") as emu:
        client = clients.services_client(emu.grpc_target)
        name = emu.service_name(service)
        if ok:
            write(client, name, target(rev, 100, "canary")).result(timeout=10)
            return
        with pytest.raises(exceptions.InvalidArgument, match="cannot exceed 46 characters"):
            write(client, name, target(rev, 100, "canary"))


# --- 3. per-minute quotas per project and region --------------------------------------------
def until_refused(call: Callable[[int], object], limit: int) -> tuple[int, float, Exception]:
    """Call until the first error; (calls that succeeded, seconds it took, the error)."""
    started = time.monotonic()
    for i in range(limit):
        try:
            call(i)
        except exceptions.GoogleAPICallError as exc:
            return i, time.monotonic() - started, exc
    raise AssertionError(f"no refusal in {limit} calls")


def test_reads_past_the_per_minute_quota_are_resource_exhausted(
    emulator: Emulator, services: run_v2.ServicesClient, name: str
) -> None:
    ok, took, error = until_refused(lambda _i: services.get_service(name=name, retry=None), 5000)
    assert isinstance(error, exceptions.ResourceExhausted)
    assert "Quota exceeded for quota metric 'Read requests'" in str(error)
    # A minute's worth at once, plus the refill (1,000 a minute) while the loop ran.
    assert 1000 <= ok <= 1000 + math.ceil(took * 1000 / 60)
    emulator.advance_clock(60)  # the bucket refills within a minute
    services.get_service(name=name, retry=None)


def test_writes_past_the_per_minute_quota_are_resource_exhausted(
    emulator: Emulator, services: run_v2.ServicesClient, name: str
) -> None:
    def write_once(i: int) -> None:
        pct = 1 + i % 50
        update = run_v2.Service(name=name, traffic=[target(STABLE, 100 - pct), target(CANARY, pct)])
        services.update_service(
            request=run_v2.UpdateServiceRequest(service=update, update_mask={"paths": ["traffic"]}),
            retry=None,
        ).result(timeout=10)

    ok, took, error = until_refused(write_once, 1000)
    assert isinstance(error, exceptions.ResourceExhausted)
    assert "'Write requests per minute per region'" in str(error)
    assert 60 <= ok <= 60 + math.ceil(took * 60 / 60)


# --- 4. faults, etag, tag cleanup, echoed revision names, WaitOperation ----------------------
@pytest.mark.parametrize(
    ("method", "code", "error"),
    [
        ("GetService", "PERMISSION_DENIED", exceptions.PermissionDenied),
        ("UpdateService", "INTERNAL", exceptions.InternalServerError),
        ("ListRevisions", "DEADLINE_EXCEEDED", exceptions.DeadlineExceeded),
    ],
    ids=["get-permission", "update-internal", "list-deadline"],
)
def test_any_status_code_can_be_injected_into_any_method(
    emulator: Emulator,
    services: run_v2.ServicesClient,
    name: str,
    method: str,
    code: str,
    error: type[Exception],
) -> None:
    emulator.fault(method, code=code, times=1)
    with pytest.raises(error):
        if method == "ListRevisions":
            list(clients.revisions_client().list_revisions(parent=name, retry=None))
        elif method == "GetService":
            services.get_service(name=name, retry=None)
        else:
            write(services, name, target(STABLE, 100))


def test_an_operation_can_fail_with_an_injected_code(
    emulator: Emulator, services: run_v2.ServicesClient, name: str
) -> None:
    emulator.fault("Operation", code="ABORTED", message="backend restarted", times=1)
    op = write(services, name, target(STABLE, 50), target(CANARY, 50))
    with pytest.raises(exceptions.Aborted, match="backend restarted"):
        op.result(timeout=10)
    svc = services.get_service(name=name)
    assert split(svc.traffic_statuses) == [(STABLE, 100, "")]
    assert svc.terminal_condition.message == "backend restarted"


@pytest.mark.parametrize(
    ("etag", "error"),
    [
        ({"mode": "enforce", "code": "ABORTED"}, exceptions.Aborted),
        ({"mode": "enforce"}, exceptions.FailedPrecondition),
        ({"mode": "ignore"}, None),
    ],
    ids=["aborted", "failed-precondition", "ignored"],
)
def test_a_stale_etag_is_answered_as_configured(
    etag: dict[str, str], error: type[Exception] | None
) -> None:
    with Emulator.start({"etag": etag, **_ION}, latency_mode="simulated") as emu:
        client = clients.services_client(emu.grpc_target)
        name = emu.service_name("ion-api")
        first, second = client.get_service(name=name), client.get_service(name=name)
        first.traffic = [target(STABLE, 90), target(CANARY, 10)]
        client.update_service(service=first).result(timeout=10)
        second.traffic = [target(STABLE, 50), target(CANARY, 50)]
        if error is None:
            client.update_service(service=second).result(timeout=10)  # last writer wins
        else:
            with pytest.raises(error, match="etag"):
                client.update_service(service=second)


_ION: dict[str, Any] = {
    "services": [
        {"name": "ion-api", "revisions": [{"name": STABLE}, {"name": CANARY}]},
    ]
}


def test_past_2000_tags_a_region_deletes_the_written_service_s_idle_tags_oldest_first() -> None:
    # 999 services with 2 tags each, and `api` with 2: 2,000 tags, the limit.
    fillers = [
        {
            "name": f"svc-{i:04d}",
            "revisions": [{"name": f"svc-{i:04d}-00001-one"}],
            "tags": {"stable": f"svc-{i:04d}-00001-one", "idle": f"svc-{i:04d}-00001-one"},
        }
        for i in range(999)
    ]
    api = {
        "name": "api",
        "revisions": [{"name": "api-00001-one"}, {"name": "api-00002-two"}],
        "traffic": {"api-00001-one": 100},
        "tags": {"stable": "api-00001-one", "canary": "api-00002-two"},
    }
    with Emulator.start({"services": [*fillers, api]}, latency_mode="simulated") as emu:
        client = clients.services_client(emu.grpc_target)
        name = emu.service_name("api")
        op = write(
            client,
            name,
            target("api-00001-one", 100, "stable"),
            target("api-00002-two", 0, "canary"),
            target("api-00002-two", 0, "preview"),
        )
        op.result(timeout=10)
        svc = client.get_service(name=name)
        # 2,001 tags: the oldest tag without traffic (`canary`) went; the new one stays.
        assert {t.tag for t in svc.traffic} == {"stable", "preview"}
        assert {t.tag for t in svc.traffic_statuses} == {"stable", "preview"}
        other = client.get_service(name=emu.service_name("svc-0000"))
        assert {t.tag for t in other.traffic} == {"stable", "idle"}


def test_echoing_template_revision_with_another_config_is_already_exists(
    services: run_v2.ServicesClient, name: str
) -> None:
    svc = services.get_service(name=name)
    assert svc.template.revision  # a read-modify-write echoes it
    svc.template.containers[0].image += "-patched"
    with pytest.raises(exceptions.AlreadyExists, match="with different configuration already"):
        services.update_service(service=svc)
    # Without the echoed name, Cloud Run names a new revision itself.
    svc.template.revision = ""
    services.update_service(service=svc).result(timeout=10)


def test_wait_operation_blocks_until_the_operation_is_done(
    emulator: Emulator, services: run_v2.ServicesClient, name: str
) -> None:
    emulator.lro(done=False, polls=3)
    op = write(services, name, target(STABLE, 80), target(CANARY, 20))
    assert not op.done()
    with grpc.insecure_channel(emulator.grpc_target) as channel:
        stub = operations_pb2_grpc.OperationsStub(channel)
        done = stub.WaitOperation(
            operations_pb2.WaitOperationRequest(
                name=op.operation.name, timeout=duration_pb2.Duration(seconds=5)
            )
        )
    assert done.done and done.HasField("response")


def test_a_completed_update_s_response_is_the_service_as_the_operation_left_it(
    emulator: Emulator, services: run_v2.ServicesClient, name: str
) -> None:
    emulator.lro(done=False, polls=1)
    op = write(services, name, target(STABLE, 90, "stable"), target(CANARY, 10, "canary"))
    done = op.result(timeout=30)
    # Reconciliation over and succeeded: what serves is what was asked (service.proto).
    assert not done.reconciling
    assert done.terminal_condition.state == run_v2.Condition.State.CONDITION_SUCCEEDED
    assert done.observed_generation == done.generation
    wanted = [(STABLE, 90, "stable"), (CANARY, 10, "canary")]
    assert split(done.traffic) == split(done.traffic_statuses) == wanted
    assert all(t.uri for t in done.traffic_statuses)
    assert done.etag == services.get_service(name=name).etag
    # A later change is the service's, not the finished operation's.
    emulator.drift("ion-api", {STABLE: 100})
    polled = clients.operations_client().get_operation(op.operation.name)
    again = run_v2.Service.deserialize(polled.response.value)
    assert split(again.traffic_statuses) == wanted and again.etag == done.etag


def test_an_operation_response_without_what_serves_on_request(
    emulator: Emulator, services: run_v2.ServicesClient, name: str
) -> None:
    emulator.lro(done=True, response="no-status")
    done = write(services, name, target(STABLE, 90), target(CANARY, 10)).result(timeout=10)
    assert split(done.traffic) == [(STABLE, 90, ""), (CANARY, 10, "")]
    assert not done.traffic_statuses and not done.observed_generation and not done.conditions
    assert "terminal_condition" not in done
    served = services.get_service(name=name)  # the service itself still says it
    assert split(served.traffic_statuses) == [(STABLE, 90, ""), (CANARY, 10, "")]
    with pytest.raises(ApiError, match="lro response 'bare' is not one of"):
        emulator.lro(done=True, response="bare")  # type: ignore[arg-type]


# --- 5. Cloud Monitoring: sampled, late, coarse, sometimes partial ----------------------------
@pytest.fixture
def metrics(emulator: Emulator) -> Iterator[monitoring_v3.MetricServiceClient]:
    yield clients.metric_client()


def count_request(
    emu: Emulator, period: timedelta = timedelta(minutes=5)
) -> monitoring_v3.ListTimeSeriesRequest:
    end = emu.now()
    return monitoring_v3.ListTimeSeriesRequest(
        name=f"projects/{emu.project}",
        filter=f'metric.type = "{COUNT}"',
        interval=monitoring_v3.TimeInterval(start_time=end - timedelta(minutes=10), end_time=end),
        aggregation=monitoring_v3.Aggregation(
            alignment_period=period,
            per_series_aligner=monitoring_v3.Aggregation.Aligner.ALIGN_DELTA,
            cross_series_reducer=monitoring_v3.Aggregation.Reducer.REDUCE_SUM,
            group_by_fields=["metric.labels.response_code_class"],
        ),
    )


def total(metrics: monitoring_v3.MetricServiceClient, req: Any) -> int:
    return sum(
        p.value.int64_value for ts in metrics.list_time_series(request=req) for p in ts.points
    )


def test_points_are_visible_only_after_the_sample_and_the_ingestion_delay(
    emulator: Emulator, metrics: monitoring_v3.MetricServiceClient
) -> None:
    emulator.load("ion-api", 50)
    assert total(metrics, count_request(emulator)) == 0
    emulator.advance_clock(179)
    assert total(metrics, count_request(emulator)) == 0  # at most 59 s + 180 s late
    emulator.advance_clock(61)
    assert total(metrics, count_request(emulator)) == 50


def test_an_alignment_period_under_60_seconds_is_invalid_argument(
    emulator: Emulator, metrics: monitoring_v3.MetricServiceClient
) -> None:
    with pytest.raises(exceptions.InvalidArgument, match="at least 60 seconds"):
        total(metrics, count_request(emulator, timedelta(seconds=30)))


def test_partial_results_leave_series_out_and_say_so(
    emulator: Emulator, metrics: monitoring_v3.MetricServiceClient
) -> None:
    emulator.behave(STABLE, error_rate=0.5)
    emulator.load("ion-api", 100)
    emulator.advance_clock(240)
    emulator.partial_results("shard unavailable", {"metric.labels.response_code_class": "5xx"})
    pager = metrics.list_time_series(request=count_request(emulator))
    first = next(iter(pager.pages))
    assert [e.message for e in first.execution_errors] == ["shard unavailable"]
    assert {ts.metric.labels["response_code_class"] for ts in first.time_series} == {"2xx"}


# --- 6. one virtual clock ----------------------------------------------------------------
def test_the_reconciler_s_clock_is_the_emulator_s_and_survives_a_restart() -> None:
    with Emulator.start(latency_mode="simulated") as emu:
        clock = clients.emulator_clock(emu.grpc_target)
        first = clock()
        emu.advance_clock(300)
        moved = clock()
        assert timedelta(minutes=5) <= moved - first < timedelta(minutes=6)
    # The emulator is gone (restarting): the clock runs on from its last reading.
    after = clock()
    assert timedelta(0) <= after - moved < timedelta(minutes=1)


def test_an_emulator_started_again_on_the_same_port_is_read_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The process keeps one clock per emulator address: a read that failed while nothing
    listened must not leave it (or the clients made after it) on a connection in gRPC's
    reconnect backoff (1 s at first, growing to 2 min), reading the old emulator's time."""
    with Emulator.start(latency_mode="simulated") as old:
        target = old.grpc_target
        monkeypatch.setenv(clients.EMULATOR_HOST_ENV, target)
        old.advance_clock(10 * 86400)
        assert utc_now() - datetime.now(UTC) > timedelta(days=9)
    # Nothing listens: the clock runs on from the old emulator's reading.
    assert utc_now() - datetime.now(UTC) > timedelta(days=9)
    port = int(target.rsplit(":", 1)[1])
    with Emulator.start(port=port, latency_mode="simulated") as new:
        services = clients.services_client()
        assert services.get_service(name=new.service_name("ion-api"), retry=None, timeout=5)
        assert abs(utc_now() - new.now()) < timedelta(seconds=30)


def test_a_clock_that_never_reached_the_emulator_is_one_line() -> None:
    with Emulator.start(latency_mode="simulated") as emu:
        target = emu.grpc_target
    with pytest.raises(ReconcileError, match="cannot read its clock") as caught:
        clients.emulator_clock(target)()
    assert "\n" not in str(caught.value)
