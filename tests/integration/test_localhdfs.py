"""The LocalHDFS target against the project's real HDFS: failures, retries, quotas, atomicity."""

from __future__ import annotations

import pendulum
import pytest
import yaml

from conftest import backup_once, cli_list_json, staged_run
from harness import hdfs
from hdfs_helpers import WebHdfs
from metabackup import pipeline
from metabackup.naming import temp_name
from metabackup.spec import load_spec
from metabackup.targets import TargetError

T0 = pendulum.datetime(2026, 11, 24, 3, tz="UTC")


def make_spec(tmp_path, name: str, path: str = "/backup/meta"):
    src = tmp_path / "conf"
    src.mkdir(exist_ok=True)
    (src / "big.bin").write_bytes(bytes(range(256)) * 4096)
    spec_path = tmp_path / f"{name}.yaml"
    spec_path.write_text(yaml.safe_dump({
        "name": name, "created": "2026-11-24T00:00:00Z", "cluster_version": "3.1.0", "type": "manual",
        "data_path": str(tmp_path / "data"),
        "sources": {"OMS": {"kind": "files", "paths": [str(src)],
                            "target": {"type": "LocalHDFS", "path": path, "max_backups": 3}}}}))
    return load_spec(spec_path)


def test_a_namenode_stopped_mid_run_fails_clearly_and_the_retry_leaves_no_partial_or_duplicate(tmp_path, hdfs_connected):
    spec = make_spec(tmp_path, "midrun")
    run = staged_run(spec, "OMS", T0)
    task_dir = f"/backup/meta/{run.task_dir}"
    fs = WebHdfs(hdfs_connected.webhdfs_url())
    # a writer killed earlier left a partial behind
    fs.write(f"{task_dir}/{temp_name(run.name.archive, 'dead01')}", b"half an archive")
    hdfs.stop_namenode(hdfs_connected, "nn1")
    try:
        with pytest.raises(TargetError) as failure:
            pipeline.upload(run)
        assert "hdfs://hacluster/backup/meta" in str(failure.value)
        assert "NameNode" in str(failure.value) or "failed" in str(failure.value)
    finally:
        hdfs.restart_namenode(hdfs_connected, "nn1")
    # Airflow's retry runs the same step again
    assert pipeline.upload(run)["uploaded"] is True
    pipeline.verify(run)
    pipeline.retention(run)
    assert fs.names(task_dir) == sorted([run.name.archive, run.name.manifest])
    # and once more (a retry after the commit) changes nothing
    assert pipeline.upload(run) == {"uploaded": False, "archive": run.name.archive}
    assert fs.names(task_dir) == sorted([run.name.archive, run.name.manifest])


def test_put_is_atomic_and_replaces_an_uncommitted_copy(tmp_path, hdfs_connected):
    spec = make_spec(tmp_path, "atomic")
    target = spec.source("OMS").target.open()
    target.ensure_writable("t1")
    local = tmp_path / "f.bin"
    local.write_bytes(b"first")
    target.put_file(local, "t1", "x.tar.gz")
    local.write_bytes(b"second version")
    target.put_file(local, "t1", "x.tar.gz")
    with target.open_read("t1", "x.tar.gz") as handle:
        assert handle.read() == b"second version"
    assert target.list_names("t1") == ["x.tar.gz"]
    target.delete("t1", "x.tar.gz")
    assert target.list_names("t1") == []


def test_a_space_quota_too_small_for_the_last_full_fails_preflight(tmp_path, hdfs_connected):
    spec = make_spec(tmp_path, "quota", path="/quota/meta")
    run = pipeline.SetRun.of(spec, "OMS", T0)
    pipeline.preflight(spec, ["OMS"])
    pipeline.decide(run)
    for step in (pipeline.snapshot, pipeline.archive, pipeline.upload, pipeline.verify):
        step(run)
    import subprocess

    done = subprocess.run([hdfs_connected.hdfs_command(), "dfsadmin", "-setSpaceQuota", "1000", "/quota"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    with pytest.raises(pipeline.PreflightError, match=r"hdfs://hacluster/quota/meta has \d+ bytes free, a full backup needs about"):
        pipeline.preflight(spec, ["OMS"])


def test_an_undefined_connection_names_it(tmp_path, monkeypatch, hdfs_connected):
    monkeypatch.delenv("AIRFLOW_CONN_WEBHDFS_HACLUSTER")
    spec = make_spec(tmp_path, "noconn")
    with pytest.raises(pipeline.PreflightError, match="connection 'webhdfs_hacluster'"):
        pipeline.preflight(spec, ["OMS"])


def test_the_cli_prints_clean_json_for_a_localhdfs_target(tmp_path, hdfs_connected):
    """Airflow's logging (set up when the hdfs provider is imported) must not reach the CLI's stdout."""
    spec = make_spec(tmp_path, "clijson")
    made = backup_once(spec, "OMS", T0)
    rows = cli_list_json(spec.path)
    assert [(r["source"], r["set"], r["type"]) for r in rows] == [("OMS", made["stem"], "full")]
    assert rows[0]["path"].startswith("hdfs://hacluster/backup/meta/clijson_")
