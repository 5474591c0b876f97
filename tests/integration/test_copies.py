"""Off-site copies and restore fallback, on real directories: a copy holds a catalog of its own, a
restore reads from the first location where the chain is intact and says which, and a LocalDir that
must be a mount point refuses to fill the local disk."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pendulum
import pytest

from conftest import backup_once, files_spec, write_spec
from metabackup import pipeline
from metabackup.replication import replicate
from metabackup.restore import RestoreError, restore_source
from metabackup.sources.files import iter_tree
from metabackup.verification import VerificationFailed, restore_to_scratch, verify_sets

REPO = Path(__file__).resolve().parents[2]
T0 = pendulum.datetime(2026, 11, 24, 3, tz="UTC")


def world(tmp_path, copies=None, **target):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.conf").write_text("a\n")
    body = {"kind": "files", "paths": [str(src)], "target": {"type": "LocalDir", "max_backups": 5, **target}}
    if copies is not None:
        body["copies"] = copies
    spec = write_spec(tmp_path, files_spec("cp", tmp_path, {"OMS": body}))
    return spec, src


def offsite(tmp_path, name="offsite", **extra):
    return {"type": "LocalDir", "path": str(tmp_path / name), "max_backups": 2, **extra}


def chain_of_three(spec, src):
    states = {}
    for hour in range(3):
        (src / f"h{hour}.conf").write_text(f"{hour}\n")
        made = backup_once(spec, "OMS", T0.add(hours=hour))
        states[made["stem"]] = dict(iter_tree(src))
    return states


def restored_tree(dest: Path, src: Path) -> dict:
    return dict(iter_tree(dest / str(src).lstrip("/")))


def test_a_copy_holds_its_own_catalog_and_restores_when_the_primary_is_gone(tmp_path):
    spec, src = world(tmp_path, copies=[offsite(tmp_path)])
    states = chain_of_three(spec, src)
    copy_dir = tmp_path / "offsite" / spec.task_dir
    assert sorted(p.name for p in copy_dir.iterdir() if p.name.endswith(".manifest.json")) == \
        [f"{stem}.manifest.json" for stem in sorted(states)]
    assert {oct(p.stat().st_mode & 0o777) for p in copy_dir.iterdir()} == {"0o600"}
    shutil.rmtree(tmp_path / "data" / "LocalBackup" / spec.task_dir)  # the primary's whole task directory
    result = restore_source(spec, "OMS", str(tmp_path / "restored"))
    latest = sorted(states)[-1]
    assert result["location"] == "copy 1" and result["set"] == latest
    assert restored_tree(tmp_path / "restored", src) == states[latest]


def test_the_cli_restores_from_a_chosen_copy(tmp_path):
    spec, src = world(tmp_path, copies=[offsite(tmp_path)])
    states = chain_of_three(spec, src)
    first = sorted(states)[1]
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'plugins'}:{REPO}"}
    done = subprocess.run([sys.executable, "-m", "metabackup", "restore", "--spec", spec.path, "--source", "OMS",
                           "--set", first, "--dest", str(tmp_path / "fromcopy"), "--from-copy", "1"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["location"] == "copy 1"
    assert restored_tree(tmp_path / "fromcopy", src) == states[first]
    listed = subprocess.run([sys.executable, "-m", "metabackup", "list", "--spec", spec.path, "--json"], env=env,
                            capture_output=True, text=True, timeout=300)
    rows = json.loads(listed.stdout)
    assert {(r["location"], r["set"]) for r in rows} == {(where, s) for where in ("primary", "copy 1") for s in states}
    bad = subprocess.run([sys.executable, "-m", "metabackup", "restore", "--spec", spec.path, "--source", "OMS",
                          "--dest", str(tmp_path / "x"), "--from-copy", "2"], env=env, capture_output=True, text=True,
                         timeout=300)
    assert bad.returncode == 1 and "no location 'copy 2'" in bad.stderr and not (tmp_path / "x").exists()


def test_a_corrupt_primary_archive_is_read_from_the_mirror_and_the_restore_says_so(tmp_path):
    spec, src = world(tmp_path, mirror=str(tmp_path / "standby"))
    states = chain_of_three(spec, src)
    latest = sorted(states)[-1]
    archive = tmp_path / "data" / "LocalBackup" / spec.task_dir / f"{latest}.tar.gz"
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0xFF
    archive.write_bytes(bytes(data))
    result = restore_source(spec, "OMS", str(tmp_path / "restored"))
    assert result["location"] == "mirror" and result["set"] == latest
    assert restored_tree(tmp_path / "restored", src) == states[latest]
    with pytest.raises(RestoreError, match=f"chain member {latest} failed verification"):
        restore_source(spec, "OMS", str(tmp_path / "only-primary"), location="primary")
    outcome = restore_to_scratch(spec, "OMS", scratch_root=str(tmp_path))
    assert outcome["ok"] and outcome["location"] == "mirror"
    with pytest.raises(VerificationFailed, match=latest):
        verify_sets(spec, "OMS")  # the corrupt primary archive is still reported


def test_a_copy_that_missed_runs_catches_up_with_the_whole_chain(tmp_path):
    spec, src = world(tmp_path, copies=[offsite(tmp_path, require_mountpoint=True)])
    (src / "x.conf").write_text("x\n")
    with pytest.raises(Exception, match="not a mount point"):  # the copy's share is not mounted: replicate fails
        backup_once(spec, "OMS", T0)
    assert not (tmp_path / "offsite").exists(), "nothing written to the local disk"
    first = pipeline.SetRun.of(spec, "OMS", T0).catalog().sets
    assert [m.set for m in first] == [pipeline.SetRun.of(spec, "OMS", T0).name.stem], "the primary committed"
    pipeline.record(spec, ["OMS"], T0.isoformat())
    fixed = write_spec(tmp_path, files_spec("cp", tmp_path, {"OMS": {
        "kind": "files", "paths": [str(src)], "target": {"type": "LocalDir", "max_backups": 5},
        "copies": [offsite(tmp_path)]}}))
    (src / "y.conf").write_text("y\n")
    made = backup_once(fixed, "OMS", T0.add(hours=1))
    assert made["type"] == "incremental"
    copy_names = sorted(p.name for p in (tmp_path / "offsite" / fixed.task_dir).iterdir())
    assert [n for n in copy_names if n.endswith(".manifest.json")] == sorted(
        f"{m.set}.manifest.json" for m in pipeline.SetRun.of(fixed, "OMS", T0).catalog().sets)
    again = replicate(pipeline.SetRun.of(fixed, "OMS", T0.add(hours=1)), 1)  # a retry copies nothing
    assert again["copied"] == []


def test_require_mountpoint_refuses_an_unmounted_directory_and_accepts_a_mount(tmp_path):
    spec, src = world(tmp_path, path=str(tmp_path / "nfs"), require_mountpoint=True)
    with pytest.raises(pipeline.PreflightError, match="is not a mount point"):
        pipeline.preflight(spec, ["OMS"])
    assert not (tmp_path / "nfs").exists()
    if not os.path.ismount("/dev/shm") or not os.access("/dev/shm", os.W_OK):
        pytest.skip("no writable tmpfs at /dev/shm to stand for a mounted share")
    mounted = write_spec(tmp_path, files_spec("cp", tmp_path, {"OMS": {
        "kind": "files", "paths": [str(src)],
        "target": {"type": "LocalDir", "path": "/dev/shm", "require_mountpoint": True, "max_backups": 5}}}))
    try:
        made = backup_once(mounted, "OMS", T0)
        assert (Path("/dev/shm") / mounted.task_dir / f"{made['stem']}.tar.gz").exists()
    finally:
        shutil.rmtree(Path("/dev/shm") / mounted.task_dir, ignore_errors=True)


def test_verification_checks_every_copy_and_names_the_one_that_failed(tmp_path):
    spec, src = world(tmp_path, copies=[offsite(tmp_path)])
    states = chain_of_three(spec, src)
    summary = verify_sets(spec, "OMS")
    assert summary["failed"] == [] and [c["location"] for c in summary["copies"]] == ["copy 1"]
    newest = sorted(states)[-1]
    archive = tmp_path / "offsite" / spec.task_dir / f"{newest}.tar.gz"
    archive.write_bytes(archive.read_bytes()[:-10])  # truncated at the copy only
    with pytest.raises(VerificationFailed, match=f"copy 1: {newest}"):
        verify_sets(spec, "OMS")
