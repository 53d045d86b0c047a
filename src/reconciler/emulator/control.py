"""gRPC control plane: Cloud Run Admin v2 Services/Revisions, long-running Operations and
Monitoring v3 MetricService, served with grpcio generic handlers.

Messages are (de)serialised with the proto-plus classes of the official client packages, so
what goes over the wire is exactly what `google-cloud-run` and `google-cloud-monitoring`
send and expect.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Sequence
from concurrent import futures
from datetime import UTC, datetime
from typing import Any, TypeVar

import grpc
from google.cloud import monitoring_v3, run_v2
from google.longrunning import operations_pb2
from google.protobuf import any_pb2, empty_pb2, timestamp_pb2
from google.rpc import status_pb2

from reconciler.emulator import monitoring
from reconciler.emulator.world import ApiError, Operation, Revision, Route, Service, World

UrlFor = Callable[[Service, str], str]
"""(service, tag) -> the data-plane URL of the service ('' tag) or of a tag."""

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
T = TypeVar("T")

_ALLOCATION = run_v2.TrafficTargetAllocationType
_SUCCEEDED = run_v2.Condition.State.CONDITION_SUCCEEDED
_RECONCILING = run_v2.Condition.State.CONDITION_RECONCILING
_FAILED = run_v2.Condition.State.CONDITION_FAILED
CLOCK_SERVICE = "reconciler.emulator.v1.Clock"
"""Not a Google API: the emulator's virtual clock, read by the reconciler (`Now`)."""
# How long WaitOperation blocks at most when the request names no timeout.
WAIT_OPERATION_SECONDS = 10.0


def timestamp(epoch: float) -> datetime:
    """Epoch seconds -> an aware datetime (what proto-plus takes for Timestamp fields)."""
    return datetime.fromtimestamp(epoch, tz=UTC)


def page(items: Sequence[T], page_size: int, page_token: str) -> tuple[Sequence[T], str]:
    """One page of `items` and the token of the next page ('' on the last page)."""
    start = 0
    if page_token:
        try:
            start = int(base64.urlsafe_b64decode(page_token.encode()).decode().split(":")[1])
        except (ValueError, IndexError, UnicodeDecodeError):
            raise ApiError("INVALID_ARGUMENT", f"invalid page_token {page_token!r}") from None
        if not 0 <= start <= len(items):
            raise ApiError("INVALID_ARGUMENT", f"page_token {page_token!r} is out of range")
    if page_size < 0:
        raise ApiError("INVALID_ARGUMENT", "page_size must not be negative")
    size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
    end = start + size
    token = base64.urlsafe_b64encode(f"offset:{end}".encode()).decode() if end < len(items) else ""
    return items[start:end], token


# --- rendering ---------------------------------------------------------------------------
def default_template(svc: Service) -> run_v2.RevisionTemplate:
    """The template of a service created from a scenario (before any template change)."""
    image = f"{svc.region}-docker.pkg.dev/{svc.project}/{svc.name}/{svc.name}:latest"
    return run_v2.RevisionTemplate(
        containers=[run_v2.Container(image=image)], max_instance_request_concurrency=80
    )


def _template(svc: Service) -> run_v2.RevisionTemplate:
    if svc.template is None:
        tpl = default_template(svc)
    else:
        tpl = run_v2.RevisionTemplate.deserialize(svc.template)
    tpl.revision = svc.template_revision
    return tpl


def _conditions(svc: Service) -> tuple[run_v2.Condition, list[run_v2.Condition]]:
    when = timestamp(svc.updated)
    if svc.failure and not svc.reconciling:
        failed = {
            "state": _FAILED,
            "message": svc.failure,
            "reason": run_v2.Condition.CommonReason.REVISION_FAILED,
            "last_transition_time": when,
        }
        return run_v2.Condition(type_="Ready", **failed), [
            run_v2.Condition(type_="RoutesReady", **failed)
        ]
    state = _RECONCILING if svc.reconciling else _SUCCEEDED
    ready = run_v2.Condition(type_="Ready", state=state, last_transition_time=when)
    others = [
        run_v2.Condition(type_=t, state=state, last_transition_time=when)
        for t in ("ConfigurationsReady", "RoutesReady")
    ]
    return ready, others


def render_service(
    svc: Service, url_for: UrlFor, ready: Callable[[str], bool] = lambda _r: True
) -> run_v2.Service:
    """A `google.cloud.run.v2.Service` for one emulated service (`ready`: whether a revision,
    by short name, can serve)."""
    terminal, conditions = _conditions(svc)
    latest = svc.revision_key(svc.latest_revision)
    good = [r for r in svc.revisions if ready(r)]
    latest_ready = svc.revision_key(good[-1]) if good else ""
    uri = url_for(svc, "")
    return run_v2.Service(
        name=svc.key,
        uid=svc.uid,
        generation=svc.generation,
        observed_generation=svc.observed_generation,
        labels=svc.labels,
        annotations=svc.annotations,
        description=svc.description,
        create_time=timestamp(svc.created),
        update_time=timestamp(svc.updated),
        creator="deployer@emulator.invalid",
        last_modifier="deployer@emulator.invalid",
        ingress=run_v2.IngressTraffic.INGRESS_TRAFFIC_ALL,
        launch_stage="GA",
        template=_template(svc),
        traffic=[_target(r) for r in svc.traffic],
        traffic_statuses=[
            run_v2.TrafficTargetStatus(
                type_=_ALLOCATION.TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST
                if r.latest
                else _ALLOCATION.TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION,
                revision=r.revision,
                percent=r.percent,
                tag=r.tag,
                uri=url_for(svc, r.tag) if r.tag else "",
            )
            for r in svc.statuses
        ],
        uri=uri,
        urls=[uri],
        latest_ready_revision=latest_ready,
        latest_created_revision=latest,
        terminal_condition=terminal,
        conditions=conditions,
        reconciling=svc.reconciling,
        etag=svc.etag,
    )


def _target(r: Route) -> run_v2.TrafficTarget:
    if r.latest:
        return run_v2.TrafficTarget(
            type_=_ALLOCATION.TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST, percent=r.percent, tag=r.tag
        )
    return run_v2.TrafficTarget(
        type_=_ALLOCATION.TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION,
        revision=r.revision,
        percent=r.percent,
        tag=r.tag,
    )


def render_revision(rev: Revision, svc: Service) -> run_v2.Revision:
    """A `google.cloud.run.v2.Revision`."""
    when = timestamp(rev.created)
    if rev.behavior.ready:
        ready = run_v2.Condition(type_="Ready", state=_SUCCEEDED, last_transition_time=when)
    else:
        ready = run_v2.Condition(
            type_="Ready",
            state=_FAILED,
            message="The user-provided container failed to start and listen on the port "
            "defined by the PORT environment variable.",
            reason=run_v2.Condition.CommonReason.CONTAINER_MISSING,
            last_transition_time=when,
        )
    return run_v2.Revision(
        name=svc.revision_key(rev.name),
        uid=f"{svc.uid}-{rev.generation}",
        generation=1,
        service=svc.name,
        create_time=when,
        update_time=when,
        launch_stage="GA",
        containers=_template(svc).containers,
        max_instance_request_concurrency=80,
        conditions=[ready],
        observed_generation=1,
        reconciling=False,
        etag=f"{svc.uid}-{rev.generation}",
    )


def render_operation(
    op: Operation, svc: Service, url_for: UrlFor, ready: Callable[[str], bool] = lambda _r: True
) -> operations_pb2.Operation:
    """A `google.longrunning.Operation` whose metadata is the service, as Cloud Run's
    UpdateService returns; once done, the service as `response` (AIP-151: an Update's
    response is the resource; `svc` is then the service as the operation left it), or the
    failure as `error`."""
    service = run_v2.Service.pb(render_service(svc, url_for, ready))
    packed = any_pb2.Any()
    packed.Pack(service)
    out = operations_pb2.Operation(name=op.name, done=op.done, metadata=packed)
    if op.done and op.error_code:
        code = grpc.StatusCode[op.error_code].value[0]
        out.error.CopyFrom(status_pb2.Status(code=code, message=op.error_message))
    elif op.done and op.status_in_response:
        out.response.CopyFrom(packed)
    elif op.done:
        # `lro.response: no-status`: a response that cannot tell the client what serves.
        bare = run_v2.Service.pb(run_v2.Service())
        bare.CopyFrom(service)
        for name in _SERVING_STATUS:
            bare.ClearField(name)
        out.response.Pack(bare)
    return out


_SERVING_STATUS = (
    "reconciling",
    "terminal_condition",
    "conditions",
    "observed_generation",
    "traffic_statuses",
)
"""The Service's fields that say what serves (service.proto, the comment on `reconciling`)."""


# --- request parsing ---------------------------------------------------------------------
def _routes(targets: Sequence[run_v2.TrafficTarget]) -> list[Route]:
    out = []
    for t in targets:
        latest = t.type_ == _ALLOCATION.TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST
        if t.type_ == _ALLOCATION.TRAFFIC_TARGET_ALLOCATION_TYPE_UNSPECIFIED and not t.revision:
            raise ApiError("INVALID_ARGUMENT", "traffic target without type or revision")
        out.append(Route(t.revision, t.percent, t.tag, latest))
    return out


class Control:
    """The gRPC handlers over one `World`."""

    def __init__(self, world: World, url_for: UrlFor) -> None:
        self.world = world
        self.url_for = url_for

    # Services
    def get_service(self, req: run_v2.GetServiceRequest) -> run_v2.Service:
        """Services/GetService."""
        svc = self.world.get_service(req.name)
        return render_service(svc, self.url_for, self.world.ready_of(svc))

    def list_services(self, req: run_v2.ListServicesRequest) -> run_v2.ListServicesResponse:
        """Services/ListServices (paged)."""
        items, token = page(self.world.list_services(req.parent), req.page_size, req.page_token)
        return run_v2.ListServicesResponse(
            services=[render_service(s, self.url_for, self.world.ready_of(s)) for s in items],
            next_page_token=token,
        )

    def update_service(self, req: run_v2.UpdateServiceRequest) -> operations_pb2.Operation:
        """Services/UpdateService: replaces the fields in `update_mask` (all without one)."""
        body = req.service
        paths = set(req.update_mask.paths) if req.update_mask else set()
        unknown = paths - {"traffic", "template", "labels", "annotations", "description"}
        if unknown:
            raise ApiError("INVALID_ARGUMENT", f"unsupported update_mask paths: {sorted(unknown)}")
        every = not paths
        current = self.world.get_service(body.name)
        template: bytes | None = None
        template_revision = ""
        pb = run_v2.Service.pb(body)
        if (every or "template" in paths) and pb.HasField("template"):
            wanted = run_v2.RevisionTemplate(body.template)
            template_revision = wanted.revision
            wanted.revision = ""
            have = _template(current)
            have.revision = ""
            if wanted != have:
                template = run_v2.RevisionTemplate.serialize(wanted)
        op = self.world.update_service(
            body.name,
            etag=body.etag,
            traffic=_routes(body.traffic) if every or "traffic" in paths else None,
            template=template,
            template_revision=template_revision,
            labels=dict(body.labels) if every or "labels" in paths else None,
            annotations=dict(body.annotations) if every or "annotations" in paths else None,
            description=body.description if every or "description" in paths else None,
            validate_only=req.validate_only,
        )
        return self._operation(op)

    def _operation(self, op: Operation) -> operations_pb2.Operation:
        svc = op.preview or op.result or self.world.get_service(op.service)
        return render_operation(op, svc, self.url_for, self.world.ready_of(svc))

    # Revisions
    def get_revision(self, req: run_v2.GetRevisionRequest) -> run_v2.Revision:
        """Revisions/GetRevision."""
        rev, svc = self.world.get_revision(req.name)
        return render_revision(rev, svc)

    def list_revisions(self, req: run_v2.ListRevisionsRequest) -> run_v2.ListRevisionsResponse:
        """Revisions/ListRevisions (paged, newest first)."""
        items, token = page(self.world.list_revisions(req.parent), req.page_size, req.page_token)
        return run_v2.ListRevisionsResponse(
            revisions=[render_revision(r, s) for r, s in items], next_page_token=token
        )

    # Operations
    def get_operation(self, req: operations_pb2.GetOperationRequest) -> operations_pb2.Operation:
        """Operations/GetOperation (each call is one poll)."""
        op, svc = self.world.get_operation(req.name)
        return render_operation(op, svc, self.url_for, self.world.ready_of(svc))

    def wait_operation(self, req: operations_pb2.WaitOperationRequest) -> operations_pb2.Operation:
        """Operations/WaitOperation: blocks until the operation is done or `timeout` passes
        (then answers it as it is, possibly not done, as AIP-151 allows)."""
        limit = req.timeout.ToTimedelta().total_seconds() if req.HasField("timeout") else 0.0
        deadline = time.monotonic() + (limit or WAIT_OPERATION_SECONDS)
        while True:
            op, svc = self.world.get_operation(req.name)
            if op.done or time.monotonic() >= deadline:
                return render_operation(op, svc, self.url_for, self.world.ready_of(svc))
            time.sleep(0.02)

    # Clock (emulator only)
    def now(self, _req: empty_pb2.Empty) -> timestamp_pb2.Timestamp:
        """Clock/Now: emulator time, which `reconcile emulator clock` moves."""
        out = timestamp_pb2.Timestamp()
        out.FromDatetime(timestamp(self.world.now()))
        return out

    # Monitoring
    def list_time_series(
        self, req: monitoring_v3.ListTimeSeriesRequest
    ) -> monitoring_v3.ListTimeSeriesResponse:
        """MetricService/ListTimeSeries."""
        return monitoring.list_time_series(self.world, req)

    def handlers(self) -> list[grpc.GenericRpcHandler]:
        """One generic handler per gRPC service."""
        return [
            grpc.method_handlers_generic_handler(
                "google.cloud.run.v2.Services",
                {
                    "GetService": self._unary(
                        "GetService",
                        self.get_service,
                        run_v2.GetServiceRequest.deserialize,
                        run_v2.Service.serialize,
                    ),
                    "ListServices": self._unary(
                        "ListServices",
                        self.list_services,
                        run_v2.ListServicesRequest.deserialize,
                        run_v2.ListServicesResponse.serialize,
                    ),
                    "UpdateService": self._unary(
                        "UpdateService",
                        self.update_service,
                        run_v2.UpdateServiceRequest.deserialize,
                        operations_pb2.Operation.SerializeToString,
                    ),
                },
            ),
            grpc.method_handlers_generic_handler(
                "google.cloud.run.v2.Revisions",
                {
                    "GetRevision": self._unary(
                        "GetRevision",
                        self.get_revision,
                        run_v2.GetRevisionRequest.deserialize,
                        run_v2.Revision.serialize,
                    ),
                    "ListRevisions": self._unary(
                        "ListRevisions",
                        self.list_revisions,
                        run_v2.ListRevisionsRequest.deserialize,
                        run_v2.ListRevisionsResponse.serialize,
                    ),
                },
            ),
            grpc.method_handlers_generic_handler(
                "google.longrunning.Operations",
                {
                    "GetOperation": self._unary(
                        "GetOperation",
                        self.get_operation,
                        operations_pb2.GetOperationRequest.FromString,
                        operations_pb2.Operation.SerializeToString,
                    ),
                    "WaitOperation": self._unary(
                        "WaitOperation",
                        self.wait_operation,
                        operations_pb2.WaitOperationRequest.FromString,
                        operations_pb2.Operation.SerializeToString,
                    ),
                },
            ),
            grpc.method_handlers_generic_handler(
                CLOCK_SERVICE,
                {
                    "Now": self._unary(
                        "Now",
                        self.now,
                        empty_pb2.Empty.FromString,
                        timestamp_pb2.Timestamp.SerializeToString,
                    ),
                },
            ),
            grpc.method_handlers_generic_handler(
                "google.monitoring.v3.MetricService",
                {
                    "ListTimeSeries": self._unary(
                        "ListTimeSeries",
                        self.list_time_series,
                        monitoring_v3.ListTimeSeriesRequest.deserialize,
                        monitoring_v3.ListTimeSeriesResponse.serialize,
                    ),
                },
            ),
        ]

    def _unary(
        self,
        method: str,
        fn: Callable[[Any], Any],
        deserialize: Callable[[bytes], Any],
        serialize: Callable[[Any], bytes],
    ) -> grpc.RpcMethodHandler:
        world = self.world

        def handle(request: Any, context: grpc.ServicerContext) -> Any:
            if method == "Now":  # the emulator's clock is no API: not counted, never faulty
                return fn(request)
            delay, fault = world.take_fault(method)
            if delay:
                time.sleep(delay)
            exhausted = world.take_quota(method, _resource(request))
            if exhausted:
                context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, exhausted)
            if fault is not None:
                context.abort(
                    grpc.StatusCode[fault.code],
                    fault.message or f"emulator: injected fault in {method}",
                )
            try:
                return fn(request)
            except ApiError as exc:
                context.abort(grpc.StatusCode[exc.code], exc.message)

        return grpc.unary_unary_rpc_method_handler(
            handle, request_deserializer=deserialize, response_serializer=serialize
        )


def _resource(request: Any) -> str:
    """The resource name a request is about (quotas are per its project and region)."""
    if isinstance(request, run_v2.UpdateServiceRequest):
        return str(request.service.name)
    for attr in ("name", "parent"):
        value = getattr(request, attr, "")
        if isinstance(value, str) and value:
            return value
    return ""


def serve(
    control: Control,
    port: int = 0,
    max_workers: int = 16,
    extra: Sequence[grpc.GenericRpcHandler] = (),
) -> tuple[grpc.Server, int]:
    """Start the gRPC server on 127.0.0.1:`port` (0: a free port) with the control plane's
    handlers and `extra` ones (Cloud Logging); returns it and its port."""
    # No SO_REUSEPORT: a second emulator on a busy port must fail, not share it.
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers), options=[("grpc.so_reuseport", 0)]
    )
    server.add_generic_rpc_handlers([*control.handlers(), *extra])
    try:
        bound = server.add_insecure_port(f"127.0.0.1:{port}")
    except RuntimeError:  # grpcio's way of saying the port is taken
        bound = 0
    if bound == 0:
        raise OSError(f"cannot bind the emulator gRPC port 127.0.0.1:{port}")
    server.start()
    return server, bound
