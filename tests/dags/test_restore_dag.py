"""The restore DAG run through Airflow (``dag.test()``) against real directories."""

from __future__ import annotations

import json

import pendulum
import pytest
import yaml

from conftest import files_spec
from metabackup.airflow.dag_factory import dags_for_dag_file
from metabackup.sources.files import iter_tree
from conftest import task_states

pytestmark = pytest.mark.airflow

T0 = pendulum.datetime(2026, 11, 24, 3, tz="UTC")


def ok(dr) -> bool:
    return str(dr.state) in ("success", "DagRunState.SUCCESS")


def xcom(dag_id: str, run_id: str, task_id: str):
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        row = session.scalars(select(XComModel).where(XComModel.dag_id == dag_id, XComModel.run_id == run_id,
                                                      XComModel.task_id == task_id, XComModel.key == "return_value")).first()
        if row is None:
            return None
        value = row.value
        return json.loads(value) if isinstance(value, (str, bytes)) else value


@pytest.fixture()
def backed_up(airflow_project, tmp_path, request):
    """A files task with a full and an incremental set, and the tree as of each."""
    src = tmp_path / "oms" / "conf"
    src.mkdir(parents=True)
    (src / "a.conf").write_text("a=1\n")
    (src / "sub").mkdir()
    (src / "sub" / "b.conf").write_text("b=1\n")
    name = "rest_" + request.node.name.split("_")[1]  # runs are keyed by DAG id: one task per test
    spec = files_spec(name, tmp_path, {"OMS": {"kind": "files", "paths": [str(src)],
                                                 "target": {"type": "LocalDir", "max_backups": 5}}})
    backup, restore = dags_for_dag_file(airflow_project.install(spec))
    trees = []
    for hour in (0, 1):
        if hour == 1:
            (src / "a.conf").write_text("a=2\n")
            (src / "c.conf").write_text("new\n")
        assert ok(backup.test(run_after=T0.add(hours=hour)))
        trees.append(dict(iter_tree(src)))
    return {"src": src, "restore": restore, "trees": trees, "airflow_project": airflow_project, "spec": spec,
            "name": name, "dag_id": restore.dag_id}


def test_dry_run_resolves_and_verifies_but_restores_nothing(backed_up, tmp_path):
    dest = tmp_path / "restored-dry"
    dr = backed_up["restore"].test(run_after=T0.add(hours=2), run_conf={"source": "OMS", "destination": str(dest)})
    assert ok(dr)
    states = task_states(backed_up["dag_id"], dr.run_id)
    assert states == {"choose": "success", "OMS.resolve": "success", "OMS.verify": "success",
                      "OMS.safety_backup": "skipped", "OMS.restore": "skipped", "OMS.validate": "skipped",
                      "OMS.report": "success"}
    assert not dest.exists()
    report = xcom(backed_up["dag_id"], dr.run_id, "OMS.report")
    assert report["dry_run"] is True and report["summary"][0].startswith("DRY RUN: would restore OMS")
    assert report["resolved"]["chain"] == ["3.1.0_OMS_20261124110000", "3.1.0_OMS_20261124120000"]


def test_restore_a_named_set_into_a_new_directory_and_validate(backed_up, tmp_path):
    dest = tmp_path / "restored"
    dr = backed_up["restore"].test(run_after=T0.add(hours=2), run_conf={
        "source": "OMS", "backup_set": "3.1.0_OMS_20261124110000", "destination": str(dest), "dry_run": False})
    assert ok(dr), task_states(backed_up["dag_id"], dr.run_id)
    assert dict(iter_tree(dest / str(backed_up["src"]).lstrip("/"))) == backed_up["trees"][0]
    assert xcom(backed_up["dag_id"], dr.run_id, "OMS.validate") == {"entries": 4}


def test_in_place_restore_takes_a_safety_backup_and_keeps_the_old_directory(backed_up, tmp_path):
    src = backed_up["src"]
    (src / "a.conf").write_text("a=broken\n")
    before = dict(iter_tree(src))
    dr = backed_up["restore"].test(run_after=T0.add(hours=3), run_conf={
        "source": "OMS", "in_place": True, "dry_run": False})
    assert ok(dr), task_states(backed_up["dag_id"], dr.run_id)
    assert dict(iter_tree(src)) == backed_up["trees"][1]
    kept = [p for p in src.parent.iterdir() if p.name.startswith("conf.pre-restore-")]
    assert len(kept) == 1 and dict(iter_tree(kept[0])) == before
    safety = xcom(backed_up["dag_id"], dr.run_id, "OMS.safety_backup")
    assert safety["type"] == "full" and safety["set"].startswith("3.1.0_OMS_")
    task_dir = tmp_path / "data" / "LocalBackup" / f"{backed_up['name']}_20261124100000"
    assert (task_dir / f"{safety['set']}.manifest.json").exists()


def test_a_cluster_version_mismatch_is_refused_unless_allowed(backed_up, tmp_path):
    project = backed_up["airflow_project"]
    spec = dict(backed_up["spec"], cluster_version="3.2.0")
    (project.specs / f"{backed_up['name']}.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    dest = tmp_path / "restored-v"
    dr = backed_up["restore"].test(run_after=T0.add(hours=4), run_conf={"source": "OMS", "destination": str(dest),
                                                                        "dry_run": False})
    assert not ok(dr)
    assert task_states(backed_up["dag_id"], dr.run_id)["OMS.verify"] == "failed"
    assert not dest.exists()
    dr = backed_up["restore"].test(run_after=T0.add(hours=5), run_conf={
        "source": "OMS", "destination": str(dest), "dry_run": False, "allow_version_mismatch": True})
    assert ok(dr)
    assert "taken at cluster version 3.1.0" in " ".join(xcom(backed_up["dag_id"], dr.run_id, "OMS.report")["summary"])


def test_only_the_chosen_sources_group_runs(airflow_project, tmp_path):
    """Two sources: restoring one runs that source's group alone; every step of the other skips
    (none of them may touch the destination)."""
    trees = {}
    sources = {}
    for name in ("OMS", "DBService"):
        src = tmp_path / name.lower()
        src.mkdir()
        (src / f"{name}.conf").write_text(f"{name}=1\n")
        trees[name] = dict(iter_tree(src))
        sources[name] = {"kind": "files", "paths": [str(src)],
                         "target": {"type": "LocalDir", "path": name.lower(), "max_backups": 3}}
    backup, restore = dags_for_dag_file(airflow_project.install(files_spec("rest_chosen", tmp_path, sources)))
    assert ok(backup.test(run_after=T0))
    dest = tmp_path / "restored"
    dr = restore.test(run_after=T0.add(hours=1), run_conf={"source": "DBService", "destination": str(dest),
                                                           "dry_run": False})
    states = task_states(restore.dag_id, dr.run_id)
    assert ok(dr), states
    assert {k: v for k, v in states.items() if k.startswith("OMS.")} == {
        f"OMS.{step}": "skipped" for step in ("resolve", "verify", "safety_backup", "restore", "validate", "report")}
    assert states["DBService.restore"] == states["DBService.validate"] == "success"
    assert dict(iter_tree(dest / str(tmp_path / "dbservice").lstrip("/"))) == trees["DBService"]
    assert sorted(p.name for p in (dest / str(tmp_path).lstrip("/")).iterdir()) == ["dbservice"]
