"""Write the status site: read state/ and rollout/, render with `site.py`, write a directory.

The I/O edge of `reconcile site --out DIR`. A service whose files cannot be read still gets
its row and page, saying what is wrong; the site is a view, never a gate.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path

from reconciler import state as st
from reconciler.charts import chart_data
from reconciler.errors import ReconcileError
from reconciler.model import ServiceRef, labels
from reconciler.site import EventRow, ServiceView, index_page, page_name, service_page
from reconciler.spec import RolloutSpec
from reconciler.waves import expand

CHART_SPAN = timedelta(hours=48)
"""The metrics a service page charts: the last 48 h (the canary checklist's final report)."""
MAX_EVENTS = 200


def services(repo: Path) -> list[ServiceRef]:
    """Rollouts with a status file (`state/<project>/<region>/<service>/status.yaml`), sorted."""
    if not (repo / "state").is_dir():
        return []
    return st.state_refs(repo)


def rollouts(repo: Path) -> tuple[dict[str, RolloutSpec], dict[str, str]]:
    """The loadable rollout files by identity (`ServiceRef.key`), and why each file that does
    not load failed, by its service id (the file's name)."""
    from reconciler.loader import find_rollout_files, load_spec

    specs: dict[str, RolloutSpec] = {}
    broken: dict[str, str] = {}
    folder = repo / "rollout"
    for path in find_rollout_files(folder) if folder.is_dir() else []:
        try:
            spec = load_spec(path)
        except ReconcileError as exc:
            broken[path.stem] = str(exc)
            continue
        for one in expand(spec):  # every region of a file with waves
            specs[ServiceRef(one.project, one.region, one.service).key] = one
    return specs, broken


def view(
    repo: Path,
    ref: ServiceRef,
    now: datetime,
    spec: RolloutSpec | None = None,
    problem: str | None = None,
    where: str = "",
    name: str = "",
) -> ServiceView | None:
    """What the site shows of one rollout (None when it has no status); `spec` is its rollout
    file when it loads, `problem` why it does not; `where` and `name` as `ServiceView`."""
    service = ref.service
    try:
        status = st.read_status(repo, ref)
    except ReconcileError as exc:
        return ServiceView(
            service, "unknown", "", None, 0, problem=str(exc), where=where, name=name
        )
    if status is None:
        return None
    problems: list[str] = [problem] if problem else []
    try:
        events = st.read_events(repo, ref)[-MAX_EVENTS:]
    except ReconcileError as exc:
        events, problems = [], [*problems, str(exc)]
    try:
        windows = st.read_metrics(repo, ref, since=now - CHART_SPAN)
    except ReconcileError as exc:
        windows, problems = [], [*problems, str(exc)]
    rolled_back = spec.rolled_back if spec is not None else None
    canary = status.canary_revision or (rolled_back.revision if rolled_back else None)
    reports_dir = st.state_dir(repo, ref) / "reports"
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
        where=where,
        name=name,
    )


def build(repo: Path, out: Path, now: datetime) -> list[Path]:
    """Write `index.html` and one page per service into `out`; the paths written."""
    refs = services(repo)
    specs, broken = rollouts(repo)
    ids = Counter(r.service for r in refs)
    # Named as apply and status name them: the id alone unless the fleet holds it twice.
    names = labels(refs)
    views = [
        v
        for v in (
            view(
                repo,
                r,
                now,
                specs.get(r.key),
                # A broken file of the id is this rollout's problem only when no file loads it.
                broken.get(r.service) if r.key not in specs else None,
                f"{r.project}.{r.region}" if ids[r.service] > 1 else "",
                names[r] if names[r] != r.service else "",
            )
            for r in refs
        )
        if v is not None
    ]
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ReconcileError(f"{out}: cannot create: {exc.strerror or exc}") from None
    written = []
    pages = [("index.html", index_page(views, now))]
    pages += [(page_name(v.service, v.where), service_page(v, now)) for v in views]
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
