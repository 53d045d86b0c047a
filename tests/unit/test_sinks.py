"""Every sink defends itself: line separators escaped, secrets scrubbed in every encoding
before any truncation, and corrupt state salvaged instead of failing its service."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest
import yaml

from reconciler import redact, yamledit
from reconciler.gitops import format_message
from reconciler.probes.checks import _show
from reconciler.state import (
    Event,
    EventKind,
    ServiceStatus,
    append_events,
    events_path,
    load_status,
    read_events,
    read_events_salvaged,
    read_status,
    status_path,
    write_status,
)
from tests.builders import status_at
from tests.refs import ION, ref

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
TOKEN = 'Bearer tk_live"51/chars+long?&value=9f3Kx2Qw1zSECRETnever-print-it'
BARE = TOKEN.partition(" ")[2]
# Every character Python's str.splitlines splits on.
SEPARATORS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"


@pytest.fixture(autouse=True)
def registry() -> Iterator[None]:
    redact.clear()
    redact.register(TOKEN)
    yield
    redact.clear()


def _echoes() -> list[tuple[str, str]]:
    raw = BARE.encode()
    return [
        ("raw", f"revoked: {TOKEN}"),
        ("json-escaped", json.dumps({"echo": TOKEN})),
        ("json-ascii", json.dumps({"echo": TOKEN + "\u00e9"}, ensure_ascii=True)),
        ("url-encoded", f"https://x/?t={quote(BARE, safe='')}"),
        ("url-plus", f"q={quote_plus(TOKEN)}"),
        ("base64", base64.b64encode(raw).decode()),
        ("base64-shifted", base64.b64encode(b"user:" + raw).decode()),
        ("base64-urlsafe", base64.urlsafe_b64encode(b"ab" + raw + b"cd").decode()),
    ]


def _leaks(text: str) -> list[str]:
    """Any 12-character piece of the secret, in any form, left in `text`."""
    found = []
    for form in redact.forms(BARE):
        for i in range(0, max(1, len(form) - 11)):
            if form[i : i + 12] in text:
                found.append(form[i : i + 12])
    return found


@pytest.mark.parametrize(("how", "echo"), _echoes(), ids=[e[0] for e in _echoes()])
def test_scrub_removes_every_encoding(how: str, echo: str) -> None:
    assert _leaks(echo), "the echo must carry the secret, else the test proves nothing"
    assert _leaks(redact.scrub(echo)) == []


@pytest.mark.parametrize(("how", "echo"), _echoes(), ids=[e[0] for e in _echoes()])
def test_every_sink_scrubs(how: str, echo: str, tmp_path: Path) -> None:
    reason = f"upstream-echo: status is {_show('x' * 20 + echo)}, expected 'healthy'"
    append_events(tmp_path, ION, [Event(T0, EventKind.PROBE_FAILED, "bot", reason=reason)])
    write_status(tmp_path, ION, _status(etag=echo))
    rollout = yamledit.record_rollback(
        "service: ion-api\ncanary_percent: 5\n", revision="r", at=T0, reason=reason
    )
    message = format_message(f"reconcile(ion-api): {echo}", reason, {"Why": echo})
    for sink in (
        events_path(tmp_path, ION).read_text(encoding="utf-8"),
        status_path(tmp_path, ION).read_text(encoding="utf-8"),
        rollout,
        message,
    ):
        assert _leaks(sink) == [], sink
    assert read_status(tmp_path, ION) is not None


def test_truncation_comes_after_the_scrub() -> None:
    # A long value with the JSON-escaped token past its middle: cut first, scrub second
    # would keep most of the token.
    shown = _show("x" * 30 + json.dumps(TOKEN) + "y" * 40)
    assert shown.endswith("...") and _leaks(shown) == []


def _status(**over: object) -> ServiceStatus:
    return status_at(5, T0, **{"etag": "e1", "generation": 3, "observed_generation": 3, **over})


# --- line separators ------------------------------------------------------------------------
@pytest.mark.parametrize("sep", list(SEPARATORS), ids=[f"U+{ord(c):04X}" for c in SEPARATORS])
def test_json_lines_escape_every_line_separator(sep: str, tmp_path: Path) -> None:
    answer = f"canary said: a{sep}b"
    path = append_events(tmp_path, ION, [Event(T0, EventKind.PROBE_FAILED, "bot", reason=answer)])
    text = path.read_text(encoding="utf-8")
    assert len(text.splitlines()) == 1  # no reader splits the record
    assert read_events(tmp_path, ION)[0].reason == answer


@pytest.mark.parametrize("sep", list(SEPARATORS), ids=[f"U+{ord(c):04X}" for c in SEPARATORS])
def test_yaml_scalars_escape_every_line_separator(sep: str, tmp_path: Path) -> None:
    reason = f"error_rate 7%{sep}injected: true"
    text = yamledit.record_rollback(
        "service: ion-api\ncanary_percent: 5\n", revision="r", at=T0, reason=reason
    )
    assert len(text.splitlines()) == 6, text  # service, percent, rolled_back + 3 keys
    assert yaml.safe_load(text)["rolled_back"]["reason"] == reason
    write_status(tmp_path, ION, _status(etag=reason))
    status_text = status_path(tmp_path, ION).read_text(encoding="utf-8")
    assert all("etag" not in line or line.startswith("etag: ") for line in status_text.splitlines())
    status = read_status(tmp_path, ION)
    assert status is not None and status.etag == reason


def test_a_line_written_raw_by_an_older_version_still_reads(tmp_path: Path) -> None:
    path = append_events(tmp_path, ION, [Event(T0, EventKind.APPLIED, "bot")])
    old = json.dumps(
        {
            "time": "2026-05-01T12:05:00Z",
            "kind": "probe_failed",
            "actor": "bot",
            "before": "",
            "after": "",
            "reason": "a\u2028b",
            "spec_id": None,
            "details": {},
        },
        ensure_ascii=False,
    )
    path.write_text(path.read_text(encoding="utf-8") + old + "\n", encoding="utf-8")
    events, dropped = read_events_salvaged(tmp_path, ION)
    assert dropped == [] and events[-1].reason == "a\u2028b"


# --- corrupt state --------------------------------------------------------------------------
def test_a_truncated_events_file_keeps_what_parses(tmp_path: Path) -> None:
    events = [Event(T0.replace(minute=n), EventKind.APPLIED, "bot") for n in range(3)]
    path = append_events(tmp_path, ION, events)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 20])  # killed mid-write by something else
    got, dropped = read_events_salvaged(tmp_path, ION)
    assert got == events[:2] and len(dropped) == 1 and ":3: " in dropped[0]
    # The next append heals the file.
    append_events(tmp_path, ION, [events[2]])
    assert read_events_salvaged(tmp_path, ION) == (events, [])


CORRUPT = [
    ("windows-wrong-type", {"windows": "lots"}, ["windows"], False),
    ("one-bad-probe", {"probes": [{"name": "p", "ok": "yes", "at": "x", "reason": ""}]}, [], False),
    ("verdict-garbage", {"verdict": {"outcome": 7}}, ["verdict"], False),
    ("stage-a-string", {"stage": "five"}, None, True),
    ("traffic-garbage", {"traffic": 12}, None, True),
]


@pytest.mark.parametrize(
    ("change", "kept", "rebuilt"),
    [c[1:] for c in CORRUPT],
    ids=[c[0] for c in CORRUPT],
)
def test_corrupt_status_is_salvaged_or_rebuilt(
    change: dict[str, object], kept: list[str] | None, rebuilt: bool, tmp_path: Path
) -> None:
    write_status(tmp_path, ION, _status())
    path = status_path(tmp_path, ION)
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    data.update(change)
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    with pytest.raises(Exception, match=str(path)):
        read_status(tmp_path, ION)  # the strict reader still says what is wrong
    got = load_status(tmp_path, ION)
    assert got.rebuilt is rebuilt and got.problem is not None
    event = got.event(T0, "bot")
    assert event is not None and event.kind is EventKind.STATE_REBUILT
    assert str(path) in event.reason
    if rebuilt:
        assert got.status is None and "rebuilt from live traffic and git" in got.problem
    else:
        assert got.status is not None and got.status.traffic == _status().traffic
        assert got.status.stage == 5


def test_a_whole_status_needs_no_event(tmp_path: Path) -> None:
    write_status(tmp_path, ION, _status())
    got = load_status(tmp_path, ION)
    assert got.status == _status() and got.problem is None and got.event(T0, "bot") is None
    assert load_status(tmp_path, ref("other-svc")).status is None
