"""blockyaml writes exactly the state files' emitter bytes, or gives up."""

from __future__ import annotations

import random
from typing import Any

import pytest
import yaml

from reconciler import blockyaml, state
from tests.builders import emitter_text


class _PythonDumper(yaml.SafeDumper):
    """The status writer's dumper on PyYAML's pure-Python emitter (where libyaml is absent)."""


_PythonDumper.add_representer(str, state._represent_str)


def _python_emitter(data: Any) -> str:
    return yaml.dump(
        data,
        Dumper=_PythonDumper,
        sort_keys=False,
        default_flow_style=False,
        allow_unicode=True,
        width=100,
    )


def _direct(data: Any) -> str | None:
    return blockyaml.text(data, state._scalar_tag)


# Texts on both sides of every rule of the module's docstring.
WORDS = [
    *["null", "Null", "~", "true", "yes", "No", "off", "y", "1e3", "0x1f", "0o7", "1_000"],
    *["2026-12-07", "2026-12-07T21:13:38.67Z", "12:30", "1:30:00", ".inf", "-.inf", ".NaN"],
    *["0", "-1", "+1", "1.5", "-", "--", "---", "...", "..", "a: b", "a:b", "a #b", "a#b"],
    *["#a", " a", "a ", "a:", "? x", "?x", ":x", "-x", "- x", "", "'", "it's", "ion-api"],
    *["probe:chat-smoke", "a,b", "[x]", "{y}", "&a", "*b", "!t", "%p", "@", "`", "|", ">"],
    *["é", "x\u2028y", "a\nb", "tab\tx", "back\\slash", 'say "hi"'],
]
ALPHABET = "ab yz09:-#?'\"!&*[]{},.|>%@`~_/=+()^$\\;<"


def _document(rng: random.Random) -> dict[str, Any]:
    def text() -> str:
        roll = rng.random()
        if roll < 0.4:
            return rng.choice(WORDS)
        if roll < 0.6:
            return (
                rng.choice(WORDS) + rng.choice(["", " ", "x", ":", " #", "'"]) + rng.choice(WORDS)
            )
        length = rng.randrange(130 if rng.random() < 0.2 else 12)
        return "".join(rng.choice(ALPHABET) for _ in range(length))

    def value(depth: int) -> Any:
        pick = rng.randrange(12 if depth < 4 else 8)
        if pick < 4:
            return text()
        if pick == 4:
            return rng.choice([0, -1, 7, 2**70, True, False, None])
        if pick == 5:
            return rng.choice(
                [0.0, -0.0, 0.1, 1e16, 1e17, 1e-7, float("inf"), float("-inf"), float("nan"),
                 rng.random() * 10 ** rng.randrange(-30, 30)]
            )  # fmt: skip
        if pick < 8:
            return rng.choice([[], {}, text()])
        if pick < 10:
            return [value(depth + 1) for _ in range(rng.randrange(4))]
        keys = ["k", "gate", "x-y", "probe:x", text()]
        return {rng.choice(keys) + str(i): value(depth + 1) for i in range(rng.randrange(4))}

    return {rng.choice(["k", "a_b", "x.y", text()]) + str(i): value(0) for i in range(4)}


def test_random_documents_are_the_emitter_s_bytes_when_written() -> None:
    rng = random.Random(15)
    written = 0
    for _ in range(3000):
        data = _document(rng)
        direct = _direct(data)
        if direct is not None:
            written += 1
            assert direct == emitter_text(data) == _python_emitter(data), data
            assert yaml.load(direct, Loader=state._SafeLoader) == data or _has_nan(data)
    # Most documents are written directly: the comparison above is not vacuous.
    assert written > 500


def _has_nan(data: Any) -> bool:
    if isinstance(data, float):
        return data != data
    if isinstance(data, dict):
        return any(_has_nan(v) for v in data.values())
    if isinstance(data, list):
        return any(_has_nan(v) for v in data)
    return False


def test_long_lines_fold_only_where_the_emitter_would_not() -> None:
    rng = random.Random(7)
    written = 0
    for _ in range(2000):
        words = ["ab", "c d", "x", "e:f", "'q'", "Z"]
        reason = " ".join(rng.choice(words) for _ in range(rng.randrange(10, 40)))
        token = "".join(rng.choice("abc09:-#'.,_/") for _ in range(rng.randrange(80, 200)))
        data = {"reason" * rng.randrange(1, 4): reason, "l": [{"r": reason, "t": token}]}
        direct = _direct(data)
        if direct is not None:
            written += 1
            assert direct == emitter_text(data)
    assert written > 500


@pytest.mark.parametrize(
    "data",
    [
        {"a": [[1]]},  # a list in a list
        {"a": [{}]},  # an empty collection in a list
        {"a": "x\ny"},  # a line break: double quotes
        {"a": "é"},  # non-ASCII
        {"a": "-x"},  # plain or not by the next character
        {1: "x"},  # a key that is not text
        {"a" * 200: 1},  # past libyaml's simple-key length
        {"a": b"x"},  # another type
        {"a": " ".join(["word"] * 30)},  # would fold
        [],
        {},
    ],
    ids=["nested-list", "empty-in-list", "break", "non-ascii", "dash", "int-key", "long-key",
         "bytes", "folds", "list", "empty"],
)  # fmt: skip
def test_what_it_cannot_prove_it_gives_up(data: Any) -> None:
    assert _direct(data) is None


def test_text_values_are_scrubbed_and_keys_are_not() -> None:
    out = blockyaml.text({"secret": "secret", "l": ["secret"]}, state._scalar_tag, str.upper)
    assert out == "secret: SECRET\nl:\n- SECRET\n"


def test_what_it_writes_it_reads_back_as_libyaml_does() -> None:
    rng = random.Random(16)
    read = 0
    for _ in range(2000):
        direct = _direct(_document(rng))
        if direct is None:
            continue
        back = blockyaml.parse(direct)
        assert blockyaml.text(back, state._scalar_tag) == direct
        assert _has_nan(back) or back == yaml.load(direct, Loader=yaml.SafeLoader)
        read += 1
    assert read > 300


def _mutants(rng: random.Random, text: str) -> list[str]:
    """Texts near `text`: what a hand edit, a bad merge or a truncation leaves."""
    lines = text.split("\n")
    out = []
    for _ in range(40):
        i = rng.randrange(len(lines) - 1)
        edit = rng.randrange(7)
        changed = list(lines)
        if edit == 0:  # a value YAML 1.1 reads as another type
            head = changed[i].partition(": ")[0]
            value = rng.choice(["yes", "0o17", "1_0", "~", "1.50", "0x1f", "'a''b'", '"q"'])
            changed[i] = f"{head}: {value}"
        elif edit == 1:  # a duplicate key
            changed.insert(i, changed[i])
        elif edit == 2:  # a comment, a blank line or a tab
            changed.insert(i, rng.choice(["# note", "", "\t"]))
        elif edit == 3:  # an indentation slip
            changed[i] = " " + changed[i]
        elif edit == 4:  # a truncation
            changed = [*changed[:i], changed[i][: rng.randrange(len(changed[i]) + 1)], ""]
        elif edit == 5:  # an alias or a flow collection
            changed[i] = changed[i] + rng.choice([" &a", " [1, 2]", " {x: 1}"])
        else:  # a character changed
            line = changed[i]
            if line:
                at = rng.randrange(len(line))
                changed[i] = line[:at] + rng.choice(" :-'\"#x0") + line[at + 1 :]
        out.append("\n".join(changed))
    return out


def test_a_status_text_changed_by_hand_reads_as_libyaml_reads_it() -> None:
    rng = random.Random(17)
    texts = [d for d in (_direct(_document(rng)) for _ in range(200)) if d is not None]
    assert texts
    for text in texts:
        for mutant in _mutants(rng, text):
            try:
                want = yaml.load(mutant, Loader=yaml.SafeLoader)
            except yaml.YAMLError:
                with pytest.raises(yaml.YAMLError):
                    state._load_yaml(mutant)
                continue
            got = state._load_yaml(mutant)
            assert _has_nan(want) or got == want, mutant
