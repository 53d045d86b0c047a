"""The official Google clients, pointed at Google or at the emulator.

With `CLOUD_RUN_EMULATOR_HOST=host:port` set (the convention of Google's other emulators), every
client talks plain-text gRPC to that address, Cloud Run, Monitoring and Logging alike;
otherwise they use Application Default Credentials and Google's endpoints. Google modules are
imported inside the functions so the CLI starts fast.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from reconciler.errors import ReconcileError

if TYPE_CHECKING:
    import grpc
    from google.api_core import operations_v1
    from google.cloud import monitoring_v3, run_v2
    from google.cloud.logging_v2.services.logging_service_v2 import LoggingServiceV2Client

EMULATOR_HOST_ENV = "CLOUD_RUN_EMULATOR_HOST"
CLOCK_METHOD = "/reconciler.emulator.v1.Clock/Now"
"""The emulator's own clock (not a Google API): `reconcile emulator clock` moves it."""
T = TypeVar("T")
# Aggregated ListTimeSeries answers for many services can exceed gRPC's 4 MiB default.
_MAX_MESSAGE_BYTES = 64 * 1024 * 1024


def emulator_host(host: str | None = None) -> str | None:
    """The emulator address to use: `host` if given, else $CLOUD_RUN_EMULATOR_HOST, else None."""
    return host or os.environ.get(EMULATOR_HOST_ENV) or None


def _channel(host: str, options: Sequence[tuple[str, Any]] = ()) -> grpc.Channel:
    import grpc

    return grpc.insecure_channel(
        host,
        options=[
            ("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", _MAX_MESSAGE_BYTES),
            *options,
        ],
    )


def _with_credentials(make: Callable[[], T], what: str) -> T:
    """Build a client on Application Default Credentials, or fail with one actionable line."""
    from google.auth import exceptions as auth_exceptions

    try:
        return make()
    except auth_exceptions.DefaultCredentialsError as exc:
        cause = " ".join(str(exc).split())[:200]
        raise ReconcileError(
            f"{what}: no usable Google credentials ({cause}). Run `gcloud auth "
            "application-default login` (locally) or use Workload Identity Federation (CI); "
            f"for the emulator set {EMULATOR_HOST_ENV}; without any API access: "
            "`reconcile plan --offline`"
        ) from None


def services_client(host: str | None = None) -> run_v2.ServicesClient:
    """Cloud Run Admin v2 `ServicesClient` (the emulator's when `host` or the env var is set).

    Its `update_service(...).result()` polls `google.longrunning.Operations/GetOperation` over
    the same channel, so long-running operations work against the emulator too.
    """
    from google.cloud import run_v2

    target = emulator_host(host)
    if target is None:
        return _with_credentials(run_v2.ServicesClient, "Cloud Run Admin API")
    from google.cloud.run_v2.services.services.transports import ServicesGrpcTransport

    return run_v2.ServicesClient(transport=ServicesGrpcTransport(channel=_channel(target)))


def revisions_client(host: str | None = None) -> run_v2.RevisionsClient:
    """Cloud Run Admin v2 `RevisionsClient` (the emulator's when configured)."""
    from google.cloud import run_v2

    target = emulator_host(host)
    if target is None:
        return _with_credentials(run_v2.RevisionsClient, "Cloud Run Admin API")
    from google.cloud.run_v2.services.revisions.transports import RevisionsGrpcTransport

    return run_v2.RevisionsClient(transport=RevisionsGrpcTransport(channel=_channel(target)))


def metric_client(host: str | None = None) -> monitoring_v3.MetricServiceClient:
    """Cloud Monitoring v3 `MetricServiceClient` (the emulator's when configured)."""
    from google.cloud import monitoring_v3

    target = emulator_host(host)
    if target is None:
        return _with_credentials(monitoring_v3.MetricServiceClient, "Cloud Monitoring API")
    from google.cloud.monitoring_v3.services.metric_service.transports import (
        MetricServiceGrpcTransport,
    )

    return monitoring_v3.MetricServiceClient(
        transport=MetricServiceGrpcTransport(channel=_channel(target))
    )


def emulator_clock(host: str) -> Callable[[], datetime]:
    """A clock reading the emulator at `host`: its time moves with `reconcile emulator clock`,
    so windows, bake and ingestion delays pass without waiting.

    While the emulator is unreachable (restarting), the clock runs on from its last reading
    at wall-clock pace, so a long-running loop keeps its sense of time; it fails (one line)
    only if it never read the emulator at all. The first read after an emulator listens at
    `host` again reads it (`_clock_channel`)."""
    import grpc
    from google.protobuf import empty_pb2, timestamp_pb2

    offset: list[timedelta] = []
    calls: list[Callable[..., timestamp_pb2.Timestamp]] = []
    lock = threading.Lock()

    def call() -> Callable[..., timestamp_pb2.Timestamp]:
        with lock:
            if not calls:
                calls.append(
                    _clock_channel(host).unary_unary(
                        CLOCK_METHOD,
                        request_serializer=empty_pb2.Empty.SerializeToString,
                        response_deserializer=timestamp_pb2.Timestamp.FromString,
                    )
                )
            return calls[0]

    def read() -> datetime:
        now = call()
        try:
            stamp = now(empty_pb2.Empty(), timeout=10)
        except grpc.RpcError as exc:
            # The channel's connection now waits out gRPC's reconnect backoff (1 s, growing
            # to 2 min): a new emulator at `host` would go unread for that long. The next
            # read opens a new channel (this one closes once no read holds it).
            with lock:
                if calls and calls[0] is now:
                    calls.clear()
            if offset:
                return datetime.now(UTC) + offset[-1]
            raise ReconcileError(
                f"emulator at {host} ({EMULATOR_HOST_ENV}): cannot read its clock "
                f"({exc.code().name})"
            ) from None
        when: datetime = stamp.ToDatetime(tzinfo=UTC)
        offset[:] = [when - datetime.now(UTC)]
        return when

    return read


def _clock_channel(host: str) -> grpc.Channel:
    """A channel for the emulator clock, in a connection pool of its own: a new one never
    shares a connection, nor its reconnect backoff, with a channel to `host` still held
    elsewhere (a failed read's, another client's), and the clock, which a process keeps for
    good (`runtime.utc_now`), holds no connection that clients made later would share."""
    return _channel(host, [("grpc.use_local_subchannel_pool", 1)])


def logging_client(host: str | None = None) -> LoggingServiceV2Client:
    """Cloud Logging v2 `LoggingServiceV2Client` (the emulator's when configured): the
    streaming `tail_log_entries` and `list_log_entries`."""
    from google.cloud.logging_v2.services.logging_service_v2 import LoggingServiceV2Client

    target = emulator_host(host)
    if target is None:
        return _with_credentials(LoggingServiceV2Client, "Cloud Logging API")
    from google.cloud.logging_v2.services.logging_service_v2.transports import (
        LoggingServiceV2GrpcTransport,
    )

    return LoggingServiceV2Client(transport=LoggingServiceV2GrpcTransport(channel=_channel(target)))


def operations_client(host: str | None = None) -> operations_v1.OperationsClient:
    """The `google.longrunning.Operations` client Cloud Run's operations are polled with.

    It shares the Run client's channel and credentials; use it to resume polling an operation
    by name (`get_operation(name)`).
    """
    client = services_client(host)
    ops: operations_v1.OperationsClient = client.transport.operations_client
    return ops
