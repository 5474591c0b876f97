"""The RemoteHDFS target against a real second HA pair, the NameService haclusterX (the project's
harness): a failover mid-upload, a backup and restore through the core, the bandwidth cap, preflight."""

from __future__ import annotations

import hashlib
import os
import subprocess
import threading
import time

import pendulum
import pytest

from conftest import backup_once, files_spec, write_spec
from harness import hdfs
from hdfs_helpers import WebHdfs
from metabackup import pipeline
from metabackup.naming import is_temp_name
from metabackup.restore import restore_source
from metabackup.sources.files import iter_tree
from metabackup.targets.remotehdfs import CHUNK, MIB, RemoteHDFSConfig

NAMESERVICE = "haclusterX"
T0 = pendulum.datetime(2026, 11, 24, 3, tz="UTC")
TD = "dr_20261124000000"
NAME = "3.1.0_OMS_20261124110000.tar.gz"


@pytest.fixture(scope="module")
def remote(tmp_path_factory):
    """The second cluster, an HA pair nn1 (active) / nn2 under the NameService haclusterX, as the
    Airflow connection webhdfs_haclusterX (both NameNodes in its host) while this module runs."""
    instance = hdfs.start(tmp_path_factory.mktemp("hdfs") / "remote", mode="ha", nameservice=NAMESERVICE)
    try:
        with pytest.MonkeyPatch.context() as environment:
            environment.setenv("AIRFLOW_CONN_WEBHDFS_HACLUSTERX", instance.connection_uri())
            yield instance
    finally:
        instance.stop()


def target_config(path: str, **settings) -> RemoteHDFSConfig:
    return RemoteHDFSConfig(type="RemoteHDFS", path=path, nameservice=NAMESERVICE, **settings)


def random_file(path, mib: int) -> str:
    """``mib`` MiB of random bytes at ``path``; their SHA-256."""
    digest = hashlib.sha256()
    with open(path, "wb") as handle:
        for _ in range(mib):
            block = os.urandom(MIB)
            digest.update(block)
            handle.write(block)
    return digest.hexdigest()


def test_a_failover_mid_upload_commits_the_file_once_and_complete(tmp_path, remote, our_logs):
    big = tmp_path / "big.bin"
    expected = random_file(big, 24)
    target = target_config("/dr/failover", bandwidth_mb_s=8).open()  # ~3 s an attempt: time to fail over
    target.ensure_writable(TD)
    directory = f"/dr/failover/{TD}"
    commits = []
    rename_over = target._rename_over
    target._rename_over = lambda source, destination: (commits.append((source, destination)),
                                                       rename_over(source, destination))
    old, new = remote.active, "nn2" if remote.active == "nn1" else "nn1"
    at_old = WebHdfs(remote.webhdfs_url(old))
    seen: list[str] = []

    def fail_over_once_the_upload_runs():
        deadline = time.monotonic() + 60
        while not seen and time.monotonic() < deadline:
            seen.extend(n for n in at_old.names(directory) if is_temp_name(n))
            time.sleep(0.05)
        if seen:
            hdfs.failover(remote, new)      # the active NameNode becomes the standby, the standby active
            hdfs.stop_namenode(remote, old)  # and the old active goes away altogether

    watcher = threading.Thread(target=fail_over_once_the_upload_runs)
    watcher.start()
    try:
        target.put_file(big, TD, NAME)
        watcher.join()
        assert seen, "inconclusive: no partial showed at the active NameNode during the upload"
        assert remote.active == new
        retries = [m for m in our_logs if "uploading the file again from the start" in m]
        assert retries, "inconclusive: the failover did not cut the upload (nothing was uploaded again)"
        fs = WebHdfs(remote.webhdfs_url(new))
        assert fs.names(directory) == [NAME], "committed, no partial of either attempt left visible"
        assert len(commits) == 1 and commits[0][1] == f"{directory}/{NAME}", "committed once"
        assert seen[0] not in commits[0][0], "the new attempt wrote under a fresh partial name"
        assert hashlib.sha256(fs.read(f"{directory}/{NAME}")).hexdigest() == expected
        assert fs.status(f"{directory}/{NAME}")["permission"] == "600"
    finally:
        watcher.join()
        hdfs.restart_namenode(remote, old)  # back, as the standby


def test_a_files_source_backed_up_to_remotehdfs_restores_equal(tmp_path, remote):
    conf = tmp_path / "conf"
    (conf / "sub").mkdir(parents=True)
    (conf / "a.conf").write_text("a=1\n")
    (conf / "sub" / "b.xml").write_bytes(os.urandom(300_000))
    spec = write_spec(tmp_path, files_spec("drfiles", tmp_path, {"OMS": {
        "kind": "files", "paths": [str(conf)],
        "target": {"type": "RemoteHDFS", "nameservice": NAMESERVICE, "path": "/dr/meta", "bandwidth_mb_s": 50}}}))
    made, captured = [], []
    for hour in range(2):
        made.append(backup_once(spec, "OMS", T0.add(hours=hour)))
        captured.append(dict(iter_tree(conf)))
        (conf / "a.conf").write_text(f"a={hour + 2}\n")
        (conf / f"new-{hour}.conf").write_text("new\n")
    assert [m["type"] for m in made] == ["full", "incremental"]
    fs = WebHdfs(remote.webhdfs_url())
    task_dir = f"/dr/meta/{spec.task_dir}"
    assert spec.source("OMS").target.uri(spec.task_dir) == f"hdfs://{NAMESERVICE}{task_dir}"
    assert sorted(fs.names(task_dir)) == sorted(n for m in made for n in (f"{m['stem']}.tar.gz",
                                                                          f"{m['stem']}.manifest.json"))
    for number, (backup, tree) in enumerate(zip(made, captured)):
        dest = tmp_path / f"restored-{number}"
        assert restore_source(spec, "OMS", dest, backup["stem"])["set"] == backup["stem"]
        assert dict(iter_tree(dest / str(conf).lstrip("/"))) == tree


def test_the_bandwidth_cap_holds_the_upload_to_its_rate(tmp_path, remote):
    mib, cap = 6, 2
    local = tmp_path / "six.bin"
    expected = random_file(local, mib)
    target = target_config("/dr/paced", bandwidth_mb_s=cap).open()
    target.ensure_writable(TD)
    started = time.monotonic()
    target.put_file(local, TD, NAME)
    elapsed = time.monotonic() - started
    least = (mib * MIB - CHUNK) / (cap * MIB)  # the bucket's burst (one chunk) goes at once
    assert elapsed >= least, f"{mib} MiB at {cap} MB/s took {elapsed:.2f} s, under {least:.2f} s"
    with target.open_read(TD, NAME) as handle:
        assert hashlib.sha256(handle.read()).hexdigest() == expected


def test_preflight_checks_reach_write_space_and_quotas_on_the_remote_cluster(tmp_path, remote, monkeypatch):
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "big.bin").write_bytes(os.urandom(200_000))
    spec = write_spec(tmp_path, files_spec("drquota", tmp_path, {"OMS": {
        "kind": "files", "paths": [str(conf)],
        "target": {"type": "RemoteHDFS", "nameservice": NAMESERVICE, "path": "/drquota/meta"}}}))
    target = spec.source("OMS").target.open()
    free = target.free_bytes()
    assert isinstance(free, int) and free > 0
    backup_once(spec, "OMS", T0)
    done = subprocess.run([remote.hdfs_command(), "dfsadmin", "-setSpaceQuota", "1000", "/drquota"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    with pytest.raises(pipeline.PreflightError,
                       match=rf"hdfs://{NAMESERVICE}/drquota/meta has \d+ bytes free, a full backup needs about"):
        pipeline.preflight(spec, ["OMS"])
    monkeypatch.delenv("AIRFLOW_CONN_WEBHDFS_HACLUSTERX")
    with pytest.raises(pipeline.PreflightError, match=f"connection 'webhdfs_{NAMESERVICE}'"):
        pipeline.preflight(spec, ["OMS"])
