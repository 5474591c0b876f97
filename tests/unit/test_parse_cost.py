"""What parsing a backup DAG file costs: the modules it imports (checked in a fresh interpreter, as
Airflow's DAG processor parses each file), and the cache of compiled plans that lets an unchanged
spec skip validation (the DAGs it gives are the same; a changed or broken spec is never served
from it)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO, files_spec

# Never needed to build a DAG: clients of sources and targets, the pipeline and the restore core.
HEAVY = ("boto3", "botocore", "paramiko", "hdfs", "psycopg", "psycopg2", "ldap", "ldif", "requests",
         "metabackup.pipeline", "metabackup.restore", "metabackup.catalog", "metabackup.locks",
         "metabackup.replication", "metabackup.sealed", "metabackup.verification", "metabackup.airflow.hooks",
         "airflow.providers.sftp.hooks.sftp", "airflow.providers.apache.hdfs.hooks.webhdfs")
# The plug-ins a spec of files sources on LocalDir targets does not name.
OTHER_PLUGINS = ("metabackup.sources.postgres", "metabackup.sources.oms", "metabackup.sources.namenode",
                 "metabackup.sources.ldap", "metabackup.hdfs", "metabackup.targets.s3", "metabackup.targets.sftp",
                 "metabackup.targets.localhdfs", "metabackup.targets.remotehdfs")
# What validating a spec needs, and a cached plan does not.
VALIDATION = ("metabackup.spec", "metabackup.spec_yaml", "metabackup.fields", "metabackup.keys",
              "metabackup.sources", "metabackup.targets", "metabackup.manifest")

PARSE = """
import json, runpy, sys
import airflow.sdk  # as in the DAG processor, Airflow is loaded before the file
before = set(sys.modules)
namespace = runpy.run_path(sys.argv[1], run_name="dag_file")
print("@@" + json.dumps({"dags": [namespace["backup_dag"].dag_id, namespace["restore_dag"].dag_id],
                         "imported": sorted(set(sys.modules) - before)}))
"""


def parse_in_fresh_interpreter(dag_file: Path, specs: Path, cache: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO / "plugins"), "METABACKUP_SPEC_DIR": str(specs),
           "METABACKUP_PARSE_CACHE": cache}
    result = subprocess.run([sys.executable, "-c", PARSE, str(dag_file)], env=env, capture_output=True, text=True,
                            timeout=300)
    lines = [line for line in result.stdout.splitlines() if line.startswith("@@")]
    assert result.returncode == 0 and lines, result.stdout[-3000:] + result.stderr[-3000:]
    return json.loads(lines[-1][2:])


@pytest.fixture()
def project(tmp_path):
    """dags/backup_files.py over a spec of files sources, dags/backup_default.py over the shipped one."""
    dags, specs = tmp_path / "dags", tmp_path / "specs"
    dags.mkdir()
    specs.mkdir()
    spec = files_spec("files", tmp_path, {
        "OMS": {"kind": "files", "paths": [str(tmp_path / "src" / "oms")], "target": {"type": "LocalDir", "max_backups": 3}},
        "NameNode": {"kind": "files", "paths": [str(tmp_path / "src" / "nn")],
                     "target": {"type": "LocalDir", "max_backups": 5, "mirror": str(tmp_path / "mirror")}},
    })
    (specs / "files.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    shutil.copy(REPO / "include" / "backup_tasks" / "default.yaml", specs / "default.yaml")
    for name in ("files", "default"):
        shutil.copy(REPO / "dags" / "backup_default.py", dags / f"backup_{name}.py")
    return dags, specs


def imported(found: dict, names: tuple[str, ...]) -> list[str]:
    return sorted(m for m in found["imported"] if m in names or m.startswith(tuple(f"{n}." for n in names)))


def test_parsing_imports_no_client_no_pipeline_and_only_the_plugins_the_spec_names(project):
    dags, specs = project
    found = parse_in_fresh_interpreter(dags / "backup_files.py", specs, "off")
    assert found["dags"] == ["backup_files", "restore_files"]
    assert imported(found, HEAVY + OTHER_PLUGINS) == []
    assert "metabackup.sources.files" in found["imported"]  # validated, so its kind was loaded


def test_parsing_a_spec_of_every_kind_imports_no_client_and_no_pipeline(project):
    dags, specs = project
    found = parse_in_fresh_interpreter(dags / "backup_default.py", specs, "off")
    assert found["dags"] == ["backup_default", "restore_default"]
    assert imported(found, tuple(m for m in HEAVY if m not in ("requests",))) == []  # metabackup.hdfs needs requests


def test_an_unchanged_spec_is_parsed_from_its_cached_plan_without_validating_it(project, tmp_path):
    dags, specs = project
    cache = str(tmp_path / "cache")
    first = parse_in_fresh_interpreter(dags / "backup_default.py", specs, cache)
    assert "metabackup.spec" in first["imported"]  # validated, then cached
    again = parse_in_fresh_interpreter(dags / "backup_default.py", specs, cache)
    assert again["dags"] == ["backup_default", "restore_default"]
    assert imported(again, HEAVY + OTHER_PLUGINS + VALIDATION + ("metabackup.sources.files",)) == []
    assert [p.suffix for p in Path(cache).iterdir()] == [".json"]


# ---------------------------------------------------------------------------------------------
# The cache in process
# ---------------------------------------------------------------------------------------------
def serialized(dags) -> list[str]:
    from airflow.serialization.serialized_objects import DagSerialization

    return [json.dumps(DagSerialization.to_dict(dag), sort_keys=True, default=str) for dag in dags]


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("METABACKUP_PARSE_CACHE", str(folder))
    return folder


def build(dag_file: Path):
    from metabackup.airflow.dag_factory import dags_for_dag_file

    return dags_for_dag_file(dag_file)


@pytest.mark.parametrize("name", ["files", "default"])
def test_dags_from_a_cached_plan_are_those_from_the_validated_spec(project, cache, monkeypatch, name):
    from metabackup.airflow.dag_factory import build_dag, build_restore_dag
    from metabackup.spec import load_spec

    dags, specs = project
    monkeypatch.setenv("METABACKUP_SPEC_DIR", str(specs))
    dag_file = dags / f"backup_{name}.py"
    direct = [build_dag(load_spec(specs / f"{name}.yaml")), build_restore_dag(load_spec(specs / f"{name}.yaml"))]
    for dag in direct:
        dag.fileloc = str(dag_file.resolve())
    stored = serialized(build(dag_file))  # validated, and its plan stored
    assert len(list(cache.glob("*.json"))) == 1
    hit = serialized(build(dag_file))  # from the stored plan
    monkeypatch.setenv("METABACKUP_PARSE_CACHE", "off")
    off = serialized(build(dag_file))
    assert stored == hit == off == serialized(direct)


def test_a_changed_spec_is_validated_again_and_a_broken_one_is_an_error(project, cache, monkeypatch):
    from metabackup.spec import SpecError

    dags, specs = project
    monkeypatch.setenv("METABACKUP_SPEC_DIR", str(specs))
    build(dags / "backup_files.py")
    spec = yaml.safe_load((specs / "files.yaml").read_text())
    spec["policy"] = {"type": "full_every_n", "n": 1}
    (specs / "files.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    with pytest.raises(SpecError, match="policy.n: must be at least 2"):
        build(dags / "backup_files.py")
    spec["policy"] = "full_always"
    spec["retries"] = 4
    (specs / "files.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    backup, _ = build(dags / "backup_files.py")
    assert backup.default_args["retries"] == 4
    assert len(list(cache.glob("*.json"))) == 2  # the broken version was never stored


def test_a_name_clash_is_an_error_even_for_a_cached_spec(project, cache, monkeypatch):
    from metabackup.spec import SpecError

    dags, specs = project
    monkeypatch.setenv("METABACKUP_SPEC_DIR", str(specs))
    build(dags / "backup_files.py")
    shutil.copy(specs / "files.yaml", specs / "Files.yaml")
    with pytest.raises(SpecError, match="is used by several files"):
        build(dags / "backup_files.py")


def test_a_missing_spec_is_an_error_even_when_it_was_cached(project, cache, monkeypatch):
    dags, specs = project
    monkeypatch.setenv("METABACKUP_SPEC_DIR", str(specs))
    build(dags / "backup_files.py")
    (specs / "files.yaml").unlink()
    with pytest.raises(FileNotFoundError, match="expects the task spec"):
        build(dags / "backup_files.py")


def test_a_cache_others_can_write_to_is_not_used(project, cache, monkeypatch):
    from metabackup.airflow import parse_cache

    dags, specs = project
    monkeypatch.setenv("METABACKUP_SPEC_DIR", str(specs))
    cache.mkdir(mode=0o777)
    os.chmod(cache, 0o777)
    assert parse_cache.cache_dir() is None
    build(dags / "backup_files.py")
    assert list(cache.iterdir()) == []


def test_a_tampered_or_foreign_entry_is_ignored(project, cache, monkeypatch):
    from metabackup.airflow import parse_cache

    dags, specs = project
    monkeypatch.setenv("METABACKUP_SPEC_DIR", str(specs))
    build(dags / "backup_files.py")
    entry, = cache.glob("*.json")
    entry.write_text("{not json")
    backup, _ = build(dags / "backup_files.py")  # validated again, and stored again
    assert backup.dag_id == "backup_files"
    assert json.loads(entry.read_text())["key"] == entry.stem
    data = json.loads(entry.read_text())
    data["key"] = "0" * 64
    entry.write_text(json.dumps(data))
    plan, key = parse_cache.lookup(specs / "files.yaml")
    assert plan is None and key == entry.stem
