"""rollout/_defaults.yaml: merged under each rollout file, validated strictly, blamed by file."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import jsonschema
import pytest

from reconciler.loader import SpecError, find_rollout_files, load_defaults, load_spec, parse_yaml
from reconciler.reconcile import rollout_files
from reconciler.spec import defaults_json_schema, json_schema, merge_defaults, schema_text

ROOT = Path(__file__).resolve().parents[2]

SERVICE = """\
service: ion-api
project: naeda-genesis
region: us-central1
revisions: {stable: ion-api-00041-abc, canary: ion-api-00042-xyz}
canary_percent: 5
stages: [5, 100]
"""

DEFAULTS = """\
bake: 1h
gates:
  window: 10m
  error_rate: {max: 5%, target: 1%}
  latency_p95: {max: 2s}
notify:
  - kind: slack
    url: {env: SLACK_WEBHOOK_URL}
"""


def write(tmp_path: Path, defaults: str, service: str = SERVICE) -> Path:
    rollout = tmp_path / "rollout"
    rollout.mkdir(exist_ok=True)
    (rollout / "_defaults.yaml").write_text(defaults, encoding="utf-8")
    path = rollout / "ion-api.yaml"
    path.write_text(service, encoding="utf-8")
    return path


def test_defaults_fill_what_the_file_leaves_out(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, DEFAULTS))
    assert spec.bake == timedelta(hours=1)
    assert spec.gates.window == timedelta(minutes=10)
    assert spec.gates.error_rate is not None and spec.gates.error_rate.max == 0.05
    assert [c.kind for c in spec.notify] == ["slack"]


def test_keys_the_file_sets_win_and_gates_merge_per_gate(tmp_path: Path) -> None:
    service = SERVICE + "bake: 2h\ngates:\n  error_rate: {max: 2%}\n  latency_p95: null\n"
    spec = load_spec(write(tmp_path, DEFAULTS, service))
    assert spec.bake == timedelta(hours=2)
    # The file's gate replaces the default gate whole: no target inherited.
    assert spec.gates.error_rate is not None
    assert (spec.gates.error_rate.max, spec.gates.error_rate.target) == (0.02, None)
    assert spec.gates.latency_p95 is None  # null drops a shared gate
    assert spec.gates.window == timedelta(minutes=10)  # other gate keys still shared


@pytest.mark.parametrize(
    ("defaults", "rollout", "merged"),
    [
        ({"bake": "1h"}, {"bake": "2h"}, {"bake": "2h"}),
        ({"bake": "1h"}, {}, {"bake": "1h"}),
        ({"gates": {"a": 1, "b": 2}}, {"gates": {"b": 3}}, {"gates": {"a": 1, "b": 3}}),
        ({"gates": {"a": 1}}, {"gates": None}, {"gates": None}),
        ({"probes": [1, 2]}, {"probes": [3]}, {"probes": [3]}),
    ],
    ids=["file-wins", "default-fills", "gates-per-key", "gates-null", "lists-replace"],
)
def test_merge_defaults(
    defaults: dict[str, object], rollout: dict[str, object], merged: object
) -> None:
    assert merge_defaults(defaults, rollout) == merged


@pytest.mark.parametrize(
    ("defaults", "service", "expected"),
    [
        (
            "bake: 1h\ngates:\n  error_rate: {max: 5}\n",
            SERVICE,
            "_defaults.yaml:3: gates.error_rate.max: expected a percentage like '5%', got 5",
        ),
        (
            "bake: 1h\nservice: ion-api\n",
            SERVICE,
            "_defaults.yaml:2: service: 'service' cannot be shared",
        ),
        (
            "baek: 1h\n",
            SERVICE,
            "_defaults.yaml:1: baek: unknown key 'baek' (did you mean 'bake'?)",
        ),
        ("bake: no\n", SERVICE, "_defaults.yaml:1: bake: no is a boolean in YAML 1.1"),
        (
            "notify:\n  - kind: slack\n    url: https://hooks.example/x\n",
            SERVICE,
            "_defaults.yaml:3: notify[0].url: expected a mapping",
        ),
        # Only wrong once merged: the shared probe's name clashes with the file's dependency.
        (
            "probes:\n  - name: gateway\n    url: '{canary_url}/x'\n",
            SERVICE + "dependencies:\n  - name: gateway\n    url: http://localhost:1/x\n",
            "ion-api.yaml:8: dependencies[0].name: 'gateway' is used twice",
        ),
        (
            "dependencies:\n  - name: gateway\n    url: http://localhost:1/x\n",
            SERVICE + "probes:\n  - name: gateway\n    url: '{canary_url}/x'\n",
            "_defaults.yaml:2: dependencies[0].name: 'gateway' is used twice",
        ),
        # A mistake in the rollout file is still the rollout file's.
        (DEFAULTS, SERVICE + "bake: 5\n", "ion-api.yaml:7: bake: expected a duration"),
    ],
    ids=[
        "defaults-unit",
        "defaults-service",
        "defaults-typo",
        "defaults-yaml11",
        "literal-webhook-url",
        "clash-blames-file",
        "clash-blames-defaults",
        "file-error",
    ],
)
def test_errors_name_the_file_and_line_at_fault(
    tmp_path: Path, defaults: str, service: str, expected: str
) -> None:
    with pytest.raises(SpecError) as caught:
        load_spec(write(tmp_path, defaults, service))
    message = str(caught.value)
    assert message.startswith(str(tmp_path / "rollout")), message
    assert expected in message, message


def test_defaults_validate_on_their_own(tmp_path: Path) -> None:
    write(tmp_path, DEFAULTS)
    defaults = load_defaults(tmp_path / "rollout" / "_defaults.yaml")
    assert defaults.bake == timedelta(hours=1)
    assert defaults.probes is None


def test_defaults_file_is_not_a_service(tmp_path: Path) -> None:
    write(tmp_path, DEFAULTS)
    rollout = tmp_path / "rollout"
    assert [p.name for p in find_rollout_files(rollout)] == ["ion-api.yaml"]
    assert [p.name for p in rollout_files(rollout)] == ["ion-api.yaml"]
    assert [p.name for p in rollout_files(rollout, ["*"])] == ["ion-api.yaml"]


def test_committed_defaults_schema_is_up_to_date() -> None:
    committed = ROOT / "schema" / "defaults.schema.json"
    assert committed.read_text(encoding="utf-8") == schema_text(defaults=True), (
        "stale: run `reconcile schema --defaults --out schema/defaults.schema.json`"
    )


def test_schemas_accept_defaults_and_notify(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        DEFAULTS,
        SERVICE + "notify:\n  - kind: webhook\n"
        "    url: {env: HOOK_URL}\n    secret: {env: HOOK_KEY}\n    on: [rollback]\n",
    )
    schema = defaults_json_schema()
    jsonschema.Draft7Validator.check_schema(schema)
    defaults = parse_yaml((path.parent / "_defaults.yaml").read_bytes(), path)
    assert list(jsonschema.Draft7Validator(schema).iter_errors(defaults)) == []
    assert (
        list(
            jsonschema.Draft7Validator(json_schema()).iter_errors(
                parse_yaml(path.read_bytes(), path)
            )
        )
        == []
    )
    # A literal webhook URL and a key that cannot be shared are refused by the schema too.
    for bad in (
        {"notify": [{"kind": "slack", "url": "https://hooks.example/x"}]},
        {"service": "ion-api"},
    ):
        assert list(jsonschema.Draft7Validator(schema).iter_errors(bad)), bad


def test_shared_keys_read_as_if_written_in_the_file(tmp_path: Path) -> None:
    shared = load_spec(write(tmp_path, DEFAULTS))
    inline = tmp_path / "inline"
    inline.mkdir()
    (inline / "ion-api.yaml").write_text(SERVICE + DEFAULTS, encoding="utf-8")
    assert load_spec(inline / "ion-api.yaml") == shared


def test_a_linked_defaults_file_is_reported_not_followed(tmp_path: Path) -> None:
    path = write(tmp_path, DEFAULTS)
    outside = tmp_path / "elsewhere.yaml"
    outside.write_text(DEFAULTS, encoding="utf-8")
    shared = path.parent / "_defaults.yaml"
    shared.unlink()
    shared.symlink_to(outside)
    with pytest.raises(SpecError, match=r"_defaults\.yaml: is a symbolic link; a defaults file"):
        load_spec(path)
    outside.unlink()  # a dangling link is reported too, never silently ignored
    with pytest.raises(SpecError, match=r"_defaults\.yaml: .*symbolic link"):
        load_spec(path)
