"""In-place restores through the restore DAG (Airflow's ``dag.test()``) against a real PostgreSQL 15
controlled by the spec's ``service:`` block; the ALM-12035 alarm reaches a real SMTP server and a
real HTTP listener when the rollback fails."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pendulum
import psycopg
import pytest

from conftest import PG_CAPTURE, files_spec, mail_body, postgres_service, seeded_postgres, task_states
from metabackup.airflow.dag_factory import dags_for_dag_file

pytestmark = pytest.mark.airflow
T0 = pendulum.datetime(2026, 11, 24, 3, tz="UTC")


def ok(dr) -> bool:
    return str(dr.state).endswith("success")


def content(instance) -> dict:
    with psycopg.connect(instance.superuser_dsn(), autocommit=True) as conn:
        return dict(conn.execute(PG_CAPTURE).fetchall())


def report_of(dag_id: str, run_id: str, task_id: str = "DBService.report"):
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        row = session.scalars(select(XComModel).where(XComModel.dag_id == dag_id, XComModel.run_id == run_id,
                                                      XComModel.task_id == task_id,
                                                      XComModel.key == "return_value")).first()
        value = row.value if row else None
        return json.loads(value) if isinstance(value, (str, bytes)) else value


def install(airflow_project, tmp_path, name: str, cluster, **service):
    return dags_for_dag_file(airflow_project.install(files_spec(name, tmp_path, {"DBService": {
        "kind": "postgres", "conn_id": "pg_src", "target": {"type": "LocalDir", "max_backups": 5},
        "service": postgres_service(cluster, **service)}})))


def test_postgres_in_place_through_the_restore_dag(airflow_project, tmp_path, monkeypatch):
    with seeded_postgres(monkeypatch, rows=500) as cluster:
        backup, restore = install(airflow_project, tmp_path, "inplacedag", cluster)
        assert ok(backup.test(run_after=T0))
        at_backup = content(cluster)
        with psycopg.connect(cluster.superuser_dsn(), autocommit=True) as conn:
            conn.execute("TRUNCATE t")
        truncated = content(cluster)

        dry = restore.test(run_after=T0.add(hours=1), run_conf={"source": "DBService", "in_place": True})
        assert ok(dry) and content(cluster) == truncated, "a dry run changes nothing"
        dry_report = report_of(restore.dag_id, dry.run_id)
        assert "service before the restore: running" in " ".join(dry_report["summary"])

        dr = restore.test(run_after=T0.add(hours=2), run_conf={"source": "DBService", "in_place": True, "dry_run": False})
        assert ok(dr), task_states(restore.dag_id, dr.run_id)
        assert content(cluster) == at_backup
        states = task_states(restore.dag_id, dr.run_id)
        assert all(state == "success" for state in states.values()), states
        report = report_of(restore.dag_id, dr.run_id)
        summary = " ".join(report["summary"])
        assert "service down for" in summary and "previous data kept at" in summary
        assert report["safety_backup"]["type"] == "full"
        assert report["validated"]["system_identifier"] == report["restored"]["rebuilt"]["system_identifier"]


def test_oms_in_place_through_the_restore_dag(airflow_project, tmp_path, monkeypatch):
    from metabackup.sources.files import iter_tree

    etc = tmp_path / "om-server" / "conf"
    etc.mkdir(parents=True)
    (etc / "oms.properties").write_text("port=20026\n")
    with seeded_postgres(monkeypatch, rows=300) as cluster:
        backup, restore = dags_for_dag_file(airflow_project.install(files_spec("omsinplace", tmp_path, {"OMS": {
            "kind": "oms", "database": {"conn_id": "pg_src"}, "paths": [str(etc)],
            "target": {"type": "LocalDir", "max_backups": 5}, "service": postgres_service(cluster)}})))
        assert ok(backup.test(run_after=T0))
        at_backup = (content(cluster), dict(iter_tree(etc)))
        with psycopg.connect(cluster.superuser_dsn(), autocommit=True) as conn:
            conn.execute("DELETE FROM t WHERE id % 2 = 0")
        (etc / "oms.properties").write_text("port=1\n")

        dr = restore.test(run_after=T0.add(hours=1), run_conf={"source": "OMS", "in_place": True, "dry_run": False})
        assert ok(dr), task_states(restore.dag_id, dr.run_id)
        assert (content(cluster), dict(iter_tree(etc))) == at_backup
        restored = report_of(restore.dag_id, dr.run_id, "OMS.report")["restored"]
        assert sorted(d["live"] for d in restored["in_place"]) == sorted([str(cluster.data), str(etc)])


def test_ldap_in_place_through_the_restore_dag(airflow_project, tmp_path, monkeypatch):
    from harness import slapd
    from metabackup.connections import get_connection
    from metabackup.sources.ldap.restore import dump_state

    instance = slapd.prepare(tmp_path / "slapd")
    slapd.seed_offline(instance, slapd.seed_ldif(users=12, groups=2))
    slapd.start(instance)
    monkeypatch.setenv("AIRFLOW_CONN_LDAP_SRC", instance.connection_uri())
    directory = Path(instance.directory)
    try:
        backup, restore = dags_for_dag_file(airflow_project.install(files_spec("ldapinplace", tmp_path, {"LdapServer": {
            "kind": "ldap", "conn_id": "ldap_src", "base_dns": [slapd.SUFFIX], "slapd_conf": str(instance.conf),
            "target": {"type": "LocalDir", "max_backups": 5},
            "service": {**slapd.service_argv(directory), "owner": "root", "timeout": 60,
                        "data_dirs": [str(directory / "data"), str(directory / "accesslog")]}}})))
        assert ok(backup.test(run_after=T0))
        at_backup = dump_state(get_connection("ldap_src"), [slapd.SUFFIX])
        subprocess.run(["ldapmodify", "-x", "-H", instance.url, "-D", instance.admin_dn, "-w", instance.password],
                       input=f"dn: uid=user00002,ou=People,{slapd.SUFFIX}\nchangetype: delete\n", text=True,
                       check=True, capture_output=True)
        assert dump_state(get_connection("ldap_src"), [slapd.SUFFIX]) != at_backup

        dr = restore.test(run_after=T0.add(hours=1), run_conf={"source": "LdapServer", "in_place": True,
                                                               "dry_run": False})
        assert ok(dr), task_states(restore.dag_id, dr.run_id)
        assert dump_state(get_connection("ldap_src"), [slapd.SUFFIX]) == at_backup
        report = report_of(restore.dag_id, dr.run_id, "LdapServer.report")
        assert report["safety_backup"]["type"] == "full" and report["restored"]["downtime_s"] > 0
    finally:
        subprocess.run(slapd.service_argv(directory)["stop"], check=False, timeout=60)


def test_a_failed_rollback_raises_the_critical_alarm_by_mail_and_webhook(airflow_project, tmp_path, monkeypatch,
                                                                        webhook, mailbox):
    url, posted = webhook
    monkeypatch.setenv("METABACKUP_ALERT_WEBHOOK", url)
    monkeypatch.setenv("METABACKUP_ALERT_EMAIL", "ops@example.com")
    with seeded_postgres(monkeypatch, rows=100) as cluster:
        marker = tmp_path / "always-fail-start"
        backup, restore = install(airflow_project, tmp_path, "alarmdag", cluster, fail_start_marker=marker)
        assert ok(backup.test(run_after=T0))
        marker.touch()
        try:
            dr = restore.test(run_after=T0.add(hours=1), run_conf={"source": "DBService", "in_place": True,
                                                                   "dry_run": False})
        finally:
            marker.unlink()
            from harness import postgres as pg

            pg.start_data_dir(cluster.data, Path(cluster.directory) / "postgres.log")
        assert not ok(dr)
        states = task_states(restore.dag_id, dr.run_id)
        assert states["DBService.restore"] == "failed" and states["DBService.report"] == "failed", states
    [alarm] = posted
    assert alarm["alarm"] == "ALM-12035" and alarm["task_id"] == "DBService.restore" and alarm["source"] == "DBService"
    assert alarm["directories"][0]["live"] == str(cluster.data)
    assert alarm["directories"][0]["live_holds"] == "the previous data"
    [(recipients, message)] = mailbox
    assert recipients == ["ops@example.com"]
    assert message["Subject"].startswith("metabackup CRITICAL ALM-12035: Unknown data status after recovery task failure")
    body = mail_body(message)
    assert str(cluster.data) in body and "failed_restore" in body
