"""What the run views read from the loop's results: structural types, not the loop's classes.

The views may not import the loop (the import contract keeps the core pure), and the loop's
result classes change with it; any object with these attributes renders.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from reconciler.model import Verdict
from reconciler.plan import ServicePlan


class ServiceOutcome(Protocol):
    """What happened to one service in one run."""

    @property
    def service(self) -> str: ...
    @property
    def plan(self) -> ServicePlan | None: ...
    @property
    def applied(self) -> bool: ...
    @property
    def rolled_back(self) -> bool: ...
    @property
    def error(self) -> str | None: ...
    @property
    def commit(self) -> str | None: ...
    @property
    def verdict(self) -> Verdict | None: ...
    @property
    def held(self) -> str | None: ...
    @property
    def left_alone(self) -> str | None: ...
    @property
    def name(self) -> str:
        """The service as output names it: its id, or with its region or project when the run
        holds the id more than once (`model.labels`)."""
        ...


class RunResult(Protocol):
    """One run over many services."""

    @property
    def outcomes(self) -> Sequence[ServiceOutcome]: ...
    @property
    def git_error(self) -> str | None: ...
    @property
    def degraded(self) -> str | None: ...
    @property
    def recorded(self) -> bool: ...
    @property
    def commits(self) -> Sequence[str]: ...
