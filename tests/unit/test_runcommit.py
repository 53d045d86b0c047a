"""The text of a run's commit: subject counts, a line per service that acted, trailers per
service, and a message git and `gitops` read back."""

from __future__ import annotations

import pytest

from reconciler.decide import Commit
from reconciler.gitops import format_message, is_reconciler_commit, parse_trailers, trailer_pairs
from reconciler.runcommit import Entry, run_commit, summary


def entry(service: str, action: str, subject: str = "", body: str = "", **kw: bool) -> Entry:
    trailers = {"Reconcile-Service": service, "Reconcile-Action": action}
    if action != "record":
        trailers["Reconcile-Spec-Commit"] = f"{service}-sha"
    return Entry(Commit(subject or f"reconcile({service}): {action}", body, trailers), **kw)


@pytest.mark.parametrize(
    ("actions", "expected"),
    [
        (
            ["advance"] * 3 + ["rollback"] + ["record"] * 996,
            "3 advanced, 1 rolled back, 996 observed",
        ),
        (["record"], "1 observed"),
        (["apply", "finalize", "drift"], "1 applied, 1 finalized, 1 drift corrected"),
        (["rollback", "rollback"], "2 rolled back"),
    ],
)
def test_the_subject_sums_the_run(actions: list[str], expected: str) -> None:
    entries = [entry(f"s{i:04d}", a) for i, a in enumerate(actions)]
    assert summary(entries) == expected
    assert run_commit(entries).subject == f"reconcile: {expected}"


def test_a_late_record_counts_apart_and_keeps_its_line() -> None:
    late = entry("ion-api", "record", "reconcile(ion-api): record missed write: x", late=True)
    text = run_commit([late, entry("b", "record")])
    assert text.subject == "reconcile: 1 recorded late, 1 observed"
    assert text.body == "reconcile(ion-api): record missed write: x"


def test_lines_and_trailers_per_acting_service_in_name_order() -> None:
    body = "canary 5% -> 10%\n\nVerdict: PASS\n- error_rate: PASS - 0.1% <= 5%"
    text = run_commit(
        [
            entry("zeta", "advance", "reconcile(zeta): advance canary 5% -> 10%", body),
            entry("quiet", "record"),
            entry("alpha", "rollback", "reconcile(alpha): rollback canary 5% -> 0%"),
        ]
    )
    assert text.body.splitlines() == [
        "reconcile(alpha): rollback canary 5% -> 0%",
        "reconcile(zeta): advance canary 5% -> 10%",
        "  canary 5% -> 10%",
        "  Verdict: PASS",
        "  - error_rate: PASS - 0.1% <= 5%",
    ]
    message = format_message(text.subject, text.body, text.trailers)
    assert is_reconciler_commit(message)
    assert trailer_pairs(message) == [
        ("Reconcile-Service", "alpha"),
        ("Reconcile-Action", "rollback"),
        ("Reconcile-Spec-Commit", "alpha-sha"),
        ("Reconcile-Service", "zeta"),
        ("Reconcile-Action", "advance"),
        ("Reconcile-Spec-Commit", "zeta-sha"),
        ("Reconcile-Skip", "true"),
    ]
    assert parse_trailers(message)["Reconcile-Service"] == "zeta"  # a mapping keeps the last


def test_a_run_commit_records_something() -> None:
    with pytest.raises(ValueError):
        run_commit([])


def test_an_observing_service_that_wrote_a_report_is_listed() -> None:
    report = Commit(
        "reconcile(ion-api): observed state",
        "Report: interim report: 5% live for 20m",
        {"Reconcile-Service": "ion-api", "Reconcile-Action": "record"},
    )
    text = run_commit([Entry(report, listed=True), entry("quiet", "record")])
    assert text.subject == "reconcile: 2 observed"
    assert text.body.splitlines() == [
        "reconcile(ion-api): observed state",
        "  Report: interim report: 5% live for 20m",
    ]
    assert text.trailers == (("Reconcile-Service", "ion-api"), ("Reconcile-Action", "record"))
