"""`Emulator`: the gRPC control plane and the HTTP data plane over one world, in-process.

```python
with Emulator.start("scenario.yaml") as emu:       # or a dict, a Scenario, or None
    os.environ.update(emu.env)                     # CLOUD_RUN_EMULATOR_HOST=127.0.0.1:PORT
    emu.deploy("ion-api", "ion-api-00043-new", {"error_rate": 0.2})
    emu.load("ion-api", 500)                       # real HTTP requests, recorded
```
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from reconciler.emulator.control import Control, serve
from reconciler.emulator.dataplane import DataPlane, LoadResult, send_load
from reconciler.emulator.logs import DEFAULT_DELAY_SECONDS as DEFAULT_LOG_DELAY_SECONDS
from reconciler.emulator.logs import Logs
from reconciler.emulator.scenario import (
    Behavior,
    LroResponse,
    Scenario,
    ScenarioError,
    load_scenario,
)
from reconciler.emulator.world import ApiError, World

ENV_HOST = "CLOUD_RUN_EMULATOR_HOST"
ENV_HTTP = "CLOUD_RUN_EMULATOR_HTTP"
STATE_FLUSH_SECONDS = 0.5


class Emulator:
    """A running emulator. Build it with `Emulator.start(...)`; stop it with `stop()` or
    by leaving its `with` block."""

    def __init__(
        self,
        world: World,
        *,
        port: int = 0,
        http_port: int = 0,
        state: Path | None = None,
        log_delay: float = DEFAULT_LOG_DELAY_SECONDS,
    ) -> None:
        self.world = world
        self.logs = Logs(world, log_delay)
        self.state = state
        self.plane = DataPlane(world, self.admin, http_port)
        try:
            self.control = Control(world, self.plane.url_for)
            self._grpc, self.grpc_port = serve(self.control, port, extra=self.logs.handlers())
        except BaseException:
            self.plane.stop()
            raise
        self.plane.start()
        self._stopped = threading.Event()
        self._saver: threading.Thread | None = None
        if state is not None:
            self._saved = -1
            self._saver = threading.Thread(target=self._save_loop, name="emulator-state")
            self._saver.daemon = True
            self._saver.start()

    @classmethod
    def start(
        cls,
        scenario: Scenario | Mapping[str, Any] | str | Path | None = None,
        *,
        port: int = 0,
        http_port: int = 0,
        state: str | Path | None = None,
        latency_mode: Literal["real", "simulated"] | None = None,
        latency_scale: float | None = None,
        seed: int | None = None,
        log_delay: float = DEFAULT_LOG_DELAY_SECONDS,
    ) -> Emulator:
        """Start on 127.0.0.1 (port 0: a free port).

        `scenario`: a YAML path, a dict in the scenario format, a `Scenario`, or None for the
        built-in ion-api scenario. `state`: a JSON file loaded if it exists and kept up to date,
        so a restarted emulator sees the same world. `latency_mode="simulated"` records sampled
        latencies without sleeping (tests with p95 = 25 s finish at once); `latency_scale`
        multiplies real sleeps. Both override the scenario. `log_delay`: emulator seconds from
        a served request to its Cloud Logging request log entry.
        """
        sc = load_scenario(scenario)
        overrides: dict[str, Any] = {}
        if latency_mode is not None:
            overrides["latency_mode"] = latency_mode
        if latency_scale is not None:
            overrides["latency_scale"] = latency_scale
        if seed is not None:
            overrides["seed"] = seed
        world = World(sc.model_copy(update=overrides))
        path = Path(state) if state is not None else None
        if path is not None and path.exists():
            try:
                world.restore(json.loads(path.read_text(encoding="utf-8")))
            except (ValueError, KeyError, TypeError, ApiError) as exc:
                raise ScenarioError(f"{path}: not a usable emulator state file ({exc})") from None
            world.latency_mode = overrides.get("latency_mode", world.latency_mode)
            world.latency_scale = overrides.get("latency_scale", world.latency_scale)
        return cls(world, port=port, http_port=http_port, state=path, log_delay=log_delay)

    def stop(self) -> None:
        """Stop both servers (and write the state file one last time)."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        self._grpc.stop(grace=0.1).wait(timeout=5)
        self.plane.stop()
        if self._saver is not None:
            self._saver.join(timeout=5)
        self.save()

    def __enter__(self) -> Emulator:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _save_loop(self) -> None:
        while not self._stopped.wait(STATE_FLUSH_SECONDS):
            self.save()

    def save(self) -> None:
        """Write the state file now if the world changed since the last write."""
        if self.state is None or self._saved == self.world.version:
            return
        version = self.world.version
        self.world.save(self.state)
        self._saved = version

    # --- addresses --------------------------------------------------------------------------
    @property
    def grpc_target(self) -> str:
        """`127.0.0.1:PORT` of the gRPC control plane (the CLOUD_RUN_EMULATOR_HOST value)."""
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def http_port(self) -> int:
        """Port of the HTTP data plane."""
        return self.plane.port

    @property
    def http_url(self) -> str:
        """`http://127.0.0.1:PORT` of the HTTP data plane (service URLs, /metrics, admin)."""
        return self.plane.url

    @property
    def env(self) -> dict[str, str]:
        """Environment variables that point the reconciler's clients at this emulator."""
        return {ENV_HOST: self.grpc_target, ENV_HTTP: self.http_url}

    @property
    def project(self) -> str:
        """The scenario's default project."""
        return self.world.project

    @property
    def region(self) -> str:
        """The scenario's default region."""
        return self.world.region

    def service_name(self, service: str) -> str:
        """Full resource name of a service given by short name."""
        return self.world.find_service(service).key

    def url(self, service: str, tag: str = "") -> str:
        """Data-plane URL of a service, or of one of its traffic tags."""
        return self.plane.url_for(self.world.find_service(service), tag)

    def dependency_url(self, name: str) -> str:
        """URL of a scenario dependency; append e.g. `/api/health`."""
        return f"{self.http_url}/deps/{name}"

    # --- counters ---------------------------------------------------------------------------
    @property
    def writes(self) -> int:
        """Successful UpdateService calls (validate_only and refused calls excluded)."""
        return self.world.writes

    @property
    def write_attempts(self) -> int:
        """UpdateService calls received, whatever became of them."""
        return self.world.write_attempts

    @property
    def calls(self) -> dict[str, int]:
        """gRPC calls received per method name (`GetService`, `ListTimeSeries`, ...)."""
        return dict(self.world.calls)

    def reset_counters(self) -> None:
        """Zero `writes`, `write_attempts` and `calls`."""
        self.world.reset_counters()

    # --- admin ------------------------------------------------------------------------------
    def deploy(
        self,
        service: str,
        revision: str | None = None,
        behavior: Mapping[str, Any] | None = None,
        *,
        ready: bool = True,
    ) -> str:
        """Deploy a new revision with no traffic (as CI's `gcloud run deploy --no-traffic`);
        returns its name (generated as `<service>-NNNNN-abc` when not given). `ready=False`:
        its container cannot start, so routing traffic to it fails."""
        beh = dict(behavior or {})
        if not ready:
            beh["ready"] = False
        return self.world.deploy(service, revision, beh)

    def behave(
        self, revision: str, changes: Mapping[str, Any] | None = None, **kw: Any
    ) -> Behavior:
        """Change a revision's behaviour, e.g. `behave("ion-api-00042-xyz", error_rate=0.2)`."""
        return self.world.behave(revision, {**(changes or {}), **kw})

    def fault(
        self,
        method: str = "*",
        rate: float = 1.0,
        latency_ms: float = 0.0,
        times: int | None = None,
        code: str = "UNAVAILABLE",
        message: str = "",
        seconds: float | None = None,
    ) -> None:
        """Inject faults into a gRPC method (`GetService`, `UpdateService`, ... or `*`), or into
        the result of UpdateService's operation (`Operation`: the write is accepted, its
        operation fails and the old split keeps serving): status `code` with probability
        `rate`, after `latency_ms`; `times` heals the fault after that many failures,
        `seconds` after that long in emulator time (an outage; `advance_clock` ends it too)."""
        self.world.set_fault(method, rate, latency_ms, times, code, message, seconds)

    def partial_results(
        self,
        message: str = "Some time series could not be read; the results are incomplete.",
        drop: Mapping[str, str] | None = None,
        times: int | None = None,
    ) -> None:
        """Make ListTimeSeries incomplete: series with all the `drop` labels (flat keys such as
        `metric.labels.response_code_class`) left out, `execution_errors` saying `message`."""
        self.world.set_partial_results(message, drop, times)

    def clear_partial_results(self) -> None:
        """ListTimeSeries answers completely again."""
        self.world.clear_partial_results()

    def clear_faults(self) -> None:
        """Remove every injected fault."""
        self.world.clear_faults()

    def lro(self, done: bool, polls: int = 1, response: LroResponse = "service") -> None:
        """UpdateService operations: already done, or pending for `polls` GetOperation calls;
        `response="no-status"`: a completed one's response leaves out what serves."""
        self.world.set_lro(done, polls, response)

    def drift(
        self, service: str, traffic: Mapping[str, int], tags: Mapping[str, str] | None = None
    ) -> None:
        """Change live traffic by hand (applied at once, not counted in `writes`), e.g.
        `drift("ion-api", {"ion-api-00041-abc": 80, "ion-api-00042-xyz": 20})`."""
        self.world.drift(service, traffic, tags)

    def load(
        self,
        service: str,
        n: int,
        *,
        tag: str = "",
        path: str = "/",
        method: str = "GET",
        json_body: Any = None,
        concurrency: int = 8,
    ) -> LoadResult:
        """Send `n` real HTTP requests through the data plane (so they are measured)."""
        return send_load(
            self.url(service, tag),
            n,
            path=path,
            method=method,
            json_body=json_body,
            concurrency=concurrency,
        )

    def advance_clock(self, seconds: float) -> None:
        """Move emulator time forward; later requests are stamped in the future."""
        self.world.advance_clock(seconds)

    def now(self) -> datetime:
        """Emulator time (wall clock plus `advance_clock` offsets)."""
        return datetime.fromtimestamp(self.world.now(), tz=UTC)

    def set_dependency(
        self, name: str, body: Mapping[str, Any] | None = None, status_code: int = 200
    ) -> None:
        """Add or change a dependency endpoint served at `dependency_url(name)`."""
        self.world.set_dependency(name, body, status_code)

    def status(self) -> dict[str, Any]:
        """Addresses, counters and every service's live traffic (admin `status`)."""
        services = []
        for svc in self.world.list_services(f"projects/{self.project}/locations/-"):
            services.append(
                {
                    "name": svc.key,
                    "url": self.plane.url_for(svc),
                    "failure": svc.failure,
                    "generation": svc.generation,
                    "revisions": svc.revisions,
                    "traffic": [
                        {"revision": r.revision, "percent": r.percent, "tag": r.tag}
                        for r in svc.statuses
                    ],
                }
            )
        return {
            "grpc_target": self.grpc_target,
            "http_url": self.http_url,
            "writes": self.writes,
            "write_attempts": self.write_attempts,
            "calls": self.calls,
            "now": self.now().isoformat(),
            "services": services,
        }

    def admin(self, op: str, p: Mapping[str, Any]) -> Mapping[str, Any]:
        """The admin API behind `{http_url}/_emulator/{op}` (used by `reconcile emulator`)."""
        if op == "status":
            return self.status()
        if op == "deploy":
            name = self.deploy(
                p["service"], p.get("revision"), p.get("behavior"), ready=bool(p.get("ready", True))
            )
            return {"revision": name}
        if op == "behave":
            return {"behavior": self.behave(p["revision"], p["behavior"]).model_dump()}
        if op == "fault":
            self.fault(
                p.get("method", "*"),
                float(p.get("rate", 1.0)),
                float(p.get("latency_ms", 0.0)),
                p.get("times"),
                str(p.get("code", "UNAVAILABLE")),
                str(p.get("message", "")),
                None if p.get("seconds") is None else float(p["seconds"]),
            )
            return {"ok": True}
        if op == "partial-results":
            if p.get("clear"):
                self.clear_partial_results()
            else:
                self.partial_results(str(p["message"]), p.get("drop"), p.get("times"))
            return {"ok": True}
        if op == "clear-faults":
            self.clear_faults()
            return {"ok": True}
        if op == "load":
            result = self.load(
                p["service"],
                int(p["n"]),
                tag=p.get("tag", ""),
                path=p.get("path", "/"),
                method=p.get("method", "GET"),
                json_body=p.get("json"),
                concurrency=int(p.get("concurrency", 8)),
            )
            return result.to_dict()
        if op == "lro":
            self.lro(bool(p["done"]), int(p.get("polls", 1)), p.get("response", "service"))
            return {"ok": True}
        if op == "drift":
            self.drift(p["service"], p["traffic"], p.get("tags"))
            return {"ok": True}
        if op == "clock":
            self.advance_clock(float(p["advance_seconds"]))
            return {"now": self.now().isoformat()}
        if op == "dependency":
            self.set_dependency(p["name"], p.get("body"), int(p.get("status_code", 200)))
            return {"ok": True}
        if op == "reset-counters":
            self.reset_counters()
            return {"ok": True}
        raise ApiError("NOT_FOUND", f"unknown admin operation {op!r}")


__all__ = ["ENV_HOST", "ENV_HTTP", "Emulator", "LoadResult"]
