"""The status site's pure pages, and the documented Pages workflow (actionlint clean)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path

import pytest

from reconciler.site import EventRow, ServiceView, index_page, service_page
from tests.unit.test_workflows import _actionlint

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
ROOT = Path(__file__).resolve().parents[2]
VOID = {"meta", "br", "rect", "circle", "line", "polyline"}


class _Balance(HTMLParser):
    """Checks that every element the pages open is closed, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []

    def handle_starttag(self, tag: str, attrs: object) -> None:
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: object) -> None:
        pass

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID:
            return
        assert self.stack and self.stack[-1] == tag, (tag, self.stack)
        self.stack.pop()


def balanced(page: str) -> bool:
    parser = _Balance()
    parser.feed(page)
    return parser.stack == []


VIEW = ServiceView(
    "ion-api",
    "rolled_back",
    "ion-api-00041-abc",
    "ion-api-00042-xyz",
    0,
    stages=(5, 10, 100),
    rolled_back="error_rate <script>7.1%</script> > 5%",
    events=(EventRow(NOW, "rolled_back", "a=95 b=5", "a=100", "x < y & z"),),
)


def test_pages_are_balanced_and_escape_everything() -> None:
    for page in (index_page([VIEW], NOW), service_page(VIEW, NOW)):
        assert balanced(page)
        assert "<script" not in page
    page = service_page(VIEW, NOW)
    assert "error_rate &lt;script&gt;7.1%&lt;/script&gt; &gt; 5%" in page
    assert "x &lt; y &amp; z" in page
    # A rolled-back canary marks every stage, none current.
    assert re.findall(r'<li class="([\w-]+)">', page) == ["rolled-back"] * 3


def test_an_empty_fleet_says_so() -> None:
    page = index_page([], NOW)
    assert "No service has state yet." in page and balanced(page)


def test_documented_pages_workflow_is_actionlint_clean(tmp_path: Path) -> None:
    doc = (ROOT / "docs" / "status-site.md").read_text(encoding="utf-8")
    (block,) = re.findall(r"```yaml\n(name: status-site\n.*?)```", doc, re.S)
    workflow = tmp_path / ".github" / "workflows" / "status-site.yml"
    workflow.parent.mkdir(parents=True)
    workflow.write_text(block, encoding="utf-8")
    result = _actionlint(str(workflow.relative_to(tmp_path)), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "pages: write" in block and "reconcile site --out site" in block


@pytest.mark.parametrize("stage,expected", [(10, ["done", "current", "pending"])])
def test_stage_track(stage: int, expected: list[str]) -> None:
    view = ServiceView("ion-api", "progressing", "s", "c", stage, stages=(5, 10, 100))
    assert re.findall(r'<li class="([\w-]+)">', service_page(view, NOW)) == expected
