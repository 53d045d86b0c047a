"""The block YAML text of plain data, byte for byte what the state files' libyaml emitter
writes, for the documents whose every scalar it can prove that of (None for any other).

Every record a run writes has a `status.yaml`: a text of about 150 lines which libyaml's
emitter writes in C but only after Python built a node per value and answered two resolver
calls per scalar (about 500 calls a file, most of a record's serialization). The documents a
status holds are simple: nested mappings with text keys, lists of mappings, and scalars
that are text, integers, floats, booleans or null. This module writes those directly, with
the emitter's settings (`default_flow_style=False`, indent 2, sequences in a mapping not
indented, `width=100`, `allow_unicode=True`), and gives up (None) wherever the emitter's
choice is not certain from the rules below, so the caller's emitter writes that document
(PyYAML's pure-Python emitter writes the same bytes as libyaml's for what is written here;
both are compared on random documents in the tests):

- a text value is written plain when libyaml's analysis of it surely allows a block plain
  scalar and the resolver reads the plain text back as text; single-quoted when it surely
  does not; anything else (characters outside printable ASCII, a plain scalar starting with
  `-`, `?` or `:`, which libyaml judges by the next character) gives up;
- a line holding a space is written only when it fits in the width, since the emitter
  folds plain and single-quoted scalars at spaces past it;
- keys must be texts written plain, shorter than libyaml's simple-key limit;
- lists of lists, empty collections inside lists and any other type give up.

`parse` reads such a text back, optimistically: its answer is the document only if `text`
of it gives the same text again (the caller checks, and otherwise loads the text with
libyaml). Then libyaml would read the same values: the text is the emitter's bytes of them,
and the safe loader reads the safe emitter's text back to what was written.

Pure: no I/O. `tag_of` is the safe dumper's resolver (its answer depends on the text
alone: the safe dumper has no path resolvers), passed in so its cache is the caller's;
`scrub` is applied to every text value (never to keys) before it is written.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

__all__ = ["parse", "text"]

WIDTH = 100
"""The emitter's `width`: plain and single-quoted scalars fold at a space beyond it."""
_SIMPLE_KEY = 128
"""libyaml writes a longer key in the `? key` form."""
_INDICATORS = frozenset("#,[]{}&*!|>'\"%@`")
"""First characters that make libyaml refuse a plain scalar (block context)."""
_INT = re.compile(r"-?(?:0|[1-9][0-9]*)")
_FLOAT = re.compile(r"-?(?:[0-9]+\.[0-9]*(?:e[-+][0-9]+)?|\.inf)|\.nan")
_STR = "tag:yaml.org,2002:str"
_FLOAT_TAG = "tag:yaml.org,2002:float"

TagOf = Callable[[str, tuple[bool, bool]], str]


class _GiveUp(Exception):
    """The emitter's choice for some part of the document is not certain here."""


def text(data: Any, tag_of: TagOf, scrub: Callable[[str], str] = str) -> str | None:
    """The emitter's text of `data` (a non-empty mapping with text keys), text values
    passed through `scrub`; None when some part of it is not one this module can prove the
    emitter's bytes of."""
    if type(data) is not dict or not data:
        return None
    writer = _Writer(tag_of, scrub)
    try:
        writer.mapping(data, 0, "")
    except _GiveUp:
        return None
    writer.out.append("")
    return "\n".join(writer.out)


class _Writer:
    def __init__(self, tag_of: TagOf, scrub: Callable[[str], str]) -> None:
        self.tag_of = tag_of
        self.scrub = scrub
        self.out: list[str] = []

    def mapping(self, data: dict[Any, Any], indent: int, lead: str) -> None:
        """The entries of a non-empty mapping at `indent`; the first line starts with
        `lead` (a sequence item's `- `) when given."""
        out = self.out
        pad = " " * indent
        for key, value in data.items():
            if type(key) is not str or len(key) >= _SIMPLE_KEY or self.scalar(key) != key:
                raise _GiveUp
            head = f"{lead or pad}{key}:"
            lead = ""
            kind = type(value)
            if kind is dict or kind is list or kind is tuple:
                if not value:
                    out.append(f"{head} {'{}' if kind is dict else '[]'}")
                elif kind is dict:
                    out.append(head)
                    self.mapping(value, indent + 2, "")
                else:
                    out.append(head)
                    self.sequence(value, indent)
            else:
                out.append(self.line(head + " ", value))

    def sequence(self, items: Any, indent: int) -> None:
        """The items of a non-empty list at `indent` (`- ` at that column)."""
        lead = " " * indent + "- "
        for item in items:
            kind = type(item)
            if kind is dict and item:
                self.mapping(item, indent + 2, lead)
            elif kind is dict or kind is list or kind is tuple:
                raise _GiveUp
            else:
                self.out.append(self.line(lead, item))

    def line(self, head: str, value: Any) -> str:
        written = self.value(value)
        if len(head) + len(written) > WIDTH and " " in written:
            raise _GiveUp  # the emitter may fold it
        return head + written

    def value(self, value: Any) -> str:
        kind = type(value)
        if kind is str:
            return self.scalar(self.scrub(value))
        if value is None:
            return "null"
        if kind is bool:
            return "true" if value else "false"
        if kind is int:
            return str(value)
        if kind is float:
            written = _float(value)
            if self.tag_of(written, (True, False)) != _FLOAT_TAG:
                raise _GiveUp
            return written
        raise _GiveUp

    def scalar(self, value: str) -> str:
        """A text scalar as the emitter writes it in block context."""
        if not (value.isascii() and value.isprintable()):
            raise _GiveUp  # tabs, line breaks, non-ASCII: other rules (or double quotes)
        if (
            not value
            or value[0] == " "
            or value[-1] in " :"
            or value[0] in _INDICATORS
            or ": " in value
            or " #" in value
            or value.startswith(("---", "..."))
        ):
            return _single_quoted(value)  # libyaml surely refuses it plain
        if value[0] in "-?:":
            raise _GiveUp  # plain or not depends on what follows, by rules not repeated here
        if self.tag_of(value, (True, False)) == _STR:
            return value
        return _single_quoted(value)  # plain, it would read back as another type


def _single_quoted(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _float(value: float) -> str:
    """PyYAML's SafeRepresenter text of a float."""
    if value != value:
        return ".nan"
    if value == float("inf"):
        return ".inf"
    if value == float("-inf"):
        return "-.inf"
    written = repr(value).lower()
    if "." not in written and "e" in written:
        written = written.replace("e", ".0e", 1)
    return written


def parse(text: str) -> Any:
    """The document `text` holds if it is one `text` writes, else None or any value (the
    caller keeps it only when `text` of it is `text` again, see the module's docstring)."""
    lines = text.split("\n")
    if len(lines) < 2 or lines[-1] or lines[0].startswith(" "):
        return None
    reader = _Reader(lines[:-1])
    try:
        data = reader.mapping(0)
    except (_GiveUp, IndexError, ValueError):
        return None
    return data if reader.at == len(reader.lines) else None


class _Reader:
    def __init__(self, lines: list[str]) -> None:
        self.lines = lines
        self.at = 0

    def mapping(self, indent: int) -> dict[str, Any]:
        """The entries at `indent` from the current line on."""
        lines = self.lines
        out: dict[str, Any] = {}
        while self.at < len(lines):
            line = lines[self.at]
            if len(line) - len(line.lstrip(" ")) != indent or line[indent] == "-":
                break
            # A key is plain: it holds no `: ` and does not end in `:` (`Writer.scalar`).
            key, space, value = line[indent:].partition(": ")
            self.at += 1
            if space:
                out[key] = [] if value == "[]" else {} if value == "{}" else _scalar(value)
            elif not key.endswith(":") or len(key) == 1:
                raise _GiveUp
            elif self.at < len(lines) and lines[self.at].startswith(" " * indent + "- "):
                out[key[:-1]] = self.sequence(indent)
            else:
                out[key[:-1]] = self.mapping(indent + 2)
        if not out:
            raise _GiveUp
        return out

    def sequence(self, indent: int) -> list[Any]:
        """The items at `indent` (`- ` at that column) from the current line on."""
        lines = self.lines
        lead = " " * indent + "- "
        out: list[Any] = []
        while self.at < len(lines) and lines[self.at].startswith(lead):
            rest = lines[self.at][len(lead) :]
            if not rest.startswith("'") and (": " in rest or rest.endswith(":")):
                # A mapping whose first entry shares the item's line: read it as if the
                # `- ` were its indentation.
                lines[self.at] = " " * len(lead) + rest
                out.append(self.mapping(len(lead)))
            else:
                self.at += 1
                out.append(_scalar(rest))
        return out


def _scalar(written: str) -> Any:
    """A scalar as `Writer.value` writes it (a plain one read by its form alone)."""
    if written.startswith("'"):
        if len(written) < 2 or not written.endswith("'"):
            raise _GiveUp
        return written[1:-1].replace("''", "'")
    if written.startswith('"'):
        raise _GiveUp
    if written == "null":
        return None
    if written == "true" or written == "false":
        return written == "true"
    if _INT.fullmatch(written):
        return int(written)
    if _FLOAT.fullmatch(written):
        return float(written.replace(".inf", "inf").replace(".nan", "nan"))
    return written
