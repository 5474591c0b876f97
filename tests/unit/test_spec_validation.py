"""Task spec validation: a catalogue of malformed specs, each failing with file, field and reason."""

from __future__ import annotations

import copy
from pathlib import Path

import pendulum
import pytest
import yaml

from metabackup.spec import SpecError, load_spec, load_spec_dir

REPO = Path(__file__).resolve().parents[2]

BASE = {
    "name": "nightly",
    "created": "2026-11-24T10:00:00+08:00",
    "cluster_version": "3.5.0",
    "timezone": "Asia/Shanghai",
    "type": "periodic",
    "schedule": {"start": "2026-11-25T01:00:00+08:00", "period": "day", "every": 1},
    "policy": {"type": "full_every_n", "n": 7},
    "data_path": "/srv/BigData",
    "sources": {"OMS": {"kind": "files", "paths": ["/srv/BigData/om-server/conf"],
                        "target": {"type": "LocalDir", "max_backups": 7}}},
}


def write(tmp_path: Path, spec: dict | str, name: str = "nightly") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(spec if isinstance(spec, str) else yaml.safe_dump(spec, sort_keys=False))
    return path


def mutate(change) -> dict:
    spec = copy.deepcopy(BASE)
    change(spec)
    return spec


def setitem(path: str, value):
    def change(spec):
        *parents, last = path.split(".")
        node = spec
        for key in parents:
            node = node[key]
        node[last] = value
    return change


def delitem(path: str):
    def change(spec):
        *parents, last = path.split(".")
        node = spec
        for key in parents:
            node = node[key]
        del node[last]
    return change


OMS_TARGET = "sources.OMS.target"
HDFS = {"type": "LocalHDFS", "max_backups": 7}  # not below policy.n = 7 of BASE (full_every_n)

CATALOGUE = [
    ("unknown top-level field", setitem("owner", "ops"), "owner", "unknown field"),
    ("unknown source field", setitem("sources.OMS.compression", "xz"), "sources.OMS.compression", "unknown field"),
    ("unknown target field", setitem(f"{OMS_TARGET}.bucket", "b"), f"{OMS_TARGET}.bucket", "unknown field"),
    ("max_backups as text", setitem(f"{OMS_TARGET}.max_backups", "seven"), f"{OMS_TARGET}.max_backups", "must be an integer"),
    ("max_backups as bool", setitem(f"{OMS_TARGET}.max_backups", True), f"{OMS_TARGET}.max_backups", "must be an integer"),
    ("name as list", setitem("name", ["a"]), "name", "must be a string"),
    ("name with a space", setitem("name", "night ly"), "name", "must be 1-64 letters"),
    ("name not the file name", setitem("name", "weekly"), "name", "must match the file name 'nightly.yaml'"),
    ("missing name", delitem("name"), "name", "is required"),
    ("naive created", setitem("created", "2026-11-24T10:00:00"), "created", "is a naive time"),
    ("created is a date", setitem("created", "2026-11-24"), "created", "must be a date and time"),
    ("created not a time", setitem("created", "yesterday"), "created", "is not an ISO-8601 time"),
    ("created in the future", setitem("created", "2099-01-01T00:00:00Z"), "created", "is in the future"),
    ("naive schedule start", setitem("schedule.start", "2026-11-25 01:00:00"), "schedule.start", "is a naive time"),
    ("unknown timezone", setitem("timezone", "Mars/Olympus"), "timezone", "unknown IANA timezone"),
    ("bad type", setitem("type", "hourly"), "type", "must be one of periodic, manual"),
    ("periodic without schedule", delitem("schedule"), "schedule", "is required for a periodic task"),
    ("manual with schedule", setitem("type", "manual"), "schedule", "a manual task has no schedule"),
    ("bad period", setitem("schedule.period", "week"), "schedule.period", "must be one of hour, day"),
    ("every 0", setitem("schedule.every", 0), "schedule.every", "must be between 1 and"),
    ("unknown policy", setitem("policy", "sometimes"), "policy.type", "must be one of full_then_incremental"),
    ("full_every_n without n", setitem("policy", {"type": "full_every_n"}), "policy.n", "is required"),
    ("n = 1", setitem("policy.n", 1), "policy.n", "must be at least 2"),
    ("n with full_always", setitem("policy", {"type": "full_always", "n": 3}), "policy.n", "only applies to full_every_n"),
    ("unknown source name", setitem("sources.Hive", {"kind": "files", "paths": ["/x"], "target": {"type": "LocalDir"}}),
     "sources.Hive", "unknown source 'Hive'"),
    ("unknown kind", setitem("sources.OMS.kind", "mysql"), "sources.OMS.kind", "unknown kind 'mysql'"),
    ("source without target", delitem("sources.OMS.target"), f"{OMS_TARGET}", "is required"),
    ("empty sources", setitem("sources", {}), "sources", "must be a non-empty mapping"),
    ("max_backups 0", setitem(f"{OMS_TARGET}.max_backups", 0), f"{OMS_TARGET}.max_backups", "between 1 and 100"),
    ("max_backups 101", setitem(f"{OMS_TARGET}.max_backups", 101), f"{OMS_TARGET}.max_backups", "between 1 and 100"),
    ("target path escapes data_path", setitem(f"{OMS_TARGET}.path", "../../etc"), f"{OMS_TARGET}.path", "would escape its root"),
    ("relative data_path", setitem("data_path", "srv/BigData"), "data_path", "must be an absolute path"),
    ("mirror inside primary", setitem(f"{OMS_TARGET}.mirror", "/srv/BigData/LocalBackup/standby"),
     f"{OMS_TARGET}.mirror", "overlaps the primary path"),
    ("files paths empty", setitem("sources.OMS.paths", []), "sources.OMS.paths", "at least one directory"),
    ("files path relative", setitem("sources.OMS.paths", ["conf"]), "sources.OMS.paths[0]", "must be an absolute path"),
    ("files paths nested", setitem("sources.OMS.paths", ["/a", "/a/b"]), "sources.OMS.paths", "lies inside"),
    ("hdfs path relative", setitem(OMS_TARGET, {**HDFS, "path": "backup"}),
     f"{OMS_TARGET}.path", "must be an absolute HDFS path"),
    ("hdfs hidden component", setitem(OMS_TARGET, {**HDFS, "path": "/backup/.snapshot/x"}), f"{OMS_TARGET}.path",
     "must not contain a hidden component such as '.snapshot'"),
    ("hdfs trash", setitem(OMS_TARGET, {**HDFS, "path": "/user/hdfs/.Trash"}), f"{OMS_TARGET}.path", "hidden component"),
    ("hdfs system dir", setitem(OMS_TARGET, {**HDFS, "path": "/tmp"}), f"{OMS_TARGET}.path", "is an HDFS system directory"),
    ("hdfs inside a system tree", setitem(OMS_TARGET, {**HDFS, "path": "/hbase/backup"}), f"{OMS_TARGET}.path",
     "lies inside the HDFS system directory '/hbase'"),
    ("hdfs inside tmp", setitem(OMS_TARGET, {**HDFS, "path": "/tmp/meta"}), f"{OMS_TARGET}.path",
     "lies inside the HDFS system directory '/tmp'"),
    ("hdfs root", setitem(OMS_TARGET, {**HDFS, "path": "/"}), f"{OMS_TARGET}.path", "is an HDFS system directory"),
    ("hdfs dot-dot", setitem(OMS_TARGET, {**HDFS, "path": "/backup/../tmp"}), f"{OMS_TARGET}.path", "must be normalised"),
    ("hdfs nameservice", setitem(OMS_TARGET, {**HDFS, "path": "/backup/meta", "nameservice": "bad name"}),
     f"{OMS_TARGET}.nameservice", "is not a valid NameService"),
    ("hdfs with mirror", setitem(OMS_TARGET, {**HDFS, "path": "/backup/meta", "mirror": "/x"}), f"{OMS_TARGET}.mirror",
     "unknown field"),
    ("version with underscore", setitem("cluster_version", "3_5"), "cluster_version", "no '_'"),
    ("retries 11", setitem("retries", 11), "retries", "between 0 and 10"),
]


@pytest.mark.parametrize(("what", "change", "field", "reason"), CATALOGUE, ids=[c[0] for c in CATALOGUE])
def test_malformed_spec_names_file_field_and_reason(tmp_path, what, change, field, reason):
    path = write(tmp_path, mutate(change))
    with pytest.raises(SpecError) as failure:
        load_spec(path)
    rows = failure.value.problems
    assert any(file == str(path) and fld == field and reason in why for file, fld, why in rows), rows
    assert str(path) in str(failure.value) and field in str(failure.value)


def test_catalogue_is_large_enough():
    assert len(CATALOGUE) >= 20


@pytest.mark.parametrize(("text", "field", "reason"), [
    ("name: [unclosed\n", "line 2, column 1", "is not valid YAML"),
    ("- a list\n- not a mapping\n", "<file>", "must be a YAML mapping"),
])
def test_unparseable_files(tmp_path, text, field, reason):
    path = write(tmp_path, text)
    with pytest.raises(SpecError) as failure:
        load_spec(path)
    assert any(fld == field and reason in why for _, fld, why in failure.value.problems), failure.value.problems


def test_every_problem_of_a_file_is_reported_at_once(tmp_path):
    spec = mutate(setitem("policy.n", 1))
    spec["timezone"] = "Nowhere/Land"
    spec["sources"]["OMS"]["target"]["max_backups"] = 0
    with pytest.raises(SpecError) as failure:
        load_spec(write(tmp_path, spec))
    fields = {fld for _, fld, _ in failure.value.problems}
    assert {"policy.n", "timezone", f"{OMS_TARGET}.max_backups"} <= fields


def test_valid_spec_is_parsed_with_defaults(tmp_path):
    spec = load_spec(write(tmp_path, BASE))
    assert spec.dag_id == "backup_nightly"
    assert spec.created == pendulum.parse("2026-11-24T10:00:00+08:00")
    assert spec.schedule.interval == pendulum.duration(days=1)
    target = spec.source("OMS").target
    assert (target.path, target.max_backups, target.mirror) == ("/srv/BigData/LocalBackup", 7, None)
    assert spec.staging_dir == "/srv/BigData/LocalBackup/.staging" and spec.retries == 2
    hdfs = load_spec(write(tmp_path, mutate(setitem(OMS_TARGET, {**HDFS, "path": "/backup/meta"})))).source("OMS").target
    assert (hdfs.path, hdfs.nameservice) == ("/backup/meta", "hacluster")
    for own in ("/user/metabackup/backups", "/apps/metabackup", "/tmpdata/meta", "/hbase-backups"):
        # below a shared parent, or a sibling that only starts like a system tree: one's own place
        target = load_spec(write(tmp_path, mutate(setitem(OMS_TARGET, {**HDFS, "path": own})))).source("OMS").target
        assert target.path == own
    relative = load_spec(write(tmp_path, mutate(setitem(f"{OMS_TARGET}.path", "Backups/meta")))).source("OMS").target
    assert relative.path == "/srv/BigData/Backups/meta"


def test_a_bad_spec_does_not_stop_the_others_and_clashing_names_are_reported(tmp_path):
    write(tmp_path, BASE)
    write(tmp_path, mutate(setitem("name", "broken")) | {"type": "weekly"}, name="broken")
    write(tmp_path, mutate(setitem("name", "Nightly")), name="Nightly")
    specs, errors = load_spec_dir(tmp_path)
    assert specs == {}, "the clashing pair and the broken spec all fail"
    problems = [row for error in errors for row in error.problems]
    assert any(f.endswith("broken.yaml") and fld == "type" for f, fld, _ in problems)
    clashes = [f for f, fld, why in problems if "several files" in why]
    assert sorted(Path(f).name for f in clashes) == ["Nightly.yaml", "nightly.yaml"]


def test_a_good_spec_loads_beside_a_bad_one(tmp_path):
    write(tmp_path, BASE)
    write(tmp_path, mutate(setitem("name", "broken")) | {"type": "weekly"}, name="broken")
    specs, errors = load_spec_dir(tmp_path)
    assert list(specs) == ["nightly"] and len(errors) == 1


def test_shipped_specs_are_valid():
    specs, errors = load_spec_dir(REPO / "include" / "backup_tasks")
    assert errors == [] and "default" in specs
    default = specs["default"]
    assert default.type == "periodic" and {s.name for s in default.sources} >= {"OMS", "LdapServer"}
