"""DBService backups through Airflow DAG runs against a real PostgreSQL 15, restored for real."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

import pendulum
import psycopg
import pytest

from conftest import PG_CAPTURE, files_spec
from harness import postgres as pg
from metabackup.airflow.dag_factory import dags_for_dag_file
from metabackup.restore import restore_source
from metabackup.sources.postgres import PostgresDestination
from metabackup.spec import load_spec

pytestmark = pytest.mark.airflow
T0 = pendulum.datetime(2026, 11, 24, 3, tz="UTC")



def capture(dsn: str) -> dict:
    """Per-table content checksums plus the large objects: what a restore must reproduce."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        tables = dict(conn.execute(PG_CAPTURE).fetchall())
        objects = conn.execute("SELECT md5(coalesce(string_agg(data, ''::bytea ORDER BY loid, pageno), '')) "
                               "FROM pg_largeobject").fetchone()[0]
    return {"tables": tables, "large_objects": objects}


@pytest.fixture()
def cluster(monkeypatch):
    instance = pg.prepare()
    pg.start(instance)
    monkeypatch.setenv("AIRFLOW_CONN_PG_SRC", json.dumps(instance.connection()))
    yield instance
    instance.stop("immediate")
    shutil.rmtree(instance.directory, ignore_errors=True)


def test_postgres_chain_through_airflow_restores_each_set_and_a_point_in_time(airflow_project, tmp_path, cluster):
    dag = dags_for_dag_file(airflow_project.install(files_spec("pgchain", tmp_path, {
        "DBService": {"kind": "postgres", "conn_id": "pg_src", "target": {"type": "LocalDir", "max_backups": 5}}})))[0]
    spec = load_spec(airflow_project.specs / "pgchain.yaml")
    dsn = cluster.superuser_dsn()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE metastore_tbls (id int PRIMARY KEY, name text, params text)")
        conn.execute("INSERT INTO metastore_tbls SELECT g, 'table_' || g, repeat(md5(g::text), 20) FROM generate_series(1, 5000) g")
        conn.execute("CREATE TABLE scratch (id int)")
        conn.execute("INSERT INTO scratch VALUES (1), (2)")
        conn.execute("SELECT lo_from_bytea(0, convert_to(repeat('blob', 5000), 'UTF8'))")
    points: dict[str, dict] = {}

    def backup(hour: int) -> str:
        dr = dag.test(run_after=T0.add(hours=hour))
        assert "success" in str(dr.state).lower()
        stem = f"3.1.0_DBService_{T0.add(hours=hour).in_timezone('Asia/Shanghai').format('YYYYMMDDHHmmss')}"
        points[stem] = capture(dsn)
        return stem

    backup(0)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("UPDATE metastore_tbls SET name = name || '_renamed' WHERE id % 10 = 0")
        conn.execute("DELETE FROM metastore_tbls WHERE id > 4500")
        conn.execute("INSERT INTO metastore_tbls VALUES (9001, 'toasted', repeat('payload-', 200000))")  # TOAST-sized
        conn.execute("DROP TABLE scratch")
        conn.execute("SELECT lo_from_bytea(0, '\\xdeadbeef'::bytea)")
    second = backup(1)
    time.sleep(1.2)
    between = pendulum.now("UTC")
    expected_between = capture(dsn)
    time.sleep(1.2)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO metastore_tbls VALUES (9002, 'after the point in time', 'x')")
        conn.execute("CREATE TABLE newer (id int)")
    third = backup(2)

    task_dir = tmp_path / "data" / "LocalBackup" / "pgchain_20261124100000"
    manifests = [json.loads(p.read_text()) for p in sorted(task_dir.glob("*.manifest.json"))]
    assert [m["type"] for m in manifests] == ["full", "incremental", "incremental"]
    for older, newer in zip(manifests, manifests[1:]):
        assert newer["position"]["start_lsn"] == older["position"]["end_lsn"], "each incremental starts where its parent ended"
    full_pos = manifests[0]["position"]
    assert full_pos["method"] == "pg_basebackup" and full_pos["timeline"] == 1 and full_pos["system_identifier"]
    assert full_pos["server_version"] // 10000 == 15 and full_pos["slot"] == "metabackup_pgchain_dbservice"
    assert len({json.dumps(p, sort_keys=True) for p in points.values()}) == 3, "each point differs"

    for i, (stem, expected) in enumerate(points.items()):
        restored = restore_into(spec, cluster.superuser_password, set_stem=stem)
        assert restored == expected, f"restore of {stem} differs"
    at_time = restore_into(spec, cluster.superuser_password, point_in_time=between.to_iso8601_string())
    assert at_time == expected_between == points[second], "nothing changed between the second set and the point"
    assert at_time != points[third], "the point in time is before the third set's changes"


def restore_into(spec, password: str, set_stem: str | None = None, point_in_time: str | None = None) -> dict:
    """Restore into a new data directory, read it as the source's superuser (restored with it), stop it.
    (Not under tmp_path: the postgres user cannot enter pytest's 0700 root-owned temp folders.)"""
    folder = Path(tempfile.mkdtemp(prefix="metabackup-pg-restore-"))
    folder.chmod(0o755)
    dest = PostgresDestination(data_dir=str(folder / "data"), keep_running=True)
    result = restore_source(spec, "DBService", dest, set_stem, point_in_time=point_in_time)
    try:
        return capture(f"host=127.0.0.1 port={result['port']} user=postgres password={password} dbname=postgres")
    finally:
        pg.stop_data_dir(Path(result["data_dir"]), "immediate")
        shutil.rmtree(folder, ignore_errors=True)
