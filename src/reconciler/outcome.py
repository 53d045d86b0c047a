"""What a run did: each service's outcome, the run's result and the exit code it makes."""

from __future__ import annotations

from dataclasses import dataclass

from reconciler import state as st
from reconciler.model import Verdict
from reconciler.plan import ServicePlan
from reconciler.spec import NoticeEvent

ROLLED_BACK_EXIT = 4
"""A canary was rolled back: the rollback serves AND its record is on the remote."""
ROLLED_BACK_LOCAL_EXIT = 5
"""A canary was rolled back and serves, but its record did not reach the remote (the push
failed, the clone is degraded, or --no-push/--no-commit): the next run pushes it."""
DEGRADED_EXIT = 3
"""The clone could not reach the remote's tip: only rollbacks were applied, nothing else."""


@dataclass(frozen=True)
class ServiceOutcome:
    """What happened to one service in one run."""

    service: str
    plan: ServicePlan | None = None
    applied: bool = False
    rolled_back: bool = False
    error: str | None = None
    commit: str | None = None
    events: tuple[st.Event, ...] = ()
    verdict: Verdict | None = None
    rollback_failed: bool = False
    """A rollback was decided but its write did not come to serve (the next run retries)."""
    held: str | None = None
    """Why a change this run decided was not carried out (degraded mode); None otherwise."""
    left_alone: str | None = None
    """Why nothing was written or recorded for this service: a write of another run (or of
    a killed one) serves and is not recorded yet (`execute.left_alone`). No error: that run
    records it, or a run after `recover_after` does."""
    label: str = ""
    """How output names it when not by `service` alone: the run holds the service id in
    more than one region or project (`model.labels`)."""
    notices: tuple[NoticeEvent, ...] = ()
    """Notice events its decision raised beyond what the outcome itself tells (`wave_hold`,
    see `decide.Decision.notices`)."""

    @property
    def name(self) -> str:
        """The service as output names it (`label`, else the service id)."""
        return self.label or self.service


@dataclass(frozen=True)
class RunResult:
    """The outcome of one `apply` run over many services."""

    outcomes: tuple[ServiceOutcome, ...]
    pushed: bool | None = None
    git_error: str | None = None
    degraded: str | None = None
    """Why the clone is not at the remote's tip (rollbacks only this run); None when it is."""
    rollbacks_pushed: bool | None = None
    """Whether the run's rollback commit reached the remote (None: there was none, or no push)."""
    commits: tuple[str, ...] = ()
    """The run's commits, in order: at most a rollback commit and a record commit."""

    @property
    def recorded(self) -> bool:
        """Whether every rollback of the run is committed and on the remote."""
        landed = self.pushed is True or self.rollbacks_pushed is True
        return landed and all(o.commit for o in self.outcomes if o.rolled_back)

    @property
    def exit_code(self) -> int:
        """The worst of the run (README, "Exit codes"): 1 when a rollback failed; 4 when a
        canary was rolled back and that is recorded on the remote, 5 when it is not (yet);
        1 on any other error or blocked change; 3 when degraded; else 0 (a service left
        alone for a write not yet recorded included: no one has anything to do)."""
        if any(o.rollback_failed for o in self.outcomes):
            return 1
        if any(o.rolled_back for o in self.outcomes):
            return ROLLED_BACK_EXIT if self.recorded else ROLLED_BACK_LOCAL_EXIT
        if self.git_error or any(o.error for o in self.outcomes):
            return 1
        if any(o.plan is not None and o.plan.blocked for o in self.outcomes):
            return 1
        return DEGRADED_EXIT if self.degraded else 0
