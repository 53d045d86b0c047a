"""`reconcile site --out DIR` as a user types it, rendered in real headless Chromium."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from reconciler.model import GateResult, Outcome, Verdict, WindowStats
from reconciler.state import (
    Event,
    EventKind,
    Phase,
    ServiceStatus,
    append_events,
    append_metrics,
    atomic_write_text,
    write_status,
)
from reconciler.testing.browser import chromium_binary, dump_dom, png_facts, screenshot
from tests.builders import status_at
from tests.refs import ION, ION_DIR, ref

NOW = datetime.now(UTC).replace(second=0, microsecond=0)
A_STABLE, A_CANARY = "ion-api-00041-abc", "ion-api-00042-xyz"
B_STABLE, B_CANARY = "pay-api-00007-aaa", "pay-api-00008-bbb"


def rollout(service: str, stable: str, canary: str, percent: int, extra: str = "") -> str:
    return (
        f"service: {service}\nproject: naeda-genesis\nregion: us-central1\n"
        f"revisions: {{stable: {stable}, canary: {canary}}}\ncanary_percent: {percent}\n"
        "stages: [5, 10, 25, 50, 100]\n" + extra
    )


def status(
    service: str, stable: str, canary: str, percent: int, phase: Phase, verdict: Verdict
) -> ServiceStatus:
    return status_at(
        percent,
        NOW - timedelta(hours=3),
        service=service,
        stable=stable,
        canary=canary,
        phase=phase,
        generation=3,
        observed_generation=3,
        last_reconcile=NOW,
        verdict=verdict,
        verdict_at=NOW,
    )


def windows(service: str, canary: str, stable: str, errors: int) -> list[WindowStats]:
    out = []
    for i in range(24):
        end = NOW - timedelta(minutes=5 * i)
        for rev, n, e, p95 in ((canary, 400, errors, 0.3 + i / 100), (stable, 4000, 4, 0.25)):
            out.append(
                WindowStats(
                    service, rev, end - timedelta(minutes=5), end, n, e, n - e, 0.1, p95, 0.9
                )
            )
    return out


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repository with two services in state/ (one at 10%, one rolled back), and its site."""
    repo = tmp_path_factory.mktemp("repo")
    (repo / "rollout").mkdir()
    (repo / "rollout" / "_defaults.yaml").write_text(
        "gates:\n  window: 5m\n  error_rate: {max: 5%}\n  latency_p95: {max: 20s}\n",
        encoding="utf-8",
    )
    (repo / "rollout" / "ion-api.yaml").write_text(
        rollout("ion-api", A_STABLE, A_CANARY, 10), encoding="utf-8"
    )
    reason = "error_rate 7.1% > 5% (2 windows)"
    block = f"rolled_back: {{revision: {B_CANARY}, at: '{NOW.isoformat()}', reason: '{reason}'}}\n"
    (repo / "rollout" / "pay-api.yaml").write_text(
        rollout("pay-api", B_STABLE, B_CANARY, 0, block), encoding="utf-8"
    )
    passing = Verdict(
        Outcome.PASS,
        (GateResult("error_rate", Outcome.PASS, 0.005, 0.05, 400, "error_rate 0.5% <= 5%"),),
    )
    failing = Verdict(
        Outcome.FAIL,
        (GateResult("error_rate", Outcome.FAIL, 0.071, 0.05, 400, "error_rate 7.1% > 5%"),),
    )
    write_status(repo, ION, status("ion-api", A_STABLE, A_CANARY, 10, Phase.PROGRESSING, passing))
    write_status(
        repo, ref("pay-api"), status("pay-api", B_STABLE, B_CANARY, 0, Phase.ROLLED_BACK, failing)
    )
    append_metrics(repo, ION, windows("ion-api", A_CANARY, A_STABLE, 2))
    append_metrics(repo, ref("pay-api"), windows("pay-api", B_CANARY, B_STABLE, 28))
    append_events(
        repo,
        ION,
        [
            Event(
                NOW - timedelta(hours=5),
                EventKind.APPLIED,
                "ci",
                "ion-api-00041-abc=100",
                "…=95 …=5",
                "new stage",
            ),
            Event(
                NOW - timedelta(hours=3),
                EventKind.ADVANCED,
                "ci",
                "…=95 …=5",
                "…=90 …=10",
                "advance <b>10%</b>",
            ),
        ],
    )
    append_events(
        repo,
        ref("pay-api"),
        [
            Event(
                NOW - timedelta(minutes=10),
                EventKind.ROLLED_BACK,
                "ci",
                "…=95 …=5",
                "…=100",
                "error_rate 7.1% > 5%",
            ),
        ],
    )
    atomic_write_text(
        repo / ION_DIR / "reports" / "interim-latest.md", "# ion-api: interim report\n"
    )
    out = repo / "public"
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    done = subprocess.run(
        [sys.executable, "-m", "reconciler", "--repo", str(repo), "site", "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"wrote 3 pages to {out}")
    return out


@pytest.fixture(scope="module")
def chromium() -> str:
    binary = chromium_binary()
    if binary is None:
        reason = "chromium is not installed (apt-get install chromium)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}; CI must install it")
        pytest.skip(reason)
    return binary


def test_site_has_no_script_and_no_external_resources(site: Path) -> None:
    assert sorted(p.name for p in site.iterdir()) == [
        ".nojekyll",
        "index.html",
        "ion-api.html",
        "pay-api.html",
    ]
    for page in site.glob("*.html"):
        text = page.read_text(encoding="utf-8")
        assert "<script" not in text.lower()
        assert not re.search(r"""(src|href)=["']?(https?:)?//""", text), page.name
    assert "advance &lt;b&gt;10%&lt;/b&gt;" in (site / "ion-api.html").read_text()  # escaped


def test_fleet_table_in_the_browser(site: Path, chromium: str) -> None:
    dom = dump_dom(chromium, site / "index.html")
    rows = re.findall(r'<tr data-service="([^"]+)">(.*?)</tr>', dom, re.S)
    assert [name for name, _ in rows] == ["ion-api", "pay-api"]
    ion, pay = rows[0][1], rows[1][1]
    assert 'href="ion-api.html"' in ion and "progressing" in ion and "10%" in ion and "PASS" in ion
    assert "rolled back" in pay and "FAIL" in pay


def test_service_page_in_the_browser(site: Path, chromium: str) -> None:
    dom = dump_dom(chromium, site / "ion-api.html")
    stages = re.findall(r'<li class="(\w[\w-]*)">(\d+)%</li>', dom)
    assert stages == [
        ("done", "5"),
        ("current", "10"),
        ("pending", "25"),
        ("pending", "50"),
        ("pending", "100"),
    ]
    assert dom.count('<svg xmlns="http://www.w3.org/2000/svg" role="img"') == 2
    assert 'data-chart="error_rate"' in dom and 'data-chart="latency_p95"' in dom
    assert re.search(r'<polyline class="canary" points="[\d., ]+"', dom)
    assert re.search(r'<polyline class="stable" points="[\d., ]+"', dom)
    assert "advance &lt;b&gt;10%&lt;/b&gt;" in dom and "<b>10%</b>" not in dom
    assert "interim-latest.md" in dom
    pay = dump_dom(chromium, site / "pay-api.html")
    assert 'id="rolled-back"' in pay and "error_rate 7.1% &gt; 5% (2 windows)" in pay
    assert 'class="threshold"' in pay  # 7% against 5%: the threshold lies inside the axis


def test_screenshots_are_not_blank(site: Path, chromium: str, tmp_path: Path) -> None:
    png = screenshot(chromium, site / "ion-api.html", tmp_path / "ion-api.png", (1000, 800))
    width, height, ink = png_facts(png)
    assert (width, height) == (1000, 800)
    assert ink > 0.005, ink  # a blank white page scores about 0
    blank = tmp_path / "blank.html"
    blank.write_text("<!DOCTYPE html><html><body></body></html>", encoding="utf-8")
    assert png_facts(screenshot(chromium, blank, tmp_path / "blank.png", (1000, 800)))[2] < 0.001
