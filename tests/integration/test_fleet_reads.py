"""Reads by list: a project and region is read with ListServices and ListRevisions across
services (`services/-`), paged, instead of two reads per service; counted on the emulator."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.backends.cloudrun import CloudRunBackend
from reconciler.emulator import Emulator
from reconciler.gather import observe
from reconciler.loader import load_spec
from reconciler.model import LiveService, ServiceRef
from reconciler.spec import RolloutSpec

ROOT = Path(__file__).resolve().parents[2]
PROJECT, REGION, OTHER = "naeda-genesis", "us-central1", "europe-west1"
N = 30


def _service(name: str, region: str = REGION) -> dict[str, object]:
    stable, canary = f"{name}-00041-abc", f"{name}-00042-xyz"
    return {
        "name": name,
        "region": region,
        "revisions": [{"name": stable}, {"name": canary}],
        "traffic": {stable: 95, canary: 5},
        "tags": {"stable": stable, "canary": canary},
    }


@pytest.fixture
def fleet() -> Iterator[Emulator]:
    services = [_service(f"svc-{i:02d}") for i in range(N)] + [_service("lone", OTHER)]
    scenario = {"project": PROJECT, "region": REGION, "services": services}
    with Emulator.start(scenario, latency_mode="simulated") as emu:
        yield emu


def _spec(tmp_path: Path, name: str, region: str = REGION) -> RolloutSpec:
    text = (
        (ROOT / "rollout" / "ion-api.yaml")
        .read_text(encoding="utf-8")
        .replace("ion-api-00041-abc", f"{name}-00041-abc")
        .replace("ion-api-00042-xyz", f"{name}-00042-xyz")
        .replace("ion-api", name)
        .replace(f"region: {REGION}", f"region: {region}")
    )
    path = tmp_path / region / f"{name}.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return load_spec(path)


def test_a_region_costs_its_list_pages_not_two_reads_per_service(
    fleet: Emulator, tmp_path: Path
) -> None:
    specs = [_spec(tmp_path, f"svc-{i:02d}") for i in range(N)]
    specs += [_spec(tmp_path, "lone", OTHER), _spec(tmp_path, "gone")]
    backend = CloudRunBackend(*clients_for(fleet), page_size=7, attempts=1)
    fleet.reset_counters()
    lives = observe(backend, specs)
    # 31 services listed in us-central1 at 7 a page: 5 pages; 62 revisions: 9 pages. The lone
    # service of europe-west1 costs a GetService and a ListRevisions, as before.
    assert fleet.calls == {"ListServices": 5, "ListRevisions": 9 + 1, "GetService": 1}
    assert backend.calls == 16
    live = lives[f"{PROJECT}/{REGION}/svc-07"]
    assert isinstance(live, LiveService)
    assert live.ref.name == f"projects/{PROJECT}/locations/{REGION}/services/svc-07"
    assert live.traffic.describe() == live.statuses.describe()
    assert live.traffic.percent_of("svc-07-00042-xyz") == 5
    assert live.revisions == {"svc-07-00041-abc", "svc-07-00042-xyz"}
    assert live.tag_uris.keys() == {"stable", "canary"} and live.etag
    single = lives[f"{PROJECT}/{OTHER}/lone"]
    assert isinstance(single, LiveService) and single.ref.region == OTHER
    # A rollout naming a service the region does not have is an error for it alone.
    assert lives[f"{PROJECT}/{REGION}/gone"] == (
        f"get projects/{PROJECT}/locations/{REGION}/services/gone: not found "
        f"(not among the services listed in projects/{PROJECT}/locations/{REGION})"
    )


def test_the_listed_state_equals_a_get(fleet: Emulator, tmp_path: Path) -> None:
    services, revisions = clients_for(fleet)
    backend = CloudRunBackend(services, revisions)
    fleet.drift("svc-03", {"svc-03-00041-abc": 80, "svc-03-00042-xyz": 20})
    listed = backend.list_services(PROJECT, REGION)["svc-03"]
    got = backend.get_service(listed.ref)
    assert listed == got


def test_a_list_failure_is_an_error_for_every_service_of_the_region(
    fleet: Emulator, tmp_path: Path
) -> None:
    specs = [_spec(tmp_path, f"svc-{i:02d}") for i in range(3)]
    fleet.fault("ListServices", rate=1.0)
    backend = CloudRunBackend(*clients_for(fleet), attempts=2, max_wait=0.01, read_deadline=0)
    lives = observe(backend, specs)
    assert all(isinstance(v, str) and "still failing after 2 attempts" in v for v in lives.values())


def clients_for(emu: Emulator) -> tuple[object, object]:
    from reconciler import clients

    return clients.services_client(emu.grpc_target), clients.revisions_client(emu.grpc_target)


def test_a_change_tick_writes_each_service_on_its_listed_etag_and_reads_nothing_back(
    fleet: Emulator, tmp_path: Path
) -> None:
    # Every rollout of the region moves 5% -> 10%: the list read's etags carry the writes (no
    # GetService before them), and each write is verified by its operation's response, the
    # service with what serves (no GetService after them; a traffic write makes no revision:
    # no ListRevisions per service).
    from datetime import UTC, datetime

    from reconciler.reconcile import Context, apply_all

    repo = tmp_path / "repo"
    for i in range(N):
        spec = _spec(tmp_path, f"svc-{i:02d}")
        text = (tmp_path / REGION / f"{spec.service}.yaml").read_text(encoding="utf-8")
        text = re.sub(r"(?m)^dependencies:.*\n(?:[ #].*\n)*", "", text)
        text = text.replace("canary_percent: 5 ", "canary_percent: 10") + "force: true\n"
        (repo / "rollout").mkdir(parents=True, exist_ok=True)
        (repo / "rollout" / f"{spec.service}.yaml").write_text(text, encoding="utf-8")
    backend = CloudRunBackend(*clients_for(fleet))
    readings: list[datetime] = []

    def clock() -> datetime:
        readings.append(datetime.now(UTC))
        return readings[-1]

    ctx = Context(repo=repo, backend=backend, clock=clock, run_probes=False)
    fleet.reset_counters()

    result = apply_all(ctx)

    assert [o.error for o in result.outcomes if o.error] == []
    assert sum(o.applied for o in result.outcomes) == N
    assert fleet.calls == {
        "ListServices": 1,
        "ListRevisions": 1,
        "UpdateService": N,
    }
    assert fleet.writes == N
    # The services share readings of the clock (one a second at most), not one each.
    assert len(readings) < N
    live = backend.get_service(ServiceRef(PROJECT, REGION, "svc-07"))
    assert live.traffic.percent_of("svc-07-00042-xyz") == 10
    assert live.annotations.keys() == {"cloudrun-reconciler/last-apply"}
