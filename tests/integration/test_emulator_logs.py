"""Cloud Run request logs through the official google-cloud-logging client: ListLogEntries,
the streaming TailLogEntries, the ingestion delay on the emulator clock, Google's limits."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from google.api_core import exceptions
from google.cloud.logging_v2.types import LogEntry, TailLogEntriesRequest

from reconciler import clients
from reconciler.emulator import Emulator

STABLE, CANARY = "ion-api-00041-abc", "ion-api-00042-xyz"
LOG = "projects/naeda-genesis/logs/run.googleapis.com%2Frequests"
PROJECT = "projects/naeda-genesis"
SPLIT = {"traffic": {STABLE: 50, CANARY: 50}}


@pytest.fixture
def emu(monkeypatch: pytest.MonkeyPatch) -> Iterator[Emulator]:
    with Emulator.start(latency_mode="simulated", seed=3, log_delay=5.0) as emu:
        for key, value in emu.env.items():
            monkeypatch.setenv(key, value)
        emu.drift("ion-api", {STABLE: 50, CANARY: 50})
        emu.behave(CANARY, error_rate=0.5)
        yield emu


def listed(flt: str) -> list[LogEntry]:
    client = clients.logging_client()
    return list(client.list_log_entries(request={"resource_names": [PROJECT], "filter": flt}))


def test_entries_appear_after_the_ingestion_delay_with_cloud_run_fields(emu: Emulator) -> None:
    emu.load("ion-api", 40)
    assert listed("") == []  # not ingested yet: 5 s of emulator time must pass
    emu.advance_clock(5.5)
    entries = listed(f'logName="{LOG}" AND resource.type="cloud_run_revision"')
    assert len(entries) == 40
    e = entries[0]
    labels = dict(e.resource.labels)
    assert labels["service_name"] == "ion-api"
    assert labels["location"] == "us-central1"
    assert labels["project_id"] == "naeda-genesis"
    assert labels["revision_name"] in (STABLE, CANARY)
    assert e.http_request.status in (200, 500)
    assert e.http_request.latency.ToTimedelta().total_seconds() > 0
    assert e.receive_timestamp > e.timestamp
    assert len({x.insert_id for x in entries}) == 40
    canary = listed(f'resource.labels.revision_name="{CANARY}" AND httpRequest.status>=500')
    assert canary and all(x.http_request.status == 500 for x in canary)
    assert all(x.resource.labels["revision_name"] == CANARY for x in canary)
    assert all(x.severity == 500 for x in canary)  # LogSeverity.ERROR


@pytest.mark.parametrize(
    ("request_", "words"),
    [
        ({"resource_names": [PROJECT], "filter": "resource.labels.revision_name"}, "comparison"),
        ({"resource_names": [PROJECT], "filter": "jsonPayload.x=1"}, "not emulated"),
        ({"resource_names": [PROJECT], "filter": "x" * 20_001}, "20000"),
        ({"resource_names": [PROJECT], "page_size": 1001}, "page_size"),
        ({"resource_names": []}, "resource_names"),
        ({"resource_names": ["folders/1"]}, "projects/PROJECT_ID"),
    ],
    ids=["bad-syntax", "unknown-field", "too-long", "page-too-big", "no-parent", "folder"],
)
def test_list_refuses_what_google_refuses(
    emu: Emulator, request_: dict[str, object], words: str
) -> None:
    client = clients.logging_client()
    with pytest.raises(exceptions.InvalidArgument, match=words):
        list(client.list_log_entries(request=request_))


def sessions_open(emu: Emulator, n: int) -> None:
    """Wait (bounded) until the emulator holds `n` open tail sessions: a session opens when
    the server reads its first request, some time after the client's call returns."""
    deadline = time.monotonic() + 30
    while emu.logs.open_sessions != n:
        assert time.monotonic() < deadline, f"{emu.logs.open_sessions} tail sessions open, not {n}"
        time.sleep(0.01)


def _tail(flt: str, buffer_s: int = 0) -> Iterator[TailLogEntriesRequest]:
    yield TailLogEntriesRequest(
        resource_names=[PROJECT], filter=flt, buffer_window={"seconds": buffer_s}
    )
    time.sleep(30)  # keep the request side open, as a long-lived tail does


def test_tail_streams_new_entries_only_once_visible(emu: Emulator) -> None:
    emu.load("ion-api", 10)  # before the session: never streamed
    flt = f'resource.labels.revision_name="{CANARY}"'
    got: list[LogEntry] = []

    def drive() -> None:
        sessions_open(emu, 1)  # what is served from now on is the session's to stream
        emu.load("ion-api", 60)
        time.sleep(0.5)
        assert got == []  # still inside the 5 s ingestion delay
        emu.advance_clock(6)

    threading.Thread(target=drive, daemon=True).start()
    stream = clients.logging_client().tail_log_entries(requests=_tail(flt))
    for resp in stream:
        got.extend(resp.entries)
        # Everything the canary served after the first ten requests, then stop reading.
        if len(got) >= len(listed(flt)) - len(listed(f"{flt} AND timestamp<{_ts(got[0])}")):
            break
    assert {e.resource.labels["revision_name"] for e in got} == {CANARY}
    assert len(got) == len([e for e in listed(flt) if e.timestamp >= got[0].timestamp])


def _ts(e: LogEntry) -> str:
    return '"' + e.timestamp.isoformat().replace("+00:00", "Z") + '"'


def test_tail_sessions_are_capped_per_project(emu: Emulator) -> None:
    client = clients.logging_client()
    opened = []
    for _ in range(10):
        call = client.transport.tail_log_entries(_tail("", 0))
        opened.append(call)
    sessions_open(emu, 10)
    with pytest.raises(exceptions.ResourceExhausted, match="10 open tail sessions"):
        next(iter(client.tail_log_entries(requests=_tail(""))))
    for call in opened:
        call.cancel()


def test_tail_refuses_a_buffer_window_over_a_minute(emu: Emulator) -> None:
    with pytest.raises(exceptions.InvalidArgument, match="buffer_window"):
        next(iter(clients.logging_client().tail_log_entries(requests=_tail("", 61))))
