"""The text of one run's commit: a subject summing the run, a line per service that did
something, and that service's trailers, repeated per service (pure).

A service id the run holds in more than one region or project is named as `model.labels`
names it (`ion-api (europe-west1)`), in its line and with a `Reconcile-Rollout` trailer.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from reconciler.decide import Commit
from reconciler.model import ServiceRef, labels

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
    ref: ServiceRef | None = None
    """The rollout it records (None: named by its service id alone)."""

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


def named(commit: Commit, ref: ServiceRef, name: str) -> Commit:
    """`commit` naming its rollout `name` instead of its service id: `reconcile(<name>): ...`
    and a `Reconcile-Rollout: project/region/service` trailer after `Reconcile-Service`
    (unchanged when `name` is the service id)."""
    if name == ref.service:
        return commit
    scope = f"reconcile({ref.service}):"
    subject = " ".join(commit.subject.split())
    if subject.startswith(scope):
        subject = f"reconcile({name}):" + subject.removeprefix(scope)
    trailers: dict[str, str] = {}
    for key, value in commit.trailers.items():
        trailers[key] = value
        if key == "Reconcile-Service":
            trailers["Reconcile-Rollout"] = ref.key
    return Commit(subject, commit.body, trailers)


def run_commit(
    entries: Sequence[Entry], names: Mapping[ServiceRef, str] | None = None
) -> RunCommit:
    """The commit recording `entries` (at least one): `reconcile: <summary>`, then for each
    service that did something or is `listed` (sorted by name) its own subject and body
    lines, and its trailers in the same order.

    `names` (`model.labels` of every rollout of the run; default: of the entries) names each
    rollout; one named other than by its service id is written as `named` writes it.
    """
    if not entries:
        raise ValueError("a run's commit records at least one service")
    if names is None:
        names = labels(e.ref for e in entries if e.ref is not None)
    commits = [
        named(e.commit, e.ref, names.get(e.ref, e.service)) if e.ref is not None else e.commit
        for e in entries
        if e.action != _QUIET or e.listed
    ]
    lines: list[str] = []
    trailers: list[tuple[str, str]] = []
    # By service id, then the subject (which leads with the name): a name's regions together.
    for commit in sorted(
        commits, key=lambda c: (c.trailers.get("Reconcile-Service", ""), c.subject)
    ):
        lines.append(" ".join(commit.subject.split()))
        lines += [f"  {line}" for line in commit.body.splitlines() if line.strip()]
        trailers += list(commit.trailers.items())
    return RunCommit(f"reconcile: {summary(entries)}", "\n".join(lines), tuple(trailers))


__all__ = ["Entry", "RunCommit", "named", "run_commit", "summary"]
