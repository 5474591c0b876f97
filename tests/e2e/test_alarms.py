"""End-to-end alarms through a real ``airflow standalone``: ALM-12034 "Periodic backup failure" from
a scheduled run that the scheduler itself starts, raised once and cleared once, and the RPO stale
alarm of ``metabackup_watch``; each received by a real SMTP server and a real HTTP listener."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

import pendulum
import pytest
import yaml

from conftest import http_sink, mail_body, smtp_sink

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
TASK = "almper"
DAG_ID = f"backup_{TASK}"
RPO_TASK = "rposta"


@pytest.fixture(scope="module")
def mail_sink():
    """A real SMTP server on loopback (aiosmtpd): its port and the messages it received."""
    with smtp_sink() as sink:
        yield sink


@pytest.fixture(scope="module")
def hook_sink():
    """A real HTTP listener on loopback: its URL and the JSON bodies POSTed to it."""
    with http_sink("/alarm") as sink:
        yield sink


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e-alarms")
    dags, specs = root / "dags", root / "specs"
    dags.mkdir()
    specs.mkdir()
    data = Path(tempfile.mkdtemp(prefix="metabackup-e2e-alarms-"))
    yield {"root": root, "dags": dags, "specs": specs, "data": data, "missing": root / "oms-conf",
           "rpo_source": root / "rpo-conf"}
    shutil.rmtree(data, ignore_errors=True)


@pytest.fixture(scope="module")
def rpo_spec(folders):
    """A periodic (hourly) task whose newest set is 3 hours old: stale.  It has no DAG file, so the
    scheduler never backs it up; the watch DAG reads every spec of the folder."""
    from metabackup import pipeline
    from metabackup.spec import load_spec

    folders["rpo_source"].mkdir()
    (folders["rpo_source"] / "a.conf").write_text("a=1\n")
    spec = {"name": RPO_TASK, "created": "2026-01-01T00:00:00+00:00", "cluster_version": "3.1.0", "timezone": "UTC",
            "type": "periodic", "schedule": {"start": "2026-01-01T00:00:00+00:00", "period": "hour"},
            "data_path": str(folders["data"]),
            "sources": {"OMS": {"kind": "files", "paths": [str(folders["rpo_source"])],
                                "target": {"type": "LocalDir", "max_backups": 3}}}}
    path = folders["specs"] / f"{RPO_TASK}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    loaded = load_spec(path)
    executed = pendulum.now("UTC").replace(microsecond=0).subtract(hours=3)
    pipeline.backup(loaded, executed=executed)
    return {"spec": loaded, "executed": executed}


@pytest.fixture(scope="module")
def airflow(folders, rpo_spec, mail_sink, hook_sink, tmp_path_factory):
    from harness import airflow_standalone

    port, _ = mail_sink
    url, _ = hook_sink
    shutil.copy(REPO / "dags" / "metabackup_watch.py", folders["dags"])
    env = {
        "METABACKUP_ALERT_WEBHOOK": url,
        "METABACKUP_ALERT_EMAIL": "ops@example.com",
        "METABACKUP_ALERT_SMTP_CONN_ID": "smtp_alarms",
        "AIRFLOW_CONN_SMTP_ALARMS": json.dumps({
            "conn_type": "smtp", "host": "127.0.0.1", "port": port,
            "extra": {"from_email": "airflow@example.com", "disable_tls": True, "disable_ssl": True, "retry_limit": 0}}),
        # the watch runs when the test triggers it (a yearly schedule: at most the latest past slot,
        # once, when the DAG first appears; the assertions count every message, whichever run sent it)
        "METABACKUP_WATCH_SCHEDULE": "0 0 1 1 *",
    }
    instance = airflow_standalone.start(tmp_path_factory.mktemp("e2e-alarms-airflow"), folders["dags"],
                                        folders["specs"], env)
    yield instance
    instance.stop()


@pytest.fixture(scope="module")
def periodic_task(airflow, folders):
    """Installed once Airflow is up (a run started while its API server is still starting fails
    before its first step): an hourly task whose first scheduled run is 30 s from now (if the DAG
    processor sees it later, the scheduler starts that run at once: no catch-up, the latest slot),
    and whose source directory does not exist (so its check fails)."""
    start = pendulum.now("UTC").replace(microsecond=0).add(seconds=30)
    spec = {"name": TASK, "created": start.subtract(days=1).to_iso8601_string(), "cluster_version": "3.1.0",
            "timezone": "UTC", "type": "periodic", "schedule": {"start": start.to_iso8601_string(), "period": "hour"},
            "retries": 0, "data_path": str(folders["data"]),
            "sources": {"OMS": {"kind": "files", "paths": [str(folders["missing"])],
                                "target": {"type": "LocalDir", "max_backups": 3}}}}
    (folders["specs"] / f"{TASK}.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    shutil.copy(REPO / "dags" / "backup_default.py", folders["dags"] / f"backup_{TASK}.py")
    return start


@pytest.fixture(scope="module")
def client(airflow, periodic_task):
    api = airflow.client()
    for dag_id in (DAG_ID, "metabackup_watch"):
        api.wait_for_dag(dag_id)
    assert api.import_errors() == []
    return api


def alarms_of(received: list[dict], alarm: str) -> list[dict]:
    return [n for n in received if n.get("alarm") == alarm]


def mails_of(received: list, alarm: str) -> list:
    return [message for _, message in received if f" {alarm}: " in message["Subject"]]


def settle(condition, timeout: float = 20) -> None:
    """Wait for ``condition()``, then a little more (for anything sent late, which the caller's
    counts would then catch)."""
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.5)
    time.sleep(2)


def scheduled_run(client, dag_id: str, timeout: float = 180) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = client.get(f"/api/v2/dags/{dag_id}/dagRuns")["dag_runs"]
        scheduled = [r for r in runs if r["run_type"] == "scheduled"]
        if scheduled:
            return scheduled[0]
        time.sleep(1)
    raise AssertionError(f"the scheduler created no scheduled run of {dag_id} within {timeout}s")


def task_instance(client, dag_id: str, run_id: str, task_id: str) -> dict:
    import urllib.parse

    quoted = urllib.parse.quote(run_id, safe="")
    return client.get(f"/api/v2/dags/{dag_id}/dagRuns/{quoted}/taskInstances/{task_id}")


def test_periodic_backup_failure_is_raised_once_and_cleared_once(client, airflow, folders, periodic_task,
                                                                 hook_sink, mail_sink):
    _, posted = hook_sink
    _, mailed = mail_sink
    # the scheduler starts the first run at the spec's start time
    run = scheduled_run(client, DAG_ID)
    assert pendulum.parse(run["run_after"]) == periodic_task
    result = client.wait(DAG_ID, run["dag_run_id"], timeout=180)
    assert result["state"] == "failed", result
    assert result["tasks"]["OMS.check"] == "failed" and result["tasks"]["record"] == "failed", result["tasks"]
    settle(lambda: alarms_of(posted, "ALM-12034") and mails_of(mailed, "ALM-12034"))

    [alarm] = alarms_of(posted, "ALM-12034")
    check = task_instance(client, DAG_ID, run["dag_run_id"], "OMS.check")
    assert alarm["status"] == "raised" and alarm["title"] == "Periodic backup failure"
    assert (alarm["task"], alarm["source"], alarm["step"]) == (TASK, "OMS", "OMS.check")
    assert f"source directory {folders['missing']} does not exist" in alarm["error"]
    assert alarm["host"] and alarm["host"] == check["hostname"]
    assert (alarm["dag_id"], alarm["run_id"]) == (DAG_ID, run["dag_run_id"])
    assert alarm["log_url"].startswith(airflow.url) and "OMS.check" in alarm["log_url"]
    [message] = mails_of(mailed, "ALM-12034")
    assert message["Subject"] == f"metabackup ALARM ALM-12034: Periodic backup failure ({TASK} OMS)"
    body = mail_body(message)
    for text in (TASK, "OMS.check", alarm["host"], str(folders["missing"]), run["dag_run_id"]):
        assert text in body, text

    # record retried in the same scheduled run: fails again, sends nothing
    client.clear(DAG_ID, run["dag_run_id"], ["record"])
    again = client.wait(DAG_ID, run["dag_run_id"], timeout=120)
    assert again["state"] == "failed" and again["tasks"]["record"] == "failed", again
    assert task_instance(client, DAG_ID, run["dag_run_id"], "record")["try_number"] == 2
    # a second failed run: nothing either
    second = client.trigger(DAG_ID)
    assert client.wait(DAG_ID, second, timeout=180)["state"] == "failed"
    settle(lambda: False, timeout=0)
    assert len(alarms_of(posted, "ALM-12034")) == 1 and len(mails_of(mailed, "ALM-12034")) == 1

    # the source is back: a manual run commits a set and clears the alarm, on both channels
    folders["missing"].mkdir()
    (folders["missing"] / "oms.properties").write_text("port=20026\n")
    fixed = client.trigger(DAG_ID)
    done = client.wait(DAG_ID, fixed, timeout=180)
    assert done["state"] == "success", done
    settle(lambda: len(alarms_of(posted, "ALM-12034")) == 2 and len(mails_of(mailed, "ALM-12034")) == 2)
    raised, cleared = alarms_of(posted, "ALM-12034")
    assert cleared["status"] == "cleared" and (cleared["task"], cleared["source"]) == (TASK, "OMS")
    assert cleared["run_id"] == fixed and cleared["raised_by_run"] == run["dag_run_id"]
    assert cleared["set"].startswith("3.1.0_OMS_")
    assert mails_of(mailed, "ALM-12034")[1]["Subject"] == \
        f"metabackup CLEARED ALM-12034: Periodic backup failure ({TASK} OMS)"


def test_rpo_stale_alarm_from_the_watch_dag(client, rpo_spec, hook_sink, mail_sink):
    from metabackup import pipeline

    _, posted = hook_sink
    _, mailed = mail_sink
    alarm_id = "METABACKUP-RPO-STALE"
    for _ in range(2):  # stale twice: one alarm
        run_id = client.trigger("metabackup_watch")
        assert client.wait("metabackup_watch", run_id, timeout=120)["state"] == "success"
    settle(lambda: alarms_of(posted, alarm_id) and mails_of(mailed, alarm_id))
    [alarm] = alarms_of(posted, alarm_id)
    assert alarm["status"] == "raised" and alarm["title"] == "Recovery point objective missed"
    assert (alarm["task"], alarm["source"], alarm["state"]) == (RPO_TASK, "OMS", "stale")
    assert alarm["newest"] == rpo_spec["executed"].to_iso8601_string() and "stale after 2 h" in alarm["text"]
    [message] = mails_of(mailed, alarm_id)
    assert message["Subject"] == f"metabackup ALARM {alarm_id}: Recovery point objective missed ({RPO_TASK} OMS)"
    assert rpo_spec["executed"].to_iso8601_string() in mail_body(message)
    # the other task (no set yet, first run not overdue, or a fresh set) raised nothing
    assert {n["task"] for n in alarms_of(posted, alarm_id)} == {RPO_TASK}

    pipeline.backup(rpo_spec["spec"])  # a set taken now
    run_id = client.trigger("metabackup_watch")
    assert client.wait("metabackup_watch", run_id, timeout=120)["state"] == "success"
    settle(lambda: len(alarms_of(posted, alarm_id)) == 2 and len(mails_of(mailed, alarm_id)) == 2)
    raised, cleared = alarms_of(posted, alarm_id)
    assert cleared["status"] == "cleared" and cleared["state"] == "ok" and cleared["task"] == RPO_TASK
    assert len(mails_of(mailed, alarm_id)) == 2
    assert mails_of(mailed, alarm_id)[1]["Subject"].startswith(f"metabackup CLEARED {alarm_id}")
