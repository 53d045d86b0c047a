"""The stream lease on a real bare remote: one holder at a time, expiry, release, and a
second controller that stands by until the first one lets go."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from reconciler.lease import LEASE_BRANCH, Lease
from reconciler.sandbox import Sandbox, sandbox

T0 = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)


@pytest.fixture
def sb(tmp_path: Path) -> Iterator[Sandbox]:
    with sandbox(tmp_path) as s:
        yield s


def test_one_holder_at_a_time_until_expiry_or_release(sb: Sandbox) -> None:
    other = sb.clone("other")
    a = Lease(sb.repo, "a", timedelta(minutes=2))
    b = Lease(other, "b", timedelta(minutes=2))
    assert a.acquire(T0) is None
    assert b.acquire(T0 + timedelta(seconds=30)) == "held by a until 2026-12-07T10:02:00Z"
    assert a.acquire(T0 + timedelta(minutes=1)) is None  # renewed to 10:03
    assert b.acquire(T0 + timedelta(minutes=2, seconds=30)) is not None
    assert b.acquire(T0 + timedelta(minutes=3, seconds=1)) is None  # a's lease expired
    assert a.acquire(T0 + timedelta(minutes=3, seconds=2)) == "held by b until 2026-12-07T10:05:01Z"
    b.release()
    assert a.acquire(T0 + timedelta(minutes=3, seconds=3)) is None
    # Nothing reached the main branch: the lease lives on its own branch only.
    assert "lease" not in sb.remote_log("--format=%s")
    assert sb.git("ls-remote", "origin", LEASE_BRANCH)


def test_a_stale_view_loses_the_race(sb: Sandbox) -> None:
    other = sb.clone("other")
    a = Lease(sb.repo, "a", timedelta(minutes=2))
    b = Lease(other, "b", timedelta(minutes=2))
    assert a.acquire(T0) is None
    late = T0 + timedelta(minutes=5)
    # b read the expired lease, then a renewed it before b's push: the compare-and-swap fails.
    seen = b.read()
    assert seen is not None and seen.holder == "a"
    assert a.acquire(late) is None
    b.read = lambda: seen  # type: ignore[method-assign]
    assert b.acquire(late) == "taken by another controller just now"
