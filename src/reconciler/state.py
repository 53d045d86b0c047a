"""The observed state the reconciler commits to git: `state/<project>/<region>/<service>/`.

```
state/P/R/S/status.yaml            what is live and what was judged, rewritten every run
state/P/R/S/events.jsonl           what the reconciler did, append-only, newest last
state/P/R/S/windows-YYYY-MM-DD.H.jsonl  one compact line per revision per record: the
                                   windows measured since the last record, rolled up
                                   (H: `day_file_hash`, six hex digits)
state/P/R/S/metrics/*.jsonl        the windows as older versions wrote them (day files,
                                   month files): read and pruned, never written
```

One folder per rollout identity (`ServiceRef`: project, region, service), so the same service
id in two regions or projects keeps two histories (`statemigrate` moves the older
`state/<service>/` layout here).

Diff-friendly: every file has a fixed key order and deterministic formatting, so a run that
observes nothing new writes identical bytes and a run that does changes only a few lines.
Times are written in UTC as `2026-05-01T12:00:00Z`.

Bounded growth:
- `status.yaml` keeps the provisional windows and the newest final one per revision and
  window length, the newest `RECORDED_WINDOWS` while a gate has a failing streak
  (`recorded_windows`; the stable revision's only when a `vs_stable` gate reads them,
  `status_unread`): where the next run's measuring starts and what a verdict reports;
  failing streaks are counters (`streaks`), so `consecutive_failures` does not depend on how
  many windows are kept, and older windows are in the metrics files. A window there holds
  what the judge reads back (`_stats_to_data`): its counts and its p95 rounded up to
  `P95_DIGITS` significant digits; p50, p99 (null there) and the rates are in the metrics
  files.
- `events.jsonl` keeps the newest `MAX_EVENTS` events; older ones are dropped from the file
  (every event was committed, so `git log -p` still has them).
- metrics go to one file per UTC day (by window end), appended to, never rewritten, in a
  compact line format (`_metric_to_data`), the consecutive windows of a record rolled up
  into one line per revision (readers take windows of any length, `WindowStats.rolled`);
  the files of the newest `METRICS_MONTHS` calendar months are kept, older ones are deleted
  (again, git history keeps them). Older versions wrote one line per window, and before
  that one rewritten file a month (`YYYY-MM.jsonl`, full keys): both are still read.
- a day file's name ends in a short hash of the rollout's identity and the day
  (`day_file_hash`), because git's delta search pairs files by about the last 16 characters
  of their paths: every rollout's `YYYY-MM-DD.jsonl` looked the same to it, so a day file's
  versions were stored almost whole instead of as the lines each record added
  (benchmarks/README.md, "Repository growth").
- the day files sit beside status.yaml, not in a `metrics/` folder of their own as older
  versions wrote them: every record rewrote that folder's tree as well as the service's (git
  stores a small tree whole when two of its hashes change), a fixed cost per record.
  Everything older versions wrote in `metrics/` (`YYYY-MM-DD.<hash>.jsonl`,
  `YYYY-MM-DD.jsonl`, `YYYY-MM.jsonl`) is still read and pruned, never moved, renamed or
  written to (nothing is appended to a day after its day): on the day of an upgrade a day's
  lines sit in both places, and each window is read once. An older version reads
  `metrics/` only: it misses the windows written here (docs/git-and-state.md, "Metrics
  lines").

Sinks defend themselves: every path goes through `safepath` (no symbolic link anywhere under
`state/`, nothing outside the repository), every string is scrubbed of probe secrets
(`redact`), and every line separator Python's `str.splitlines` knows (U+2028, U+2029, NEL ...)
is escaped in JSON lines and double-quoted in YAML, so no reader ever splits a record.
Readers never trust a file: a line that does not parse is skipped and reported
(`read_events_salvaged`), and `load_status` salvages what it can of a corrupt status file and
says what it dropped, so one bad file never disables its service's rollback.

status.yaml and events.jsonl are replaced atomically (temporary file in the same directory,
rename): a crashed process leaves the old file or the new one, never half a line. Metrics
lines are appended: a crash can leave at most one cut line, which readers skip and the next
append closes with a newline. Nothing is fsynced (it cost seconds a run at 1,000 services):
the durable copy of the state is the pushed commit. Readers sort by time and drop repeated
windows, so lines merged by git's `union` merge driver (see `gitops.py`) read back in order,
once.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import logging
import math
import os
import re
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import ROUND_CEILING, Context, Decimal
from pathlib import Path
from typing import Any

import yaml

from reconciler import blockyaml, redact, safepath, yamlvalues
from reconciler.analysis import VS_STABLE
from reconciler.errors import ReconcileError
from reconciler.model import (
    MAX_WINDOWS,
    Coverage,
    Event,
    EventKind,
    LatencyBucket,
    Phase,
    ProbeRecord,
    ServiceRef,
    ServiceStatus,
    Streak,
    Target,
    TrafficSplit,
    Verdict,
    WindowStats,
    format_time,
    keep_windows,
    stage_since,
    verdict_from_data,
    verdict_to_data,
)
from reconciler.spec import PROJECT_RE, REGION_RE, SERVICE_RE
from reconciler.stats import bucket_percentile, roll_up

__all__ = [
    "DAY_FILE_HASH_DIGITS",
    "MAX_EVENTS",
    "MAX_WINDOWS",
    "METRICS_MONTHS",
    "P95_DIGITS",
    "RECORDED_WINDOWS",
    "STATUS_SCHEMA",
    "Event",
    "EventKind",
    "Phase",
    "ProbeRecord",
    "ServiceStatus",
    "StateError",
    "StatusLoad",
    "Streak",
    "append_events",
    "append_lines",
    "append_metrics",
    "atomic_write_text",
    "day_file_hash",
    "events_path",
    "format_time",
    "keep_windows",
    "load_status",
    "metrics_path",
    "parse_time",
    "read_events",
    "read_events_salvaged",
    "read_metrics",
    "read_status",
    "recorded_windows",
    "stage_since",
    "state_dir",
    "state_refs",
    "status_path",
    "status_unread",
    "with_windows",
    "write_status",
]

STATUS_SCHEMA = 1
RECORDED_WINDOWS = 2
"""Final windows per revision and length `status.yaml` keeps while a gate has a failing
streak (one otherwise; see `recorded_windows`)."""
P95_DIGITS = 6
"""Significant digits of a window's p95 in `status.yaml`, rounded up (`_up`): a relative
change below 1e-5, where Cloud Run's latency buckets are 15% wide."""
MAX_EVENTS = 1000
METRICS_MONTHS = 3
DAY_FILE_HASH_DIGITS = 6
"""Hex digits of `day_file_hash` in a day file's name: 1,000 rollouts' files of a day then
fall in about as many of git's name-hash groups, at most two to a group."""
_SERVICE = re.compile(SERVICE_RE)
_PROJECT = re.compile(PROJECT_RE)
_REGION = re.compile(REGION_RE)
_DAY_FILE = re.compile(r"^windows-(\d{4}-\d{2}-\d{2})\.[0-9a-f]+\.jsonl$")
"""A day file's name in the service folder: a day and a hash (`windows-2026-05-01.3fa2c1.jsonl`;
any hex hash, so a folder moved to another identity by hand keeps its history). Nothing else
in that folder is ever read as metrics or pruned."""
_OLD_METRICS = "metrics"
"""The folder older versions wrote their metrics files in, still read and pruned."""
_OLD_METRICS_FILE = re.compile(
    r"^(\d{4}-\d{2}-\d{2})\.[0-9a-f]+\.jsonl$|^(\d{4}-\d{2}(?:-\d{2})?)\.jsonl$"
)
"""A metrics file's name in `metrics/`, as older versions named them: a day and a hash
(`2026-05-01.3fa2c1.jsonl`), a day (`2026-05-01.jsonl`) or a month (`2026-05.jsonl`)."""
log = logging.getLogger(__name__)
# What `str.splitlines` splits on beyond `\n` and `\r` that `json.dumps` leaves raw: a
# record holding one would become two lines for any reader that splits lines that way.
_LINE_BREAKS = {"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"}
_SPLITS = frozenset("\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")


# libyaml when PyYAML has it: a plan reads every service's status file, and the pure-Python
# loader takes ~10x longer on them (same constructor and resolver, so the same values).
_BaseLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _SafeLoader(yamlvalues.CachedResolver, _BaseLoader):  # type: ignore[misc]
    """The safe loader (on libyaml when there), each scalar's tag resolved once."""


_STR, _INT, _NULL, _BOOL, _SEQ, _MAP = (
    f"tag:yaml.org,2002:{t}" for t in ("str", "int", "null", "bool", "seq", "map")
)


def _load_yaml(text: str) -> Any:
    """`yaml.load(text, Loader=_SafeLoader)`, the common nodes of a state file built by
    `yamlvalues` (half the cost of the constructor's generic path, which reads every status
    file of a run); any other node, and any document with an alias, goes through the
    SafeConstructor: the same values. A text `blockyaml` wrote (the usual status file) is
    read by it, kept only when written again it gives the same text (see `blockyaml`)."""
    fast = blockyaml.parse(text)
    if fast is not None and blockyaml.text(fast, _scalar_tag) == text:
        return fast
    loader = _SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        try:
            return yamlvalues.build(loader, node)
        except yamlvalues.Unusual:
            return loader.construct_document(node)
    finally:
        loader.dispose()


class StateError(ReconcileError):
    """A state file cannot be read or a service name is not usable as a path."""


# --- paths ----------------------------------------------------------------------------------
def state_dir(root: Path, ref: ServiceRef) -> Path:
    """`<root>/state/<project>/<region>/<service>`, after checking each id.

    The id rules (project, region and service ids: lowercase letters, digits, hyphens)
    already exclude `..`, `/` and every other way out of `state/`; the safe-path check
    refuses a symbolic link on the way.
    """
    return _service_file(root, ref)


def status_path(root: Path, ref: ServiceRef) -> Path:
    """`state/<project>/<region>/<service>/status.yaml`."""
    return _service_file(root, ref, "status.yaml")


def events_path(root: Path, ref: ServiceRef) -> Path:
    """`state/<project>/<region>/<service>/events.jsonl`."""
    return _service_file(root, ref, "events.jsonl")


def metrics_path(root: Path, ref: ServiceRef, when: datetime) -> Path:
    """`state/<project>/<region>/<service>/windows-YYYY-MM-DD.<hash>.jsonl` for the UTC day
    of `when`, `<hash>` being `day_file_hash(ref, day)`.

    One file a day keeps what a run appends to small (a day of windows, not a month's):
    git hashes and compresses the whole file each commit, so a run costs the same on the
    last day of a month as on the first. Beside status.yaml, not in a folder of their own:
    every record rewrote that folder's tree too (stored whole by git, a fixed cost per
    record). Older versions wrote `metrics/YYYY-MM-DD.<hash>.jsonl`,
    `metrics/YYYY-MM-DD.jsonl` and `metrics/YYYY-MM.jsonl`; they are read.
    """
    day = _utc(when).strftime("%Y-%m-%d")
    return _service_file(root, ref, _day_file_name(ref, day))


def _day_file_name(ref: ServiceRef, day: str) -> str:
    """The name of the rollout's day file of `day` (`YYYY-MM-DD`)."""
    return f"windows-{day}.{day_file_hash(ref, day)}.jsonl"


def day_file_hash(ref: ServiceRef, day: str) -> str:
    """The first `DAY_FILE_HASH_DIGITS` hex digits of SHA-256 of `<ref.key>/<day>` (`day` as
    `YYYY-MM-DD`), as the day file's name holds them.

    git's packer (`git gc`, push, clone, at its defaults) sorts the objects it may store as
    deltas by a hash of about the last 16 characters of their paths and tries each only
    against its 10 neighbours. A day file named by its date alone ends like every other
    rollout's file of that day, so its neighbours were other rollouts' files and each
    appended version was stored whole. With this hash among those characters, a day file's
    versions sort next to each other and each is stored as the lines a record added. Of the
    day too, not the identity alone: with six digits, a rollout's files of several days
    would share git's hash (the date's digits fall out of its 16 characters), and a repack
    from scratch (`git repack -adf`) would again interleave their versions by size.
    Stable across runs, machines and versions (a new hash would start a second file a day).
    """
    text = f"{ref.key}/{day}"
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:DAY_FILE_HASH_DIGITS]


def state_refs(root: Path) -> list[ServiceRef]:
    """Every rollout with a status file under `state/` (new layout), sorted by identity.

    Folders whose names are not valid ids are skipped, and so are symbolic links (never
    followed): the result only names paths `state_dir` accepts.
    """
    base = _safe(root, Path("state"))
    out = []
    for path in base.glob("*/*/*/status.yaml"):
        project, region, service = path.parts[-4:-1]
        ref = ServiceRef(project, region, service)
        try:
            status_path(root, ref)
        except StateError:
            continue
        out.append(ref)
    return sorted(out, key=lambda r: r.key)


def _service_file(root: Path, ref: ServiceRef, *parts: str) -> Path:
    """`state/<project>/<region>/<service>/<parts...>`, checked once along its whole path."""
    _check_ids(ref)
    # Joined as text: pathlib's parsing of each part was most of a path check's cost, and
    # every record builds several of these.
    return _safe(root, os.path.join("state", ref.project, ref.region, ref.service, *parts))


def _check_ids(ref: ServiceRef) -> None:
    """Raise `StateError` unless each id of `ref` is usable as a path component."""
    if not isinstance(ref, ServiceRef):
        raise TypeError(f"state paths take a ServiceRef, not {ref!r}")
    for value, pattern, what in (
        (ref.project, _PROJECT, "GCP project id"),
        (ref.region, _REGION, "Cloud Run region"),
        (ref.service, _SERVICE, "Cloud Run service id"),
    ):
        if not isinstance(value, str) or not pattern.fullmatch(value):
            raise StateError(f"{value!r} is not a valid {what}")


def _safe(root: Path, path: Path | str) -> Path:
    """`root / path` through the safe-path helper (a symbolic link is a `StateError`)."""
    try:
        safepath.inside(root, path)
    except safepath.UnsafePathError as exc:
        raise StateError(str(exc)) from None
    return Path(path) if os.path.isabs(path) else Path(root, path)


# --- writing --------------------------------------------------------------------------------
def atomic_write_text(path: Path, text: str) -> None:
    """Replace `path` with `text` (UTF-8, `\\n` newlines) atomically, creating parents.

    The text is scrubbed of probe secrets, and a path under the repository's rollout/ or
    state/ must pass the safe-path check (no symbolic link, nothing outside the repository).
    """
    safepath.guard(path)
    _replace(path, text)


def _replace(path: Path, text: str) -> None:
    """`atomic_write_text` for a path its caller has just checked (`_service_file`): the
    same write without walking the same folders a second time."""
    text = redact.scrub(text)
    folder = os.path.dirname(path) or "."
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        # mkstemp creates 0600; state files are ordinary repository files.
        os.chmod(tmp, 0o644)
        # No fsync: the rename alone means a crashed process leaves the old file or the
        # new one; the durable copy is the commit pushed to the remote (a CI runner's disk
        # is scratch), and a file a power cut truncated is salvaged like any corrupt one.
        # One fsync per file cost seconds a run at 1,000 services.
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def status_text(status: ServiceStatus) -> str:
    """The text of `status.yaml` for `status` (what `write_status` writes): the bytes of
    `yaml.dump(data, Dumper=_StatusDumper, sort_keys=False, default_flow_style=False,
    allow_unicode=True, width=100)`, with the node tree built by `_node`."""
    return _yaml_text(_status_to_data(status))


def _yaml_text(data: Any) -> str:
    """The YAML text of `data` with probe secrets scrubbed from its string values (as
    `_scrubbed` does, in the one walk that builds the nodes)."""
    # Written directly when `blockyaml` can prove the emitter's bytes (a status file's
    # usual content), else by the emitter from nodes.
    direct = blockyaml.text(data, _scalar_tag, redact.scrub)
    if direct is not None:
        return direct
    stream = io.StringIO()
    dumper = _StatusDumper(
        stream, default_flow_style=False, allow_unicode=True, width=100, sort_keys=False
    )
    try:
        dumper.open()
        dumper.serialize(_node(dumper, data))
        dumper.close()
    finally:
        dumper.dispose()
    return stream.getvalue()


def write_status(root: Path, ref: ServiceRef, status: ServiceStatus) -> Path:
    """Write `status.yaml` of the rollout `ref` (whose service `status` must be); its path."""
    if status.service != ref.service:
        raise ValueError(f"status of {status.service} written as the status of {ref.key}")
    text = status_text(status)
    # Checked right before the write, once (no symbolic link on the way).
    path = status_path(root, ref)
    _replace(path, text)
    return path


def append_events(root: Path, ref: ServiceRef, events: Iterable[Event]) -> Path:
    """Append events to `events.jsonl`, keeping the newest `MAX_EVENTS`; returns its path."""
    path = events_path(root, ref)
    # Lines that do not parse (a truncated write, a bad merge) are dropped here; git history
    # keeps them, and the file heals instead of failing every later run.
    lines = [line for line in _read_lines(path) if _event_or_none(line) is not None]
    lines.extend(_json_line(_event_to_data(e)) for e in events)
    # `path` was checked when built, a moment ago: the write does not walk it again.
    _replace(path, "".join(line + "\n" for line in lines[-MAX_EVENTS:]))
    return path


def append_metrics(root: Path, ref: ServiceRef, stats: Iterable[WindowStats]) -> list[Path]:
    """Append the windows of a record, rolled up, to the day files of their ends; the files
    written.

    Consecutive final windows of one revision and length become one line (`stats.roll_up`:
    counts summed, distributions merged), so a record every checkpoint writes about one line
    per revision instead of one per window. Only new lines are written (appended, never a
    rewrite of what is there), so git stores each record as a few new lines. A window
    already recorded (inside a recorded line of the same revision and window length) is not
    written again, so a run that repeats after a failed push records nothing twice. Files of
    months beyond the newest `METRICS_MONTHS` are deleted.
    """
    new: dict[tuple[str, datetime, datetime, int], WindowStats] = {}
    for s in stats:
        if s.service != ref.service:
            raise ValueError(f"window of {s.service} appended to the metrics of {ref.key}")
        new.setdefault(_window_key(s), s)
    if not new:
        return []
    # The record's folders are checked once, here; they are listed once (for the recorded
    # lines and the pruning), and each day file written is checked when named.
    files = _metrics_files(root, ref)
    # A recorded line holding one of these windows ends at or after it: the files from the
    # day of the earliest end on (a month file of older versions for any day of its month).
    first = min(_utc(s.end) for s in new.values()).strftime("%Y-%m-%d")
    recorded: dict[tuple[str, timedelta], list[WindowStats]] = {}
    for f in files:
        if f.period is not None and f.period >= first[: len(f.period)] and not f.link:
            for w in _parse_metrics(f.path, ref.service):
                recorded.setdefault((w.revision, w.step), []).append(w)
    fresh = [
        s
        for s in new.values()
        if not any(
            r.start <= s.start and s.end <= r.end for r in recorded.get((s.revision, s.step), ())
        )
    ]
    by_day: dict[str, list[WindowStats]] = {}
    for s in roll_up(fresh):
        by_day.setdefault(_utc(s.end).strftime("%Y-%m-%d"), []).append(s)
    written = []
    listed = {f.path for f in files}
    for day, lines in sorted(by_day.items()):
        path = _service_file(root, ref, _day_file_name(ref, day))
        _append(path, [_json_line(_metric_to_data(s)) for s in lines])
        written.append(path)
        if path not in listed:
            files.append(_MetricsFile(path, day, link=False))
    _prune_months(root, files)
    return written


def append_lines(path: Path, lines: Sequence[str]) -> None:
    """Append whole lines to `path` (creating it and its parents), scrubbed.

    A line cut short by a crash is completed with a newline first, so it stays one
    unreadable line (skipped by readers) instead of swallowing the next record. The same
    safe-path check as `atomic_write_text` applies.
    """
    safepath.guard(path)
    _append(path, lines)


def _append(path: Path, lines: Sequence[str]) -> None:
    """`append_lines` for a path its caller has just checked (`_service_file`)."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    text = redact.scrub("".join(line + "\n" for line in lines))
    # O_NOFOLLOW: a link put in the file's place after the check is not followed either.
    flags = os.O_RDWR | os.O_CREAT | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(path, flags, 0o644)
    with os.fdopen(fd, "r+b") as fh:
        size = fh.seek(0, os.SEEK_END)
        if size:
            fh.seek(size - 1)
            if fh.read(1) != b"\n":
                text = "\n" + text
        fh.write(text.encode("utf-8"))


@dataclass(frozen=True)
class _MetricsFile:
    """A file that may hold a rollout's metrics lines, as its folder's listing shows it."""

    path: Path
    period: str | None
    """Its day (`2026-05-01`) or month (`2026-05`, older versions) from its name; None for a
    `.jsonl` file in `metrics/` whose name no version wrote (read, never pruned)."""
    link: bool
    """A symbolic link: never read, followed or deleted."""


def _metrics_files(root: Path, ref: ServiceRef) -> list[_MetricsFile]:
    """The rollout's day files beside status.yaml (names matching `_DAY_FILE` only) and the
    `.jsonl` files of the `metrics/` folder older versions wrote, sorted by path.

    Each folder is checked (a symbolic link in place of the service folder or of `metrics/`
    is a `StateError`) and listed once; links among the files are listed, flagged."""
    folder = _service_file(root, ref)
    out = []
    old = False
    for entry in _scan(folder):
        if entry.name == _OLD_METRICS:
            old = True
        elif (match := _DAY_FILE.match(entry.name)) and not entry.is_dir(follow_symlinks=False):
            out.append(_MetricsFile(folder / entry.name, match[1], entry.is_symlink()))
    if old:
        older = _service_file(root, ref, _OLD_METRICS)
        out.extend(
            _MetricsFile(older / e.name, _old_period(e.name), e.is_symlink())
            for e in _scan(older)
            if e.name.endswith(".jsonl") and not e.is_dir(follow_symlinks=False)
        )
    return sorted(out, key=lambda f: f.path)


def _scan(folder: Path) -> list[os.DirEntry[str]]:
    """The entries of a (checked) folder; none when it does not exist or is not a folder."""
    try:
        with os.scandir(folder) as entries:
            return list(entries)
    except (FileNotFoundError, NotADirectoryError):
        return []


def _old_period(name: str) -> str | None:
    """The day or month of a file in `metrics/` from its name (`_OLD_METRICS_FILE`), None
    for any other name."""
    match = _OLD_METRICS_FILE.match(name)
    return None if match is None else match[1] or match[2]


def _prune_months(root: Path, files: Sequence[_MetricsFile]) -> None:
    """Delete the metrics files of months beyond the newest `METRICS_MONTHS` of `files` (in
    both places, symbolic link or not); links and names no version wrote are never deleted."""
    months = {f.period[:7] for f in files if f.period}
    keep = set(sorted(months)[-METRICS_MONTHS:])
    old = [f for f in files if f.period and f.period[:7] not in keep and not f.link]
    # Checked again right before deleting: a folder swapped for a link to elsewhere since it
    # was listed must never be pruned.
    for folder in sorted({f.path.parent for f in old}):
        _safe(root, folder)
    for f in old:
        f.path.unlink()


# --- reading --------------------------------------------------------------------------------
def read_status(root: Path, ref: ServiceRef) -> ServiceStatus | None:
    """The last written status of the rollout `ref`, None if there is none yet."""
    return _read_status_file(status_path(root, ref), ref.service)


def _read_status_file(path: Path, service: str) -> ServiceStatus | None:
    """`read_status` of a status path already checked (`status_path`)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise StateError(f"{path}: cannot read: {exc}") from None
    try:
        data = _load_yaml(text)
        status = _status_from_data(data)
    except (yaml.YAMLError, KeyError, TypeError, ValueError) as exc:
        raise StateError(f"{path}: invalid status file: {_why(exc)}") from None
    if status.service != service:
        raise StateError(f"{path}: holds the status of {status.service!r}, not {service!r}")
    return status


def read_events(root: Path, ref: ServiceRef) -> list[Event]:
    """All readable events in `events.jsonl`, oldest first; unreadable lines are skipped
    with a warning (see `read_events_salvaged` for what was dropped)."""
    events, dropped = read_events_salvaged(root, ref)
    for problem in dropped:
        log.warning("%s", problem)
    return events


def read_events_salvaged(root: Path, ref: ServiceRef) -> tuple[list[Event], list[str]]:
    """The readable events, oldest first, and one `file:line: why` per line skipped."""
    path = events_path(root, ref)
    events = []
    dropped = []
    for n, line in enumerate(_read_lines(path), start=1):
        try:
            events.append(_event_from_data(json.loads(line)))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            dropped.append(f"{path}:{n}: invalid event skipped: {_why(exc)}")
    return sorted(events, key=lambda e: e.time), dropped


def _event_or_none(line: str) -> Event | None:
    try:
        return _event_from_data(json.loads(line))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError):
        return None


@dataclass(frozen=True)
class StatusLoad:
    """What `load_status` could make of `status.yaml`.

    `status` is the snapshot (possibly salvaged: fields that did not parse are dropped), or
    None when there is none or nothing usable (the loop then rebuilds it from live traffic
    and git, as on a first run). `problem` says what was dropped; None when the file was
    whole. `rebuilt` is True when the file existed but gave no usable snapshot.
    """

    status: ServiceStatus | None
    problem: str | None = None
    rebuilt: bool = False

    def event(self, now: datetime, actor: str) -> Event | None:
        """The warning event for events.jsonl when something was dropped, else None."""
        if self.problem is None:
            return None
        return Event(
            time=now,
            kind=EventKind.STATE_REBUILT,
            actor=actor,
            reason=self.problem,
            details={"rebuilt": self.rebuilt},
        )


def load_status(root: Path, ref: ServiceRef) -> StatusLoad:
    """`read_status` for the loop: never raises on a corrupt file (a service's rollback must
    not depend on its state file), salvaging what parses and saying what was dropped.

    A path problem (a symbolic link) still raises: that is not corruption but an attack.
    """
    path = status_path(root, ref)
    try:
        return StatusLoad(_read_status_file(path, ref.service))
    except StateError as exc:
        whole = str(exc)
    try:
        data = _load_yaml(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        data = None
    salvaged, dropped = _salvage_status(data, ref.service)
    if salvaged is None:
        return StatusLoad(None, f"{whole}; rebuilt from live traffic and git", rebuilt=True)
    return StatusLoad(salvaged, f"{path}: dropped unreadable {', '.join(dropped)}")


def read_metrics(
    root: Path, ref: ServiceRef, *, since: datetime | None = None
) -> list[WindowStats]:
    """Recorded windows (optionally those ending after `since`), by end time then revision.

    Reads the day files beside status.yaml and what older versions wrote in `metrics/` (day
    files with and without a hash, month files), both line formats; only files whose day or
    month can hold a window ending after `since` are opened. Lines may be rolled up (one line
    for several consecutive windows, `WindowStats.rolled`). A window recorded twice (in one
    file or in both places), or inside a rolled-up line of the same revision and window
    length (lines merged by git's union driver), is returned once. A line that does not
    parse is skipped with a warning naming the file and line.
    """
    first = None if since is None else _utc(since).strftime("%Y-%m-%d")
    out: dict[tuple[str, datetime, datetime, int], WindowStats] = {}
    for f in _metrics_files(root, ref):
        if f.link:
            log.warning("%s: a symbolic link; skipped", f.path)
            continue
        # A month file (`2026-05`) is read for any day of it; a day's lines may be in several
        # files on the day of an upgrade (`metrics/2026-05-01.jsonl`,
        # `metrics/2026-05-01.<hash>.jsonl`, `windows-2026-05-01.<hash>.jsonl`).
        period = f.period
        if first is not None and period is not None and period < first[: len(period)]:
            continue
        for stats in _parse_metrics(f.path, ref.service, warn=True):
            if since is None or stats.end > since:
                out.setdefault(_window_key(stats), stats)
    return _uncovered(out.values())


def _uncovered(windows: Iterable[WindowStats]) -> list[WindowStats]:
    """`windows` without those inside a longer one of the same revision and window length
    (histories merged by the union driver may hold a roll-up and the windows it sums), by
    end time then revision."""
    kept: list[WindowStats] = []
    reach: dict[tuple[str, timedelta], datetime] = {}
    for w in sorted(windows, key=lambda w: (w.start, -w.window.total_seconds())):
        key = (w.revision, w.step)
        if key in reach and w.end <= reach[key]:
            continue
        reach[key] = max(w.end, reach.get(key, w.end))
        kept.append(w)
    return sorted(kept, key=lambda s: (s.end, s.revision, s.start))


def _parse_metrics(path: Path, service: str, *, warn: bool = False) -> list[WindowStats]:
    """The readable windows of one metrics file (either line format), in file order."""
    out: list[WindowStats] = []
    for n, line in enumerate(_read_lines(path), start=1):
        try:
            out.append(_metric_from_line(line, service))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            if warn:
                log.warning("%s:%d: invalid metrics line skipped: %s", path, n, _why(exc))
    return out


def _read_lines(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as exc:
        raise StateError(f"{path}: cannot read: {exc}") from None
    # Records end at `\n` only: `splitlines` would also split at U+2028 and friends, which a
    # line written by an older version may hold raw inside a string.
    return [line.rstrip("\r") for line in text.split("\n") if line.strip()]


def _why(exc: BaseException) -> str:
    if isinstance(exc, KeyError):
        return f"missing key {exc.args[0]!r}"
    return " ".join(str(exc).split()) or type(exc).__name__


# --- helpers for the reconcile loop ---------------------------------------------------------
def with_windows(
    status: ServiceStatus, new: Iterable[WindowStats], *, keep: int = 10
) -> ServiceStatus:
    """`status` with `new` windows merged into its recent windows (see `keep_windows`)."""
    return replace(status, windows=keep_windows(status.windows, new, keep=keep))


def _window_key(s: WindowStats) -> tuple[str, datetime, datetime, int]:
    # Two roll-ups of one span differ by the length of the windows they sum.
    return (s.revision, s.start, s.end, s.rolled)


def recorded_windows(
    windows: Sequence[WindowStats],
    streaks: Mapping[str, Streak] | None = None,
    *,
    unread: str | None = None,
) -> list[WindowStats]:
    """The windows `status.yaml` keeps of a run's recent ones: every provisional window (the
    next run measures it again) and, per revision and length, the newest final one (where
    the next run's measuring starts, and what a verdict rests on when that run measures no
    newer window), or the newest `RECORDED_WINDOWS` while any gate of `streaks` has a
    failing streak.

    Everything older was already judged and counted (streak counters, coverage) and is in
    the metrics files; a checkpoint rewriting a dozen windows per revision was most of the
    file's churn in git. Without a failing streak the older windows change no verdict: each
    gate's outcome is its newest window's, and a failing streak's windows are the only
    older ones a verdict pools. With one, the newest two are kept as before, so a failing
    reason pools what it did (every window of the streak for `consecutive_failures` up to 3:
    each failing window is news, recorded by the run that saw it).

    `unread`: a revision none of whose windows the next run reads back (`status_unread`: the
    stable revision when no `vs_stable` gate compares the canary with it), left out.
    """
    keep = RECORDED_WINDOWS if any(k.failures for k in (streaks or {}).values()) else 1
    final: dict[tuple[str, timedelta], list[WindowStats]] = {}
    windows = [w for w in windows if unread is None or w.revision != unread]
    for w in windows:
        if not w.provisional:
            final.setdefault((w.revision, w.window), []).append(w)
    newest = {id(w) for ws in final.values() for w in sorted(ws, key=lambda w: w.end)[-keep:]}
    return [w for w in windows if w.provisional or id(w) in newest]


def status_unread(s: ServiceStatus) -> str | None:
    """The revision whose windows `status.yaml` need not keep: the stable one when the verdict
    judged no `vs_stable` gate, the one gate that reads the stable revision's windows (the
    next run's measuring starts from the canary's; the metrics files keep both). None when
    there is no verdict (nothing says which gates read them: everything is kept).

    A rollout file that adds `vs_stable` later reads a kept canary window without its stable
    twin until a newer window is measured (one window length at most): that gate is
    INCONCLUSIVE meanwhile, which never advances a stage; every newer window is measured with
    its twin."""
    if s.verdict is None or any(g.gate == VS_STABLE for g in s.verdict.gates):
        return None
    return s.stable_revision


# --- time -----------------------------------------------------------------------------------
def parse_time(text: str) -> datetime:
    """Inverse of `format_time`; a time without a zone is an error."""
    if not isinstance(text, str):
        raise TypeError(f"expected a time string, got {text!r}")
    when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if when.tzinfo is None:
        raise ValueError(f"time {text!r} has no zone")
    return when.astimezone(UTC)


def _utc(when: datetime) -> datetime:
    if when.tzinfo is None:
        raise ValueError(f"datetime {when} has no timezone")
    return when.astimezone(UTC)


def _opt_time(text: object) -> datetime | None:
    return None if text is None else parse_time(str(text))


# --- (de)serialization with a fixed key order -----------------------------------------------
def _json_line(data: Mapping[str, Any]) -> str:
    """One record on one line: secrets scrubbed, every line separator escaped."""
    text = json.dumps(_scrubbed(data), ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    for raw, escaped in _LINE_BREAKS.items():
        text = text.replace(raw, escaped)
    return text


def _scrubbed(data: Any) -> Any:
    """`data` with probe secrets removed from every string, before it is serialized (a
    scrub of the serialized text could turn a plain YAML scalar into a flow sequence)."""
    if isinstance(data, str):
        return redact.scrub(data)
    if isinstance(data, Mapping):
        return {k: _scrubbed(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [_scrubbed(v) for v in data]
    return data


# libyaml's emitter when PyYAML has it: about 4x faster than the pure-Python one, which was
# the largest share of a 1,000-service tick's CPU. Its output reads back to the same values
# on both loaders; it folds long double-quoted strings at other places, so a status file
# holding one is rewritten once after an upgrade.
_BaseDumper: Any = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


class _StatusDumper(_BaseDumper):  # type: ignore[misc]
    """SafeDumper that double-quotes any string holding a line separator, so it is written
    escaped (`\\L`, `\\N`, `\\n`) rather than as a raw break a line reader splits at."""

    def resolve(self, kind: Any, value: Any, implicit: Any) -> Any:
        # The emitter asks twice per scalar; keys and most values repeat across files.
        if kind is yaml.ScalarNode:
            return _scalar_tag(value, implicit)
        return super().resolve(kind, value, implicit)


@functools.lru_cache(maxsize=4096)
def _scalar_tag(value: str, implicit: tuple[bool, bool]) -> str:
    """The tag a scalar resolves to (the SafeDumper's resolver has no path resolvers, so
    the answer depends on the text alone)."""
    return str(_BaseDumper.resolve(_RESOLVER, yaml.ScalarNode, value, implicit))


_RESOLVER = _BaseDumper(io.StringIO())


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = None if _SPLITS.isdisjoint(value) else '"'
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_StatusDumper.add_representer(str, _represent_str)


def _node(dumper: Any, data: Any) -> yaml.Node:
    """The node `dumper.represent_data(_scrubbed(data))` builds for the plain data of a state
    file, without the representer's per-node dispatch and alias bookkeeping (like `_scrubbed`
    data, the tree shares no node, so there is no alias to make); any other type goes
    through the representer."""
    kind = type(data)
    if kind is str:
        return _str_node(redact.scrub(data))
    if data is None:
        return yaml.ScalarNode(_NULL, "null")
    if kind is bool:
        return yaml.ScalarNode(_BOOL, "true" if data else "false")
    if kind is int:
        return yaml.ScalarNode(_INT, str(data))
    if kind is dict or isinstance(data, Mapping):
        # Keys are not scrubbed (as `_scrubbed` leaves them).
        pairs = [
            (_str_node(k) if type(k) is str else _node(dumper, k), _node(dumper, v))
            for k, v in data.items()
        ]
        return yaml.MappingNode(_MAP, pairs, flow_style=False)
    if kind is list or isinstance(data, tuple):
        return yaml.SequenceNode(_SEQ, [_node(dumper, v) for v in data], flow_style=False)
    node: yaml.Node = dumper.represent_data(data)
    return node


def _str_node(text: str) -> yaml.ScalarNode:
    return yaml.ScalarNode(_STR, text, style=None if _SPLITS.isdisjoint(text) else '"')


def _status_to_data(s: ServiceStatus) -> dict[str, Any]:
    return {
        "schema": STATUS_SCHEMA,
        "service": s.service,
        "phase": s.phase.value,
        "revisions": {"stable": s.stable_revision, "canary": s.canary_revision},
        "stage": s.stage,
        "stage_since": None if s.stage_since is None else format_time(s.stage_since),
        "traffic": _split_to_data(s.traffic),
        "etag": s.etag,
        "generation": s.generation,
        "observed_generation": s.observed_generation,
        "last_reconcile": format_time(s.last_reconcile),
        "spec_id": s.spec_id,
        "verdict": None if s.verdict is None else _verdict_to_data(s.verdict, s.verdict_at),
        "windows": [
            _stats_to_data(w)
            for w in recorded_windows(s.windows, s.streaks, unread=status_unread(s))
        ],
        "applied": None if s.applied is None else _split_to_data(s.applied),
        "passing_since": None if s.passing_since is None else format_time(s.passing_since),
        "probes": [
            {"name": p.name, "ok": p.ok, "at": format_time(p.at), "reason": p.reason}
            # 0.1 ms is finer than any probe can tell; more digits are noise in git diffs.
            | ({} if p.latency is None else {"latency": round(p.latency, 4)})
            | ({"synthetic": p.synthetic} if p.synthetic else {})
            for p in s.probes
        ],
        # Written only when there is a streak, so quiet services keep their old bytes.
        **(
            {
                "streaks": {
                    gate: {
                        "failures": k.failures,
                        "through": None if k.through is None else format_time(k.through),
                    }
                    | ({"inconclusive": k.inconclusive} if k.inconclusive else {})
                    for gate, k in sorted(s.streaks.items())
                }
            }
            if s.streaks
            else {}
        ),
        **(
            {
                "coverage": {"judged": s.coverage.judged, "served": s.coverage.served}
                | ({"synthetic": s.coverage.synthetic} if s.coverage.synthetic else {})
            }
            if s.coverage.served or s.coverage.synthetic
            else {}
        ),
        **(
            {"reported": {key: format_time(at) for key, at in sorted(s.reported.items())}}
            if s.reported
            else {}
        ),
    }


def _split_to_data(split: TrafficSplit) -> list[dict[str, Any]]:
    return [{"revision": t.revision, "percent": t.percent, "tag": t.tag} for t in split.targets]


def _split_from_data(items: Any) -> TrafficSplit:
    return TrafficSplit.of(
        Target(str(t["revision"]), _int(t["percent"]), str(t["tag"])) for t in items
    )


def _status_from_data(d: Any) -> ServiceStatus:
    if not isinstance(d, dict):
        raise TypeError("not a mapping")
    if d["schema"] != STATUS_SCHEMA:
        raise ValueError(f"schema {d['schema']!r} is not {STATUS_SCHEMA}")
    status = ServiceStatus(
        service=str(d["service"]),
        phase=Phase(d["phase"]),
        stable_revision=str(d["revisions"]["stable"]),
        canary_revision=_opt_str(d["revisions"]["canary"]),
        stage=_int(d["stage"]),
        stage_since=_opt_time(d["stage_since"]),
        traffic=_split_from_data(d["traffic"]),
        etag=str(d["etag"]),
        generation=_int(d["generation"]),
        observed_generation=_int(d["observed_generation"]),
        last_reconcile=parse_time(d["last_reconcile"]),
        spec_id=_spec_id(d),
        windows=tuple(_stats_from_data(w) for w in d["windows"]),
        applied=None if d.get("applied") is None else _split_from_data(d["applied"]),
        passing_since=_opt_time(d.get("passing_since")),
        probes=tuple(
            ProbeRecord(
                str(p["name"]),
                bool(p["ok"]),
                parse_time(p["at"]),
                str(p["reason"]),
                _opt_float(p.get("latency")),
                _int(p.get("synthetic", 0)),
            )
            for p in d.get("probes") or ()
        ),
        # Files written before streaks were counted have none: counting starts from windows.
        streaks={
            str(gate): Streak(
                _int(k["failures"]), _opt_time(k.get("through")), _int(k.get("inconclusive", 0))
            )
            for gate, k in (d.get("streaks") or {}).items()
        },
        coverage=Coverage(
            _int((d.get("coverage") or {}).get("judged", 0)),
            _int((d.get("coverage") or {}).get("served", 0)),
            _int((d.get("coverage") or {}).get("synthetic", 0)),
        ),
        reported=_reported(d.get("reported")),
    )
    verdict, verdict_at = _verdict_from_data(d["verdict"])
    return replace(status, verdict=verdict, verdict_at=verdict_at)


def _salvage_status(data: Any, service: str) -> tuple[ServiceStatus | None, list[str]]:
    """The parts of a corrupt status document that still parse.

    The identity, phase, revisions, live split and generation are required (without them a
    snapshot would lie about production); windows, probes, the verdict and the timers are
    dropped when unreadable, or item by item when only some items are bad.
    """
    if (
        not isinstance(data, dict)
        or data.get("service") != service
        or data.get("schema") != STATUS_SCHEMA
    ):
        return None, []
    dropped: list[str] = []

    def part(key: str, read: Any, default: Any) -> Any:
        try:
            return read(data.get(key)) if data.get(key) is not None else default
        except (KeyError, TypeError, ValueError, AttributeError):
            dropped.append(key)
            return default

    def items(key: str, read: Any) -> tuple[Any, ...]:
        raw = data.get(key) or []
        if not isinstance(raw, list):
            dropped.append(key)
            return ()
        out = []
        for item in raw:
            try:
                out.append(read(item))
            except (KeyError, TypeError, ValueError, AttributeError):
                dropped.append(f"{key} entry")
        return tuple(out)

    try:
        revisions = data["revisions"]
        if not isinstance(revisions, dict):
            raise TypeError("revisions is not a mapping")
        base = ServiceStatus(
            service=service,
            phase=Phase(data["phase"]),
            stable_revision=str(revisions["stable"]),
            canary_revision=_opt_str(revisions.get("canary")),
            stage=_int(data["stage"]),
            stage_since=None,
            traffic=_split_from_data(data["traffic"]),
            etag=str(data["etag"]),
            generation=_int(data["generation"]),
            observed_generation=_int(data["observed_generation"]),
            last_reconcile=parse_time(data["last_reconcile"]),
        )
    except (KeyError, TypeError, ValueError, AttributeError):
        return None, []
    verdict, verdict_at = part("verdict", _verdict_from_data, (None, None))
    status = replace(
        base,
        stage_since=part("stage_since", _opt_time, None),
        spec_id=_spec_id(data),
        verdict=verdict,
        verdict_at=verdict_at,
        windows=items("windows", _stats_from_data),
        applied=part("applied", _split_from_data, None),
        passing_since=part("passing_since", _opt_time, None),
        probes=items(
            "probes",
            lambda p: ProbeRecord(
                str(p["name"]),
                _bool(p["ok"]),
                parse_time(p["at"]),
                str(p["reason"]),
                _opt_float(p.get("latency")),
                _int(p.get("synthetic", 0)),
            ),
        ),
        reported=part("reported", _reported, {}),
    )
    return status, sorted(set(dropped)) or ["fields"]


def _reported(d: Any) -> dict[str, datetime]:
    """`reported:` of status.yaml (absent in files written before scheduled reports)."""
    if d is None:
        return {}
    if not isinstance(d, dict):
        raise TypeError("reported is not a mapping")
    return {str(key): parse_time(at) for key, at in d.items()}


def _verdict_to_data(v: Verdict, at: datetime | None) -> dict[str, Any]:
    data = verdict_to_data(v)
    # Reported, never judged again: six digits say it (a float's 17 are noise git cannot
    # compress, rewritten at every record).
    for gate in data["gates"]:
        gate["value"] = _sig(gate["value"], 6)
    return {"at": None if at is None else format_time(at), **data}


def _verdict_from_data(d: Any) -> tuple[Verdict | None, datetime | None]:
    if d is None:
        return None, None
    return verdict_from_data(d), _opt_time(d["at"])


def _stats_to_data(s: WindowStats) -> dict[str, Any]:
    """A window as status.yaml keeps it: what the next run's judge reads back, its counts
    and its p95, rounded up to `P95_DIGITS` significant digits (`_up`).

    Every record rewrites these lines, so what no reader needs is left out: the rates (the
    counts give them) and the values of p50 and p99 (the judge reads p95 alone; the metrics
    files keep all three and the distribution, see `_metric_to_data`). Their keys stay, null,
    and so does the service: a previous version reads the file whole (and git stores these
    constant lines as copies: without them the repository grew 4% faster, measured with
    benchmarks/repo_growth.py).
    """
    data: dict[str, Any] = {
        "service": s.service,
        "revision": s.revision,
        "start": format_time(s.start),
        "end": format_time(s.end),
        "requests": s.requests,
        "errors": s.errors,
        "successes": s.successes,
        "p50": None,
        "p95": _up(s.p95, P95_DIGITS),
        "p99": None,
    }
    if s.provisional:  # absent when final, so final windows keep their old bytes
        data["provisional"] = True
    if s.incomplete is not None:
        data["incomplete"] = s.incomplete
    return data


def _stats_from_data(d: Any) -> WindowStats:
    if not isinstance(d, dict):
        raise TypeError("not a mapping")
    # error_rate and success_rate are derived (older versions wrote them): never read back.
    return WindowStats(
        service=str(d["service"]),
        revision=str(d["revision"]),
        start=parse_time(d["start"]),
        end=parse_time(d["end"]),
        requests=_int(d["requests"]),
        errors=_int(d["errors"]),
        successes=_int(d["successes"]),
        p50=_opt_float(d["p50"]),
        p95=_opt_float(d["p95"]),
        p99=_opt_float(d["p99"]),
        # Lines written before distributions were kept have no `latency_buckets`.
        latency_buckets=_buckets_from_data(d.get("latency_buckets")),
        provisional=bool(d.get("provisional", False)),
        incomplete=None if d.get("incomplete") is None else str(d["incomplete"]),
    )


# A metrics line, compact: what the folder already says (the service, the revision's
# `<service>-` prefix) and what is derived (rates) is left out, keys are one letter, the end
# is epoch seconds (`u`: its microseconds, when any), the window's length is seconds (`v`:
# its microseconds, when any), latencies are kept to 0.1 ms and bucket bounds to 10
# significant digits (float noise like 0.0010000000000000002 is not information):
#   {"r":"00042-xyz","e":1777637100,"w":300,"n":1000,"x":5,"k":995,"p":[0.1,0.3,0.5],
#    "g":[0.1,2.0,0,[400],null,[1,600]]}
# (`g`: a distribution on a geometric layout; `b`: any other, see `_buckets_to_data`).
# `R` holds a revision name that does not start with the service's; `P` marks a provisional
# window, `i` an incomplete one; `c` is how many consecutive windows of length `w / c` a
# rolled-up line sums (absent: one), and such a line with a distribution leaves out `p` (its
# percentiles are its distribution's). Lines of older versions (full keys) are read as well.
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _metric_to_data(s: WindowStats) -> dict[str, Any]:
    prefix = f"{s.service}-"
    data: dict[str, Any] = (
        {"r": s.revision[len(prefix) :]} if s.revision.startswith(prefix) else {"R": s.revision}
    )
    end, end_us = _seconds(_utc(s.end) - _EPOCH)
    length, length_us = _seconds(s.end - s.start)
    data["e"] = end
    if end_us:
        data["u"] = end_us
    data["w"] = length
    if length_us:
        data["v"] = length_us
    data |= {
        "n": s.requests,
        "x": s.errors,
        "k": s.successes,
    }
    # A roll-up's percentiles are those of its merged distribution: read back from it.
    if s.rolled == 1 or s.latency_buckets is None:
        data["p"] = [None if v is None else round(v, 4) for v in (s.p50, s.p95, s.p99)]
    if s.latency_buckets is not None:
        data |= _buckets_to_data(s.latency_buckets)
    if s.provisional:
        data["P"] = 1
    if s.incomplete is not None:
        data["i"] = s.incomplete
    if s.rolled > 1:
        data["c"] = s.rolled
    return data


def _metric_from_line(line: str, service: str) -> WindowStats:
    d = json.loads(line)
    if not isinstance(d, dict):
        raise TypeError("not a mapping")
    if "revision" in d:  # the older, full-key line
        return _stats_from_data(d)
    revision = str(d["R"]) if "R" in d else f"{service}-{d['r']}"
    end = _EPOCH + timedelta(seconds=_int(d["e"]), microseconds=_int(d.get("u", 0)))
    length = timedelta(seconds=_int(d["w"]), microseconds=_int(d.get("v", 0)))
    buckets = _geometric_from_data(d["g"]) if "g" in d else _buckets_from_data(d.get("b"))
    if "p" in d:
        p50, p95, p99 = (_opt_float(v) for v in d["p"])
    elif buckets is not None:
        p50, p95, p99 = (bucket_percentile(buckets, q) for q in (0.50, 0.95, 0.99))
    else:
        raise KeyError("p")
    return WindowStats(
        service=service,
        revision=revision,
        start=end - length,
        end=end,
        requests=_int(d["n"]),
        errors=_int(d["x"]),
        successes=_int(d["k"]),
        p50=p50,
        p95=p95,
        p99=p99,
        latency_buckets=buckets,
        provisional=bool(d.get("P", False)),
        incomplete=None if d.get("i") is None else str(d["i"]),
        rolled=_rolled(d.get("c", 1)),
    )


def _rolled(value: object) -> int:
    count = _int(value)
    if count < 1:
        raise ValueError(f"a line rolls up {count} windows")
    return count


def _seconds(delta: timedelta) -> tuple[int, int]:
    """A duration as whole seconds and the microseconds beyond them (exact, unlike a float)."""
    micros = (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds
    return divmod(micros, 1_000_000)


def _sig(value: float | None, digits: int = 10) -> float | None:
    """`value` to `digits` significant digits, the nearest."""
    return None if value is None else float(f"{value:.{digits}g}")


def _up(value: float | None, digits: int) -> float | None:
    """The least number of `digits` significant digits whose float is at least `value`.

    A recorded p95 is judged again against `latency_p95.max` (`p95 > max` fails a window)
    and its `target`. Rounded up, a window that failed still fails, whatever the threshold;
    one that passed still passes when the threshold has at most `digits` significant digits
    (the least such number at or above the p95 is at most the threshold), and otherwise
    reads as failing only when its p95 was within one unit of the last digit below the
    threshold (relative 1e-5 at 6 digits). See docs/git-and-state.md.
    """
    if value is None or not math.isfinite(value):
        return value
    nearest = float(f"{value:.{digits}g}")
    if nearest >= value:
        return nearest
    # The exact binary value rounded up in decimal: its float is at least `value`.
    return float(Context(prec=digits, rounding=ROUND_CEILING).plus(Decimal(value)))


def _buckets_to_data(buckets: Sequence[LatencyBucket]) -> dict[str, Any]:
    """A distribution as a metrics line keeps it: `g` when its bounds are one geometric
    series, else `b` with every bucket's bounds.

    Cloud Monitoring's and Prometheus' latency layouts are exponential, and writing each
    bucket's two bounds made them most of a line (about 500 of 550 bytes for a dozen busy
    buckets, digits that compress badly). `g` is `[scale, growth, first, counts, under,
    over]`: bucket `first + i` spans `[scale * growth**(first + i), scale * growth**(first +
    i + 1))` and has `counts[i]` requests (`null`: no such bucket); `under` is `[k, count]`
    for a bucket `[0, scale * growth**k)`, `over` is `[k, count]` for `[scale * growth**k,
    unbounded)`, each `null` when absent. It is written only when every bound it gives back
    equals the bucket's own to the 10 significant digits `b` keeps; otherwise `b` is written.
    """
    plain = {"b": [[_sig(b.lower), _sig(b.upper), b.count] for b in buckets]}
    ratios = [b.upper / b.lower for b in buckets if b.lower > 0 and b.upper is not None]
    bounds = [v for b in buckets for v in (b.lower, b.upper) if v is not None and v > 0]
    if not ratios or not bounds:
        return plain
    growth, scale = _sig(ratios[0]), _sig(min(bounds))
    assert growth is not None and scale is not None
    if growth <= 1:
        return plain

    def index(value: float) -> int | None:
        k = round(math.log(value / scale) / math.log(growth))
        return k if _sig(scale * growth**k) == _sig(value) else None

    under: list[int] | None = None
    over: list[int] | None = None
    regular: dict[int, int] = {}
    for i, b in enumerate(buckets):
        low = None if b.lower == 0 else index(b.lower)
        high = None if b.upper is None else index(b.upper)
        if b.lower == 0 and high is not None and i == 0:
            under = [high, b.count]
        elif b.upper is None and low is not None and i == len(buckets) - 1:
            over = [low, b.count]
        elif low is not None and high == low + 1 and (not regular or low > max(regular)):
            regular[low] = b.count
        else:
            return plain
    first = min(regular) if regular else 0
    counts = [regular.get(k) for k in range(first, max(regular) + 1)] if regular else []
    if under is not None and regular and under[0] > first:
        return plain
    if over is not None and regular and over[0] < max(regular) + 1:
        return plain
    return {"g": [scale, growth, first, counts, under, over]}


def _geometric_from_data(item: Any) -> tuple[LatencyBucket, ...]:
    """The buckets of a `g` distribution (see `_buckets_to_data`)."""
    if not isinstance(item, list) or len(item) != 6 or not isinstance(item[3], list):
        raise TypeError("g is not [scale, growth, first, counts, under, over]")
    scale, growth = _opt_float(item[0]), _opt_float(item[1])
    if scale is None or growth is None or scale <= 0 or growth <= 1:
        raise ValueError("g needs a positive scale and a growth above 1")
    first = _int(item[2])

    def bound(k: object) -> float:
        value = _sig(scale * growth ** _int(k))
        assert value is not None
        return value

    def pair(part: Any) -> tuple[int, int] | None:
        if part is None:
            return None
        if not isinstance(part, list) or len(part) != 2:
            raise TypeError(f"{part!r} is not [k, count]")
        return _int(part[0]), _int(part[1])

    out = []
    if (under := pair(item[4])) is not None:
        out.append(LatencyBucket(0.0, bound(under[0]), under[1]))
    for i, count in enumerate(item[3]):
        if count is not None:
            out.append(LatencyBucket(bound(first + i), bound(first + i + 1), _int(count)))
    if (over := pair(item[5])) is not None:
        out.append(LatencyBucket(bound(over[0]), None, over[1]))
    return tuple(out)


def _buckets_from_data(items: Any) -> tuple[LatencyBucket, ...] | None:
    if items is None:
        return None
    if not isinstance(items, list):
        raise TypeError("latency_buckets is not a list")
    out = []
    for item in items:
        if not isinstance(item, list) or len(item) != 3:
            raise TypeError(f"latency bucket {item!r} is not [lower, upper, count]")
        lower, upper, count = item
        low = _opt_float(lower)
        if low is None:
            raise TypeError("latency bucket without a lower bound")
        out.append(LatencyBucket(low, _opt_float(upper), _int(count)))
    return tuple(out)


def _event_to_data(e: Event) -> dict[str, Any]:
    return {
        "time": format_time(e.time),
        "kind": e.kind.value,
        "actor": e.actor,
        "before": e.before,
        "after": e.after,
        "reason": e.reason,
        "spec_id": e.spec_id,
        "details": dict(e.details),
    }


def _event_from_data(d: Any) -> Event:
    if not isinstance(d, dict):
        raise TypeError("not a mapping")
    details = d["details"]
    if not isinstance(details, dict):
        raise TypeError("details is not a mapping")
    return Event(
        time=parse_time(d["time"]),
        kind=EventKind(d["kind"]),
        actor=str(d["actor"]),
        before=str(d["before"]),
        after=str(d["after"]),
        reason=str(d["reason"]),
        spec_id=_spec_id(d),
        details=details,
    )


def _spec_id(d: Mapping[str, Any]) -> str | None:
    # Files written before the spec was identified by content name the commit of the rollout
    # file instead (`spec_commit`): still an identity of what was applied, kept as it is.
    return _opt_str(d.get("spec_id", d.get("spec_commit")))


def _int(v: object) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError(f"expected an integer, got {v!r}")
    return v


def _bool(v: object) -> bool:
    if not isinstance(v, bool):
        raise TypeError(f"expected true or false, got {v!r}")
    return v


def _opt_float(v: object) -> float | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise TypeError(f"expected a number, got {v!r}")
    return float(v)


def _opt_str(v: object) -> str | None:
    return None if v is None else str(v)
