"""`reconcile emulator ...`: run the emulator, and steer a running one through its admin API.

Only click is imported at module level; the servers load inside `serve`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from reconciler.errors import ReconcileError

ENV_HTTP = "CLOUD_RUN_EMULATOR_HTTP"

url_option = click.option(
    "--url",
    envvar=ENV_HTTP,
    required=True,
    help=f"HTTP URL of the running emulator (default: ${ENV_HTTP}, printed by `serve`).",
)


def admin_call(url: str, op: str, payload: dict[str, Any]) -> dict[str, Any]:
    """POST one admin operation to a running emulator; its JSON answer."""
    import urllib.error
    import urllib.request

    request = urllib.request.Request(
        f"{url.rstrip('/')}/_emulator/{op}",
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=600) as resp:
            answer: dict[str, Any] = json.loads(resp.read())
            return answer
    except urllib.error.HTTPError as exc:
        try:
            reason = json.loads(exc.read()).get("error", exc.reason)
        except ValueError:
            reason = exc.reason
        raise ReconcileError(f"emulator at {url}: {op}: {reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise ReconcileError(f"emulator at {url} is not reachable: {exc}") from None


def _json_option(value: str | None, what: str) -> Any:
    if value is None:
        return None
    try:
        return json.loads(value)
    except ValueError as exc:
        raise click.BadParameter(f"{what} is not valid JSON: {exc}") from None


def _behavior(
    error_rate: float | None,
    client_error_rate: float | None,
    p50: float | None,
    p95: float | None,
    raw: str | None,
) -> dict[str, Any]:
    out: dict[str, Any] = dict(_json_option(raw, "--behavior") or {})
    if error_rate is not None:
        out["error_rate"] = error_rate
    if client_error_rate is not None:
        out["client_error_rate"] = client_error_rate
    if p50 is not None or p95 is not None:
        low = p50 if p50 is not None else p95
        out["latency_ms"] = {"p50": low, "p95": p95 if p95 is not None else low}
    return out


def behavior_options(f: Any) -> Any:
    """--error-rate, --client-error-rate, --p50, --p95, --behavior."""
    for opt in reversed(
        [
            click.option("--error-rate", type=click.FloatRange(0, 1), help="Share of 500s."),
            click.option("--client-error-rate", type=click.FloatRange(0, 1), help="Share of 429s."),
            click.option("--p50", type=click.FloatRange(min=0, min_open=True), help="p50 ms."),
            click.option("--p95", type=click.FloatRange(min=0, min_open=True), help="p95 ms."),
            click.option("--behavior", "raw", help="Behaviour as JSON (scenario format)."),
        ]
    ):
        f = opt(f)
    return f


def _echo(data: dict[str, Any]) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True))


@click.group()
def emulator() -> None:
    """Local Cloud Run Admin v2 + Monitoring v3 emulator (gRPC) and its HTTP data plane.

    \b
    Start one, export what it prints, then use the reconciler as usual:
      reconcile emulator serve --scenario scenario.yaml --state .emulator.json &
      export CLOUD_RUN_EMULATOR_HOST=127.0.0.1:8790 CLOUD_RUN_EMULATOR_HTTP=...
      reconcile emulator load ion-api -n 500
    """


@emulator.command()
@click.option("--port", default=8790, show_default=True, help="gRPC port (0: a free port).")
@click.option("--http-port", default=8791, show_default=True, help="HTTP port (0: a free port).")
@click.option(
    "--scenario",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Scenario YAML (default: the built-in ion-api scenario).",
)
@click.option(
    "--state",
    type=click.Path(dir_okay=False, path_type=Path),
    help="JSON file holding the world across restarts (loaded if it exists, kept up to date).",
)
@click.option(
    "--simulate-latency",
    is_flag=True,
    help="Record sampled latencies without sleeping (fast, but clients see no delay).",
)
@click.option(
    "--latency-scale",
    type=click.FloatRange(min=0),
    help="Multiply real sleeps by this factor (e.g. 0.01 for demos with 10 s latencies).",
)
@click.option("--seed", type=int, help="Seed for traffic splitting and behaviour draws.")
def serve(
    port: int,
    http_port: int,
    scenario: Path | None,
    state: Path | None,
    simulate_latency: bool,
    latency_scale: float | None,
    seed: int | None,
) -> None:
    """Run the emulator in the foreground until interrupted (Ctrl-C or SIGTERM).

    Prints the `export CLOUD_RUN_EMULATOR_HOST=...` lines to paste. Service URLs are
    `http://127.0.0.1:HTTP_PORT/run/PROJECT/REGION/SERVICE`, tag URLs `.../TAG---SERVICE`.
    """
    import signal
    import threading

    from reconciler.emulator.server import ENV_HOST, Emulator

    try:
        emu = Emulator.start(
            scenario,
            port=port,
            http_port=http_port,
            state=state,
            latency_mode="simulated" if simulate_latency else None,
            latency_scale=latency_scale,
            seed=seed,
        )
    except OSError as exc:
        raise ReconcileError(f"emulator: cannot listen on 127.0.0.1 ({exc})") from None
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    click.echo(f"export {ENV_HOST}={emu.grpc_target}")
    click.echo(f"export {ENV_HTTP}={emu.http_url}")
    for svc in emu.status()["services"]:
        click.echo(f"# {svc['name']} -> {svc['url']}", err=True)
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        emu.stop()


@emulator.command()
@url_option
def status(url: str) -> None:
    """Addresses, API call counters and every service's live traffic."""
    _echo(admin_call(url, "status", {}))


@emulator.command()
@url_option
@click.argument("service")
@click.option("--revision", help="Name of the new revision (default: generated).")
@click.option(
    "--not-ready",
    is_flag=True,
    help="Its container cannot start: traffic written to it ends in a failed operation.",
)
@behavior_options
def deploy(
    url: str,
    service: str,
    revision: str | None,
    not_ready: bool,
    error_rate: float | None,
    client_error_rate: float | None,
    p50: float | None,
    p95: float | None,
    raw: str | None,
) -> None:
    """Deploy a new revision of SERVICE with no traffic; prints its name."""
    beh = _behavior(error_rate, client_error_rate, p50, p95, raw)
    payload = {"service": service, "revision": revision, "behavior": beh, "ready": not not_ready}
    click.echo(admin_call(url, "deploy", payload)["revision"])


@emulator.command()
@url_option
@click.argument("revision")
@behavior_options
def behave(
    url: str,
    revision: str,
    error_rate: float | None,
    client_error_rate: float | None,
    p50: float | None,
    p95: float | None,
    raw: str | None,
) -> None:
    """Change how REVISION answers (error rate, latency, bodies)."""
    beh = _behavior(error_rate, client_error_rate, p50, p95, raw)
    if not beh:
        raise click.UsageError("nothing to change: give --error-rate, --p50/--p95 or --behavior")
    _echo(admin_call(url, "behave", {"revision": revision, "behavior": beh}))


@emulator.command()
@url_option
@click.option(
    "--method",
    default="*",
    show_default=True,
    help="gRPC method, e.g. GetService; `Operation`: the result of UpdateService's operation.",
)
@click.option(
    "--rate",
    type=click.FloatRange(0, 1),
    default=1.0,
    show_default=True,
    help="Share of calls failing with --code.",
)
@click.option(
    "--code",
    default="UNAVAILABLE",
    show_default=True,
    help="gRPC status code name, e.g. INTERNAL, ABORTED, RESOURCE_EXHAUSTED.",
)
@click.option("--message", default="", help="The error message (default: a generic one).")
@click.option(
    "--latency-ms",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Delay added to every call.",
)
@click.option("--times", type=click.IntRange(min=1), help="Heal after this many failures.")
@click.option(
    "--seconds",
    type=click.FloatRange(min=0, min_open=True),
    help="Heal after this many seconds of emulator time (an outage of a set length).",
)
@click.option("--clear", is_flag=True, help="Remove every injected fault.")
def fault(
    url: str,
    method: str,
    rate: float,
    code: str,
    message: str,
    latency_ms: float,
    times: int | None,
    seconds: float | None,
    clear: bool,
) -> None:
    """Inject errors (any status code) and latency into the gRPC API."""
    if clear:
        admin_call(url, "clear-faults", {})
        return
    payload = {"method": method, "rate": rate, "latency_ms": latency_ms, "code": code.upper()}
    admin_call(url, "fault", {**payload, "times": times, "seconds": seconds, "message": message})


@emulator.command("partial-results")
@url_option
@click.option(
    "--drop",
    "drops",
    multiple=True,
    help="LABEL=VALUE a series must have to be left out, e.g. "
    "metric.labels.response_code_class=5xx (repeatable).",
)
@click.option(
    "--message",
    default="Some time series could not be read; the results are incomplete.",
    show_default=True,
)
@click.option("--times", type=click.IntRange(min=1), help="Only the next N ListTimeSeries calls.")
@click.option("--clear", is_flag=True, help="Answer completely again.")
def partial_results(
    url: str, drops: tuple[str, ...], message: str, times: int | None, clear: bool
) -> None:
    """Make ListTimeSeries answer incompletely, with `execution_errors` saying so."""
    if clear:
        admin_call(url, "partial-results", {"clear": True})
        return
    try:
        drop = dict(d.split("=", 1) for d in drops)
    except ValueError:
        raise click.BadParameter("use --drop LABEL=VALUE") from None
    admin_call(url, "partial-results", {"message": message, "drop": drop, "times": times})


@emulator.command()
@url_option
@click.argument("service")
@click.option("-n", "--requests", "n", type=click.IntRange(min=1), default=100, show_default=True)
@click.option("--tag", default="", help="Send to a tag URL instead of the service URL.")
@click.option("--path", default="/", show_default=True)
@click.option("--method", default="GET", show_default=True)
@click.option("--json", "body", help="JSON request body.")
@click.option("--concurrency", type=click.IntRange(min=1), default=8, show_default=True)
def load(
    url: str,
    service: str,
    n: int,
    tag: str,
    path: str,
    method: str,
    body: str | None,
    concurrency: int,
) -> None:
    """Send N real requests to SERVICE through the data plane (they feed the metrics)."""
    payload = {
        "service": service,
        "n": n,
        "tag": tag,
        "path": path,
        "method": method,
        "json": _json_option(body, "--json"),
        "concurrency": concurrency,
    }
    _echo(admin_call(url, "load", payload))


@emulator.command()
@url_option
@click.argument("service")
@click.argument("split", nargs=-1, required=True)
@click.option("--tag", "tags", multiple=True, help="TAG=REVISION (repeatable).")
def drift(url: str, service: str, split: tuple[str, ...], tags: tuple[str, ...]) -> None:
    """Change SERVICE's traffic by hand, e.g. `drift ion-api ion-api-00041-abc=80 ...=20`."""
    try:
        traffic = {rev: int(pct) for rev, pct in (s.split("=", 1) for s in split)}
        tag_map = dict(t.split("=", 1) for t in tags)
    except ValueError:
        raise click.BadParameter("use REVISION=PERCENT and --tag TAG=REVISION") from None
    admin_call(url, "drift", {"service": service, "traffic": traffic, "tags": tag_map})


@emulator.command()
@url_option
@click.option("--pending/--done", default=False, help="Operations pending or already done.")
@click.option(
    "--polls",
    type=click.IntRange(min=0),
    default=1,
    show_default=True,
    help="GetOperation calls answered done=false.",
)
@click.option(
    "--response",
    type=click.Choice(["service", "no-status"]),
    default="service",
    show_default=True,
    help="A completed operation's response: the Service, or the Service without what serves.",
)
def lro(url: str, pending: bool, polls: int, response: str) -> None:
    """How UpdateService's long-running operations complete."""
    admin_call(url, "lro", {"done": not pending, "polls": polls, "response": response})


@emulator.command()
@url_option
@click.argument("amount")
def clock(url: str, amount: str) -> None:
    """Move emulator time forward by AMOUNT (`+5m`, `90s`, `1h`, or plain seconds); prints
    the new emulator time. With CLOUD_RUN_EMULATOR_HOST set the reconciler reads this clock,
    so windows, bake and ingestion delays pass without waiting."""
    from reconciler.spec import parse_duration

    text = amount.strip().removeprefix("+")
    try:
        seconds = float(text)
    except ValueError:
        try:
            seconds = parse_duration(text).total_seconds()
        except ValueError as exc:
            raise click.BadParameter(f"{amount!r}: {exc}", param_hint="AMOUNT") from None
    if seconds < 0:
        raise click.BadParameter("the clock only moves forward", param_hint="AMOUNT")
    click.echo(admin_call(url, "clock", {"advance_seconds": seconds})["now"])
