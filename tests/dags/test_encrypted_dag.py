"""Encryption through Airflow: the backup DAG writes encrypted sets (primary and copy), the restore
DAG reads them, the key rotation DAG re-wraps every set's data key, and after the old key is retired
the restore DAG still restores.  Throughout, the key never appears in what the runs printed or
logged, in any XCom value, in Airflow's log files or in a manifest."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pendulum
import pytest

from conftest import files_spec, task_states
from metabackup.airflow.dag_factory import dags_for_dag_file
from metabackup.airflow.keys_dag import build_rotate_keys_dag
from metabackup.keys import generate_key
from metabackup.sources.files import iter_tree

pytestmark = pytest.mark.airflow

T0 = pendulum.datetime(2026, 11, 24, 3, tz="UTC")


def ok(dr) -> bool:
    return str(dr.state) in ("success", "DagRunState.SUCCESS")


def all_xcom(dag_id: str, run_id: str) -> list[str]:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.scalars(select(XComModel).where(XComModel.dag_id == dag_id, XComModel.run_id == run_id))
        return [json.dumps(row.value, default=str) for row in rows]


def forms(key: str) -> list[str]:
    """The ways a key could leak: its base64 text, its hex, and its raw bytes read as Latin-1."""
    raw = base64.b64decode(key)
    return [key, raw.hex(), raw.decode("latin-1")]


def test_encrypted_backup_restore_and_rotation_through_airflow(airflow_project, tmp_path, monkeypatch, capfd, our_logs):
    from test_restore_dag import xcom

    old, new = generate_key(), generate_key()
    monkeypatch.setenv("AIRFLOW_CONN_DAG_KEK_OLD", json.dumps({"conn_type": "generic", "password": old}))
    monkeypatch.setenv("AIRFLOW_CONN_DAG_KEK_NEW", json.dumps({"conn_type": "generic", "password": new}))
    src = tmp_path / "conf"
    src.mkdir()
    (src / "a.conf").write_text("a=1\n")
    spec = files_spec("encdag", tmp_path, {"OMS": {
        "kind": "files", "paths": [str(src)], "target": {"type": "LocalDir", "max_backups": 5},
        "copies": [{"type": "LocalDir", "path": str(tmp_path / "site"), "max_backups": 5}]}},
        encryption={"key_id": "dag_kek_old", "on_cluster": True})
    backup, restore = dags_for_dag_file(airflow_project.install(spec))
    runs = []
    trees = []
    for hour in (0, 1):
        (src / f"h{hour}.conf").write_text(f"{hour}\n")
        dr = backup.test(run_after=T0.add(hours=hour))
        assert ok(dr), task_states(backup.dag_id, dr.run_id)
        runs.append((backup.dag_id, dr.run_id))
        trees.append(dict(iter_tree(src)))
    task_dir = "encdag_20261124100000"
    primary = tmp_path / "data" / "LocalBackup" / task_dir
    for folder in (primary, tmp_path / "site" / task_dir):
        archives = sorted(p.name for p in folder.iterdir() if ".tar.gz" in p.name)
        assert archives == ["3.1.0_OMS_20261124110000.tar.gz.enc", "3.1.0_OMS_20261124120000.tar.gz.enc"], archives
        assert all(json.loads(p.read_text())["encryption"]["key_id"] == "dag_kek_old"
                   for p in folder.glob("*.manifest.json"))

    dag_file = airflow_project.dags / "rotate_keys_for_test.py"
    dag_file.write_text("from metabackup.airflow.keys_dag import build_rotate_keys_dag\n"
                        f"dag = build_rotate_keys_dag({str(airflow_project.specs)!r}, __file__)\n")
    rotate_dag = build_rotate_keys_dag(airflow_project.specs, dag_file)
    dr = rotate_dag.test(run_after=T0.add(hours=2), run_conf={"task": "encdag", "new_key_id": "dag_kek_new"})
    assert ok(dr), task_states(rotate_dag.dag_id, dr.run_id)
    runs.append((rotate_dag.dag_id, dr.run_id))
    report = xcom(rotate_dag.dag_id, dr.run_id, "rotate")
    assert report["sources"]["OMS"] == {
        "primary": {"rewrapped": 2, "already": 0, "unencrypted": 0, "other_key": 0},
        "copy 1": {"rewrapped": 2, "already": 0, "unencrypted": 0, "other_key": 0}}

    monkeypatch.delenv("AIRFLOW_CONN_DAG_KEK_OLD")  # the old key is retired
    for number, label in enumerate(("primary", "copy 1")):
        dest = tmp_path / f"restored-{label.replace(' ', '')}"
        target = "auto" if label == "primary" else label
        dr = restore.test(run_after=T0.add(hours=3 + number), run_conf={"source": "OMS", "destination": str(dest),
                                                               "dry_run": False, "target": target})
        assert ok(dr), task_states(restore.dag_id, dr.run_id)
        runs.append((restore.dag_id, dr.run_id))
        assert dict(iter_tree(dest / str(src).lstrip("/"))) == trees[1]

    captured = capfd.readouterr()
    seen = [captured.out, captured.err, "\n".join(our_logs)]
    assert any("encrypted with key dag_kek_old" in text for text in seen), "the run's output was captured"
    for dag_id, run_id in runs:
        values = all_xcom(dag_id, run_id)
        assert values, f"no XCom captured for {dag_id} {run_id}"
        seen += values
    logs = Path(os.environ["AIRFLOW_HOME"]) / "logs"
    seen += [p.read_text(errors="replace") for p in logs.rglob("*") if p.is_file()] if logs.is_dir() else []
    seen += [p.read_text() for p in tmp_path.rglob("*.manifest.json")]
    for key in (old, new):
        for form in forms(key):
            assert not any(form in text for text in seen), "a key reached output, XCom, logs or a manifest"
