"""The text of one run's commit: a subject summing the run, a line per service that did
something, and that service's trailers, repeated per service (pure)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from reconciler.decide import Commit

# What each `Reconcile-Action` counts as in the subject, in the subject's order. A late
# record of an earlier write counts apart from the action it records.
_COUNTED = (
    ("advance", "advanced"),
    ("apply", "applied"),
    ("finalize", "finalized"),
    ("drift", "drift corrected"),
    ("rollback", "rolled back"),
    ("late", "recorded late"),
    ("record", "observed"),
)
_QUIET = "record"
"""The action of a service that only observed: counted, but given no body line or trailers
(a steady fleet's commit stays a few lines; `git log -- state/<service>` finds it)."""


@dataclass(frozen=True)
class Entry:
    """One service's part of a run's commit: the commit it would have had on its own."""

    commit: Commit
    late: bool = False
    """A late record of a write an earlier (crashed) run made."""
    listed: bool = False
    """Given its line and trailers even when it only observed (it wrote a report)."""

    @property
    def action(self) -> str:
        return "late" if self.late else self.commit.trailers.get("Reconcile-Action", _QUIET)

    @property
    def service(self) -> str:
        return self.commit.trailers.get("Reconcile-Service", "")


@dataclass(frozen=True)
class RunCommit:
    """Subject, body and trailers of a run's commit; a trailer key repeats per service."""

    subject: str
    body: str
    trailers: tuple[tuple[str, str], ...]


def summary(entries: Sequence[Entry]) -> str:
    """`3 advanced, 1 rolled back, 996 observed`: the non-zero counts, in a fixed order."""
    counts = Counter(e.action for e in entries)
    return ", ".join(f"{counts[key]} {word}" for key, word in _COUNTED if counts[key])


def run_commit(entries: Sequence[Entry]) -> RunCommit:
    """The commit recording `entries` (at least one): `reconcile: <summary>`, then for each
    service that did something or is `listed` (sorted by name) its own subject and body
    lines, and its trailers in the same order."""
    if not entries:
        raise ValueError("a run's commit records at least one service")
    acted = sorted((e for e in entries if e.action != _QUIET or e.listed), key=lambda e: e.service)
    lines: list[str] = []
    trailers: list[tuple[str, str]] = []
    for e in acted:
        lines.append(" ".join(e.commit.subject.split()))
        lines += [f"  {line}" for line in e.commit.body.splitlines() if line.strip()]
        trailers += list(e.commit.trailers.items())
    return RunCommit(f"reconcile: {summary(entries)}", "\n".join(lines), tuple(trailers))


__all__ = ["Entry", "RunCommit", "run_commit", "summary"]
