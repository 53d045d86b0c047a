"""Metrics providers: measured traffic per revision and window.

`MetricsProvider` is the narrow interface the judge's caller needs; one file per provider.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from reconciler.model import ServiceRef, WindowStats


class MetricsError(Exception):
    """The provider failed (unreachable, bad query): not the same as 'no data'."""


@dataclass(frozen=True)
class StatsQuery:
    """The revisions of one service whose stats are wanted."""

    ref: ServiceRef
    revisions: tuple[str, ...]


class MetricsProvider(Protocol):
    """Window statistics for many services at once (batched per project and metric)."""

    def window_stats(
        self, queries: Sequence[StatsQuery], window: timedelta, end: datetime
    ) -> Mapping[tuple[str, str], WindowStats]:
        """Stats keyed by (service, revision) for the window ending at `end`.

        A revision with no traffic in the window is absent or has `requests == 0`; that is
        'no data', never a pass.
        """
        ...
