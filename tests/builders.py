"""Builders of test inputs shared across test modules: rollout files for the sandbox.

Real values only (text, model values); nothing here fakes a Google client or git.
"""

from __future__ import annotations

from reconciler.emulator import Emulator
from reconciler.sandbox import example_rollout


def without_probes(text: str) -> str:
    """A rollout file's text with its `probes:` block removed (evidence from metrics only)."""
    head, rest = text.split("probes:\n", 1)
    return head + rest[rest.index("dependencies:") :]


def rollout_text(emu: Emulator, *, probes: bool = True, **over: object) -> str:
    """The sandbox's ion-api rollout file (`example_rollout` with `over`), with or without its
    probes."""
    text = example_rollout(emu, **over)
    return text if probes else without_probes(text)
