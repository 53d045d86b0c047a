"""The loader's libyaml fast path gives exactly what the pure-Python reference parser gives.

Rollout files are composed on libyaml's events when PyYAML has it (several times faster for a
plan over many services); any YAML error re-reads the file with the pure-Python parser, so
the messages stay the reference's. These tables check both paths agree, value for value and
message for message, on every test file and on inputs where the two parsers could differ.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs
from yaml.reader import Reader

from reconciler import loader
from reconciler.loader import SpecError, parse_spec, parse_yaml

ROOT = Path(__file__).resolve().parents[2]
FILES = [*sorted((ROOT / "tests" / "data").glob("*/*.yaml")), ROOT / "rollout" / "ion-api.yaml"]

pytestmark = pytest.mark.skipif(loader._CParser is None, reason="PyYAML built without libyaml")

SNIPPETS = [
    ("plain", "a: 1\nb: [x, y]\nc: {d: e}\n"),
    ("crlf", "a: 1\r\nb:\r\n  - x\r\n"),
    ("tab-indent", "a:\n\tb: 1\n"),
    ("tab-after-value", "a: 1\t\nb: 2\n"),
    ("bom-inside", "a: x\ufeffy\n"),
    ("nel", "a: x\x85y\n"),
    ("c1-control", "a: x\x80y\n"),
    ("surrogate-free-astral", "a: \U0001f600\n"),
    ("anchors-in-list", "a: &x 1\nb: [*x, *x, 2]\nc:\n  - *x\n"),
    ("unknown-alias", "a: *nope\n"),
    ("deep", "a: " + "[" * 60 + "]" * 60 + "\n"),
    ("two-documents", "a: 1\n---\nb: 2\n"),
    ("document-end", "a: 1\n...\n"),
    ("directive", "%YAML 1.1\n---\na: 1\n"),
    ("block-scalars", "a: |\n  x\n  y\nb: >-\n  z\n  w\n"),
    ("quoted-keys", "'a': 1\n\"b\": 2\n"),
    ("complex-key", "? [a, b]\n: 1\n"),
    ("bad-indent", "a:\n  b: 1\n c: 2\n"),
    ("unclosed-flow", "a: [1, 2\n"),
    ("unclosed-quote", "a: 'x\n"),
    ("colon-in-plain", "a: b: c\n"),
    ("tag", "a: !!str 1\n"),
    ("local-tag", "a: !thing 1\n"),
    ("empty-values", "a:\nb: ~\nc: ''\n"),
    ("yaml11-scalars", "a: no\nb: 010\nc: 1:30\n"),
    ("tab-in-quotes", "a: 'x\ty'\n"),
    ("tab-in-comment", "a: 1 #\tnote\n"),
    ("flow-set-like", "a: {b, c}\n"),
    ("flow-pair", "a: [b: 1]\n"),
    ("flow-trailing-comma", "a: [b, ]\n"),
    ("nested-block", "- a\n- b: c\n  d: e\n"),
    ("escapes", "a: 'it''s'\nb: \"\\u00e9\\x41\"\n"),
    ("bad-escape", 'a: "\\q"\n'),
    ("anchored-key", "&k a: b\n"),
    ("comment-glued", "a: b#c\n"),
    ("reserved-at", "a: @x\n"),
    ("reserved-backtick", "a: `x\n"),
    ("percent-plain", "a: %x\n"),
    ("long-key", "k" * 1100 + ": 1\n"),
    ("multiline-plain", "a: b\n  c\n"),
    ("multiline-key", "a\nb: 1\n"),
    ("sequence-at-key-indent", "a:\n- 1\n- 2\n"),
    ("trailing-spaces", "a: 1   \nb: 2  \n"),
    ("no-final-newline", "a: 1"),
]


def _outcome(call: object) -> object:
    try:
        return call()  # type: ignore[operator]
    except SpecError as exc:
        return ("SpecError", str(exc))


def _both(monkeypatch: pytest.MonkeyPatch, call: object) -> tuple[object, object]:
    fast = _outcome(call)
    monkeypatch.setattr(loader, "_CParser", None)
    reference = _outcome(call)
    return fast, reference


@pytest.mark.parametrize("path", FILES, ids=[f"{p.parent.name}/{p.stem}" for p in FILES])
def test_rollout_files_load_the_same_on_both_parsers(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = path.read_bytes()
    fast, reference = _both(monkeypatch, lambda: parse_spec(data, path))
    assert fast == reference


@pytest.mark.parametrize("text", [t for _, t in SNIPPETS], ids=[i for i, _ in SNIPPETS])
def test_yaml_reads_the_same_on_both_parsers(text: str, monkeypatch: pytest.MonkeyPatch) -> None:
    data = text.encode("utf-8")
    fast, reference = _both(monkeypatch, lambda: parse_yaml(data, Path("x.yaml")))
    assert fast == reference


# Characters that steer YAML's scanner, so random texts reach many parser states.
_YAML_ALPHABET = "ab1 :-[]{},'\"#&*!|>?\n\t%@`~.\\\x85\ufeff"


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(text=hs.text(alphabet=_YAML_ALPHABET, max_size=40))
def test_random_yaml_reads_the_same_on_both_parsers(
    text: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = text.encode("utf-8")
    with monkeypatch.context() as patch:
        fast = _outcome(lambda: parse_yaml(data, Path("x.yaml")))
        patch.setattr(loader, "_CParser", None)
        reference = _outcome(lambda: parse_yaml(data, Path("x.yaml")))
    assert fast == reference


def test_typical_rollout_files_take_the_libyaml_composer() -> None:
    # The example (and files like it) are composed entirely by libyaml; the tables above
    # then prove that path agrees with the reference.
    text = (ROOT / "rollout" / "ion-api.yaml").read_text(encoding="utf-8")
    assert loader._c_composable(text)
    assert not loader._c_composable(text + "x: &a 1\ny: *a\n")  # aliases: the hooked composer
    assert not loader._c_composable("a: " + "[" * 60 + "]" * 60 + "\n")  # depth: likewise


def test_a_bare_non_specific_tag_reads_the_same_on_both_parsers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Found by the property test above: libyaml reported `1: !` as text '', PyYAML as null.
    for data in (b"1: !", b"a: ! 12", b"a: ! '12'"):
        with monkeypatch.context() as patch:
            fast = _outcome(lambda d=data: parse_yaml(d, Path("x.yaml")))
            patch.setattr(loader, "_CParser", None)
            reference = _outcome(lambda d=data: parse_yaml(d, Path("x.yaml")))
        assert fast == reference, data


def test_the_special_character_class_is_pyyamls_non_printable_plus_the_others() -> None:
    # The one class the fast check uses, against how the exclusions are defined: PyYAML's
    # reader's non-printable characters, plus tab, NEL, LS, PS and BOM.
    reference = re.compile(rf"[\t\x85\u2028\u2029\ufeff]|{Reader.NON_PRINTABLE.pattern}")
    for code in range(0x110000):
        char = chr(code)
        assert bool(loader._SPECIAL_CHAR.match(char)) == bool(reference.match(char)), hex(code)
