"""Read rollout files strictly: every error is one line `path:line: message`."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import ValidationError

from reconciler.errors import ReconcileError
from reconciler.spec import RolloutSpec


class SpecError(ReconcileError):
    """A rollout file is invalid; the message is `path:line: message`."""


def load_spec(path: Path) -> RolloutSpec:
    """Load and validate one rollout file."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise SpecError(f"{path}:1: {exc}") from None
    try:
        return RolloutSpec.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        raise SpecError(f"{path}:1: {loc}: {err['msg']}") from None
