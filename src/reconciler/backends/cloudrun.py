"""TrafficBackend on the official `google-cloud-run` client (Cloud Run Admin API v2).

Writes send only `traffic` (and `annotations` when given) under an update mask, with the etag
they were read with, never the template (so no echoed `template.revision`); they wait for the
long-running operation and verify what serves (`traffic_statuses`) from the service its
response carries, or from a read of the service when that response has not settled on the
write (`settled`). Cloud Run's failures
are kept apart: a stale etag is a `Conflict`, an operation that failed (a revision that cannot
serve) is `OperationFailed` with `terminal_condition`'s reason, never a conflict. Reads and
writes are paced by a token bucket per project and region (Cloud Run's per-minute quotas);
RESOURCE_EXHAUSTED and transient errors are retried with bounded backoff (reads, which are
idempotent, for at least as long as Google's own retry policy for them), and a write whose
call failed is read back before it is reported failed (it may have landed).
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from google.api_core import exceptions as gexc
from google.cloud import run_v2
from google.protobuf import field_mask_pb2
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from reconciler.backends import BackendError, Conflict, NotFound, OperationFailed
from reconciler.model import LiveService, ServiceRef, Target, TrafficSplit

log = logging.getLogger(__name__)

T = TypeVar("T")
Kind = Literal["read", "write"]

LATEST = "LATEST"
"""Stands for a `TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST` target, which names no revision."""

# Cloud Run Admin API rate quotas per project and region (docs/emulator.md says where they
# come from); override with the environment variables or the constructor.
READS_PER_MINUTE = 1000
WRITES_PER_MINUTE = 60
READS_ENV = "RECONCILE_READS_PER_MINUTE"
WRITES_ENV = "RECONCILE_WRITES_PER_MINUTE"

RECONCILING_POLL_SECONDS = 0.5
TRANSIENT = (gexc.ServiceUnavailable, gexc.DeadlineExceeded, gexc.RetryError)
READ_RETRY_SECONDS = 10.0
"""A read failing with a transient or quota error is retried for at least this long (and at
least `attempts` times): the deadline of the retry policy Google's Cloud Run client ships for
its reads (GetService, ListServices, ListRevisions: UNAVAILABLE retried for 10 s), so an outage
that client would ride out does not fail a run. Writes keep their count of attempts alone."""
LIST_PAGE_SIZE = 1000
"""Page size asked of list calls (the emulator's maximum; Google may return fewer)."""
FRESH_READ_SECONDS = 60.0
"""A write sent on the etag of this backend's own read of the service at most this old skips
the read before it: Cloud Run refuses it if the service changed since (see `set_traffic`)."""

QUOTA = (gexc.ResourceExhausted, gexc.TooManyRequests)
_REVISION = run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION
_LATEST = run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST
_FAILED = run_v2.Condition.State.CONDITION_FAILED
_TERMINAL = (run_v2.Condition.State.CONDITION_SUCCEEDED, _FAILED)


@dataclass(frozen=True)
class _Read:
    """This backend's read of a service: when (its clock), etag, generation, annotations."""

    at: float
    etag: str
    generation: int
    annotations: dict[str, str]


class TokenBucket:
    """`per_minute` calls a minute, in bursts of at most that many (0: unlimited)."""

    def __init__(
        self,
        per_minute: int,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.per_minute = per_minute
        self._clock = clock
        self._sleep = sleep
        self._tokens = float(per_minute)
        self._at = clock()
        self._lock = threading.Lock()
        self.waited = 0.0
        """Seconds spent waiting for tokens (for benchmarks and tests)."""

    def acquire(self) -> None:
        """Take one token, sleeping until one is there."""
        if self.per_minute <= 0:
            return
        while True:
            with self._lock:
                now = self._clock()
                rate = self.per_minute / 60.0
                self._tokens = min(self.per_minute, self._tokens + (now - self._at) * rate)
                self._at = now
                if self._tokens >= 1.0:
                    self._tokens -= 1.0
                    return
                pause = (1.0 - self._tokens) / rate
                self.waited += pause
            self._sleep(pause)


class _Refused(Exception):
    """UpdateService itself answered ABORTED or FAILED_PRECONDITION (an etag mismatch, or not:
    the caller reads the service to tell)."""

    def __init__(self, error: gexc.GoogleAPICallError) -> None:
        super().__init__(error.message)
        self.error = error


class _Failed(Exception):
    """The write's operation finished with an error."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _env_quota(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BackendError(
            f"${name}: expected a whole number of calls per minute, got {raw!r}"
        ) from None
    if value < 0:
        raise BackendError(f"${name}: must not be negative, got {value}")
    return value


class CloudRunBackend:
    """Read and write Cloud Run traffic through `ServicesClient` and `RevisionsClient`."""

    def __init__(
        self,
        services: Any = None,
        revisions: Any = None,
        *,
        attempts: int = 6,
        max_wait: float = 2.0,
        quota_wait: float = 30.0,
        call_timeout: float = 30.0,
        read_deadline: float = READ_RETRY_SECONDS,
        operation_timeout: float = 300.0,
        page_size: int = LIST_PAGE_SIZE,
        reads_per_minute: int | None = None,
        writes_per_minute: int | None = None,
        pace_clock: Callable[[], float] = time.monotonic,
        pace_sleep: Callable[[float], None] = time.sleep,
        fresh_for: float = FRESH_READ_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if services is None or revisions is None:
            from reconciler import clients

            services = services or clients.services_client()
            revisions = revisions or clients.revisions_client()
        self._services = services
        self._revisions = revisions
        self._attempts = attempts
        self._max_wait = max_wait
        self._quota_wait = quota_wait
        self._call_timeout = call_timeout
        self._read_deadline = read_deadline
        self._operation_timeout = operation_timeout
        self._page_size = page_size
        self._quotas: dict[Kind, int] = {
            "read": _env_quota(READS_ENV, READS_PER_MINUTE)
            if reads_per_minute is None
            else reads_per_minute,
            "write": _env_quota(WRITES_ENV, WRITES_PER_MINUTE)
            if writes_per_minute is None
            else writes_per_minute,
        }
        self._buckets: dict[tuple[Kind, str, str], TokenBucket] = {}
        # The pacing's time: the wall clock, or a benchmark's virtual one (emulator time).
        self._pace = (pace_clock, pace_sleep)
        self._lock = threading.Lock()
        self._fresh_for = fresh_for
        self._clock = clock
        self._reads: dict[str, _Read] = {}
        """Service key -> this backend's last read of it."""
        self.calls = 0
        """API calls made (reads and writes), for benchmarks and tests."""
        self.retries = 0
        """Calls made again after a transient or quota error, for benchmarks and tests."""

    def bucket(self, kind: Kind, ref: ServiceRef) -> TokenBucket:
        """The token bucket of `kind` calls in the service's project and region."""
        key = (kind, ref.project, ref.region)
        with self._lock:
            if key not in self._buckets:
                self._buckets[key] = TokenBucket(self._quotas[kind], *self._pace)
            return self._buckets[key]

    # --- edges --------------------------------------------------------------------------------
    def _wait(self, state: RetryCallState) -> float:
        # Quotas refill over a minute: back off longer than for a transient blip.
        error = state.outcome.exception() if state.outcome is not None else None
        if isinstance(error, QUOTA):
            return float(wait_exponential(multiplier=0.5, max=self._quota_wait)(state))
        return float(wait_exponential(multiplier=0.1, max=self._max_wait)(state))

    def _call(self, what: str, fn: Callable[[], T], kind: Kind, ref: ServiceRef) -> T:
        """Run one API call, paced, with bounded retries on transient and quota errors only."""
        clock = self._pace[0]
        started = clock()
        enough = stop_after_attempt(self._attempts)

        def stop(state: RetryCallState) -> bool:
            if not enough(state):
                return False
            return kind != "read" or clock() - started >= self._read_deadline

        retrying = Retrying(
            retry=retry_if_exception_type((*TRANSIENT, *QUOTA)),
            stop=stop,
            wait=self._wait,
            sleep=self._pace[1],
            reraise=True,
        )
        bucket = self.bucket(kind, ref)
        tried = 0
        try:
            for attempt in retrying:
                with attempt:
                    bucket.acquire()
                    tried = attempt.retry_state.attempt_number
                    again = tried > 1
                    with self._lock:
                        self.calls += 1
                        self.retries += again
                    if again:
                        log.info(
                            "retrying %s (attempt %d)", what, attempt.retry_state.attempt_number
                        )
                    return fn()
        except gexc.NotFound as exc:
            raise NotFound(f"{what}: not found ({exc.message})") from None
        except gexc.AlreadyExists as exc:
            raise BackendError(
                f"{what}: {exc.message} (Cloud Run refuses a write that names an existing "
                "revision with another template; this reconciler never sends the template, so "
                "another writer did: re-read and retry)"
            ) from None
        except gexc.PermissionDenied as exc:
            raise BackendError(f"{what}: permission denied ({exc.message})") from None
        except gexc.Unauthenticated as exc:
            raise BackendError(
                f"{what}: not authenticated ({exc.message}); run "
                "`gcloud auth application-default login` or set CLOUD_RUN_EMULATOR_HOST"
            ) from None
        except QUOTA as exc:
            raise BackendError(
                f"{what}: Cloud Run quota still exhausted after {tried} attempts "
                f"({_msg(exc)}); lower the pace ({READS_ENV}, {WRITES_ENV}) or ask for more quota"
            ) from None
        except TRANSIENT as exc:
            raise BackendError(
                f"{what}: still failing after {tried} attempts over {clock() - started:.0f}s "
                f"({_msg(exc)})"
            ) from None
        except gexc.GoogleAPICallError as exc:
            raise BackendError(f"{what}: {type(exc).__name__}: {exc.message}") from None
        except concurrent.futures.TimeoutError:
            # The operation did not finish in time; the write may still land: callers re-read.
            raise BackendError(
                f"{what}: the operation did not finish within {self._operation_timeout:g}s"
            ) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _get_raw(self, ref: ServiceRef) -> Any:
        return self._call(
            f"get {ref.name}",
            lambda: self._services.get_service(
                name=ref.name, retry=None, timeout=self._call_timeout
            ),
            "read",
            ref,
        )

    def _revision_names(self, ref: ServiceRef) -> frozenset[str]:
        def list_all() -> list[str]:
            pager = self._revisions.list_revisions(
                parent=ref.name, retry=None, timeout=self._call_timeout
            )
            return [r.name.rsplit("/", 1)[-1] for r in pager]

        return frozenset(self._call(f"list revisions of {ref.name}", list_all, "read", ref))

    def list_services(self, project: str, region: str) -> dict[str, LiveService]:
        """Every service of one project and region, by service id, from list calls only.

        One ListServices and one ListRevisions (parent `.../services/-`, across services)
        pager, each at the largest page size: a region of 1,000 services costs a handful of
        calls instead of two per service. The services carry everything a GetService gives
        (traffic, traffic_statuses, etag, generations, tag URIs), so no per-service read
        follows.
        """
        parent = f"projects/{project}/locations/{region}"
        region_ref = ServiceRef(project, region, "-")  # the region's read quota and bucket
        bucket = self.bucket("read", region_ref)

        def services() -> list[Any]:
            pager = self._services.list_services(
                request=run_v2.ListServicesRequest(parent=parent, page_size=self._page_size),
                retry=None,
                timeout=self._call_timeout,
            )
            return list(self._pages(pager, "services", bucket))

        def revisions() -> list[Any]:
            pager = self._revisions.list_revisions(
                request=run_v2.ListRevisionsRequest(
                    parent=f"{parent}/services/-", page_size=self._page_size
                ),
                retry=None,
                timeout=self._call_timeout,
            )
            return list(self._pages(pager, "revisions", bucket))

        # Each page is its own call (counted and retried as one): a transient error on page
        # 7 retries the whole listing, which is bounded and rare, and keeps the pager simple.
        # The two pagers are independent: run them side by side (half the wall time).
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            later = pool.submit(
                self._call, f"list revisions in {parent}", revisions, "read", region_ref
            )
            raw_services = self._call(f"list services in {parent}", services, "read", region_ref)
            raw_revisions = later.result()
        names: dict[str, set[str]] = {}
        for rev in raw_revisions:
            # `projects/P/locations/L/services/S/revisions/R`: the name says whose it is.
            head, _, rev_id = rev.name.rpartition("/revisions/")
            names.setdefault(head.rsplit("/", 1)[-1], set()).add(rev_id)
        out: dict[str, LiveService] = {}
        for raw in raw_services:
            service_id = raw.name.rsplit("/", 1)[-1]
            ref = ServiceRef(project, region, service_id)
            out[service_id] = self._seen(to_live(ref, raw, frozenset(names.get(service_id, ()))))
        return out

    def _seen(self, live: LiveService) -> LiveService:
        """Remember when the service was read, with its etag, generation and annotations (a
        write soon after can be sent on them, `set_traffic`)."""
        read = _Read(self._clock(), live.etag, live.generation, dict(live.annotations))
        with self._lock:
            self._reads[live.ref.key] = read
        return live

    def _fresh(self, ref: ServiceRef, etag: str) -> _Read | None:
        """This backend's read of `ref` with `etag`, if it is recent."""
        with self._lock:
            seen = self._reads.get(ref.key)
        if seen is None or not etag or seen.etag != etag:
            return None
        return seen if self._clock() - seen.at <= self._fresh_for else None

    def _pages(self, pager: Any, field: str, bucket: TokenBucket) -> Any:
        """Walk a pager page by page; each page after the first is a call of its own, paced
        by the region's read bucket and counted (the first is paced and counted by `_call`)."""
        for page in pager.pages:
            yield from getattr(page, field)
            if not page.next_page_token:
                return
            bucket.acquire()  # before the pager fetches the next page
            with self._lock:
                self.calls += 1

    # --- TrafficBackend --------------------------------------------------------------------------
    def get_service(self, ref: ServiceRef) -> LiveService:
        """A fresh read of the service and the names of its revisions."""
        raw = self._get_raw(ref)
        return self._seen(to_live(ref, raw, self._revision_names(ref)))

    def set_traffic(
        self,
        ref: ServiceRef,
        split: TrafficSplit,
        etag: str,
        annotations: Mapping[str, str] | None = None,
    ) -> LiveService:
        """Write `split` if the service still has `etag`, wait, and verify it serves.

        `annotations` are merged into the service's annotations in the same write, so the
        service itself remembers what the reconciler last did (crash recovery).
        Raises `Conflict` (etag mismatch), `OperationFailed` (accepted, not serving) or
        `BackendError`; a write reported failed that in fact landed is returned as landed.

        The write carries an etag read moments before: when `etag` is the one this backend
        read the service with at most `fresh_for` seconds ago (a run's list read), the write
        goes out on it and Cloud Run's etag check refuses it if the service changed since
        (the v2 API follows Google's AIPs, and AIP-154 refuses a stale etag; the emulator
        enforces it); otherwise the service is read first and an etag that moved is a
        conflict without a write. What serves after the write (`traffic_statuses`) comes from
        the completed operation's response, the service, when it has settled on the write
        (`settled`), else from a GetService; its revisions are not listed again (a traffic
        write makes none), so the returned `revisions` is empty.
        """
        if split.total() != 100:
            raise BackendError(f"{ref.name}: refusing a split that sums to {split.total()}%")
        read = self._fresh(ref, etag)
        if read is None:
            raw = self._get_raw(ref)  # no write without a fresh read
            if etag and raw.etag != etag:
                raise Conflict(f"{ref.name}: etag {raw.etag} != {etag} (changed since it was read)")
            read = _Read(self._clock(), raw.etag, int(raw.generation), dict(raw.annotations))
        sent_etag, kept = read.etag, read.annotations
        paths = ["traffic"]
        body = run_v2.Service(
            name=ref.name,
            etag=sent_etag,
            traffic=[
                run_v2.TrafficTarget(
                    type_=_REVISION, revision=t.revision, percent=t.percent, tag=t.tag
                )
                for t in split.targets
            ],
        )
        if annotations:
            # The mask replaces the whole map: send the service's own annotations with ours.
            body.annotations = {**kept, **annotations}
            paths.append("annotations")
        request = run_v2.UpdateServiceRequest(
            service=body, update_mask=field_mask_pb2.FieldMask(paths=paths)
        )

        def update() -> Any:
            try:
                op = self._services.update_service(
                    request=request, retry=None, timeout=self._call_timeout
                )
            except (gexc.Aborted, gexc.FailedPrecondition) as exc:
                raise _Refused(exc) from None
            try:
                return op.result(timeout=self._operation_timeout)
            except gexc.GoogleAPICallError as exc:
                done = op.operation
                if done.done and done.HasField("error"):
                    raise _Failed(type(exc).__name__, exc.message or "") from None
                raise  # polling the operation failed, not the operation: retried or reported

        try:
            done = self._call(f"update traffic of {ref.name}", update, "write", ref)
        except _Failed as failed:
            after = self.get_service(ref)
            reason = after.failure or failed.message
            raise OperationFailed(
                f"{ref.name}: the traffic change was accepted but its operation failed "
                f"({failed.code}): {reason}; still serving {after.traffic.describe()}"
            ) from None
        except _Refused as refused:
            # ABORTED and FAILED_PRECONDITION mean an etag mismatch only if the etag moved.
            mine = self._landed(ref, split, annotations, conflict=True)
            if mine is not None:
                return mine
            current = self._get_raw(ref)
            if current.etag != sent_etag:
                raise Conflict(
                    f"{ref.name}: changed since it was read ({refused.error.message})"
                ) from None
            raise BackendError(
                f"{ref.name}: update refused: {type(refused.error).__name__}: "
                f"{refused.error.message}"
            ) from None
        except BackendError:
            # The write may have landed before the error (an answer lost, then a retry that
            # met our own new etag): read back before reporting it failed.
            landed = self._landed(ref, split, annotations, conflict=False)
            if landed is not None:
                return landed
            raise
        # The completed operation's response is the service (AIP-151); once it has settled on
        # this write it says what serves, and reading the service again would say the same.
        after = done if settled(done, read.generation) else self._get_raw(ref)
        live = self._seen(to_live(ref, after, frozenset()))
        if not (live.traffic.same_routing(split) and live.requested.same_routing(split)):
            raise BackendError(
                f"{ref.name}: traffic not live after update: wanted {split.describe()}, "
                f"serving {live.traffic.describe()}"
                + (f" ({live.failure})" if live.failure else "")
            )
        return live

    def _landed(
        self,
        ref: ServiceRef,
        split: TrafficSplit,
        annotations: Mapping[str, str] | None,
        *,
        conflict: bool,
    ) -> LiveService | None:
        """The service if our write is serving after all, else None.

        The split alone does not prove the write was ours - a concurrent writer may have set
        the same split - so with annotations (the reconciler's stamp is unique per write) it
        must also carry them; without, a conflict is never ours.
        """
        deadline = time.monotonic() + self._operation_timeout
        while True:
            try:
                after = self.get_service(ref)
            except BackendError:
                return None  # the write's own error says more than the re-read's
            if annotations:
                ours = all(after.annotations.get(k) == v for k, v in annotations.items())
            else:
                ours = not conflict
            asked = after.requested.same_routing(split)
            # Our write was accepted and Cloud Run is still rolling it out: wait for the
            # outcome rather than report a write that may yet serve as failed.
            if not (ours and asked and after.reconciling) or time.monotonic() >= deadline:
                break
            time.sleep(RECONCILING_POLL_SECONDS)
        landed = asked and after.traffic.same_routing(split)
        if landed and ours:
            log.info("%s: the write was reported failed but the split serves", ref.name)
            return after
        return None


def settled(raw: Any, generation: int) -> bool:
    """Whether a `run_v2.Service` (a write's operation response) shows the serving state after
    a write made on `generation`: reconciliation is over (`reconciling` false, a
    `terminal_condition` that is no longer in progress), it has observed a generation at least
    as new as the write's, and it lists what serves (`traffic_statuses`). service.proto's
    comment on `reconciling`: only then do `traffic_statuses` and `terminal_condition` match
    the serving state. Anything less (a response without those fields, a failed or unfinished
    reconciliation) is no evidence, and the service is read again."""
    pb = run_v2.Service.pb(raw)
    return (
        not pb.reconciling
        and pb.HasField("terminal_condition")
        and pb.terminal_condition.state in _TERMINAL
        and pb.generation >= generation
        and pb.observed_generation >= pb.generation
        and len(pb.traffic_statuses) > 0
    )


def _msg(exc: Exception) -> str:
    return getattr(exc, "message", None) or str(exc)


def _targets(items: Any, with_uri: bool = False) -> tuple[TrafficSplit, dict[str, str]]:
    targets = []
    uris: dict[str, str] = {}
    for t in items:
        revision = t.revision if t.type_ != _LATEST else LATEST
        targets.append(Target(revision or LATEST, int(t.percent), t.tag))
        if with_uri and t.tag and t.uri:
            uris[t.tag] = t.uri
    return TrafficSplit.of(targets), uris


def to_live(ref: ServiceRef, raw: Any, revisions: frozenset[str]) -> LiveService:
    """Convert a `run_v2.Service` into the LiveService value: `traffic` is what serves
    (`traffic_statuses`), `requested` what was asked for (`traffic`)."""
    # The plain protobuf message under the proto-plus wrapper: reading its fields directly
    # skips proto-plus's per-attribute marshalling, most of a read's cost in a large plan.
    pb = run_v2.Service.pb(raw)
    requested, _ = _targets(pb.traffic)
    serving, uris = _targets(pb.traffic_statuses, with_uri=True)
    failure = None
    terminal = pb.terminal_condition
    if terminal.state == _FAILED:
        reason = run_v2.Condition.CommonReason(terminal.reason).name if terminal.reason else ""
        failure = terminal.message or reason or "terminal condition failed"
    return LiveService(
        ref=ref,
        traffic=serving,
        statuses=serving,
        requested=requested,
        failure=failure,
        etag=pb.etag,
        generation=int(pb.generation),
        observed_generation=int(pb.observed_generation),
        uri=pb.uri,
        tag_uris=uris,
        revisions=revisions,
        latest_ready_revision=pb.latest_ready_revision.rsplit("/", 1)[-1],
        reconciling=bool(pb.reconciling),
        annotations=dict(pb.annotations),
    )
