"""Terminal styling: ANSI colour that is off unless the caller turns it on, and truncation."""

from __future__ import annotations

from reconciler.plan import Action

_CODES = {
    "add": "32",  # green
    "change": "33",  # yellow
    "remove": "31",  # red
    "bad": "1;31",  # bold red
    "good": "32",
    "bold": "1",
    "dim": "2",
}
_ACTION_STYLE = {Action.ADD: "add", Action.CHANGE: "change", Action.REMOVE: "remove"}


def paint(text: str, style: str, color: bool) -> str:
    """`text` wrapped in the ANSI codes of `style` when `color`, else unchanged."""
    if not color or not text:
        return text
    return f"\x1b[{_CODES[style]}m{text}\x1b[0m"


def action_style(action: Action) -> str:
    """The style of a change's symbol, as Terraform colours `+ ~ -`."""
    return _ACTION_STYLE[action]


def truncate(text: str, width: int) -> str:
    """`text` cut to `width` characters with `…` in the middle, keeping both ends.

    Cloud Run names differ at their ends (`payments-api-europe-west1`, `...-00042-xyz`), so
    the middle is the part a reader can best do without.
    """
    if len(text) <= width:
        return text
    if width <= 1:
        return text[:width]
    head = width // 2
    tail = width - 1 - head
    return text[:head] + "…" + (text[-tail:] if tail else "")
