"""What to tell people after a run, and how each channel reads it. Pure: values in, text out.

`notice_of` turns one service's outcome (its plan, what was applied, the verdict) into a
`Notice`, or None when there is nothing new to say; `webhook_body`, `slack_body` and
`chat_body` render it; `signature` signs a webhook body (HMAC-SHA256, see
docs/notifications.md). Sending is `notify.py`'s job.

Events:
- `rollback`: the run rolled the canary back.
- `advance`: the run moved the canary up a stage (a new stage from git, or `auto_advance`).
- `finalize`: the canary took 100% and became the stable revision.
- `block`: git asks for a stage the gates do not allow yet (bake not passed); sent once per
  commit of the rollout file and live stage, not on every run that finds it still blocked.
- `hold`: the canary stays where it is because its verdict is not PASS (INCONCLUSIVE, or
  failing windows short of `consecutive_failures`); sent when the verdict changes.
- `wave_hold`: a region of a file with `waves:` was rolled back and every other region
  holds until an operator acts; decided by `decide` (`Decision.notices`), told once per
  version of the rollout file by one region (`waves.hold_teller`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from reconciler.model import GateResult, Outcome, Verdict
from reconciler.plan import Reason, ServicePlan
from reconciler.spec import NoticeEvent, format_latency, format_percent

SIGNATURE_HEADER = "X-Reconciler-Signature"
TIMESTAMP_HEADER = "X-Reconciler-Timestamp"
EVENT_HEADER = "X-Reconciler-Event"
DELIVERY_HEADER = "X-Reconciler-Delivery"
PAYLOAD_VERSION = 1

_TITLES: dict[str, str] = {
    "rollback": "rolled back",
    "block": "blocked",
    "hold": "held",
    "advance": "advanced",
    "finalize": "finalized",
    "wave_hold": "held in every region",
}


@dataclass(frozen=True)
class Seen:
    """What state/ said about a service at the end of a run (for telling new from repeated)."""

    spec_id: str | None
    stage: int
    verdict: Outcome | None


@dataclass(frozen=True)
class Notice:
    """One event of one service, with its evidence."""

    event: NoticeEvent
    service: str
    project: str
    region: str
    at: datetime
    summary: str
    canary: str | None
    stable: str
    percent_before: int
    percent_after: int
    verdict: Verdict | None
    commit_url: str | None = None
    report_url: str | None = None
    name: str = ""
    """How the title names the service when not by its id alone: the run holds the id in
    more than one region or project (`model.labels`)."""


def event_of(
    plan: ServicePlan,
    *,
    applied: bool,
    rolled_back: bool,
    verdict: Verdict | None,
    before: Seen | None,
    after: Seen | None,
) -> NoticeEvent | None:
    """Which event one service's outcome is, or None when there is nothing new to tell.

    `before` / `after`: state/ before and after the run (block and hold are repeated by
    every run while they last; they are told only when something changed).
    """
    if rolled_back:
        return "rollback"
    if applied and plan.reason is Reason.FINALIZE:
        return "finalize"
    if applied and plan.reason in (Reason.STAGE, Reason.ADVANCE):
        return "advance" if plan.canary_percent_after > _percent(plan) else None
    if applied:
        return None
    unchanged = (
        before is not None
        and after is not None
        and before.spec_id == after.spec_id
        and before.stage == after.stage
    )
    if plan.blocked:
        return None if unchanged else "block"
    if verdict is not None and verdict.outcome is not Outcome.PASS:
        if unchanged and before is not None and before.verdict is verdict.outcome:
            return None
        return "hold"
    return None


def _percent(plan: ServicePlan) -> int:
    return plan.before.percent_of(plan.canary) if plan.canary else 0


def notice_of(
    event: NoticeEvent,
    plan: ServicePlan,
    verdict: Verdict | None,
    *,
    now: datetime,
    commit_url: str | None = None,
    report_url: str | None = None,
    name: str = "",
) -> Notice:
    """The notice of `event` for one service's plan (see `event_of`); `name` names the
    service in the title when the run names it other than by its id."""
    if event == "block":
        why = plan.blocked or ""
    elif event == "hold":
        why = "; ".join(verdict.reasons) if verdict is not None else ""
    elif event == "wave_hold":
        why = (plan.hold or "").removeprefix("HOLD: ")
    elif plan.edit is not None:
        why = plan.edit.summary
    else:
        why = plan.reason.value
    return Notice(
        event=event,
        service=plan.ref.service,
        project=plan.ref.project,
        region=plan.ref.region,
        at=now,
        summary=why,
        canary=plan.canary,
        stable=plan.stable,
        percent_before=_percent(plan),
        percent_after=plan.canary_percent_after
        if event in ("rollback", "advance", "finalize")
        else _percent(plan),
        verdict=verdict if verdict is not None else plan.verdict,
        commit_url=commit_url,
        report_url=report_url,
        # A wave hold is the whole file's, told by one region: named by the service id.
        name=name if name != plan.ref.service and event != "wave_hold" else "",
    )


# --- evidence ----------------------------------------------------------------------------
_PERCENT_GATES = ("error_rate", "success_rate", "vs_stable")


def format_gate_value(gate: str, value: float | None) -> str | None:
    """A gate's measured value or threshold with its unit (`7.1%`, `420ms`), None if none."""
    if value is None:
        return None
    if gate.startswith(_PERCENT_GATES):
        return format_percent(round(value, 4))
    if gate.startswith("latency"):
        return format_latency(round(value, 3))
    return f"{value:g}"


def gate_evidence(gates: Sequence[GateResult]) -> list[dict[str, Any]]:
    """The gates as a payload lists them: failing first, then inconclusive, then passing."""
    order = {Outcome.FAIL: 0, Outcome.INCONCLUSIVE: 1, Outcome.PASS: 2}
    return [
        {
            "gate": g.gate,
            "outcome": g.outcome.value,
            "value": format_gate_value(g.gate, g.value),
            "threshold": format_gate_value(g.gate, g.threshold),
            "samples": g.samples,
            "reason": g.reason,
        }
        for g in sorted(gates, key=lambda g: order[g.outcome])
    ]


def title(notice: Notice) -> str:
    """One line: `ion-api rolled back: canary ion-api-00042-xyz 5% -> 0%` (the service as
    the run names it: `ion-api (europe-west1) rolled back: ...`)."""
    head = f"{notice.name or notice.service} {_TITLES[notice.event]}"
    if notice.canary is None:
        return head
    if notice.event == "wave_hold":
        return f"{head}: canary {notice.canary}"  # each region holds at its own stage
    move = f"{notice.percent_before}%"
    if notice.percent_after != notice.percent_before:
        move += f" -> {notice.percent_after}%"
    return f"{head}: canary {notice.canary} {move}"


# --- renderers -----------------------------------------------------------------------------
def webhook_body(notice: Notice) -> bytes:
    """The generic webhook's JSON body (documented field by field in docs/notifications.md)."""
    verdict = notice.verdict
    data = {
        "version": PAYLOAD_VERSION,
        "event": notice.event,
        "service": notice.service,
        "project": notice.project,
        "region": notice.region,
        "at": notice.at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "title": title(notice),
        "reason": notice.summary,
        "revisions": {"canary": notice.canary, "stable": notice.stable},
        "canary_percent": {"before": notice.percent_before, "after": notice.percent_after},
        "verdict": verdict.outcome.value if verdict is not None else None,
        "gates": gate_evidence(verdict.gates) if verdict is not None else [],
        "links": {"commit": notice.commit_url, "report": notice.report_url},
    }
    return json.dumps(data, ensure_ascii=False, sort_keys=True).encode("utf-8")


def _lines(notice: Notice, bold: str) -> list[str]:
    out = [f"{bold}{title(notice)}{bold}"]
    if notice.summary:
        out.append(notice.summary)
    verdict = notice.verdict
    if verdict is not None and verdict.gates:
        for g in gate_evidence(verdict.gates):
            if g["outcome"] == "PASS" and notice.event != "advance":
                continue
            measured = f": {g['value']} (threshold {g['threshold']})" if g["value"] else ""
            out.append(f"• {g['gate']} {g['outcome']}{measured}")
    return out


def slack_body(notice: Notice) -> bytes:
    """A Slack incoming-webhook message (mrkdwn text, links as `<url|text>`)."""
    return _text_body(notice)


def chat_body(notice: Notice) -> bytes:
    """A Google Chat webhook message (its text format is Slack's: `*bold*`, `<url|text>`)."""
    return _text_body(notice)


def _text_body(notice: Notice) -> bytes:
    lines = _lines(notice, "*")
    links = _links(notice, lambda url, text: f"<{url}|{text}>")
    return json.dumps({"text": "\n".join(lines + links)}, ensure_ascii=False).encode("utf-8")


def _links(notice: Notice, link: Any) -> list[str]:
    parts = []
    if notice.commit_url:
        parts.append(link(notice.commit_url, "commit"))
    if notice.report_url:
        parts.append(link(notice.report_url, "report"))
    return [" · ".join(parts)] if parts else []


def signature(secret: bytes, timestamp: int, body: bytes) -> str:
    """`v1=<hex HMAC-SHA256 of "<timestamp>." + body>`: what X-Reconciler-Signature carries.

    The timestamp is signed with the body so a receiver can refuse replays of old requests.
    """
    mac = hmac.new(secret, str(timestamp).encode("ascii") + b"." + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()


def verify(
    secret: bytes, headers: Mapping[str, str], body: bytes, now: int, skew: int = 300
) -> bool:
    """What a receiver does: the signature matches and the timestamp is within `skew` s."""
    try:
        timestamp = int(headers[TIMESTAMP_HEADER])
    except (KeyError, ValueError):
        return False
    if abs(now - timestamp) > skew:
        return False
    expected = signature(secret, timestamp, body)
    return hmac.compare_digest(expected, headers.get(SIGNATURE_HEADER, ""))
