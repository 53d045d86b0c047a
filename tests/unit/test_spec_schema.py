"""The JSON Schema of the rollout file: committed, current, and agreeing with the loader."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from reconciler.loader import parse_yaml
from reconciler.spec import json_schema, schema_text

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "schema" / "rollout.schema.json"
GOOD = [ROOT / "rollout" / "ion-api.yaml", *sorted((ROOT / "tests" / "data" / "good").glob("*"))]
BAD = ROOT / "tests" / "data" / "bad"


def validator() -> jsonschema.protocols.Validator:
    schema = json_schema()
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def read(path: Path) -> dict[str, Any]:
    return parse_yaml(path.read_bytes(), path)


def test_committed_schema_is_up_to_date() -> None:
    assert COMMITTED.read_text(encoding="utf-8") == schema_text(), (
        "stale: run `reconcile schema --out schema/rollout.schema.json`"
    )


def test_schema_is_draft_07_json() -> None:
    schema = json.loads(schema_text())
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    assert "$defs" not in json.dumps(schema)
    assert schema["additionalProperties"] is False
    assert set(schema["required"]) == {
        "service",
        "project",
        "revisions",
        "canary_percent",
        "stages",
    }
    # Either region or waves, never both.
    assert schema["oneOf"] == [{"required": ["region"]}, {"required": ["waves"]}]


@pytest.mark.parametrize("path", GOOD, ids=lambda p: p.name)
def test_schema_accepts_good_files(path: Path) -> None:
    errors = [e.message for e in validator().iter_errors(read(path))]
    assert errors == []


# Defects a schema can express (types, units, patterns, unknown keys); rules spanning several
# keys (stages increasing, canary_percent one of the stages) are the loader's alone.
SCHEMA_REJECTS = [
    "percent-without-unit",
    "latency-without-unit",
    "duration-without-unit",
    "percent-as-fraction",
    "unknown-key",
    "unknown-nested-key",
    "json-body-key",
    "missing-revisions",
    "missing-stable",
    "service-path-escape",
    "project-bad-id",
    "region-bad-id",
    "latest-revision",
    "probe-file-url",
    "dependency-no-scheme",
    "canary-percent-over-100",
    "canary-percent-with-unit",
    "canary-percent-float",
    "stage-over-100",
    "stages-not-ending-at-100",
    "stages-not-a-list",
    "quoted-bool",
    "method-unknown",
    "unknown-provider",
    "expect-not-scalar",
    "header-env-typo",
    "waves-and-region",
    "waves-not-nested",
    "waves-empty-wave",
]


@pytest.mark.parametrize("name", SCHEMA_REJECTS)
def test_schema_rejects_bad_files(name: str) -> None:
    assert list(validator().iter_errors(read(BAD / f"{name}.yaml")))
