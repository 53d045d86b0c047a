"""Write the status site: read state/ and rollout/, render with `site.py`, write a directory.

The I/O edge of `reconcile site --out DIR`. A service whose files cannot be read still gets
its row and page, saying what is wrong; the site is a view, never a gate.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from pathlib import Path

from reconciler import state as st
from reconciler.charts import chart_data
from reconciler.errors import ReconcileError
from reconciler.site import EventRow, ServiceView, index_page, page_name, service_page
from reconciler.spec import SERVICE_RE, RolloutSpec

CHART_SPAN = timedelta(hours=48)
"""The metrics a service page charts: the last 48 h (the canary checklist's final report)."""
MAX_EVENTS = 200


def services(repo: Path) -> list[str]:
    """Services with a state directory (`state/<service>/status.yaml`), sorted."""
    root = repo / "state"
    if not root.is_dir():
        return []
    return sorted(
        p.name
        for p in root.iterdir()
        if p.is_dir() and re.fullmatch(SERVICE_RE, p.name) and (p / "status.yaml").is_file()
    )


def view(repo: Path, service: str, now: datetime) -> ServiceView | None:
    """What the site shows of one service (None when it has no status)."""
    from reconciler.loader import load_spec

    try:
        status = st.read_status(repo, service)
    except ReconcileError as exc:
        return ServiceView(service, "unknown", "", None, 0, problem=str(exc))
    if status is None:
        return None
    problems: list[str] = []
    spec: RolloutSpec | None = None
    path = repo / "rollout" / f"{service}.yaml"
    if path.is_file():
        try:
            spec = load_spec(path)
        except ReconcileError as exc:
            problems.append(str(exc))
    try:
        events = st.read_events(repo, service)[-MAX_EVENTS:]
    except ReconcileError as exc:
        events, problems = [], [*problems, str(exc)]
    try:
        windows = st.read_metrics(repo, service, since=now - CHART_SPAN)
    except ReconcileError as exc:
        windows, problems = [], [*problems, str(exc)]
    rolled_back = spec.rolled_back if spec is not None else None
    canary = status.canary_revision or (rolled_back.revision if rolled_back else None)
    reports_dir = st.state_dir(repo, service) / "reports"
    reports = tuple(
        (p.name, p.read_text(encoding="utf-8", errors="replace"))
        for p in sorted(reports_dir.glob("*-latest.md"))
    )
    verdict = status.verdict
    return ServiceView(
        service=service,
        phase=status.phase.value,
        stable=status.stable_revision,
        canary=status.canary_revision,
        stage=status.stage,
        stages=tuple(spec.stages) if spec is not None else (),
        traffic=status.traffic.describe(),
        stage_since=status.stage_since,
        last_reconcile=status.last_reconcile,
        verdict=verdict.outcome.value if verdict is not None else None,
        reasons=tuple(verdict.reasons) if verdict is not None else (),
        rolled_back=rolled_back.reason
        if rolled_back is not None and spec is not None and spec.canary_percent == 0
        else None,
        charts=chart_data(
            spec.gates if spec is not None else None, canary, status.stable_revision, windows
        ),
        events=tuple(EventRow(e.time, e.kind.value, e.before, e.after, e.reason) for e in events),
        reports=reports,
        problem="; ".join(problems) or None,
    )


def build(repo: Path, out: Path, now: datetime) -> list[Path]:
    """Write `index.html` and one page per service into `out`; the paths written."""
    views = [v for v in (view(repo, s, now) for s in services(repo)) if v is not None]
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ReconcileError(f"{out}: cannot create: {exc.strerror or exc}") from None
    written = []
    pages = [("index.html", index_page(views, now))]
    pages += [(page_name(v.service), service_page(v, now)) for v in views]
    for name, text in pages:
        path = out / name
        try:
            st.atomic_write_text(path, text)
        except OSError as exc:
            raise ReconcileError(f"{path}: cannot write: {exc.strerror or exc}") from None
        written.append(path)
    # GitHub Pages: serve the files as they are (no Jekyll processing).
    (out / ".nojekyll").write_text("", encoding="utf-8")
    return written
