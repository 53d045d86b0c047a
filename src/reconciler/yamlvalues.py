"""The Python values of a composed YAML node as PyYAML's SafeConstructor builds them, built
directly for the nodes state and rollout files are made of (strings, decimal integers,
booleans, nulls, lists and mappings with text keys); anything else is left to the
constructor (`Unusual`), so the values are the same either way.

The constructor's generic path (a method lookup, a generator and a state check per node) was
half the cost of reading a status file and of checking a rollout-file edit.
"""

from __future__ import annotations

import functools
import re
from typing import Any

import yaml

__all__ = ["CachedResolver", "Unusual", "build"]

_STR, _INT, _NULL, _BOOL, _SEQ, _MAP = (
    f"tag:yaml.org,2002:{t}" for t in ("str", "int", "null", "bool", "seq", "map")
)
_DECIMAL = re.compile(r"-?(?:0|[1-9][0-9]*)")


class Unusual(Exception):
    """A node the constructor must build: an alias, a merge key, an unusual tag. The caller
    builds the document with the constructor instead (from a fresh tree: the constructor
    rewrites the mappings of merge keys in place)."""


def build(constructor: yaml.constructor.SafeConstructor, node: yaml.Node) -> Any:
    """The value `constructor.construct_document(node)` gives, or `Unusual`. Scalars of other
    tags (floats, timestamps, octal integers) are built by `constructor`."""
    return _build(constructor, node, set())


def _build(constructor: Any, node: yaml.Node, seen: set[int]) -> Any:
    tag = node.tag
    if isinstance(node, yaml.ScalarNode):
        value = node.value
        if tag == _STR:
            return value
        if tag == _INT and _DECIMAL.fullmatch(value):
            return int(value)
        if tag == _NULL:
            return None
        if tag == _BOOL:
            return constructor.bool_values[value.lower()]
        return constructor.construct_object(node, deep=True)
    if id(node) in seen:
        raise Unusual  # an alias: a node met twice
    seen.add(id(node))
    if tag == _SEQ:
        return [_build(constructor, item, seen) for item in node.value]
    if tag != _MAP:
        raise Unusual  # sets, ordered maps, pairs: rare, left to the constructor
    out: dict[Any, Any] = {}
    for key, value in node.value:
        if key.tag != _STR or not isinstance(key, yaml.ScalarNode):
            raise Unusual  # merge keys (<<) and non-text keys: the constructor's rules
        out[key.value] = _build(constructor, value, seen)
    return out


class CachedResolver:
    """A loader mixin (`class L(CachedResolver, yaml.CSafeLoader)`) that resolves the tag of
    a scalar once per text, value and implicitness: the loader's resolver tries its regular
    expressions on every scalar of every file, and state and rollout files repeat their keys
    and most of their values. Without path resolvers (the safe loaders have none) the tag
    depends on nothing else."""

    yaml_path_resolvers: dict[Any, Any]

    def resolve(self, kind: Any, value: Any, implicit: Any) -> Any:
        """The tag `kind`'s node with `value` resolves to (cached for scalars)."""
        if kind is yaml.ScalarNode and not self.yaml_path_resolvers:
            loader: Any = type(self)
            return _scalar_tag(loader, value, implicit)
        return super().resolve(kind, value, implicit)  # type: ignore[misc]


@functools.lru_cache(maxsize=8192)
def _scalar_tag(loader: Any, value: str, implicit: tuple[bool, bool]) -> Any:
    return super(CachedResolver, _probe(loader)).resolve(yaml.ScalarNode, value, implicit)


@functools.lru_cache(maxsize=16)
def _probe(loader: Any) -> Any:
    """An instance of `loader` to ask (its resolver reads only class attributes)."""
    return loader("")
