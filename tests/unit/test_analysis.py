"""The judge (`reconciler.analysis`): per gate and overall, as tables."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.analysis import ProbeRun, gate_windows, judge
from reconciler.model import GateResult, Outcome, Verdict, WindowStats
from reconciler.spec import Gates
from reconciler.stats import wilson_interval, z_score

P, F, I = Outcome.PASS, Outcome.FAIL, Outcome.INCONCLUSIVE  # noqa: E741
T0 = datetime(2026, 3, 1, tzinfo=UTC)
FIVE = timedelta(minutes=5)


def gates(**fields: Any) -> Gates:
    """Gates as a rollout file writes them (`"5%"`, `"20s"`, `"10m"`)."""
    return Gates.model_validate(fields)


def win(
    i: int,
    requests: int,
    errors: int,
    *,
    successes: int | None = None,
    p95: float | None = None,
    length: timedelta = FIVE,
    revision: str = "api-00002-new",
) -> WindowStats:
    """The i-th window of `length` (successes default to every non-error request)."""
    start = T0 + i * length
    return WindowStats(
        service="api",
        revision=revision,
        start=start,
        end=start + length,
        requests=requests,
        errors=errors,
        successes=requests - errors if successes is None else successes,
        p95=p95,
    )


def stable_win(i: int, requests: int, errors: int) -> WindowStats:
    return win(i, requests, errors, revision="api-00001-old")


def gate(verdict: Verdict, name: str) -> GateResult:
    (found,) = [g for g in verdict.gates if g.gate == name]
    return found


ERR = {"error_rate": {"max": "5%"}}


# --- one window of the error-rate gate ----------------------------------------------------
@pytest.mark.parametrize(
    ("requests", "errors", "min_requests", "want"),
    [
        (1000, 0, 100, P),
        (1000, 5, 100, P),
        (1000, 20, 100, P),  # 2%: upper bound 3.1%
        (1000, 40, 100, I),  # 4%: upper bound 5.3% > 5%
        (1000, 50, 100, I),  # exactly at max: the interval straddles it
        (1000, 60, 100, I),  # 6%: lower bound 4.7%, not yet significant
        (1000, 65, 100, F),  # 6.5%: lower bound 5.1%
        (1000, 80, 100, F),  # 8%: lower bound 6.5%
        (100, 0, 100, P),  # upper bound 3.7%
        (100, 1, 100, I),  # upper bound 5.4%
        (100, 11, 100, F),  # lower bound 6.3%
        (100, 100, 100, F),
        (99, 99, 100, I),  # below min_requests: never FAIL
        (99, 0, 100, I),  # below min_requests: never PASS
        (5, 1, 100, I),
        (5, 1, 1, I),  # a handful of requests: the bound alone keeps it open
        (5, 0, 1, I),
        (5, 5, 1, F),  # every one of 5 failing: lower bound 57%
        (0, 0, 100, I),
        (0, 0, 1, I),
    ],
    ids=[
        "none-of-1000", "0.5pct-of-1000", "2pct-of-1000", "4pct-of-1000", "at-max-1000",
        "6pct-of-1000", "6.5pct-of-1000", "8pct-of-1000", "none-of-100", "1-of-100", "11-of-100",
        "all-of-100", "99-of-99-below-min", "0-of-99-below-min", "1-of-5", "1-of-5-min-1",
        "0-of-5-min-1", "5-of-5-min-1", "no-requests", "no-requests-min-1",
    ],
)  # fmt: skip
def test_error_rate_window(requests: int, errors: int, min_requests: int, want: Outcome) -> None:
    g = gates(min_requests=min_requests, consecutive_failures=1, **ERR)
    v = judge([win(0, requests, errors)], g)
    result = gate(v, "error_rate")
    assert result.outcome is want, result.reason
    assert result.threshold == 0.05
    assert result.samples == requests


@pytest.mark.parametrize(
    ("errors", "bound", "want"),
    [(0, "upper", P), (30, "upper", P), (30, "lower", I), (80, "lower", I)],
    ids=["upper-equals-max-0", "upper-equals-max-30", "lower-equals-max-30", "lower-equals-max-80"],
)
def test_error_rate_boundaries_on_the_bound_itself(errors: int, bound: str, want: Outcome) -> None:
    # max set to the exact bound: upper == max PASSes ("at or below"), lower == max does not FAIL.
    lo, hi = wilson_interval(errors, 1000, z_score(0.95))
    limit = hi if bound == "upper" else lo
    g = Gates(error_rate={"max": limit}, consecutive_failures=1)  # type: ignore[arg-type]
    assert gate(judge([win(0, 1000, errors)], g), "error_rate").outcome is want


@pytest.mark.parametrize(
    ("confidence", "want"),
    [(0.80, F), (0.95, I), (0.999, I)],
    ids=["80pct-fails", "95pct-open", "99.9pct-open"],
)
def test_confidence_level_widens_the_bound(confidence: float, want: Outcome) -> None:
    v = judge([win(0, 1000, 60)], gates(consecutive_failures=1, **ERR), confidence=confidence)
    assert gate(v, "error_rate").outcome is want


# --- success rate and latency -------------------------------------------------------------
SUCC = {"success_rate": {"min": "90%"}}


@pytest.mark.parametrize(
    ("requests", "successes", "want"),
    [
        (1000, 990, P),
        (1000, 920, P),  # lower bound 90.2%
        (1000, 900, I),  # exactly at min
        (1000, 850, F),
        (100, 95, I),  # lower bound 88.8%
        (100, 80, F),  # upper bound 86.7%
        (50, 10, I),  # below min_requests
        (0, 0, I),
    ],
    ids=["99pct", "92pct", "at-min", "85pct", "95-of-100", "80-of-100", "below-min", "none"],
)
def test_success_rate_window(requests: int, successes: int, want: Outcome) -> None:
    g = gates(consecutive_failures=1, **SUCC)
    # errors 0: 4xx are neither errors nor successes, the success gate still sees them
    v = judge([win(0, requests, 0, successes=successes)], g)
    result = gate(v, "success_rate")
    assert result.outcome is want, result.reason
    assert result.threshold == 0.9


LAT = {"latency_p95": {"max": "20s"}}


@pytest.mark.parametrize(
    ("requests", "p95", "want"),
    [
        (1000, 0.3, P),
        (1000, 20.0, P),  # exactly at max
        (1000, 20.001, F),
        (1000, 25.0, F),
        (1000, None, I),  # requests but no distribution
        (50, 25.0, I),  # below min_requests
        (0, None, I),
    ],
    ids=["fast", "at-max", "just-over", "slow", "no-p95", "below-min", "none"],
)
def test_latency_window(requests: int, p95: float | None, want: Outcome) -> None:
    v = judge([win(0, requests, 0, p95=p95)], gates(consecutive_failures=1, **LAT))
    result = gate(v, "latency_p95")
    assert result.outcome is want, result.reason
    assert result.value == p95
    assert result.threshold == 20.0


# --- consecutive failures -----------------------------------------------------------------
# One letter per window, oldest first: F fails, P passes, I is inconclusive on its bound,
# L has too few requests.
LETTERS = {
    "F": (1000, 80),
    "P": (1000, 0),
    "I": (1000, 50),
    "L": (5, 5),
}


def windows(pattern: str) -> list[WindowStats]:
    return [win(i, *LETTERS[c]) for i, c in enumerate(pattern)]


@pytest.mark.parametrize(
    ("pattern", "needed", "want"),
    [
        ("", 2, I),
        ("F", 2, I),
        ("FF", 2, F),
        ("PF", 2, I),
        ("FPF", 2, I),  # a passing window in between resets
        ("FFP", 2, P),  # newest passes: the streak is over
        ("FIF", 2, F),  # an inconclusive window neither counts nor resets
        ("FLF", 2, F),  # nor does a low-traffic one
        ("FFI", 2, F),
        ("FFL", 2, F),
        ("PPP", 2, P),
        ("PPI", 2, I),
        ("PPL", 2, I),
        ("F", 1, F),
        ("P", 1, P),
        ("FF", 3, I),
        ("FFF", 3, F),
        ("FFPFF", 3, I),
        ("IIII", 2, I),
        ("LLLL", 2, I),
    ],
    ids=lambda x: x if isinstance(x, str) else None,
)
def test_consecutive_failures(pattern: str, needed: int, want: Outcome) -> None:
    v = judge(windows(pattern), gates(consecutive_failures=needed, **ERR))
    result = gate(v, "error_rate")
    assert result.outcome is want, result.reason
    assert v.outcome is want


def test_windows_are_judged_in_time_order_whatever_the_input_order() -> None:
    g = gates(**ERR)
    assert judge(windows("FPF")[::-1], g).outcome is I
    assert judge(windows("FFP")[::-1], g).outcome is P


def test_each_gate_uses_windows_of_its_own_length() -> None:
    g = gates(
        error_rate={"max": "5%"},
        latency_p95={"max": "20s", "window": "10m"},
        consecutive_failures=1,
    )
    ten = timedelta(minutes=10)
    v = judge([win(0, 1000, 80, p95=1.0), win(0, 2000, 0, p95=30.0, length=ten)], g)
    assert gate(v, "error_rate").outcome is F
    assert gate(v, "error_rate").samples == 1000
    assert gate(v, "latency_p95").outcome is F
    assert gate(v, "latency_p95").samples == 2000
    only_five = judge([win(0, 1000, 0, p95=30.0)], g)
    assert gate(only_five, "latency_p95").outcome is I
    assert gate(only_five, "latency_p95").reason == "latency_p95 no data (no 10m window measured)"


@pytest.mark.parametrize(
    ("g", "want"),
    [
        ({}, ()),
        (ERR, (FIVE,)),
        ({**ERR, **SUCC, "window": "1m"}, (timedelta(minutes=1),)),
        ({**ERR, "latency_p95": {"max": "20s", "window": "10m"}}, (FIVE, timedelta(minutes=10))),
        ({"vs_stable": {"error_rate_delta": "2%"}, "window": "15m"}, (timedelta(minutes=15),)),
        (
            {"error_rate": {"max": "5%", "window": "1h"}, "success_rate": {"min": "90%"}},
            (FIVE, timedelta(hours=1)),
        ),
    ],
    ids=["none", "error-rate", "global-window", "latency-10m", "vs-stable", "error-rate-1h"],
)
def test_gate_windows(g: dict[str, Any], want: tuple[timedelta, ...]) -> None:
    assert gate_windows(gates(**g)) == want


# --- canary vs stable ---------------------------------------------------------------------
VS = {"vs_stable": {"error_rate_delta": "2%"}}


@pytest.mark.parametrize(
    ("canary", "stable", "want"),
    [
        ((1000, 70), (19000, 95), F),  # +6.5 points
        ((1000, 5), (19000, 95), P),
        ((1000, 30), (19000, 95), I),  # +2.5 points, not significant
        ((1000, 250), (1000, 200), I),  # +5 points, but both sides are noisy
        ((1000, 70), None, I),  # no stable stats for the window
        ((1000, 70), (50, 0), I),  # stable below min_requests
        ((50, 50), (19000, 95), I),  # canary below min_requests
        ((200, 30), (19000, 95), F),  # +14.5 points on a small canary
        ((200, 8), (19000, 95), I),  # +3.5 points on a small canary
    ],
    ids=[
        "bad", "good", "slightly-worse", "both-noisy", "no-stable", "stable-low",
        "canary-low", "small-canary-bad", "small-canary-unclear",
    ],
)  # fmt: skip
def test_vs_stable_window(
    canary: tuple[int, int], stable: tuple[int, int] | None, want: Outcome
) -> None:
    g = gates(consecutive_failures=1, **VS)
    stable_stats = [stable_win(0, *stable)] if stable else []
    v = judge([win(0, *canary)], g, stable=stable_stats)
    result = gate(v, "vs_stable")
    assert result.outcome is want, result.reason
    assert result.threshold == 0.02


def test_vs_stable_accounts_for_the_stable_sample_size() -> None:
    # The same rates; a small stable sample leaves the difference open, a large one does not.
    g = gates(consecutive_failures=1, **VS)
    large = judge([win(0, 2000, 120)], g, stable=[stable_win(0, 40000, 400)])
    small = judge([win(0, 2000, 120)], g, stable=[stable_win(0, 100, 1)])
    assert gate(large, "vs_stable").outcome is F
    assert gate(small, "vs_stable").outcome is I


def test_vs_stable_matches_the_same_window_only() -> None:
    g = gates(consecutive_failures=1, **VS)
    v = judge([win(1, 1000, 70)], g, stable=[stable_win(0, 19000, 95)])
    assert gate(v, "vs_stable").outcome is I
    assert "no stable stats for the same window" in gate(v, "vs_stable").reason


def test_vs_stable_needs_consecutive_failures_too() -> None:
    g = gates(consecutive_failures=2, **VS)
    stable = [stable_win(i, 19000, 95) for i in range(2)]
    assert judge([win(0, 1000, 70)], g, stable=stable).outcome is I
    assert judge([win(0, 1000, 70), win(1, 1000, 70)], g, stable=stable).outcome is F


# --- probes -------------------------------------------------------------------------------
def runs(spec: str) -> list[ProbeRun]:
    """`a- b+ a-`: probe a failed, b passed, a failed (oldest first)."""
    return [
        ProbeRun(item[:-1], item[-1] == "+", "" if item[-1] == "+" else "HTTP 500")
        for item in spec.split()
    ]


@pytest.mark.parametrize(
    ("spec", "expected", "needed", "want"),
    [
        ("", ("smoke",), 2, {"smoke": I}),
        ("smoke+", (), 2, {"smoke": P}),
        ("smoke-", (), 2, {"smoke": I}),
        ("smoke- smoke-", (), 2, {"smoke": F}),
        ("smoke- smoke+ smoke-", (), 2, {"smoke": I}),
        ("smoke- smoke- smoke+", (), 2, {"smoke": P}),
        ("smoke-", (), 1, {"smoke": F}),
        ("a- b+ a-", (), 2, {"a": F, "b": P}),
        ("a- b- a+ b-", (), 2, {"a": P, "b": F}),
        ("a+", ("a", "b"), 2, {"a": P, "b": I}),
    ],
    ids=[
        "expected-not-run", "passing", "one-failure", "two-failures", "reset-between",
        "recovered", "one-needed", "interleaved", "interleaved-other", "one-of-two-not-run",
    ],
)  # fmt: skip
def test_probes_count_as_gates(
    spec: str, expected: tuple[str, ...], needed: int, want: dict[str, Outcome]
) -> None:
    v = judge([], gates(consecutive_failures=needed), probes=runs(spec), expected_probes=expected)
    assert {g.gate.removeprefix("probe:"): g.outcome for g in v.gates} == want


def test_probe_reasons() -> None:
    g = gates(consecutive_failures=2)
    two = judge([], g, probes=runs("chat-smoke- chat-smoke-"))
    assert two.summary() == "FAIL: probe chat-smoke failing: HTTP 500 (2 runs in a row)"
    one = judge([], g, probes=runs("chat-smoke-"))
    assert one.reasons == ["probe chat-smoke failing: HTTP 500 (1 of 2 runs needed to fail)"]
    silent = judge([], g, probes=[ProbeRun("health", False), ProbeRun("health", False)])
    assert silent.failures == ["probe health failing (2 runs in a row)"]
    missing = judge([], g, expected_probes=["canary-health"])
    assert missing.reasons == ["probe canary-health not run"]


# --- overall verdict ----------------------------------------------------------------------
ALL = {
    "error_rate": {"max": "5%", "target": "1%"},
    "latency_p95": {"max": "20s", "target": "15s"},
    "success_rate": {"min": "90%", "target": "95%"},
}


@pytest.mark.parametrize(
    ("g", "canary", "probe_spec", "want"),
    [
        ({}, [], "", I),
        ({}, [], "smoke+", P),
        ({}, [], "smoke- smoke-", F),
        (ALL, [], "", I),
        (ALL, [(1000, 2, 3.0)], "", P),
        (ALL, [(1000, 2, 3.0)], "smoke+", P),
        (ALL, [(1000, 2, 3.0)], "smoke-", I),
        (ALL, [(1000, 2, 3.0)], "smoke- smoke-", F),
        (ALL, [(1000, 2, None)], "", I),
        (ALL, [(1000, 2, 25.0), (1000, 2, 25.0)], "", F),
        (ALL, [(1000, 80, 3.0), (1000, 80, 3.0)], "smoke+", F),
        (ALL, [(1000, 80, 3.0), (1000, 80, None)], "", F),
        (ALL, [(20, 2, 3.0)], "smoke+", I),
        (ALL, [(0, 0, None)], "smoke+", I),
    ],
    ids=[
        "nothing-configured", "probe-only-pass", "probe-only-fail", "gates-no-data", "all-pass",
        "all-pass-with-probe", "probe-failing-once", "probe-failing-twice", "latency-unknown",
        "latency-fail", "errors-fail-probe-pass", "fail-beside-inconclusive", "low-traffic",
        "no-traffic",
    ],
)  # fmt: skip
def test_overall_outcome(
    g: dict[str, Any],
    canary: list[tuple[int, int, float | None]],
    probe_spec: str,
    want: Outcome,
) -> None:
    stats = [win(i, n, e, p95=p95) for i, (n, e, p95) in enumerate(canary)]
    v = judge(stats, gates(**g), probes=runs(probe_spec))
    assert v.outcome is want, v.summary()


def test_nothing_to_judge_says_so() -> None:
    v = judge([], Gates())
    assert v.summary() == "INCONCLUSIVE: no gates or probes configured: nothing to judge"


# --- reasons: one line each, with value, threshold and sample size ------------------------
FULL = {
    **ALL,
    "latency_p95": {"max": "20s", "target": "15s", "window": "10m"},
    "vs_stable": {"error_rate_delta": "2%"},
}


@pytest.mark.parametrize(
    ("g", "canary", "stable", "name", "reason"),
    [
        (ERR, [(600, 43), (600, 42)], [], "error_rate",
         "error_rate 7.1% > 5% (2 windows, 1,200 requests)"),
        (ERR, [(600, 43)], [], "error_rate",
         "error_rate 7.2% > 5% in 1 of 2 windows needed to fail (600 requests)"),
        (FULL, [(1000, 4)], [], "error_rate",
         "error_rate 0.4% <= 5% (1,000 requests); target 1% met"),
        (FULL, [(1000, 20)], [], "error_rate",
         "error_rate 2.0% <= 5% (1,000 requests); target 1% missed"),
        (ERR, [(300, 15)], [], "error_rate",
         "error_rate 5.0% inconclusive: 95% interval 3.1%..8.1% straddles 5% (300 requests)"),
        (ERR, [(5, 1)], [], "error_rate",
         "error_rate 20.0% inconclusive: 5 requests < min_requests 100"),
        (ERR, [(0, 0)], [], "error_rate",
         "error_rate no data inconclusive: 0 requests < min_requests 100"),
        (ERR, [], [], "error_rate", "error_rate no data (no 5m window measured)"),
        ({"error_rate": {"max": "0.5%"}}, [(100000, 40)], [], "error_rate",
         "error_rate 0.04% <= 0.5% (100,000 requests)"),
        (SUCC, [(1000, 150), (1000, 150)], [], "success_rate",
         "success_rate 85.0% < 90% (2 windows, 2,000 requests)"),
        (FULL, [(1000, 60)], [], "success_rate",
         "success_rate 94.0% >= 90% (1,000 requests); target 95% missed"),
        (VS, [(600, 43), (600, 42)], [(11400, 57), (11400, 57)], "vs_stable",
         "vs_stable error_rate +6.6% over stable (7.1% vs 0.5%) > 2% "
         "(2 windows, 1,200 requests vs 22,800 stable)"),
        (VS, [(1000, 4)], [(19000, 95)], "vs_stable",
         "vs_stable error_rate -0.1% over stable (0.4% vs 0.5%) <= 2% "
         "(1,000 requests vs 19,000 stable)"),
        (VS, [(1000, 4)], [], "vs_stable",
         "vs_stable canary error_rate 0.4% (stable unknown) inconclusive: "
         "no stable stats for the same window (1,000 requests)"),
    ],
    ids=[
        "error-fail", "error-one-of-two", "error-pass-target-met", "error-pass-target-missed",
        "error-straddles", "error-low-count", "error-zero", "error-no-window", "small-rates",
        "success-fail", "success-target-missed", "vs-stable-fail", "vs-stable-pass",
        "vs-stable-missing",
    ],
)  # fmt: skip
def test_reasons(
    g: dict[str, Any],
    canary: list[tuple[int, int]],
    stable: list[tuple[int, int]],
    name: str,
    reason: str,
) -> None:
    v = judge(
        [win(i, n, e) for i, (n, e) in enumerate(canary)],
        gates(**g),
        stable=[stable_win(i, n, e) for i, (n, e) in enumerate(stable)],
    )
    assert gate(v, name).reason == reason


def test_latency_reasons() -> None:
    g = gates(latency_p95={"max": "20s", "target": "15s"})
    fail = judge([win(0, 700, 0, p95=25.4), win(1, 500, 0, p95=23.0)], g)
    assert fail.failures == ["latency_p95 23.0s > 20s (2 windows, 1,200 requests)"]
    fast = judge([win(0, 700, 0, p95=0.85)], g)
    assert fast.gates[0].reason == "latency_p95 850ms <= 20s (700 requests); target 15s met"
    sub = judge([win(0, 700, 0, p95=0.85)], gates(latency_p95={"max": "500ms"}))
    assert sub.failures == []
    assert sub.reasons == [
        "latency_p95 850ms > 500ms in 1 of 2 windows needed to fail (700 requests)"
    ]


def test_failing_gate_result_carries_value_threshold_samples_and_windows() -> None:
    v = judge([win(0, 600, 43), win(1, 600, 42)], gates(**ERR))
    assert v.outcome is F
    (r,) = v.gates
    assert (r.gate, r.threshold, r.samples, r.windows) == ("error_rate", 0.05, 1200, 2)
    assert r.value == pytest.approx(85 / 1200)
    assert v.failures == [r.reason]


# --- targets ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("canary", "want_outcome", "want_met"),
    [
        ((1000, 5, 3.0), P, {"error_rate": True, "latency_p95": True, "success_rate": True}),
        ((1000, 20, 3.0), P, {"error_rate": False, "latency_p95": True, "success_rate": True}),
        ((1000, 5, 17.0), P, {"error_rate": True, "latency_p95": False, "success_rate": True}),
        ((1000, 45, 3.0), I, {"error_rate": False, "latency_p95": True, "success_rate": True}),
        ((1000, 5, None), I, {"error_rate": True, "latency_p95": None, "success_rate": True}),
        ((20, 0, 3.0), I, {"error_rate": None, "latency_p95": None, "success_rate": None}),
    ],
    ids=["all-met", "error-missed", "latency-missed", "error-inconclusive-missed",
         "no-latency", "low-traffic"],
)  # fmt: skip
def test_targets_are_reported_never_failed_on(
    canary: tuple[int, int, float | None], want_outcome: Outcome, want_met: dict[str, bool | None]
) -> None:
    n, e, p95 = canary
    v = judge([win(0, n, e, p95=p95)], gates(**ALL))
    assert v.outcome is want_outcome, v.summary()
    assert {g.gate: g.target_met for g in v.gates} == want_met
    assert v.targets_met is (None if all(m is None for m in want_met.values()) else
                             all(m is not False for m in want_met.values()))  # fmt: skip


def test_gates_without_targets_report_none() -> None:
    v = judge([win(0, 1000, 5)], gates(**ERR))
    assert v.gates[0].target is None
    assert v.gates[0].target_met is None
    assert v.targets_met is None


# --- properties ---------------------------------------------------------------------------
_gate_configs = st.fixed_dictionaries(
    {},
    optional={
        "error_rate": st.sampled_from([{"max": "5%"}, {"max": "0%"}, {"max": "100%"}]),
        "success_rate": st.sampled_from([{"min": "90%"}, {"min": "0%"}, {"min": "100%"}]),
        "latency_p95": st.sampled_from([{"max": "20s"}, {"max": "1ms"}]),
        "vs_stable": st.just({"error_rate_delta": "2%"}),
    },
).map(lambda d: {**d, "min_requests": 1})


@given(
    _gate_configs,
    st.integers(1, 5),
    st.integers(1, 4),
    st.lists(st.sampled_from(["smoke+", "smoke-"]), max_size=3),
)
def test_zero_requests_are_never_a_pass(
    g: dict[str, Any], n_windows: int, needed: int, probe_runs: list[str]
) -> None:
    cfg = gates(**g, consecutive_failures=needed)
    stats = [win(i, 0, 0) for i in range(n_windows)]
    stable = [stable_win(i, 1000, 5) for i in range(n_windows)]
    v = judge(stats, cfg, stable=stable, probes=runs(" ".join(probe_runs)))
    assert all(r.outcome is not P for r in v.gates if not r.gate.startswith("probe:"))
    if any(k in g for k in ("error_rate", "success_rate", "latency_p95", "vs_stable")):
        assert v.outcome is not P


@given(_gate_configs, st.integers(1, 4))
def test_no_windows_at_all_is_never_a_pass(g: dict[str, Any], needed: int) -> None:
    v = judge([], gates(**g, consecutive_failures=needed))
    assert v.outcome is not P


@given(
    st.integers(1, 500).flatmap(
        lambda m: st.tuples(st.just(m), st.lists(st.integers(0, m - 1), min_size=1, max_size=4))
    ),
    st.data(),
)
def test_below_min_requests_is_neither_pass_nor_fail(
    mn: tuple[int, list[int]], data: st.DataObject
) -> None:
    min_requests, sizes = mn
    stats = [
        win(i, n, data.draw(st.integers(0, n)), p95=data.draw(st.sampled_from([None, 0.1, 99.0])))
        for i, n in enumerate(sizes)
    ]
    g = gates(min_requests=min_requests, consecutive_failures=1, **ALL, **VS)
    stable = [stable_win(i, 100000, 500) for i in range(len(sizes))]
    assert {r.outcome for r in judge(stats, g, stable=stable).gates} == {I}


_RANK = {F: 0, I: 1, P: 2}
_windows = st.lists(
    st.integers(100, 3000).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n))),
    min_size=1,
    max_size=6,
)


@settings(max_examples=300)
@given(_windows, st.integers(1, 3), st.data())
def test_more_errors_never_improve_the_verdict(
    history: list[tuple[int, int]], needed: int, data: st.DataObject
) -> None:
    g = gates(consecutive_failures=needed, **ERR, **SUCC, **VS)
    stable = [stable_win(i, 20000, 100) for i in range(len(history))]
    before = judge([win(i, n, e) for i, (n, e) in enumerate(history)], g, stable=stable)
    k = data.draw(st.integers(0, len(history) - 1))
    n, e = history[k]
    worse = list(history)
    worse[k] = (n, data.draw(st.integers(e, n)))
    after = judge([win(i, n, e) for i, (n, e) in enumerate(worse)], g, stable=stable)
    assert _RANK[after.outcome] <= _RANK[before.outcome]
    for b, a in zip(before.gates, after.gates, strict=True):
        assert _RANK[a.outcome] <= _RANK[b.outcome], (b.reason, a.reason)


@given(st.lists(st.booleans(), max_size=8), st.integers(1, 4))
def test_probe_fails_exactly_after_needed_failures_in_a_row(oks: list[bool], needed: int) -> None:
    probe_runs = [ProbeRun("p", ok, "" if ok else "down") for ok in oks]
    v = judge([], gates(consecutive_failures=needed), probes=probe_runs, expected_probes=["p"])
    tail = 0
    for ok in reversed(oks):
        if ok:
            break
        tail += 1
    want = F if tail >= needed else (P if oks and oks[-1] else I)
    assert v.outcome is want


def _outcomes(v: Verdict) -> Sequence[Outcome]:
    return [g.outcome for g in v.gates]


@given(_windows, st.integers(1, 3))
def test_verdict_is_fail_iff_a_gate_fails_and_pass_iff_all_pass(
    history: list[tuple[int, int]], needed: int
) -> None:
    v = judge([win(i, n, e) for i, (n, e) in enumerate(history)], gates(**ERR, **SUCC))
    outcomes = _outcomes(v)
    assert (v.outcome is F) == (F in outcomes)
    assert (v.outcome is P) == all(o is P for o in outcomes)
