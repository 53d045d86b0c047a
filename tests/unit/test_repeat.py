"""`repeat:` of a probe: its spelling in the rollout file, and the pacing of the burst."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from reconciler.model import Coverage
from reconciler.probes.repeat import planned, repeat_load
from reconciler.spec import Repeat, RolloutSpec, format_rate, parse_rate


@pytest.mark.parametrize(
    ("text", "per_second"),
    [("2/s", 2.0), ("30/m", 0.5), ("0.5/s", 0.5), ("50/s", 50.0), ("1/m", 1 / 60)],
    ids=["per-second", "per-minute", "fraction", "the-most", "slowest-common"],
)
def test_rates_parse_and_round_trip(text: str, per_second: float) -> None:
    assert parse_rate(text) == pytest.approx(per_second)
    assert parse_rate(format_rate(parse_rate(text))) == pytest.approx(per_second)


@pytest.mark.parametrize(
    "text", ["2", "2/h", "0/s", "51/s", "2 /s", 2], ids=["no-unit", "hours", "zero", "too-fast",
                                                         "space", "number"]
)  # fmt: skip
def test_bad_rates_are_refused(text: Any) -> None:
    with pytest.raises(ValueError, match="rate"):
        parse_rate(text)


def _spec(**over: Any) -> RolloutSpec:
    data: dict[str, Any] = {
        "service": "ion-api",
        "project": "naeda-genesis",
        "region": "us-central1",
        "revisions": {"stable": "ion-api-00041-abc", "canary": "ion-api-00042-xyz"},
        "canary_percent": 5,
        "stages": [5, 100],
        "probes": [{"name": "p", "url": "{canary_url}/", "repeat": {"rate": "2/s", "max": 200}}],
    }
    data.update(over)
    return RolloutSpec.model_validate(data)


def test_repeat_on_a_probe_with_its_default_budget() -> None:
    repeat = _spec().probes[0].repeat
    assert repeat is not None
    assert (repeat.rate, repeat.max, repeat.budget) == (2.0, 200, timedelta(seconds=60))


@pytest.mark.parametrize(
    ("over", "message"),
    [
        ({"dependencies": [{"name": "d", "url": "http://x.example/", "repeat": {
            "rate": "1/s", "max": 5}}]}, "repeat is for canary probes"),
        ({"probes": [{"name": "p", "url": "{canary_url}/", "repeat": {
            "rate": "1/s", "max": 5, "budget": "10m"}}]}, "budget 10m is over 5m"),
        ({"probes": [{"name": "p", "url": "{canary_url}/", "repeat": {
            "rate": "1/s", "max": 0}}]}, "greater than or equal to 1"),
        ({"probes": [{"name": "p", "url": "{canary_url}/", "repeat": {"rate": "1/s"}}]},
         "max"),
    ],
    ids=["not-on-dependencies", "budget-capped", "max-positive", "max-required"],
)  # fmt: skip
def test_repeat_rules(over: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        _spec(**over)


@pytest.mark.parametrize(
    ("rate", "max_", "budget", "expected"),
    [("2/s", 200, "60s", 120), ("2/s", 50, "60s", 50), ("50/s", 150, "10s", 150),
     ("2/s", 200, "1s", 2), ("1/m", 10, "60s", 1)],
    ids=["budget-bounds", "max-bounds", "fast", "one-second", "slow-rate-sends-one"],
)  # fmt: skip
def test_planned(rate: str, max_: int, budget: str, expected: int) -> None:
    repeat = Repeat.model_validate({"rate": rate, "max": max_, "budget": budget})
    assert planned(repeat) == expected


class FakeClock:
    """Time that moves only when slept on, or by `cost` per request sent."""

    def __init__(self, cost: float = 0.0) -> None:
        self.now = 100.0
        self.cost = cost
        self.sent_at: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds

    def send(self) -> int | None:
        self.sent_at.append(self.now)
        self.now += self.cost
        return 500 if len(self.sent_at) % 4 == 0 else 200


def test_requests_are_paced_at_the_rate() -> None:
    t = FakeClock()
    repeat = Repeat.model_validate({"rate": "2/s", "max": 5})
    burst = repeat_load(t.send, repeat, clock=t.clock, sleep=t.sleep)
    assert burst.sent == 5 and burst.failed == 1
    assert [round(x - 100, 3) for x in t.sent_at] == [0, 0.5, 1.0, 1.5, 2.0]


def test_slow_answers_stop_at_the_budget() -> None:
    # Each answer takes 3 s: at 2/s the budget of 10 s is spent after 4 requests.
    t = FakeClock(cost=3.0)
    repeat = Repeat.model_validate({"rate": "2/s", "max": 200, "budget": "10s"})
    burst = repeat_load(t.send, repeat, clock=t.clock, sleep=t.sleep)
    assert burst.sent == 4 and burst.seconds == pytest.approx(12.0)


def test_coverage_says_synthetic_requests_apart() -> None:
    assert Coverage(300, 300, 150).describe() == (
        "100% (300 of 300 requests judged; 150 synthetic, sent by probes)"
    )
    assert Coverage(0, 0, 150).describe() == "no traffic yet; 150 synthetic, sent by probes"
    assert Coverage(300, 300).describe() == "100% (300 of 300 requests judged)"
