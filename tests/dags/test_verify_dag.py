"""The verification DAG through Airflow: checksums of every set, a test restore, alerts."""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading

import pendulum
import pytest

from conftest import REPO, files_spec
from metabackup.airflow.dag_factory import dags_for_dag_file
from metabackup.naming import MANIFEST_SUFFIX
from metabackup.verification import record_name
from test_backup_dag import task_states

pytestmark = pytest.mark.airflow

T0 = pendulum.datetime(2026, 11, 24, 3, tz="UTC")


@pytest.fixture()
def webhook():
    received = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's naming
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/alert", received
    server.shutdown()


def test_verification_rereads_sets_test_restores_and_alerts_on_corruption(airflow_project, tmp_path, monkeypatch, webhook):
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

    dr = dag.test(run_after=T0.add(hours=2))
    assert str(dr.state).endswith("success"), task_states(dag.dag_id, dr.run_id)
    record = json.loads((task_dir / record_name("OMS")).read_text())
    assert sorted(record["sets"]) == ["3.1.0_OMS_20261124110000", "3.1.0_OMS_20261124120000"]
    assert all(v["ok"] for v in record["sets"].values())
    assert record["test_restore"]["ok"] and record["test_restore"]["set"] == "3.1.0_OMS_20261124120000"
    assert record["test_restore"]["checks"] == {"entries": 2}
    assert oct((task_dir / record_name("OMS")).stat().st_mode & 0o777) == "0o600"
    assert received == []
    listed = subprocess.run([sys.executable, "-m", "metabackup", "list", "--spec", str(specs / "verified.yaml"), "--json"],
                            capture_output=True, text=True, check=True, env={**os.environ, "PYTHONPATH": str(REPO / "plugins")})
    assert [r["verification"]["ok"] for r in json.loads(listed.stdout)] == [True, True]

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
    assert not any(n.endswith(MANIFEST_SUFFIX) and n.startswith(".") for n in (p.name for p in task_dir.iterdir()))
