"""Archive formats and how they are stored, on real directories: ``compression: zstd`` sets (plain and
encrypted, full and incrementals) restore exactly and are read by the standard tools; the default
gzip archive is a standard ``.tar.gz`` (``tar -tzf``, ``gzip -t``); a LocalDir target on the staging
area's file system receives the archive by a hard link (no second copy), while its mirror and
off-site copies get copies of their own; retention sweeps stray ``.tar.zst`` archives too."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pendulum
import pytest
import yaml

from conftest import backup_once, staged_run
from metabackup import pipeline
from metabackup.keys import generate_key
from metabackup.replication import replicate
from metabackup.restore import restore_source
from metabackup.sources.files import INDEX_MEMBER, iter_tree
from metabackup.spec import load_spec

T0 = pendulum.datetime(2026, 11, 24, 3, tz="UTC")


def make_spec(tmp_path: Path, name: str = "cz", target: dict | None = None, copies: list | None = None, **top):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True, exist_ok=True)
    (src / "a.conf").write_text("a=1\n" * 1000)
    (src / "sub" / "b.bin").write_bytes(os.urandom(300_000))
    os.symlink("a.conf", src / "link")
    body = {"kind": "files", "paths": [str(src)],
            "target": {"type": "LocalDir", "path": str(tmp_path / "bk"), "max_backups": 10, **(target or {})}}
    if copies:
        body["copies"] = copies
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, "created": "2026-11-24T00:00:00Z", "cluster_version": "3.1.0",
                                    "type": "manual", "policy": "full_then_incremental",
                                    "data_path": str(tmp_path / "data"), "sources": {"OMS": body}, **top}))
    return load_spec(path), src


def take_chain(spec, src: Path, count: int = 3) -> list[tuple[dict, dict]]:
    """A full, then incrementals changing, adding and deleting files: each outcome with its tree."""
    taken = []
    for n in range(count):
        if n == 1:
            (src / "a.conf").write_text("a=2\n" * 1000)
            (src / "new.conf").write_text("new\n")
        elif n == 2:
            (src / "sub" / "b.bin").unlink()
            (src / "sub" / "c.bin").write_bytes(os.urandom(50_000))
        outcome = backup_once(spec, "OMS", T0.add(hours=n))
        pipeline.record(spec, ["OMS"], T0.add(hours=n).isoformat())
        taken.append((outcome, dict(iter_tree(src))))
    return taken


def assert_restores(spec, src: Path, taken, dest: Path, location: str | None = None) -> None:
    for n, (outcome, tree) in enumerate(taken):
        result = restore_source(spec, "OMS", dest / f"r{n}", outcome["stem"], location=location)
        assert result["set"] == outcome["stem"]
        assert dict(iter_tree(dest / f"r{n}" / str(src).lstrip("/"))) == tree, f"restore of {outcome['stem']} differs"


def set_key(monkeypatch, key_id: str) -> None:
    monkeypatch.setenv(f"AIRFLOW_CONN_{key_id.upper()}", json.dumps({"conn_type": "generic", "password": generate_key()}))


# ---------------------------------------------------------------------------------------------
# compression: zstd
# ---------------------------------------------------------------------------------------------
def test_zstd_sets_round_trip_full_and_incrementals_and_are_standard_tar_zst(tmp_path):
    spec, src = make_spec(tmp_path, compression="zstd")
    assert spec.compression == "zstd"
    taken = take_chain(spec, src)
    assert [o["type"] for o, _ in taken] == ["full", "incremental", "incremental"]
    folder = tmp_path / "bk" / spec.task_dir
    for outcome, _ in taken:
        name = outcome["manifest"].archive.name
        assert name == outcome["stem"] + ".tar.zst"
        archive = folder / name
        assert archive.read_bytes()[:4] == b"\x28\xb5\x2f\xfd"  # one zstd frame, not gzip renamed
        if shutil.which("zstd"):
            subprocess.run(["zstd", "-q", "-t", str(archive)], check=True)
            listing = subprocess.run(["tar", "--zstd", "-tf", str(archive)], check=True, capture_output=True,
                                     text=True).stdout.split()
            assert INDEX_MEMBER in listing
    assert not list(folder.glob("*.tar.gz*"))
    assert_restores(spec, src, taken, tmp_path / "restored")


def test_encrypted_zstd_sets_round_trip_and_decrypt_to_a_standard_tar_zst(tmp_path, monkeypatch):
    set_key(monkeypatch, "kek_zstd")
    spec, src = make_spec(tmp_path, compression="zstd", encryption={"key_id": "kek_zstd", "on_cluster": True})
    taken = take_chain(spec, src)
    folder = tmp_path / "bk" / spec.task_dir
    for outcome, _ in taken:
        manifest = outcome["manifest"]
        assert manifest.archive.name == outcome["stem"] + ".tar.zst.enc"
        assert manifest.encryption is not None
        assert b"\x28\xb5\x2f\xfd" not in (folder / manifest.archive.name).read_bytes()[:200]
    assert_restores(spec, src, taken, tmp_path / "restored")
    # decrypted without Airflow (the key from the environment here), the plaintext is the recorded .tar.zst
    from metabackup.sealed import plain_reader
    from metabackup.keys import KeyRing

    manifest = taken[0][0]["manifest"]
    with plain_reader(open(folder / manifest.archive.name, "rb"), manifest, KeyRing.for_spec(spec), "t", digest=True) as r:
        plain = r.read()
    assert plain[:4] == b"\x28\xb5\x2f\xfd" and len(plain) == manifest.encryption.plaintext_size


def test_a_task_switching_compression_keeps_its_chain_restorable(tmp_path):
    """Sets of both formats in one chain: each reader tells the format by the archive's first bytes."""
    spec, src = make_spec(tmp_path)
    first = take_chain(spec, src, count=1)
    Path(spec.path).write_text(Path(spec.path).read_text() + "compression: zstd\n")
    zspec = load_spec(spec.path)
    (src / "later.conf").write_text("later\n")
    second = backup_once(zspec, "OMS", T0.add(hours=5))
    pipeline.record(zspec, ["OMS"], T0.add(hours=5).isoformat())
    assert first[0][0]["manifest"].archive.name.endswith(".tar.gz")
    assert second["type"] == "incremental" and second["manifest"].archive.name.endswith(".tar.zst")
    assert_restores(zspec, src, first + [(second, dict(iter_tree(src)))], tmp_path / "restored")


def test_a_zstd_copy_of_an_encrypted_zstd_set_keeps_its_format(tmp_path, monkeypatch):
    set_key(monkeypatch, "kek_zc")
    copy = {"type": "LocalDir", "path": str(tmp_path / "site"), "encryption": {"enabled": False}}
    spec, src = make_spec(tmp_path, compression="zstd", copies=[copy], encryption={"key_id": "kek_zc", "on_cluster": True})
    taken = take_chain(spec, src, count=2)
    names = sorted(p.name for p in (tmp_path / "site" / spec.task_dir).iterdir() if not p.name.endswith(".json"))
    assert names == sorted(o["stem"] + ".tar.zst" for o, _ in taken)
    assert_restores(spec, src, taken, tmp_path / "restored", location="copy 1")


def test_retention_sweeps_stray_zstd_archives_of_failed_runs(tmp_path):
    spec, src = make_spec(tmp_path, compression="zstd")
    folder = tmp_path / "bk" / spec.task_dir
    folder.mkdir(parents=True)
    stray = folder / "3.1.0_OMS_20261124010000.tar.zst"
    stray_enc = folder / "3.1.0_OMS_20261124010000.tar.zst.enc"
    other = folder / "3.1.0_LdapServer_20261124010000.tar.zst"
    for path in (stray, stray_enc, other):
        path.write_bytes(b"x")
    take_chain(spec, src, count=1)
    assert not stray.exists() and not stray_enc.exists()
    assert other.exists()  # another source's


# ---------------------------------------------------------------------------------------------
# gzip: a standard .tar.gz
# ---------------------------------------------------------------------------------------------
def test_the_default_archive_is_one_standard_gzip_member_that_tar_reads(tmp_path):
    spec, src = make_spec(tmp_path)
    assert spec.compression == "gzip"
    outcome = backup_once(spec, "OMS", T0)
    archive = tmp_path / "bk" / spec.task_dir / (outcome["stem"] + ".tar.gz")
    assert archive.read_bytes()[:2] == b"\x1f\x8b"
    subprocess.run(["gzip", "-t", str(archive)], check=True)
    listing = subprocess.run(["tar", "-tzf", str(archive)], check=True, capture_output=True, text=True).stdout.split()
    assert INDEX_MEMBER in listing and str(src / "sub" / "b.bin").lstrip("/") in listing
    out = tmp_path / "x"
    out.mkdir()
    subprocess.run(["tar", "-xzf", str(archive), "-C", str(out)], check=True)
    assert (out / str(src / "sub" / "b.bin").lstrip("/")).read_bytes() == (src / "sub" / "b.bin").read_bytes()
    import gzip
    import zlib

    with gzip.open(archive) as handle:  # one member: Python's gzip and zlib read it to its end
        body = handle.read()
    decompressor = zlib.decompressobj(wbits=31)
    assert decompressor.decompress(archive.read_bytes()) == body and decompressor.eof and not decompressor.unused_data


# ---------------------------------------------------------------------------------------------
# LocalDir on the staging file system: a hard link, not a second copy
# ---------------------------------------------------------------------------------------------
def test_a_localdir_target_on_the_staging_file_system_gets_a_hard_link(tmp_path):
    mirror, site = tmp_path / "mirror", tmp_path / "site"
    spec, src = make_spec(tmp_path, target={"mirror": str(mirror)}, copies=[{"type": "LocalDir", "path": str(site)}])
    run = staged_run(spec, "OMS", T0)
    staged = run.staged_archive
    assert pipeline.upload(run)["uploaded"] is True
    stored = tmp_path / "bk" / spec.task_dir / staged.name
    assert stored.stat().st_ino == staged.stat().st_ino and stored.stat().st_nlink == 2
    assert stored.stat().st_mode & 0o777 == 0o600
    mirrored = mirror / spec.task_dir / staged.name  # the standby copy is a copy
    assert mirrored.stat().st_ino != staged.stat().st_ino and mirrored.read_bytes() == staged.read_bytes()
    assert not [p for p in stored.parent.iterdir() if p.name.startswith(".")]  # no temp link left
    # a retried upload finds it there; the staged archive stays for the later steps
    assert pipeline.upload(run)["uploaded"] is False
    assert staged.exists()
    pipeline.verify(run)
    assert replicate(run, 1)["copied"] == [run.name.stem]  # read from the staged archive
    copied = site / spec.task_dir / staged.name
    assert copied.stat().st_ino != staged.stat().st_ino and copied.read_bytes() == staged.read_bytes()
    pipeline.retention(run)
    pipeline.record(spec, ["OMS"], T0.isoformat())
    assert not staged.exists() and stored.stat().st_nlink == 1  # the staging area let go of its name only
    dest = tmp_path / "restored"
    restore_source(spec, "OMS", dest)
    assert dict(iter_tree(dest / str(src).lstrip("/"))) == dict(iter_tree(src))


def test_an_upload_replaces_an_uncommitted_archive_by_a_link_and_a_retried_archive_step_leaves_the_set_intact(tmp_path):
    spec, src = make_spec(tmp_path)
    run = staged_run(spec, "OMS", T0)
    stored = tmp_path / "bk" / spec.task_dir / run.staged_archive.name
    stored.parent.mkdir(parents=True, exist_ok=True)
    stored.write_bytes(b"a partial upload of an earlier attempt")
    os.chmod(stored, 0o600)
    assert pipeline.upload(run)["uploaded"] is True
    assert stored.stat().st_ino == run.staged_archive.stat().st_ino
    before = stored.read_bytes()
    pipeline.archive(run)  # a retry of the archive step writes a new file: the uploaded one is not touched
    assert stored.read_bytes() == before
    assert stored.stat().st_ino != run.staged_archive.stat().st_ino
    pipeline.upload(run)  # the same bytes again (gzip without a time stamp), or replaced by a link to the new file
    pipeline.verify(run)
    pipeline.record(spec, ["OMS"], T0.isoformat())
    dest = tmp_path / "restored"
    restore_source(spec, "OMS", dest)
    assert dict(iter_tree(dest / str(src).lstrip("/"))) == dict(iter_tree(src))


def test_a_localdir_target_on_another_file_system_gets_a_verified_copy(tmp_path, monkeypatch):
    from metabackup import fsutil

    spec, src = make_spec(tmp_path)
    run = staged_run(spec, "OMS", T0)
    calls = []

    def cross_device(source, final):
        calls.append(final)
        return False  # what link_atomically answers on EXDEV

    monkeypatch.setattr(fsutil, "link_atomically", cross_device)
    assert pipeline.upload(run)["uploaded"] is True
    stored = tmp_path / "bk" / spec.task_dir / run.staged_archive.name
    assert calls and stored.stat().st_ino != run.staged_archive.stat().st_ino
    assert stored.read_bytes() == run.staged_archive.read_bytes() and stored.stat().st_mode & 0o777 == 0o600
    pipeline.verify(run)


def test_link_atomically_refuses_what_it_must_not_link(tmp_path):
    from metabackup import fsutil

    loose = tmp_path / "loose"
    loose.write_bytes(b"x")
    os.chmod(loose, 0o644)  # not owner-only: it would be stored readable by others
    assert fsutil.link_atomically(loose, tmp_path / "out" / "a") is False
    assert not (tmp_path / "out" / "a").exists()
    os.chmod(loose, 0o600)
    assert fsutil.link_atomically(loose, tmp_path / "out" / "a") is True
    assert (tmp_path / "out" / "a").stat().st_ino == loose.stat().st_ino
    assert (tmp_path / "out").stat().st_mode & 0o777 == 0o700


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_the_archive_and_upload_steps_log_progress(tmp_path, caplog, compression):
    import logging

    spec, src = make_spec(tmp_path, compression=compression)
    with caplog.at_level(logging.INFO, logger="metabackup.pipeline"):
        backup_once(spec, "OMS", T0)
    lines = [r.getMessage() for r in caplog.records]
    assert any(line.startswith("OMS: archive: done, ") for line in lines), lines
    assert any(line.startswith("OMS: upload: done, ") for line in lines), lines
