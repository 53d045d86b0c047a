"""Which outcome is which notice, and what each channel's body carries (pure)."""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from reconciler.model import GateResult, Outcome, ServiceRef, Target, TrafficSplit, Verdict
from reconciler.notices import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    Seen,
    event_of,
    notice_of,
    signature,
    slack_body,
    title,
    verify,
    webhook_body,
)
from reconciler.plan import Phase, Reason, ServicePlan

NOW = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)
REF = ServiceRef("naeda-genesis", "us-central1", "ion-api")
C, S = "ion-api-00042-xyz", "ion-api-00041-abc"


def split(canary: int) -> TrafficSplit:
    return TrafficSplit.of([Target(S, 100 - canary, "stable"), Target(C, canary, "canary")])


def plan(before: int, after: int, reason: Reason, blocked: str | None = None) -> ServicePlan:
    return ServicePlan(
        REF,
        split(before),
        split(after),
        (),
        reason,
        Phase.PROGRESSING,
        "e",
        1,
        canary=C,
        stable=S,
        blocked=blocked,
    )


FAIL = Verdict(
    Outcome.FAIL,
    (
        GateResult("latency_p95", Outcome.PASS, 0.42, 20.0, 900, "p95 420ms <= 20s"),
        GateResult("error_rate", Outcome.FAIL, 0.071, 0.05, 900, "error_rate 7.1% > 5%"),
    ),
)
WAIT = Verdict(
    Outcome.INCONCLUSIVE,
    (GateResult("error_rate", Outcome.INCONCLUSIVE, None, 0.05, 3, "3 requests"),),
)
PASS = Verdict(Outcome.PASS, ())
SAME = Seen("abc", 5, Outcome.INCONCLUSIVE)


@pytest.mark.parametrize(
    ("sp", "applied", "rolled_back", "verdict", "before", "after", "event"),
    [
        (plan(5, 0, Reason.ROLLBACK), True, True, FAIL, SAME, SAME, "rollback"),
        (plan(5, 10, Reason.ADVANCE), True, False, PASS, SAME, SAME, "advance"),
        (plan(0, 5, Reason.STAGE), True, False, None, None, SAME, "advance"),
        (plan(10, 5, Reason.STAGE), True, False, None, SAME, SAME, None),
        (plan(100, 100, Reason.FINALIZE), True, False, PASS, SAME, SAME, "finalize"),
        (plan(5, 5, Reason.DRIFT), True, False, PASS, SAME, SAME, None),
        (plan(5, 5, Reason.STAGE, "bake"), False, False, PASS, Seen("old", 5, None), SAME, "block"),
        (plan(5, 5, Reason.STAGE, "bake"), False, False, PASS, SAME, SAME, None),
        (plan(5, 5, Reason.STAGE, "bake"), False, False, PASS, None, SAME, "block"),
        (plan(5, 5, Reason.NONE), False, False, WAIT, Seen("abc", 5, Outcome.PASS), SAME, "hold"),
        (plan(5, 5, Reason.NONE), False, False, WAIT, SAME, SAME, None),
        (plan(5, 5, Reason.NONE), False, False, FAIL, SAME, SAME, "hold"),
        (plan(5, 5, Reason.NONE), False, False, PASS, SAME, SAME, None),
    ],
    ids=[
        "rollback",
        "auto-advance",
        "first-stage",
        "lowered-stage",
        "finalize",
        "drift",
        "new-block",
        "same-block",
        "first-block",
        "new-hold",
        "same-hold",
        "failing-window",
        "in-sync",
    ],
)
def test_event_of(
    sp: ServicePlan,
    applied: bool,
    rolled_back: bool,
    verdict: Verdict | None,
    before: Seen | None,
    after: Seen | None,
    event: str | None,
) -> None:
    got = event_of(
        sp, applied=applied, rolled_back=rolled_back, verdict=verdict, before=before, after=after
    )
    assert got == event


def test_webhook_body_carries_evidence_with_units_failing_first() -> None:
    notice = notice_of(
        "rollback", plan(5, 0, Reason.ROLLBACK), FAIL, now=NOW, commit_url="https://x/c"
    )
    data = json.loads(webhook_body(notice))
    assert data["event"] == "rollback" and data["at"] == "2026-12-07T10:00:00Z"
    assert data["canary_percent"] == {"before": 5, "after": 0}
    assert [(g["gate"], g["value"], g["threshold"]) for g in data["gates"]] == [
        ("error_rate", "7.1%", "5%"),
        ("latency_p95", "420ms", "20s"),
    ]
    assert data["links"] == {"commit": "https://x/c", "report": None}
    text = json.loads(slack_body(notice))["text"]
    assert text.splitlines()[0] == "*ion-api rolled back: canary ion-api-00042-xyz 5% -> 0%*"
    assert "• error_rate FAIL: 7.1% (threshold 5%)" in text
    assert "latency_p95" not in text  # passing gates are noise in a rollback message
    assert "<https://x/c|commit>" in text


def test_signature_is_hmac_sha256_of_timestamp_dot_body() -> None:
    body = b'{"event":"rollback"}'
    expected = hmac.new(b"key", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert signature(b"key", 1700000000, body) == "v1=" + expected
    headers = {TIMESTAMP_HEADER: "1700000000", SIGNATURE_HEADER: "v1=" + expected}
    assert verify(b"key", headers, body, now=1700000100)
    assert not verify(b"key", headers, body, now=1700000000 + 301)  # a replay, too old
    assert not verify(b"key", {SIGNATURE_HEADER: "v1=" + expected}, body, now=1700000000)


def test_webhook_secrets_are_scrubbed_in_every_encoding() -> None:
    from reconciler import redact
    from reconciler.notify import secret_parts

    url = "https://hooks.slack.example/services/T0/B0/s3cr3t?x=a b"
    text = (
        f"failed for url '{url}'; quoted {url.replace(' ', '%20')}; "
        "path /services/T0/B0/s3cr3t?x=a b; key k&y-hmac-key"
    )
    out = redact.scrub(text, [*secret_parts(url), "k&y-hmac-key"])
    assert "s3cr3t" not in out and "k&y" not in out
    assert out.startswith(f"failed for url '{redact.REDACTED}'")


def test_a_wave_hold_names_the_file_s_service_and_says_which_region_holds_it() -> None:
    hold = (
        "HOLD: europe-west1 rolled back (error_rate 7.1% > 5%); no region takes a new stage "
        "until an operator acts (reconcile retry ion-api, a new canary, or reconcile rollback)"
    )
    sp = replace(plan(10, 10, Reason.NONE), hold=hold)
    notice = notice_of("wave_hold", sp, None, now=NOW, name="ion-api (us-central1)")
    # The hold is the whole file's (told by one region): named by the service id alone.
    assert title(notice) == f"ion-api held in every region: canary {C}"
    assert notice.summary.startswith("europe-west1 rolled back (error_rate 7.1% > 5%)")
    body = json.loads(webhook_body(notice))
    assert body["event"] == "wave_hold" and body["region"] == "us-central1"
    assert "europe-west1 rolled back" in json.loads(slack_body(notice))["text"]
