"""`--shard K/N`: which rollouts one runner of N reconciles, by a stable hash of the identity.

The shard of a rollout is SHA-256 of `project/region/service`, read as an integer, modulo N,
plus one: stable across runs, machines and Python versions (unlike `hash()`), and independent
of file names, so moving a rollout file between sub-folders never moves it between shards.
A file that cannot be loaded has no identity; it falls to the shard of its path, so its error
is reported by exactly one shard.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

__all__ = ["Shard", "parse_shard"]


@dataclass(frozen=True)
class Shard:
    """Shard `index` (1-based) of `count`."""

    index: int
    count: int

    def owns(self, project: str, region: str, service: str) -> bool:
        """Whether this shard reconciles the rollout (project, region, service)."""
        return self._bucket(f"{project}/{region}/{service}") == self.index

    def owns_unloadable(self, path: str) -> bool:
        """Whether this shard reports the error of a rollout file that cannot be loaded."""
        return self._bucket(f"file:{path}") == self.index

    def _bucket(self, key: str) -> int:
        digest = hashlib.sha256(key.encode("utf-8")).digest()
        return int.from_bytes(digest[:8], "big") % self.count + 1

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(text: str) -> Shard:
    """`"2/4"` -> Shard(2, 4); ValueError (with the reason) for anything else."""
    head, sep, tail = text.partition("/")
    if not sep or not head.strip().isdigit() or not tail.strip().isdigit():
        raise ValueError(f"{text!r} is not K/N (for example 2/4)")
    index, count = int(head), int(tail)
    if count < 1 or not 1 <= index <= count:
        raise ValueError(f"{text!r}: K must be between 1 and N, and N at least 1")
    return Shard(index, count)
