"""The rollout identities the tests use (the sandbox's project and region)."""

from __future__ import annotations

from reconciler.model import ServiceRef

PROJECT = "naeda-genesis"
REGION = "us-central1"


def ref(service: str = "ion-api", region: str = REGION, project: str = PROJECT) -> ServiceRef:
    """The identity of `service` in the sandbox's project and region (or those given)."""
    return ServiceRef(project, region, service)


ION = ref()
ION_DIR = f"state/{PROJECT}/{REGION}/ion-api"
"""The state folder of `ION`, relative to the repository."""
STATE = f"state/{PROJECT}/{REGION}"
"""The state folder of the sandbox's project and region, relative to the repository."""
