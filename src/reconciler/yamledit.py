"""Edit a rollout file the way a careful human would: change only the keys that change.

The reconciler writes rollbacks, stage advances and finalizations back into
`rollout/<service>.yaml`. Those files belong to people: comments, key order, quoting, column
alignment and flow mappings like `error_rate:   {max: 5%, target: 1%}` must survive.

Rather than re-emitting the document (every YAML emitter normalizes something), edits are
splices of the original text at the exact character positions the YAML parser reports for
each key and value. Every byte outside the edited spans stays identical. After editing, the
result is parsed again and compared with the intended data; a mismatch is an error, never a
silently wrong file.

Pure: text in, text out. No I/O.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import yaml

from reconciler import redact, yamlvalues
from reconciler.errors import ReconcileError
from reconciler.loader import libyaml_differs

__all__ = [
    "YamlEditError",
    "clear_rollback",
    "edit_rollout",
    "finalize",
    "record_rollback",
    "remove_force",
    "set_canary_percent",
]


class YamlEditError(ReconcileError):
    """A rollout file cannot be edited safely (the message names the key)."""


# Plain scalars that load back as the same string under YAML 1.1 and 1.2: revision names,
# providers, simple words. Anything else is double-quoted. Matched with `fullmatch`: `$`
# also matches before a trailing newline, which would write "A\n" plain and load it as "A".
_PLAIN_SAFE = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")
# Characters that cannot stand unescaped inside a quoted YAML scalar without changing it, and
# the line separators (NEL, U+2028, U+2029) that YAML folds and line readers split at.
_NEEDS_ESCAPE = re.compile(
    "[^\t\x20-\x7e\xa0-\u2027\u202a-\ud7ff\ue000-\ufefe\uff00-\ufffd\U00010000-\U0010ffff]"
)
_YAML_KEYWORDS = frozenset(
    {"y", "n", "yes", "no", "on", "off", "true", "false", "null", "nan", "inf"}
)


# --- public operations ---------------------------------------------------------------------
def edit_rollout(
    text: str,
    *,
    set_values: Mapping[str, object] | None = None,
    remove: Iterable[str] = (),
) -> str:
    """Return `text` with the dotted keys in `remove` deleted, then `set_values` applied.

    Keys are dotted paths through mappings (`canary_percent`, `revisions.stable`). Setting an
    existing scalar replaces the value in place, keeping its quoting style and any trailing
    comment. Setting a key to a mapping (or a key that does not exist yet) writes a new
    block: top-level keys go at the end of the file, nested keys after their parent's last
    entry. Removing a missing key is a no-op. Values may be str, int, bool, float, datetime
    (written as a quoted ISO 8601 UTC string) or a mapping of those.
    """
    updates = dict(set_values or {})
    removals = list(remove)
    expected = _load(text)
    for key in removals:
        text = _remove(text, _split(key))
        _data_remove(expected, _split(key))
    for key, value in updates.items():
        path = _split(key)
        text = _set(text, path, value)
        _data_set(expected, path, _plain(value))
    got = _load(text)
    if got != expected:
        # Defensive: the splice logic must never produce a different document than intended.
        raise YamlEditError(
            f"editing {', '.join([*removals, *updates]) or 'nothing'} would change other keys; "
            "edit the rollout file by hand"
        )
    return text


def set_canary_percent(text: str, percent: int) -> str:
    """Set `canary_percent` (a stage advance or a promotion)."""
    return edit_rollout(text, set_values={"canary_percent": percent})


def record_rollback(text: str, *, revision: str, at: datetime, reason: str) -> str:
    """The sticky rollback: `canary_percent: 0` and a `rolled_back` block at the end.

    An existing `rolled_back` block is replaced. The reason may quote a canary's answer, so
    probe secrets are scrubbed from it (the file becomes a commit, and a PR comment).
    """
    block = {"revision": revision, "at": at, "reason": redact.scrub(reason)}
    return edit_rollout(
        text,
        remove=["rolled_back"],
        set_values={"canary_percent": 0, "rolled_back": block},
    )


def clear_rollback(text: str) -> str:
    """Remove the `rolled_back` block (what a human does to retry the same canary)."""
    return edit_rollout(text, remove=["rolled_back"])


def finalize(text: str) -> str:
    """After 100%: the canary becomes `revisions.stable`, `canary` is removed, percent 0.

    `force` is removed too: it applied to the rollout that just finished.
    """
    data = _load(text)
    revisions = data.get("revisions") if isinstance(data, dict) else None
    canary = revisions.get("canary") if isinstance(revisions, dict) else None
    if not isinstance(canary, str) or not canary:
        raise YamlEditError("cannot finalize: revisions.canary is not set")
    return edit_rollout(
        text,
        remove=["revisions.canary", "force"],
        set_values={"revisions.stable": canary, "canary_percent": 0},
    )


def remove_force(text: str) -> str:
    """Remove `force` (it allows skipping the bake gate once)."""
    return edit_rollout(text, remove=["force"])


# --- locating nodes -------------------------------------------------------------------------
@dataclass(frozen=True)
class _Entry:
    """A key of a mapping with its value node and the mapping that holds it."""

    parent: yaml.MappingNode
    index: int
    key: yaml.ScalarNode
    value: yaml.Node


# libyaml's loader when PyYAML has it, for texts it reads as PyYAML does (the rollout loader's
# check): an edit parses the file at least twice, which on the pure-Python parser was most of
# a 1,000-service change tick's CPU. Its marks (character index, line, column) are PyYAML's;
# a plain scalar's style is '' there, None here (`_style`). Anything it refuses is read again
# by PyYAML, whose message is the one reported.
_CLoader: Any = None
if hasattr(yaml, "CSafeLoader"):

    class _CLoaderType(yamlvalues.CachedResolver, yaml.CSafeLoader):
        """libyaml's safe loader, each scalar's tag resolved once (`yamlvalues`)."""

    _CLoader = _CLoaderType


def _parse(text: str, parse: Any) -> Any:
    if _CLoader is not None and not libyaml_differs(text):
        try:
            return parse(text, Loader=_CLoader)
        except yaml.YAMLError:
            pass
    try:
        return parse(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise YamlEditError(f"cannot edit an invalid YAML document: {exc}") from None


def _tree(text: str) -> yaml.Node | None:
    """The node tree of `text`, cached: an edit reads the original text's tree for its data
    and again to edit its first key. Nothing here changes a tree (`_load` builds with the
    constructor, which may, from a tree of its own)."""
    return _cached_tree(text, _CLoader)


@functools.lru_cache(maxsize=64)
def _cached_tree(text: str, _loader: Any) -> yaml.Node | None:
    # Keyed by the loader too: a tree is the one `_parse` gives with the loader of the time.
    node: yaml.Node | None = _parse(text, yaml.compose)
    return node


def _compose(text: str) -> yaml.MappingNode:
    node = _tree(text)
    if not isinstance(node, yaml.MappingNode):
        raise YamlEditError("cannot edit: the rollout file is not a mapping")
    return node


def _load(text: str) -> Any:
    """`yaml.load` of `text` (as `_parse` reads it), the common nodes built by `yamlvalues`."""
    node = _tree(text)
    if node is None:
        return None
    try:
        return yamlvalues.build(yaml.constructor.SafeConstructor(), node)
    except (yamlvalues.Unusual, yaml.YAMLError):
        # The constructor's own reading: its values, or its error (an unknown tag) said as
        # `_parse` says it.
        return _parse(text, yaml.load)


def _style(node: yaml.ScalarNode) -> str | None:
    """The scalar's quoting style, None when plain (whichever parser read it)."""
    return node.style or None


def _split(key: str) -> list[str]:
    parts = key.split(".")
    if not all(parts):
        raise ValueError(f"invalid dotted key {key!r}")
    return parts


def _find(mapping: yaml.MappingNode, name: str, dotted: str) -> _Entry | None:
    found = [
        _Entry(mapping, i, k, v)
        for i, (k, v) in enumerate(mapping.value)
        if isinstance(k, yaml.ScalarNode) and k.value == name
    ]
    if len(found) > 1:
        raise YamlEditError(f"cannot edit {dotted}: the key is repeated")
    if not found:
        return None
    entry = found[0]
    # An alias reuses a node defined earlier; splicing it would edit the anchor instead.
    if entry.value.start_mark.index < entry.key.end_mark.index:
        raise YamlEditError(f"cannot edit {dotted}: its value is an alias")
    return entry


def _walk(
    root: yaml.MappingNode, path: list[str], *, strict: bool = True
) -> tuple[yaml.MappingNode | None, _Entry | None]:
    """The mapping that holds `path[-1]` (None if a parent is missing) and its entry.

    A parent that is not a mapping is an error when `strict`, else treated as missing.
    """
    node: yaml.Node = root
    for depth, name in enumerate(path[:-1]):
        assert isinstance(node, yaml.MappingNode)
        entry = _find(node, name, ".".join(path[: depth + 1]))
        if entry is None:
            return None, None
        if not isinstance(entry.value, yaml.MappingNode):
            if not strict:
                return None, None
            raise YamlEditError(f"cannot edit {'.'.join(path)}: {name} is not a mapping")
        node = entry.value
    assert isinstance(node, yaml.MappingNode)
    return node, _find(node, path[-1], ".".join(path))


def _last_index(node: yaml.Node) -> int:
    """End of the node's own text: block collections end at their last leaf, not later."""
    if isinstance(node, yaml.MappingNode) and node.flow_style is not True and node.value:
        return _last_index(node.value[-1][1])
    if isinstance(node, yaml.SequenceNode) and node.flow_style is not True and node.value:
        return _last_index(node.value[-1])
    return int(node.end_mark.index)


def _line_start(text: str, index: int) -> int:
    return text.rfind("\n", 0, index) + 1


def _line_end(text: str, index: int) -> int:
    """Index just past the newline that ends the line holding `index` (or len(text)).

    A node that already ends at a line start (a block scalar's end mark) ends there.
    """
    if index > 0 and text[index - 1] == "\n":
        return index
    nl = text.find("\n", index)
    return len(text) if nl < 0 else nl + 1


def _newline(text: str) -> str:
    return "\r\n" if "\r\n" in text else "\n"


# --- edits ----------------------------------------------------------------------------------
def _remove(text: str, path: list[str]) -> str:
    parent, entry = _walk(_compose(text), path, strict=False)
    if parent is None or entry is None:
        return text
    if parent.flow_style:
        return _remove_flow(text, entry)
    start = _line_start(text, entry.key.start_mark.index)
    if text[start : entry.key.start_mark.index].strip():
        raise YamlEditError(f"cannot remove {'.'.join(path)}: it shares a line with other keys")
    end = _line_end(text, _last_index(entry.value))
    return text[:start] + text[end:]


def _remove_flow(text: str, entry: _Entry) -> str:
    items = entry.parent.value
    start = entry.key.start_mark.index
    end = _last_index(entry.value)
    if entry.index > 0:  # `, key: value` after the previous item
        start = _last_index(items[entry.index - 1][1])
    elif len(items) > 1:  # `key: value, ` before the next item
        end = items[1][0].start_mark.index
    return text[:start] + text[end:]


def _set(text: str, path: list[str], value: object) -> str:
    root = _compose(text)
    parent, entry = _walk(root, path)
    if parent is None:
        # Create the missing parents as nested blocks in one go.
        return _set(text, path[:-1], {path[-1]: value})
    if entry is not None:
        node = entry.value
        # An empty value (`key:`) has no text to replace: rewrite the whole entry instead.
        has_text = node.end_mark.index > node.start_mark.index
        if isinstance(node, yaml.ScalarNode) and has_text and not isinstance(value, Mapping):
            start, end = node.start_mark.index, node.end_mark.index
            rendered = _scalar(value, _style(node))
            return text[:start] + _keep_comment_column(text, start, end, rendered)
        text = _remove(text, path)
        return _set(text, path, value)
    if parent.flow_style:
        return _insert_flow(text, parent, path[-1], value)
    nl = _newline(text)
    if parent is root:
        indent = ""
        at = len(text)
        if text and not text.endswith("\n"):
            text += nl
            at = len(text)
    else:
        indent = " " * parent.value[0][0].start_mark.column if parent.value else "  "
        at = _line_end(text, _last_index(parent))
        if at == len(text) and text and not text.endswith("\n"):
            text += nl
            at = len(text)
    block = "".join(line + nl for line in _block(path[-1], value, indent))
    return text[:at] + block + text[at:]


def _keep_comment_column(text: str, start: int, end: int, rendered: str) -> str:
    """`rendered` plus the rest of the text from `end`, keeping an aligned `# comment` in place.

    The padding before an end-of-line comment grows or shrinks by the change in length (at
    least one space stays), so a column of comments stays a column.
    """
    pad = len(text) - end - len(text[end:].lstrip(" "))
    if pad and text[end + pad : end + pad + 1] == "#":
        spaces = max(1, pad - (len(rendered) - (end - start)))
        return rendered + " " * spaces + text[end + pad :]
    return rendered + text[end:]


def _insert_flow(text: str, parent: yaml.MappingNode, key: str, value: object) -> str:
    item = f"{_key(key)}: {_flow(value)}"
    if parent.value:
        at = _last_index(parent.value[-1][1])
        return text[:at] + ", " + item + text[at:]
    at = parent.start_mark.index + 1  # just inside `{`
    return text[:at] + item + text[at:]


# --- rendering ------------------------------------------------------------------------------
def _block(key: str, value: object, indent: str) -> list[str]:
    if isinstance(value, Mapping):
        lines = [f"{indent}{_key(key)}:"]
        for k, v in value.items():
            lines.extend(_block(str(k), v, indent + "  "))
        return lines
    return [f"{indent}{_key(key)}: {_scalar(value, None)}"]


def _flow(value: object) -> str:
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{_key(str(k))}: {_flow(v)}" for k, v in value.items()) + "}"
    return _scalar(value, None)


def _key(key: str) -> str:
    return key if _plain_ok(key) else _double_quoted(key)


def _scalar(value: object, style: str | None) -> str:
    """One scalar in YAML, in the given quoting style when the old value had one."""
    plain = _plain(value)
    if isinstance(plain, bool):
        return "true" if plain else "false"
    if isinstance(plain, int | float):
        return repr(plain)
    if not isinstance(plain, str):
        raise TypeError(f"cannot write {type(value).__name__} into a rollout file")
    if style == "'" and not _NEEDS_ESCAPE.search(plain):
        return "'" + plain.replace("'", "''") + "'"
    if style is None and not isinstance(value, datetime) and _plain_ok(plain):
        return plain
    return _double_quoted(plain)


def _plain_ok(text: str) -> bool:
    return bool(_PLAIN_SAFE.fullmatch(text)) and text.lower() not in _YAML_KEYWORDS


def _double_quoted(text: str) -> str:
    """A YAML double-quoted scalar: JSON's escapes, plus escapes for the characters YAML
    reads as line breaks or refuses unescaped (C1 controls, U+2028, BOM ...)."""
    quoted = json.dumps(text, ensure_ascii=False)
    return _NEEDS_ESCAPE.sub(lambda m: f"\\u{ord(m.group()):04x}", quoted)


def _plain(value: object) -> object:
    """The value as YAML loads it back after `_scalar` wrote it."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError(f"datetime {value} has no timezone")
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


# --- the intended data, for the final check -------------------------------------------------
def _data_remove(data: Any, path: list[str]) -> None:
    for name in path[:-1]:
        if not isinstance(data, dict) or name not in data:
            return
        data = data[name]
    if isinstance(data, dict):
        data.pop(path[-1], None)


def _data_set(data: Any, path: list[str], value: object) -> None:
    for name in path[:-1]:
        data = data.setdefault(name, {})
    data[path[-1]] = value
