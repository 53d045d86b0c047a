"""Bench: repeated requests to one check, kept as a baseline and compared with it later.

The verdict against a baseline is `reconciler.sidebyside.judge_baseline` (pure, tested).
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reconciler import safepath
from reconciler.errors import ReconcileError
from reconciler.model import Outcome
from reconciler.probes.checks import (
    MISSING,
    Urls,
    _number,
    lookup,
    parse_json,
    redact_url,
    resolve_url,
    result_of,
)
from reconciler.probes.http import Prober
from reconciler.sidebyside import BaselineRule, Judgement, Sample, format_seconds, judge_baseline
from reconciler.spec import Check
from reconciler.state import atomic_write_text
from reconciler.stats import percentile

if TYPE_CHECKING:
    from reconciler.progress import Progress


@dataclass(frozen=True)
class BenchSample:
    """One iteration of a bench."""

    ok: bool
    status: int | None
    latency: float
    confidence: float | None = None
    reason: str = ""


@dataclass(frozen=True)
class BenchResult:
    """Repeated requests to one check or URL: response times, success, `confidence`."""

    name: str
    url: str
    samples: tuple[BenchSample, ...]

    @property
    def latencies(self) -> list[float]:
        """Response times of the answered iterations, in seconds."""
        return [s.latency for s in self.samples if s.status is not None]

    @property
    def p50(self) -> float | None:
        """Median response time."""
        return percentile(self.latencies, 50)

    @property
    def p95(self) -> float | None:
        """95th percentile response time."""
        return percentile(self.latencies, 95)

    @property
    def mean(self) -> float | None:
        """Mean response time."""
        return statistics.fmean(self.latencies) if self.latencies else None

    @property
    def success_rate(self) -> float:
        """Share of iterations that passed."""
        return sum(s.ok for s in self.samples) / len(self.samples) if self.samples else 0.0

    @property
    def sample(self) -> Sample:
        """What a verdict against a baseline is computed from."""
        return Sample(len(self.samples), sum(s.ok for s in self.samples), tuple(self.latencies))

    @property
    def confidences(self) -> list[float]:
        """The numeric `confidence` values the responses carried."""
        return [s.confidence for s in self.samples if s.confidence is not None]

    @property
    def confidence_mean(self) -> float | None:
        """Mean `confidence`, None when no response carried one."""
        return statistics.fmean(self.confidences) if self.confidences else None

    def summary(self) -> str:
        """One line: success, p50/p95/mean and confidence."""
        ok = sum(s.ok for s in self.samples)
        parts = [f"{self.name}: success {ok}/{len(self.samples)} ({self.success_rate:.0%})"]
        for label, value in (("p50", self.p50), ("p95", self.p95), ("mean", self.mean)):
            parts.append(f"{label} {format_seconds(value) if value is not None else '-'}")
        if self.confidences:
            lo, hi = min(self.confidences), max(self.confidences)
            parts.append(f"confidence {self.confidence_mean:.2f} ({lo:g}-{hi:g})")
        return "  ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, with the derived figures for readers of the file."""
        return {
            "name": self.name,
            "url": self.url,
            "success_rate": self.success_rate,
            "p50": self.p50,
            "p95": self.p95,
            "mean": self.mean,
            "confidence_mean": self.confidence_mean,
            "samples": [asdict(s) for s in self.samples],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BenchResult:
        """Read back `to_dict` output (derived figures are recomputed, not trusted)."""
        return cls(
            name=str(data["name"]),
            url=str(data["url"]),
            samples=tuple(BenchSample(**s) for s in data["samples"]),
        )


@dataclass(frozen=True)
class Baseline:
    """A saved bench of a service: one `BenchResult` per check, taken at one time."""

    service: str
    taken_at: datetime
    target: str
    """Which side was measured: `stable`, `service` or `canary`."""
    revision: str | None
    results: tuple[BenchResult, ...] = field(default_factory=tuple)

    def result(self, name: str) -> BenchResult | None:
        """The bench of the check called `name`, if present."""
        return next((r for r in self.results if r.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "service": self.service,
            "taken_at": self.taken_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
            "target": self.target,
            "revision": self.revision,
            "results": [r.to_dict() for r in self.results],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Baseline:
        """Read back `to_dict` output."""
        return cls(
            service=str(data["service"]),
            taken_at=datetime.fromisoformat(str(data["taken_at"]).replace("Z", "+00:00")),
            target=str(data["target"]),
            revision=data.get("revision"),
            results=tuple(BenchResult.from_dict(r) for r in data["results"]),
        )


def judge_to_baseline(
    result: BenchResult | Baseline, baseline: Baseline, rule: BaselineRule = BaselineRule()
) -> list[tuple[str, Judgement]]:
    """The verdict of each check against the baseline's bench of the same name (pure).

    A `BenchResult` is one check; a `Baseline` is judged check by check, over the checks
    both have.
    """
    current = result.results if isinstance(result, Baseline) else (result,)
    out: list[tuple[str, Judgement]] = []
    for now in current:
        then = baseline.result(now.name)
        if then is not None:
            judgement = judge_baseline(
                now.sample, then.sample, rule, (now.confidences, then.confidences)
            )
            out.append((now.name, judgement))
    return out


def compare_to_baseline(
    result: BenchResult | Baseline, baseline: Baseline, rule: BaselineRule = BaselineRule()
) -> list[str]:
    """Regressions of `result` against `baseline`, one line each; empty when none (pure).

    Only a FAIL of `judge_to_baseline` is a regression: a few iterations rarely show one.
    """
    return [
        f"{name}: {why}"
        for name, judgement in judge_to_baseline(result, baseline, rule)
        if judgement.outcome is Outcome.FAIL
        for why in judgement.reasons
    ]


def save_baseline(state_dir: Path, baseline: Baseline) -> Path:
    """Write `<state_dir>/<service>/baselines/<UTC timestamp>.json` and `latest.json`; the
    path. `state_dir` is the rollout's region folder, `state/<project>/<region>/`."""
    folder = state_dir / baseline.service / "baselines"
    stamp = baseline.taken_at.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    text = json.dumps(baseline.to_dict(), indent=2, ensure_ascii=False) + "\n"
    path = folder / f"{stamp}.json"
    # Temp file + rename: an interrupted run never leaves a truncated baseline to compare to.
    atomic_write_text(path, text)
    atomic_write_text(folder / "latest.json", text)
    return path


def load_baseline(state_dir: Path, service: str, name: str = "latest") -> Baseline | None:
    """The baseline `<state_dir>/<service>/baselines/<name>.json` (`state_dir` as for
    `save_baseline`), None when there is none."""
    path = state_dir / service / "baselines" / f"{name}.json"
    safepath.guard(path)  # never read through a symbolic link under state/
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        return Baseline.from_dict(json.loads(text))
    except (ValueError, KeyError, TypeError) as exc:
        raise ReconcileError(f"{path}: not a baseline file ({exc})") from None


def bench(
    target: str | Check,
    *,
    iterations: int = 5,
    name: str = "bench",
    urls: Urls = Urls(),
    field_path: str = "confidence",
    environ: Mapping[str, str] | None = None,
    progress: Progress | None = None,
    prober: Prober | None = None,
) -> BenchResult:
    """Send a check (or GET a URL) `iterations` times, one after the other.

    Records each response time, whether it passed and the numeric value at `field_path`
    (the model's `confidence`) where the response carries one. A plain URL is benched as a
    GET called `name`, passing on any 2xx answer.
    """
    if iterations < 1:
        raise ValueError("iterations must be at least 1")
    check = Check(name=name, url=target) if isinstance(target, str) else target
    url = resolve_url(check, urls)
    own = prober is None
    engine = prober if prober is not None else Prober(environ=environ)
    samples: list[BenchSample] = []
    try:
        for _ in range(iterations):
            exchange = engine.send(check, url)
            result = result_of(check, url, exchange)
            document = parse_json(exchange)
            value = lookup(document, field_path) if document is not MISSING else MISSING
            samples.append(
                BenchSample(
                    ok=result.ok,
                    status=exchange.status,
                    latency=exchange.latency,
                    confidence=_number(value) if value is not MISSING else None,
                    reason=result.why,
                )
            )
            if progress is not None:
                progress.update(
                    f"{check.name} {format_seconds(exchange.latency)} "
                    f"{'ok' if result.ok else 'FAIL'}"
                )
    finally:
        if own:
            engine.close()
    return BenchResult(name=check.name, url=redact_url(url), samples=tuple(samples))
