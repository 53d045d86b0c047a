"""`reconcile watch --stream`: one Cloud Logging tail over every live canary's request logs,
judged by the anytime-valid tests (`sequential`: error rate, p95 latency), rolling back
within seconds of a breach.

The stream may only roll back: promotion stays with the windowed gates of `apply`. A rollback
goes through `roll_back`, the one seam to the operator's rollback path (the same traffic
write, rollout-file edit, commit and push as `reconcile rollback`), which also sends the
`notify:` notice once the rollback is recorded. The controller outlives
a lost stream (reconnects with backoff), an API outage (the rollback is retried until it
is live) and a git outage (the recording is retried; the traffic change never waits on git).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import grpc
from google.api_core.exceptions import GoogleAPICallError

from reconciler.errors import ReconcileError
from reconciler.lease import Lease, LeaseError, holder_id
from reconciler.model import ServiceRef, labels
from reconciler.reconcile import ROLLED_BACK_EXIT, Context, ServiceOutcome, rollout_files
from reconciler.sequential import (
    DEFAULT_ALPHA,
    DEFAULT_RESTART,
    Evidence,
    Tally,
    judge_stream,
    observe,
)
from reconciler.spec import Gates

if TYPE_CHECKING:
    from google.cloud.logging_v2.services.logging_service_v2 import LoggingServiceV2Client

log = logging.getLogger(__name__)

REQUEST_LOG = "run.googleapis.com%2Frequests"
# The stream does not need entries in order, so no server-side buffering: lower latency.
BUFFER_WINDOW_SECONDS = 0
BACKOFF_FIRST = 1.0
BACKOFF_MAX = 30.0


@dataclass(frozen=True)
class Canary:
    """A canary serving traffic now, as its rollout file says."""

    service: str
    project: str
    region: str
    stable: str
    canary: str
    gates: Gates

    @property
    def ref(self) -> ServiceRef:
        """The rollout's identity (the same service id in two regions is two canaries)."""
        return ServiceRef(self.project, self.region, self.service)


@dataclass(frozen=True)
class Outcome:
    """One served request, read from its request log entry."""

    project: str
    region: str
    service: str
    revision: str
    status: int
    latency: float = 0.0
    """Seconds, from `httpRequest.latency` (an entry without one is never slow)."""


class Session(Protocol):
    """An open tail: iterate for batches of outcomes; `cancel()` from any thread ends it."""

    def __iter__(self) -> Iterator[list[Outcome]]: ...

    def cancel(self) -> None: ...


class LogSource(Protocol):
    """Where request logs come from (Cloud Logging, or its emulator)."""

    def open(self, resource_names: Sequence[str], log_filter: str) -> Session: ...


def live_canaries(repo: Path, patterns: Sequence[str] = ()) -> tuple[list[Canary], list[str]]:
    """Canaries with traffic per the rollout files (not rolled back), one per region of a
    file with `waves:` (each judged on its own region's request logs), and one error line
    per file that does not load (it is skipped, never guessed at)."""
    from reconciler.loader import SpecError, load_spec
    from reconciler.plan import is_rolled_back
    from reconciler.waves import expand

    found: list[Canary] = []
    errors: list[str] = []
    for path in rollout_files(repo / "rollout", patterns):
        try:
            whole = load_spec(path)
        except SpecError as exc:
            errors.append(str(exc))
            continue
        canary = whole.revisions.canary
        if canary is None or whole.canary_percent == 0:
            continue
        found += [
            Canary(
                spec.service,
                spec.project,
                spec.region,
                spec.revisions.stable,
                canary,
                spec.gates,
            )
            for spec in expand(whole)
            if not is_rolled_back(spec)
        ]
    return found, errors


def request_filter(canaries: Sequence[Canary]) -> tuple[list[str], str]:
    """The tail's parents (`projects/P`) and filter: the request logs of the live canaries'
    canary and stable revisions (stable feeds the `vs_stable` comparison)."""
    projects = sorted({c.project for c in canaries})
    logs = " OR ".join(f'logName="projects/{p}/logs/{REQUEST_LOG}"' for p in projects)
    revisions = sorted({r for c in canaries for r in (c.canary, c.stable)})
    revs = " OR ".join(f'resource.labels.revision_name="{r}"' for r in revisions)
    return [f"projects/{p}" for p in projects], (
        f'({logs}) AND resource.type="cloud_run_revision" AND ({revs})'
    )


def roll_back(ctx: Context, canary: Canary, reason: str) -> bool:
    """The operator's rollback path, as `reconcile rollback --force` runs it: the traffic
    write and its local record first, then the `notify:` notice (sent on its own thread, so
    it never delays this or another rollback), then the push of every commit the remote lacks
    (a failed push raises and is retried). A region of a file with `waves:` is rolled back
    alone, as its failing gates would (the other regions hold). True when it rolled back now,
    False when it was rolled back already."""
    from reconciler import manual

    outcome = manual.roll_back_now(ctx, canary.service, reason, canary.region, canary.project)
    if outcome.rolled_back:
        _notify(ctx, outcome)
    manual.publish(ctx, outcome)
    if outcome.error:
        raise ReconcileError(outcome.error)
    return outcome.rolled_back


def _notify(ctx: Context, outcome: ServiceOutcome) -> None:
    """Send the rollback's notice as `apply` does, from a thread of its own. Not a daemon:
    the process waits for it (bounded by the notify budget) before it exits."""
    from reconciler import notify

    try:
        deliveries = notify.plan_deliveries(
            ctx.repo, [outcome], {}, now=ctx.clock(), warn=log.warning
        )
    except ReconcileError as exc:  # an unreadable rollout file: the rollback still stands
        log.warning("notify: skipped (%s)", exc)
        return
    if deliveries:
        threading.Thread(
            target=notify.send,
            args=(deliveries,),
            kwargs={"warn": log.warning},
            name=f"notify-{outcome.service}",
        ).start()


@dataclass
class StreamResult:
    """How a streaming watch ended."""

    rollbacks: list[str] = field(default_factory=list)
    """The rollouts rolled back, as the lines name them (a region with its service)."""
    stopped_by: str = "duration"

    @property
    def exit_code(self) -> int:
        """4 when a canary was rolled back, else 0."""
        return ROLLED_BACK_EXIT if self.rollbacks else 0


class Controller:
    """Holds one tail for all live canaries and rolls each back on the first FAIL."""

    def __init__(
        self,
        ctx: Context,
        source: LogSource,
        *,
        patterns: Sequence[str] = (),
        alpha: float = DEFAULT_ALPHA,
        restart: timedelta = DEFAULT_RESTART,
        refresh: timedelta = timedelta(seconds=30),
        report: Callable[[str], None] = lambda _line: None,
        rollback: Callable[[Context, Canary, str], bool] = roll_back,
        lease: Lease | None = None,
    ) -> None:
        self.ctx = ctx
        self.source = source
        self.patterns = patterns
        self.alpha = alpha
        self.restart = restart
        self.refresh = refresh
        self.report = report
        self.rollback = rollback
        self.result = StreamResult()
        self._canaries: dict[str, Canary] = {}
        """The live canaries by rollout identity (`ServiceRef.key`)."""
        self._names: dict[ServiceRef, str] = {}
        """How lines name each canary's rollout (`model.labels`)."""
        self._evidence: dict[tuple[str, str], Evidence] = {}
        self._pending: dict[str, tuple[Canary, str]] = {}
        """Rollouts whose rollback (or its recording) failed: key -> (canary, reason), retried."""
        self._done: set[tuple[str, str]] = set()
        """(rollout key, canary) pairs judged FAIL whose rollback is not in the file yet."""
        self._git = threading.Lock()
        self._session: Session | None = None
        self._cancelled = False
        self.lease = lease
        self._holding = lease is None
        """Whether this controller may write: it holds the lease (or runs without one)."""
        self._standby: str | None = None
        self._errors: list[str] = []

    # --- the loop ------------------------------------------------------------------------------
    def run(self, stop: threading.Event, duration: timedelta | None = None) -> StreamResult:
        """Stream until `stop` is set or `duration` has passed."""
        deadline = self.ctx.clock() + duration if duration is not None else None
        ticker = threading.Thread(
            target=self._tick, args=(stop, deadline), name="stream-refresh", daemon=True
        )
        self._reload(pull=True)
        self._renew()
        ticker.start()
        backoff = BACKOFF_FIRST
        try:
            while not self._over(stop, deadline):
                if not self._canaries or not self._holding:
                    stop.wait(min(self.refresh.total_seconds(), 1.0))
                    continue
                names, flt = request_filter(list(self._canaries.values()))
                self._cancelled = False
                try:
                    self._session = self.source.open(names, flt)
                    self.report(f"streaming request logs of {self._describe()}")
                    for batch in self._session:
                        backoff = BACKOFF_FIRST
                        self._judge(batch)
                        if self._over(stop, deadline):
                            break
                    lost = "the server ended it"
                except (grpc.RpcError, GoogleAPICallError) as exc:
                    lost = _reason(exc)
                finally:
                    if self._session is not None:
                        self._session.cancel()
                if self._cancelled or self._over(stop, deadline):
                    continue
                self.report(f"log stream lost ({lost}); reconnecting in {backoff:g}s")
                stop.wait(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
        finally:
            stop.set()
            ticker.join(timeout=10)
            if self.lease is not None:
                self.lease.release()
        self.result.stopped_by = "duration" if deadline and self._past(deadline) else "signal"
        return self.result

    def _over(self, stop: threading.Event, deadline: datetime | None) -> bool:
        return stop.is_set() or (deadline is not None and self._past(deadline))

    def _past(self, deadline: datetime) -> bool:
        return self.ctx.clock() >= deadline

    def _tick(self, stop: threading.Event, deadline: datetime | None) -> None:
        """Every second: retry pending rollbacks, end the run at the deadline; every
        `refresh`: pull git and re-read the canaries, reopening the stream if they changed.

        This thread is what retries a rollback that failed, so no error ends it: a round that
        raises is reported (once while it keeps failing the same way) and tried again a
        second later."""
        last: datetime | None = None
        failing: str | None = None
        while not stop.wait(1.0):
            try:
                last = self._round(deadline, last)
            except Exception as exc:  # reported; the next round tries again
                why = f"{type(exc).__name__}: {exc}"
                if why != failing:
                    self.report(f"stream refresh failed ({why}); trying again every second")
                failing = why
                continue
            if last is None:
                return
            failing = None
        self._reopen()

    def _round(self, deadline: datetime | None, last: datetime | None) -> datetime | None:
        """One round of `_tick`; returns the time of the last refresh, None at the deadline."""
        if self._pending:
            self._retry()
        now = self.ctx.clock()
        if deadline is not None and now >= deadline:
            self._reopen()
            return None
        if last is None:
            return now
        if now - last >= self.refresh:
            held = self._holding
            changed = self._reload(pull=True)
            if self._renew() != held or changed:
                self._reopen()
            return now
        return last

    def _renew(self) -> bool:
        """Take or renew the lease (when there is one); returns whether this controller
        holds it. An unreachable remote keeps a holder holding (nobody else can take the
        lease through it either) and lets a controller that saw no other holder write."""
        if self.lease is None:
            return True
        try:
            why = self.lease.acquire(self.ctx.clock())
        except LeaseError as exc:
            # Unless another holder was seen, write: a rollback matters more than a duplicate
            # record (rollbacks are idempotent), and the remote is down for everyone.
            self._holding = self._holding or self._standby is None
            self.report(
                f"lease not renewed ({exc}); {'carrying on' if self._holding else 'standing by'}"
            )
            return self._holding
        if why is None and not self._holding:
            self.report(f"holding the stream lease as {self.lease.holder}")
        elif why is not None and (self._holding or self._standby != why):
            self.report(f"standing by: the stream lease is {why}")
        self._standby = why
        self._holding = why is None
        return self._holding

    def _reopen(self) -> None:
        self._cancelled = True
        if self._session is not None:
            self._session.cancel()

    def _reload(self, *, pull: bool) -> bool:
        """Re-read the live canaries (after a git pull); True when the set changed."""
        with self._git:
            if pull and self.ctx.git is not None and self.ctx.push and self.ctx.git.has_remote():
                try:
                    self.ctx.git.pull()
                except ReconcileError as exc:
                    self.report(f"git pull failed, using the local rollout files: {exc}")
            try:
                found, errors = live_canaries(self.ctx.repo, self.patterns)
            except ReconcileError as exc:
                self.report(str(exc))
                return False
        if errors != self._errors:
            for line in errors:
                self.report(line)
            self._errors = errors
        fresh = {c.ref.key: c for c in found if (c.ref.key, c.canary) not in self._done}
        changed = fresh != self._canaries
        self._canaries = fresh
        # Named among every canary of the rollout files, so a region keeps its name while
        # another region's rollback takes that one out of the stream.
        self._names = {**self._names, **labels(c.ref for c in found)}
        live = {(c.ref.key, c.canary) for c in fresh.values()}
        self._evidence = {k: v for k, v in self._evidence.items() if k in live}
        return changed

    def _name(self, canary: Canary) -> str:
        return self._names.get(canary.ref, canary.service)

    def _describe(self) -> str:
        return ", ".join(f"{self._name(c)} ({c.canary})" for c in self._canaries.values())

    # --- judging -------------------------------------------------------------------------------
    def _judge(self, batch: Sequence[Outcome]) -> None:
        now = self.ctx.clock()
        for canary, (c, s) in tally(batch, list(self._canaries.values())).items():
            key = (canary.ref.key, canary.canary)
            if key in self._done:
                continue
            ev = observe(self._evidence.get(key, Evidence()), c, s, now, restart=self.restart)
            self._evidence[key] = ev
            verdict = judge_stream(ev, canary.gates, self.alpha)
            if verdict.fail:
                self._done.add(key)
                self._canaries.pop(canary.ref.key, None)
                self._roll_back(canary, f"stream: {verdict.reason}")

    def _roll_back(self, canary: Canary, reason: str) -> None:
        key, name = canary.ref.key, self._name(canary)
        with self._git:
            try:
                done = self.rollback(self.ctx, canary, reason)
            except Exception as exc:  # retried; never the end of the stream
                self._pending[key] = (canary, reason)
                why = exc if isinstance(exc, ReconcileError) else f"{type(exc).__name__}: {exc}"
                self.report(f"{name} rollback incomplete, retrying: {why}")
                return
            # The rollout file now says rolled back, which keeps the canary out of the stream;
            # a human who deletes the block retries it, and the stream watches it again.
            self._done = {k for k in self._done if k[0] != key}
        # A retry finds the traffic already on stable: the first attempt rolled it back.
        done = done or key in self._pending
        self._pending.pop(key, None)
        if done and name not in self.result.rollbacks:
            self.result.rollbacks.append(name)
        at = self.ctx.clock().strftime("%Y-%m-%dT%H:%M:%SZ")
        self.report(f"[{at}] {name} ROLLED BACK: {reason}")

    def _retry(self) -> None:
        for canary, reason in list(self._pending.values()):
            self._roll_back(canary, reason)


def watch_stream(
    ctx: Context,
    patterns: Sequence[str],
    duration: timedelta | None,
    report: Callable[[str], None],
    source: LogSource | None = None,
) -> int:
    """`reconcile watch --stream`: run the controller until SIGINT/SIGTERM or `duration`;
    returns the exit code (4 if it rolled a canary back)."""
    from reconciler.watch import stop_on_signals

    lease = None
    if ctx.git is not None and ctx.push and ctx.git.has_remote():
        lease = Lease(ctx.repo, holder_id())
    controller = Controller(
        ctx, source or CloudLogging(), patterns=patterns, report=report, lease=lease
    )
    stop = threading.Event()
    with stop_on_signals(stop):
        result = controller.run(stop, duration)
    rolled = ", ".join(result.rollbacks) or "nothing"
    report(f"stream stopped ({result.stopped_by}); rolled back: {rolled}")
    return result.exit_code


def tally(
    batch: Sequence[Outcome], canaries: Sequence[Canary]
) -> Mapping[Canary, tuple[Tally, Tally]]:
    """Per canary: (its canary revision's requests, 5xx and requests slower than its
    `latency_p95.max`, the same of its stable revision)."""
    by_rev: dict[tuple[str, str, str, str], tuple[Canary, bool]] = {}
    for c in canaries:
        by_rev[(c.project, c.region, c.service, c.canary)] = (c, True)
        by_rev[(c.project, c.region, c.service, c.stable)] = (c, False)
    counts: dict[Canary, list[int]] = {}
    for o in batch:
        hit = by_rev.get((o.project, o.region, o.service, o.revision))
        if hit is None:
            continue
        c, is_canary = hit
        slowest = c.gates.latency_p95.max if c.gates.latency_p95 else None
        row = counts.setdefault(c, [0] * 6)
        i = 0 if is_canary else 3
        row[i] += 1
        row[i + 1] += o.status >= 500
        row[i + 2] += slowest is not None and o.latency > slowest
    return {c: (Tally(*r[:3]), Tally(*r[3:])) for c, r in counts.items()}


def _reason(exc: BaseException) -> str:
    code = getattr(exc, "code", None)
    name = code().name if callable(code) and hasattr(code(), "name") else type(exc).__name__
    details = getattr(exc, "details", None)
    text = details() if callable(details) else str(exc)
    return f"{name}: {text}"[:200]


# --- Cloud Logging -----------------------------------------------------------------------------
class CloudLogging:
    """`LogSource` on the official google-cloud-logging client (`TailLogEntries`)."""

    def __init__(self, client: LoggingServiceV2Client | None = None) -> None:
        from reconciler import clients

        self.client = client or clients.logging_client()

    def open(self, resource_names: Sequence[str], log_filter: str) -> Session:
        """Open a tail session now (entries ingested from now on)."""
        return _Tail(self.client, resource_names, log_filter)


class _Tail:
    def __init__(
        self, client: LoggingServiceV2Client, resource_names: Sequence[str], log_filter: str
    ) -> None:
        from google.cloud.logging_v2.types import TailLogEntriesRequest

        self._closed = threading.Event()
        request = TailLogEntriesRequest(
            resource_names=list(resource_names),
            filter=log_filter,
            buffer_window={"seconds": BUFFER_WINDOW_SECONDS},
        )

        def requests() -> Iterator[TailLogEntriesRequest]:
            yield request
            # The request side stays open for the life of the session.
            self._closed.wait()

        # The transport's raw call, not the client method: that one blocks until the first
        # response arrives, which leaves nothing to cancel while no canary serves.
        tail: Any = client.transport.tail_log_entries
        self._call: Any = tail(requests())

    def __iter__(self) -> Iterator[list[Outcome]]:
        for resp in self._call:
            batch = []
            for e in resp.entries:
                labels = e.resource.labels
                took = e.http_request.latency
                batch.append(
                    Outcome(
                        labels.get("project_id", ""),
                        labels.get("location", ""),
                        labels.get("service_name", ""),
                        labels.get("revision_name", ""),
                        int(e.http_request.status),
                        took.seconds + took.nanos / 1e9,
                    )
                )
            yield batch

    def cancel(self) -> None:
        self._closed.set()
        self._call.cancel()
