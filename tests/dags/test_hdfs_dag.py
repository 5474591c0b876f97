"""LocalHDFS targets and the namenode source through Airflow, against the project's real HDFS."""

from __future__ import annotations

import hashlib
import json

import pendulum
import pytest

from conftest import files_spec
from harness import hdfs
from hdfs_helpers import WebHdfs
from metabackup.airflow.dag_factory import dags_for_dag_file
from metabackup.restore import restore_source
from metabackup.sources.files import iter_tree
from metabackup.spec import load_spec
from conftest import task_states
from test_backup_dag import asset_events

pytestmark = pytest.mark.airflow

T0 = pendulum.datetime(2026, 11, 24, 3, tz="UTC")


@pytest.fixture(scope="module")
def ha_cluster(tmp_path_factory):
    instance = hdfs.start(tmp_path_factory.mktemp("hdfs") / "ha", mode="ha")
    yield instance
    instance.stop()


def ok(dr) -> bool:
    return str(dr.state).endswith("success")


def test_hdfs_targets_full_incremental_retention_and_failover_between_runs(airflow_project, tmp_path, ha_cluster,
                                                                           monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_WEBHDFS_HACLUSTER", ha_cluster.connection_uri())
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "a.conf").write_text("a\n")
    spec_dict = files_spec("hdfsdag", tmp_path, {
        "OMS": {"kind": "files", "paths": [str(conf)],
                "target": {"type": "LocalHDFS", "path": "/backup/metadata", "max_backups": 2}},
        "NameNode": {"kind": "namenode", "fs_uri": ha_cluster.fs_uri, "tool_command": ha_cluster.namenode_tool_command(),
                     "target": {"type": "LocalDir", "max_backups": 5}},
    })
    backup, _ = dags_for_dag_file(airflow_project.install(spec_dict))
    spec = load_spec(airflow_project.specs / "hdfsdag.yaml")
    task_dir = "/backup/metadata/hdfsdag_20261124100000"
    captured = {}
    for hour in range(5):
        if hour == 2:
            hdfs.failover(ha_cluster, "nn2")  # between runs: the next run must find nn2 and go on
        (conf / f"run-{hour}.conf").write_text(f"{hour}\n")
        dr = backup.test(run_after=T0.add(hours=hour))
        assert ok(dr), task_states(backup.dag_id, dr.run_id)
        stamp = T0.add(hours=hour).in_timezone("Asia/Shanghai").format("YYYYMMDDHHmmss")
        captured[f"3.1.0_OMS_{stamp}"] = dict(iter_tree(conf))
    assert ha_cluster.active == "nn2"
    fs = WebHdfs(ha_cluster.webhdfs_url("nn2"))
    names = fs.names(task_dir)
    manifests = {n.removesuffix(".manifest.json"): json.loads(fs.read(f"{task_dir}/{n}"))
                 for n in names if n.endswith(".manifest.json")}
    # max_backups 2 with full_then_incremental: F I | F I | F; the oldest chain is gone, the kept
    # incremental still has its full.
    assert [m["type"] for m in manifests.values()] == ["full", "incremental", "full"], names
    stems = list(manifests)
    assert manifests[stems[1]]["parent"] == stems[0]
    assert sorted(names) == sorted([f"{s}.tar.gz" for s in stems] + [f"{s}.manifest.json" for s in stems])
    for stem, manifest in manifests.items():
        data = fs.read(f"{task_dir}/{stem}.tar.gz")
        assert hashlib.sha256(data).hexdigest() == manifest["archive"]["sha256"]
        assert fs.status(f"{task_dir}/{stem}.tar.gz")["permission"] == "600"
    assert fs.status(task_dir)["permission"] == "700"
    for stem in stems:
        dest = tmp_path / f"restore-{stem}"
        restore_source(spec, "OMS", dest, stem)
        assert dict(iter_tree(dest / str(conf).lstrip("/"))) == captured[stem]
    events = [e for e in asset_events(backup.dag_id) if e["source"] == "OMS"]
    assert events[-1]["location"].startswith("hdfs://hacluster/backup/metadata/hdfsdag_20261124100000/")
    # the NameNode chain survived the failover too: full, then incrementals across it
    nn_types = [json.loads(p.read_text())["type"]
                for p in sorted((tmp_path / "data" / "LocalBackup" / "hdfsdag_20261124100000").glob("*NameNode*.manifest.json"))]
    assert nn_types == ["full", "incremental", "incremental", "incremental", "incremental"]
