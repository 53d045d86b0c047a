"""CloudRunBackend against the emulator's Google rules: it trusts what serves, keeps failed
operations apart from etag conflicts, paces and retries quotas, and never reports a write
that landed as failed. Official clients only."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from google.api_core import exceptions
from google.cloud import run_v2

from reconciler import clients
from reconciler.backends import BackendError, Conflict, OperationFailed, cloudrun
from reconciler.backends.cloudrun import CloudRunBackend, TokenBucket
from reconciler.emulator import Emulator
from reconciler.emulator.scenario import LroResponse
from reconciler.model import ServiceRef, Target, TrafficSplit

STABLE = "ion-api-00041-abc"
CANARY = "ion-api-00042-xyz"
REF = ServiceRef("naeda-genesis", "us-central1", "ion-api")
_SUCCEEDED = run_v2.Condition.State.CONDITION_SUCCEEDED
_FAILED = run_v2.Condition.State.CONDITION_FAILED
_RECONCILING = run_v2.Condition.State.CONDITION_RECONCILING


def canary_at(pct: int, canary: str = CANARY) -> TrafficSplit:
    return TrafficSplit.of([Target(STABLE, 100 - pct, "stable"), Target(canary, pct, "canary")])


@pytest.fixture
def backend(emulator: Emulator) -> CloudRunBackend:
    return CloudRunBackend(max_wait=0.05)


@pytest.mark.parametrize("response", ["service", "no-status"])
def test_a_revision_that_cannot_serve_is_an_operation_failure_naming_the_reason(
    emulator: Emulator, backend: CloudRunBackend, response: LroResponse
) -> None:
    emulator.lro(done=True, response=response)
    bad = emulator.deploy("ion-api", "ion-api-00043-bad", ready=False)
    live = backend.get_service(REF)
    with pytest.raises(OperationFailed) as caught:
        backend.set_traffic(REF, canary_at(5, bad), live.etag)
    message = str(caught.value)
    assert not isinstance(caught.value, Conflict)
    assert f"Revision '{bad}' is not ready" in message and "\n" not in message
    assert f"still serving {STABLE}=100" in message
    after = backend.get_service(REF)
    assert after.traffic.percents() == {STABLE: 100}  # what serves
    assert after.requested.same_routing(canary_at(5, bad))  # what was asked for
    assert after.failure is not None and bad in after.failure
    assert not after.reconciling and not after.serving_requested


@pytest.mark.parametrize("code", ["FAILED_PRECONDITION", "ABORTED", "INTERNAL"])
def test_an_operation_s_error_is_never_a_conflict(
    emulator: Emulator, backend: CloudRunBackend, code: str
) -> None:
    emulator.fault("Operation", code=code, message="rollout stopped", times=1)
    live = backend.get_service(REF)
    with pytest.raises(OperationFailed, match=f"failed \\({code.title().replace('_', '')}"):
        backend.set_traffic(REF, canary_at(5), live.etag)


@pytest.mark.parametrize("code", ["FAILED_PRECONDITION", "ABORTED"])
def test_a_stale_etag_at_the_server_is_a_conflict_whatever_its_code(code: str) -> None:
    scenario: dict[str, Any] = {
        "etag": {"code": code},
        "services": [{"name": "ion-api", "revisions": [{"name": STABLE}, {"name": CANARY}]}],
    }
    with Emulator.start(scenario, latency_mode="simulated") as emu:
        backend = CloudRunBackend(
            clients.services_client(emu.grpc_target), clients.revisions_client(emu.grpc_target)
        )
        live = backend.get_service(REF)
        # The write waits at the server while someone else changes the service: the server,
        # not the client's own read, sees the stale etag.
        emu.fault("UpdateService", rate=0.0, latency_ms=1000)

        def meddle() -> None:
            while emu.write_attempts == 0:
                time.sleep(0.01)
            emu.drift("ion-api", {STABLE: 80, CANARY: 20})

        other = threading.Thread(target=meddle)
        other.start()
        with pytest.raises(Conflict, match="changed since it was read \\(The etag provided"):
            backend.set_traffic(REF, canary_at(5), live.etag)
        other.join()


def test_a_refusal_that_is_not_an_etag_mismatch_is_not_a_conflict(
    emulator: Emulator, backend: CloudRunBackend
) -> None:
    emulator.fault("UpdateService", code="FAILED_PRECONDITION", message="org policy", times=1)
    live = backend.get_service(REF)
    with pytest.raises(BackendError, match="update refused: FailedPrecondition: org policy") as e:
        backend.set_traffic(REF, canary_at(5), live.etag)
    assert not isinstance(e.value, Conflict)


def test_writes_send_only_traffic_and_annotations(
    emulator: Emulator, backend: CloudRunBackend
) -> None:
    # A concurrent deploy moves template.revision on; a client echoing the old one would get
    # 409 ALREADY_EXISTS or undo the deploy. Ours sends no template at all.
    live = backend.get_service(REF)
    new = emulator.deploy("ion-api", "ion-api-00043-new")
    after = backend.set_traffic(REF, canary_at(5), "", {"reconciler/at": "x"})
    assert after.traffic.same_routing(canary_at(5))
    svc = clients.services_client().get_service(name=REF.name)
    assert svc.template.revision == new
    assert svc.annotations["reconciler/at"] == "x"
    assert live.etag != after.etag


def test_a_write_on_a_fresh_read_goes_out_on_its_etag_and_keeps_others_annotations(
    emulator: Emulator,
) -> None:
    now = [0.0]
    backend = CloudRunBackend(max_wait=0.05, clock=lambda: now[0])
    first = backend.set_traffic(REF, canary_at(5), "", {"other-tool/note": "keep me"})
    emulator.reset_counters()
    now[0] += 59.0  # within `fresh_for` of the read-back
    after = backend.set_traffic(REF, canary_at(10), first.etag, {"reconciler/at": "x"})
    # No read before the write, none after it: the operation's response says what serves.
    assert emulator.calls == {"UpdateService": 1}
    assert after.traffic.same_routing(canary_at(10)) and after.revisions == frozenset()
    assert after.annotations == {"other-tool/note": "keep me", "reconciler/at": "x"}
    # A read older than `fresh_for` is not trusted with the write: the service is read first.
    emulator.reset_counters()
    now[0] += 61.0
    backend.set_traffic(REF, canary_at(5), after.etag)
    assert emulator.calls == {"GetService": 1, "UpdateService": 1}


@pytest.mark.parametrize("polls", [None, 2], ids=["done-at-once", "polled"])
def test_a_write_is_verified_from_its_operation_s_response_without_a_read(
    emulator: Emulator, backend: CloudRunBackend, polls: int | None
) -> None:
    live = backend.list_services(REF.project, REF.region)[REF.service]
    if polls is not None:
        emulator.lro(done=False, polls=polls)
    emulator.reset_counters()
    after = backend.set_traffic(REF, canary_at(5), live.etag, {"reconciler/at": "x"})
    # UpdateService (and the polls of a pending operation), never a GetService.
    calls = dict(emulator.calls)
    assert calls.pop("UpdateService") == 1
    assert calls == ({} if polls is None else {"GetOperation": calls.get("GetOperation", 0)})
    assert polls is None or calls["GetOperation"] >= polls
    assert after.traffic.same_routing(canary_at(5)) and after.requested.same_routing(canary_at(5))
    assert not after.reconciling and after.observed_generation == after.generation
    assert after.etag == backend.get_service(REF).etag  # the service as it is after the write
    assert after.annotations["reconciler/at"] == "x"


def test_a_response_that_does_not_say_what_serves_is_checked_by_a_read(
    emulator: Emulator, backend: CloudRunBackend
) -> None:
    live = backend.list_services(REF.project, REF.region)[REF.service]
    emulator.lro(done=True, response="no-status")
    emulator.reset_counters()
    after = backend.set_traffic(REF, canary_at(5), live.etag)
    assert emulator.calls == {"UpdateService": 1, "GetService": 1}
    assert after.traffic.same_routing(canary_at(5))
    assert after.statuses.same_routing(canary_at(5)) and not after.reconciling


def _service(**fields: Any) -> run_v2.Service:
    settled_service: dict[str, Any] = {
        "generation": 4,
        "observed_generation": 4,
        "reconciling": False,
        "terminal_condition": run_v2.Condition(type_="Ready", state=_SUCCEEDED),
        "traffic_statuses": [run_v2.TrafficTargetStatus(revision=STABLE, percent=100)],
    }
    return run_v2.Service(**{**settled_service, **fields})


@pytest.mark.parametrize(
    ("service", "written_on", "settled"),
    [
        (_service(), 3, True),
        (_service(), 4, True),  # a write that changed nothing keeps the generation
        (_service(terminal_condition=run_v2.Condition(state=_FAILED)), 3, True),
        (_service(reconciling=True), 3, False),
        (_service(terminal_condition=None), 3, False),
        (_service(terminal_condition=run_v2.Condition(state=_RECONCILING)), 3, False),
        (_service(observed_generation=3), 3, False),
        (_service(generation=2, observed_generation=2), 3, False),
        (_service(traffic_statuses=[]), 3, False),
        (run_v2.Service(), 3, False),
    ],
    ids=[
        "settled",
        "unchanged",
        "failed",
        "reconciling",
        "no-terminal-condition",
        "terminal-condition-in-progress",
        "not-yet-observed",
        "older-than-the-write",
        "no-traffic-statuses",
        "empty",
    ],
)
def test_a_response_settles_a_write_only_when_it_says_what_serves_after_it(
    service: run_v2.Service, written_on: int, settled: bool
) -> None:
    assert cloudrun.settled(service, written_on) is settled


def test_a_change_since_a_fresh_read_is_refused_by_the_etag_and_nothing_is_written(
    emulator: Emulator, backend: CloudRunBackend
) -> None:
    live = backend.list_services(REF.project, REF.region)[REF.service]
    emulator.drift("ion-api", {STABLE: 80, CANARY: 20})
    emulator.reset_counters()
    with pytest.raises(Conflict, match="changed since it was read \\(The etag provided"):
        backend.set_traffic(REF, canary_at(5), live.etag, {"reconciler/at": "x"})
    assert emulator.writes == 0 and emulator.write_attempts == 1
    after = backend.get_service(REF)
    assert after.traffic.percents() == {STABLE: 80, CANARY: 20}
    assert "reconciler/at" not in after.annotations


def test_resource_exhausted_is_retried_with_backoff(
    emulator: Emulator, backend: CloudRunBackend
) -> None:
    other = clients.services_client()
    # The quota refills in emulator time (wall clock), a call every 60 ms: under load the
    # backend's first read may come after a refill, so the race is run until it was refused.
    for _ in range(5):
        with pytest.raises(exceptions.ResourceExhausted):
            # Another client spends the project's read quota (1,000 a minute).
            for _ in range(5000):
                other.get_service(name=REF.name, retry=None)
        before = emulator.calls.get("GetService", 0)
        live = backend.get_service(REF)
        assert live.traffic.percents() == {STABLE: 100}
        if emulator.calls["GetService"] - before >= 2:  # refused at least once, then served
            return
    pytest.fail("the backend's first read was never refused: the quota refilled before it")


def test_a_write_that_landed_is_never_reported_failed(
    emulator: Emulator, backend: CloudRunBackend
) -> None:
    # The write is accepted; polling its operation is refused (quota), so the client retries
    # the write, which now meets its own new etag. It reads back and finds its write.
    emulator.lro(done=False, polls=1)
    emulator.fault("GetOperation", code="RESOURCE_EXHAUSTED", times=1)
    live = backend.get_service(REF)
    stamp = {"reconciler/write": "w-1"}
    # The operation finishes a few (emulator) seconds later, whoever polls it.
    later = threading.Timer(0.5, emulator.advance_clock, [10])
    later.start()
    after = backend.set_traffic(REF, canary_at(5), live.etag, stamp)
    later.join()
    assert after.traffic.same_routing(canary_at(5))
    assert emulator.writes == 1 and emulator.write_attempts == 2


class FakeTime:
    """A clock that only sleeping moves."""

    def __init__(self) -> None:
        self.t = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.t += seconds


def test_token_bucket_allows_a_minute_s_worth_then_paces() -> None:
    fake = FakeTime()
    bucket = TokenBucket(60, fake.clock, fake.sleep)
    for _ in range(60):
        bucket.acquire()
    assert fake.sleeps == []  # a minute's worth at once
    fake.t += 0.5  # half a token refilled: the next call waits the other half second
    bucket.acquire()
    assert fake.sleeps == [pytest.approx(0.5)]
    for _ in range(3):
        bucket.acquire()  # then one a second
    assert fake.sleeps[1:] == [pytest.approx(1.0)] * 3
    assert bucket.waited == pytest.approx(3.5)


def test_unlimited_bucket_never_waits() -> None:
    bucket = TokenBucket(0)
    for _ in range(10_000):
        bucket.acquire()
    assert bucket.waited == 0.0


@pytest.fixture(autouse=True)
def _no_leftover_faults(emulator: Emulator) -> Iterator[None]:
    yield
    emulator.clear_faults()
