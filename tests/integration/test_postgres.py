"""The postgres source kind against real PostgreSQL 15: fallbacks, outages, corrupt chains."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pendulum
import psycopg
import pytest
import yaml

from metabackup import pipeline
from metabackup.harness import postgres as pg
from metabackup.restore import restore_source
from metabackup.sources import RestoreError
from metabackup.spec import load_spec

T0 = pendulum.datetime(2026, 11, 24, 3, tz="UTC")


@pytest.fixture()
def cluster(monkeypatch):
    instance = pg.prepare()
    pg.start(instance)
    monkeypatch.setenv("AIRFLOW_CONN_PG_SRC", json.dumps(instance.connection()))
    with psycopg.connect(instance.superuser_dsn(), autocommit=True) as conn:
        conn.execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
        conn.execute("INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 1000) g")
    yield instance
    instance.stop("immediate")
    shutil.rmtree(instance.directory, ignore_errors=True)


def make_spec(tmp_path: Path, conn_id: str = "pg_src"):
    path = tmp_path / "pgt.yaml"
    path.write_text(yaml.safe_dump({
        "name": "pgt", "created": "2026-11-24T00:00:00Z", "cluster_version": "3.1.0", "type": "manual",
        "data_path": str(tmp_path / "data"),
        "sources": {"DBService": {"kind": "postgres", "conn_id": conn_id, "target": {"type": "LocalDir", "max_backups": 5}}}}))
    return load_spec(path)


def run_steps(spec, hour: int, steps=("snapshot", "archive", "upload", "verify", "retention")) -> dict:
    run = pipeline.SetRun.of(spec, "DBService", T0.add(hours=hour))
    pipeline.preflight(spec, ["DBService"])
    decision = pipeline.decide(run)
    for step in steps:
        getattr(pipeline, step)(run)
    return {**decision, "stem": run.name.stem}


def write(instance, sql: str) -> None:
    with psycopg.connect(instance.superuser_dsn(), autocommit=True) as conn:
        conn.execute(sql)


def manifests(tmp_path: Path) -> list[dict]:
    folder = tmp_path / "data" / "LocalBackup" / "pgt_20261124000000"
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.manifest.json"))]


def test_lost_slot_makes_the_next_run_full_with_the_reason(tmp_path, cluster):
    spec = make_spec(tmp_path)
    run_steps(spec, 0)
    write(cluster, "SELECT pg_drop_replication_slot('metabackup_pgt_dbservice')")
    second = run_steps(spec, 1)
    assert second["type"] == "full"
    assert "replication slot metabackup_pgt_dbservice no longer exists" in second["reason"]
    assert "no longer exists" in manifests(tmp_path)[-1]["reason"]
    write(cluster, "INSERT INTO t VALUES (5000, 'x')")
    assert run_steps(spec, 2)["type"] == "incremental", "the new full recreated the slot"


def test_a_rebuilt_server_makes_the_next_run_full(tmp_path, cluster, monkeypatch):
    spec = make_spec(tmp_path)
    run_steps(spec, 0)
    rebuilt = pg.prepare()
    pg.start(rebuilt)
    try:
        monkeypatch.setenv("AIRFLOW_CONN_PG_SRC", json.dumps(rebuilt.connection()))
        second = run_steps(spec, 1)
        assert second["type"] == "full" and "system identifier changed" in second["reason"]
    finally:
        rebuilt.stop("immediate")
        shutil.rmtree(rebuilt.directory, ignore_errors=True)


def test_server_down_fails_clearly_and_the_retry_after_restart_commits_one_set(tmp_path, cluster):
    spec = make_spec(tmp_path)
    run_steps(spec, 0)
    write(cluster, "INSERT INTO t VALUES (7000, 'y')")
    run = pipeline.SetRun.of(spec, "DBService", T0.add(hours=1))
    decision = pipeline.decide(run)
    assert decision["type"] == "incremental"
    cluster.stop("immediate")
    with pytest.raises(RuntimeError, match=r"PostgreSQL connection 'pg_src' \(127.0.0.1:\d+\)"):
        pipeline.snapshot(run)
    pg.start(cluster)
    for step in (pipeline.snapshot, pipeline.archive, pipeline.upload, pipeline.verify, pipeline.retention):
        step(run)  # Airflow's retry of the failed task and the ones after it
    found = manifests(tmp_path)
    assert [m["type"] for m in found] == ["full", "incremental"]
    assert len(list((tmp_path / "data" / "LocalBackup" / "pgt_20261124000000").glob("*.tar.gz"))) == 2


def test_missing_replication_attribute_fails_preflight_naming_the_role(tmp_path, cluster):
    write(cluster, "ALTER ROLE metabackup NOREPLICATION")
    with pytest.raises(pipeline.PreflightError, match="role 'metabackup' lacks the REPLICATION attribute"):
        pipeline.preflight(make_spec(tmp_path), ["DBService"])


def test_restore_refuses_a_corrupt_wal_archive_before_starting_anything(tmp_path, cluster):
    spec = make_spec(tmp_path)
    run_steps(spec, 0)
    write(cluster, "UPDATE t SET v = 'changed' WHERE id < 10")
    inc = run_steps(spec, 1)["stem"]
    archive = tmp_path / "data" / "LocalBackup" / "pgt_20261124000000" / f"{inc}.tar.gz"
    data = bytearray(archive.read_bytes())
    data[len(data) // 3] ^= 0x10
    archive.write_bytes(bytes(data))
    dest = tmp_path / "never"
    with pytest.raises(RestoreError, match=f"chain member {inc} failed verification"):
        restore_source(spec, "DBService", str(dest / "data"), inc)
    assert not dest.exists()


def test_password_never_reaches_logs_or_manifests(tmp_path, cluster, our_logs):
    spec = make_spec(tmp_path)
    run_steps(spec, 0)
    write(cluster, "INSERT INTO t VALUES (8000, 'z')")
    run_steps(spec, 1)
    password = cluster.backup_password
    text = "\n".join(our_logs)
    assert "running" in text and "pg_receivewal" in text, "the run's log was captured"
    assert password not in text
    folder = tmp_path / "data" / "LocalBackup" / "pgt_20261124000000"
    assert all(password not in p.read_text() for p in folder.glob("*.manifest.json"))
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in folder.iterdir())


def test_incrementals_with_and_without_new_writes_restore(tmp_path, cluster):
    spec = make_spec(tmp_path)
    run_steps(spec, 0)
    write(cluster, "INSERT INTO t VALUES (9000, 'one')")
    run_steps(spec, 1)
    quiet = run_steps(spec, 2)  # nothing written since the parent
    assert quiet["type"] == "incremental"
    folder = Path(tempfile.mkdtemp(prefix="metabackup-pg-restore-"))
    folder.chmod(0o755)
    try:
        from metabackup.sources.postgres import PostgresDestination

        result = restore_source(spec, "DBService", PostgresDestination(data_dir=str(folder / "data"), keep_running=True),
                                quiet["stem"])
        with psycopg.connect(f"host=127.0.0.1 port={result['port']} user=postgres "
                             f"password={cluster.superuser_password} dbname=postgres") as conn:
            assert conn.execute("SELECT v FROM t WHERE id = 9000").fetchone() == ("one",)
        pg.stop_data_dir(folder / "data", "immediate")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_oms_backs_up_database_and_configuration_together_and_restores_both(tmp_path, cluster):
    from metabackup.sources.files import iter_tree
    from metabackup.sources.oms import OmsDestination
    from metabackup.sources.postgres import PostgresDestination

    conf = tmp_path / "om-server" / "conf"
    conf.mkdir(parents=True)
    (conf / "oms.properties").write_text("port=1\n")
    path = tmp_path / "oms.yaml"
    path.write_text(yaml.safe_dump({
        "name": "oms", "created": "2026-11-24T00:00:00Z", "cluster_version": "3.1.0", "type": "manual",
        "data_path": str(tmp_path / "data"),
        "sources": {"OMS": {"kind": "oms", "database": {"conn_id": "pg_src"}, "paths": [str(conf)],
                            "target": {"type": "LocalDir", "max_backups": 5}}}}))
    spec = load_spec(path)
    stems = []
    for hour in range(2):
        run = pipeline.SetRun.of(spec, "OMS", T0.add(hours=hour))
        pipeline.preflight(spec, ["OMS"])
        assert pipeline.decide(run)["type"] == ("full" if hour == 0 else "incremental")
        for step in (pipeline.snapshot, pipeline.archive, pipeline.upload, pipeline.verify, pipeline.retention):
            step(run)
        stems.append(run.name.stem)
        if hour == 0:
            write(cluster, "INSERT INTO t VALUES (4242, 'manager change')")
            (conf / "oms.properties").write_text("port=2\n")
            (conf / "new.xml").write_text("<new/>")
    expected_tree = dict(iter_tree(conf))
    manifest = json.loads((tmp_path / "data" / "LocalBackup" / "oms_20261124000000" / f"{stems[1]}.manifest.json").read_text())
    assert set(manifest["position"]) == {"postgres", "files"} and manifest["position"]["postgres"]["method"] == "wal"
    folder = Path(tempfile.mkdtemp(prefix="metabackup-oms-restore-"))
    folder.chmod(0o755)
    try:
        dest = OmsDestination(PostgresDestination(data_dir=str(folder / "database"), keep_running=True), str(folder / "files"))
        result = restore_source(spec, "OMS", dest, stems[1])
        with psycopg.connect(f"host=127.0.0.1 port={result['postgres']['port']} user=postgres "
                             f"password={cluster.superuser_password} dbname=postgres") as conn:
            assert conn.execute("SELECT v FROM t WHERE id = 4242").fetchone() == ("manager change",)
        pg.stop_data_dir(folder / "database", "immediate")
        assert dict(iter_tree(folder / "files" / str(conf).lstrip("/"))) == expected_tree
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_preflight_warns_when_the_slot_holds_back_too_much_wal(tmp_path, cluster, our_logs):
    path = tmp_path / "pgt.yaml"
    make_spec(tmp_path)
    spec_dict = yaml.safe_load(path.read_text())
    spec_dict["sources"]["DBService"]["slot_warn_mb"] = 1
    path.write_text(yaml.safe_dump(spec_dict))
    spec = load_spec(path)
    run_steps(spec, 0)
    write(cluster, "INSERT INTO t SELECT g, repeat('w', 500) FROM generate_series(2000, 12000) g")  # several MB of WAL
    our_logs.clear()
    pipeline.preflight(spec, ["DBService"])
    text = "\n".join(our_logs)
    assert "replication slot metabackup_pgt_dbservice holds back" in text and "max_slot_wal_keep_size" in text


def test_a_new_timeline_after_failover_makes_the_next_run_full(tmp_path, cluster, monkeypatch):
    """The 'failed-over' server is our own restore of the full: same system identifier, promoted
    onto timeline 2 (as a promoted standby would be)."""
    from metabackup.sources.postgres import PostgresDestination

    spec = make_spec(tmp_path)
    full = run_steps(spec, 0)["stem"]
    folder = Path(tempfile.mkdtemp(prefix="metabackup-pg-failover-"))
    folder.chmod(0o755)
    try:
        promoted = restore_source(spec, "DBService", PostgresDestination(data_dir=str(folder / "data"), keep_running=True), full)
        monkeypatch.setenv("AIRFLOW_CONN_PG_SRC", json.dumps({**cluster.connection(), "port": promoted["port"]}))
        with psycopg.connect(f"host=127.0.0.1 port={promoted['port']} user=postgres password={cluster.superuser_password} "
                             "dbname=postgres", autocommit=True) as conn:
            conn.execute("CHECKPOINT")  # the new timeline reaches pg_control
        second = run_steps(spec, 1)
        assert second["type"] == "full" and "the timeline changed from 1 to 2" in second["reason"]
    finally:
        pg.stop_data_dir(folder / "data", "immediate")
        shutil.rmtree(folder, ignore_errors=True)
