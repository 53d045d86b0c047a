"""Synthetic load: a canary probe sent again at a bounded rate (`repeat:` of a probe).

A low-traffic canary never reaches `gates.min_requests`, so every window is INCONCLUSIVE.
`repeat: {rate: 2/s, max: 200, budget: 60s}` sends the probe's request again, one at a time,
paced at `rate`, at most `max` times and for at most `budget` of wall-clock time per run (a
request is started only while the budget lasts; one started may still take its `timeout`).
The requests are served by the canary, so its metrics count them like any other: the gates
judge them with the real traffic. They are not judged one by one (the probe's own run is).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from reconciler.spec import Repeat

__all__ = ["Burst", "planned", "repeat_load"]


@dataclass(frozen=True)
class Burst:
    """What one repeat sent: requests, how many got no 2xx answer, seconds taken."""

    sent: int
    failed: int
    seconds: float


def planned(repeat: Repeat) -> int:
    """The most requests one run sends: `max`, or fewer when the budget at `rate` allows
    fewer (the first request goes at once, the next every 1/rate seconds)."""
    by_budget = math.floor(repeat.budget.total_seconds() * repeat.rate + 1e-9)
    return max(1, min(repeat.max, by_budget))


def repeat_load(
    send: Callable[[], int | None],
    repeat: Repeat,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Burst:
    """Call `send` (one request; its status, None without an answer) paced at `repeat.rate`,
    at most `planned(repeat)` times, starting none after the budget is spent."""
    start = clock()
    deadline = start + repeat.budget.total_seconds()
    sent = failed = 0
    for i in range(planned(repeat)):
        due = start + i / repeat.rate
        now = clock()
        if due > now:
            sleep(due - now)
        if clock() >= deadline:
            break
        status = send()
        sent += 1
        failed += status is None or not 200 <= status < 300
    return Burst(sent, failed, clock() - start)
