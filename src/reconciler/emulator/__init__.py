"""Local Cloud Run Admin API v2 + Cloud Monitoring v3 emulator (gRPC) with an HTTP data plane.

Cloud Run has no official emulator; every test and the demo run the official clients against
this one. `Emulator.start(...)` runs it in-process; `reconcile emulator serve` runs it as a
process. Importing this package is cheap: the servers load on first use of `Emulator`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from reconciler.emulator.server import Emulator

__all__ = ["Emulator"]


def __getattr__(name: str) -> Any:
    # Lazy, so `reconcile --help` does not import grpc and the Google packages.
    if name == "Emulator":
        from reconciler.emulator.server import Emulator

        return Emulator
    raise AttributeError(name)
