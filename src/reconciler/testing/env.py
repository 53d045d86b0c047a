"""Changes to this process's environment: for the rest of the process, or for one block."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

__all__ = ["isolated_env", "set_env"]


def set_env(changes: Mapping[str, str | None]) -> None:
    """Apply environment changes to this process: a value sets its variable, None unsets it."""
    for key, value in changes.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@contextmanager
def isolated_env(changes: Mapping[str, str | None]) -> Iterator[None]:
    """Apply environment changes (None unsets) for the duration of the block."""
    saved = {key: os.environ.get(key) for key in changes}
    try:
        set_env(changes)
        yield
    finally:
        set_env(saved)
