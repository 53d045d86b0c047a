"""Conformance of the emulator's Cloud Run Admin v2 API, driven only by the official clients."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
from google.api_core import exceptions
from google.cloud import run_v2
from google.protobuf import field_mask_pb2

from reconciler import clients
from reconciler.emulator import Emulator

STABLE = "ion-api-00041-abc"
CANARY = "ion-api-00042-xyz"
_REV = run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION
_LATEST = run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST
_READY = run_v2.Condition.State.CONDITION_SUCCEEDED
_RECONCILING = run_v2.Condition.State.CONDITION_RECONCILING


def target(revision: str, percent: int, tag: str = "") -> run_v2.TrafficTarget:
    return run_v2.TrafficTarget(type_=_REV, revision=revision, percent=percent, tag=tag)


@pytest.fixture
def services(emulator: Emulator) -> run_v2.ServicesClient:
    return clients.services_client()


@pytest.fixture
def revisions(emulator: Emulator) -> run_v2.RevisionsClient:
    return clients.revisions_client()


@pytest.fixture
def name(emulator: Emulator) -> str:
    return emulator.service_name("ion-api")


def split(svc: run_v2.Service) -> list[tuple[str, int, str]]:
    return sorted((t.revision, t.percent, t.tag) for t in svc.traffic_statuses)


def test_get_service_reports_a_settled_service(services: run_v2.ServicesClient, name: str) -> None:
    svc = services.get_service(name=name)
    assert svc.name == name
    assert svc.generation == svc.observed_generation > 0
    assert not svc.reconciling
    assert svc.terminal_condition.type_ == "Ready"
    assert svc.terminal_condition.state == _READY
    assert svc.latest_ready_revision == f"{name}/revisions/{CANARY}"
    assert svc.etag
    assert split(svc) == [(STABLE, 100, "")]
    assert [(t.revision, t.percent) for t in svc.traffic] == [(STABLE, 100)]
    # The service URL is a plain loopback URL a probe can fetch.
    body = httpx.get(f"{svc.uri}/api/health").json()
    assert body["status"] == "healthy"
    assert body["revision"] == STABLE


def test_unknown_service_is_not_found(services: run_v2.ServicesClient, emulator: Emulator) -> None:
    with pytest.raises(exceptions.NotFound):
        services.get_service(
            name=f"projects/{emulator.project}/locations/{emulator.region}/services/nope"
        )


def test_traffic_update_applies_split_tags_and_uris(
    services: run_v2.ServicesClient,
    revisions: run_v2.RevisionsClient,
    emulator: Emulator,
    name: str,
) -> None:
    before = services.get_service(name=name)
    n_revisions = len(list(revisions.list_revisions(parent=name)))
    before.traffic = [target(STABLE, 95, "stable"), target(CANARY, 5, "canary")]

    after = services.update_service(service=before).result(timeout=10)

    assert after.generation == before.generation + 1
    assert after.observed_generation == after.generation
    assert after.etag != before.etag
    assert split(after) == [(STABLE, 95, "stable"), (CANARY, 5, "canary")]
    uris = {t.tag: t.uri for t in after.traffic_statuses}
    assert httpx.get(f"{uris['canary']}/api/health").json()["revision"] == CANARY
    assert httpx.get(f"{uris['stable']}/api/health").json()["revision"] == STABLE
    # A traffic-only change creates no revision.
    assert len(list(revisions.list_revisions(parent=name))) == n_revisions
    assert services.get_service(name=name).latest_ready_revision == before.latest_ready_revision
    assert (emulator.writes, emulator.write_attempts) == (1, 1)


def test_zero_percent_tagged_target_keeps_its_url(
    services: run_v2.ServicesClient, name: str
) -> None:
    svc = services.get_service(name=name)
    svc.traffic = [target(STABLE, 100, "stable"), target(CANARY, 0, "canary")]
    after = services.update_service(service=svc).result(timeout=10)
    canary = next(t for t in after.traffic_statuses if t.tag == "canary")
    assert canary.percent == 0
    assert httpx.get(f"{canary.uri}/api/health").json()["revision"] == CANARY


def test_latest_target_follows_the_newest_revision(
    services: run_v2.ServicesClient, emulator: Emulator, name: str
) -> None:
    svc = services.get_service(name=name)
    svc.traffic = [run_v2.TrafficTarget(type_=_LATEST, percent=100)]
    after = services.update_service(service=svc).result(timeout=10)
    assert [(t.type_, t.revision) for t in after.traffic_statuses] == [(_LATEST, CANARY)]
    new = emulator.deploy("ion-api")
    assert split(services.get_service(name=name)) == [(new, 100, "")]


@pytest.mark.parametrize(
    ("traffic", "error"),
    [
        ([target(STABLE, 90), target(CANARY, 5)], exceptions.InvalidArgument),
        ([target(STABLE, 95), target(CANARY, 15)], exceptions.InvalidArgument),
        ([target(STABLE, 95), target("ion-api-00099-zzz", 5)], exceptions.NotFound),
        ([target(STABLE, 95, "same"), target(CANARY, 5, "same")], exceptions.InvalidArgument),
        ([target(STABLE, 95, "Bad_Tag"), target(CANARY, 5)], exceptions.InvalidArgument),
        # `$` in a pattern matches before a final newline: the whole name must match.
        ([target(STABLE, 95, "stable\n"), target(CANARY, 5)], exceptions.InvalidArgument),
        ([target("", 100)], exceptions.InvalidArgument),
    ],
    ids=[
        "sum-below-100",
        "sum-above-100",
        "unknown-revision",
        "duplicate-tag",
        "bad-tag",
        "tag-with-trailing-newline",
        "no-revision",
    ],
)
def test_invalid_traffic_is_refused_and_nothing_changes(
    services: run_v2.ServicesClient,
    emulator: Emulator,
    name: str,
    traffic: list[run_v2.TrafficTarget],
    error: type[Exception],
) -> None:
    svc = services.get_service(name=name)
    svc.traffic = traffic
    with pytest.raises(error):
        services.update_service(service=svc)
    again = services.get_service(name=name)
    assert (again.generation, again.etag, split(again)) == (svc.generation, svc.etag, split(svc))
    assert (emulator.writes, emulator.write_attempts) == (0, 1)


def test_stale_etag_is_refused_as_aip_154_says(services: run_v2.ServicesClient, name: str) -> None:
    first = services.get_service(name=name)
    second = services.get_service(name=name)
    first.traffic = [target(STABLE, 90), target(CANARY, 10)]
    services.update_service(service=first).result(timeout=10)
    second.traffic = [target(STABLE, 50), target(CANARY, 50)]
    with pytest.raises(exceptions.FailedPrecondition, match="etag"):
        services.update_service(service=second)
    assert split(services.get_service(name=name)) == [(STABLE, 90, ""), (CANARY, 10, "")]


def test_update_mask_limits_the_change_to_traffic(
    services: run_v2.ServicesClient, name: str
) -> None:
    svc = services.get_service(name=name)
    request = run_v2.UpdateServiceRequest(
        service=run_v2.Service(
            name=name, etag=svc.etag, traffic=[target(STABLE, 80), target(CANARY, 20)]
        ),
        update_mask=field_mask_pb2.FieldMask(paths=["traffic"]),
    )
    after = services.update_service(request=request).result(timeout=10)
    assert split(after) == [(STABLE, 80, ""), (CANARY, 20, "")]
    assert after.template.containers[0].image == svc.template.containers[0].image


def test_validate_only_changes_nothing(
    services: run_v2.ServicesClient, emulator: Emulator, name: str
) -> None:
    svc = services.get_service(name=name)
    svc.traffic = [target(STABLE, 50), target(CANARY, 50)]
    preview = services.update_service(
        request=run_v2.UpdateServiceRequest(service=svc, validate_only=True)
    ).result(timeout=10)
    assert [(t.revision, t.percent) for t in preview.traffic] == [(STABLE, 50), (CANARY, 50)]
    assert split(services.get_service(name=name)) == [(STABLE, 100, "")]
    assert emulator.writes == 0


def test_pending_operation_is_polled_to_completion(
    services: run_v2.ServicesClient, emulator: Emulator, name: str
) -> None:
    emulator.lro(done=False, polls=1)
    svc = services.get_service(name=name)
    svc.traffic = [target(STABLE, 90, "stable"), target(CANARY, 10, "canary")]

    operation = services.update_service(service=svc)

    assert operation.operation.done is False
    during = services.get_service(name=name)
    assert during.reconciling
    assert during.observed_generation < during.generation
    assert during.terminal_condition.state == _RECONCILING
    assert split(during) == [(STABLE, 100, "")]  # not serving the new split yet
    after = operation.result(timeout=30)
    assert not after.reconciling
    assert after.observed_generation == after.generation
    assert split(after) == [(STABLE, 90, "stable"), (CANARY, 10, "canary")]
    assert emulator.calls["GetOperation"] >= 2


def test_operation_can_be_polled_by_name(emulator: Emulator, name: str) -> None:
    emulator.lro(done=False, polls=0)
    services = clients.services_client()
    svc = services.get_service(name=name)
    svc.traffic = [target(STABLE, 70), target(CANARY, 30)]
    op_name = services.update_service(service=svc).operation.name
    polled = clients.operations_client().get_operation(op_name)
    assert polled.done
    assert run_v2.Service.deserialize(polled.response.value).observed_generation > 0


def test_template_change_creates_a_revision(
    services: run_v2.ServicesClient,
    revisions: run_v2.RevisionsClient,
    name: str,
) -> None:
    svc = services.get_service(name=name)
    svc.template.containers[0].image = "us-docker.pkg.dev/demo/ion-api/ion-api:v2"
    svc.template.revision = ""
    after = services.update_service(service=svc).result(timeout=10)
    newest = next(iter(revisions.list_revisions(parent=name)))
    assert after.latest_ready_revision == newest.name
    assert newest.name.rsplit("/", 1)[1].startswith("ion-api-00043-")
    assert split(after) == [(STABLE, 100, "")]  # pinned traffic stays where it was


@pytest.mark.parametrize(
    "revision",
    ["ion-api-00043-new\n", "Ion-api-00043-new", "other-00043-new"],
    ids=["trailing-newline", "uppercase", "foreign-prefix"],
)
def test_an_invalid_revision_name_is_refused_and_nothing_changes(
    services: run_v2.ServicesClient, emulator: Emulator, name: str, revision: str
) -> None:
    svc = services.get_service(name=name)
    before = (svc.generation, svc.template.revision)
    svc.template.containers[0].image = "us-docker.pkg.dev/demo/ion-api/ion-api:v2"
    svc.template.revision = revision
    with pytest.raises(exceptions.InvalidArgument, match="revision name"):
        services.update_service(service=svc)
    again = services.get_service(name=name)
    assert (again.generation, again.template.revision) == before
    assert emulator.writes == 0


def test_revisions_get_and_list_newest_first_with_paging(
    revisions: run_v2.RevisionsClient, emulator: Emulator, name: str
) -> None:
    new = emulator.deploy("ion-api", "ion-api-00043-new")
    pager = revisions.list_revisions(request=run_v2.ListRevisionsRequest(parent=name, page_size=1))
    pages = list(pager.pages)
    assert [p.revisions[0].name.rsplit("/", 1)[1] for p in pages] == [new, CANARY, STABLE]
    rev = revisions.get_revision(name=f"{name}/revisions/{CANARY}")
    assert rev.service == "ion-api"
    assert rev.conditions[0].state == _READY
    with pytest.raises(exceptions.NotFound):
        revisions.get_revision(name=f"{name}/revisions/ion-api-00099-zzz")
    with pytest.raises(exceptions.NotFound):
        list(revisions.list_revisions(parent=f"{name}-missing"))


@pytest.fixture
def many_services() -> Iterator[Emulator]:
    scenario = {
        "project": "paging-proj",
        "region": "europe-west1",
        "services": [
            {"name": f"svc-{i}", "revisions": [{"name": f"svc-{i}-00001-aaa"}]} for i in range(5)
        ],
    }
    with Emulator.start(scenario, latency_mode="simulated") as emu:
        yield emu


def test_list_services_pages(many_services: Emulator) -> None:
    services = clients.services_client(many_services.grpc_target)
    pager = services.list_services(
        request=run_v2.ListServicesRequest(
            parent="projects/paging-proj/locations/europe-west1", page_size=2
        )
    )
    pages = list(pager.pages)
    assert [len(p.services) for p in pages] == [2, 2, 1]
    names = [s.name.rsplit("/", 1)[1] for p in pages for s in p.services]
    assert names == [f"svc-{i}" for i in range(5)]
    every = services.list_services(parent="projects/paging-proj/locations/-")
    assert len(list(every)) == 5
    assert list(services.list_services(parent="projects/other/locations/europe-west1")) == []


def test_deploy_and_drift_show_up_without_api_writes(
    services: run_v2.ServicesClient, emulator: Emulator, name: str
) -> None:
    new = emulator.deploy("ion-api", behavior={"error_rate": 0.5})
    svc = services.get_service(name=name)
    assert svc.latest_ready_revision.endswith(f"/revisions/{new}")
    assert split(svc) == [(STABLE, 100, "")]
    emulator.drift("ion-api", {STABLE: 80, new: 20}, tags={"canary": new})
    drifted = services.get_service(name=name)
    assert new.startswith("ion-api-00043-")
    assert split(drifted) == [(STABLE, 80, ""), (new, 20, "canary")]
    assert drifted.generation == svc.generation + 1
    assert emulator.writes == 0


def test_injected_unavailable_surfaces_as_service_unavailable(
    services: run_v2.ServicesClient,
    revisions: run_v2.RevisionsClient,
    emulator: Emulator,
    name: str,
) -> None:
    emulator.fault("*", rate=1.0)
    with pytest.raises(exceptions.ServiceUnavailable):
        services.get_service(name=name, retry=None)
    with pytest.raises(exceptions.ServiceUnavailable):
        revisions.get_revision(name=f"{name}/revisions/{STABLE}")
    svc_req = run_v2.Service(name=name, traffic=[target(STABLE, 50), target(CANARY, 50)])
    with pytest.raises(exceptions.ServiceUnavailable):
        services.update_service(service=svc_req)
    assert (emulator.writes, emulator.write_attempts) == (0, 1)
    emulator.clear_faults()
    assert split(services.get_service(name=name)) == [(STABLE, 100, "")]


def test_transient_fault_heals_and_latency_is_added(
    revisions: run_v2.RevisionsClient, emulator: Emulator, name: str
) -> None:
    emulator.fault("GetRevision", rate=1.0, times=1)
    with pytest.raises(exceptions.ServiceUnavailable):
        revisions.get_revision(name=f"{name}/revisions/{STABLE}")
    assert revisions.get_revision(name=f"{name}/revisions/{STABLE}").name.endswith(STABLE)
    emulator.fault("GetRevision", rate=0.0, latency_ms=300)
    started = time.monotonic()
    revisions.get_revision(name=f"{name}/revisions/{STABLE}")
    assert time.monotonic() - started >= 0.3
    assert emulator.calls["GetRevision"] == 3


def test_an_outage_of_a_set_length_heals_in_emulator_time(
    services: run_v2.ServicesClient, emulator: Emulator, name: str
) -> None:
    emulator.fault("GetService", rate=1.0, seconds=30)
    for _ in range(3):  # every call fails while it lasts, however many
        with pytest.raises(exceptions.ServiceUnavailable):
            services.get_service(name=name, retry=None)
    emulator.advance_clock(29)
    with pytest.raises(exceptions.ServiceUnavailable):
        services.get_service(name=name, retry=None)
    emulator.advance_clock(1)
    assert services.get_service(name=name, retry=None).name == name


def test_list_revisions_across_services_with_dash_pages(many_services: Emulator) -> None:
    # Cloud Run: "To list all Revisions across Services, use - instead of Service name."
    many_services.deploy("svc-3", "svc-3-00002-bbb")
    revisions = clients.revisions_client(many_services.grpc_target)
    parent = "projects/paging-proj/locations/europe-west1/services/-"
    pager = revisions.list_revisions(
        request=run_v2.ListRevisionsRequest(parent=parent, page_size=4)
    )
    pages = list(pager.pages)
    assert [len(p.revisions) for p in pages] == [4, 2]
    names = [r.name.split("/services/", 1)[1] for p in pages for r in p.revisions]
    assert sorted(names) == sorted(
        [f"svc-{i}/revisions/svc-{i}-00001-aaa" for i in range(5)]
        + ["svc-3/revisions/svc-3-00002-bbb"]
    )
    # Each service's revisions still come newest first.
    assert names.index("svc-3/revisions/svc-3-00002-bbb") < names.index(
        "svc-3/revisions/svc-3-00001-aaa"
    )
    other = "projects/other/locations/europe-west1/services/-"
    assert list(revisions.list_revisions(parent=other)) == []
    with pytest.raises(exceptions.NotFound):
        list(revisions.list_revisions(parent=parent.replace("/-", "/svc-99")))
