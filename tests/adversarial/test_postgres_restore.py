"""Attacks on and mishaps of a PostgreSQL restore: a pass means it was refused (or cleaned up) and
nothing outside the destination changed; a failure means it escaped."""

from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import tarfile
import tempfile
from pathlib import Path

import pendulum
import pytest
import yaml

from conftest import seeded_postgres
from harness import postgres as pg
from metabackup import pipeline
from metabackup.manifest import ArchiveInfo, Manifest
from metabackup.restore import restore_source
from metabackup.sources import RestoreError
from metabackup.sources.postgres import (PostgresDestination, _copy_wal_members, check_data_dir, conf_string,
                                         restore_chain, restore_command_for)
from metabackup.spec import load_spec

T0 = pendulum.datetime(2026, 11, 24, 3, tz="UTC")


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
@pytest.fixture()
def cluster(monkeypatch):
    with seeded_postgres(monkeypatch, rows=100) as instance:
        yield instance


@pytest.fixture()
def base():
    """A folder the postgres user can enter (pytest's tmp_path is 0700 root-owned)."""
    folder = Path(tempfile.mkdtemp(prefix="metabackup-adv-pg-"))
    folder.chmod(0o755)
    yield folder
    for data in folder.rglob("postmaster.pid"):
        pg.stop_data_dir(data.parent, "immediate")
    shutil.rmtree(folder, ignore_errors=True)


def make_spec(tmp_path: Path):
    path = tmp_path / "pgt.yaml"
    path.write_text(yaml.safe_dump({
        "name": "pgt", "created": "2026-11-24T00:00:00Z", "cluster_version": "3.1.0", "type": "manual",
        "data_path": str(tmp_path / "data"),
        "sources": {"DBService": {"kind": "postgres", "conn_id": "pg_src", "target": {"type": "LocalDir", "max_backups": 5}}}}))
    return load_spec(path)


def backup(spec, hour: int) -> str:
    run = pipeline.SetRun.of(spec, "DBService", T0.add(hours=hour))
    pipeline.preflight(spec, ["DBService"])
    pipeline.decide(run)
    for step in (pipeline.snapshot, pipeline.archive, pipeline.upload, pipeline.verify, pipeline.retention):
        step(run)
    return run.name.stem


def tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.fixture()
def private_tmp(monkeypatch):
    """The system temp directory as the restore sees it (its socket directory lands there), private
    to this test so other runs on the machine do not interfere."""
    folder = Path(tempfile.mkdtemp(prefix="metabackup-adv-tmp-"))
    folder.chmod(0o755)
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def fake_full(members: dict[str, bytes | tarfile.TarInfo]) -> tuple[Manifest, bytes]:
    """A hand-built 'full' set: its manifest and archive (pg/<name> members)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, content in members.items():
            info = tarfile.TarInfo(f"pg/{name}")
            info.size, info.mode = len(content), 0o600
            tar.addfile(info, io.BytesIO(content))
    stem = "3.1.0_DBService_20261124110000"
    manifest = Manifest(
        set=stem, task="pgt", task_dir="pgt_20261124000000", source="DBService", kind="postgres", type="full",
        parent=None, chain_root=stem, cluster_version="3.1.0", executed_at="2026-11-24T03:00:00+00:00",
        started_at="2026-11-24T03:00:00+00:00", finished_at="2026-11-24T03:00:01+00:00",
        archive=ArchiveInfo(name=f"{stem}.tar.gz", size=len(out.getvalue()), sha256="0" * 64), content={},
        position={"method": "pg_basebackup", "timeline": 1, "start_lsn": "0/2000028", "end_lsn": "0/2000100",
                  "server_version": 150000, "system_identifier": "1", "segment_size": 16 << 20}, reason="test")
    return manifest, out.getvalue()


def inner_tar(entries: list[tarfile.TarInfo | tuple[str, bytes]]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for entry in entries:
            if isinstance(entry, tarfile.TarInfo):
                tar.addfile(entry)
            else:
                info = tarfile.TarInfo(entry[0])
                info.size, info.mode = len(entry[1]), 0o600
                tar.addfile(info, io.BytesIO(entry[1]))
    return out.getvalue()


# ---------------------------------------------------------------------------------------------
# 1. command injection through the destination
# ---------------------------------------------------------------------------------------------
def test_injection_in_the_data_directory_is_refused_before_anything_runs(tmp_path, cluster, base, private_tmp):
    spec = make_spec(tmp_path)
    backup(spec, 0)
    dest = f"{base}/$(touch {base}/INJECTED)/data"
    with pytest.raises(RestoreError) as raised:
        restore_source(spec, "DBService", PostgresDestination(data_dir=dest))
    assert dest in str(raised.value) and "[A-Za-z0-9._/@+=,-]" in str(raised.value)
    assert tree(base) == [], "nothing created, no INJECTED file"
    assert not (base / "INJECTED").exists() and not list(Path(cluster.directory).rglob("INJECTED"))
    assert list(private_tmp.iterdir()) == []


@pytest.mark.parametrize("path", ["relative/data", "/tmp/a/../data", "/tmp/a//data", "/tmp/a/./data", "/tmp/a b/data",
                                  "/tmp/a'b/data", "/tmp/a;b/data", "/tmp/a\nb/data", "/tmp/a`id`/data", "/tmp/a%f/data"])
def test_unsafe_data_directories_are_refused(path):
    with pytest.raises(RestoreError, match="refusing restore destination"):
        check_data_dir(path)


def test_restore_command_and_conf_strings_are_quoted_for_sh_and_postgresql_conf(tmp_path):
    hostile = tmp_path / "it's $(touch INJECTED) `id` %p" / "wal"
    hostile.mkdir(parents=True)
    (hostile / "000000010000000000000001").write_text("segment")
    command = restore_command_for(hostile)
    conf = conf_string(command)
    assert conf.startswith("'") and conf.endswith("'") and "''" in conf  # the single quote doubled for the conf file
    unquoted = conf[1:-1].replace("''", "'")
    assert unquoted == command
    # what the server runs: %f / %p substituted, %% -> %, through sh
    ran = command.replace("%f", "000000010000000000000001").replace('"%p"', str(tmp_path / "out")).replace("%%", "%")
    subprocess.run(["sh", "-c", ran], cwd=tmp_path, check=True)
    assert (tmp_path / "out").read_text() == "segment"
    assert not list(tmp_path.rglob("INJECTED"))


# ---------------------------------------------------------------------------------------------
# 2. side effects: nothing it did not create is touched, a failure leaves no trace, modes
# ---------------------------------------------------------------------------------------------
def test_a_pre_existing_hidden_restore_folder_is_left_alone_and_no_work_dir_remains(tmp_path, cluster, base, private_tmp):
    spec = make_spec(tmp_path)
    backup(spec, 0)
    mine = base / ".data.restore"
    mine.mkdir()
    (mine / "keep.txt").write_text("someone else's")
    result = restore_source(spec, "DBService", PostgresDestination(data_dir=str(base / "data")))
    assert (mine / "keep.txt").read_text() == "someone else's"
    assert sorted(p.name for p in base.iterdir()) == [".data.restore", "data"], "the work directory was removed"
    assert (base / "data").stat().st_mode & 0o777 == 0o700
    log = Path(result["server_log"])
    assert log.parent == base / "data" and log.stat().st_mode & 0o777 == 0o600
    assert list(private_tmp.iterdir()) == [] and not result["running"]


def test_a_failed_recovery_removes_what_it_created_and_names_the_server_log(tmp_path, cluster, base, private_tmp):
    spec = make_spec(tmp_path)
    backup(spec, 0)
    with socket.socket() as busy:  # the restored server cannot bind its port: it fails after extraction
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(RestoreError) as raised:
            restore_source(spec, "DBService", PostgresDestination(data_dir=str(base / "new" / "data"), port=port))
    assert "server log" in str(raised.value) and "could not" in str(raised.value), "the log's tail is in the error"
    assert tree(base) == [], "data directory, work directory and created parents removed"
    assert list(private_tmp.iterdir()) == [], "socket directory removed"


def test_a_failed_recovery_into_an_existing_empty_directory_keeps_it_as_it_was(tmp_path, cluster, base):
    spec = make_spec(tmp_path)
    backup(spec, 0)
    data = base / "data"
    data.mkdir()
    data.chmod(0o750)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(RestoreError):
            restore_source(spec, "DBService", PostgresDestination(data_dir=str(data), port=busy.getsockname()[1]))
    assert tree(base) == ["data"] and data.stat().st_mode & 0o777 == 0o750 and data.stat().st_uid == 0


def test_a_refused_restore_does_not_touch_the_destination(base):
    data = base / "data"
    data.mkdir()
    data.chmod(0o755)
    (data / "PG_VERSION").write_text("15\n")
    manifest, _ = fake_full({})
    with pytest.raises(RestoreError, match="not empty"):
        restore_chain([manifest], lambda stem: io.BytesIO(b""), PostgresDestination(data_dir=str(data)))
    assert data.stat().st_mode & 0o777 == 0o755 and tree(base) == ["data", "data/PG_VERSION"]


def test_wal_segments_are_written_owner_only_whatever_the_umask(tmp_path):
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        info = tarfile.TarInfo("pg/wal/000000010000000000000002")
        info.size, info.mode = 4, 0o644
        tar.addfile(info, io.BytesIO(b"wal!"))
    manifest, _ = fake_full({})
    old = os.umask(0)
    try:
        _copy_wal_members(manifest, lambda stem: io.BytesIO(out.getvalue()), tmp_path, "pg/wal")
    finally:
        os.umask(old)
    assert (tmp_path / "000000010000000000000002").stat().st_mode & 0o777 == 0o600


# ---------------------------------------------------------------------------------------------
# 3. hostile archives
# ---------------------------------------------------------------------------------------------
def _hostile_restore(base: Path, entries) -> RestoreError:
    manifest, archive = fake_full({"backup_manifest": b"{}", "base.tar": inner_tar(entries)})
    with pytest.raises(RestoreError) as raised:
        restore_chain([manifest], lambda stem: io.BytesIO(archive), PostgresDestination(data_dir=str(base / "d" / "data")))
    return raised.value


def test_a_dot_dot_member_in_base_tar_is_refused(base):
    error = _hostile_restore(base, [("PG_VERSION", b"15\n"), ("../../escape", b"owned")])
    assert "../../escape" in str(error)
    assert not (base / "escape").exists() and not (base.parent / "escape").exists()
    assert tree(base) == []


def test_an_absolute_member_in_base_tar_is_refused(base):
    target = base / "abs-escape"
    error = _hostile_restore(base, [("PG_VERSION", b"15\n"), (str(target), b"owned")])
    assert str(target) in str(error) and not target.exists()
    assert tree(base) == []


def test_a_symlink_escaping_through_pg_tblspc_is_refused(base):
    outside = base / "outside"
    outside.mkdir()
    link = tarfile.TarInfo("pg_tblspc/16384")
    link.type, link.linkname = tarfile.SYMTYPE, str(outside)
    error = _hostile_restore(base, [link, ("pg_tblspc/16384/PG_15_x/evil", b"owned")])
    assert "symbolic link" in str(error)
    assert tree(base) == ["outside"]


def test_a_hostile_wal_member_name_is_refused(base):
    manifest, archive = fake_full({})
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        info = tarfile.TarInfo("pg/wal/../../../escape")
        info.size = 5
        tar.addfile(info, io.BytesIO(b"owned"))
    with pytest.raises(RestoreError, match="unexpected WAL member"):
        _copy_wal_members(manifest, lambda stem: io.BytesIO(out.getvalue()), base, "pg/wal")
    assert tree(base) == []
