"""The stream controller's pure helpers: the tail filter and per-canary tallies."""

from __future__ import annotations

import pytest

from reconciler.emulator.logs import log_name, parse_filter
from reconciler.sequential import Tally
from reconciler.spec import Gates, LatencyGate
from reconciler.stream import Canary, Outcome, request_filter, tally

A = Canary("api", "p1", "us-central1", "api-00001-old", "api-00002-new", Gates())
B = Canary("web", "p2", "europe-west1", "web-00007-old", "web-00008-new", Gates())


def fields(project: str, revision: str) -> dict[str, object]:
    return {
        "logName": log_name(project),
        "resource.type": "cloud_run_revision",
        "resource.labels.revision_name": revision,
    }


@pytest.mark.parametrize(
    ("project", "revision", "match"),
    [
        ("p1", "api-00002-new", True),
        ("p1", "api-00001-old", True),
        ("p2", "web-00008-new", True),
        ("p1", "api-00003-other", False),
        ("p3", "api-00002-new", False),
    ],
    ids=["canary", "stable", "other-project", "other-revision", "unwatched-project"],
)
def test_request_filter_selects_the_live_canaries_revisions(
    project: str, revision: str, match: bool
) -> None:
    names, flt = request_filter([A, B])
    assert names == ["projects/p1", "projects/p2"]
    assert parse_filter(flt)(fields(project, revision)) is match


def test_tally_counts_5xx_per_canary_and_its_stable() -> None:
    batch = [
        Outcome("p1", "us-central1", "api", "api-00002-new", 500),
        Outcome("p1", "us-central1", "api", "api-00002-new", 200),
        Outcome("p1", "us-central1", "api", "api-00002-new", 429),  # a 4xx is not an error
        Outcome("p1", "us-central1", "api", "api-00001-old", 503),
        Outcome("p1", "us-east1", "api", "api-00002-new", 500),  # another region's service
        Outcome("p2", "europe-west1", "web", "web-00008-new", 200),
    ]
    got = tally(batch, [A, B])
    assert got[A] == (Tally(3, 1), Tally(1, 1))
    assert got[B] == (Tally(1, 0), Tally(0, 0))


def test_tally_counts_requests_slower_than_the_latency_gate() -> None:
    gated = Canary(
        "api",
        "p1",
        "us-central1",
        "api-00001-old",
        "api-00002-new",
        Gates(latency_p95=LatencyGate(max=20.0)),
    )
    batch = [
        Outcome("p1", "us-central1", "api", "api-00002-new", 200, 25.0),
        Outcome("p1", "us-central1", "api", "api-00002-new", 200, 20.0),  # at max: not above
        Outcome("p1", "us-central1", "api", "api-00002-new", 504, 60.0),  # slow and an error
        Outcome("p1", "us-central1", "api", "api-00002-new", 200),  # no latency: never slow
        Outcome("p1", "us-central1", "api", "api-00001-old", 200, 30.0),
    ]
    assert tally(batch, [gated])[gated] == (Tally(4, 1, 2), Tally(1, 0, 1))
    # Without a latency gate nothing is slow.
    assert tally(batch[:1], [A])[A] == (Tally(1, 0, 0), Tally())
