"""``python -m metabackup schema``: the JSON Schema editors use, from the models that validate specs."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from metabackup.cli import main
from metabackup.sources import KINDS
from metabackup.targets import TYPES

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def schema(capsys) -> dict:
    assert main(["schema"]) == 0
    return json.loads(capsys.readouterr().out)


def shipped() -> list[Path]:
    return sorted((REPO / "include" / "backup_tasks").glob("*.yaml"))


@pytest.mark.parametrize("path", shipped(), ids=lambda p: p.name)
def test_every_shipped_spec_is_valid_against_the_schema(schema, path):
    document = yaml.safe_load(path.read_text())
    document["created"] = str(document["created"])  # YAML reads an unquoted time as a datetime
    if isinstance(document.get("schedule"), dict):
        document["schedule"]["start"] = str(document["schedule"]["start"])
    jsonschema.validate(document, schema)


def test_every_registered_kind_and_target_type_is_offered(schema):
    kinds = {d["properties"]["kind"]["const"] for d in schema["$defs"].values() if "kind" in d.get("properties", {})}
    assert kinds == set(KINDS.names())
    types = {d["properties"]["type"]["const"] for d in schema["$defs"].values()
             if d.get("properties", {}).get("type", {}).get("const")}
    assert types == set(TYPES.names())


@pytest.mark.parametrize(("change", "why"), [
    (lambda s: s["sources"]["OMS"].update(kind="mysql"), "unknown kind"),
    (lambda s: s["sources"]["OMS"]["target"].update(bucket="b"), "unknown target field"),
    (lambda s: s["sources"]["OMS"]["target"].update(max_backups=0), "max_backups below 1"),
    (lambda s: s.update(type="hourly"), "unknown task type"),
    (lambda s: s.update(policy="sometimes"), "unknown policy"),
    (lambda s: s["sources"].update(Hive=s["sources"]["OMS"]), "unknown source name"),
])
def test_the_schema_refuses_what_the_reader_refuses(schema, change, why):
    spec = {"name": "nightly", "created": "2026-11-24T10:00:00+08:00", "cluster_version": "3.5.0", "type": "manual",
            "sources": {"OMS": {"kind": "files", "paths": ["/etc/om"], "target": {"type": "LocalDir", "max_backups": 7}}}}
    jsonschema.validate(spec, schema)
    change(spec)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(spec, schema)
