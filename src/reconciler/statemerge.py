"""git merge driver for `state/**/status.yaml`: keep the snapshot of the later reconcile.

Two reconcilers that wrote the same service's status (a manual run beside the scheduled one)
meet when the second rebases before pushing. A status file is one snapshot, so merging its
lines makes no sense; the one whose `last_reconcile:` is later describes the service as it
is now (a rollback that finished after a stage advance must not be dropped).

git runs it as `python -m reconciler.statemerge %O %A %B`: %A is the side rebased onto (the
upstream), %B the commit being replayed (this run). The chosen content is left in %A and the
exit status is 0 (resolved). When either side has no readable `last_reconcile:`, or both are
equal, the replayed side wins: it is the run that is pushing now.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["last_reconcile", "main"]

# `last_reconcile: '2026-05-01T12:00:00Z'` as `state.write_status` writes it (quoted or not).
_LINE = re.compile(
    r"""^last_reconcile:[ \t]*(['"]?)"""
    r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,6}))?Z\1[ \t]*$",
    re.MULTILINE,
)


def last_reconcile(text: str) -> tuple[str, str] | None:
    """The top-level `last_reconcile:` of a status file as a sortable key, None if absent.

    The fraction is padded to microseconds: as plain strings `12:00:00.5Z` would sort
    before `12:00:00Z`.
    """
    m = _LINE.search(text)
    if m is None:
        return None
    return m.group(2), (m.group(3) or "").ljust(6, "0")


def main(argv: Sequence[str] | None = None) -> int:
    """Resolve one conflict: `BASE CURRENT OTHER` paths; writes the winner into CURRENT."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 3:
        print("usage: python -m reconciler.statemerge BASE CURRENT OTHER", file=sys.stderr)
        return 2
    current, other = Path(args[1]), Path(args[2])
    other_bytes = other.read_bytes()
    mine = _key(other_bytes)
    theirs = _key(current.read_bytes())
    if mine is None or theirs is None or mine >= theirs:
        current.write_bytes(other_bytes)
    return 0


def _key(data: bytes) -> tuple[str, str] | None:
    try:
        return last_reconcile(data.decode("utf-8"))
    except UnicodeDecodeError:
        return None


if __name__ == "__main__":
    sys.exit(main())
