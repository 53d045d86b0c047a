"""Docs that run: every ```sh and ```python block of README.md and docs/*.md, on the emulator.

Each block runs in its own sandbox (an emulator with the built-in ion-api scenario, a bare
remote and a clone holding rollout/ion-api.yaml, after one `reconcile apply`), with the
clone as working directory and the emulator's variables exported, as a reader who followed
the Quickstart would. A shell block runs under `bash -e` (a failing command fails the test);
a Python block runs with `python -c`. A block that needs Google Cloud, GitHub, or minutes of
work is preceded by `<!-- no-run: REASON -->` and skipped with that reason.

Slow (marked so): a sandbox per block and a `reconcile` process per command; about three
minutes for the 9 runnable blocks on a loaded 2-core machine, the README's verb session the
longest (about 15 commands). Fixed emulator ports in a block (8790/8791) are replaced by
free ones, so two runs on one machine do not collide; the text is otherwise run as written.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from reconciler.backends.cloudrun import CloudRunBackend
from reconciler.gitops import GitOps
from reconciler.reconcile import Context, apply_all
from reconciler.sandbox import sandbox

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(sh|python)\s*$")
NO_RUN = re.compile(r"^<!--\s*no-run:\s*(.+?)\s*-->\s*$")
TIMEOUT = 300  # per block, generous: a loaded CI machine runs each command in seconds


@dataclass(frozen=True)
class Block:
    """One fenced block: where it is, its language, its text, and why it is skipped."""

    path: Path
    line: int
    lang: str
    text: str
    skip: str | None

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def blocks(path: Path) -> list[Block]:
    """The sh and python blocks of a Markdown file, each with its no-run reason if marked."""
    out: list[Block] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        start = i
        j = i + 1
        while j < len(lines) and not lines[j].startswith("```"):
            j += 1
        prev = next((lines[k] for k in range(start - 1, -1, -1) if lines[k].strip()), "")
        mark = NO_RUN.match(prev)
        text = "\n".join(lines[start + 1 : j]) + "\n"
        out.append(Block(path, start + 1, m.group(1), text, mark.group(1) if mark else None))
        i = j + 1
    return out


ALL = [b for p in DOCS for b in blocks(p)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_docs_have_runnable_blocks() -> None:
    """A renamed fence (```console, ```bash) would silently run nothing: guard the count."""
    assert len([b for b in ALL if b.skip is None]) >= 6, [b.id for b in ALL]


@pytest.mark.slow
@pytest.mark.parametrize("block", ALL, ids=[b.id for b in ALL])
def test_doc_block_runs(block: Block, tmp_path: Path) -> None:
    if block.skip:
        pytest.skip(block.skip)
    text = block.text
    for fixed in ("8790", "8791"):
        text = text.replace(fixed, str(_free_port()))
    with sandbox(tmp_path / "sb") as sb:
        env = dict(os.environ)
        env.update({k: v for k, v in sb.env.items() if v is not None})
        bindir = str(Path(sys.executable).parent)
        env["PATH"] = bindir + ":" + env.get("PATH", "")
        env.pop("GOOGLE_APPLICATION_CREDENTIALS", None)
        # The reader's own git identity (the sandbox isolates git from the machine's).
        for who in ("AUTHOR", "COMMITTER"):
            env[f"GIT_{who}_NAME"], env[f"GIT_{who}_EMAIL"] = "Docs Reader", "reader@example.com"
        ctx = Context(sb.repo, CloudRunBackend(), clock=sb.now, git=GitOps(sb.repo))
        assert apply_all(ctx).exit_code == 0  # state/ as after a first run
        if block.lang == "sh":
            # Background jobs a block starts (an emulator) are stopped when it ends.
            script = "trap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n" + text
            cmd = ["bash", "-e", "-c", script]
        else:
            cmd = [sys.executable, "-c", text]
        out = subprocess.run(
            cmd, cwd=sb.repo, env=env, capture_output=True, text=True, timeout=TIMEOUT
        )
    assert out.returncode == 0, (
        f"{block.id} ({block.lang}) exited {out.returncode}\n--- stdout\n{out.stdout[-3000:]}"
        f"\n--- stderr\n{out.stderr[-3000:]}"
    )
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
