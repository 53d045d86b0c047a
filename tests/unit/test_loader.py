"""The strict loader: every bad file is one line `path:line: message` at the right line."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from reconciler.errors import ReconcileError
from reconciler.loader import (
    MAX_BYTES,
    SpecError,
    find_rollout_files,
    load_spec,
    parse_spec,
    parse_yaml,
)

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"
BAD = DATA / "bad"
GOOD = DATA / "good"

# file in tests/data/bad, line of the defect, a fragment of the message
BAD_FILES = [
    ("alias-bomb", 26, "aliases expand to more than 10000 values"),
    ("binary", 3, "binary file (NUL byte)"),
    ("canary-equals-stable", 7, "revisions.canary: same revision as revisions.stable"),
    ("canary-percent-float", 8, "canary_percent: expected an integer, got 5.5"),
    ("canary-percent-not-a-stage", 8, "canary_percent: 7 is neither 0 nor one of the stages"),
    ("canary-percent-over-100", 8, "canary_percent: must be at most 100, got 150"),
    ("canary-percent-with-unit", 8, "canary_percent: expected a whole number without '%', like 5"),
    ("canary-without-revision", 7, "canary_percent: 5 but revisions.canary is not set"),
    ("comments-only", 1, "no content, only comments"),
    ("control-char", 3, "special character #x0007 is not allowed"),
    ("dependency-no-scheme", 23, "dependencies[0].url: expected an http(s) URL"),
    ("duplicate-key", 11, "canary_percent: duplicate key (first at line 8)"),
    ("duplicate-probe-name", 22, "dependencies[0].name: 'canary-health' is used twice"),
    ("duration-without-unit", 10, "bake: expected a duration like '5m' (ms, s, m, h, d), got 24"),
    ("empty", 1, "empty file"),
    ("expect-not-scalar", 20, "probes[0].expect.status: expected a string, an integer"),
    ("gate-window-under-a-minute", 15, "gates.latency_p95.window: 45s: Cloud Monitoring samples"),
    ("float-exponent", 13, "gates.min_requests: 1e3 is a number in YAML 1.2 but text in"),
    ("header-env-typo", 21, "headers.Authorization.envv: unknown key 'envv' (did you mean 'env'?)"),
    ("json-body-key", 21, "probes[0].json_body: unknown key 'json_body' (did you mean 'json'?)"),
    ("latency-without-unit", 15, "gates.latency_p95.max: expected a latency like '20s'"),
    ("latest-revision", 7, "revisions.canary: LATEST is not allowed"),
    ("latin1", 9, "not UTF-8 text (byte 0xe9)"),
    ("merge-key", 17, "gates.success_rate: merge keys (<<) are not supported"),
    ("method-unknown", 20, "probes[0].method: expected one of 'GET', 'POST'"),
    ("missing-revisions", 1, "missing required key 'revisions'"),
    ("missing-stable", 5, "revisions: missing required key 'stable'"),
    ("name-mismatch", 2, "service: ion-api must live in a file named ion-api.yaml"),
    ("percent-as-fraction", 16, "gates.success_rate.min: expected a percentage like '5%', got 0.9"),
    ("percent-without-unit", 14, "gates.error_rate.max: expected a percentage like '5%', got 5"),
    ("probe-file-url", 19, "probes[0].url: expected an http(s) URL"),
    ("project-bad-id", 3, "project: 'Naeda_Genesis' is not a valid GCP project id"),
    ("project-not-a-string", 3, "project: expected a string, got 123456789"),
    ("python-tag", 10, "bake: YAML tags (!!python/object/apply:os.system) are not allowed"),
    ("quoted-bool", 11, "self_heal: expected true or false without quotes, got 'false'"),
    ("recursive-alias", 22, "probes[0].json.self: an alias refers to itself"),
    ("region-bad-id", 4, "region: 'us-central1/../x' is not a valid GCP region"),
    ("waves-and-region", 4, "region: a file with waves names its regions there"),
    ("waves-region-twice", 4, "waves[1][1]: us-central1 is already in wave 1"),
    ("waves-not-nested", 4, "waves[0]: expected a list, got 'us-central1'"),
    ("waves-empty-wave", 4, "waves[1]: must not be empty"),
    (
        "waves-rolled-back-unknown-region",
        11,
        "rolled_back_regions.asia-northeast1: asia-northeast1 is not one of the waves' regions",
    ),
    ("revision-of-other-service", 7, "payments-00042-xyz is not a revision of"),
    ("rolled-back-canary", 8, "canary rolled-back-canary-00042-xyz was rolled back"),
    ("service-path-escape", 2, "service: '../../etc' is not a valid Cloud Run service id"),
    ("stage-over-100", 9, "stages[5]: must be at most 100, got 110"),
    ("stages-not-a-list", 9, "stages: expected a list, got 5"),
    ("stages-not-ending-at-100", 9, "stages[3]: the last stage must be 100"),
    ("stages-not-increasing", 12, "stages[2]: 10 does not come after 25"),
    ("tab-indent", 12, "indent with spaces, not tabs"),
    ("target-above-max", 14, "gates.error_rate.target: 6% is above max 5%"),
    ("too-many-aliases", 123, "more than 100 aliases"),
    ("top-level-list", 2, "the top level must be a mapping"),
    ("two-documents", 11, "one YAML document"),
    ("unknown-key", 8, "unknown key 'canary_precent' (did you mean 'canary_percent'?)"),
    ("unknown-nested-key", 15, "gates.latency_p95.windw: unknown key 'windw' (did you mean"),
    ("unknown-provider", 11, "metrics.provider: expected one of 'cloud-monitoring', 'prometheus'"),
    ("window-not-whole-minutes", 12, "gates.window: 90s: Cloud Monitoring samples"),
    ("window-under-a-minute", 12, "gates.window: 30s: Cloud Monitoring samples Cloud Run metrics"),
    ("yaml-syntax", 10, "started at line 9"),
    (
        "yaml11-no",
        11,
        "auto_advance: no is a boolean in YAML 1.1 but text in YAML 1.2; write false",
    ),
    ("yaml11-octal", 13, "0100 has a leading zero: YAML 1.1 reads it as octal 64"),
    ("yaml11-on", 20, "probes[0].expect.gateway: on is a boolean in YAML 1.1"),
    (
        "yaml11-sexagesimal",
        10,
        "bake: 1:30 is a base-60 number in YAML 1.1 (90); quote it ('1:30')",
    ),
    ("yaml11-underscore", 13, "1_000 is the number 1000 in YAML 1.1 but text in YAML 1.2"),
]


def test_the_corpus_is_large_and_every_file_has_a_case() -> None:
    names = {p.stem for p in BAD.iterdir()}
    assert len(names) >= 25
    assert names == {name for name, _, _ in BAD_FILES}


@pytest.mark.parametrize(
    ("name", "line", "fragment"), BAD_FILES, ids=[name for name, _, _ in BAD_FILES]
)
def test_bad_file_is_one_line_at_the_defect(name: str, line: int, fragment: str) -> None:
    path = BAD / f"{name}.yaml"
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{path}:{line}: "), message
    assert fragment in message


@pytest.mark.parametrize(("length", "ok"), [(40, True), (41, False)], ids=["40", "41"])
def test_service_names_whose_tag_urls_cannot_exist_are_refused(
    tmp_path: Path, length: int, ok: bool
) -> None:
    service = "s" + "x" * (length - 1)
    path = tmp_path / f"{service}.yaml"
    path.write_text(
        f"service: {service}\nproject: naeda-genesis\nregion: us-central1\n"
        f"revisions: {{stable: {service}-00001-abc}}\ncanary_percent: 0\n"
        "stages: [5, 10, 25, 50, 100]\nbake: 24h\n",
        encoding="utf-8",
    )
    if ok:
        assert load_spec(path).service == service
        return
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    assert str(caught.value).startswith(f"{path}:1: service: "), caught.value
    assert "longest usable name is 40 characters" in str(caught.value)


def test_spec_error_is_an_operator_error() -> None:
    assert issubclass(SpecError, ReconcileError)


@pytest.mark.parametrize(
    "path",
    [ROOT / "rollout" / "ion-api.yaml", *sorted(GOOD.glob("*.yaml"))],
    ids=lambda p: p.name,
)
def test_good_files_load(path: Path) -> None:
    spec = load_spec(path)
    assert f"{spec.service}.yaml" == path.name


def test_example_is_the_checklist_service() -> None:
    spec = load_spec(ROOT / "rollout" / "ion-api.yaml")
    assert (spec.service, spec.project, spec.region) == ("ion-api", "naeda-genesis", "us-central1")
    assert spec.stages == [5, 10, 25, 50, 100]
    assert spec.gates.error_rate is not None and spec.gates.error_rate.max == pytest.approx(0.05)
    assert spec.gates.latency_p95 is not None and spec.gates.latency_p95.max == 20.0
    assert spec.gates.success_rate is not None and spec.gates.success_rate.min == 0.9
    assert [p.name for p in spec.probes] == ["canary-health", "chat-smoke"]
    assert [d.name for d in spec.dependencies] == ["lumen-gateway"]


def test_aliases_and_quoted_look_alikes_are_fine() -> None:
    spec = load_spec(GOOD / "payments-api.yaml")
    health, charge = spec.probes
    assert health.headers == charge.headers
    assert charge.json_body["note"] == "no"
    assert charge.json_body["code"] == "010"
    assert charge.json_body["at"] == "1:30"
    assert spec.rolled_back is not None and spec.rolled_back.at.year == 2026


def test_file_over_one_mib_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_text("service: big\n# " + "x" * MAX_BYTES + "\n")
    with pytest.raises(SpecError, match=r":1: file is larger than 1 MiB"):
        load_spec(path)


def test_deep_nesting_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "deep.yaml"
    path.write_text("service: deep\nprobes: " + "[" * 5000 + "\n")
    with pytest.raises(SpecError, match=r"deep.yaml:2: nested more than 50 levels deep"):
        load_spec(path)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p / "missing.yaml", "missing.yaml: no such file or directory"),
        (lambda p: p, "is a directory"),
    ],
    ids=["missing", "directory"],
)
def test_unreadable_path_is_one_line(tmp_path: Path, make: Any, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        load_spec(make(tmp_path))


def test_parse_spec_names_the_given_path() -> None:
    data = (ROOT / "rollout" / "ion-api.yaml").read_bytes().replace(b"max: 5%", b"max: 5")
    with pytest.raises(SpecError, match=r"^rollout/ion-api.yaml:19: gates.error_rate.max: "):
        parse_spec(data, Path("rollout/ion-api.yaml"))


def test_find_rollout_files_lists_yaml_and_yml(tmp_path: Path) -> None:
    for name in ("b.yaml", "a.yml", "notes.md"):
        (tmp_path / name).write_text("x: 1\n")
    (tmp_path / "sub.yaml").mkdir()
    assert [p.name for p in find_rollout_files(tmp_path)] == ["a.yml", "b.yaml"]


# --- plain scalars: YAML 1.2 core, and what YAML 1.1 reads differently ---------------------
RESOLVED = [
    ("null-tilde", "~", None),
    ("null-word", "null", None),
    ("null-empty", "", None),
    ("true", "true", True),
    ("false-title", "False", False),
    ("int", "42", 42),
    ("int-zero", "0", 0),
    ("int-negative", "-7", -7),
    ("float", "0.8", 0.8),
    ("float-signed-exponent", "1.0e+3", 1000.0),
    ("float-inf", ".inf", math.inf),
    ("text", "healthy", "healthy"),
    ("date-stays-text", "2026-11-26", "2026-11-26"),
    ("quoted-no", "'no'", "no"),
    ("quoted-octal", '"010"', "010"),
    ("quoted-true", '"true"', "true"),
    ("explicit-str-tag", "!!str 5", "5"),
]


@pytest.mark.parametrize(
    ("text", "value"), [(t, v) for _, t, v in RESOLVED], ids=[i for i, _, _ in RESOLVED]
)
def test_plain_scalars_resolve_as_yaml_1_2_core(text: str, value: object) -> None:
    got = parse_yaml(f"key: {text}\n".encode(), Path("x.yaml"))["key"]
    assert got == value
    assert type(got) is type(value)


REFUSED = [
    ("yes", "yes", "write true"),
    ("No", "No", "write false"),
    ("off", "OFF", "write false"),
    ("y", "y", "write true"),
    ("octal", "010", "octal 8"),
    ("leading-zero-not-octal", "09", "write 9"),
    ("binary", "0b101", "write it in decimal"),
    ("hex", "0x1F", "write it in decimal"),
    ("octal-1-2", "0o17", "write it in decimal"),
    ("sexagesimal", "190:20:30", "base-60"),
    ("underscore", "1_000_000", "write 1000000"),
    ("exponent-without-dot", "1e3", "signed exponent"),
    ("int-tag", "!!int 5", "YAML tags (!!int)"),
    ("set-tag", "!!set {a: null}", "YAML tags (!!set)"),
    ("custom-tag", "!secret x", "YAML tags (!secret)"),
]


@pytest.mark.parametrize(
    ("text", "fragment"), [(t, f) for _, t, f in REFUSED], ids=[i for i, _, _ in REFUSED]
)
def test_ambiguous_scalars_and_tags_are_refused(text: str, fragment: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse_yaml(f"a: 1\nkey: {text}\n".encode(), Path("x.yaml"))
    assert str(caught.value).startswith("x.yaml:2: key: ")
    assert fragment in str(caught.value)


def test_a_shared_anchor_counts_every_expansion() -> None:
    items = ", ".join(["*a"] * 100)
    doc = f"a: &a [{', '.join(['x'] * 100)}]\nb: [{items}]\n".encode()
    with pytest.raises(SpecError, match=r"x.yaml:2: aliases expand to more than 10000 values"):
        parse_yaml(doc, Path("x.yaml"))


def test_complex_keys_are_refused() -> None:
    with pytest.raises(SpecError, match=r"x.yaml:2: a key must be plain text"):
        parse_yaml(b"a: 1\n[x, y]: 2\n", Path("x.yaml"))
