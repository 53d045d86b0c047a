"""Measured values as a reader expects them: rates in percent, latencies in s or ms."""

from __future__ import annotations

from reconciler.spec import format_latency, format_percent

# Gates whose values are shares (0.05 means 5%) and those measured in seconds; anything
# else is shown as a plain number.
_RATE_GATES = ("error_rate", "success_rate", "vs_stable")
_SECONDS_GATES = ("latency",)


def seconds(value: float | None) -> str:
    """A measured duration: `0.1234` -> `123ms`, `16.24` -> `16.2s`, `15.0` -> `15s`."""
    if value is None:
        return "-"
    if value < 1:
        return f"{value * 1000:.0f}ms"
    return f"{value:.1f}".removesuffix(".0") + "s"


def percent(value: float | None) -> str:
    """A measured share with three significant digits: `0.07123` -> `7.12%`."""
    if value is None:
        return "-"
    return f"{value * 100:.3g}%"


def gate_value(gate: str, value: float | None) -> str:
    """A gate's measured value in the gate's unit."""
    if value is None:
        return "–"
    if gate.startswith(_RATE_GATES):
        return percent(value)
    if gate.startswith(_SECONDS_GATES):
        return seconds(value)
    return f"{value:.4g}"


def gate_limit(gate: str, threshold: float | None) -> str:
    """A gate's configured threshold as the rollout file writes it, with its direction."""
    if threshold is None:
        return "–"
    if gate.startswith("success_rate"):
        return f"≥ {format_percent(threshold)}"
    if gate.startswith(_RATE_GATES):
        return f"≤ {format_percent(threshold)}"
    if gate.startswith(_SECONDS_GATES):
        return f"≤ {format_latency(threshold)}"
    return f"{threshold:.4g}"
