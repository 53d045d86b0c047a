"""The one error type for failures an operator can fix: printed as one line, exit 1."""

from __future__ import annotations


class ReconcileError(Exception):
    """An expected failure: bad input, unreachable API, blocked plan. One line, exit 1."""

    exit_code = 1
