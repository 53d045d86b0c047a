"""The pure judging of probes: expectations, percentiles, compare verdicts, baselines."""

from __future__ import annotations

import io
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from reconciler.analysis import ProbeRun
from reconciler.model import Outcome
from reconciler.probes import (
    MISSING,
    Baseline,
    BenchResult,
    BenchSample,
    Exchange,
    ProbeConfigError,
    ProbeResult,
    Urls,
    compare_to_baseline,
    evaluate,
    format_seconds,
    load_baseline,
    lookup,
    percentile,
    redact_url,
    resolve_headers,
    resolve_url,
    result_of,
    save_baseline,
    side_stats,
)
from reconciler.progress import Progress
from reconciler.spec import Check


def check(**fields: Any) -> Check:
    return Check.model_validate({"name": "chat-smoke", "url": "{canary_url}/chat", **fields})


def answer(body: Any = None, status: int = 200, latency: float = 0.1, raw: bytes | None = None):
    data = raw if raw is not None else json.dumps(body).encode()
    ctype = "text/html" if raw is not None else "application/json"
    return Exchange(status=status, latency=latency, body=data, content_type=ctype)


DOC = {"status": "healthy", "data": {"model": {"name": "gemini"}, "items": [{"id": 7}]}}


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("status", "healthy"),
        ("data.model.name", "gemini"),
        ("data.items.0.id", 7),
        ("data.items.1.id", MISSING),
        ("data.model.version", MISSING),
        ("status.deeper", MISSING),
        ("nothing", MISSING),
    ],
    ids=[
        "top",
        "nested",
        "list-index",
        "index-out-of-range",
        "missing-leaf",
        "through-str",
        "missing-top",
    ],
)
def test_lookup(path: str, expected: Any) -> None:
    assert lookup(DOC, path) == expected or lookup(DOC, path) is expected


def test_lookup_key_with_dots() -> None:
    assert lookup({"a.b": 1, "a": {"b": 2}}, "a.b") == 1


CASES: list[tuple[str, dict[str, Any], Exchange, tuple[str, ...]]] = [
    ("healthy", {"expect": {"success": True}}, answer({"success": True}), ()),
    (
        "wrong-field",
        {"expect": {"success": True}},
        answer({"success": False}),
        ("success is false, expected true",),
    ),
    (
        "wrong-string",
        {"expect": {"status": "healthy"}},
        answer({"status": "degraded"}),
        ('status is "degraded", expected "healthy"',),
    ),
    (
        "missing-field",
        {"expect": {"status": "healthy"}},
        answer({}),
        ('status is missing, expected "healthy"',),
    ),
    (
        "bool-is-not-int",
        {"expect": {"success": True}},
        answer({"success": 1}),
        ("success is 1, expected true",),
    ),
    ("int-equals-float", {"expect": {"count": 1}}, answer({"count": 1.0}), ()),
    ("nested-path", {"expect": {"data.model.name": "gemini"}}, answer(DOC), ()),
    (
        "below-min",
        {"expect_min": {"confidence": 0.8}},
        answer({"confidence": 0.72}),
        ("confidence 0.72 < min 0.8",),
    ),
    ("at-min", {"expect_min": {"confidence": 0.8}}, answer({"confidence": 0.8}), ()),
    (
        "above-max",
        {"expect_max": {"tokens": 100}},
        answer({"tokens": 150}),
        ("tokens 150 > max 100",),
    ),
    (
        "min-not-a-number",
        {"expect_min": {"confidence": 0.8}},
        answer({"confidence": "high"}),
        ('confidence is "high", expected a number (min 0.8)',),
    ),
    (
        "min-missing",
        {"expect_min": {"confidence": 0.8}},
        answer({}),
        ("confidence is missing, expected a number (min 0.8)",),
    ),
    (
        "slow",
        {"max_latency": "15s"},
        answer({}, latency=16.2),
        ("latency 16.2s > 15s",),
    ),
    (
        "slow-rounds-to-limit",
        {"max_latency": "15s"},
        answer({}, latency=15.04),
        ("latency 15.040s > 15s",),
    ),
    (
        "slow-and-wrong",
        {"max_latency": "15s", "expect": {"success": True}},
        answer({"success": False}, latency=16.2),
        ("latency 16.2s > 15s", "success is false, expected true"),
    ),
    (
        "http-500",
        {"expect": {"success": True}},
        answer({}, status=500),
        ("HTTP 500, expected 2xx",),
    ),
    ("http-404-expected", {"expect_status": 404}, answer({}, status=404), ()),
    (
        "wrong-expected-status",
        {"expect_status": 201},
        answer({}, status=200),
        ("HTTP 200, expected 201",),
    ),
    (
        "not-json",
        {"expect": {"success": True}},
        answer(raw=b"<html>oops</html>"),
        ("response is not JSON (text/html) but expectations need JSON",),
    ),
    ("not-json-no-expectations", {}, answer(raw=b"<html>fine</html>"), ()),
    (
        "refused",
        {},
        Exchange(status=None, latency=0.01, error="connection refused"),
        ("connection refused",),
    ),
    (
        "timeout",
        {},
        Exchange(status=None, latency=15.0, error="timeout after 15s"),
        ("timeout after 15s",),
    ),
]


@pytest.mark.parametrize(
    ("fields", "exchange", "reasons"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_evaluate(fields: dict[str, Any], exchange: Exchange, reasons: tuple[str, ...]) -> None:
    assert evaluate(check(**fields), exchange) == reasons


def test_result_of_reason_names_the_check() -> None:
    bad = result_of(check(expect={"success": True}), "http://h/chat", answer({"success": False}))
    assert not bad.ok
    assert bad.reason == "chat-smoke: success is false, expected true"
    good = result_of(check(), "http://h/chat", answer({}, latency=0.25))
    assert good.ok and good.reason == "chat-smoke: ok (HTTP 200 in 250ms)"
    gate = bad.as_gate()
    assert gate.outcome is Outcome.FAIL and gate.gate == "probe:chat-smoke"
    assert bad.as_run() == ProbeRun("chat-smoke", False, "success is false, expected true")
    assert good.as_run() == ProbeRun("chat-smoke", True, "")


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.1234, "123ms"), (16.24, "16.2s"), (15.0, "15s"), (1.0, "1s")],
    ids=["ms", "tenths", "whole", "one"],
)
def test_format_seconds(seconds: float, text: str) -> None:
    assert format_seconds(seconds) == text


@pytest.mark.parametrize(
    ("template", "urls", "url"),
    [
        ("{canary_url}/chat", Urls(canary="https://c.example/"), "https://c.example/chat"),
        ("{stable_url}", Urls(stable="https://s.example"), "https://s.example"),
        ("{service_url}/x", Urls(service="https://svc.example"), "https://svc.example/x"),
        ("http://localhost:5000/api/health", Urls(), "http://localhost:5000/api/health"),
    ],
    ids=["canary", "stable-bare", "service", "absolute"],
)
def test_resolve_url(template: str, urls: Urls, url: str) -> None:
    assert resolve_url(check(url=template), urls) == url


def test_resolve_url_unknown_base_is_clear() -> None:
    with pytest.raises(ProbeConfigError, match=r"chat-smoke: .*\{canary_url\}.*tagged 'canary'"):
        resolve_url(check(), Urls(stable="https://s.example"))
    # A tag can vanish by itself (Cloud Run's 2,000-tag cleanup): the error says so.
    with pytest.raises(ProbeConfigError, match="2,000 tags; the next apply tags it again"):
        resolve_url(check(), Urls(stable="https://s.example"))


def test_headers_from_env_and_missing_variable_named_not_valued() -> None:
    c = check(headers={"Authorization": {"env": "API_TOKEN"}, "X-Plain": "v"})
    assert resolve_headers(c, {"API_TOKEN": "s3cr3t"}) == {
        "Authorization": "s3cr3t",
        "X-Plain": "v",
    }
    with pytest.raises(ProbeConfigError) as err:
        resolve_headers(c, {"OTHER": "s3cr3t"})
    assert "API_TOKEN" in str(err.value) and "Authorization" in str(err.value)
    assert "s3cr3t" not in str(err.value)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://user:pw@host.example/a?b=1", "https://host.example/a?b=1"),
        ("https://host.example/a", "https://host.example/a"),
    ],
    ids=["userinfo", "plain"],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        ([], 50, None),
        ([3.0], 95, 3.0),
        ([1.0, 2.0, 3.0, 4.0], 50, 2.5),
        ([1.0, 2.0, 3.0, 4.0, 5.0], 95, 4.8),
        ([5.0, 1.0, 3.0], 0, 1.0),
        ([5.0, 1.0, 3.0], 100, 5.0),
    ],
    ids=["empty", "one", "median-even", "p95", "min", "max"],
)
def test_percentile(values: list[float], q: float, expected: float | None) -> None:
    got = percentile(values, q)
    assert got == pytest.approx(expected) if expected is not None else got is None


def probe(ok: bool, status: int | None, latency: float, why: str = "") -> ProbeResult:
    reason = f"compare: {why}" if why else "compare: ok"
    return ProbeResult("compare", ok, status, latency, reason, "http://h", status is not None)


def test_side_stats() -> None:
    results = [
        probe(True, 200, 0.1),
        probe(True, 200, 0.3),
        probe(False, 500, 0.2, "HTTP 500, expected 2xx"),
        probe(False, None, 5.0, "timeout after 5s"),
    ]
    s = side_stats("canary", "https://u:p@c.example", results)
    assert s.url == "https://c.example"
    assert (s.requests, s.successes, s.success_rate) == (4, 2, 0.5)
    assert s.status_counts == {"200": 2, "500": 1, "no response": 1}
    assert s.p50 == pytest.approx(0.2)  # the 5 s timeout is not a latency sample
    assert set(s.failures) == {"HTTP 500, expected 2xx", "timeout after 5s"}
    assert s.latencies == (0.1, 0.3, 0.2)  # what the verdict's rank test reads


def bench_result(latencies: list[float], ok: int, confidence: float | None, name: str = "chat"):
    samples = tuple(
        BenchSample(ok=i < ok, status=200, latency=lat, confidence=confidence)
        for i, lat in enumerate(latencies)
    )
    return BenchResult(name=name, url="http://h/chat", samples=samples)


BASE = bench_result([10.0, 10.5, 11.0, 10.2, 10.8], ok=5, confidence=0.85)

# Five iterations against five: only a clear regression is one (a test, not point estimates).
REGRESSIONS = [
    ("same", bench_result([10.0, 10.5, 11.0, 10.2, 10.8], 5, 0.85), []),
    ("one-failure-is-noise", bench_result([10.0, 10.5, 11.0, 10.2, 10.8], 4, 0.85), []),
    ("all-failing", bench_result([10.0, 10.5, 11.0, 10.2, 10.8], 0, 0.85), ["success 0%"]),
    ("slower", bench_result([14.0, 14.5, 15.0, 14.2, 14.8], 5, 0.85), ["bench slower than 1.2x"]),
    ("a-bit-slower", bench_result([10.5, 11.0, 11.5, 10.7, 11.3], 5, 0.85), []),
    ("less-confident", bench_result([10.0, 10.5, 11.0, 10.2, 10.8], 5, 0.7), ["confidence 0.70"]),
    ("other-check", bench_result([99.0], 0, None, name="other"), []),
]


@pytest.mark.parametrize(
    ("current", "expect"), [r[1:] for r in REGRESSIONS], ids=[r[0] for r in REGRESSIONS]
)
def test_compare_to_baseline(current: BenchResult, expect: list[str]) -> None:
    baseline = Baseline("ion-api", datetime(2026, 1, 1, tzinfo=UTC), "stable", "r1", (BASE,))
    got = compare_to_baseline(current, baseline)
    assert len(got) == len(expect)
    for line, fragment in zip(got, expect, strict=True):
        assert line.startswith(f"{current.name}: ") and fragment in line


def test_bench_result_figures() -> None:
    assert BASE.p50 == pytest.approx(10.5)
    assert BASE.mean == pytest.approx(10.5)
    assert BASE.success_rate == 1.0 and BASE.confidence_mean == pytest.approx(0.85)
    assert "success 5/5 (100%)" in BASE.summary()


def test_baseline_round_trip(tmp_path: Path) -> None:
    taken = datetime(2026, 3, 1, 12, 30, 5, tzinfo=UTC)
    baseline = Baseline("ion-api", taken, "stable", "ion-api-00041-abc", (BASE,))
    path = save_baseline(tmp_path, baseline)
    assert path == tmp_path / "ion-api" / "baselines" / "20260301T123005Z.json"
    assert (path.parent / "latest.json").read_text() == path.read_text()
    assert load_baseline(tmp_path, "ion-api") == baseline
    assert load_baseline(tmp_path, "other") is None
    assert json.loads(path.read_text())["taken_at"] == "2026-03-01T12:30:05Z"


def test_baseline_replaces_latest_atomically(tmp_path: Path) -> None:
    first = Baseline("ion-api", datetime(2026, 3, 1, tzinfo=UTC), "stable", "r1", (BASE,))
    second = Baseline("ion-api", datetime(2026, 3, 2, tzinfo=UTC), "stable", "r2", (BASE,))
    folder = save_baseline(tmp_path, first).parent
    before = (folder / "latest.json").read_text()
    # A reader that opened the old latest.json (same inode) must never see a half-written
    # file: the new one is written beside it and renamed over it.
    os.link(folder / "latest.json", tmp_path / "reader.json")

    save_baseline(tmp_path, second)

    assert (tmp_path / "reader.json").read_text() == before
    assert load_baseline(tmp_path, "ion-api") == second
    assert sorted(p.name for p in folder.iterdir()) == [
        "20260301T000000Z.json",
        "20260302T000000Z.json",
        "latest.json",
    ]


@pytest.mark.parametrize(
    ("live", "expected"),
    [
        (True, "\r\x1b[Kbench 1/2 a\r\x1b[Kbench 2/2 b\n"),
        (False, "bench 1/2 a\nbench 2/2 b\n"),
    ],
    ids=["terminal", "ci-log"],
)
def test_progress(live: bool, expected: str) -> None:
    out = io.StringIO()
    with Progress("bench", 2, stream=out, live=live) as p:
        p.update("a")
        p.update("b")
    assert out.getvalue() == expected


def test_progress_is_plain_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setenv("CI", "true")
    out = Tty()
    Progress("x", stream=out).update("y")
    assert out.getvalue() == "x 1 y\n"
