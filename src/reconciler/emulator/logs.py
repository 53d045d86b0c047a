"""Cloud Logging v2 `ListLogEntries` and `TailLogEntries` over the data plane's served requests.

Each request the data plane serves is one Cloud Run request log entry (log
`run.googleapis.com/requests`, resource `cloud_run_revision`, `httpRequest.status` and
`latency`), visible `delay` seconds of emulator time after it was served (Cloud Logging's
ingestion delay), plus a tail session's `buffer_window`. Filters support the subset of the
Logging query language the reconciler writes (comparisons, AND, OR, NOT, parentheses); any
other syntax is refused with INVALID_ARGUMENT rather than guessed at.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import grpc
from google.cloud.logging_v2 import types as logging_types
from google.protobuf import duration_pb2

from reconciler.emulator.world import ApiError, Record, World

REQUEST_LOG_ID = "run.googleapis.com/requests"
RESOURCE_TYPE = "cloud_run_revision"
DEFAULT_DELAY_SECONDS = 5.0
# Google's documented limits (docs/emulator.md cites them).
MAX_FILTER_CHARS = 20_000
MAX_BUFFER_WINDOW_SECONDS = 60.0
DEFAULT_BUFFER_WINDOW_SECONDS = 2.0
MAX_TAIL_SESSIONS_PER_PROJECT = 10
MAX_TAIL_ENTRIES_PER_MINUTE = 60_000
DEFAULT_LIST_PAGE_SIZE = 50
MAX_LIST_PAGE_SIZE = 1000
MAX_RESOURCE_NAMES = 100
# How often a tail session looks for newly visible entries (real seconds).
TAIL_POLL_SECONDS = 0.1

_SEVERITY = {"DEFAULT": 0, "DEBUG": 100, "INFO": 200, "NOTICE": 300, "WARNING": 400}
_SEVERITY |= {"ERROR": 500, "CRITICAL": 600, "ALERT": 700, "EMERGENCY": 800}
_TOKEN = re.compile(r'\s*(?:(\()|(\))|(>=|<=|!=|=|>|<|:)|"((?:[^"\\]|\\.)*)"|([^\s()=<>!:"]+))')


def log_name(project: str) -> str:
    """`projects/P/logs/run.googleapis.com%2Frequests` (the log id is URL-encoded)."""
    return f"projects/{project}/logs/{quote(REQUEST_LOG_ID, safe='')}"


def severity_of(code: int) -> str:
    """Cloud Run's request log severity: ERROR for 5xx, WARNING for 4xx, else INFO."""
    return "ERROR" if code >= 500 else "WARNING" if code >= 400 else "INFO"


def _fields(rec: Record) -> dict[str, Any]:
    return {
        "logName": log_name(rec.project),
        "resource.type": RESOURCE_TYPE,
        "resource.labels.project_id": rec.project,
        "resource.labels.location": rec.region,
        "resource.labels.service_name": rec.service,
        "resource.labels.revision_name": rec.revision,
        "resource.labels.configuration_name": rec.service,
        "httpRequest.status": rec.code,
        "severity": severity_of(rec.code),
        "timestamp": rec.ts,
    }


# --- filters ---------------------------------------------------------------------------------
Predicate = Callable[[dict[str, Any]], bool]


def parse_filter(text: str) -> Predicate:
    """Compile a Logging query (the supported subset) into a predicate over entry fields."""
    if len(text) > MAX_FILTER_CHARS:
        raise ApiError("INVALID_ARGUMENT", f"filter is longer than {MAX_FILTER_CHARS} characters")
    tokens: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            if text[pos:].strip() == "":
                break
            raise ApiError(
                "INVALID_ARGUMENT", f"filter: unexpected text at {text[pos : pos + 20]!r}"
            )
        pos = m.end()
        if m.group(1):
            tokens.append(("(", "("))
        elif m.group(2):
            tokens.append((")", ")"))
        elif m.group(3):
            tokens.append(("op", m.group(3)))
        elif m.group(4) is not None:
            tokens.append(("str", re.sub(r"\\(.)", r"\1", m.group(4))))
        else:
            tokens.append(("word", m.group(5)))
    if not tokens:
        return lambda _f: True
    parser = _Parser(tokens)
    pred = parser.disjunction()
    if parser.i != len(tokens):
        raise ApiError("INVALID_ARGUMENT", f"filter: unexpected {tokens[parser.i][1]!r}")
    return pred


class _Parser:
    def __init__(self, tokens: list[tuple[str, str]]) -> None:
        self.tokens = tokens
        self.i = 0

    def _peek(self) -> tuple[str, str] | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def disjunction(self) -> Predicate:
        parts = [self.conjunction()]
        while self._peek() == ("word", "OR"):
            self.i += 1
            parts.append(self.conjunction())
        return parts[0] if len(parts) == 1 else lambda f: any(p(f) for p in parts)

    def conjunction(self) -> Predicate:
        parts = [self.unary()]
        while (tok := self._peek()) is not None and tok not in ((")", ")"), ("word", "OR")):
            if tok == ("word", "AND"):
                self.i += 1
            parts.append(self.unary())
        return parts[0] if len(parts) == 1 else lambda f: all(p(f) for p in parts)

    def unary(self) -> Predicate:
        tok = self._peek()
        if tok == ("word", "NOT"):
            self.i += 1
            inner = self.unary()
            return lambda f: not inner(f)
        if tok == ("(", "("):
            self.i += 1
            inner = self.disjunction()
            if self._peek() != (")", ")"):
                raise ApiError("INVALID_ARGUMENT", "filter: missing ')'")
            self.i += 1
            return inner
        return self.comparison()

    def comparison(self) -> Predicate:
        if self.i + 3 > len(self.tokens):
            raise ApiError("INVALID_ARGUMENT", "filter: incomplete comparison")
        (kind, path), (okind, op), (vkind, value) = self.tokens[self.i : self.i + 3]
        if kind != "word" or okind != "op" or vkind not in ("str", "word"):
            raise ApiError("INVALID_ARGUMENT", f"filter: expected FIELD OP VALUE at {path!r}")
        self.i += 3
        return _compare(path, op, value)


def _compare(path: str, op: str, value: str) -> Predicate:
    known = {
        "logName",
        "log_name",
        "resource.type",
        "httpRequest.status",
        "http_request.status",
        "severity",
        "timestamp",
    }
    if path not in known and not path.startswith("resource.labels."):
        raise ApiError("INVALID_ARGUMENT", f"filter: field {path!r} is not emulated")
    key = {"log_name": "logName", "http_request.status": "httpRequest.status"}.get(path, path)
    want: Any = value
    if key == "httpRequest.status":
        try:
            want = int(value)
        except ValueError:
            raise ApiError("INVALID_ARGUMENT", f"filter: {path} takes a number") from None
    elif key == "timestamp":
        try:
            want = datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            raise ApiError("INVALID_ARGUMENT", f"filter: bad timestamp {value!r}") from None
    elif key == "severity":
        if value.upper() not in _SEVERITY:
            raise ApiError("INVALID_ARGUMENT", f"filter: unknown severity {value!r}")
        want = _SEVERITY[value.upper()]
    ordered = key in ("httpRequest.status", "timestamp", "severity")
    if op in (">", "<", ">=", "<=") and not ordered:
        raise ApiError("INVALID_ARGUMENT", f"filter: {path} cannot be compared with {op}")

    def get(f: dict[str, Any]) -> Any:
        got = f.get(key)
        return _SEVERITY[got] if key == "severity" and got is not None else got

    if op == "=":
        return lambda f: get(f) == want
    if op == "!=":
        return lambda f: get(f) != want
    if op == ":":
        return lambda f: get(f) is not None and str(want).lower() in str(get(f)).lower()
    cmp: dict[str, Callable[[Any, Any], bool]] = {
        ">": lambda a, b: a > b,
        "<": lambda a, b: a < b,
        ">=": lambda a, b: a >= b,
        "<=": lambda a, b: a <= b,
    }
    return lambda f: get(f) is not None and cmp[op](get(f), want)


# --- entries ---------------------------------------------------------------------------------
def _timestamp(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, tz=UTC)


def render_entry(rec: Record, seq: int, delay: float) -> logging_types.LogEntry:
    """One Cloud Run request log entry."""
    latency = duration_pb2.Duration()
    latency.FromNanoseconds(int(rec.latency_ms * 1e6))
    url = f"https://{rec.service}-{rec.project}.{rec.region}.run.app/"
    return logging_types.LogEntry(
        log_name=log_name(rec.project),
        resource={
            "type": RESOURCE_TYPE,
            "labels": {
                "project_id": rec.project,
                "location": rec.region,
                "service_name": rec.service,
                "revision_name": rec.revision,
                "configuration_name": rec.service,
            },
        },
        timestamp=_timestamp(rec.ts),
        receive_timestamp=_timestamp(rec.ts + delay),
        severity=severity_of(rec.code),
        insert_id=f"{int(rec.ts * 1e6):x}{seq:06x}",
        http_request={
            "request_method": "GET",
            "request_url": url,
            "status": rec.code,
            "latency": latency,
        },
    )


@dataclass
class _Session:
    project: str


class Logs:
    """The Logging servicer: `delay` seconds of emulator time from a request to its entry."""

    def __init__(self, world: World, delay: float = DEFAULT_DELAY_SECONDS) -> None:
        self.world = world
        self.delay = delay
        self._lock = threading.Lock()
        self._sessions: list[_Session] = []
        self._sent: dict[str, list[float]] = {}

    def _visible(self, start: float, end: float) -> list[tuple[int, Record]]:
        """Served requests with start < ts <= end, each with a number (for insert ids)."""
        first, records = self.world.served_between(start, end)
        return [(first + k, r) for k, r in enumerate(records)]

    @staticmethod
    def _projects(names: Sequence[str]) -> list[str]:
        if not names:
            raise ApiError("INVALID_ARGUMENT", "resource_names is required")
        if len(names) > MAX_RESOURCE_NAMES:
            raise ApiError("INVALID_ARGUMENT", f"at most {MAX_RESOURCE_NAMES} resource_names")
        out = []
        for name in names:
            parts = name.split("/")
            if len(parts) != 2 or parts[0] != "projects" or not parts[1]:
                raise ApiError(
                    "INVALID_ARGUMENT",
                    f"resource name {name!r}: the emulator serves projects/PROJECT_ID only",
                )
            out.append(parts[1])
        return out

    def list_log_entries(
        self, req: logging_types.ListLogEntriesRequest
    ) -> logging_types.ListLogEntriesResponse:
        """ListLogEntries: visible entries of the named projects, paged, oldest first."""
        projects = set(self._projects(req.resource_names))
        pred = parse_filter(req.filter)
        if req.order_by not in ("", "timestamp asc", "timestamp desc"):
            raise ApiError("INVALID_ARGUMENT", f"order_by {req.order_by!r} is not supported")
        if req.page_size < 0 or req.page_size > MAX_LIST_PAGE_SIZE:
            raise ApiError("INVALID_ARGUMENT", f"page_size must be 0..{MAX_LIST_PAGE_SIZE}")
        cut = self.world.now() - self.delay
        hits = [
            (i, r)
            for i, r in self._visible(float("-inf"), cut)
            if r.project in projects and pred(_fields(r))
        ]
        if req.order_by == "timestamp desc":
            hits.reverse()
        start = 0
        if req.page_token:
            try:
                start = int(req.page_token.removeprefix("offset:"))
            except ValueError:
                raise ApiError("INVALID_ARGUMENT", "invalid page_token") from None
        size = req.page_size or DEFAULT_LIST_PAGE_SIZE
        chunk = hits[start : start + size]
        token = f"offset:{start + size}" if start + size < len(hits) else ""
        return logging_types.ListLogEntriesResponse(
            entries=[render_entry(r, i, self.delay) for i, r in chunk], next_page_token=token
        )

    def tail(
        self, requests: Iterator[logging_types.TailLogEntriesRequest], context: grpc.ServicerContext
    ) -> Iterator[logging_types.TailLogEntriesResponse]:
        """TailLogEntries: entries that become visible after the session opened, in batches."""
        delay_s, fault = self.world.take_fault("TailLogEntries")
        if delay_s:
            time.sleep(delay_s)
        if fault is not None:
            context.abort(
                grpc.StatusCode[fault.code],
                fault.message or "emulator: injected fault in TailLogEntries",
            )
        try:
            req = next(requests)
        except StopIteration:
            return
        try:
            projects = self._projects(req.resource_names)
            pred = parse_filter(req.filter)
            buffer = (
                req.buffer_window.total_seconds()
                if "buffer_window" in req
                else DEFAULT_BUFFER_WINDOW_SECONDS
            )
            if not 0 <= buffer <= MAX_BUFFER_WINDOW_SECONDS:
                raise ApiError("INVALID_ARGUMENT", "buffer_window must be between 0 and 60s")
            session = self._open(projects[0])
        except ApiError as exc:
            context.abort(grpc.StatusCode[exc.code], exc.message)
        wanted = set(projects)
        # Only entries that arrive after the session opened, as `gcloud logging tail` shows.
        cut = self.world.now() - self.delay
        try:
            while context.is_active():
                time.sleep(TAIL_POLL_SECONDS)
                new_cut = self.world.now() - self.delay - buffer
                if new_cut <= cut:
                    continue
                batch = [
                    (i, r)
                    for i, r in self._visible(cut, new_cut)
                    if r.project in wanted and pred(_fields(r))
                ]
                cut = new_cut
                if not batch:
                    continue
                allowed = self._allow(session.project, len(batch))
                resp = logging_types.TailLogEntriesResponse(
                    entries=[render_entry(r, i, self.delay) for i, r in batch[:allowed]]
                )
                if allowed < len(batch):
                    resp.suppression_info = [
                        logging_types.TailLogEntriesResponse.SuppressionInfo(
                            reason="RATE_LIMIT", suppressed_count=len(batch) - allowed
                        )
                    ]
                yield resp
        finally:
            with self._lock:
                self._sessions.remove(session)

    @property
    def open_sessions(self) -> int:
        """How many TailLogEntries sessions are open now (a test waits for its own)."""
        with self._lock:
            return len(self._sessions)

    def _open(self, project: str) -> _Session:
        with self._lock:
            if sum(s.project == project for s in self._sessions) >= MAX_TAIL_SESSIONS_PER_PROJECT:
                raise ApiError(
                    "RESOURCE_EXHAUSTED",
                    f"at most {MAX_TAIL_SESSIONS_PER_PROJECT} open tail sessions per project",
                )
            session = _Session(project)
            self._sessions.append(session)
            return session

    def _allow(self, project: str, n: int) -> int:
        """How many of `n` entries fit the project's per-minute tail quota (real time)."""
        now = time.monotonic()
        with self._lock:
            sent = [t for t in self._sent.get(project, []) if t > now - 60.0]
            room = max(0, MAX_TAIL_ENTRIES_PER_MINUTE - len(sent))
            take = min(n, room)
            self._sent[project] = sent + [now] * take
            return take

    def handlers(self) -> list[grpc.GenericRpcHandler]:
        """The `google.logging.v2.LoggingServiceV2` handler (ListLogEntries, TailLogEntries)."""
        world = self.world

        def list_entries(request: Any, context: grpc.ServicerContext) -> Any:
            delay_s, fault = world.take_fault("ListLogEntries")
            if delay_s:
                time.sleep(delay_s)
            if fault is not None:
                context.abort(
                    grpc.StatusCode[fault.code], fault.message or "emulator: injected fault"
                )
            try:
                return self.list_log_entries(request)
            except ApiError as exc:
                context.abort(grpc.StatusCode[exc.code], exc.message)

        return [
            grpc.method_handlers_generic_handler(
                "google.logging.v2.LoggingServiceV2",
                {
                    "ListLogEntries": grpc.unary_unary_rpc_method_handler(
                        list_entries,
                        request_deserializer=logging_types.ListLogEntriesRequest.deserialize,
                        response_serializer=logging_types.ListLogEntriesResponse.serialize,
                    ),
                    "TailLogEntries": grpc.stream_stream_rpc_method_handler(
                        self.tail,
                        request_deserializer=logging_types.TailLogEntriesRequest.deserialize,
                        response_serializer=logging_types.TailLogEntriesResponse.serialize,
                    ),
                },
            )
        ]
