"""Which step failed and why (each source's ``finish``), ALM-12034's clearing by a run that commits,
and the RPO watch DAG, through Airflow itself (``dag.test()``) with a real SMTP server and a real
HTTP listener.  (``dag.test()`` makes manual runs: the raise of ALM-12034 by a *scheduled* run is
tested end to end, tests/e2e/test_alarms.py.)"""

from __future__ import annotations

import json

import pendulum
import pytest

from conftest import files_spec, mail_body, task_states
from metabackup import alarms
from metabackup.airflow.dag_factory import dags_for_dag_file

pytestmark = pytest.mark.airflow
T0 = pendulum.datetime(2026, 11, 24, 3, tz="UTC")


def ok(dr) -> bool:
    return str(dr.state).endswith("success")


def xcom(dag_id: str, run_id: str, task_id: str, key: str = "return_value"):
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        row = session.scalars(select(XComModel).where(XComModel.dag_id == dag_id, XComModel.run_id == run_id,
                                                      XComModel.task_id == task_id, XComModel.key == key)).first()
        value = row.value if row else None
        return json.loads(value) if isinstance(value, (str, bytes)) else value


def variable(key: str):
    from airflow.models import Variable

    raw = Variable.get(key, default_var=None)
    return None if raw is None else json.loads(raw)


def set_variable(key: str, value) -> None:
    from airflow.models import Variable

    Variable.set(key, json.dumps(value))


def delete_variable(key: str) -> None:
    from airflow.models import Variable

    Variable.delete(key)


@pytest.fixture()
def alert_channels(webhook, mailbox, monkeypatch):
    url, posted = webhook
    monkeypatch.setenv("METABACKUP_ALERT_WEBHOOK", url)
    monkeypatch.setenv("METABACKUP_ALERT_EMAIL", "ops@example.com")
    return posted, mailbox


def install(airflow_project, tmp_path, name: str, paths: list, **overrides):
    return dags_for_dag_file(airflow_project.install(files_spec(name, tmp_path, {"OMS": {
        "kind": "files", "paths": [str(p) for p in paths], "target": {"type": "LocalDir", "max_backups": 5}}},
        retries=0, **overrides)))


def test_finish_names_the_failed_step_its_error_and_host(airflow_project, tmp_path, monkeypatch, alert_channels):
    posted, mailbox = alert_channels
    missing = tmp_path / "not-there"
    backup, _ = install(airflow_project, tmp_path, "alarmsteps", [missing])
    delete_variable(alarms.backup_variable("alarmsteps"))

    dr = backup.test(run_after=T0)
    assert not ok(dr)
    assert task_states(backup.dag_id, dr.run_id)["OMS.check"] == "failed"
    finished = xcom(backup.dag_id, dr.run_id, "OMS.finish")
    assert finished["event"] is None and finished["failed_step"] == "OMS.check"
    assert f"source directory {missing} does not exist" in finished["error"]
    assert finished["host"] and finished["log_url"] and "OMS.check" in finished["log_url"]
    # a manual run raises no ALM-12034, and stores no alarm
    assert posted == [] and mailbox == []
    assert not variable(alarms.backup_variable("alarmsteps"))

    # a step after the decision: the upload
    missing.mkdir()
    (missing / "a.conf").write_text("a=1\n")
    from metabackup import pipeline

    def refuse(run):
        raise RuntimeError("upload refused by the test: target offline")

    monkeypatch.setattr(pipeline, "upload", refuse)
    dr = backup.test(run_after=T0.add(hours=1))
    assert not ok(dr)
    finished = xcom(backup.dag_id, dr.run_id, "OMS.finish")
    assert finished["failed_step"] == "OMS.upload" and finished["error"] == "upload refused by the test: target offline"
    assert finished["event"] is None
    assert posted == [] and mailbox == []


def test_a_run_that_commits_clears_an_active_alarm_once(airflow_project, tmp_path, alert_channels):
    posted, mailbox = alert_channels
    source = tmp_path / "etc"
    backup, _ = install(airflow_project, tmp_path, "alarmclear", [source])
    key = alarms.backup_variable("alarmclear")
    # as a failed scheduled run left it
    set_variable(key, {"OMS": {"alarm": "ALM-12034", "raised_at": "2026-11-24T02:00:05Z",
                               "run_id": "scheduled__2026-11-24T02:00:00+00:00", "step": "OMS.check"}})

    assert not ok(backup.test(run_after=T0))  # a manual run that fails while the alarm is active: nothing
    assert posted == [] and mailbox == []
    assert set(variable(key)) == {"OMS"}

    source.mkdir()
    (source / "a.conf").write_text("a=1\n")
    dr = backup.test(run_after=T0.add(hours=1))
    assert ok(dr), task_states(backup.dag_id, dr.run_id)
    [note] = posted
    assert note["alarm"] == "ALM-12034" and note["status"] == "cleared" and note["task"] == "alarmclear"
    assert note["source"] == "OMS" and note["run_id"] == dr.run_id and note["dag_id"] == "backup_alarmclear"
    assert note["raised_by_run"] == "scheduled__2026-11-24T02:00:00+00:00" and note["set"].startswith("3.1.0_OMS_")
    [(recipients, message)] = mailbox
    assert recipients == ["ops@example.com"]
    assert message["Subject"] == "metabackup CLEARED ALM-12034: Periodic backup failure (alarmclear OMS)"
    assert '&quot;status&quot;: &quot;cleared&quot;' in mail_body(message)
    assert variable(key) == {}

    assert ok(backup.test(run_after=T0.add(hours=2)))  # and the next success sends nothing
    assert len(posted) == 1 and len(mailbox) == 1


def test_watch_dag_raises_the_rpo_alarm_once_and_clears_it(airflow_project, tmp_path, monkeypatch, alert_channels):
    from conftest import write_spec
    from metabackup import pipeline
    from metabackup.airflow.watch_dag import build_watch_dag

    posted, mailbox = alert_channels
    source = tmp_path / "etc"
    source.mkdir()
    (source / "a.conf").write_text("a=1\n")
    specs = tmp_path / "watched"
    specs.mkdir()
    (specs / "broken.yaml").write_text("name: broken\nthis is: [not a spec\n")
    spec = write_spec(specs, files_spec("rpowatched", tmp_path, {"OMS": {
        "kind": "files", "paths": [str(source)], "target": {"type": "LocalDir", "max_backups": 5}}},
        type="periodic", created="2026-01-01T00:00:00+00:00",
        schedule={"start": "2026-01-01T00:00:00+00:00", "period": "hour"}))
    now = pendulum.now("UTC").replace(microsecond=0)
    pipeline.backup(spec, executed=now.subtract(hours=3))
    delete_variable(alarms.RPO_VARIABLE)
    # a watch DAG over a folder holding only this spec (and a broken one), in the test DAGs folder
    dag_file = airflow_project.dags / "watch_for_test.py"
    dag_file.write_text("from metabackup.airflow.watch_dag import build_watch_dag\n"
                        f"dag = build_watch_dag({str(specs)!r}, __file__)\n")
    watch = build_watch_dag(specs, dag_file)

    dr = watch.test()
    assert ok(dr)
    assert xcom(watch.dag_id, dr.run_id, "rpo")["rpowatched"]["OMS"]["state"] == "stale"
    [note] = posted
    assert note["alarm"] == "METABACKUP-RPO-STALE" and note["status"] == "raised"
    assert note["title"] == "Recovery point objective missed"
    assert (note["task"], note["source"], note["state"]) == ("rpowatched", "OMS", "stale")
    assert note["newest"] == now.subtract(hours=3).to_iso8601_string() and "stale after 2 h" in note["text"]
    [(_, message)] = mailbox
    assert message["Subject"] == "metabackup ALARM METABACKUP-RPO-STALE: Recovery point objective missed (rpowatched OMS)"

    assert ok(watch.test())  # still stale: nothing new
    assert len(posted) == 1 and len(mailbox) == 1

    pipeline.backup(spec)
    assert ok(watch.test())
    assert [n["status"] for n in posted] == ["raised", "cleared"] and posted[1]["state"] == "ok"
    assert mailbox[1][1]["Subject"].startswith("metabackup CLEARED METABACKUP-RPO-STALE")
    assert variable(alarms.RPO_VARIABLE) == {}


def test_watch_dag_schedule_and_shape(monkeypatch, tmp_path):
    from metabackup.airflow.watch_dag import build_watch_dag

    monkeypatch.delenv("METABACKUP_WATCH_SCHEDULE", raising=False)
    dag = build_watch_dag(tmp_path)
    assert dag.dag_id == "metabackup_watch" and dag.catchup is False and dag.max_active_runs == 1
    assert dag.schedule == "*/15 * * * *" and dag.task_ids == ["rpo"]
    monkeypatch.setenv("METABACKUP_WATCH_SCHEDULE", "@hourly")
    assert build_watch_dag(tmp_path).schedule == "@hourly"
