"""`--shard K/N`: parsing, stability and a partition of the fleet."""

from __future__ import annotations

import pytest

from reconciler.shard import Shard, parse_shard


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1/1", Shard(1, 1)), ("2/4", Shard(2, 4)), ("4/4", Shard(4, 4))],
    ids=["one", "middle", "last"],
)
def test_parse_valid(text: str, expected: Shard) -> None:
    assert parse_shard(text) == expected


@pytest.mark.parametrize(
    "text",
    ["0/4", "5/4", "1/0", "2", "a/b", "-1/4", "1/4/2", ""],
    ids=["zero", "past-n", "n-zero", "no-slash", "letters", "negative", "three", "empty"],
)
def test_parse_invalid(text: str) -> None:
    with pytest.raises(ValueError, match="K"):
        parse_shard(text)


def test_every_identity_has_exactly_one_shard_and_shards_are_balanced() -> None:
    shards = [Shard(k, 4) for k in range(1, 5)]
    counts = [0] * 4
    for i in range(1000):
        owners = [s.index for s in shards if s.owns("p", "us-central1", f"svc-{i}")]
        assert len(owners) == 1
        counts[owners[0] - 1] += 1
    assert all(200 <= c <= 300 for c in counts), counts


def test_the_hash_is_pinned_and_the_region_is_part_of_the_identity() -> None:
    # Pinned values: a change of hash would move services between runners (and their
    # concurrency groups) on upgrade. The same service in three regions: three shards.
    owners = [
        next(k for k in range(1, 9) if Shard(k, 8).owns("naeda-genesis", region, "ion-api"))
        for region in ("us-central1", "europe-west1", "asia-northeast1")
    ]
    assert owners == [2, 4, 5]
    assert str(parse_shard("3/8")) == "3/8"
