"""The files source across a chain, on real directories: every set restores exactly."""

from __future__ import annotations

import io
import os
import shutil
import tarfile
from pathlib import Path

import pendulum
import pytest
import yaml

from conftest import backup_once, files_spec, write_spec
from metabackup import pipeline
from metabackup.restore import restore_source
from metabackup.errors import BackupError
from metabackup.sources import RestoreError
from metabackup.sources.files import iter_tree
from metabackup.spec import load_spec

T0 = pendulum.datetime(2026, 11, 24, 3, tz="UTC")


def make_spec(tmp_path: Path, src: Path, **target) -> object:
    path = tmp_path / "rt.yaml"
    path.write_text(yaml.safe_dump({
        "name": "rt", "created": "2026-11-24T00:00:00Z", "cluster_version": "3.1.0", "type": "manual",
        "policy": "full_then_incremental", "data_path": str(tmp_path / "data"),
        "sources": {"OMS": {"kind": "files", "paths": [str(src)], "exclude": ["*.swp"],
                            "target": {"type": "LocalDir", "max_backups": 10, **target}}}}))
    return load_spec(path)


def backup(spec, hour: int) -> tuple[str, str]:
    made = backup_once(spec, "OMS", T0.add(hours=hour))
    pipeline.record(spec, ["OMS"], T0.add(hours=hour).isoformat())
    return made["type"], made["stem"]


def tree(root: Path) -> dict:
    return dict(iter_tree(root))


def restored_tree(dest: Path, src: Path) -> dict:
    return tree(dest / str(src).lstrip("/"))


def test_chain_round_trip_with_renames_deletions_links_and_metadata(tmp_path):
    src = tmp_path / "etc" / "oms"
    (src / "conf.d").mkdir(parents=True)
    (src / "empty-dir").mkdir()
    (src / "server.xml").write_text("<server port='1'/>\n")
    (src / "conf.d" / "a.properties").write_text("a=1\n")
    (src / "keystore.bin").write_bytes(os.urandom(300_000))
    (src / "ünïcode name.txt").write_text("ok\n")
    (src / "editor.swp").write_text("excluded\n")
    os.chmod(src / "keystore.bin", 0o600)
    os.chmod(src / "conf.d", 0o750)
    os.symlink("server.xml", src / "current.xml")
    os.symlink("/nonexistent/elsewhere", src / "dangling")
    os.chown(src / "conf.d" / "a.properties", 1234, 2345)
    spec = make_spec(tmp_path, src)

    def capture():
        state = tree(src)
        state.pop("editor.swp", None)
        return state

    history = []
    history.append((backup(spec, 0), capture()))

    # incremental 1: content change, rename, delete, new nested dir, mode change, link retarget
    (src / "server.xml").write_text("<server port='2'/>\n")
    os.rename(src / "conf.d" / "a.properties", src / "conf.d" / "renamed.properties")
    (src / "ünïcode name.txt").unlink()
    (src / "new" / "deeper").mkdir(parents=True)
    (src / "new" / "deeper" / "file").write_text("deep\n")
    os.chmod(src / "server.xml", 0o640)
    os.unlink(src / "current.xml")
    os.symlink("conf.d", src / "current.xml")
    history.append((backup(spec, 1), capture()))

    # incremental 2: type changes (file -> dir, dir -> file), an unchanged file touched, a delete of a dir
    (src / "keystore.bin").unlink()
    (src / "keystore.bin").mkdir()
    (src / "keystore.bin" / "inside").write_text("now a directory\n")
    shutil.rmtree(src / "new")
    (src / "new").write_text("now a file\n")
    os.utime(src / "server.xml", ns=(1_700_000_000_000_000_000, 1_700_000_000_000_000_000))
    shutil.rmtree(src / "empty-dir")
    history.append((backup(spec, 2), capture()))

    assert [h[0][0] for h in history] == ["full", "incremental", "incremental"]
    for i, ((kind, stem), state) in enumerate(history):
        dest = tmp_path / f"restore-{i}"
        result = restore_source(spec, "OMS", dest, stem)
        assert result["set"] == stem
        got = restored_tree(dest, src)
        assert got == state, f"set {i} ({kind}) differs: {set(got) ^ set(state)}"
        assert "editor.swp" not in got

    # an incremental holds only what changed
    task_dir = tmp_path / "data" / "LocalBackup" / "rt_20261124000000"
    with tarfile.open(task_dir / f"{history[1][0][1]}.tar.gz") as tar:
        members = set(tar.getnames())
    assert "keystore.bin" not in " ".join(members), "an unchanged large file is not archived again"
    assert any(m.endswith("server.xml") for m in members)


def two_set_chain(tmp_path: Path):
    """A full and one incremental of a one-file source: (spec, full stem, incremental stem)."""
    src = tmp_path / "conf"
    src.mkdir()
    (src / "a").write_text("one")
    spec = make_spec(tmp_path, src)
    (_, full) = backup(spec, 0)
    (src / "a").write_text("two")
    (_, inc) = backup(spec, 1)
    return spec, full, inc


def test_restore_refuses_a_corrupt_chain_member_before_writing_anything(tmp_path):
    spec, full, inc = two_set_chain(tmp_path)
    archive = tmp_path / "data" / "LocalBackup" / "rt_20261124000000" / f"{full}.tar.gz"
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0xFF
    archive.write_bytes(bytes(data))
    dest = tmp_path / "restore"
    with pytest.raises(RestoreError, match=f"chain member {full} failed verification"):
        restore_source(spec, "OMS", dest, inc)
    assert not dest.exists()


def test_restore_refuses_missing_parent_and_non_empty_destination(tmp_path):
    spec, full, inc = two_set_chain(tmp_path)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x").write_text("keep me")
    with pytest.raises(RestoreError, match="not empty"):
        restore_source(spec, "OMS", busy, inc)
    assert (busy / "x").read_text() == "keep me"
    task_dir = tmp_path / "data" / "LocalBackup" / "rt_20261124000000"
    (task_dir / f"{full}.manifest.json").unlink()
    with pytest.raises(RestoreError, match="cannot be restored: a set of its chain is missing"):
        restore_source(spec, "OMS", tmp_path / "restore", inc)


def test_incremental_after_a_parent_archive_lost_its_index_fails_clearly(tmp_path):
    src = tmp_path / "conf"
    src.mkdir()
    (src / "a").write_text("one")
    spec = make_spec(tmp_path, src)
    (_, full) = backup(spec, 0)
    archive = tmp_path / "data" / "LocalBackup" / "rt_20261124000000" / f"{full}.tar.gz"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("x")
        tar.addfile(info, io.BytesIO(b""))
    archive.write_bytes(buf.getvalue())
    run = pipeline.SetRun.of(spec, "OMS", T0.add(hours=1))
    assert pipeline.decide(run).type == "incremental"
    with pytest.raises(BackupError, match="cannot take an incremental on .*no file index"):  # a backup failure
        pipeline.snapshot(run)


def test_a_rewrite_that_keeps_size_and_mtime_is_still_backed_up(tmp_path):
    src = tmp_path / "conf"
    src.mkdir()
    target = src / "same-size.conf"
    target.write_text("port=1\n")
    spec = make_spec(tmp_path, src)
    backup(spec, 0)
    before = target.stat()
    target.write_text("port=2\n")  # same size
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))  # and the old mtime, as cp -p would
    (kind, stem) = backup(spec, 1)
    assert kind == "incremental"
    dest = tmp_path / "restore"
    restore_source(spec, "OMS", dest, stem)
    assert (dest / str(target).lstrip("/")).read_text() == "port=2\n"


def test_a_file_that_shrinks_while_read_fails_the_set_instead_of_archiving_padding(tmp_path, monkeypatch):
    from metabackup.sources import files as files_kind

    src = tmp_path / "conf"
    src.mkdir()
    victim = src / "rotating.log"
    victim.write_bytes(b"x" * 100_000)
    spec = make_spec(tmp_path, src)
    real_tarinfo = files_kind._tarinfo

    def truncate_after_stat(member, entry):  # runs after the file was opened and stat'ed, before it is read
        info = real_tarinfo(member, entry)
        if member.endswith("rotating.log"):
            os.truncate(victim, 10)
        return info

    monkeypatch.setattr(files_kind, "_tarinfo", truncate_after_stat)
    run = pipeline.SetRun.of(spec, "OMS", T0)
    pipeline.decide(run)
    pipeline.snapshot(run)
    with pytest.raises(BackupError, match="rotating.log shrank by 99990 bytes while it was read"):
        pipeline.archive(run)
    assert not run.staged_archive.exists(), "no archive that looks complete is left behind"
    monkeypatch.setattr(files_kind, "_tarinfo", real_tarinfo)
    pipeline.snapshot(run)  # the retry
    pipeline.archive(run)
    pipeline.upload(run)
    pipeline.verify(run)
    pipeline.retention(run)  # ends the run's hold on the source
    dest = tmp_path / "restore"
    restore_source(spec, "OMS", dest)
    assert (dest / str(victim).lstrip("/")).read_bytes() == b"x" * 10


def test_hourly_names_that_repeat_at_dst_fall_back_fail_loudly(tmp_path):
    src = tmp_path / "conf"
    src.mkdir()
    (src / "a").write_text("a")
    spec = write_spec(tmp_path, files_spec("dst", tmp_path, {
        "OMS": {"kind": "files", "paths": [str(src)], "target": {"type": "LocalDir"}}},
        created="2026-10-01T00:00:00Z", timezone="America/New_York"))
    first = pendulum.datetime(2026, 11, 1, 5, tz="UTC")  # 01:00 EDT
    run = pipeline.SetRun.of(spec, "OMS", first)
    pipeline.decide(run)
    for step in (pipeline.snapshot, pipeline.archive, pipeline.upload, pipeline.verify, pipeline.retention):
        step(run)
    again = pipeline.SetRun.of(spec, "OMS", first.add(hours=1))  # 01:00 EST: the same local name
    assert again.name.stem == run.name.stem
    with pytest.raises(RuntimeError, match="local time repeats in America/New_York"):
        pipeline.decide(again)


def test_a_second_run_in_the_same_second_fails_and_does_not_count_the_first_runs_set(tmp_path):
    src = tmp_path / "conf"
    src.mkdir()
    (src / "a").write_text("a")
    spec = write_spec(tmp_path, files_spec("same", tmp_path, {
        "OMS": {"kind": "files", "paths": [str(src)], "target": {"type": "LocalDir"}}}, timezone="UTC"))
    first = pendulum.datetime(2026, 11, 29, 2, 18, 51, 120000, tz="UTC")
    run = pipeline.SetRun.of(spec, "OMS", first, holder="first")
    pipeline.decide(run)
    for step in (pipeline.snapshot, pipeline.archive, pipeline.upload, pipeline.verify, pipeline.retention):
        step(run)
    assert pipeline.finish_source(spec, "OMS", first.isoformat(), holder="first")["event"]["set"] == run.name.stem
    again = first.add(microseconds=500000)  # the same second: the same set name
    with pytest.raises(RuntimeError, match="set names have one-second resolution"):
        pipeline.decide(pipeline.SetRun.of(spec, "OMS", again, holder="second"))
    finished = pipeline.finish_source(spec, "OMS", again.isoformat(), holder="second")
    assert finished["event"] is None and "not this run's" in finished["problem"]
    with pytest.raises(pipeline.RunIncomplete, match="no set was committed for OMS"):
        pipeline.summarize({"OMS": finished})
