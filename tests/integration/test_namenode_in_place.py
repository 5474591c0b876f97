"""The namenode kind restored in place over a running HDFS (the project's minicluster harness):
the NameNode is stopped and started through the harness's service commands, the DataNode keeps
running inside the launcher the whole time."""

from __future__ import annotations

import getpass
import json
import os
import time
from pathlib import Path

import pendulum
import pytest
import requests
import yaml

from conftest import backup_once
from harness import hdfs
from hdfs_helpers import WebHdfs, read_soon
from metabackup.errors import RestoreError
from metabackup.inplace import restore_in_place
from metabackup.restore import verified_plan
from metabackup.spec import load_spec

T0 = pendulum.datetime(2026, 11, 28, 3, tz="UTC")


def make_spec(tmp_path, instance, name, data_dirs, timeout=120):
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({
        "name": name, "created": "2026-11-28T00:00:00Z", "cluster_version": "3.4.2", "type": "manual",
        "data_path": str(tmp_path / f"data-{name}"),
        "sources": {"NameNode": {
            "kind": "namenode", "fs_uri": instance.fs_uri, "tool_command": instance.namenode_tool_command(),
            "target": {"type": "LocalDir", "max_backups": 10},
            "service": {**hdfs.service_argv(instance.directory), "data_dirs": list(data_dirs),
                        "owner": getpass.getuser(), "timeout": timeout}}}}))
    return load_spec(path)


def datanodes(instance) -> dict[str, str]:
    """The live DataNodes the active NameNode knows: name -> transfer address (an ephemeral port,
    new if the DataNode had been restarted)."""
    beans = requests.get(f"{instance.webhdfs_url()}/jmx", params={"qry": "Hadoop:service=NameNode,name=NameNodeInfo"},
                         timeout=10).json()["beans"]
    return {name: node["xferaddr"] for name, node in json.loads(beans[0]["LiveNodes"]).items()}


def block_files(instance) -> set[str]:
    return {p.name for p in (Path(instance.directory) / "data").glob("data*/**/blk_*") if not p.name.endswith(".meta")}


def stamp() -> str:
    return pendulum.now("UTC").format("YYYYMMDDHHmmss")


def test_single_namenode_in_place_serves_the_backed_up_namespace(tmp_path, hdfs_connected):
    instance = hdfs_connected
    fs = WebHdfs(instance.webhdfs_url())
    fs.mkdirs("/ip/keep/conf")
    fs.write("/ip/keep/data.bin", b"d" * 5000)
    fs.write("/ip/keep/conf/site.xml", b"<configuration/>\n", permission="600")
    fs.write("/ip/empty.txt", b"")
    name_dirs = instance.namenode().name_dirs
    spec = make_spec(tmp_path, instance, "nnip", name_dirs)
    made = backup_once(spec, "NameNode", T0)
    expected = fs.tree("/")
    end_txid = made["manifest"].position["end_txid"]

    # the namespace moves on: new files and directories, a rename, a deleted (empty) file
    fs.write("/ip/later.bin", b"L" * 3000)
    fs.mkdirs("/ip/later/deeper")
    fs.rename("/ip/keep/conf/site.xml", "/ip/site-moved.xml")
    fs.delete("/ip/empty.txt")
    changed = fs.tree("/")
    assert changed != expected
    nodes = datanodes(instance)
    assert nodes

    when = stamp()
    result = restore_in_place(verified_plan(spec, "NameNode"), when)

    assert fs.tree("/") == expected
    assert read_soon(fs, "/ip/keep/data.bin") == b"d" * 5000  # its blocks, from the DataNode that kept running
    assert datanodes(instance) == nodes, "the DataNode was restarted or replaced"
    assert hdfs.process_alive(instance.pid)
    assert result["downtime_s"] > 0 and result["rebuild_s"] >= 0
    validation = result["validation"]
    assert validation["safe_mode"] == "off" and validation["segment_from"] == end_txid + 1
    assert validation["namespace_id"] == made["manifest"].position["namespace_id"]
    assert sorted(validation["segment_in"]) == sorted(name_dirs)
    for live in name_dirs:
        previous = Path(f"{live}.pre-restore-{when}")
        assert previous.is_dir(), f"{previous} was not kept"
        assert int((previous / "current" / "seen_txid").read_text()) > end_txid  # the namespace as it was
        assert not Path(f"{live}.failed-restore-{when}").exists()


@pytest.fixture()
def fresh_hdfs(tmp_path, monkeypatch):
    """A single-NameNode HDFS of this test's own: after an in-place restore the DataNode still holds
    the blocks of files created after the set (see the report), which later writes collide with."""
    instance = hdfs.start(tmp_path / "hdfs")
    monkeypatch.setenv("AIRFLOW_CONN_WEBHDFS_HACLUSTER", instance.connection_uri())
    yield instance
    instance.stop()


def test_a_validation_failure_rolls_back_to_the_namespace_served_before(tmp_path, fresh_hdfs):
    """A set that names blocks the DataNode no longer has: the restored NameNode stays in safe mode,
    the validation fails, and the previous name directories are put back and served."""
    instance = fresh_hdfs
    fs = WebHdfs(instance.webhdfs_url())
    fs.mkdirs("/rb/doomed")
    for number in range(3):  # safe mode waits for all blocks but one (of fewer than 1000)
        fs.write(f"/rb/doomed/{number}.bin", b"x" * 4000)
    fs.write("/rb/stays.txt", b"stays")
    name_dirs = instance.namenode().name_dirs
    spec = make_spec(tmp_path, instance, "nnrb", name_dirs, timeout=30)
    backup_once(spec, "NameNode", T0)

    blocks = block_files(instance)
    fs.delete("/rb/doomed")  # their blocks are deleted on the DataNode
    deadline = time.monotonic() + 60
    while len(block_files(instance)) > len(blocks) - 3:
        assert time.monotonic() < deadline, "the DataNode kept the deleted file's block"
        time.sleep(0.5)
    fs.mkdirs("/rb/newer")
    before = fs.tree("/")
    nodes = datanodes(instance)

    when = stamp()
    with pytest.raises(RestoreError, match=r"failed at step validate: .*safe mode.*Rolled back") as failure:
        restore_in_place(verified_plan(spec, "NameNode"), when)
    assert "the service runs and answers as before" in str(failure.value)

    assert fs.tree("/") == before
    assert fs.read("/rb/stays.txt") == b"stays"
    assert datanodes(instance) == nodes
    for live in name_dirs:
        assert Path(f"{live}.failed-restore-{when}").is_dir()  # the restored copy, moved aside
        assert not os.path.lexists(f"{live}.pre-restore-{when}")  # swapped back into place
    fs.write("/rb/after-rollback.txt", b"ok")
    assert fs.read("/rb/after-rollback.txt") == b"ok"


@pytest.fixture()
def ha_hdfs(tmp_path, monkeypatch):
    """An HA pair (nn1 active, nn2 standby, a shared edits directory) and one DataNode."""
    instance = hdfs.start(tmp_path / "ha", "ha")
    monkeypatch.setenv("AIRFLOW_CONN_WEBHDFS_HACLUSTER", instance.connection_uri())
    yield instance
    instance.stop()


def test_ha_pair_in_place_both_name_dirs_and_the_shared_edits(tmp_path, ha_hdfs):
    """Both NameNodes' name directories get the set; the shared edits directory gets its edits
    alone (as -initializeSharedEdits would), so neither NameNode replays the transactions made
    after the set; nn1 comes back active, nn2 standby, and after a failover nn2 serves the same."""
    instance = ha_hdfs
    fs = WebHdfs(instance.webhdfs_url())
    fs.mkdirs("/ha/keep")
    fs.write("/ha/keep/data.bin", b"h" * 6000)
    fs.write("/ha/empty.txt", b"")
    name_dirs = [d for n in instance.namenodes for d in n.name_dirs]
    shared = instance.shared_edits_dir
    assert shared and Path(shared).is_dir()
    spec = make_spec(tmp_path, instance, "nnha", [*name_dirs, shared])
    made = backup_once(spec, "NameNode", T0)
    expected = fs.tree("/")
    end_txid = made["manifest"].position["end_txid"]

    fs.mkdirs("/ha/later/deeper")
    fs.rename("/ha/keep/data.bin", "/ha/moved.bin")
    fs.delete("/ha/empty.txt")
    assert fs.tree("/") != expected
    nodes = datanodes(instance)

    when = stamp()
    result = restore_in_place(verified_plan(spec, "NameNode"), when)

    assert fs.tree("/") == expected
    # (file contents are not read: a harness DataNode cannot resolve the NameService for WebHDFS reads)
    assert datanodes(instance) == nodes
    validation = result["validation"]
    assert validation["active"] == instance.webhdfs_url("nn1")
    assert validation["standby"] == [instance.webhdfs_url("nn2")]
    assert validation["segment_from"] == end_txid + 1
    assert sorted(validation["segment_in"]) == sorted([*instance.namenode("nn1").name_dirs, shared])
    assert not any(p.name.startswith("fsimage") for p in (Path(shared) / "current").iterdir())
    for live in [*name_dirs, shared]:
        assert Path(f"{live}.pre-restore-{when}").is_dir()

    hdfs.failover(instance, "nn2")  # the standby tailed the restored shared edits
    assert WebHdfs(instance.webhdfs_url("nn2")).tree("/") == expected


def test_ha_pair_without_the_shared_edits_directory_is_caught_and_rolled_back(tmp_path, ha_hdfs):
    """Restoring the name directories alone: the NameNodes replay the later transactions from the
    shared edits; the validation sees the edit log not continuing at the set's end, rolls back."""
    instance = ha_hdfs
    fs = WebHdfs(instance.webhdfs_url())
    fs.mkdirs("/ha/keep")
    name_dirs = [d for n in instance.namenodes for d in n.name_dirs]
    spec = make_spec(tmp_path, instance, "nnhax", name_dirs)
    made = backup_once(spec, "NameNode", T0)
    fs.mkdirs("/ha/later")
    before = fs.tree("/")
    last = made["manifest"].position["end_txid"]

    when = stamp()
    with pytest.raises(RestoreError, match=rf"failed at step validate: .*no edit-log segment starting at txid "
                                           rf"{last + 1}.*Rolled back") as failure:
        restore_in_place(verified_plan(spec, "NameNode"), when)
    assert "the service runs and answers as before" in str(failure.value)
    assert fs.tree("/") == before and "/ha/later" in before
    for live in name_dirs:
        assert Path(f"{live}.failed-restore-{when}").is_dir()
        assert not os.path.lexists(f"{live}.pre-restore-{when}")
