"""The status site's pages: a fleet table and one page per service, as static HTML. Pure.

Values in (`ServiceView`s built by `sitegen.py` from state/ and rollout/), HTML text out.
No JavaScript, no external resources: pages open from disk, on GitHub Pages, or in a
headless browser alike. Every value from state/ or a rollout file is HTML-escaped.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from reconciler.charts import Chart, svg

STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px;color:#212529;
background:#fff;max-width:1100px}
h1{font-size:1.5rem;margin:0 0 4px}h2{font-size:1.15rem;margin:28px 0 8px}
.muted{color:#6c757d;font-size:.9rem}
table{border-collapse:collapse;width:100%;font-size:.9rem}
th,td{text-align:left;padding:6px 8px;border-bottom:1px solid #dee2e6;vertical-align:top}
th{background:#f1f3f5}td.num{text-align:right;font-variant-numeric:tabular-nums}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:.8rem;color:#fff}
.phase-progressing{background:#1c7ed6}.phase-paused{background:#f08c00}
.phase-promoted{background:#2f9e44}.phase-rolled_back{background:#e03131}
.phase-stable{background:#495057}.phase-unknown{background:#adb5bd}
.verdict-PASS{color:#2f9e44}.verdict-FAIL{color:#e03131}.verdict-INCONCLUSIVE{color:#f08c00}
ol.stages{display:flex;list-style:none;padding:0;margin:8px 0;gap:4px}
ol.stages li{flex:1;padding:8px;text-align:center;border-radius:4px;background:#f1f3f5}
ol.stages li.done{background:#d3f9d8}ol.stages li.current{background:#1c7ed6;color:#fff;
font-weight:bold}ol.stages li.rolled-back{background:#ffe3e3}
svg.chart{display:block;margin:8px 0;max-width:100%;height:auto}
pre{background:#f8f9fa;padding:12px;overflow-x:auto;font-size:.8rem;white-space:pre-wrap}
"""


@dataclass(frozen=True)
class EventRow:
    """One event as the site lists it."""

    time: datetime
    kind: str
    before: str = ""
    after: str = ""
    reason: str = ""


@dataclass(frozen=True)
class ServiceView:
    """What the site shows of one service."""

    service: str
    phase: str
    stable: str
    canary: str | None
    stage: int
    stages: tuple[int, ...] = ()
    traffic: str = ""
    stage_since: datetime | None = None
    last_reconcile: datetime | None = None
    verdict: str | None = None
    reasons: tuple[str, ...] = ()
    rolled_back: str | None = None
    """The rollback reason while the canary is rolled back."""
    charts: tuple[Chart, ...] = ()
    events: tuple[EventRow, ...] = ()
    reports: tuple[tuple[str, str], ...] = ()
    """(name, markdown) of the latest reports."""
    problem: str | None = None
    """Why part of the service could not be read (shown, never fatal for the site)."""
    where: str = ""
    """`project.region` when another rollout shares the service id, else empty: its page's
    file name (`page_name`)."""
    name: str = ""
    """How the site names it when the service id alone is ambiguous, as apply and status do
    (`model.labels`: `ion-api (europe-west1)`, or `project/region/service` across projects);
    empty for the id alone."""


def page_name(service: str, where: str = "") -> str:
    """The file name of a service's page (ids are safe file names); `where` (`project.region`)
    tells apart the same service id in two regions or projects."""
    return f"{service}.{where}.html" if where else f"{service}.html"


def _title(v: ServiceView) -> str:
    """The service as the site names it (`ServiceView.name`, else its id)."""
    return v.name or v.service


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _time(when: datetime | None) -> str:
    if when is None:
        return "–"
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _page(title: str, body: list[str], now: datetime) -> str:
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{_e(title)}</title><style>{STYLE}</style></head><body>",
            *body,
            f'<p class="muted" id="generated">Generated {_e(_time(now))} from state/.</p>',
            "</body></html>",
            "",
        ]
    )


def _phase(phase: str) -> str:
    return f'<span class="badge phase-{_e(phase)}">{_e(phase.replace("_", " "))}</span>'


def _verdict(verdict: str | None) -> str:
    if verdict is None:
        return '<span class="muted">–</span>'
    return f'<span class="verdict-{_e(verdict)}">{_e(verdict)}</span>'


def index_page(views: Sequence[ServiceView], now: datetime) -> str:
    """The fleet table: one row per service, linking to its page."""
    rows = []
    for v in sorted(views, key=lambda v: (v.service, v.where)):
        canary = _e(v.canary) if v.canary else '<span class="muted">none</span>'
        rows.append(
            f'<tr data-service="{_e(v.service)}">'
            f'<td><a href="{_e(page_name(v.service, v.where))}">{_e(_title(v))}</a></td>'
            f"<td>{_phase(v.phase)}</td>"
            f'<td class="num">{v.stage}%</td>'
            f"<td>{canary}</td><td>{_e(v.stable)}</td>"
            f"<td>{_verdict(v.verdict)}</td>"
            f"<td>{_e(_time(v.last_reconcile))}</td></tr>"
        )
    body = [
        "<h1>Canary rollouts</h1>",
        f'<p class="muted">{len(views)} service{"s" if len(views) != 1 else ""}</p>',
        '<table id="fleet"><thead><tr><th>service</th><th>phase</th><th>canary %</th>'
        "<th>canary</th><th>stable</th><th>verdict</th><th>last reconcile</th></tr></thead>",
        "<tbody>",
        *(rows or ['<tr><td colspan="7">No service has state yet.</td></tr>']),
        "</tbody></table>",
    ]
    return _page("Canary rollouts", body, now)


def _stages(v: ServiceView) -> list[str]:
    if not v.stages:
        return ['<p class="muted">No rollout file: stages unknown.</p>']
    items = []
    for s in v.stages:
        if v.rolled_back is not None:
            cls = "rolled-back"
        elif s == v.stage and v.canary is not None:
            cls = "current"
        elif s < v.stage:
            cls = "done"
        else:
            cls = "pending"
        items.append(f'<li class="{cls}">{s}%</li>')
    return ['<ol class="stages" id="stages">', *items, "</ol>"]


def service_page(v: ServiceView, now: datetime) -> str:
    """One service: where it stands, its stage timeline, charts, events and reports."""
    body = [
        '<p><a href="index.html">← all services</a></p>',
        f"<h1>{_e(_title(v))} {_phase(v.phase)}</h1>",
        f'<p class="muted">live: <code>{_e(v.traffic or "–")}</code></p>',
    ]
    if v.problem:
        body.append(f'<p class="verdict-FAIL" id="problem">{_e(v.problem)}</p>')
    if v.rolled_back is not None:
        body.append(
            f'<p class="verdict-FAIL" id="rolled-back">Rolled back: {_e(v.rolled_back)}</p>'
        )
    body += [
        '<table id="summary"><tbody>',
        f"<tr><th>canary</th><td>{_e(v.canary or 'none')} at {v.stage}%</td></tr>",
        f"<tr><th>stable</th><td>{_e(v.stable)}</td></tr>",
        f"<tr><th>at this stage since</th><td>{_e(_time(v.stage_since))}</td></tr>",
        f"<tr><th>verdict</th><td>{_verdict(v.verdict)}"
        + "".join(f"<br>{_e(r)}" for r in v.reasons)
        + "</td></tr>",
        f"<tr><th>last reconcile</th><td>{_e(_time(v.last_reconcile))}</td></tr>",
        "</tbody></table>",
        "<h2>Stages</h2>",
        *_stages(v),
    ]
    moves = [e for e in v.events if e.before or e.after]
    if moves:
        body.append(
            '<table id="timeline"><thead><tr><th>time</th><th>what</th><th>traffic</th>'
            "</tr></thead><tbody>"
        )
        for e in moves:
            body.append(
                f"<tr><td>{_e(_time(e.time))}</td><td>{_e(e.kind.replace('_', ' '))}</td>"
                f"<td><code>{_e(e.before)}</code> → <code>{_e(e.after)}</code></td></tr>"
            )
        body.append("</tbody></table>")
    body.append("<h2>Canary and stable</h2>")
    for chart in v.charts:
        body.append(svg(chart))
        if chart.caption:
            body.append(f'<p class="muted">{_e(chart.caption)}</p>')
    if not v.charts:
        body.append('<p class="muted">No metrics recorded.</p>')
    body.append("<h2>Events</h2>")
    if v.events:
        body.append(
            '<table id="events"><thead><tr><th>time</th><th>event</th><th>reason</th>'
            "</tr></thead><tbody>"
        )
        for e in sorted(v.events, key=lambda e: e.time, reverse=True):
            body.append(
                f"<tr><td>{_e(_time(e.time))}</td><td>{_e(e.kind)}</td><td>{_e(e.reason)}</td></tr>"
            )
        body.append("</tbody></table>")
    else:
        body.append('<p class="muted">No events recorded.</p>')
    body.append("<h2>Reports</h2>")
    if v.reports:
        for name, text in v.reports:
            body.append(
                f'<details class="report"><summary>{_e(name)}</summary><pre>{_e(text)}</pre>'
                "</details>"
            )
    else:
        body.append('<p class="muted">No report yet (<code>reconcile report SERVICE</code>).</p>')
    return _page(f"{_title(v)}: canary rollout", body, now)
