"""The emulated world: services, revisions, operations, served requests, faults, counters.

Protocol-free: the gRPC layer (`control.py`) and the HTTP layer (`dataplane.py`) translate to
and from these objects. Every public method takes the one lock, so both servers can call in
from their worker threads. Cloud Run's rules live here and fail with `ApiError` carrying a
gRPC status code name.
"""

from __future__ import annotations

import bisect
import copy
import hashlib
import json
import os
import random
import re
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, get_args

from reconciler.emulator.scenario import (
    Behavior,
    Dependency,
    LroResponse,
    Scenario,
    StatusCode,
)

# Names are checked with `fullmatch`: a pattern ending in `$` also matches before a final
# newline, and Google refuses `stable\n` as a tag or a revision name.
TAG_RE = re.compile(r"[a-z](?:[a-z0-9-]{0,44}[a-z0-9])?")
# A tag URL is `https://TAG---SERVICE-HASH-REGION.a.run.app`; its first DNS label must fit 63
# characters, which leaves 46 for the tag and the service name together.
MAX_TAG_AND_SERVICE = 46
REVISION_NAME_RE = re.compile(r"[a-z](?:[a-z0-9-]{0,61}[a-z0-9])?")
_NUMBERED = re.compile(r".*-(\d{5})-[a-z0-9]+")
# A pending operation completes after its polls, or after this long even if nobody polls.
PENDING_OPERATION_MAX_SECONDS = 5.0
# Served requests kept for ListTimeSeries (the oldest are dropped first).
MAX_RECORDS = 1_000_000
STATE_VERSION = 1


class ApiError(Exception):
    """A request Cloud Run would refuse; `code` is a `grpc.StatusCode` name."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class Route:
    """A traffic target; `revision` is resolved (never empty) in applied traffic."""

    revision: str
    percent: int
    tag: str = ""
    latest: bool = False
    since: float = 0.0
    """When the tag was created (emulator time): tag cleanup deletes the oldest first."""


@dataclass
class Revision:
    """One revision of a service and the behaviour its instances have."""

    name: str
    service: str
    behavior: Behavior
    created: float
    generation: int = 1


@dataclass
class Service:
    """One Cloud Run service as the control plane knows it."""

    project: str
    region: str
    name: str
    uid: str
    created: float
    updated: float
    revisions: list[str]
    """Short revision names, oldest first; the last one is the latest ready revision."""
    traffic: list[Route]
    """Requested traffic (`Service.traffic`)."""
    statuses: list[Route]
    """Applied traffic (`Service.traffic_statuses`); what the data plane routes by."""
    generation: int = 1
    observed_generation: int = 1
    template: bytes | None = None
    """Serialised RevisionTemplate without its `revision` field (None: the default one)."""
    template_revision: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    description: str = ""
    failure: str = ""
    """The message of a failed `terminal_condition` ('' when the last change succeeded)."""

    @property
    def key(self) -> str:
        """Full resource name."""
        return f"projects/{self.project}/locations/{self.region}/services/{self.name}"

    @property
    def parent(self) -> str:
        """`projects/P/locations/R`."""
        return f"projects/{self.project}/locations/{self.region}"

    @property
    def reconciling(self) -> bool:
        """True while an accepted change is not yet serving."""
        return self.observed_generation < self.generation

    @property
    def latest_revision(self) -> str:
        """Short name of the newest revision."""
        return self.revisions[-1]

    @property
    def etag(self) -> str:
        """Changes with every generation, like Cloud Run's."""
        return hashlib.sha256(f"{self.uid}/{self.generation}".encode()).hexdigest()[:20]

    def revision_key(self, revision: str) -> str:
        """Full resource name of one of this service's revisions."""
        return f"{self.key}/revisions/{revision}"


@dataclass
class Operation:
    """A long-running UpdateService operation."""

    name: str
    service: str
    """Full name of the service it changes."""
    generation: int
    done: bool
    polls_left: int
    deadline: float
    preview: Service | None = None
    """validate_only: the service as it would have become (nothing applied)."""
    error_code: str = ""
    """Set when the operation fails: a `grpc.StatusCode` name, with `error_message`."""
    error_message: str = ""
    result: Service | None = None
    """The service as the operation left it when it completed (its `response`)."""
    status_in_response: bool = True
    """False: the response leaves out the service's serving status (`lro.response`)."""


@dataclass(frozen=True)
class Record:
    """One request served by the data plane."""

    ts: float
    project: str
    region: str
    service: str
    revision: str
    code: int
    latency_ms: float


@dataclass
class Fault:
    """Injected trouble for one gRPC method (or `*` for all, or `Operation` for the result of
    UpdateService's long-running operation)."""

    rate: float = 0.0
    """Share of calls that fail with `code`."""
    latency_ms: float = 0.0
    times: int | None = None
    """Fail at most this many calls, then heal (None: until cleared)."""
    code: str = "UNAVAILABLE"
    message: str = ""
    until: float | None = None
    """Emulator time at which the fault heals by itself (an outage of a set length)."""


@dataclass
class Bucket:
    """A token bucket refilled in emulator time: `capacity` calls per 60 s."""

    capacity: int
    tokens: float
    at: float

    def take(self, now: float) -> bool:
        """Spend one token if there is one."""
        self.tokens = min(self.capacity, self.tokens + (now - self.at) * self.capacity / 60.0)
        self.at = now
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True


@dataclass
class PartialResults:
    """Injected incomplete ListTimeSeries answers: matching series dropped, an error said."""

    message: str
    drop: dict[str, str]
    """Flat labels (`metric.labels.response_code_class`) a series must have to be dropped."""
    times: int | None = None


READ_METHODS = frozenset(
    {"GetService", "ListServices", "GetRevision", "ListRevisions", "GetOperation", "WaitOperation"}
)
WRITE_METHODS = frozenset({"UpdateService"})


class World:
    """The whole emulated state behind one lock."""

    def __init__(self, scenario: Scenario, *, clock_offset: float = 0.0) -> None:
        self._lock = threading.RLock()
        self.project = scenario.project
        self.region = scenario.region
        self.latency_mode = scenario.latency_mode
        self.latency_scale = scenario.latency_scale
        self.lro_done = scenario.lro.done
        self.lro_polls = scenario.lro.polls
        self.failure_code = scenario.lro.failure_code
        self.lro_response = scenario.lro.response
        self.etag_mode = scenario.etag.mode
        self.etag_code = scenario.etag.code
        self.quotas = scenario.quotas
        self.tags_per_region = scenario.limits.tags_per_region
        self.monitoring = scenario.monitoring
        self.buckets: dict[tuple[str, str, str], Bucket] = {}
        self.partial: PartialResults | None = None
        self.rng = random.Random(scenario.seed)
        self.clock_offset = clock_offset
        self.services: dict[str, Service] = {}
        self.revisions: dict[str, Revision] = {}
        self.operations: dict[str, Operation] = {}
        self.records: list[Record] = []
        self.dropped = 0
        """Records dropped from the front of `records` (keeps Logging insert ids unique)."""
        self.dependencies: dict[str, Dependency] = {d.name: d for d in scenario.dependencies}
        self.faults: dict[str, Fault] = {}
        self.calls: Counter[str] = Counter()
        self.writes = 0
        self.write_attempts = 0
        self.version = 0
        """Bumped on every change, so the state file is only rewritten when needed."""
        now = self.now()
        for spec in scenario.services:
            project = spec.project or scenario.project
            region = spec.region or scenario.region
            names = [r.name for r in spec.revisions]
            percents = spec.traffic or {names[-1]: 100}
            routes = [Route(rev, pct) for rev, pct in percents.items()]
            for tag, rev in spec.tags.items():
                tagged = next((r for r in routes if r.revision == rev and not r.tag), None)
                if tagged is not None:
                    tagged.tag = tag
                else:
                    routes.append(Route(rev, 0, tag))
            svc = Service(
                project=project,
                region=region,
                name=spec.name,
                uid=str(uuid.uuid5(uuid.NAMESPACE_URL, f"{project}/{region}/{spec.name}")),
                created=now - 86400.0,
                updated=now,
                revisions=names,
                traffic=routes,
                statuses=copy.deepcopy(routes),
                generation=len(names),
                observed_generation=len(names),
                template_revision=names[-1],
            )
            if svc.key in self.services:
                raise ApiError("ALREADY_EXISTS", f"scenario: duplicate service {svc.key}")
            for r in svc.traffic:
                if r.tag:
                    _check_tag_length(r.tag, svc.name)
            self.services[svc.key] = svc
            for i, rs in enumerate(spec.revisions):
                created = now - 3600.0 * (len(spec.revisions) - i)
                self.revisions[svc.revision_key(rs.name)] = Revision(
                    rs.name, spec.name, rs.behavior, created, i + 1
                )

    # --- clock ------------------------------------------------------------------------------
    def now(self) -> float:
        """Emulator time in epoch seconds (wall clock plus the admin clock offset)."""
        return time.time() + self.clock_offset

    def advance_clock(self, seconds: float) -> None:
        """Move emulator time forward (served requests are stamped with emulator time)."""
        with self._lock:
            self.clock_offset += seconds
            self.version += 1

    # --- reads ------------------------------------------------------------------------------
    def get_service(self, name: str) -> Service:
        """A snapshot of one service."""
        with self._lock:
            self._settle()
            return copy.deepcopy(self._service(name))

    def list_services(self, parent: str) -> list[Service]:
        """Snapshots of the services under `projects/P/locations/R` (`R` may be `-`)."""
        m = re.fullmatch(r"projects/([^/]+)/locations/([^/]+)", parent)
        if not m:
            raise ApiError("INVALID_ARGUMENT", f"invalid parent {parent!r}")
        project, region = m.groups()
        with self._lock:
            self._settle()
            return [
                copy.deepcopy(s)
                for s in sorted(self.services.values(), key=lambda s: s.key)
                if s.project == project and region in ("-", s.region)
            ]

    def get_revision(self, name: str) -> tuple[Revision, Service]:
        """A snapshot of one revision and its service."""
        with self._lock:
            rev = self.revisions.get(name)
            if rev is None:
                raise ApiError("NOT_FOUND", f"revision {name} not found")
            svc_key = name.rsplit("/revisions/", 1)[0]
            return copy.deepcopy(rev), copy.deepcopy(self._service(svc_key))

    def list_revisions(self, parent: str) -> list[tuple[Revision, Service]]:
        """Snapshots of a service's revisions, newest first (as Cloud Run lists them).

        A parent ending in `services/-` lists the revisions of every service of that project
        and region (Cloud Run: "to list all Revisions across Services, use - instead of
        Service name"), service by service in name order, each service's newest first.
        """
        m = re.fullmatch(r"projects/([^/]+)/locations/([^/]+)/services/-", parent)
        with self._lock:
            if m is None:
                chosen = [self._service(parent)]
            else:
                project, region = m.groups()
                chosen = sorted(
                    (s for s in self.services.values()
                     if s.project == project and s.region == region),
                    key=lambda s: s.key,
                )  # fmt: skip
            out: list[tuple[Revision, Service]] = []
            for svc in chosen:
                snapshot = copy.deepcopy(svc)  # once per service, not once per revision
                out.extend(
                    (copy.deepcopy(self.revisions[svc.revision_key(r)]), snapshot)
                    for r in reversed(svc.revisions)
                )
            return out

    def get_operation(self, name: str) -> tuple[Operation, Service]:
        """Poll an operation: counts the poll, completes it when its polls are used up."""
        with self._lock:
            op = self.operations.get(name)
            if op is None:
                raise ApiError("NOT_FOUND", f"operation {name} not found")
            if not op.done:
                if op.polls_left > 0:
                    op.polls_left -= 1
                else:
                    self._complete(op)
            self._settle()
            svc = op.preview or op.result or self._service(op.service)
            return copy.deepcopy(op), copy.deepcopy(svc)

    def ready_of(self, svc: Service) -> Callable[[str], bool]:
        """Whether a revision of `svc` (by short name) can serve."""
        with self._lock:
            ready = {
                r: self.revisions[svc.revision_key(r)].behavior.ready
                for r in svc.revisions
                if svc.revision_key(r) in self.revisions
            }
        return lambda name: ready.get(name, True)

    def _service(self, name: str) -> Service:
        svc = self.services.get(name)
        if svc is None:
            raise ApiError("NOT_FOUND", f"service {name} not found")
        return svc

    def _settle(self) -> None:
        now = self.now()
        for op in self.operations.values():
            if not op.done and now >= op.deadline:
                self._complete(op)

    def _complete(self, op: Operation) -> None:
        op.done = True
        svc = self.services.get(op.service)
        if svc is not None and svc.observed_generation < op.generation:
            svc.observed_generation = svc.generation
            if op.error_code:
                # Cloud Run keeps the requested `traffic` but serves the last good split, and
                # says why in `terminal_condition` (service.proto, `reconciling`).
                svc.failure = op.error_message
            else:
                svc.statuses = self._resolve(svc, svc.traffic)
                svc.failure = ""
            svc.updated = self.now()
        if svc is not None:
            # The response is the service at completion, not as later writes change it.
            op.result = copy.deepcopy(svc)
        self.version += 1

    def _not_ready(self, svc: Service, routes: Iterable[Route]) -> list[str]:
        """Revisions a split would route to (a percent or a tag) that cannot serve."""
        out = []
        for r in self._resolve(svc, routes):
            rev = self.revisions.get(svc.revision_key(r.revision))
            if rev is not None and not rev.behavior.ready and (r.percent or r.tag):
                out.append(r.revision)
        return sorted(set(out))

    def _cleanup_tags(self, svc: Service) -> None:
        """Past the per-region tag limit, delete this service's tags that carry no traffic,
        oldest first (Cloud Run's documented tag cleanup)."""
        count = sum(
            1
            for s in self.services.values()
            if (s.project, s.region) == (svc.project, svc.region)
            for r in s.traffic
            if r.tag
        )
        idle = sorted((r for r in svc.traffic if r.tag and r.percent == 0), key=lambda r: r.since)
        doomed = {id(r) for r in idle[: max(0, count - self.tags_per_region)]}
        if not doomed:
            return
        gone = {r.tag for r in svc.traffic if id(r) in doomed}
        svc.traffic = [r for r in svc.traffic if id(r) not in doomed]
        svc.statuses = [r for r in svc.statuses if not (r.tag in gone and r.percent == 0)]

    # --- writes -----------------------------------------------------------------------------
    def update_service(
        self,
        name: str,
        *,
        etag: str,
        traffic: list[Route] | None,
        template: bytes | None,
        template_revision: str,
        labels: Mapping[str, str] | None = None,
        annotations: Mapping[str, str] | None = None,
        description: str | None = None,
        validate_only: bool = False,
    ) -> Operation:
        """Apply an UpdateService with Cloud Run's rules; returns its operation.

        `traffic=None` and `template=None` leave those fields as they are. A changed template
        (or a new `template_revision`) creates a revision; a traffic-only change does not.
        """
        with self._lock:
            self._settle()
            svc = self._service(name)
            if etag and etag != svc.etag and self.etag_mode == "enforce":
                raise ApiError(
                    self.etag_code,
                    f"The etag provided ({etag}) does not match the current etag of "
                    f"{name}. Re-read the resource and retry the request.",
                )
            target = copy.deepcopy(svc)
            new_revision = ""
            if template is not None or template_revision:
                tpl = template if template is not None else svc.template
                named = template_revision and template_revision != svc.template_revision
                if template_revision and not named and tpl != svc.template:
                    # A read-modify-write that echoes `template.revision` with a changed
                    # template asks for an existing revision name with another config.
                    raise ApiError(
                        "ALREADY_EXISTS",
                        f"Revision named '{template_revision}' with different configuration "
                        "already exists.",
                    )
                if named or tpl != svc.template:
                    new_revision = template_revision if named else self._next_revision(svc)
                    self._check_new_revision(svc, new_revision)
                    target.revisions.append(new_revision)
                    target.template = tpl
                    target.template_revision = new_revision
            if traffic is not None:
                routes = traffic or [Route("", 100, latest=True)]
                self._validate_traffic(target, routes)
                now = self.now()
                born = {r.tag: r.since for r in svc.traffic if r.tag}
                for r in routes:
                    r.since = born.get(r.tag, now) if r.tag else 0.0
                target.traffic = routes
            if labels is not None:
                target.labels = dict(labels)
            if annotations is not None:
                target.annotations = dict(annotations)
            if description is not None:
                target.description = description
            changed = _spec(target) != _spec(svc)
            if changed:
                target.generation += 1
                target.updated = self.now()
            op_name = f"{svc.parent}/operations/{uuid.uuid4()}"
            if validate_only:
                op = Operation(op_name, name, target.generation, True, 0, 0.0, preview=target)
                self.operations[op_name] = op
                return copy.deepcopy(op)
            if new_revision:
                # A revision created through the API starts with the default behaviour.
                self.revisions[svc.revision_key(new_revision)] = Revision(
                    new_revision, svc.name, Behavior(), self.now(), target.generation
                )
            self.services[name] = target
            if traffic is not None:
                self._cleanup_tags(target)
            done = self.lro_done or not changed
            op = Operation(
                op_name,
                name,
                target.generation,
                done=False,
                polls_left=self.lro_polls,
                deadline=self.now() + PENDING_OPERATION_MAX_SECONDS,
                status_in_response=self.lro_response == "service",
            )
            broken = self._not_ready(target, target.traffic) if changed else []
            if broken:
                op.error_code = self.failure_code
                op.error_message = (
                    f"Revision '{broken[0]}' is not ready and cannot serve traffic. The "
                    "user-provided container failed to start and listen on the port defined "
                    "by the PORT environment variable."
                )
            elif changed and (fault := self._draw_fault("Operation")) is not None:
                op.error_code = fault.code
                op.error_message = fault.message or "emulator: injected fault in the operation"
            self.operations[op_name] = op
            if done:
                self._complete(op)
            self.writes += 1
            self.version += 1
            return copy.deepcopy(op)

    def _next_revision(self, svc: Service) -> str:
        suffix = "".join(self.rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(3))
        # Cloud Run numbers revisions by a per-service counter: continue from the highest.
        numbers = [int(m.group(1)) for r in svc.revisions if (m := _NUMBERED.fullmatch(r))]
        return f"{svc.name}-{max([len(svc.revisions), *numbers]) + 1:05d}-{suffix}"

    def _check_new_revision(self, svc: Service, revision: str) -> None:
        if not REVISION_NAME_RE.fullmatch(revision) or not revision.startswith(f"{svc.name}-"):
            raise ApiError(
                "INVALID_ARGUMENT",
                f"revision name {revision!r} must start with '{svc.name}-' and use lowercase "
                "letters, digits and hyphens",
            )
        if svc.revision_key(revision) in self.revisions:
            raise ApiError("ALREADY_EXISTS", f"revision {revision} already exists")

    def _validate_traffic(self, svc: Service, routes: list[Route]) -> None:
        tags: set[str] = set()
        for r in routes:
            if not 0 <= r.percent <= 100:
                raise ApiError("INVALID_ARGUMENT", f"traffic percent {r.percent} not in 0..100")
            if r.latest:
                if r.revision:
                    raise ApiError(
                        "INVALID_ARGUMENT",
                        f"a LATEST traffic target must not name a revision ({r.revision!r})",
                    )
            elif not r.revision:
                raise ApiError("INVALID_ARGUMENT", "a REVISION traffic target needs a revision")
            elif r.revision not in svc.revisions:
                raise ApiError(
                    "NOT_FOUND",
                    f"revision {r.revision!r} of service {svc.name} not found "
                    f"(referenced in traffic)",
                )
            if r.tag:
                if not TAG_RE.fullmatch(r.tag):
                    raise ApiError("INVALID_ARGUMENT", f"invalid traffic tag {r.tag!r}")
                _check_tag_length(r.tag, svc.name)
                if r.tag in tags:
                    raise ApiError("INVALID_ARGUMENT", f"duplicate traffic tag {r.tag!r}")
                tags.add(r.tag)
        total = sum(r.percent for r in routes)
        if total != 100:
            raise ApiError("INVALID_ARGUMENT", f"traffic percents must sum to 100, got {total}")

    def _resolve(self, svc: Service, routes: Iterable[Route]) -> list[Route]:
        return [
            Route(
                svc.latest_revision if r.latest else r.revision, r.percent, r.tag, r.latest, r.since
            )
            for r in routes
        ]

    # --- admin ------------------------------------------------------------------------------
    def find_service(self, service: str) -> Service:
        """A service by short name (unique in the world) or by full name."""
        with self._lock:
            if service in self.services:
                return self.services[service]
            found = [s for s in self.services.values() if s.name == service]
            if len(found) != 1:
                raise ApiError(
                    "NOT_FOUND" if not found else "FAILED_PRECONDITION",
                    f"service {service!r} " + ("not found" if not found else "is ambiguous"),
                )
            return found[0]

    def deploy(
        self, service: str, revision: str | None = None, behavior: Mapping[str, Any] | None = None
    ) -> str:
        """Create a new revision serving no traffic (`gcloud run deploy --no-traffic`)."""
        with self._lock:
            self._settle()
            svc = self.find_service(service)
            name = revision or self._next_revision(svc)
            self._check_new_revision(svc, name)
            beh = Behavior().merged(behavior or {})
            svc.revisions.append(name)
            svc.template_revision = name
            svc.generation += 1
            svc.updated = self.now()
            # Pinned targets stay put; a LATEST target follows the new revision.
            self.revisions[svc.revision_key(name)] = Revision(
                name, svc.name, beh, self.now(), svc.generation
            )
            svc.observed_generation = svc.generation
            svc.statuses = self._resolve(svc, svc.traffic)
            self.version += 1
            return name

    def behave(self, revision: str, changes: Mapping[str, Any]) -> Behavior:
        """Change a revision's behaviour (short or full revision name)."""
        with self._lock:
            rev = self._find_revision(revision)
            rev.behavior = rev.behavior.merged(changes)
            self.version += 1
            return rev.behavior

    def _find_revision(self, revision: str) -> Revision:
        if revision in self.revisions:
            return self.revisions[revision]
        found = [r for r in self.revisions.values() if r.name == revision]
        if len(found) != 1:
            raise ApiError("NOT_FOUND", f"revision {revision!r} not found")
        return found[0]

    def drift(
        self, service: str, traffic: Mapping[str, int], tags: Mapping[str, str] | None = None
    ) -> None:
        """Change traffic "by hand" (as someone with gcloud would); not counted as a write."""
        with self._lock:
            self._settle()
            svc = self.find_service(service)
            routes = [Route(rev, pct) for rev, pct in traffic.items()]
            for tag, rev in (tags or {}).items():
                tagged = next((r for r in routes if r.revision == rev and not r.tag), None)
                if tagged is not None:
                    tagged.tag = tag
                else:
                    routes.append(Route(rev, 0, tag))
            self._validate_traffic(svc, routes)
            born = {r.tag: r.since for r in svc.traffic if r.tag}
            for r in routes:
                r.since = born.get(r.tag, self.now()) if r.tag else 0.0
            svc.traffic = routes
            svc.statuses = self._resolve(svc, routes)
            svc.failure = ""  # applied at once: what serves is what was asked for
            svc.generation += 1
            svc.observed_generation = svc.generation
            svc.updated = self.now()
            self.version += 1

    def set_lro(self, done: bool, polls: int = 1, response: LroResponse = "service") -> None:
        """How later UpdateService operations complete, and what their response holds."""
        if response not in get_args(LroResponse):
            allowed = ", ".join(get_args(LroResponse))
            raise ApiError("INVALID_ARGUMENT", f"lro response {response!r} is not one of {allowed}")
        with self._lock:
            self.lro_done = done
            self.lro_polls = polls
            self.lro_response = response

    def set_fault(
        self,
        method: str = "*",
        rate: float = 1.0,
        latency_ms: float = 0.0,
        times: int | None = None,
        code: str = "UNAVAILABLE",
        message: str = "",
        seconds: float | None = None,
    ) -> None:
        """Make a gRPC method (`*`: all; `Operation`: UpdateService's operation result) fail
        with `code` with probability `rate`, after `latency_ms`; `seconds` heals it that many
        seconds of emulator time from now."""
        if not 0.0 <= rate <= 1.0:
            raise ApiError("INVALID_ARGUMENT", "rate must be within 0..1")
        if code == "OK" or code not in _STATUS_CODES:
            raise ApiError("INVALID_ARGUMENT", f"fault code {code!r} is not a gRPC error code")
        if seconds is not None and seconds <= 0:
            raise ApiError("INVALID_ARGUMENT", "seconds must be positive")
        with self._lock:
            until = None if seconds is None else self.now() + seconds
            self.faults[method] = Fault(rate, latency_ms, times, code, message, until)

    def set_partial_results(
        self, message: str, drop: Mapping[str, str] | None = None, times: int | None = None
    ) -> None:
        """Make ListTimeSeries answer incompletely: series with the `drop` labels left out and
        `execution_errors` saying `message` (None message clears)."""
        with self._lock:
            self.partial = PartialResults(message, dict(drop or {}), times)

    def clear_partial_results(self) -> None:
        """ListTimeSeries answers completely again."""
        with self._lock:
            self.partial = None

    def take_partial(self) -> PartialResults | None:
        """The partial-results injection for one ListTimeSeries call (counts it down)."""
        with self._lock:
            p = self.partial
            if p is not None and p.times is not None:
                p.times -= 1
                if p.times <= 0:
                    self.partial = None
            return copy.deepcopy(p)

    def take_quota(self, method: str, resource: str) -> str:
        """Spend a read or write token of the resource's project and region; returns the
        RESOURCE_EXHAUSTED message when the bucket is empty ('' when the call may proceed)."""
        kind = "read" if method in READ_METHODS else "write" if method in WRITE_METHODS else ""
        m = re.match(r"projects/([^/]+)/locations/([^/]+)", resource)
        if not kind or m is None:
            return ""
        limit = self.quotas.read_per_minute if kind == "read" else self.quotas.write_per_minute
        if limit <= 0:
            return ""
        project, region = m.groups()
        with self._lock:
            now = self.now()
            key = (kind, project, region)
            bucket = self.buckets.setdefault(key, Bucket(limit, float(limit), now))
            if bucket.take(now):
                return ""
        title = kind.capitalize()
        return (
            f"Quota exceeded for quota metric '{title} requests' and limit '{title} requests "
            f"per minute per region' of service 'run.googleapis.com' for consumer "
            f"'project_number:{_project_number(project)}'."
        )

    def clear_faults(self) -> None:
        """Remove every injected fault."""
        with self._lock:
            self.faults.clear()

    def take_fault(self, method: str) -> tuple[float, Fault | None]:
        """Count a call of `method`; returns (seconds to delay, the fault to fail with)."""
        with self._lock:
            self.calls[method] += 1
            if method == "UpdateService":
                self.write_attempts += 1
            self._heal_outages()
            fault = self.faults.get(method) or self.faults.get("*")
            if fault is None:
                return 0.0, None
            return fault.latency_ms / 1000.0, self._draw_fault(method)

    def _heal_outages(self) -> None:
        now = self.now()
        if any(f.until is not None and now >= f.until for f in self.faults.values()):
            self.faults = {k: f for k, f in self.faults.items() if f.until is None or now < f.until}

    def _draw_fault(self, method: str) -> Fault | None:
        self._heal_outages()
        fault = self.faults.get(method) or (self.faults.get("*") if method != "Operation" else None)
        if fault is None or self.rng.random() >= fault.rate:
            return None
        if fault.times is not None:
            fault.times -= 1
            if fault.times <= 0:
                self.faults = {k: v for k, v in self.faults.items() if v is not fault}
        return copy.copy(fault)

    def reset_counters(self) -> None:
        """Zero the call and write counters."""
        with self._lock:
            self.calls.clear()
            self.writes = 0
            self.write_attempts = 0

    def set_dependency(
        self, name: str, body: Mapping[str, Any] | None = None, status_code: int = 200
    ) -> None:
        """Add or change a dependency health endpoint."""
        with self._lock:
            self.dependencies[name] = Dependency(
                name=name, status_code=status_code, body=dict(body or {"status": "healthy"})
            )
            self.version += 1

    # --- data plane -------------------------------------------------------------------------
    def route(self, project: str, region: str, service: str, tag: str) -> Revision:
        """The revision a request goes to: by tag, else by the applied split (weighted)."""
        with self._lock:
            self._settle()
            key = f"projects/{project}/locations/{region}/services/{service}"
            svc = self._service(key)
            if tag:
                match = [r for r in svc.statuses if r.tag == tag]
                if not match:
                    raise ApiError("NOT_FOUND", f"no traffic tag {tag!r} on service {service}")
                return copy.deepcopy(self.revisions[svc.revision_key(match[0].revision)])
            live = [r for r in svc.statuses if r.percent > 0]
            pick = self.rng.uniform(0, sum(r.percent for r in live))
            for r in live:
                pick -= r.percent
                if pick < 0:
                    break
            return copy.deepcopy(self.revisions[svc.revision_key(r.revision)])

    def record(
        self, project: str, region: str, service: str, revision: str, code: int, latency_ms: float
    ) -> None:
        """Remember one served request (it feeds ListTimeSeries)."""
        with self._lock:
            # Stamped under the lock, so records stay in time order (Cloud Logging reads them
            # by time range).
            rec = Record(self.now(), project, region, service, revision, code, latency_ms)
            self.records.append(rec)
            if len(self.records) > MAX_RECORDS:
                self.dropped += len(self.records) - MAX_RECORDS
                del self.records[: len(self.records) - MAX_RECORDS]
            self.version += 1

    def served_between(self, start: float, end: float) -> tuple[int, list[Record]]:
        """Served requests with `start < ts <= end` (records are kept in time order), and the
        running number of the first of them (for Cloud Logging insert ids)."""
        with self._lock:
            lo = bisect.bisect_right(self.records, start, key=lambda r: r.ts)
            hi = bisect.bisect_right(self.records, end, key=lambda r: r.ts)
            return self.dropped + lo, self.records[lo:hi]

    def served(self) -> list[Record]:
        """A copy of the served-request log."""
        with self._lock:
            return list(self.records)

    # --- persistence ------------------------------------------------------------------------
    def dump(self) -> dict[str, Any]:
        """Everything needed to restart in the same world (faults are not persisted)."""
        with self._lock:
            self._settle()
            return {
                "version": STATE_VERSION,
                "project": self.project,
                "region": self.region,
                "latency_mode": self.latency_mode,
                "latency_scale": self.latency_scale,
                "lro": {
                    "done": self.lro_done,
                    "polls": self.lro_polls,
                    "response": self.lro_response,
                },
                "clock_offset": self.clock_offset,
                "services": [_dump_service(s) for s in self.services.values()],
                "revisions": [
                    {**asdict(r), "key": k, "behavior": r.behavior.model_dump()}
                    for k, r in self.revisions.items()
                ],
                "records": [list(asdict(r).values()) for r in self.records],
                "dependencies": [d.model_dump() for d in self.dependencies.values()],
                "counters": {
                    "writes": self.writes,
                    "write_attempts": self.write_attempts,
                    "calls": dict(self.calls),
                },
            }

    def restore(self, state: Mapping[str, Any]) -> None:
        """Replace the world by a `dump()`."""
        if state.get("version") != STATE_VERSION:
            raise ApiError("FAILED_PRECONDITION", "unsupported emulator state file version")
        with self._lock:
            self.project = state["project"]
            self.region = state["region"]
            self.latency_mode = state["latency_mode"]
            self.latency_scale = state["latency_scale"]
            self.lro_done = state["lro"]["done"]
            self.lro_polls = state["lro"]["polls"]
            self.lro_response = state["lro"].get("response", "service")
            self.clock_offset = state["clock_offset"]
            self.services = {}
            for s in state["services"]:
                svc = _load_service(s)
                self.services[svc.key] = svc
            self.revisions = {
                r["key"]: Revision(
                    r["name"],
                    r["service"],
                    Behavior.model_validate(r["behavior"]),
                    r["created"],
                    r["generation"],
                )
                for r in state["revisions"]
            }
            self.records = [Record(*r) for r in state["records"]]
            self.dependencies = {
                d["name"]: Dependency.model_validate(d) for d in state["dependencies"]
            }
            self.writes = state["counters"]["writes"]
            self.write_attempts = state["counters"]["write_attempts"]
            self.calls = Counter(state["counters"]["calls"])
            self.operations = {}
            self.version += 1

    def save(self, path: Path) -> None:
        """Write the state file atomically."""
        data = json.dumps(self.dump())
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(data, encoding="utf-8")
        os.replace(tmp, path)


_STATUS_CODES = frozenset(get_args(StatusCode))
"""The `grpc.StatusCode` names a fault or an operation may answer (one list: the scenario's)."""


def _check_tag_length(tag: str, service: str) -> None:
    if len(tag) + len(service) > MAX_TAG_AND_SERVICE:
        raise ApiError(
            "INVALID_ARGUMENT",
            f"spec.traffic.tag: traffic tag '{tag}' and service name '{service}' together are "
            f"too long. Combined traffic tag and service name cannot exceed "
            f"{MAX_TAG_AND_SERVICE} characters.",
        )


def _project_number(project: str) -> int:
    # A stable fake project number, as Google's quota messages name the consumer by number.
    return int(hashlib.sha256(project.encode()).hexdigest()[:11], 16)


def _spec(svc: Service) -> tuple[Any, ...]:
    return (
        [(r.revision, r.percent, r.tag, r.latest) for r in svc.traffic],
        svc.revisions,
        svc.template,
        svc.template_revision,
        svc.labels,
        svc.annotations,
        svc.description,
    )


def _dump_service(svc: Service) -> dict[str, Any]:
    out = asdict(svc)
    out["template"] = svc.template.hex() if svc.template is not None else None
    return out


def _load_service(data: Mapping[str, Any]) -> Service:
    fields = dict(data)
    fields["traffic"] = [Route(**r) for r in fields["traffic"]]
    fields["statuses"] = [Route(**r) for r in fields["statuses"]]
    tpl = fields["template"]
    fields["template"] = bytes.fromhex(tpl) if tpl is not None else None
    return Service(**fields)
