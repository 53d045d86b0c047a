"""Round-trip editing of rollout files: only the edited lines change, every other byte stays."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.loader import load_spec
from reconciler.spec import RolloutSpec
from reconciler.yamledit import (
    YamlEditError,
    clear_rollback,
    edit_rollout,
    finalize,
    record_rollback,
    remove_force,
    set_canary_percent,
)

ION_API = (Path(__file__).parents[2] / "rollout" / "ion-api.yaml").read_text(encoding="utf-8")
AT = datetime(2026, 5, 1, 12, 30, tzinfo=UTC)
REASON = "error_rate 7.1% > 5% (2 windows)"
PIN = "      # pinned revision names; never LATEST during a canary\n"
OLD_STABLE = "  stable: ion-api-00041-abc" + PIN
NEW_STABLE = "  stable: ion-api-00042-xyz" + PIN

# The DESIGN example: trailing comment lines, a vs_stable gate, `force` commented out.
COMMENTED = """\
# header comment
service: ion-api                 # Cloud Run service id
project: naeda-genesis
region: us-central1
revisions:
  stable: ion-api-00041-abc      # pinned revision names; never LATEST during a canary
  canary: ion-api-00042-xyz      # the new one
canary_percent: 10               # what git wants live now; int 0..100
stages: [5, 10, 25, 50, 100]     # strictly increasing, ends at 100

gates:
  window: 5m
  error_rate:   {max: 5%,  target: 1%}                  # 5xx share
  vs_stable:    {error_rate_delta: 2%}                  # optional
force: true                      # skip the bake gate once
metrics: {provider: cloud-monitoring}                  # or prometheus
# force: true                  # a PR may skip the bake gate once
# written by the reconciler, removed by a human to retry:
# rolled_back: {revision: ion-api-00042-xyz, at: 2026-..., reason: "..."}
"""


def _load(text: str, tmp_path: Path) -> RolloutSpec:
    path = tmp_path / "ion-api.yaml"
    path.write_text(text, encoding="utf-8")
    return load_spec(path)


def _changes(before: str, after: str) -> tuple[list[str], list[str]]:
    """(removed lines, added lines); everything else is byte-identical by construction."""
    removed, added = [], []
    a, b = before.splitlines(keepends=True), after.splitlines(keepends=True)
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if op != "equal":
            removed.extend(a[i1:i2])
            added.extend(b[j1:j2])
    return removed, added


# --- the real rollout file ------------------------------------------------------------------
EDITS: list[tuple[str, Callable[[str], str], list[str], list[str]]] = [
    (
        "set-canary-percent",
        lambda t: set_canary_percent(t, 10),
        ["canary_percent: 5                # what git wants live now: 0 or one of the stages\n"],
        ["canary_percent: 10               # what git wants live now: 0 or one of the stages\n"],
    ),
    (
        "rollback",
        lambda t: record_rollback(t, revision="ion-api-00042-xyz", at=AT, reason=REASON),
        ["canary_percent: 5                # what git wants live now: 0 or one of the stages\n"],
        [
            "canary_percent: 0                # what git wants live now: 0 or one of the stages\n",
            "rolled_back:\n",
            "  revision: ion-api-00042-xyz\n",
            '  at: "2026-05-01T12:30:00Z"\n',
            '  reason: "error_rate 7.1% > 5% (2 windows)"\n',
        ],
    ),
    (
        "finalize",
        lambda t: finalize(set_canary_percent(t, 100)),
        [
            OLD_STABLE,
            "  canary: ion-api-00042-xyz\n",
            "canary_percent: 5                # what git wants live now: 0 or one of the stages\n",
        ],
        [
            NEW_STABLE,
            "canary_percent: 0                # what git wants live now: 0 or one of the stages\n",
        ],
    ),
    (
        "nested-new-key",
        lambda t: edit_rollout(t, set_values={"gates.vs_stable": {"error_rate_delta": "2%"}}),
        [],
        ["  vs_stable:\n", '    error_rate_delta: "2%"\n'],
    ),
]


@pytest.mark.parametrize(
    ("edit", "removed", "added"), [e[1:] for e in EDITS], ids=[e[0] for e in EDITS]
)
def test_edit_of_the_real_rollout_file_changes_only_its_lines(
    edit: Callable[[str], str], removed: list[str], added: list[str], tmp_path: Path
) -> None:
    after = edit(ION_API)
    assert _changes(ION_API, after) == (removed, added)
    _load(after, tmp_path)  # still a valid rollout file


def test_rollback_loads_as_the_sticky_block(tmp_path: Path) -> None:
    after = record_rollback(ION_API, revision="ion-api-00042-xyz", at=AT, reason=REASON)
    spec = _load(after, tmp_path)
    assert spec.canary_percent == 0
    assert spec.rolled_back is not None
    assert (spec.rolled_back.revision, spec.rolled_back.at, spec.rolled_back.reason) == (
        "ion-api-00042-xyz",
        AT,
        REASON,
    )
    assert after.startswith(ION_API.split("canary_percent")[0])
    assert after.endswith(f'  reason: "{REASON}"\n')


def test_rollback_twice_replaces_the_block_and_clear_restores_the_file(tmp_path: Path) -> None:
    once = record_rollback(ION_API, revision="ion-api-00042-xyz", at=AT, reason=REASON)
    later = AT + timedelta(hours=1)
    twice = record_rollback(once, revision="ion-api-00042-xyz", at=later, reason="again: 'x'")
    assert twice.count("rolled_back:") == 1
    assert _changes(once, twice) == (
        ['  at: "2026-05-01T12:30:00Z"\n', f'  reason: "{REASON}"\n'],
        ['  at: "2026-05-01T13:30:00Z"\n', "  reason: \"again: 'x'\"\n"],
    )
    spec = _load(twice, tmp_path)
    assert spec.rolled_back is not None and spec.rolled_back.reason == "again: 'x'"
    assert clear_rollback(twice) == set_canary_percent(ION_API, 0)


def test_rollback_time_is_written_in_utc() -> None:
    cest = timezone(timedelta(hours=2))
    after = record_rollback(
        ION_API, revision="ion-api-00042-xyz", at=AT.astimezone(cest), reason="r"
    )
    assert '  at: "2026-05-01T12:30:00Z"\n' in after
    with pytest.raises(ValueError, match="no timezone"):
        record_rollback(ION_API, revision="r", at=datetime(2026, 1, 1), reason="r")


# --- a heavily commented file ---------------------------------------------------------------
def test_every_operation_keeps_all_comments(tmp_path: Path) -> None:
    text = set_canary_percent(COMMENTED, 100)
    text = finalize(text)
    text = record_rollback(text, revision="ion-api-00042-xyz", at=AT, reason=REASON)
    removed, added = _changes(COMMENTED, text)
    assert removed == [
        OLD_STABLE,
        "  canary: ion-api-00042-xyz      # the new one\n",
        "canary_percent: 10               # what git wants live now; int 0..100\n",
        "force: true                      # skip the bake gate once\n",
    ]
    assert added == [
        NEW_STABLE,
        "canary_percent: 0                # what git wants live now; int 0..100\n",
        "rolled_back:\n",
        "  revision: ion-api-00042-xyz\n",
        '  at: "2026-05-01T12:30:00Z"\n',
        f'  reason: "{REASON}"\n',
    ]
    kept_comments = [line for line in COMMENTED.splitlines() if line.lstrip().startswith("#")]
    assert all(line in text.splitlines() for line in kept_comments)
    assert text.index("# rolled_back: {revision") < text.index("rolled_back:\n")
    _load(text, tmp_path)


def test_remove_force_removes_only_its_line() -> None:
    after = remove_force(COMMENTED)
    assert _changes(COMMENTED, after) == (
        ["force: true                      # skip the bake gate once\n"],
        [],
    )
    assert remove_force(after) == after  # no `force`: nothing to do


# --- formatting details ---------------------------------------------------------------------
CASES = [
    ("double-quoted-kept", 'a: "x"\n', {"a": "y"}, (), 'a: "y"\n'),
    ("single-quoted-kept", "a: 'x'  # c\n", {"a": "it's"}, (), "a: 'it''s' # c\n"),
    ("plain-needs-quotes", "a: x\n", {"a": "yes"}, (), 'a: "yes"\n'),
    ("plain-colon", "a: x\n", {"a": "b: c"}, (), 'a: "b: c"\n'),
    ("unicode", "a: x\n", {"a": "장점"}, (), 'a: "장점"\n'),
    ("bool-and-int", "a: 1\nb: false\n", {"a": 2, "b": True}, (), "a: 2\nb: true\n"),
    ("comment-column-shrinks", "a: 100   # c\n", {"a": 5}, (), "a: 5     # c\n"),
    ("comment-column-grows", "a: 5 # c\n", {"a": 100}, (), "a: 100 # c\n"),
    ("no-final-newline", "a: 1", {"b": 2}, (), "a: 1\nb: 2\n"),
    ("crlf", "a: 1\r\nb:\r\n  c: 2\r\n", {"b.d": 3}, (), "a: 1\r\nb:\r\n  c: 2\r\n  d: 3\r\n"),
    ("empty-value", "a:\nb: 1\n", {"a": "v"}, (), "b: 1\na: v\n"),
    ("flow-remove-last", "r: {s: a, c: b}  # x\n", {}, ("r.c",), "r: {s: a}  # x\n"),
    ("flow-remove-first", "r: {s: a, c: b}\n", {}, ("r.s",), "r: {c: b}\n"),
    ("flow-remove-only", "r: {s: a}\n", {}, ("r.s",), "r: {}\n"),
    ("flow-insert", "r: {s: a}\n", {"r.c": "b"}, (), "r: {s: a, c: b}\n"),
    ("flow-insert-empty", "r: {}\n", {"r.c": "b"}, (), "r: {c: b}\n"),
    ("flow-replace", "r: {s: a, c: b}\n", {"r.s": "z"}, (), "r: {s: z, c: b}\n"),
    ("missing-parents", "a: 1\n", {"x.k.z": 1}, (), "a: 1\nx:\n  k:\n    z: 1\n"),
    ("yaml-11-keyword-key", "a: 1\n", {"x.y": 1}, (), 'a: 1\nx:\n  "y": 1\n'),
    ("remove-missing", "a: 1\n", {}, ("b", "a.b.c", "x.y"), "a: 1\n"),
    (
        "remove-block",
        "a:\n  b: 1\n  # about c\n  c:\n    d: 2\ne: 3\n",
        {},
        ("a.c",),
        "a:\n  b: 1\n  # about c\ne: 3\n",
    ),
    (
        "insert-after-nested",
        "a:\n  b:\n    c: 1\nz: 0\n",
        {"a.d": 2},
        (),
        "a:\n  b:\n    c: 1\n  d: 2\nz: 0\n",
    ),
    ("indent-4", "a:\n    b: 1\nz: 0\n", {"a.c": 2}, (), "a:\n    b: 1\n    c: 2\nz: 0\n"),
    # A block scalar owns the blank lines after it: the new key goes after them.
    (
        "literal-block",
        "a:\n  b: |\n    text\n\nz: 0\n",
        {"a.c": 1},
        (),
        "a:\n  b: |\n    text\n\n  c: 1\nz: 0\n",
    ),
    ("scalar-to-mapping", "a: 1  # c\nz: 0\n", {"a": {"b": 1}}, (), "z: 0\na:\n  b: 1\n"),
]


@pytest.mark.parametrize(
    ("text", "set_values", "remove", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_edit_rollout_formatting(
    text: str, set_values: dict[str, object], remove: tuple[str, ...], expected: str
) -> None:
    assert edit_rollout(text, set_values=set_values, remove=remove) == expected


def test_no_edits_return_the_same_text() -> None:
    assert edit_rollout(ION_API) == ION_API


ERRORS = [
    ("duplicate-key", "a: 1\na: 2\n", {"a": 3}, (), "repeated"),
    ("alias", "x: &v 1\na: *v\n", {"a": 3}, (), "alias"),
    ("invalid-yaml", "a: [1\n", {"a": 3}, (), "invalid YAML"),
    ("not-a-mapping", "- 1\n", {"a": 3}, (), "not a mapping"),
    ("explicit-key", "? a\n: 1\nb: 2\n", {}, ("a",), "shares a line"),
    ("two-documents", "a: 1\n---\nb: 2\n", {"a": 3}, (), "invalid YAML"),
    ("parent-not-a-mapping", "a: 1\n", {"a.b": 3}, (), "a is not a mapping"),
    ("shared-line", "r: {s: {t: 1}}\n", {}, ("r.s.t",), ""),
]


@pytest.mark.parametrize(
    ("text", "set_values", "remove", "match"), [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS]
)
def test_edit_rollout_refuses_unsafe_edits(
    text: str, set_values: dict[str, object], remove: tuple[str, ...], match: str
) -> None:
    if not match:  # a flow mapping nested in a flow mapping: still a correct edit
        after = edit_rollout(text, set_values=set_values, remove=remove)
        assert yaml.safe_load(after) == {"r": {"s": {}}}
        return
    with pytest.raises(YamlEditError, match=match):
        edit_rollout(text, set_values=set_values, remove=remove)


def test_finalize_needs_a_canary() -> None:
    with pytest.raises(YamlEditError, match=r"revisions\.canary is not set"):
        finalize(finalize(set_canary_percent(ION_API, 100)))


def test_invalid_dotted_key() -> None:
    with pytest.raises(ValueError, match="invalid dotted key"):
        edit_rollout(ION_API, remove=["gates..window"])


@settings(max_examples=200, deadline=None)
@given(reason=st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=60))
def test_any_reason_round_trips(reason: str) -> None:
    after = record_rollback(ION_API, revision="ion-api-00042-xyz", at=AT, reason=reason)
    assert yaml.safe_load(after)["rolled_back"]["reason"] == reason
    for quote in ("'", '"', ""):
        text = f"a: {quote}x{quote}  # c\n"
        assert yaml.safe_load(edit_rollout(text, set_values={"a": reason}))["a"] == reason


@pytest.mark.parametrize("reason", ["A\n", "ion-api\n", "A\r\n"])
def test_a_reason_ending_in_a_line_break_round_trips(reason: str) -> None:
    # A word plus a trailing newline once looked plain (`$` matches before the newline), was
    # written unquoted and loaded back without it.
    after = record_rollback(ION_API, revision="ion-api-00042-xyz", at=AT, reason=reason)
    assert yaml.safe_load(after)["rolled_back"]["reason"] == reason
    assert yaml.safe_load(edit_rollout("a: x\n", set_values={"a": reason}))["a"] == reason


# --- libyaml and PyYAML edit alike ----------------------------------------------------------
def _both(
    monkeypatch: pytest.MonkeyPatch,
    text: str,
    set_values: dict[str, object],
    remove: tuple[str, ...],
) -> tuple[str, str]:
    """The edit on libyaml's parser (when the text allows it) and on PyYAML's alone: the text,
    or the error's message."""
    import reconciler.yamledit as ye

    def edit() -> str:
        try:
            return edit_rollout(text, set_values=set_values, remove=remove)
        except YamlEditError as exc:
            return f"error: {exc}"

    fast = edit()
    with monkeypatch.context() as m:
        m.setattr(ye, "_CLoader", None)
        return fast, edit()


ROLLOUTS = [ION_API, COMMENTED] + [
    p.read_text(encoding="utf-8")
    for p in sorted((Path(__file__).parents[1] / "data" / "good").iterdir())
]
EDITS: list[tuple[dict[str, object], tuple[str, ...]]] = [
    ({"canary_percent": 10}, ("force",)),
    ({"canary_percent": 0, "rolled_back": {"revision": "r", "at": AT, "reason": "장점 # x"}}, ()),
    ({"revisions.stable": "ion-api-00042-xyz", "canary_percent": 0}, ("revisions.canary",)),
    ({"gates.error_rate.max": "6%", "gates.new.key": 1}, ("gates.window",)),
]


@pytest.mark.parametrize("text", ROLLOUTS)
@pytest.mark.parametrize(("set_values", "remove"), EDITS)
def test_rollout_edits_are_the_same_on_both_parsers(
    monkeypatch: pytest.MonkeyPatch,
    text: str,
    set_values: dict[str, object],
    remove: tuple[str, ...],
) -> None:
    fast, reference = _both(monkeypatch, text, set_values, remove)
    assert fast == reference


@pytest.mark.parametrize("case", CASES + ERRORS, ids=[c[0] for c in CASES + ERRORS])
def test_formatting_cases_are_the_same_on_both_parsers(
    monkeypatch: pytest.MonkeyPatch, case: tuple[Any, ...]
) -> None:
    fast, reference = _both(monkeypatch, case[1], case[2], case[3])
    assert fast == reference


@settings(max_examples=300, deadline=None)
@given(
    text=st.text(alphabet="ab1 :-[]{},'\"#&*!|>?\n\t%@`~.\\\x85\ufeff장😀", max_size=60),
    value=st.sampled_from([10, "x y", "yes", "장점"]),
)
def test_random_texts_edit_the_same_on_both_parsers(text: str, value: object) -> None:
    with pytest.MonkeyPatch.context() as monkeypatch:
        for edit in ({"a": value}, {"a.b": value}):
            fast, reference = _both(monkeypatch, text, edit, ("b",))
            assert fast == reference


@pytest.mark.parametrize("text", ["!1", "a: !x 1\n", "a: !!python/name:os.system ''\n"])
def test_a_tag_no_constructor_knows_is_an_edit_error(text: str) -> None:
    with pytest.raises(YamlEditError, match="could not determine a constructor"):
        edit_rollout(text, set_values={"b": 1})
