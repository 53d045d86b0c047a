"""Send a run's notices (Slack, Google Chat, signed webhooks) after its records, bounded.

`notified(repo, run, ...)` wraps one run: it notes what state/ says before, runs, then
sends what the run did to the channels of each rollout file's `notify:` section. Sending
starts only once the run has written, committed and pushed its records, so it can never
delay a rollback; every request has a timeout, retries are few and the whole sending has a
time budget; a failed notice is a warning, never a failed run. Webhook URLs and keys are
read from the environment variables the file names and never printed.
"""

from __future__ import annotations

import concurrent.futures
import os
import time
import urllib.parse
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
from tenacity import (
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential,
)

from reconciler import redact
from reconciler.errors import ReconcileError
from reconciler.model import ServiceRef, ServiceStatus
from reconciler.notices import (
    DELIVERY_HEADER,
    EVENT_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    Notice,
    Seen,
    chat_body,
    event_of,
    notice_of,
    signature,
    slack_body,
    webhook_body,
)
from reconciler.spec import DEFAULTS_FILE, Channel, RolloutSpec, WebhookChannel

if TYPE_CHECKING:
    from reconciler.reconcile import RunResult, ServiceOutcome

BUDGET = 20.0
"""Seconds all of a run's notices may take together (retries included)."""
ATTEMPT_TIMEOUT = 5.0
ATTEMPTS = 3
REPORT_NAMES = ("final-latest.md", "interim-latest.md")


class _Transient(Exception):
    """A failure worth another attempt (network error, timeout, 429, 5xx)."""


@dataclass(frozen=True)
class Delivery:
    """One request to one channel: where (by env variable name), what, and why."""

    channel: str
    env: str
    url: str
    body: bytes
    headers: Mapping[str, str]
    notice: Notice
    secrets: tuple[str, ...] = ()


def notified(
    repo: Path,
    run: Callable[[], RunResult],
    *,
    warn: Callable[[str], None],
    now: Callable[[], datetime],
    environ: Mapping[str, str] | None = None,
    budget: float = BUDGET,
    enabled: bool = True,
) -> RunResult:
    """Run `run()` (an apply or a watch tick) and send the notices of what it did (nothing
    when not `enabled`, e.g. for a dry run)."""
    if not enabled:
        return run()
    before = snapshot(repo)
    result = run()
    try:
        deliveries = plan_deliveries(
            repo, result.outcomes, before, now=now(), environ=environ, warn=warn
        )
    except ReconcileError as exc:  # an unreadable rollout or state file: the run said so
        warn(f"notify: skipped ({exc})")
        return result
    send(deliveries, warn=warn, budget=budget)
    return result


def _wanting(repo: Path) -> dict[str, RolloutSpec]:
    """Every rollout whose file (or its folder's shared defaults) may configure `notify:`,
    by identity (`ServiceRef.key`): each region of a file with `waves:` is a rollout of its
    own. A cheap byte search first, so runs without notifications load nothing; a file that
    does not load is skipped (the run reports it)."""
    from reconciler.loader import find_rollout_files, load_spec
    from reconciler.waves import expand

    rollout = repo / "rollout"
    if not rollout.is_dir():
        return {}
    shared: dict[Path, bool] = {}

    def configures(path: Path) -> bool:
        folder = path.parent
        if folder not in shared:
            defaults = folder / DEFAULTS_FILE
            shared[folder] = defaults.is_file() and b"notify" in defaults.read_bytes()
        return shared[folder] or b"notify" in path.read_bytes()

    out: dict[str, RolloutSpec] = {}
    for path in find_rollout_files(rollout):
        try:
            if not path.is_file() or path.is_symlink() or not configures(path):
                continue
            spec = load_spec(path)
        except (OSError, ReconcileError):
            continue
        for region in expand(spec):
            out[ServiceRef(region.project, region.region, region.service).key] = region
    return out


def _seen(status: ServiceStatus | None) -> Seen | None:
    if status is None:
        return None
    verdict = status.verdict.outcome if status.verdict is not None else None
    return Seen(status.spec_id, status.stage, verdict)


def snapshot(repo: Path) -> dict[str, Seen]:
    """What state/ says now about each rollout that may send notices, by `ServiceRef.key`
    (every region of a file with `waves:`)."""
    from reconciler.state import read_status

    out: dict[str, Seen] = {}
    for key, spec in _wanting(repo).items():
        try:
            seen = _seen(read_status(repo, ServiceRef(spec.project, spec.region, spec.service)))
        except ReconcileError:
            continue
        if seen is not None:
            out[key] = seen
    return out


def plan_deliveries(
    repo: Path,
    outcomes: Sequence[ServiceOutcome],
    before: Mapping[str, Seen],
    *,
    now: datetime,
    environ: Mapping[str, str] | None = None,
    warn: Callable[[str], None] = lambda _m: None,
) -> list[Delivery]:
    """The requests to send for a run's outcomes (nothing for a rollout without `notify:`):
    what each outcome is (`notices.event_of`), and the notices its decision raised (a wave
    hold), each to the channels of its rollout file that want that event."""
    from reconciler.state import read_status

    env = os.environ if environ is None else environ
    wanting = _wanting(repo)
    repo_url = _repo_url(env)
    out: list[Delivery] = []
    for o in outcomes:
        if o.plan is None or o.error:
            continue
        spec = wanting.get(o.plan.ref.key)
        if spec is None or not spec.notify:
            continue
        event = event_of(
            o.plan,
            applied=o.applied,
            rolled_back=o.rolled_back,
            verdict=o.verdict,
            before=before.get(o.plan.ref.key),
            after=_seen(read_status(repo, o.plan.ref)),
        )
        events = [*([event] if event is not None else []), *o.notices]
        if not events:
            continue
        commit_url, report_url = _links(repo, repo_url, o)
        for each in events:
            notice = notice_of(
                each,
                o.plan,
                o.verdict,
                now=now,
                commit_url=commit_url,
                report_url=report_url,
                name=o.name,
            )
            for channel in spec.notify:
                if each in channel.on:
                    delivery = _delivery(channel, notice, env, warn)
                    if delivery is not None:
                        out.append(delivery)
    return out


def _links(repo: Path, repo_url: str | None, o: ServiceOutcome) -> tuple[str | None, str | None]:
    """The run's commit and the rollout's latest report on GitHub (None outside Actions)."""
    from reconciler.state import state_dir

    if repo_url is None or o.plan is None:
        return None, None
    commit_url = f"{repo_url}/commit/{o.commit}" if o.commit else None
    reports = state_dir(repo, o.plan.ref) / "reports"
    for name in REPORT_NAMES:
        if (reports / name).is_file():
            where = reports.relative_to(repo).as_posix()
            return commit_url, f"{repo_url}/blob/{o.commit or 'HEAD'}/{where}/{name}"
    return commit_url, None


def _repo_url(env: Mapping[str, str]) -> str | None:
    """The repository's web URL inside GitHub Actions (where links can point), else None."""
    server, name = env.get("GITHUB_SERVER_URL"), env.get("GITHUB_REPOSITORY")
    if not server or not name:
        return None
    return f"{server.rstrip('/')}/{name}"


def _who(notice: Notice) -> str:
    """`ion-api rollback`: the service as the run names it, and the event."""
    return f"{notice.name or notice.service} {notice.event}"


def _delivery(
    channel: Channel, notice: Notice, env: Mapping[str, str], warn: Callable[[str], None]
) -> Delivery | None:
    name = channel.url.env
    url = env.get(name, "")
    where = f"{channel.kind} (${name})"
    if not url:
        warn(f"notify: {_who(notice)}: {where} not sent, ${name} is not set")
        return None
    if not url.startswith(("https://", "http://")):
        warn(f"notify: {_who(notice)}: {where} not sent, not an http(s) URL")
        return None
    headers = {"Content-Type": "application/json; charset=utf-8"}
    secrets = tuple(secret_parts(url))
    if isinstance(channel, WebhookChannel):
        key = env.get(channel.secret.env, "")
        if not key:
            warn(
                f"notify: {_who(notice)}: {where} not sent, "
                f"${channel.secret.env} (its HMAC key) is not set"
            )
            return None
        body = webhook_body(notice)
        stamp = int(time.time())  # wall time: the receiver checks it against its own clock
        headers |= {
            EVENT_HEADER: notice.event,
            TIMESTAMP_HEADER: str(stamp),
            SIGNATURE_HEADER: signature(key.encode("utf-8"), stamp, body),
            DELIVERY_HEADER: uuid.uuid4().hex,
        }
        secrets += (key,)
    elif channel.kind == "slack":
        body = slack_body(notice)
    else:
        body = chat_body(notice)
    for secret in secrets:
        redact.register(secret)  # every sink (stderr, state/, commits) scrubs it from now on
    return Delivery(channel.kind, name, url, body, headers, notice, secrets)


def secret_parts(url: str) -> list[str]:
    """What of a webhook URL is secret: all of it, and its path and query alone (an error
    may show them without the host)."""
    parsed = urllib.parse.urlsplit(url)
    return [url, *(p for p in (parsed.path, parsed.query) if p not in ("", "/"))]


def send(
    deliveries: Sequence[Delivery],
    *,
    warn: Callable[[str], None],
    budget: float = BUDGET,
    client: httpx.Client | None = None,
) -> int:
    """Send every delivery (in parallel, retried, within `budget` seconds in all); warn for
    each one that failed. Returns how many were delivered."""
    if not deliveries:
        return 0
    deadline = time.monotonic() + budget
    own = client is None
    http = client or httpx.Client(follow_redirects=False)
    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=min(4, len(deliveries))) as pool:
            futures = {pool.submit(_send_one, http, d, deadline): d for d in deliveries}
            sent = 0
            for future, d in futures.items():
                error = future.result()
                if error is None:
                    sent += 1
                    continue
                warn(
                    f"notify: {_who(d.notice)}: {d.channel} (${d.env}) "
                    f"failed: {redact.scrub(error, d.secrets)}"
                )
            return sent
    finally:
        if own:
            http.close()


def _send_one(http: httpx.Client, d: Delivery, deadline: float) -> str | None:
    """None when delivered, else why not (may hold secrets: callers redact)."""
    attempts = 0

    def attempt() -> None:
        nonlocal attempts
        attempts += 1
        left = deadline - time.monotonic()
        if left <= 0:
            raise _Transient("out of time")
        try:
            response = http.post(
                d.url, content=d.body, headers=dict(d.headers), timeout=min(ATTEMPT_TIMEOUT, left)
            )
        except httpx.HTTPError as exc:
            raise _Transient(f"{type(exc).__name__}: {exc}") from None
        if response.status_code == 429 or response.status_code >= 500:
            raise _Transient(f"HTTP {response.status_code}")
        if response.status_code >= 300:
            raise ReconcileError(f"HTTP {response.status_code} (not retried)")

    retrying = Retrying(
        stop=stop_after_attempt(ATTEMPTS) | stop_after_delay(max(0.0, deadline - time.monotonic())),
        wait=wait_exponential(multiplier=0.5, max=4),
        retry=retry_if_exception_type(_Transient),
        reraise=True,
    )
    try:
        retrying(attempt)
    except (_Transient, ReconcileError) as exc:
        return f"{exc} after {attempts} attempt{'s' if attempts != 1 else ''}"
    return None
