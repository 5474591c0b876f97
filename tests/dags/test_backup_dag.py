"""Backup task DAGs run through Airflow itself (``dag.test()``) against real directories."""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from pathlib import Path

import pendulum
import pytest
from sqlalchemy import select

from conftest import files_spec, task_states
from metabackup.airflow.dag_factory import dags_for_dag_file
from metabackup.restore import restore_source
from metabackup.sources.files import iter_tree
from metabackup.spec import load_spec

pytestmark = pytest.mark.airflow

T0 = pendulum.datetime(2026, 11, 24, 3, tz="UTC")
ARCHIVE = re.compile(r"^3\.1\.0_(OMS|NameNode)_(\d{14})\.tar\.gz$")


def asset_events(dag_id: str) -> list[dict]:
    from airflow.models.asset import AssetEvent
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = session.scalars(select(AssetEvent).where(AssetEvent.source_dag_id == dag_id).order_by(AssetEvent.id))
        return [dict(e.extra) for e in rows]


def sets_in(directory: Path) -> dict[str, dict]:
    """Manifest of every committed set in a task directory, by set name."""
    return {p.name.removesuffix(".manifest.json"): json.loads(p.read_text()) for p in sorted(directory.glob("*.manifest.json"))}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree(root: Path) -> dict:
    return dict(iter_tree(root))


def run(dag, hour: int, **conf):
    dr = dag.test(run_after=T0.add(hours=hour), run_conf=conf or None)
    assert str(dr.state) in ("success", "DagRunState.SUCCESS"), f"run {hour} ended {dr.state}"
    return dr


def test_chain_of_runs_full_incremental_full_every_n_and_retention(airflow_project, tmp_path):
    oms_src, nn_src = tmp_path / "oms" / "conf", tmp_path / "nn" / "name"
    for d in (oms_src, nn_src):
        d.mkdir(parents=True)
        (d / "base.conf").write_text("v=0\n")
    spec_dict = files_spec("chain", tmp_path, {
        "OMS": {"kind": "files", "paths": [str(oms_src)], "target": {"type": "LocalDir", "max_backups": 5}},
        "NameNode": {"kind": "files", "paths": [str(nn_src)],
                     "target": {"type": "LocalDir", "path": "nn", "max_backups": 3, "mirror": str(tmp_path / "standby")}},
    }, policy={"type": "full_every_n", "n": 3})
    dag = dags_for_dag_file(airflow_project.install(spec_dict))[0]
    spec = load_spec(airflow_project.specs / "chain.yaml")
    oms_dir = tmp_path / "data" / "LocalBackup" / "chain_20261124100000"
    nn_dir = tmp_path / "data" / "nn" / "chain_20261124100000"
    mirror_dir = tmp_path / "standby" / "chain_20261124100000"

    captured: dict[str, dict] = {}
    for hour in range(6):
        (oms_src / f"added-{hour}.conf").write_text(f"run {hour}\n")
        (nn_src / "base.conf").write_text(f"v={hour}\n")
        dr = run(dag, hour)
        stamp = T0.add(hours=hour).in_timezone("Asia/Shanghai").format("YYYYMMDDHHmmss")
        captured[f"3.1.0_OMS_{stamp}"] = tree(oms_src)
        states = task_states(dag.dag_id, dr.run_id)
        chosen = "full" if hour in (0, 3) else "incremental"
        other = "incremental" if chosen == "full" else "full"
        for source in ("OMS", "NameNode"):
            assert states[f"{source}.{chosen}"] == "success"
            assert states[f"{source}.{other}"] == "skipped", "the branch not taken is visibly skipped"
            for step in ("decide", "archive", "upload", "verify", "retention"):
                assert states[f"{source}.{step}"] == "success"
        assert states["preflight"] == states["record"] == "success"

    oms_sets = sets_in(oms_dir)
    assert [m["type"] for m in oms_sets.values()] == ["full", "incremental", "incremental", "full", "incremental", "incremental"]
    names = sorted(p.name for p in oms_dir.iterdir())
    assert all(ARCHIVE.match(n) or n.endswith(".manifest.json") for n in names), names
    for stem, manifest in oms_sets.items():
        archive = oms_dir / manifest["archive"]["name"]
        assert manifest["set"] == stem and archive.name == stem + ".tar.gz"
        assert sha256(archive) == manifest["archive"]["sha256"] and archive.stat().st_size == manifest["archive"]["size"]
        assert stat.S_IMODE(archive.stat().st_mode) == 0o600
        assert manifest["task"] == "chain" and manifest["kind"] == "files" and manifest["source"] == "OMS"
        assert manifest["position"]["file_index_sha256"]
    stems = list(oms_sets)
    assert oms_sets[stems[1]]["parent"] == stems[0] and oms_sets[stems[2]]["parent"] == stems[1]
    assert oms_sets[stems[3]]["parent"] is None and "full_every_n" in oms_sets[stems[3]]["reason"]
    assert oms_sets[stems[4]]["chain_root"] == stems[3]
    assert stat.S_IMODE(oms_dir.stat().st_mode) == 0o700

    # NameNode keeps max_backups=3: after run 6 the window F4 I5 I6 no longer needs F1 I2 I3.
    nn_sets = sets_in(nn_dir)
    assert [m["type"] for m in nn_sets.values()] == ["full", "incremental", "incremental"]
    assert sorted(p.name for p in mirror_dir.iterdir()) == sorted(p.name for p in nn_dir.iterdir())
    for p in mirror_dir.iterdir():
        assert sha256(p) == sha256(nn_dir / p.name)

    # Lineage: one event per committed set, with its metadata.
    events = asset_events(dag.dag_id)
    assert len(events) == 12
    last = events[-1]
    assert {"set", "type", "size", "sha256", "parent", "location"} <= set(last)
    assert last["location"].startswith("file://")

    # Every OMS set restores to the tree captured right after its run.
    for stem in (stems[0], stems[2], stems[5]):
        dest = tmp_path / f"restore-{stem}"
        restore_source(spec, "OMS", dest, stem)
        assert tree(dest / str(oms_src).lstrip("/")) == captured[stem]

    # force_full and a subset of sources through the trigger params.
    dr = run(dag, 6, force_full=True, sources=["NameNode"])
    states = task_states(dag.dag_id, dr.run_id)
    assert states["NameNode.full"] == "success" and states["NameNode.incremental"] == "skipped"
    assert all(states[f"OMS.{s}"] == "skipped" for s in ("full", "incremental", "archive", "verify", "retention"))
    nn_sets = sets_in(nn_dir)
    newest = list(nn_sets.values())[-1]
    assert newest["type"] == "full" and "force_full" in newest["reason"]
    assert len(sets_in(oms_dir)) == 6, "OMS was not selected: no new set"


def test_rerunning_a_committed_run_changes_nothing(airflow_project, tmp_path):
    src = tmp_path / "conf"
    src.mkdir()
    (src / "a").write_text("a")
    dag = dags_for_dag_file(airflow_project.install(files_spec("rerun", tmp_path, {
        "OMS": {"kind": "files", "paths": [str(src)], "target": {"type": "LocalDir", "max_backups": 3}}})))[0]
    spec = load_spec(airflow_project.specs / "rerun.yaml")
    run(dag, 0)
    task_dir = tmp_path / "data" / "LocalBackup" / "rerun_20261124100000"
    before = {p.name: sha256(p) for p in task_dir.iterdir()}
    # The same run again (a clear of the whole run, or a second trigger at the same time).
    from metabackup import pipeline
    set_run = pipeline.SetRun.of(spec, "OMS", T0)
    decision = pipeline.decide(set_run)
    assert decision.committed is True
    for step in (pipeline.snapshot, pipeline.archive, pipeline.upload, pipeline.verify, pipeline.retention):
        step(set_run)
    assert {p.name: sha256(p) for p in task_dir.iterdir()} == before


def test_preflight_fails_clearly_when_a_target_is_unusable(airflow_project, tmp_path):
    src = tmp_path / "conf"
    src.mkdir()
    blocker = tmp_path / "data" / "LocalBackup"
    blocker.parent.mkdir(parents=True)
    blocker.write_text("a file where the backup directory should be")
    dag = dags_for_dag_file(airflow_project.install(files_spec("blocked", tmp_path, {
        "OMS": {"kind": "files", "paths": [str(src)], "target": {"type": "LocalDir", "max_backups": 3}}}, retries=0)))[0]
    dr = dag.test(run_after=T0)
    states = task_states(dag.dag_id, dr.run_id)
    assert states["preflight"] == "failed"
    assert states["OMS.decide"] == "upstream_failed"
    assert not any(p.suffix == ".gz" for p in tmp_path.rglob("*"))


def test_dag_shape_schedule_and_params(airflow_project, tmp_path):
    src = tmp_path / "conf"
    src.mkdir()
    spec_dict = files_spec("shape", tmp_path, {
        "OMS": {"kind": "files", "paths": [str(src)], "target": {"type": "LocalDir"}},
        "DBService": {"kind": "files", "paths": [str(tmp_path / "db")], "target": {"type": "LocalDir"}}},
        type="periodic", schedule={"start": "2026-11-25T02:00:00+08:00", "period": "hour", "every": 6},
        queue="backup-node-1", retries=3)
    dag = dags_for_dag_file(airflow_project.install(spec_dict))[0]
    assert dag.dag_id == "backup_shape" and dag.max_active_runs == 1 and dag.catchup is False
    assert dag.start_date == pendulum.parse("2026-11-24T10:00:00+08:00")
    assert dag.timetable.slot(0) == pendulum.parse("2026-11-25T02:00:00+08:00")
    assert dag.timetable.slot(1) == pendulum.parse("2026-11-25T08:00:00+08:00")
    assert set(dag.params.keys()) == {"force_full", "sources"}
    assert dag.params["sources"] == ["OMS", "DBService"]
    assert {"metabackup", "periodic", "OMS", "DBService"} <= set(dag.tags)
    assert "shape" in dag.doc_md and "LocalDir" in dag.doc_md
    for task in dag.tasks:
        assert task.queue == "backup-node-1" and task.retries == 3 and task.retry_exponential_backoff
    decide = dag.get_task("OMS.decide")
    assert type(decide).__name__ == "BackupTypeBranchOperator"
    assert decide.downstream_task_ids == {"OMS.full", "OMS.incremental"}
    assert dag.get_task("OMS.archive").upstream_task_ids == {"OMS.full", "OMS.incremental"}
    assert [a.uri for a in dag.get_task("OMS.full").inlets] == [f"file://{src}"]
    assert dag.get_task("OMS.verify").outlets[0].uri.endswith("/LocalBackup/shape_20261124100000")
    # The scheduler can store and reload the DAG with its timetable (the plugin registers it).
    from airflow.serialization.serialized_objects import DagSerialization

    restored = DagSerialization.from_dict(DagSerialization.to_dict(dag))
    assert restored.timetable.summary == dag.timetable.summary


def test_manual_task_has_no_schedule(airflow_project, tmp_path):
    dag = dags_for_dag_file(airflow_project.install(files_spec("manualonly", tmp_path, {
        "OMS": {"kind": "files", "paths": [str(tmp_path / "src")], "target": {"type": "LocalDir"}}})))[0]
    assert dag.timetable.can_be_scheduled is False
    assert os.path.basename(dag.fileloc) == "backup_manualonly.py"
