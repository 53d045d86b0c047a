"""Units, rules and helpers of the rollout-file models (pure, no files)."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from reconciler.loader import load_spec, parse_spec
from reconciler.spec import (
    STRICT_UNITS,
    Check,
    ErrorRateGate,
    Gates,
    RolloutSpec,
    RuleError,
    describe_value,
    format_duration,
    format_latency,
    format_percent,
    parse_duration,
    parse_latency,
    parse_percent,
)

ROOT = Path(__file__).resolve().parents[2]

PERCENTS = [
    ("five", "5%", 0.05),
    ("fraction", "0.5%", 0.005),
    ("zero", "0%", 0.0),
    ("all", "100%", 1.0),
    ("decimal", "97.5%", 0.975),
]


@pytest.mark.parametrize(
    ("text", "value"), [(t, v) for _, t, v in PERCENTS], ids=[i for i, _, _ in PERCENTS]
)
def test_parse_percent(text: str, value: float) -> None:
    assert parse_percent(text) == pytest.approx(value)


BAD_PERCENTS = [
    ("bare-int", 5, "got 5"),
    ("bare-float", 0.05, "got 0.05"),
    ("bool", True, "got true"),
    ("no-unit", "5", "got '5'"),
    ("space", "5 %", "got '5 %'"),
    ("negative", "-5%", "got '-5%'"),
    ("over-100", "101%", "over 100%"),
    ("trailing-newline", "5%\n", "like '5%'"),
]


@pytest.mark.parametrize(
    ("value", "fragment"), [(v, f) for _, v, f in BAD_PERCENTS], ids=[i for i, _, _ in BAD_PERCENTS]
)
def test_parse_percent_refuses(value: object, fragment: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_percent(value)
    assert fragment in str(caught.value)


LATENCIES = [
    ("ms", "500ms", 0.5),
    ("s", "20s", 20.0),
    ("m", "2m", 120.0),
    ("decimal", "1.5s", 1.5),
]


@pytest.mark.parametrize(
    ("text", "value"), [(t, v) for _, t, v in LATENCIES], ids=[i for i, _, _ in LATENCIES]
)
def test_parse_latency(text: str, value: float) -> None:
    assert parse_latency(text) == pytest.approx(value)


@pytest.mark.parametrize(
    ("value", "fragment"),
    [(20, "got 20"), ("20", "got '20'"), ("1h", "like '20s'"), ("0s", "must be above 0")],
    ids=["bare-int", "no-unit", "hours", "zero"],
)
def test_parse_latency_refuses(value: object, fragment: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_latency(value)
    assert fragment in str(caught.value)


DURATIONS = [
    ("ms", "250ms", timedelta(milliseconds=250)),
    ("s", "30s", timedelta(seconds=30)),
    ("m", "5m", timedelta(minutes=5)),
    ("h", "24h", timedelta(hours=24)),
    ("d", "7d", timedelta(days=7)),
    ("decimal", "1.5h", timedelta(minutes=90)),
    ("timedelta", timedelta(minutes=3), timedelta(minutes=3)),
]


@pytest.mark.parametrize(
    ("text", "value"), [(t, v) for _, t, v in DURATIONS], ids=[i for i, _, _ in DURATIONS]
)
def test_parse_duration(text: object, value: timedelta) -> None:
    assert parse_duration(text) == value


@pytest.mark.parametrize(
    "value",
    [24, "24", "1w", "5 m", "PT5M", None],
    ids=["int", "no-unit", "weeks", "space", "iso", "null"],
)
def test_parse_duration_refuses(value: object) -> None:
    with pytest.raises(ValueError, match="expected a duration like '5m'"):
        parse_duration(value)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (timedelta(minutes=5), "5m"),
        (timedelta(hours=24), "24h"),
        (timedelta(seconds=90), "90s"),
        (timedelta(milliseconds=250), "250ms"),
    ],
    ids=["m", "h", "s", "ms"],
)
def test_format_duration(value: timedelta, text: str) -> None:
    assert format_duration(value) == text


@given(st.integers(min_value=1, max_value=10**7))
def test_duration_round_trip(ms: int) -> None:
    value = timedelta(milliseconds=ms)
    assert parse_duration(format_duration(value)) == value


@given(st.integers(min_value=0, max_value=10_000))
def test_percent_round_trip(hundredths: int) -> None:
    value = hundredths / 10_000
    assert parse_percent(format_percent(value)) == pytest.approx(value)


@given(st.integers(min_value=1, max_value=600_000))
def test_latency_round_trip(ms: int) -> None:
    assert parse_latency(format_latency(ms / 1000)) == pytest.approx(ms / 1000)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, "null"),
        (True, "true"),
        (5, "5"),
        (0.5, "0.5"),
        ("5", "'5'"),
        ([1], "a list"),
        ({}, "a mapping"),
    ],
    ids=["null", "bool", "int", "float", "str", "list", "dict"],
)
def test_describe_value(value: object, text: str) -> None:
    assert describe_value(value) == text


# --- python callers may pass parsed values; files may not ------------------------------------
def test_python_callers_may_pass_parsed_floats() -> None:
    assert ErrorRateGate(max=0.05).max == 0.05
    assert Check(name="x", url="http://127.0.0.1/", timeout=2.0).timeout == 2.0


def test_files_may_not_pass_bare_floats() -> None:
    with pytest.raises(ValidationError, match=r"expected a percentage like '5%', got 0\.05"):
        Gates.model_validate({"error_rate": {"max": 0.05}}, context=STRICT_UNITS)


def test_check_takes_json_body_by_name_in_python() -> None:
    check = Check(name="x", url="http://127.0.0.1/", json_body={"a": 1})
    assert check.json_body == {"a": 1}


# --- rules -----------------------------------------------------------------------------------
BASE: dict[str, Any] = {
    "service": "ion-api",
    "project": "naeda-genesis",
    "region": "us-central1",
    "revisions": {"stable": "ion-api-00041-abc", "canary": "ion-api-00042-xyz"},
    "canary_percent": 5,
    "stages": [5, 10, 25, 50, 100],
}

RULES = [
    ("not-increasing", {"stages": [5, 50, 50, 100]}, ("stages", 2)),
    ("not-ending-at-100", {"stages": [5, 10]}, ("stages", 1)),
    ("percent-not-a-stage", {"canary_percent": 7}, ("canary_percent",)),
    (
        "canary-is-stable",
        {"revisions": {"stable": "ion-api-1", "canary": "ion-api-1"}},
        ("revisions", "canary"),
    ),
    ("no-canary", {"revisions": {"stable": "ion-api-1"}}, ("canary_percent",)),
    (
        "foreign-stable",
        {"revisions": {"stable": "web-1", "canary": "ion-api-2"}},
        ("revisions", "stable"),
    ),
    (
        "rolled-back",
        {
            "rolled_back": {
                "revision": "ion-api-00042-xyz",
                "at": "2026-11-20T10:00:00Z",
                "reason": "x",
            }
        },
        ("canary_percent",),
    ),
    (
        "duplicate-names",
        {
            "probes": [{"name": "a", "url": "{canary_url}/"}],
            "dependencies": [{"name": "a", "url": "http://127.0.0.1/"}],
        },
        ("dependencies", 0, "name"),
    ),
]


@pytest.mark.parametrize(
    ("over", "loc"), [(o, loc) for _, o, loc in RULES], ids=[i for i, _, _ in RULES]
)
def test_rules_name_the_key_to_blame(over: dict[str, Any], loc: tuple[Any, ...]) -> None:
    with pytest.raises(ValidationError) as caught:
        RolloutSpec.model_validate({**BASE, **over})
    (err,) = caught.value.errors()
    error = err.get("ctx", {}).get("error")
    assert isinstance(error, RuleError)
    assert (*err["loc"], *error.loc) == loc


@pytest.mark.parametrize(
    ("gate", "value", "loc"),
    [
        ("error_rate", {"max": "5%", "target": "6%"}, ("gates", "error_rate", "target")),
        ("latency_p95", {"max": "1s", "target": "2s"}, ("gates", "latency_p95", "target")),
        ("success_rate", {"min": "90%", "target": "80%"}, ("gates", "success_rate", "target")),
    ],
    ids=["error-rate", "latency", "success-rate"],
)
def test_gate_targets_must_be_stricter_than_limits(
    gate: str, value: dict[str, str], loc: tuple[str, ...]
) -> None:
    with pytest.raises(ValidationError) as caught:
        RolloutSpec.model_validate({**BASE, "gates": {gate: value}})
    (err,) = caught.value.errors()
    assert (*err["loc"], *err["ctx"]["error"].loc) == loc


@pytest.mark.parametrize(
    ("percent", "following"),
    [(0, 5), (5, 10), (50, 100), (100, None)],
    ids=["zero", "first", "middle", "last"],
)
def test_next_stage(percent: int, following: int | None) -> None:
    spec = RolloutSpec.model_validate({**BASE, "canary_percent": percent})
    assert spec.next_stage() == following


@pytest.mark.parametrize(
    "path",
    [ROOT / "rollout" / "ion-api.yaml", *sorted((ROOT / "tests" / "data" / "good").glob("*.yaml"))],
    ids=lambda p: p.name,
)
def test_json_dump_reads_back_as_the_same_spec(path: Path) -> None:
    # JSON is YAML: what the models serialize (units included) is a valid rollout file.
    spec = load_spec(path)
    data = spec.model_dump(mode="json", by_alias=True)
    # A file names either region or waves; the model of one with waves holds its lead region.
    data.pop("region" if data["waves"] is not None else "waves")
    text = json.dumps(data, ensure_ascii=False)
    assert parse_spec(text.encode(), path) == spec
