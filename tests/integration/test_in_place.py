"""In-place restores of PostgreSQL and OMS against a real PostgreSQL 15 whose service is controlled
as an operator's spec would (``pg_ctl`` argv lists): content back, old data kept, a restorable
safety backup, and automatic rollback (or the ALM-12035 alarm when the rollback fails too)."""

from __future__ import annotations

import json
from pathlib import Path

import pendulum
import psycopg
import pytest
import yaml

from conftest import PG_CAPTURE, postgres_service, seeded_postgres
from metabackup import inplace, pipeline
from metabackup.restore import restore_source, verified_plan
from metabackup.sources import RestoreError
from metabackup.sources.files import iter_tree
from metabackup.spec import load_spec

T0 = pendulum.datetime(2026, 11, 24, 3, tz="UTC")


@pytest.fixture()
def cluster(monkeypatch):
    with seeded_postgres(monkeypatch, rows=2000) as instance:
        yield instance


def content(instance) -> dict:
    with psycopg.connect(instance.superuser_dsn(), autocommit=True) as conn:
        return dict(conn.execute(PG_CAPTURE).fetchall())


def sql(instance, text: str) -> None:
    with psycopg.connect(instance.superuser_dsn(), autocommit=True) as conn:
        conn.execute(text)


def make_spec(tmp_path: Path, cluster, kind: str = "postgres", **service) -> object:
    source = {"kind": "postgres", "conn_id": "pg_src"} if kind == "postgres" else {
        "kind": "oms", "database": {"conn_id": "pg_src"}, "paths": [str(tmp_path / "oms" / "etc")]}
    source.update({"target": {"type": "LocalDir", "max_backups": 8},
                   "service": postgres_service(cluster, **service)})
    path = tmp_path / "inplace.yaml"
    path.write_text(yaml.safe_dump({
        "name": "inplace", "created": "2026-11-24T00:00:00Z", "cluster_version": "3.1.0", "type": "manual",
        "data_path": str(tmp_path / "data"), "sources": {"DBService" if kind == "postgres" else "OMS": source}}))
    return load_spec(path)


def backup(spec, source: str, hour: int, force_full: bool = False) -> str:
    run = pipeline.SetRun.of(spec, source, T0.add(hours=hour))
    pipeline.preflight(spec, [source])
    pipeline.run_set(run, force_full=force_full)
    return run.name.stem


def kept(live: Path, what: str) -> list[Path]:
    return sorted(p for p in live.parent.iterdir() if p.name.startswith(f"{live.name}.{what}-"))


def test_postgres_in_place_brings_the_set_back_on_the_same_server_with_a_restorable_safety_backup(tmp_path, cluster):
    spec = make_spec(tmp_path, cluster)
    backup(spec, "DBService", 0)
    sql(cluster, "UPDATE t SET v = 'second' WHERE id <= 100")
    second = backup(spec, "DBService", 1)
    at_backup = content(cluster)
    sql(cluster, "DELETE FROM t WHERE id > 1000; CREATE TABLE mistake (x int); INSERT INTO mistake VALUES (1)")
    broken = content(cluster)

    result = inplace.restore_source_in_place(spec, "DBService")

    assert result["set"] == second and result["service_before"] == "running"
    assert content(cluster) == at_backup, "the same server (same port, same connection) serves the set"
    assert result["downtime_s"] > 0 and result["validation"]["accepts_connections"] is True
    [previous] = kept(cluster.data, "pre-restore")
    assert result["in_place"][0]["previous"] == str(previous) and not kept(cluster.data, "restored")
    assert (previous / "PG_VERSION").exists()
    auto_conf = (cluster.data / "postgresql.auto.conf").read_text()
    assert "added by metabackup restore" not in auto_conf, "the recovery's own settings are gone"
    safety = result["safety_backup"]
    assert safety["type"] == "full"
    restored = Path(cluster.directory) / "safety-restored"  # reachable by the postgres user
    restore_source(spec, "DBService", str(restored), safety["set"])
    assert (restored / "PG_VERSION").exists(), "the safety backup of the broken state is itself restorable"
    assert broken != at_backup


def test_postgres_in_place_to_a_point_in_time(tmp_path, cluster):
    spec = make_spec(tmp_path, cluster)
    backup(spec, "DBService", 0)
    sql(cluster, "CREATE TABLE marks (n int); INSERT INTO marks VALUES (1)")
    with psycopg.connect(cluster.superuser_dsn(), autocommit=True) as conn:
        conn.execute("SELECT pg_sleep(1.2)")
        moment = conn.execute("SELECT now()").fetchone()[0]
        conn.execute("SELECT pg_sleep(1.2)")
        conn.execute("INSERT INTO marks VALUES (2)")
    backup(spec, "DBService", 1)
    sql(cluster, "INSERT INTO marks VALUES (3)")

    result = inplace.restore_source_in_place(spec, "DBService", point_in_time=moment.isoformat())

    with psycopg.connect(cluster.superuser_dsn(), autocommit=True) as conn:
        assert [r[0] for r in conn.execute("SELECT n FROM marks ORDER BY n")] == [1]
    assert result["validation"]["timeline"] >= 2, "a point-in-time recovery promotes onto a new timeline"


def test_a_start_that_fails_once_rolls_back_to_the_old_data_serving_unchanged(tmp_path, cluster):
    marker = tmp_path / "fail-next-start"
    spec = make_spec(tmp_path, cluster, fail_start_marker=marker)
    backup(spec, "DBService", 0)
    sql(cluster, "DELETE FROM t WHERE id > 10")
    before = content(cluster)
    plan = verified_plan(spec, "DBService")
    marker.touch()

    with pytest.raises(RestoreError, match=r"(?s)failed at step start: .*start refused by the test") as failure:
        inplace.restore_in_place(plan, "20261124050000")

    assert "Rolled back: the previous data is back" in str(failure.value)
    assert content(cluster) == before, "the old data is back, serving, unchanged"
    assert not kept(cluster.data, "pre-restore"), "the previous directory is live again"
    [moved_aside] = kept(cluster.data, "failed-restore")
    assert (moved_aside / "PG_VERSION").exists()
    journal = json.loads((cluster.data.parent / ".metabackup-in-place-20261124050000.json").read_text())
    assert journal["step"] == "rolled back" and journal["failed_step"] == "start"
    assert journal["directories"][0]["live_holds"] == "the previous data"


def test_oms_database_and_files_are_restored_together_or_not_at_all(tmp_path, cluster):
    etc = tmp_path / "oms" / "etc"
    etc.mkdir(parents=True)
    (etc / "oms.properties").write_text("port=20026\n")
    (etc / "ha.xml").write_text("<ha/>\n")
    spec = make_spec(tmp_path, cluster, kind="oms")
    backup(spec, "OMS", 0)
    at_backup = (content(cluster), dict(iter_tree(etc)))
    sql(cluster, "UPDATE t SET v = 'changed'")
    (etc / "oms.properties").write_text("port=1\n")
    (etc / "new.conf").write_text("x\n")
    changed = (content(cluster), dict(iter_tree(etc)))

    # a restored copy that fails validation (a file lost between rebuild and swap): both roll back
    rebuild = type(spec.source("OMS").plugin).rebuild_beside

    def losing_a_file(self, *args, **kwargs):
        rebuilt = rebuild(self, *args, **kwargs)
        (rebuilt.dirs[str(etc)] / "ha.xml").unlink()
        return rebuilt

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(type(spec.source("OMS").plugin), "rebuild_beside", losing_a_file)
        with pytest.raises(RestoreError, match="failed at step validate"):
            inplace.restore_in_place(verified_plan(spec, "OMS"), "20261124060000")
    assert (content(cluster), dict(iter_tree(etc))) == changed, "database and files both rolled back"

    result = inplace.restore_in_place(verified_plan(spec, "OMS"), "20261124070000")
    assert (content(cluster), dict(iter_tree(etc))) == at_backup, "database and files both restored"
    assert sorted(d["live"] for d in result["in_place"]) == sorted([str(cluster.data), str(etc)])


def test_when_the_rollback_fails_too_the_alarm_names_every_directory(tmp_path, cluster):
    marker = tmp_path / "always-fail-start"
    spec = make_spec(tmp_path, cluster, fail_start_marker=marker)
    backup(spec, "DBService", 0)
    plan = verified_plan(spec, "DBService")
    marker.touch()
    alarms = []
    try:
        with pytest.raises(RestoreError, match=r"(?s)ALM-12035 .*failed at start .*rollback failed at start"):
            inplace.restore_in_place(plan, "20261124080000", alarm=alarms.append)
    finally:
        marker.unlink()
        cluster_log = Path(cluster.directory) / "postgres.log"
        from harness import postgres as pg

        pg.start_data_dir(cluster.data, cluster_log)  # bring it back for the fixture's stop
    [alarm] = alarms
    assert alarm["alarm"] == "ALM-12035" and alarm["severity"] == "critical"
    assert alarm["failed_step"] == "start" and alarm["rollback_step"] == "start"
    [directory] = alarm["directories"]
    assert directory["live"] == str(cluster.data) and directory["live_holds"] == "the previous data"
    assert directory["failed_restore"] and Path(directory["failed_restore"]).is_dir()


def test_preflight_refuses_before_anything_changes(tmp_path, cluster):
    spec = make_spec(tmp_path, cluster)
    backup(spec, "DBService", 0)
    plan = verified_plan(spec, "DBService")
    no_service = plan.source.model_copy(update={"service": None})
    with pytest.raises(RestoreError, match=r"needs sources.DBService.service"):
        inplace.preflight(type(plan)(**{**plan.__dict__, "source": no_service}))
    link = cluster.data.parent / "data-link"
    link.symlink_to(cluster.data)
    service = plan.source.service.model_copy(update={"data_dirs": (str(link),)})
    linked = plan.source.model_copy(update={"service": service})
    with pytest.raises(RestoreError, match="is a symbolic link"):
        inplace.preflight(type(plan)(**{**plan.__dict__, "source": linked}))
    assert not kept(cluster.data, "restored") and not kept(cluster.data, "pre-restore")
