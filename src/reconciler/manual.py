"""The operator's manual actions: rollback, abort, promote, pause, resume, retry, canary start.

Each is decided by the pure core (`decide.decide_rollback`, the rules in `verbs`) and carried
out by the loop's executor (etag writes with the stamp, the one rollout-file edit path, one
commit), so git tells the truth about them too. A dry run decides and writes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

from reconciler import state as st
from reconciler import verbs
from reconciler.decide import Commit, Decision, decide_rollback
from reconciler.errors import ReconcileError
from reconciler.execute import ServiceRun, carry_out, edit_text, read_rollout, record
from reconciler.loader import duplicate_identities, load_spec, spec_id_of
from reconciler.model import CommitAction, LiveService, ServiceRef, labels
from reconciler.plan import SpecEdit, is_rolled_back
from reconciler.reconcile import Context, ServiceOutcome, ref_of, rollout_files
from reconciler.runcommit import named
from reconciler.spec import RolloutSpec
from reconciler.waves import expand, for_region

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Rollouts:
    """Every rollout file named after one service id (in any folder of rollout/), loaded,
    with how output names each of its rollouts among them (`model.labels`)."""

    service: str
    specs: dict[str, RolloutSpec]
    """Each file's spec (a file with waves: as read, naming its lead region), by path."""
    files: list[verbs.FileRollouts]
    names: dict[ServiceRef, str]

    def pick(self, regions: Collection[str], project: str | None) -> list[verbs.FileRollouts]:
        """The rollouts `--region` and `--project` name (`verbs.pick`)."""
        return _ruled(lambda: verbs.pick(self.service, self.files, regions, project))

    def one_file(
        self, verb: str, regions: Collection[str], project: str | None, per_region: bool = False
    ) -> tuple[Path, RolloutSpec, tuple[ServiceRef, ...] | None]:
        """The one file a verb edits (`verbs.one_file`), its spec, and the regions of it
        picked when they are some of its waves only (None: the whole file)."""
        picked = self.pick(regions, project)
        chosen = _ruled(
            lambda: verbs.one_file(self.service, verb, picked, self.files, per_region=per_region)
        )
        whole = next(f for f in self.files if f.file == chosen.file)
        some = chosen.refs if len(chosen.refs) < len(whole.refs) else None
        return Path(chosen.file), self.specs[chosen.file], some

    def name(self, refs: Sequence[ServiceRef]) -> str:
        """How output names a verb's rollouts: one as `labels` does; every rollout of the id
        by the id; some regions of a file with waves by the id and those regions."""
        if len(refs) == 1:
            return self.names[refs[0]]
        if len(refs) == len(self.names):
            return self.service
        return f"{self.service} ({', '.join(r.region for r in refs)})"


def _rollouts(ctx: Context, service: str) -> _Rollouts:
    """The rollout files of exactly one service id (no globs for a manual action), loaded;
    two files naming one rollout are refused, as `plan` refuses them."""
    if any(ch in service for ch in "*?["):
        raise ReconcileError(f"{service!r}: name one service, not a pattern")
    specs = {str(path): load_spec(path) for path in rollout_files(ctx.repo / "rollout", [service])}
    every = [(Path(path), one) for path, spec in specs.items() for one in expand(spec)]
    clashes = duplicate_identities(every)
    if clashes:
        raise ReconcileError(next(iter(clashes.values())))
    files = [
        verbs.FileRollouts(path, tuple(ref_of(one) for one in expand(spec)))
        for path, spec in specs.items()
    ]
    return _Rollouts(service, specs, files, labels(r for f in files for r in f.refs))


def _pull(ctx: Context) -> None:
    """Act on the newest git: a laptop clone may be behind (a finalize, a new stable). Never
    before a rollback's traffic write (see `roll_back_now`)."""
    if ctx.git is not None and ctx.push and ctx.git.has_remote():
        try:
            ctx.git.pull()
        except ReconcileError as exc:
            log.warning("pull failed, acting on the local working tree: %s", exc)


def rollback(
    ctx: Context,
    service: str,
    reason: str,
    regions: Collection[str] = (),
    project: str | None = None,
) -> tuple[ServiceOutcome, ...]:
    """100% to stable at once, then the sticky `rolled_back` block, committed and pushed:
    every rollout of the service id (every region, every project) unless `regions` and
    `project` pick some, each with its own traffic write, record and commit.

    Rolling every region back is the default because it is the safe one: an operator in a
    hurry who names a service wants its canary gone, and a rollback only sends traffic to the
    revision that served before. A file with `waves:` whose regions are all picked gets its
    file-wide block (its first region writes it, the others their traffic and record); some of
    its regions get their own `rolled_back_regions` entries, and the others hold.

    Already rolled back (all traffic on stable, the block in git): nothing to do. Git is
    reached only after every traffic write and its local commit (`roll_back_now`), so a slow
    or unreachable remote never delays a rollback; `publish` says when it was not pushed. A
    region whose rollback fails does not stop the others; the error names it, after them.
    """
    found = _rollouts(ctx, service)
    outcomes: list[ServiceOutcome] = []
    for chosen in found.pick(regions, project):
        whole = next(f for f in found.files if f.file == chosen.file)
        alone = len(chosen.refs) < len(whole.refs)
        for ref in chosen.refs:
            name = found.names[ref]
            try:
                outcomes.append(
                    _roll_back(ctx, Path(chosen.file), ref, reason, alone=alone, name=name)
                )
            except ReconcileError as exc:
                label = name if name != service else ""
                outcomes.append(ServiceOutcome(service, error=str(exc), label=label))
    done = tuple(outcomes)
    publish(ctx, *done)
    failed = [o.error for o in done if o.error]
    if failed:
        rolled = [o.name for o in done if o.rolled_back and not o.error]
        also = f" (rolled back: {', '.join(rolled)})" if rolled else ""
        raise ReconcileError("; ".join(failed) + also)
    return done


def roll_back_now(
    ctx: Context,
    service: str,
    reason: str,
    region: str | None = None,
    project: str | None = None,
) -> ServiceOutcome:
    """The rollback's traffic write and its local record, without touching the remote, of
    the one rollout of `service` in `region` and `project` (None: its only one). A region of
    a file with `waves:` is rolled back alone (its `rolled_back_regions` entry; the other
    regions hold), as a failing gate does; its commit names the region."""
    found = _rollouts(ctx, service)
    picked = found.pick([region] if region else (), project)
    refs = [r for f in picked for r in f.refs]
    if len(refs) != 1:
        raise ReconcileError(verbs.several(service, refs))
    path = Path(picked[0].file)
    many = len(next(f for f in found.files if f.file == picked[0].file).refs) > 1
    return _roll_back(ctx, path, refs[0], reason, alone=many, name=found.names[refs[0]])


def _roll_back(
    ctx: Context, path: Path, ref: ServiceRef, reason: str, *, alone: bool, name: str
) -> ServiceOutcome:
    """One rollout's rollback: its traffic write and local record. The desired state comes
    from the working tree and the live service (a clone that is behind still knows the
    stable revision it last applied, and the live service says what serves). A write whose
    read-back failed is recorded all the same, with `error` saying so.

    `alone`: a region of a file with `waves:` rolled back by itself (its own entry); else
    the file's block (read again: a region rolled back before it may have written it).
    """
    spec = for_region(load_spec(path), ref.region)
    region_only = alone and spec.waves is not None
    label = name if name != spec.service else ""
    live = ctx.backend.get_service(ref_of(spec))
    if is_rolled_back(spec) and live.traffic.percents() == {spec.revisions.stable: 100}:
        return ServiceOutcome(spec.service, label=label)
    now = ctx.clock()
    loaded = st.load_status(ctx.state_root, ref_of(spec))  # corrupt state never blocks it
    status = loaded.status
    spec_id = spec_id_of(path)
    run = ServiceRun(path, spec, live, now)
    rebuilt = loaded.event(now, ctx.actor)
    if rebuilt is not None:
        run.events.append(rebuilt)

    def redecide(fresh: LiveService) -> Decision:
        d = decide_rollback(
            spec,
            status,
            fresh,
            now=now,
            reason=reason,
            spec_id=spec_id,
            actor=ctx.actor,
            region_only=region_only,
        )
        return replace(d, commit=named(d.commit, d.plan.ref, name))

    d, applied = carry_out(ctx, run, redecide(live), redecide)
    commit = record(ctx, run, d, applied)
    error = None
    if run.unconfirmed:
        error = f"{name}: rollback recorded, not confirmed serving: {run.unconfirmed}"
    return ServiceOutcome(
        spec.service,
        plan=d.plan,
        applied=True,
        rolled_back=True,
        error=error,
        commit=commit,
        label=label,
    )


def publish(ctx: Context, *outcomes: ServiceOutcome) -> None:
    """Bring the rollbacks' records (and any earlier unpushed one) to the remote: sync onto
    its tip, then push. Raises, saying the rollback is live and committed locally, when the
    remote cannot be reached; the next run pushes the commit."""
    if ctx.git is None or not ctx.push or not ctx.git.has_remote():
        return
    if not any(o.commit for o in outcomes) and not ctx.git.unpushed():
        return
    names = ", ".join(o.name for o in outcomes if o.commit) or outcomes[0].name
    done = (
        f"{names}: rolled back and recorded locally"
        if any(o.rolled_back for o in outcomes)
        else f"{names}: local commits"
    )
    synced = ctx.git.sync()
    if not synced.at_tip:
        raise ReconcileError(f"{done}, not pushed: {synced.reason}; the next run pushes it")
    try:
        ctx.git.push()
    except ReconcileError as exc:
        raise ReconcileError(f"{done}, not pushed: {exc}") from None


@dataclass(frozen=True)
class VerbResult:
    """What a verb wrote (or, in a dry run, would write): the edit's summary and the commit,
    and how output names what it acted on (`ion-api`, `ion-api (europe-west1)`)."""

    summary: str
    commit: str | None = None
    dry_run: bool = False
    noop: bool = False
    name: str = ""


T = TypeVar("T")


def _ruled(rule: Callable[[], T]) -> T:
    """A pure rule's refusal is an operator error: one line, exit 1, nothing written."""
    try:
        return rule()
    except verbs.VerbError as exc:
        raise ReconcileError(str(exc)) from None


def _write(
    ctx: Context,
    path: Path,
    edit: SpecEdit,
    message: Commit,
    branch: str | None,
    dry_run: bool,
    name: str,
) -> VerbResult:
    """Commit a verb's rollout-file edit (on `branch` when given) and push it."""
    if dry_run:
        return VerbResult(edit.summary, dry_run=True, name=name)
    text = edit_text(read_rollout(path), edit)
    if ctx.git is None:
        st.atomic_write_text(path, text)
        return VerbResult(edit.summary, name=name)
    if branch:
        on_branch = ctx.git.commit_to_branch(
            branch, {path: text}, message.subject, trailers=message.trailers, push=ctx.push
        )
        return VerbResult(edit.summary, on_branch, name=name)
    st.atomic_write_text(path, text)
    sha = ctx.git.commit([path], message.subject, trailers=message.trailers, skip_reconcile=False)
    if ctx.push and ctx.git.has_remote():
        ctx.git.push()
    return VerbResult(edit.summary, sha, name=name)


def _named(message: Commit, service: str, refs: Sequence[ServiceRef], name: str) -> Commit:
    """A verb's commit naming what it acted on as output does (`runcommit.named`; several
    regions of a file with waves by the id and those regions, with one trailer each)."""
    if len(refs) == 1:
        return named(message, refs[0], name)
    if name == service:
        return message
    subject = message.subject.replace(f"reconcile({service}):", f"reconcile({name}):", 1)
    keys = ", ".join(r.key for r in refs)
    return replace(
        message, subject=subject, trailers={**message.trailers, "Reconcile-Rollout": keys}
    )


def _edit_verb(
    ctx: Context,
    service: str,
    action: CommitAction,
    rule: Callable[[RolloutSpec, st.ServiceStatus | None, Sequence[str] | None], SpecEdit | None],
    *,
    regions: Collection[str] = (),
    project: str | None = None,
    per_region: bool = False,
    branch: str | None = None,
    dry_run: bool = False,
    noop: str = "nothing to change",
) -> VerbResult:
    """A verb that only edits the rollout file: decide it purely, then commit the edit.

    `regions` and `project` pick the file among the service id's (`verbs.one_file`); the
    rule is handed the picked regions when they are some of a file with waves only (a
    `per_region` verb), else None. The status it reads is the file's (a file with waves:
    its lead region's, the one that follows `canary_percent`)."""
    _pull(ctx)
    found = _rollouts(ctx, service)
    path, spec, some = found.one_file(action.value, regions, project, per_region)
    refs = some or next(f.refs for f in found.files if f.file == str(path))
    name = found.name(refs)
    status = st.load_status(ctx.state_root, ref_of(spec)).status
    picked = [r.region for r in some] if some is not None else None
    edit = _ruled(lambda: rule(spec, status, picked))
    if edit is None:
        return VerbResult(noop, noop=True, name=name)
    message = _named(
        verbs.commit(spec.service, action, edit, spec_id_of(path)), service, refs, name
    )
    return _write(ctx, path, edit, message, branch, dry_run, name)


def promote(
    ctx: Context,
    service: str,
    branch: str | None = None,
    *,
    to: int | None = None,
    full: bool = False,
    force: bool = False,
    dry_run: bool = False,
    regions: Collection[str] = (),
    project: str | None = None,
) -> VerbResult:
    """Write the next stage (or `to`, or 100%) into the rollout file and commit it.

    Refused before the current stage's bake has passed, unless `force` (written as
    `force: true`, which the next apply honours once).
    """
    now = ctx.clock()
    return _edit_verb(
        ctx,
        service,
        CommitAction.PROMOTE,
        lambda spec, status, _: verbs.promote(spec, status, now=now, to=to, full=full, force=force),
        regions=regions,
        project=project,
        branch=branch,
        dry_run=dry_run,
    )


def pause(
    ctx: Context,
    service: str,
    *,
    dry_run: bool = False,
    regions: Collection[str] = (),
    project: str | None = None,
) -> VerbResult:
    """Commit `paused: true`: no advance, no drift correction; rollbacks still happen."""
    return _edit_verb(
        ctx,
        service,
        CommitAction.PAUSE,
        lambda spec, _, __: verbs.pause(spec),
        regions=regions,
        project=project,
        dry_run=dry_run,
        noop="paused",
    )


def resume(
    ctx: Context,
    service: str,
    *,
    dry_run: bool = False,
    regions: Collection[str] = (),
    project: str | None = None,
) -> VerbResult:
    """Remove `paused`: the next apply advances and corrects drift again."""
    return _edit_verb(
        ctx,
        service,
        CommitAction.RESUME,
        lambda spec, _, __: verbs.resume(spec),
        regions=regions,
        project=project,
        dry_run=dry_run,
        noop="not paused",
    )


def retry(
    ctx: Context,
    service: str,
    reason: str | None = None,
    *,
    dry_run: bool = False,
    regions: Collection[str] = (),
    project: str | None = None,
) -> VerbResult:
    """Clear the `rolled_back` block (a new canary named, or the same one with a reason); of
    some regions of a file with waves, only their `rolled_back_regions` entries."""
    return _edit_verb(
        ctx,
        service,
        CommitAction.RETRY,
        lambda spec, _, picked: verbs.retry(spec, reason, picked),
        regions=regions,
        project=project,
        per_region=True,
        dry_run=dry_run,
    )


def canary_start(
    ctx: Context,
    service: str,
    revision: str | None = None,
    *,
    branch: str | None = None,
    dry_run: bool = False,
    regions: Collection[str] = (),
    project: str | None = None,
) -> VerbResult:
    """Name `revision` (default: Cloud Run's latest ready revision) as canary at the first
    stage, committed (on `branch` for a pull request when given). The revisions Cloud Run
    lists are the file's first region's (a file with waves names one revision everywhere)."""
    found = _rollouts(ctx, service)
    _, spec, _ = found.one_file(CommitAction.CANARY_START.value, regions, project)
    live = ctx.backend.get_service(ref_of(spec))
    chosen = revision or live.latest_ready_revision

    def rule(spec: RolloutSpec, _: st.ServiceStatus | None, __: object) -> SpecEdit:
        return verbs.canary_start(spec, chosen, live.revisions)

    return _edit_verb(
        ctx,
        service,
        CommitAction.CANARY_START,
        rule,
        regions=regions,
        project=project,
        branch=branch,
        dry_run=dry_run,
    )


def abort(
    ctx: Context,
    service: str,
    *,
    dry_run: bool = False,
    regions: Collection[str] = (),
    project: str | None = None,
) -> tuple[ServiceOutcome, ...]:
    """100% to stable now, `canary_percent: 0` and `paused: true`, with no sticky block:
    the canary stays named and can be resumed. A file with `waves:` is aborted in every
    region now, each with its own traffic write and record (the first writes the edit)."""
    _pull(ctx)
    found = _rollouts(ctx, service)
    path, _, _ = found.one_file(CommitAction.ABORT.value, regions, project)
    refs = next(f.refs for f in found.files if f.file == str(path))
    return tuple(_abort(ctx, path, ref, found.names[ref], dry_run) for ref in refs)


def _abort(ctx: Context, path: Path, ref: ServiceRef, name: str, dry_run: bool) -> ServiceOutcome:
    """One rollout's abort: its traffic write and its record with the file's edit (the
    file read again: a region aborted before it may have written the edit already)."""
    spec = for_region(load_spec(path), ref.region)
    live = ctx.backend.get_service(ref_of(spec))
    now = ctx.clock()
    loaded = st.load_status(ctx.state_root, ref_of(spec))
    status = loaded.status
    spec_id = spec_id_of(path)
    label = name if name != spec.service else ""

    def redecide(fresh: LiveService) -> Decision:
        try:
            d = verbs.decide_abort(spec, status, fresh, now=now, spec_id=spec_id, actor=ctx.actor)
        except verbs.VerbError as exc:
            raise ReconcileError(str(exc)) from None
        return replace(d, commit=named(d.commit, d.plan.ref, name))

    d = redecide(live)
    if dry_run:
        return ServiceOutcome(spec.service, plan=d.plan, label=label)
    run = ServiceRun(path, spec, live, now)
    rebuilt = loaded.event(now, ctx.actor)
    if rebuilt is not None:
        run.events.append(rebuilt)
    d, applied = carry_out(ctx, run, d, redecide)
    commit = record(ctx, run, d, applied)
    if commit and ctx.push and ctx.git is not None:
        ctx.git.push()
    if run.unconfirmed:
        raise ReconcileError(f"{name}: abort recorded, not confirmed serving: {run.unconfirmed}")
    return ServiceOutcome(spec.service, plan=d.plan, applied=True, commit=commit, label=label)
