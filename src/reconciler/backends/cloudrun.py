"""TrafficBackend on the official `google-cloud-run` client (Cloud Run Admin API v2).

Writes send the Service back with only `traffic` changed and the etag it was read with, wait
for the long-running operation, then read `traffic_statuses` back to verify the split is live.
Transient errors are retried (bounded); a conflict is reported, never overwritten.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from google.api_core import exceptions as gexc
from google.cloud import run_v2
from google.protobuf import field_mask_pb2
from tenacity import (
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from reconciler.backends import BackendError, Conflict, NotFound
from reconciler.model import LiveService, ServiceRef, Target, TrafficSplit

log = logging.getLogger(__name__)

T = TypeVar("T")

LATEST = "LATEST"
"""Stands for a `TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST` target, which names no revision."""

TRANSIENT = (gexc.ServiceUnavailable, gexc.DeadlineExceeded, gexc.RetryError)
LIST_PAGE_SIZE = 1000
"""Page size asked of list calls (the emulator's maximum; Google may return fewer)."""

_REVISION = run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION
_LATEST = run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST


class CloudRunBackend:
    """Read and write Cloud Run traffic through `ServicesClient` and `RevisionsClient`."""

    def __init__(
        self,
        services: Any = None,
        revisions: Any = None,
        *,
        attempts: int = 6,
        max_wait: float = 2.0,
        call_timeout: float = 30.0,
        operation_timeout: float = 300.0,
        page_size: int = LIST_PAGE_SIZE,
    ) -> None:
        if services is None or revisions is None:
            from reconciler import clients

            services = services or clients.services_client()
            revisions = revisions or clients.revisions_client()
        self._services = services
        self._revisions = revisions
        self._attempts = attempts
        self._max_wait = max_wait
        self._call_timeout = call_timeout
        self._operation_timeout = operation_timeout
        self._page_size = page_size
        self._lock = threading.Lock()
        self.calls = 0
        """API calls made (reads and writes), for benchmarks and tests."""

    # --- edges --------------------------------------------------------------------------------
    def _call(self, what: str, fn: Callable[[], T]) -> T:
        """Run one API call with bounded retries on transient errors only."""
        retrying = Retrying(
            retry=retry_if_exception_type(TRANSIENT),
            stop=stop_after_attempt(self._attempts),
            wait=wait_exponential(multiplier=0.1, max=self._max_wait),
            reraise=True,
        )
        try:
            for attempt in retrying:
                with attempt:
                    with self._lock:
                        self.calls += 1
                    if attempt.retry_state.attempt_number > 1:
                        log.info(
                            "retrying %s (attempt %d)", what, attempt.retry_state.attempt_number
                        )
                    return fn()
        except gexc.NotFound as exc:
            raise NotFound(f"{what}: not found ({exc.message})") from None
        except (gexc.Aborted, gexc.FailedPrecondition) as exc:
            raise Conflict(f"{what}: changed since it was read ({exc.message})") from None
        except gexc.PermissionDenied as exc:
            raise BackendError(f"{what}: permission denied ({exc.message})") from None
        except gexc.Unauthenticated as exc:
            raise BackendError(
                f"{what}: not authenticated ({exc.message}); run "
                "`gcloud auth application-default login` or set CLOUD_RUN_EMULATOR_HOST"
            ) from None
        except TRANSIENT as exc:
            raise BackendError(
                f"{what}: still failing after {self._attempts} attempts ({_msg(exc)})"
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
        )

    def _revision_names(self, ref: ServiceRef) -> frozenset[str]:
        def list_all() -> list[str]:
            pager = self._revisions.list_revisions(
                parent=ref.name, retry=None, timeout=self._call_timeout
            )
            return [r.name.rsplit("/", 1)[-1] for r in pager]

        return frozenset(self._call(f"list revisions of {ref.name}", list_all))

    def list_services(self, project: str, region: str) -> dict[str, LiveService]:
        """Every service of one project and region, by service id, from list calls only.

        One ListServices and one ListRevisions (parent `.../services/-`, across services)
        pager, each at the largest page size: a region of 1,000 services costs a handful of
        calls instead of two per service. The services carry everything a GetService gives
        (traffic, traffic_statuses, etag, generations, tag URIs), so no per-service read
        follows.
        """
        parent = f"projects/{project}/locations/{region}"

        def services() -> list[Any]:
            pager = self._services.list_services(
                request=run_v2.ListServicesRequest(parent=parent, page_size=self._page_size),
                retry=None,
                timeout=self._call_timeout,
            )
            return list(self._pages(pager, "services"))

        def revisions() -> list[Any]:
            pager = self._revisions.list_revisions(
                request=run_v2.ListRevisionsRequest(
                    parent=f"{parent}/services/-", page_size=self._page_size
                ),
                retry=None,
                timeout=self._call_timeout,
            )
            return list(self._pages(pager, "revisions"))

        # Each page is its own call (counted and retried as one): a transient error on page
        # 7 retries the whole listing, which is bounded and rare, and keeps the pager simple.
        # The two pagers are independent: run them side by side (half the wall time).
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            later = pool.submit(self._call, f"list revisions in {parent}", revisions)
            raw_services = self._call(f"list services in {parent}", services)
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
            out[service_id] = to_live(ref, raw, frozenset(names.get(service_id, ())))
        return out

    def _pages(self, pager: Any, field: str) -> Any:
        """Walk a pager page by page, counting each page after the first as a call."""
        for n, page in enumerate(pager.pages):
            if n:
                with self._lock:
                    self.calls += 1
            yield from getattr(page, field)

    # --- TrafficBackend --------------------------------------------------------------------------
    def get_service(self, ref: ServiceRef) -> LiveService:
        """A fresh read of the service and the names of its revisions."""
        raw = self._get_raw(ref)
        return to_live(ref, raw, self._revision_names(ref))

    def set_traffic(
        self,
        ref: ServiceRef,
        split: TrafficSplit,
        etag: str,
        annotations: Mapping[str, str] | None = None,
    ) -> LiveService:
        """Write `split` if the service still has `etag`, wait, and verify it is live.

        `annotations` are merged into the service's annotations in the same write, so the
        service itself remembers what the reconciler last did (crash recovery).
        """
        if split.total() != 100:
            raise BackendError(f"{ref.name}: refusing a split that sums to {split.total()}%")
        raw = self._get_raw(ref)  # no write without a fresh read
        if etag and raw.etag != etag:
            raise Conflict(f"{ref.name}: etag {raw.etag} != {etag} (changed since it was read)")
        paths = ["traffic"]
        if annotations:
            for key, value in annotations.items():
                raw.annotations[key] = value
            paths.append("annotations")
        raw.traffic = [
            run_v2.TrafficTarget(type_=_REVISION, revision=t.revision, percent=t.percent, tag=t.tag)
            for t in split.targets
        ]

        def update() -> Any:
            op = self._services.update_service(
                service=raw,
                update_mask=field_mask_pb2.FieldMask(paths=paths),
                retry=None,
                timeout=self._call_timeout,
            )
            return op.result(timeout=self._operation_timeout)

        try:
            self._call(f"update traffic of {ref.name}", update)
        except BackendError as exc:
            # The write may have landed before the error (an answer lost, then a retry that
            # met our own new etag): re-read before judging. The split alone does not prove
            # the write was ours - a concurrent writer may have set the same split - so with
            # annotations (the reconciler's stamp is unique per write) it must also carry
            # them; without, a conflict is never ours. Not ours: the caller re-reads.
            try:
                after = self.get_service(ref)
            except BackendError:
                raise exc from None  # the write's error says more than the re-read's
            landed = after.statuses.same_routing(split) and after.traffic.same_routing(split)
            if annotations:
                ours = all(after.annotations.get(k) == v for k, v in annotations.items())
            else:
                ours = not isinstance(exc, Conflict)
            if landed and ours:
                log.info("%s: write reported %s but the split is live", ref.name, exc)
                return after
            raise
        live = self.get_service(ref)
        if not (live.traffic.same_routing(split) and live.statuses.same_routing(split)):
            raise BackendError(
                f"{ref.name}: traffic not live after update: wanted {split.describe()}, "
                f"serving {live.statuses.describe()}"
            )
        return live


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
    """Convert a `run_v2.Service` into the LiveService value."""
    # The plain protobuf message under the proto-plus wrapper: reading its fields directly
    # skips proto-plus's per-attribute marshalling, most of a read's cost in a large plan.
    pb = run_v2.Service.pb(raw)
    traffic, _ = _targets(pb.traffic)
    statuses, uris = _targets(pb.traffic_statuses, with_uri=True)
    return LiveService(
        ref=ref,
        traffic=traffic,
        statuses=statuses,
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
