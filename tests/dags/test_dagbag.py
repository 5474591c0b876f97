"""Airflow's own DagBag over the shipped DAG folder and over folders with broken specs."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from conftest import REPO, files_spec

pytestmark = pytest.mark.airflow


def dagbag(dags: Path, specs: Path, monkeypatch):
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv("METABACKUP_SPEC_DIR", str(specs))
    return DagBag(dag_folder=str(dags))


def test_shipped_dags_folder_loads_every_spec_without_import_errors(monkeypatch):
    bag = dagbag(REPO / "dags", REPO / "include" / "backup_tasks", monkeypatch)
    assert bag.import_errors == {}
    shipped = sorted(p.stem for p in (REPO / "include" / "backup_tasks").glob("*.yaml"))
    assert {d for d in bag.dag_ids if d.startswith(("backup_", "restore_"))} == \
        {f"{kind}_{name}" for name in shipped for kind in ("backup", "restore")}
    assert {"backup_default", "restore_default", "metabackup_verify"} <= set(bag.dag_ids)


@pytest.fixture()
def project(tmp_path):
    dags, specs = tmp_path / "dags", tmp_path / "specs"
    dags.mkdir()
    specs.mkdir()
    for name in ("good", "alsogood", "broken"):
        spec = files_spec(name, tmp_path, {"OMS": {"kind": "files", "paths": [str(tmp_path / "src")],
                                                   "target": {"type": "LocalDir", "max_backups": 3}}})
        if name == "broken":
            spec["policy"] = {"type": "full_every_n", "n": 1}
        (specs / f"{name}.yaml").write_text(yaml.safe_dump(spec))
        shutil.copy(REPO / "dags" / "backup_default.py", dags / f"backup_{name}.py")
    shutil.copy(REPO / "dags" / "backup_task_specs_check.py", dags)
    return dags, specs


def test_a_broken_spec_is_an_import_error_of_its_own_dag_file(project, monkeypatch):
    dags, specs = project
    bag = dagbag(dags, specs, monkeypatch)
    assert sorted(bag.dag_ids) == ["backup_alsogood", "backup_good", "restore_alsogood", "restore_good"]
    assert len(bag.import_errors) == 1
    (failed_file, message), = bag.import_errors.items()
    assert failed_file.endswith("backup_broken.py")
    assert str(specs / "broken.yaml") in message
    assert "policy.n: must be at least 2" in message


def test_spec_folder_check_reports_a_spec_without_dag_file(project, monkeypatch):
    dags, specs = project
    (dags / "backup_good.py").unlink()
    bag = dagbag(dags, specs, monkeypatch)
    assert "backup_good" not in bag.dag_ids and "backup_alsogood" in bag.dag_ids
    check_errors = {f: m for f, m in bag.import_errors.items() if f.endswith("backup_task_specs_check.py")}
    assert len(check_errors) == 1
    assert f"{specs / 'good.yaml'}: has no DAG file" in next(iter(check_errors.values()))


def test_dag_file_without_spec_names_the_missing_spec(project, monkeypatch):
    dags, specs = project
    (specs / "good.yaml").unlink()
    bag = dagbag(dags, specs, monkeypatch)
    message = next(m for f, m in bag.import_errors.items() if f.endswith("backup_good.py"))
    assert f"expects the task spec {specs / 'good.yaml'}, which does not exist" in message
