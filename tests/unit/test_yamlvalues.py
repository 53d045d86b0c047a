"""`yamlvalues.build` gives what PyYAML's SafeConstructor gives for any document: the common
nodes built directly, everything else (aliases, merge keys, other tags) left to it."""

from __future__ import annotations

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler import yamlvalues

TEXTS = [
    "a: text\nb: 12\nc: -3\nd: 0\ne: null\nf: ~\ng: true\nh: False\ni: 'quoted'\n",
    "octal: 010\nhex: 0x1f\nunder: 1_000\nbase60: 1:30\nfloat: 1.5\ninf: .inf\nexp: 1e+3\n",
    "plus: +3\nneg0: -0\nlead: 007\n",
    "when: 2026-12-07T10:00:00Z\nday: 2026-12-07\nbin: !!binary aGVsbG8=\nyes: yes\n",
    "set: !!set {a, b}\nomap: !!omap [{a: 1}, {b: 2}]\nlist: [1, [2, {x: y}]]\n",
    "base: &b {x: 1, y: [1, 2]}\nsame: *b\nmerged:\n  <<: *b\n  y: 3\n",
    "1: int key\n3.5: float key\nnull: null key\n",
    "a: 1\na: 2\n",
    "- just\n- a list\n",
    "plain scalar",
    "empty:\nflow: {}\nseq: []\nstr: !!str 12\n",
]


def _both(text: str) -> tuple[object, object]:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        pytest.skip("not YAML")  # only documents the constructor reads are compared
    constructor = yaml.constructor.SafeConstructor()
    try:
        fast = yamlvalues.build(constructor, node) if node is not None else None
    except yamlvalues.Unusual:
        fast = "unusual"
    return fast, yaml.safe_load(text)


@pytest.mark.parametrize("text", TEXTS)
def test_values_are_the_constructor_s(text: str) -> None:
    fast, slow = _both(text)
    if fast == "unusual":
        return  # left to the constructor by the caller
    assert fast == slow
    assert repr(fast) == repr(slow)  # the same types too (1 is not True, 1.0 is not 1)


def test_aliases_merge_keys_and_other_collections_are_left_to_the_constructor() -> None:
    for text in (TEXTS[4], TEXTS[5], TEXTS[6]):
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        with pytest.raises(yamlvalues.Unusual):
            yamlvalues.build(yaml.constructor.SafeConstructor(), node)


@settings(max_examples=400, deadline=None)
@given(text=st.text(alphabet="ab01 :-[]{},'\"#&*!|>?\n%@.~+_xeE", max_size=50))
def test_random_documents_read_as_the_constructor_reads_them(text: str) -> None:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        slow = yaml.safe_load(text)
    except (yaml.YAMLError, ValueError, TypeError):
        return  # not a document the constructor reads
    try:
        constructor = yaml.constructor.SafeConstructor()
        fast = yamlvalues.build(constructor, node) if node is not None else None
    except yamlvalues.Unusual:
        return
    assert repr(fast) == repr(slow)


class _Cached(yamlvalues.CachedResolver, yaml.SafeLoader):
    pass


def _tags(node: yaml.Node | None) -> object:
    if node is None:
        return None
    if isinstance(node, yaml.ScalarNode):
        return (node.tag, node.value)
    if isinstance(node, yaml.SequenceNode):
        return (node.tag, [_tags(n) for n in node.value])
    return (node.tag, [(_tags(k), _tags(v)) for k, v in node.value])


@settings(max_examples=400, deadline=None)
@given(text=st.text(alphabet="ab01 :-[]{},'\"#&*!|>?\n%@.~+_xeEyYnN", max_size=50))
def test_a_cached_resolver_resolves_as_the_loader_does(text: str) -> None:
    try:
        plain = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return
    cached = yaml.compose(text, Loader=_Cached)
    assert _tags(cached) == _tags(plain)
    again = yaml.compose(text, Loader=_Cached)  # from the cache this time
    assert _tags(again) == _tags(plain)


@pytest.mark.parametrize("text", TEXTS)
def test_a_cached_resolver_reads_the_same_documents(text: str) -> None:
    assert repr(yaml.load(text, Loader=_Cached)) == repr(yaml.safe_load(text))
