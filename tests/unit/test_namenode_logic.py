"""NameNode source logic that needs no HDFS: spec options, segment selection, the name directory."""

from __future__ import annotations

import pytest
import yaml

from metabackup.hdfs import NameNodeAddress, parse_namenodes
from metabackup.sources.namenode import (
    NameNodeSourceError, Segment, edits_name, image_name, segments_covering, version_file,
)
from metabackup.spec import SpecError, load_spec


def write(tmp_path, options: dict, target: dict | None = None):
    path = tmp_path / "nn.yaml"
    path.write_text(yaml.safe_dump({
        "name": "nn", "created": "2026-11-24T00:00:00Z", "cluster_version": "3.1.0", "type": "manual",
        "sources": {"NameNode": {"kind": "namenode", **options,
                                 "target": target or {"type": "LocalHDFS", "path": "/backup/meta",
                                                      "nameservice": "backupcluster"}}}}))
    return path


def test_namenode_defaults_follow_the_nameservice(tmp_path):
    spec = load_spec(write(tmp_path, {}))
    source = spec.source("NameNode")
    assert source.options.model_dump() == {"nameservice": "hacluster", "conn_id": "webhdfs_hacluster", "fs_uri": "hdfs://hacluster",
                              "tool_command": "hadoop metabackup.hdfs.NameNodeTool", "timeout": 600}
    assert source.target.webhdfs_conn_id == "webhdfs_backupcluster"
    spec = load_spec(write(tmp_path, {"nameservice": "ns2"}, {"type": "LocalHDFS", "path": "/b", "nameservice": "ns3",
                                                              "conn_id": "hdfs_backup"}))
    assert spec.source("NameNode").options.fs_uri == "hdfs://ns2"
    assert spec.source("NameNode").target.webhdfs_conn_id == "hdfs_backup"


@pytest.mark.parametrize("where", ["target", "copies"])
def test_namenode_backups_never_go_into_their_own_nameservice(tmp_path, where):
    own = {"type": "LocalHDFS", "path": "/backup/meta"}  # NameService hacluster, the source's too
    body = {"target": own} if where == "target" else {"target": {"type": "LocalDir"}, "copies": [own]}
    path = tmp_path / "nn.yaml"
    path.write_text(yaml.safe_dump({"name": "nn", "created": "2026-11-24T00:00:00Z", "cluster_version": "3.1.0",
                                    "type": "manual", "sources": {"NameNode": {"kind": "namenode", **body}}}))
    with pytest.raises(SpecError) as err:
        load_spec(path)
    (file, fld, reason), = err.value.problems
    assert fld == ("sources.NameNode.target" if where == "target" else "sources.NameNode.copies[0]")
    assert "NameService hacluster whose NameNode this source backs up" in reason and "LocalDir" in reason


@pytest.mark.parametrize(("options", "field", "reason"), [
    ({"nameservice": "bad/ns"}, "sources.NameNode.nameservice", "not a valid NameService"),
    ({"fs_uri": "http://nn:9870"}, "sources.NameNode.fs_uri", "must be hdfs://"),
    ({"tool_command": "  "}, "sources.NameNode.tool_command", "must be a command line"),
    ({"timeout": 1}, "sources.NameNode.timeout", "between 10 and 86400"),
    ({"conn_id": "bad id"}, "sources.NameNode.conn_id", "not a valid Airflow connection id"),
    ({"image_dir": "/x"}, "sources.NameNode.image_dir", "unknown field"),
])
def test_bad_namenode_options_name_the_field(tmp_path, options, field, reason):
    path = write(tmp_path, options)
    with pytest.raises(SpecError) as err:
        load_spec(path)
    assert any(f == field and reason in r and file == str(path) for file, f, r in err.value.problems), err.value.problems


def test_bad_hdfs_target_connection_id(tmp_path):
    with pytest.raises(SpecError) as err:
        load_spec(write(tmp_path, {}, {"type": "LocalHDFS", "path": "/b", "conn_id": "no spaces", "nameservice": "b"}))
    assert [f for _, f, _ in err.value.problems] == ["sources.NameNode.target.conn_id"]


def logs(*ranges, in_progress=None):
    found = [{"start": a, "end": b, "inProgress": False} for a, b in ranges]
    if in_progress:
        found.append({"start": in_progress, "end": -12345, "inProgress": True})
    return found


def test_segments_covering_picks_the_contiguous_run():
    chosen = segments_covering(logs((1, 2), (3, 10), (11, 11), (12, 20), in_progress=21), 3, 20)
    assert chosen == [Segment(3, 10), Segment(11, 11), Segment(12, 20)]
    # an image taken in the middle of a segment: the segment holding the first txid is included
    assert segments_covering(logs((1, 9), (10, 20)), 5, 20) == [Segment(1, 9), Segment(10, 20)]


@pytest.mark.parametrize(("available", "first", "last", "message"), [
    (logs((8, 20)), 5, 20, "first segment available starts at txid 8"),
    (logs((1, 4), (6, 20)), 1, 20, "gap between"),
    (logs((1, 10)), 1, 20, "ends at txid 10, before 20"),
    (logs(in_progress=5), 5, 20, "no finalized edit-log segment"),
])
def test_segments_covering_refuses_gaps(available, first, last, message):
    with pytest.raises(NameNodeSourceError, match=message):
        segments_covering(available, first, last)


def test_file_names_and_version_file():
    assert image_name(42) == "fsimage_0000000000000000042"
    assert edits_name(1, 2) == "edits_0000000000000000001-0000000000000000002"
    text = version_file({"namespace_id": 7, "cluster_id": "CID-x", "ctime": 0, "block_pool_id": "BP-1",
                         "layout_version": -66})
    lines = dict(line.split("=", 1) for line in text.splitlines() if not line.startswith("#"))
    assert lines == {"namespaceID": "7", "clusterID": "CID-x", "cTime": "0", "storageType": "NAME_NODE",
                     "blockpoolID": "BP-1", "layoutVersion": "-66"}


def test_namenode_addresses_take_their_own_or_the_connection_port():
    assert parse_namenodes("a:1,b, c:3 ", 9870) == [NameNodeAddress("a", 1), NameNodeAddress("b", 9870),
                                                     NameNodeAddress("c", 3)]
    assert parse_namenodes("", 1) == []


class FakeResponse:
    def __init__(self, status: int, body: bytes = b"", name: str = ""):
        self.status_code, self.body = status, body
        self.headers = {"X-Image-Edits-Name": name, "Content-Length": str(len(body))} if status == 200 else {}
        self.text = "" if status == 200 else "GetImage failed. No edits file"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def iter_content(self, size):
        yield self.body


class FakeSession:
    """NameNode HTTP servers by base URL: which segment files each one holds."""

    def __init__(self, holdings: dict[str, dict[str, bytes]]):
        self.holdings, self.asked = holdings, []

    def get(self, url, **kwargs):
        base = url.split("/imagetransfer")[0]
        self.asked.append(base)
        start, end = (int(x.split("=")[1]) for x in url.split("&")[1:3])
        name = edits_name(start, end)
        data = self.holdings.get(base, {}).get(name)
        return FakeResponse(200, data, name) if data is not None else FakeResponse(410)


def test_a_segment_missing_on_the_active_namenode_is_fetched_from_another(tmp_path):
    from metabackup.sources.namenode import NameNodeSource
    from metabackup.sources.namenode import NameNodeOptions
    from metabackup.spec import Source
    from metabackup.targets.localdir import LocalDirConfig

    source = NameNodeSource(Source(name="NameNode", kind="namenode", options=NameNodeOptions(timeout=10),
                                   target=LocalDirConfig(type="LocalDir", path="/x", max_backups=1)))
    name = edits_name(1, 4)
    session = FakeSession({"http://old": {name: b"segment bytes"}})
    got = source._fetch_from_any(session, ["http://new", "http://old"], "getedit=1&startTxId=1&endTxId=4",
                                 tmp_path, expect=name)
    assert got["name"] == name and (tmp_path / name).read_bytes() == b"segment bytes"
    assert session.asked == ["http://new", "http://old"]
    with pytest.raises(NameNodeSourceError, match="no NameNode could send"):
        source._fetch_from_any(FakeSession({}), ["http://new", "http://old"], "getedit=1&startTxId=1&endTxId=4",
                               tmp_path, expect=name)


def test_the_tool_environment_keeps_hadoop_and_java_settings_and_drops_airflow_secrets(monkeypatch):
    from metabackup.sources.namenode import tool_env

    monkeypatch.setenv("AIRFLOW_CONN_SECRET", "postgres://user:conn-secret-value@db/x")
    monkeypatch.setenv("AIRFLOW_VAR_TOKEN", "variable-secret-value")
    monkeypatch.setenv("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "postgresql://airflow:db-secret-value@db/airflow")
    monkeypatch.setenv("HADOOP_CONF_DIR", "/etc/hadoop/conf")
    monkeypatch.setenv("JAVA_TOOL_OPTIONS", "-Xmx256m")
    env = tool_env()
    assert not [k for k in env if k.startswith("AIRFLOW")], env
    assert not [v for v in env.values() if "secret-value" in v]
    assert env["HADOOP_CONF_DIR"] == "/etc/hadoop/conf" and env["JAVA_TOOL_OPTIONS"] == "-Xmx256m" and env["PATH"]


def test_the_tool_runs_as_an_argv_without_a_shell_and_with_that_environment(tmp_path, monkeypatch):
    """A real child process (a Python one-liner standing in for the Hadoop tool) reports what it got."""
    import shlex
    import sys

    from metabackup.sources.namenode import NameNodeTool

    monkeypatch.setenv("AIRFLOW_CONN_SECRET", "postgres://user:conn-secret-value@db/x")
    monkeypatch.setenv("HADOOP_USER_NAME", "hdfs")
    marker = tmp_path / "shell-ran"
    report = "import json, os, sys; print(json.dumps({'argv': sys.argv[1:], 'env': dict(os.environ)}))"
    command = f"{shlex.quote(sys.executable)} -c {shlex.quote(report)} 'two words' ';touch {marker}' '$(touch {marker})'"
    tool = NameNodeTool(command, "hdfs://hacluster", 30)
    got = tool("info")
    assert got["argv"] == ["two words", f";touch {marker}", f"$(touch {marker})", "hdfs://hacluster", "info"]
    assert tool.argv("info")[-2:] == ["hdfs://hacluster", "info"]
    assert not marker.exists(), "no shell interpreted the command"
    assert "AIRFLOW_CONN_SECRET" not in got["env"] and got["env"]["HADOOP_USER_NAME"] == "hdfs"


def test_fetched_files_are_private_whatever_the_umask_and_absent_when_bad(tmp_path):
    import os

    from metabackup.sources.namenode import NameNodeSource
    from metabackup.sources.namenode import NameNodeOptions
    from metabackup.spec import Source
    from metabackup.targets.localdir import LocalDirConfig

    source = NameNodeSource(Source(name="NameNode", kind="namenode", options=NameNodeOptions(timeout=10),
                                   target=LocalDirConfig(type="LocalDir", path="/x", max_backups=1)))
    name = edits_name(1, 4)
    previous = os.umask(0o022)
    try:
        source._fetch(FakeSession({"http://nn": {name: b"segment bytes"}}), "http://nn",
                      "getedit=1&startTxId=1&endTxId=4", tmp_path, expect=name)
        short = FakeSession({"http://nn": {edits_name(5, 6): b"12345"}})
        short.get = lambda url, _get=short.get, **kw: _truncated(_get(url, **kw))
        with pytest.raises(NameNodeSourceError, match="received 3 bytes of 5"):
            source._fetch(short, "http://nn", "getedit=1&startTxId=5&endTxId=6", tmp_path, expect=edits_name(5, 6))
    finally:
        os.umask(previous)
    assert {p.name: p.stat().st_mode & 0o777 for p in tmp_path.iterdir()} == {name: 0o600}


def _truncated(response):
    response.body = response.body[:3]  # the connection dropped: fewer bytes than Content-Length
    return response


def test_a_restored_name_directory_is_owner_only_whatever_the_umask(tmp_path):
    import hashlib
    import io
    import os
    import tarfile

    from metabackup.manifest import ArchiveInfo, Manifest
    from metabackup.sources.namenode import MEMBER_DIR, restore_name_dir

    position = {"cluster_id": "CID-1", "namespace_id": 7, "block_pool_id": "BP-1", "ctime": 0, "layout_version": -66,
                "image_txid": 2, "image_md5": hashlib.md5(b"image").hexdigest(), "start_txid": 3, "end_txid": 4,
                "segments": [edits_name(3, 4)]}
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w:gz") as tar:
        for member, data in ((image_name(2), b"image"), (edits_name(3, 4), b"edits")):
            info = tarfile.TarInfo(f"{MEMBER_DIR}/{member}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    manifest = Manifest(set="3.1.0_NameNode_20261124030000", task="nn", task_dir="nn_x", source="NameNode",
                        kind="namenode", type="full", parent=None, chain_root="3.1.0_NameNode_20261124030000",
                        cluster_version="3.1.0", executed_at="", started_at="", finished_at="",
                        archive=ArchiveInfo("a.tar.gz", 0, ""), content={}, position=position, reason="")
    (tmp_path / "name").mkdir(mode=0o755)  # an empty directory made for the restore by someone else
    previous = os.umask(0o022)
    try:
        result = restore_name_dir([manifest], lambda stem: io.BytesIO(archive.getvalue()), tmp_path / "name")
    finally:
        os.umask(previous)
    current = tmp_path / "name" / "current"
    assert result["last_txid"] == 4
    modes = {p.name: p.stat().st_mode & 0o777 for p in current.iterdir()}
    assert modes == {image_name(2): 0o600, f"{image_name(2)}.md5": 0o600, edits_name(3, 4): 0o600,
                     "seen_txid": 0o600, "VERSION": 0o600}
    assert (tmp_path / "name").stat().st_mode & 0o777 == 0o700 and current.stat().st_mode & 0o777 == 0o700
    assert (current / "seen_txid").read_text() == "4\n"


def test_an_in_place_service_block_must_name_the_name_directories(tmp_path):
    service = {"systemd": "hadoop-hdfs-namenode.service", "owner": "root"}
    with pytest.raises(SpecError, match=r"sources\.NameNode\.service\.data_dirs.*at least one"):
        load_spec(write(tmp_path, {"service": service}))
    spec = load_spec(write(tmp_path, {"service": {**service, "data_dirs": ["/srv/nn/name1", "/srv/nn/name2"]}}))
    assert spec.source("NameNode").live_dirs() == [("service.data_dirs[0]", "/srv/nn/name1"),
                                                   ("service.data_dirs[1]", "/srv/nn/name2")]


def test_a_live_directory_holding_edits_only_is_restored_as_edits_only(tmp_path):
    from metabackup.sources.namenode import _live_dir_role

    name, shared, new = tmp_path / "name", tmp_path / "shared", tmp_path / "new"
    (name / "current").mkdir(parents=True)
    (shared / "current").mkdir(parents=True)
    for f in ("VERSION", "seen_txid", image_name(0), edits_name(1, 4)):
        (name / "current" / f).write_text("x")
    for f in ("VERSION", "seen_txid", edits_name(1, 4), "edits_inprogress_0000000000000000005"):
        (shared / "current" / f).write_text("x")
    assert [_live_dir_role(d) for d in (name, shared, new)] == ["name", "edits", "name"]
