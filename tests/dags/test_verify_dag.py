"""The verification DAG through Airflow: checksums of every set, a test restore, alerts."""

from __future__ import annotations

import json

import pendulum
import pytest

from conftest import cli_list_json, files_spec, mail_body
from metabackup.airflow.dag_factory import dags_for_dag_file
from metabackup.naming import MANIFEST_SUFFIX
from metabackup.verification import record_name
from conftest import task_states

pytestmark = pytest.mark.airflow

T0 = pendulum.datetime(2026, 11, 24, 3, tz="UTC")


def test_verification_rereads_sets_test_restores_and_alerts_on_corruption(airflow_project, tmp_path, monkeypatch, webhook,
                                                                          mailbox):
    src = tmp_path / "conf"
    src.mkdir()
    (src / "a.conf").write_text("a=1\n")
    spec = files_spec("verified", tmp_path, {"OMS": {"kind": "files", "paths": [str(src)],
                                                     "target": {"type": "LocalDir", "max_backups": 5}}})
    backup, _ = dags_for_dag_file(airflow_project.install(spec))
    for hour in (0, 1):
        (src / "a.conf").write_text(f"a={hour}\n")
        assert str(backup.test(run_after=T0.add(hours=hour)).state).endswith("success")
    # a verification DAG over a folder holding only this spec
    specs = tmp_path / "verify-specs"
    specs.mkdir()
    (specs / "verified.yaml").write_text((airflow_project.specs / "verified.yaml").read_text())
    dag_file = airflow_project.dags / "verify_for_test.py"
    dag_file.write_text("from metabackup.airflow.verify_dag import build_verify_dag\n"
                        f"dag = build_verify_dag({str(specs)!r}, __file__)\n")
    from metabackup.airflow.verify_dag import build_verify_dag

    dag = build_verify_dag(specs, dag_file)
    task_dir = tmp_path / "data" / "LocalBackup" / "verified_20261124100000"
    url, received = webhook
    monkeypatch.setenv("METABACKUP_ALERT_WEBHOOK", url)
    monkeypatch.setenv("METABACKUP_ALERT_EMAIL", "ops@example.com, oncall@example.com")

    dr = dag.test(run_after=T0.add(hours=2))
    assert str(dr.state).endswith("success"), task_states(dag.dag_id, dr.run_id)
    record = json.loads((task_dir / record_name("OMS")).read_text())
    assert sorted(record["sets"]) == ["3.1.0_OMS_20261124110000", "3.1.0_OMS_20261124120000"]
    assert all(v["ok"] for v in record["sets"].values())
    assert record["test_restore"]["ok"] and record["test_restore"]["set"] == "3.1.0_OMS_20261124120000"
    assert record["test_restore"]["checks"] == {"entries": 2}
    assert oct((task_dir / record_name("OMS")).stat().st_mode & 0o777) == "0o600"
    assert received == [] and mailbox == []
    assert [r["verification"]["ok"] for r in cli_list_json(specs / "verified.yaml")] == [True, True]

    archive = task_dir / "3.1.0_OMS_20261124110000.tar.gz"  # the full: the newest chain needs it too
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0xFF
    archive.write_bytes(bytes(data))
    dr = dag.test(run_after=T0.add(hours=3))
    assert not str(dr.state).endswith("success")
    states = task_states(dag.dag_id, dr.run_id)
    assert states["verified.OMS.checksums"] == "failed"
    assert states["verified.OMS.test_restore"] == "upstream_failed"
    record = json.loads((task_dir / record_name("OMS")).read_text())
    assert record["sets"]["3.1.0_OMS_20261124110000"]["ok"] is False
    assert "sha256" in record["sets"]["3.1.0_OMS_20261124110000"]["error"]
    assert record["sets"]["3.1.0_OMS_20261124120000"]["ok"] is True
    assert [(a["dag_id"], a["task_id"]) for a in received] == [("metabackup_verify", "verified.OMS.checksums")]
    assert "3.1.0_OMS_20261124110000" in received[0]["error"]
    [(recipients, message)] = mailbox
    assert sorted(recipients) == ["oncall@example.com", "ops@example.com"]
    assert message["Subject"] == "metabackup: metabackup_verify.verified.OMS.checksums failed"
    assert message["From"] == "airflow@example.com"
    assert "3.1.0_OMS_20261124110000" in mail_body(message) and "sha256" in mail_body(message)
    assert not any(n.endswith(MANIFEST_SUFFIX) and n.startswith(".") for n in (p.name for p in task_dir.iterdir()))


def test_each_alert_channel_is_tried_on_its_own(monkeypatch, mailbox, our_logs):
    """A webhook that is down does not stop the e-mail; the body is the payload, escaped."""
    from types import SimpleNamespace

    from harness import free_port
    from metabackup.airflow.notifier import MetabackupFailureNotifier

    dead = f"http://127.0.0.1:{free_port()}/alert"  # nobody listens there
    monkeypatch.setenv("METABACKUP_ALERT_WEBHOOK", dead)
    monkeypatch.setenv("METABACKUP_ALERT_EMAIL", "ops@example.com")
    monkeypatch.setenv("METABACKUP_ALERT_FROM", "metabackup@example.com")
    ti = SimpleNamespace(dag_id="backup_x", task_id="OMS.upload", run_id="manual__1", try_number=3, log_url=None)
    error = RuntimeError("disk full at <b>/srv</b> {{ not a template }}")
    MetabackupFailureNotifier().notify({"ti": ti, "exception": error})

    assert any(m.startswith(f"metabackup alert: POST to {dead} failed") for m in our_logs), our_logs
    [(recipients, message)] = mailbox
    assert recipients == ["ops@example.com"] and message["From"] == "metabackup@example.com"
    body = mail_body(message)
    assert "disk full at &lt;b&gt;/srv&lt;/b&gt; {{ not a template }}" in body and "<b>" not in body
    assert "alert e-mailed to ops@example.com" in our_logs
