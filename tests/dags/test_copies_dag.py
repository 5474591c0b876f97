"""Off-site copies through Airflow: the backup DAG replicates each committed set to every copy (one
task per copy), and the restore DAG reads from a chosen copy, or falls back to one by itself."""

from __future__ import annotations

import shutil

import pendulum
import pytest

from conftest import files_spec, task_states
from metabackup.airflow.dag_factory import dags_for_dag_file
from metabackup.sources.files import iter_tree

pytestmark = pytest.mark.airflow

T0 = pendulum.datetime(2026, 11, 24, 3, tz="UTC")


def ok(dr) -> bool:
    return str(dr.state) in ("success", "DagRunState.SUCCESS")


def test_replicate_tasks_fill_each_copy_and_the_restore_dag_reads_from_them(airflow_project, tmp_path):
    from test_restore_dag import xcom

    src = tmp_path / "conf"
    src.mkdir()
    (src / "a.conf").write_text("a=1\n")
    copies = [{"type": "LocalDir", "path": str(tmp_path / f"site{n}"), "max_backups": 3} for n in (1, 2)]
    spec = files_spec("copydag", tmp_path, {"OMS": {"kind": "files", "paths": [str(src)],
                                                    "target": {"type": "LocalDir", "max_backups": 5},
                                                    "copies": copies}})
    backup, restore = dags_for_dag_file(airflow_project.install(spec))
    assert {"OMS.replicate_1", "OMS.replicate_2"} <= set(backup.task_dict)
    assert backup.get_task("OMS.retention").upstream_task_ids == {"OMS.replicate_1", "OMS.replicate_2"}
    trees = []
    for hour in (0, 1):
        (src / f"h{hour}.conf").write_text(f"{hour}\n")
        dr = backup.test(run_after=T0.add(hours=hour))
        assert ok(dr), task_states(backup.dag_id, dr.run_id)
        trees.append(dict(iter_tree(src)))
    task_dir = "copydag_20261124100000"
    for n in (1, 2):
        names = sorted(p.name for p in (tmp_path / f"site{n}" / task_dir).iterdir() if p.name.endswith(".manifest.json"))
        assert names == ["3.1.0_OMS_20261124110000.manifest.json", "3.1.0_OMS_20261124120000.manifest.json"]

    dest = tmp_path / "from-copy-2"
    dr = restore.test(run_after=T0.add(hours=2), run_conf={"source": "OMS", "destination": str(dest),
                                                           "dry_run": False, "target": "copy 2"})
    assert ok(dr), task_states(restore.dag_id, dr.run_id)
    assert dict(iter_tree(dest / str(src).lstrip("/"))) == trees[1]
    assert xcom(restore.dag_id, dr.run_id, "OMS.verify")["location"] == "copy 2"

    shutil.rmtree(tmp_path / "data" / "LocalBackup" / task_dir)  # the primary is gone: auto falls back
    dest = tmp_path / "auto"
    dr = restore.test(run_after=T0.add(hours=3), run_conf={"source": "OMS", "destination": str(dest),
                                                           "dry_run": False, "target": "auto"})
    assert ok(dr), task_states(restore.dag_id, dr.run_id)
    assert dict(iter_tree(dest / str(src).lstrip("/"))) == trees[1]
    report = xcom(restore.dag_id, dr.run_id, "OMS.report")
    assert "verified at copy 1" in report["summary"][1], report["summary"]
