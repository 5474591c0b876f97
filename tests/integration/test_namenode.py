"""The namenode source kind against a real HDFS (the project's minicluster harness)."""

from __future__ import annotations

from dataclasses import replace

import pendulum
import pytest
import yaml

from conftest import backup_once
from harness import hdfs
from hdfs_helpers import WebHdfs
from metabackup import pipeline
from metabackup.restore import restore_source, validate_restore, plan_restore
from metabackup.sources import RestoreError
from metabackup.spec import load_spec

T0 = pendulum.datetime(2026, 11, 24, 3, tz="UTC")


def make_spec(tmp_path, instance, name="nn", **options):
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({
        "name": name, "created": "2026-11-24T00:00:00Z", "cluster_version": "3.4.2", "type": "manual",
        "data_path": str(tmp_path / "data"),
        "sources": {"NameNode": {"kind": "namenode", "fs_uri": instance.fs_uri,
                                 "tool_command": instance.namenode_tool_command(), **options,
                                 "target": {"type": "LocalDir", "max_backups": 10}}}}))
    return load_spec(path)


def backup(spec, hour: int) -> dict:
    return backup_once(spec, "NameNode", T0.add(hours=hour))


def restored_tree(name_dir, workdir) -> dict:
    namenode = hdfs.start_namenode_on(name_dir, workdir)
    try:
        return WebHdfs(namenode.webhdfs_url()).tree("/")
    finally:
        namenode.stop()


def test_namespace_round_trip_through_full_and_incrementals(tmp_path, hdfs_connected):
    fs = WebHdfs(hdfs_connected.webhdfs_url())
    fs.mkdirs("/rt/apps/conf")
    fs.write("/rt/apps/conf/site.xml", b"<configuration/>\n")
    fs.write("/rt/apps/data.bin", b"x" * 5000, permission="600")
    spec = make_spec(tmp_path, hdfs_connected)
    expected, sets = [], []
    first = backup(spec, 0)
    assert first["type"] == "full"
    pos = first["manifest"].position
    assert pos["image_txid"] >= 0 and pos["end_txid"] > pos["image_txid"] and pos["cluster_id"]
    expected.append(fs.tree("/"))
    sets.append(first)

    fs.rename("/rt/apps/data.bin", "/rt/apps/conf/data-moved.bin")   # rename a file
    fs.mkdirs("/rt/new/deeper", permission="700")                      # new directories
    fs.write("/rt/new/deeper/f.txt", b"hello")
    fs.delete("/rt/apps/conf/site.xml")                                 # delete a file
    second = backup(spec, 1)
    assert second["type"] == "incremental" and second["parent"] == first["stem"]
    assert second["manifest"].position["start_txid"] == pos["end_txid"] + 1
    expected.append(fs.tree("/"))
    sets.append(second)

    fs.delete("/rt/new")                                                # delete a directory tree
    fs.rename("/rt/apps", "/rt/apps2")                                  # rename a directory
    third = backup(spec, 2)
    assert third["type"] == "incremental"
    expected.append(fs.tree("/"))
    sets.append(third)
    assert len({tuple(sorted(t)) for t in expected}) == 3, "each set saw a different namespace"

    for number, (made, tree) in enumerate(zip(sets, expected)):
        dest = tmp_path / f"restored-{number}"
        result = restore_source(spec, "NameNode", dest, made["stem"])
        assert result["last_txid"] == made["manifest"].position["end_txid"]
        assert (dest / "current" / "VERSION").stat().st_mode & 0o777 == 0o600
        validate_restore(plan_restore(spec, "NameNode", made["stem"]), str(dest))
        assert restored_tree(dest, tmp_path / f"check-{number}") == tree, f"set {made['stem']}"


def test_a_gap_in_the_edit_log_or_a_reformatted_namespace_forces_a_full(tmp_path, hdfs_connected):
    spec = make_spec(tmp_path, hdfs_connected, name="gap")
    first = backup(spec, 0)
    kind = pipeline.SetRun.of(spec, "NameNode", T0).kind
    assert kind.incremental_blocker(first["manifest"]) is None
    other = replace(first["manifest"], position={**first["manifest"].position, "namespace_id": 1})
    assert "reformatted" in kind.incremental_blocker(other)
    # a parent older than the oldest segment the NameNode keeps (txid 1 is the first ever)
    purged = replace(first["manifest"], position={**first["manifest"].position, "end_txid": -5})
    assert "was purged" in kind.incremental_blocker(purged)


def test_restore_refuses_a_non_empty_directory(tmp_path, hdfs_connected):
    spec = make_spec(tmp_path, hdfs_connected, name="busy")
    backup(spec, 0)
    dest = tmp_path / "busy-dest"
    dest.mkdir()
    (dest / "something").write_text("x")
    with pytest.raises(RestoreError, match="not empty"):
        restore_source(spec, "NameNode", dest)


def test_an_unreachable_namenode_fails_preflight_naming_it(tmp_path, monkeypatch, hdfs_connected):
    monkeypatch.setenv("AIRFLOW_CONN_WEBHDFS_HACLUSTER", '{"conn_type": "webhdfs", "host": "127.0.0.1:9", "login": "root"}')
    spec = make_spec(tmp_path, hdfs_connected, name="down")
    with pytest.raises(pipeline.PreflightError, match="NameNode: .*no active NameNode"):
        pipeline.preflight(spec, ["NameNode"])
