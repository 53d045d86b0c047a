"""Read rollout files strictly: every error is one line `path:line: message`.

The YAML is composed into a node tree (which keeps line marks), then built into plain
Python values by hand, recording the line of every key and list item. That gives us:

- YAML 1.2 core scalars, and a refusal of plain scalars that YAML 1.1 tools read as
  something else (`no`, `on`, `010`, `1:30`, `1_000` ...), with what to write instead;
- duplicate keys, merge keys (`<<`) and explicit tags (`!!python/...`) as errors;
- a cap on aliases, on what aliases expand to, and on nesting depth (no alias bombs);
- pydantic errors mapped back to the line of the deepest key that exists.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import os
import re
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails
from yaml.composer import Composer
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.parser import Parser
from yaml.reader import Reader
from yaml.resolver import BaseResolver
from yaml.scanner import Scanner

from reconciler import safepath
from reconciler.errors import ReconcileError
from reconciler.spec import (
    DEFAULTABLE,
    DEFAULTS_FILE,
    STRICT_UNITS,
    Loc,
    RolloutDefaults,
    RolloutSpec,
    RuleError,
    describe_value,
    merge_defaults,
)

# libyaml's parser, when PyYAML was built with it: rollout files are read with it first.
_CParser: Any
try:
    from yaml._yaml import CParser as _CParser
except ImportError:  # pragma: no cover - PyYAML without libyaml
    _CParser = None
# Texts libyaml reads differently from PyYAML (found by tests/unit/test_loader_fast_path.py):
# tabs, YAML 1.1 line breaks (NEL, LS, PS), a BOM after the start, a comment glued to a
# block scalar header (`|#`), a `?` inside a plain scalar (flow context), and whatever
# PyYAML's reader refuses.
# One search per kind, each only when its first character occurs: a single alternation
# tried at every position cost more than composing a small file.
# Characters: PyYAML's non-printable ones plus tab, NEL, LS, PS and BOM, as one class
# (`tests/unit/test_loader_fast_path.py` checks it against both, for every code point).
_SPECIAL_CHAR = re.compile(
    "[^\n\r -~\xa0-\u2027\u202a-\ud7ff\ue000-\ufefe\uff00-\ufffd\U00010000-\U0010ffff]"
)
_GLUED_COMMENT = re.compile(r"[|>][-+0-9]*#")
_INNER_QUESTION = re.compile(r"\S\?")


def libyaml_differs(text: str) -> bool:
    """Whether `text` holds something libyaml reads differently from PyYAML (see above)."""
    return bool(
        _SPECIAL_CHAR.search(text)
        or (("|" in text or ">" in text) and _GLUED_COMMENT.search(text))
        or ("?" in text and _INNER_QUESTION.search(text))
    )


MAX_BYTES = 1024 * 1024
MAX_ALIASES = 100
# Values built through aliases; bounds `a: &a [x, x], b: &b [*a, *a], ...` (billion laughs).
MAX_ALIAS_VALUES = 10_000
MAX_DEPTH = 50

_STR = "tag:yaml.org,2002:str"
_SEQ = "tag:yaml.org,2002:seq"
_MAP = "tag:yaml.org,2002:map"
# Plain (unquoted, untagged) scalars get this tag from the resolver; `_Builder` resolves
# them itself, YAML 1.2 core style, and rejects the ones YAML 1.1 reads differently.
_PLAIN = "!plain"


class SpecError(ReconcileError):
    """A rollout file is invalid; the message is `path:line: message`."""


class _Problem(Exception):
    """An error at a line of the file being loaded, turned into a SpecError by `parse_spec`."""

    def __init__(self, line: int, message: str, path: Path | None = None) -> None:
        super().__init__(message)
        self.line = line
        self.message = message
        self.path = path
        """The file at fault when it is not the one being loaded (the shared defaults)."""


class _Tree:
    """A file's parsed values, the line of every key path, and which file each came from."""

    def __init__(
        self, values: dict[str, Any], lines: dict[Loc, int], files: dict[Loc, Path] | None = None
    ) -> None:
        self.values = values
        self.lines = lines
        self.files: dict[Loc, Path] = files or {}


def is_defaults_file(path: Path) -> bool:
    """True for `rollout/_defaults.yaml`, the shared defaults (not a service)."""
    return path.name == DEFAULTS_FILE


def find_rollout_files(directory: Path) -> list[Path]:
    """The rollout files of a directory and its sub-folders (`*.yaml`, and `*.yml` so that a
    misnamed one is reported rather than silently skipped), sorted; never a shared
    `_defaults.yaml` (each applies to the files of its own folder, see `load_spec`).

    Sub-folders hold a fleet's files by region or team (`rollout/europe-west1/ion-api.yaml`);
    a file's identity is (project, region, service) from its content, never its folder.
    Folders starting with a dot are skipped. A symbolic link, to a file or a folder, is
    listed (not followed, not skipped) so that `load_spec` reports it.
    """
    found: list[Path] = []
    for here, folders, files in os.walk(directory, followlinks=False):
        base = Path(here)
        for name in list(folders):
            if name.startswith(".") or (base / name).is_symlink():
                folders.remove(name)
                if not name.startswith("."):
                    found.append(base / name)
        found += (
            base / n
            for n in files
            if Path(n).suffix in (".yaml", ".yml")
            and not n.startswith(".")
            and not is_defaults_file(base / n)
        )
    return sorted(found)


def duplicate_identities(loaded: Sequence[tuple[Path, RolloutSpec]]) -> dict[Path, str]:
    """Files that must not be reconciled because another file claims the same rollout:
    each mapped to a one-line error naming both files.

    Two files naming one (project, region, service) would fight over its traffic and its
    state folder. The same service id in another project or region is another rollout.
    """
    first: dict[tuple[str, str, str], tuple[Path, RolloutSpec]] = {}
    out: dict[Path, str] = {}
    for path, spec in loaded:
        seen = first.setdefault((spec.project, spec.region, spec.service), (path, spec))
        if seen[0] != path:
            out[path] = _clash(path, spec, seen[0])
            out.setdefault(seen[0], _clash(seen[0], seen[1], path))
    return out


def _clash(path: Path, spec: RolloutSpec, other: Path) -> str:
    return (
        f"{path}: {other} names the same rollout (project {spec.project}, region "
        f"{spec.region}, service {spec.service}); keep one file per rollout"
    )


def _read(path: Path, what: str) -> bytes:
    """The first MAX_BYTES + 1 bytes of a rollout or defaults file.

    A symbolic link (the file itself, or a folder on its way under the repository's rollout/)
    is an error naming the file; it is never followed, so a link to a file outside git is
    never applied and a link to a credentials file never has its content printed.
    """
    try:
        safepath.guard(path)
    except safepath.UnsafePathError as exc:
        raise SpecError(str(exc)) from None
    try:
        # O_NOFOLLOW: the link check above and this open cannot be raced apart.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        with os.fdopen(fd, "rb") as fh:
            return fh.read(MAX_BYTES + 1)
    except FileNotFoundError:
        raise SpecError(f"{path}: no such file or directory") from None
    except IsADirectoryError:
        raise SpecError(f"{path}: is a directory, not {what}") from None
    except OSError as exc:
        if path.is_symlink():
            raise SpecError(
                f"{path}: is a symbolic link; {what} must be a regular file in the "
                "repository (not followed)"
            ) from None
        raise SpecError(f"{path}: cannot read: {exc.strerror or exc}") from None


def load_spec(path: Path) -> RolloutSpec:
    """Read and validate one rollout file, merged over `_defaults.yaml` of its directory
    when there is one; raise SpecError (`path:line: message`, naming the file at fault)."""
    data = _read(path, "a rollout file")
    defaults_path = path.parent / DEFAULTS_FILE
    defaults = None
    if (defaults_path.is_file() or defaults_path.is_symlink()) and not is_defaults_file(path):
        defaults = (_read(defaults_path, "a defaults file"), defaults_path)
    return parse_spec(data, path, defaults)


def blob_id(data: bytes) -> str:
    """The id git gives a file of these bytes (`git hash-object`), computed without git."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


def spec_id_of(path: Path) -> str:
    """What identifies a rollout file's desired state, by content: the blob id of the file,
    then `+` and the blob id of the `_defaults.yaml` it inherits, when there is one.

    Constant cost whatever the history (no `git log`), the same in a clone, a worktree or a
    copy, and it changes when either file does, so an edit of the shared defaults is a new
    spec for every service under them. `git cat-file -p <id>` shows the exact text, and
    `git log --find-object=<id>` the commits that wrote it.
    """
    own = blob_id(_read(path, "a rollout file"))
    defaults_path = path.parent / DEFAULTS_FILE
    if is_defaults_file(path) or not (defaults_path.is_file() or defaults_path.is_symlink()):
        return own
    return f"{own}+{blob_id(_read(defaults_path, 'a defaults file'))}"


def load_defaults(path: Path) -> RolloutDefaults:
    """Read and validate a shared defaults file (`rollout/_defaults.yaml`) on its own."""
    tree = _defaults_tree(_read(path, "a defaults file"), path)
    return RolloutDefaults.model_validate(
        tree.values, context=STRICT_UNITS, by_alias=True, by_name=False
    )


@functools.lru_cache(maxsize=4)
def _defaults_tree(data: bytes, path: Path) -> _Tree:
    """The validated values of a defaults file, with their lines (cached by content: every
    rollout file of a run merges the same defaults; callers never modify the tree)."""
    try:
        text = _decode(data)
        try:
            values, lines = _compose(text, fast=True)
        except _Problem:
            values, lines = _compose(text, fast=False)
        _validate(values, lines, RolloutDefaults)
    except _Problem as problem:
        raise SpecError(f"{path}:{problem.line}: {problem.message}") from None
    return _Tree(values, lines, dict.fromkeys(lines, path))


def parse_spec(data: bytes, path: Path, defaults: tuple[bytes, Path] | None = None) -> RolloutSpec:
    """Validate the bytes of a rollout file named `path` (e.g. read from another git ref),
    merged over `defaults`, the bytes and path of its `_defaults.yaml` (see `load_spec`)."""
    shared = _defaults_tree(*defaults) if defaults is not None else None

    def read(text: str, fast: bool) -> RolloutSpec:
        tree, lines = _compose(text, fast=fast)
        if "waves" in tree and "region" in tree:
            raise _Problem(
                lines[("region",)],
                "region: a file with waves names its regions there; remove region (or waves)",
            )
        merged = _Tree(tree, lines) if shared is None else _merged(shared, _Tree(tree, lines))
        spec = _validate(merged.values, merged.lines, RolloutSpec, merged.files)
        _check_file_name(spec, path, lines)
        return spec

    try:
        text = _decode(data)
        try:
            return read(text, fast=True)
        except _Problem:
            # Say what is wrong in the reference parser's words and lines.
            return read(text, fast=False)
    except _Problem as problem:
        raise SpecError(f"{problem.path or path}:{problem.line}: {problem.message}") from None


def _merged(defaults: _Tree, rollout: _Tree) -> _Tree:
    """`merge_defaults` over parsed trees, keeping each key path's line and file."""
    values = merge_defaults(
        {k: v for k, v in defaults.values.items() if k in DEFAULTABLE}, rollout.values
    )
    lines = dict(rollout.lines)
    files: dict[Loc, Path] = {}
    gates_merge = isinstance(rollout.values.get("gates"), dict)
    for loc, line in defaults.lines.items():
        if not loc:
            continue
        # The key whose presence in the rollout file overrides this default.
        owner = loc[:2] if loc[0] == "gates" and gates_merge else loc[:1]
        if owner not in rollout.lines:
            lines[loc] = line
            files[loc] = defaults.files[loc]
    return _Tree(values, lines, files)


def parse_yaml(data: bytes, path: Path) -> dict[str, Any]:
    """The strict YAML reading of `parse_spec` without the rollout model: a mapping of plain
    values (str, int, float, bool, None, list, dict). Raises SpecError `path:line: message`."""
    try:
        text = _decode(data)
        try:
            tree, _ = _compose(text, fast=True)
        except _Problem:
            tree, _ = _compose(text, fast=False)
    except _Problem as problem:
        raise SpecError(f"{path}:{problem.line}: {problem.message}") from None
    return tree


# --- bytes -> text -----------------------------------------------------------------------
def _decode(data: bytes) -> str:
    if len(data) > MAX_BYTES:
        raise _Problem(1, "file is larger than 1 MiB; a rollout file is a few kB of YAML")
    nul = data.find(b"\0")
    if nul >= 0:
        line = data.count(b"\n", 0, nul) + 1
        raise _Problem(line, "binary file (NUL byte); a rollout file is UTF-8 text")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise _Problem(line, f"not UTF-8 text (byte 0x{data[exc.start]:02x})") from None
    text = text.removeprefix("\ufeff")
    if not text.strip():
        raise _Problem(1, "empty file; a rollout file needs at least " + _REQUIRED)
    return text


_REQUIRED = "service, project, region (or waves), revisions, canary_percent and stages"


# --- text -> node tree -> values ------------------------------------------------------------
class _Strict:
    """Composer rules shared by both parsers: no implicit type resolution, capped aliases and
    nesting depth, and the line where each alias is used as a list item."""

    aliases: int
    depth: int
    alias_lines: dict[tuple[int, int], int]

    def _start(self) -> None:
        self.aliases = 0
        self.depth = 0
        # (id of a sequence node, index) -> line of an alias used as that item: the shared
        # node's own mark is its anchor's, far from where the alias is written.
        self.alias_lines = {}

    def resolve(self, kind: type[Node], value: Any, implicit: Any) -> str:
        # `implicit` is (plain, quoted); libyaml gives (False, False) for the non-specific
        # tag `!`, which PyYAML's parser, our reference, reads as plain: do the same.
        if kind is ScalarNode and (implicit[0] or not implicit[1]):
            return _PLAIN
        return str(super().resolve(kind, value, implicit))  # type: ignore[misc]

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        event = self.peek_event()  # type: ignore[attr-defined]
        line = event.start_mark.line + 1 if event.start_mark is not None else 1
        if isinstance(event, AliasEvent):
            self.aliases += 1
            if self.aliases > MAX_ALIASES:
                raise _Problem(
                    line, f"more than {MAX_ALIASES} aliases (*name); write the values out"
                )
            if parent is not None and isinstance(index, int):
                self.alias_lines[(id(parent), index)] = line
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise _Problem(line, f"nested more than {MAX_DEPTH} levels deep")
        try:
            node: Node | None = super().compose_node(parent, index)  # type: ignore[misc]
            return node
        finally:
            self.depth -= 1


class _Composer(_Strict, Reader, Scanner, Parser, Composer, BaseResolver):
    """PyYAML's pure-Python reader, scanner, parser and composer: the reference, and the
    source of every syntax error message."""

    def __init__(self, text: str) -> None:
        Reader.__init__(self, text)
        Scanner.__init__(self)
        Parser.__init__(self)
        Composer.__init__(self)
        BaseResolver.__init__(self)
        self._start()


if _CParser is not None:

    class _FastComposer(_Strict, Composer, _CParser, BaseResolver):  # type: ignore[misc]
        """The same composer on libyaml's scanner and parser (several times faster)."""

        def __init__(self, text: str) -> None:
            _CParser.__init__(self, text)
            Composer.__init__(self)
            BaseResolver.__init__(self)
            self._start()


if _CParser is not None:

    class _CComposer(_CParser, BaseResolver):  # type: ignore[misc]
        """libyaml composing the node tree itself, for texts that cannot hold an alias or
        nest deep enough to need the composer's hooks (see `_c_composable`)."""

        def __init__(self, text: str) -> None:
            _CParser.__init__(self, text)
            BaseResolver.__init__(self)
            self.alias_lines: dict[tuple[int, int], int] = {}  # none: the text has no alias

        def resolve(self, kind: type[Node], value: Any, implicit: Any) -> str:
            if kind is ScalarNode and (implicit[0] or not implicit[1]):  # see _Strict
                return _PLAIN
            return str(BaseResolver.resolve(self, kind, value, implicit))  # type: ignore[no-untyped-call]


def _c_composable(text: str) -> bool:
    """No `&`/`*` (so no anchor or alias) and too few brackets and too little indentation to
    nest MAX_DEPTH levels: the composer's alias and depth checks cannot trigger."""
    if "&" in text or "*" in text:
        return False
    # Compact block sequences and explicit keys (`- - - x`, `? ? x`) nest without spaces:
    # count their indicators as indentation (over-counting only costs the slower path).
    indent = max((len(line) - len(line.lstrip(" -?:")) for line in text.splitlines()), default=0)
    return indent + text.count("[") + text.count("{") < MAX_DEPTH


def _compose(text: str, *, fast: bool) -> tuple[dict[str, Any], dict[Loc, int]]:
    """The values of `text` and the line of every key path.

    `fast`: compose on libyaml's parser when PyYAML has it. Callers retry a failure with
    `fast=False`, the pure-Python reference, so every message comes from the reference.
    libyaml also accepts a few texts PyYAML refuses or reads otherwise (tabs after a value;
    NEL, BOM and other special characters): those always take the reference path.
    """
    composer: _Strict | None = None
    try:
        if fast and _CParser is not None and not libyaml_differs(text):
            composer = _CComposer(text) if _c_composable(text) else _FastComposer(text)
        else:
            # The reader checks for unprintable characters as soon as it is built.
            composer = _Composer(text)
        root = composer.get_single_node()
    except yaml.MarkedYAMLError as exc:
        raise _Problem(*_yaml_error(exc)) from None
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        raise _Problem(
            line, f"special character #x{exc.character:04x} is not allowed in YAML; remove it"
        ) from None
    except yaml.YAMLError as exc:  # libyaml's other failures; the caller retries (see above)
        raise _Problem(1, f"YAML syntax error: {exc}") from None
    except ValueError as exc:  # PyYAML's reference scanner on e.g. "\U00110000"
        line = getattr(composer, "line", 0) + 1 if composer is not None else 1
        raise _Problem(line, f"YAML syntax error: {exc}") from None
    finally:
        if composer is not None:
            composer.dispose()  # type: ignore[attr-defined]
    if root is None:
        raise _Problem(1, "no content, only comments; a rollout file needs at least " + _REQUIRED)
    builder = _Builder(composer.alias_lines)
    if _CParser is not None and isinstance(composer, _CComposer):
        value = builder.build_plain(root, (), 1)  # no alias in the text: no alias to count
    else:
        value = builder.build(root, (), alias_line=None)
    if not isinstance(value, dict):
        raise _Problem(
            root.start_mark.line + 1,
            f"the top level must be a mapping (service: ..., project: ...), got "
            f"{describe_value(value)}",
        )
    return value, builder.lines


def _yaml_error(exc: yaml.MarkedYAMLError) -> tuple[int, str]:
    mark = exc.problem_mark or exc.context_mark
    line = mark.line + 1 if mark is not None else 1
    problem = exc.problem or "invalid YAML"
    if exc.context == "expected a single document in the stream":
        return line, "a rollout file holds one YAML document; remove the second '---'"
    message = f"YAML syntax error: {problem}"
    if exc.context:
        ctx_mark = exc.context_mark
        started = ""
        if ctx_mark is not None and ctx_mark.line + 1 != line:
            started = f" started at line {ctx_mark.line + 1}"
        message += f" ({exc.context}{started})"
    if "'\\t'" in problem:
        message += "; indent with spaces, not tabs"
    return line, message


def dotted(loc: Loc) -> str:
    """A key path as written in messages: `gates.error_rate.max`, `probes[1].url`."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


class _Builder:
    """Builds Python values from nodes, recording the line of every key and list item."""

    def __init__(self, alias_lines: dict[tuple[int, int], int]) -> None:
        self.alias_lines = alias_lines
        self.lines: dict[Loc, int] = {(): 1}
        self.built: set[int] = set()
        self.active: set[int] = set()
        self.alias_values = 0

    def build(self, node: Node, loc: Loc, *, alias_line: int | None) -> Any:
        """The value of `node` at key path `loc`; `alias_line` is set inside an alias's
        expansion (the line where that alias is used)."""
        # The line of the key or item being built (an aliased node's own mark is the anchor's).
        line = self.lines.get(loc, node.start_mark.line + 1)
        # A node built before is reached again through an alias: count what it expands to.
        if alias_line is None and id(node) in self.built:
            alias_line = line
        if alias_line is not None:
            self.alias_values += 1
            if self.alias_values > MAX_ALIAS_VALUES:
                raise _Problem(
                    alias_line,
                    f"aliases expand to more than {MAX_ALIAS_VALUES} values; use fewer aliases",
                )
        if id(node) in self.active:
            raise _Problem(line, f"{_at(loc)}an alias refers to itself (recursive structure)")
        self.built.add(id(node))
        self.active.add(id(node))
        try:
            if isinstance(node, MappingNode):
                return self._mapping(node, loc, alias_line)
            if isinstance(node, SequenceNode):
                if node.tag != _SEQ:
                    raise _Problem(line, _tag_message(node, loc))
                out: list[Any] = []
                for i, item in enumerate(node.value):
                    self.lines[(*loc, i)] = self.alias_lines.get(
                        (id(node), i), item.start_mark.line + 1
                    )
                    out.append(self.build(item, (*loc, i), alias_line=alias_line))
                return out
            assert isinstance(node, ScalarNode)
            if node.tag == _PLAIN:
                return _plain(node.value, line, loc)
            if node.tag == _STR:
                return node.value
            raise _Problem(line, _tag_message(node, loc))
        finally:
            self.active.discard(id(node))

    def build_plain(self, node: Node, loc: Loc, line: int) -> Any:
        """`build` for a tree without aliases (a text with no `&` or `*`), without the alias
        bookkeeping: the same values, lines and errors, in about half the time."""
        if isinstance(node, ScalarNode):
            if node.tag == _PLAIN:
                return _plain(node.value, line, loc)
            if node.tag == _STR:
                return node.value
            raise _Problem(line, _tag_message(node, loc))
        lines = self.lines
        if isinstance(node, MappingNode):
            if node.tag != _MAP:
                raise _Problem(node.start_mark.line + 1, _tag_message(node, loc))
            out: dict[str, Any] = {}
            for key_node, value_node in node.value:
                where, key_line = self._key(key_node, loc, out)
                lines[where] = key_line
                out[str(where[-1])] = self.build_plain(value_node, where, key_line)
            return out
        assert isinstance(node, SequenceNode)
        if node.tag != _SEQ:
            raise _Problem(line, _tag_message(node, loc))
        items: list[Any] = []
        for i, item in enumerate(node.value):
            item_line = lines[(*loc, i)] = item.start_mark.line + 1
            items.append(self.build_plain(item, (*loc, i), item_line))
        return items

    def _key(self, key_node: Node, loc: Loc, out: dict[str, Any]) -> tuple[Loc, int]:
        """The key path and line of a mapping key, after the checks every key passes."""
        line = key_node.start_mark.line + 1
        if not isinstance(key_node, ScalarNode) or key_node.tag not in (_PLAIN, _STR):
            raise _Problem(line, f"{_at(loc)}a key must be plain text")
        key = str(key_node.value)
        if key == "<<" and key_node.tag == _PLAIN:
            raise _Problem(line, f"{_at(loc)}merge keys (<<) are not supported; write the keys out")
        where = (*loc, key)
        if key in out:
            raise _Problem(
                line, f"{dotted(where)}: duplicate key (first at line {self.lines[where]})"
            )
        return where, line

    def _mapping(self, node: MappingNode, loc: Loc, alias_line: int | None) -> dict[str, Any]:
        if node.tag != _MAP:
            raise _Problem(node.start_mark.line + 1, _tag_message(node, loc))
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            where, line = self._key(key_node, loc, out)
            self.lines[where] = line
            out[str(where[-1])] = self.build(value_node, where, alias_line=alias_line)
        return out


def _at(loc: Loc) -> str:
    return f"{dotted(loc)}: " if loc else ""


def _tag_message(node: Node, loc: Loc) -> str:
    tag = str(node.tag).replace("tag:yaml.org,2002:", "!!")
    return f"{_at(loc)}YAML tags ({tag}) are not allowed; quote the value if you mean text"


# --- plain scalars ---------------------------------------------------------------------------
_NULL = {"", "~", "null", "Null", "NULL"}
_BOOL = {"true": True, "True": True, "TRUE": True, "false": False, "False": False, "FALSE": False}
_BOOL_11 = {
    **dict.fromkeys(("y", "Y", "yes", "Yes", "YES", "on", "On", "ON"), "true"),
    **dict.fromkeys(("n", "N", "no", "No", "NO", "off", "Off", "OFF"), "false"),
}
_INT = re.compile(r"[-+]?(?:0|[1-9][0-9]*)")
_LEADING_ZERO = re.compile(r"[-+]?0[0-9]+")
_UNDERSCORE_NUMBER = re.compile(r"[-+]?(?:[0-9][0-9_]*)?(?:\.[0-9_]*)?(?:[eE][-+]?[0-9]+)?")
_OTHER_BASE = re.compile(r"[-+]?0(?:b[0-1_]+|o[0-7_]+|x[0-9a-fA-F_]+)")
_SEXAGESIMAL = re.compile(r"[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?")
_FLOAT_12 = re.compile(r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?")
# YAML 1.1 floats need a dot and a signed exponent; `1e3` is text there, 1000.0 in 1.2.
_FLOAT_11 = re.compile(r"[-+]?(?:[0-9][0-9_]*)?\.[0-9.]*(?:[eE][-+][0-9]+)?")
_SPECIAL_FLOAT = {
    **dict.fromkeys((".inf", ".Inf", ".INF", "+.inf", "+.Inf", "+.INF"), float("inf")),
    **dict.fromkeys(("-.inf", "-.Inf", "-.INF"), float("-inf")),
    **dict.fromkeys((".nan", ".NaN", ".NAN"), float("nan")),
}


def _plain(value: str, line: int, loc: Loc) -> Any:
    """Resolve an unquoted scalar per YAML 1.2 core; refuse the ones YAML 1.1 reads otherwise."""
    if value in _NULL:
        return None
    if value in _BOOL:
        return _BOOL[value]
    if value in _SPECIAL_FLOAT:
        return _SPECIAL_FLOAT[value]
    if _INT.fullmatch(value):
        return int(value)
    hint = _surprise(value)
    if hint is not None:
        raise _Problem(line, f"{_at(loc)}{hint}")
    if _FLOAT_12.fullmatch(value):
        return float(value)
    return value


def _surprise(value: str) -> str | None:
    """Why a plain scalar is ambiguous between YAML 1.1 and 1.2, and what to write instead."""
    quoted = f"quote it ('{value}') if you mean the text"
    if value in _BOOL_11:
        return (
            f"{value} is a boolean in YAML 1.1 but text in YAML 1.2; "
            f"write {_BOOL_11[value]}, or {quoted}"
        )
    if _LEADING_ZERO.fullmatch(value):
        digits = value.lstrip("+-")
        as_octal = f"octal {int(digits, 8)}" if set(digits) <= set("01234567") else "text"
        decimal = str(int(value, 10))
        return (
            f"{value} has a leading zero: YAML 1.1 reads it as {as_octal}, YAML 1.2 as "
            f"{decimal}; write {decimal}, or {quoted}"
        )
    if _OTHER_BASE.fullmatch(value):
        return f"{value} is read differently by YAML 1.1 and 1.2; write it in decimal, or {quoted}"
    if _SEXAGESIMAL.fullmatch(value):
        return f"{value} is a base-60 number in YAML 1.1 ({_base60(value)}); {quoted}"
    if "_" in value and _UNDERSCORE_NUMBER.fullmatch(value):
        plain = value.replace("_", "")
        return (
            f"{value} is the number {plain} in YAML 1.1 but text in YAML 1.2; "
            f"write {plain}, or {quoted}"
        )
    if _FLOAT_12.fullmatch(value) and not _FLOAT_11.fullmatch(value):
        return (
            f"{value} is a number in YAML 1.2 but text in YAML 1.1; write it with a dot and a "
            f"signed exponent (like 1.0e+3), or {quoted}"
        )
    return None


def _base60(value: str) -> str:
    sign = -1 if value.startswith("-") else 1
    total = 0.0
    for part in value.lstrip("+-").replace("_", "").split(":"):
        total = total * 60 + float(part or 0)
    return f"{sign * total:g}"


# --- values -> RolloutSpec ------------------------------------------------------------------
_M = typing.TypeVar("_M", bound=BaseModel)


def _validate(
    tree: dict[str, Any],
    lines: dict[Loc, int],
    model: type[_M] = RolloutSpec,  # type: ignore[assignment]
    files: dict[Loc, Path] | None = None,
) -> _M:
    try:
        return model.model_validate(tree, context=STRICT_UNITS, by_alias=True, by_name=False)
    except ValidationError as exc:
        raise _explain(exc.errors(), lines, model, files or {}) from None


def _explain(
    errors: list[ErrorDetails],
    lines: dict[Loc, int],
    model: type[BaseModel],
    files: dict[Loc, Path],
) -> _Problem:
    """The first error in file order, as a `_Problem` at the line of the deepest known key."""
    placed = [_place(err, lines) for err in errors]
    # In file order, deepest first; a missing key last, since its line is only the parent's
    # and a misspelt key (reported as unknown, with a suggestion) usually explains it.
    first = min(
        range(len(placed)),
        key=lambda i: (placed[i][2]["type"] == "missing", placed[i][0], -len(placed[i][1]), i),
    )
    line, path, err = placed[first]
    # Members of a union (`str | EnvValue`) each report a type error at the same place.
    kinds = [_TYPE_NOUNS[e["type"]] for _, p, e in placed if p == path and e["type"] in _TYPE_NOUNS]
    if err["type"] in _TYPE_NOUNS and len(set(kinds)) > 1:
        nouns = [n.replace("true or false", "true/false") for n in dict.fromkeys(kinds)]
        expected = ", ".join(nouns[:-1]) + " or " + nouns[-1]
        message = f"expected {expected}, got {describe_value(err['input'])}"
    else:
        message = _message(err, model)
    return _Problem(line, f"{_at(path)}{message}", files.get(path))


def _place(err: ErrorDetails, lines: dict[Loc, int]) -> tuple[int, Loc, ErrorDetails]:
    loc: Loc = tuple(err["loc"])
    ctx = err.get("ctx") or {}
    error = ctx.get("error")
    if isinstance(error, RuleError):
        loc = (*loc, *error.loc)
    elif err["type"] in ("union_tag_invalid", "union_tag_not_found"):
        loc = (*loc, str(ctx.get("discriminator", "")).strip("'"))
    # Skip parts that are not keys of the file (union member names, `[key]`): the deepest
    # key or item that exists is the line to blame.
    path: Loc = ()
    for part in loc:
        if (*path, part) in lines:
            path = (*path, part)
    return lines[path], path, err


_TYPE_NOUNS = {
    "string_type": "a string",
    "int_type": "an integer",
    "float_type": "a number",
    "bool_type": "true or false",
    "none_required": "null",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "list_type": "a list",
}


def _message(err: ErrorDetails, model: type[BaseModel]) -> str:
    kind = err["type"]
    loc: Loc = tuple(err["loc"])
    value = err.get("input")
    got = describe_value(value)
    ctx = err.get("ctx") or {}
    if kind == "missing":
        if loc == ("region",) and model is RolloutSpec:
            return "missing required key 'region' (or 'waves', to name several regions)"
        return f"missing required key {loc[-1]!r}"
    if kind == "union_tag_not_found":
        tags = _expected_tags(loc, model)
        return f"missing required key {ctx['discriminator']} (one of {tags})"
    if kind == "extra_forbidden":
        return _unknown_key(loc, model)
    if kind == "union_tag_invalid":
        return f"expected one of {ctx['expected_tags']}, got {ctx['tag']!r}"
    if kind == "value_error":
        return str(ctx["error"])
    if kind == "int_type" and isinstance(value, str) and re.fullmatch(r"\d+%", value):
        return f"expected a whole number without '%', like {value[:-1]}, got {got}"
    if kind == "bool_type" and isinstance(value, str) and value.lower() in ("true", "false"):
        return f"expected true or false without quotes, got {got}"
    if kind in _TYPE_NOUNS:
        return f"expected {_TYPE_NOUNS[kind]}, got {got}"
    if kind == "literal_error":
        return f"expected one of {ctx['expected']}, got {got}"
    if kind == "greater_than_equal":
        return f"must be at least {ctx['ge']}, got {got}"
    if kind == "less_than_equal":
        return f"must be at most {ctx['le']}, got {got}"
    if kind == "too_short":
        return "must not be empty"
    if kind.startswith(("datetime", "date")):
        return f"expected a timestamp like 2026-11-26T12:00:00Z, got {got}"
    return f"{err['msg']}, got {got}"


def _unknown_key(loc: Loc, model: type[BaseModel]) -> str:
    key = str(loc[-1])
    allowed = _keys_at(loc[:-1], model)
    if model is RolloutDefaults and len(loc) == 1 and key in RolloutSpec.model_fields:
        return (
            f"{key!r} cannot be shared: it stays in each rollout file "
            f"(allowed here: {', '.join(allowed)})"
        )
    close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
    if close:
        return f"unknown key {key!r} (did you mean {close[0]!r}?)"
    if allowed:
        return f"unknown key {key!r}; allowed here: {', '.join(allowed)}"
    return f"unknown key {key!r}"


def _expected_tags(loc: Loc, root: type[BaseModel]) -> str:
    tags: list[str] = []
    for model in _models_at(loc, root):
        for info in model.model_fields.values():
            if typing.get_origin(info.annotation) is typing.Literal:
                tags += [repr(a) for a in typing.get_args(info.annotation)]
    return ", ".join(tags)


def _keys_at(loc: Loc, root: type[BaseModel]) -> list[str]:
    """The keys the models at `loc` accept, as written in a file (aliases)."""
    keys: list[str] = []
    for model in _models_at(loc, root):
        keys += [info.alias or name for name, info in model.model_fields.items()]
    return list(dict.fromkeys(keys))


def _models_at(loc: Loc, root: type[BaseModel]) -> list[type[BaseModel]]:
    """The models a pydantic error location points into (several for a union)."""
    current: list[Any] = [root]
    for part in loc:
        following: list[Any] = []
        for tp in _flatten(current):
            if _is_model(tp) and isinstance(part, str):
                fields = {info.alias or name: info for name, info in tp.model_fields.items()}
                if part in fields:
                    following.append(fields[part].annotation)
                elif part == tp.__name__ or part in _literals(tp):
                    following.append(tp)  # a union member or discriminator tag in the loc
            elif typing.get_origin(tp) is list and isinstance(part, int):
                following.append(typing.get_args(tp)[0])
            elif typing.get_origin(tp) is dict and isinstance(part, str):
                following.append(typing.get_args(tp)[1])
        current = following
    return [tp for tp in _flatten(current) if _is_model(tp)]


def _flatten(types_: list[Any]) -> list[Any]:
    out: list[Any] = []
    for tp in types_:
        origin = typing.get_origin(tp)
        if origin is typing.Annotated:
            out += _flatten([typing.get_args(tp)[0]])
        elif origin is typing.Union or origin is types.UnionType:
            out += _flatten(list(typing.get_args(tp)))
        else:
            out.append(tp)
    return out


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _literals(model: type[BaseModel]) -> set[Any]:
    out: set[Any] = set()
    for info in model.model_fields.values():
        if typing.get_origin(info.annotation) is typing.Literal:
            out |= set(typing.get_args(info.annotation))
    return out


def _check_file_name(spec: RolloutSpec, path: Path, lines: dict[Loc, int]) -> None:
    expected = f"{spec.service}.yaml"
    if path.name != expected:
        raise _Problem(
            lines[("service",)],
            f"service: {spec.service} must live in a file named {expected}, not {path.name}; "
            "rename the file or fix the service",
        )
