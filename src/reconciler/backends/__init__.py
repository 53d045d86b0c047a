"""Traffic backends: where live traffic is read and written.

`TrafficBackend` is the narrow interface the reconciler needs; `cloudrun.py` implements it on
the official `google-cloud-run` client.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from reconciler.errors import ReconcileError
from reconciler.model import LiveService, ServiceRef, TrafficSplit


class BackendError(ReconcileError):
    """A backend failure an operator can act on (names the resource): one line, exit 1."""


class NotFound(BackendError):
    """The service (or a revision) does not exist."""


class Conflict(BackendError):
    """The service changed since it was read (stale etag): re-read and re-plan.

    Only an etag mismatch is a conflict; a failed operation never is (`OperationFailed`)."""


class OperationFailed(BackendError):
    """Cloud Run accepted the write but its operation failed: the old split keeps serving,
    and the message carries the reason from `terminal_condition`."""


class TrafficBackend(Protocol):
    """Read and write the traffic of Cloud Run services."""

    def get_service(self, ref: ServiceRef) -> LiveService:
        """A fresh read of the service, its traffic, etag and revisions."""
        ...

    def set_traffic(
        self,
        ref: ServiceRef,
        split: TrafficSplit,
        etag: str,
        annotations: Mapping[str, str] | None = None,
    ) -> LiveService:
        """Write `split` (and `annotations`) if the service still has `etag`; wait; verify."""
        ...
