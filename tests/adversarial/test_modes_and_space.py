"""Owner-only from the root down whatever the umask, and a full disk that loses nothing."""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import subprocess
import uuid
from pathlib import Path

import pendulum
import pytest
import yaml

from metabackup import pipeline
from metabackup.restore import restore_source
from metabackup.sources.files import iter_tree
from metabackup.spec import load_spec

T0 = pendulum.datetime(2026, 11, 24, 3, tz="UTC")
STEPS = (pipeline.snapshot, pipeline.archive, pipeline.upload, pipeline.verify, pipeline.retention)


def write_spec(tmp_path: Path, src: Path, staging: Path | None = None, target: Path | None = None,
               mirror: Path | None = None) -> object:
    target_spec = {"type": "LocalDir", "max_backups": 5}
    if target:
        target_spec["path"] = str(target)
    if mirror:
        target_spec["mirror"] = str(mirror)
    body = {"name": "modes", "created": "2026-11-24T00:00:00Z", "cluster_version": "3.1.0", "type": "manual",
            "policy": "full_then_incremental", "data_path": str(tmp_path / "data"), "retries": 0,
            "sources": {"OMS": {"kind": "files", "paths": [str(src)], "target": target_spec}}}
    if staging:
        body["staging_dir"] = str(staging)
    path = tmp_path / "modes.yaml"
    path.write_text(yaml.safe_dump(body))
    return load_spec(path)


def created_paths(root: Path) -> list[tuple[str, int, bool]]:
    found = [(str(root), stat.S_IMODE(os.lstat(root).st_mode), True)]
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            found.append((path, stat.S_IMODE(st.st_mode), stat.S_ISDIR(st.st_mode)))
    return found


@contextlib.contextmanager
def umask(value: int):
    old = os.umask(value)
    try:
        yield
    finally:
        os.umask(old)


def test_a_backup_under_umask_000_creates_only_owner_only_paths(tmp_path):
    src = tmp_path / "conf"
    src.mkdir()
    (src / "server.xml").write_text("<x/>\n")
    spec = write_spec(tmp_path, src, mirror=tmp_path / "standby" / "mirror")
    seen: list[tuple[str, int, bool]] = []
    with umask(0):
        run = pipeline.SetRun.of(spec, "OMS", T0)
        pipeline.preflight(spec, ["OMS"], run.executed)
        pipeline.decide(run)
        for step in STEPS[:3]:
            step(run)
        seen += created_paths(tmp_path / "data")  # the work directory with its plan files, mid-run
        for step in STEPS[3:]:
            step(run)
        pipeline.record(spec, ["OMS"], run.executed.isoformat())
        seen += created_paths(tmp_path / "data") + created_paths(tmp_path / "standby")
        restored = tmp_path / "restores" / "one"
        restore_source(spec, "OMS", restored)
        seen += [p for p in created_paths(tmp_path / "restores")
                 if not (p[0] + "/").startswith(str(restored / str(src).lstrip("/")) + "/")]  # it keeps its modes
    assert {Path(p).name for p, _m, _d in seen} >= {"LocalBackup", ".staging", "mirror", "standby",
                                                    "modes_20261124000000", run.name.archive, run.name.manifest,
                                                    "decision.json", "files-plan.json"}
    loose = [(p, oct(m)) for p, m, is_dir in seen if m != (0o700 if is_dir else 0o600)]
    assert loose == []


@pytest.fixture()
def small_tmpfs(tmp_path):
    """A 4 MiB tmpfs (root only, as CI runs)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / f"tiny-{uuid.uuid4().hex[:6]}"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def big_file(path: Path, mib: int) -> None:
    with open(path, "wb") as out:
        for _ in range(mib):
            out.write(os.urandom(1 << 20))


def test_a_full_staging_area_fails_clearly_and_leaves_nothing(tmp_path, small_tmpfs):
    src = tmp_path / "conf"
    src.mkdir()
    (src / "small.xml").write_text("small\n")
    spec = write_spec(tmp_path, src, staging=small_tmpfs / "staging")
    first = pipeline.SetRun.of(spec, "OMS", T0)
    pipeline.preflight(spec, ["OMS"], first.executed)
    pipeline.decide(first)
    for step in STEPS:
        step(first)
    pipeline.record(spec, ["OMS"], first.executed.isoformat())
    target = Path(spec.sources[0].target.path) / first.task_dir
    before = {p.name: p.read_bytes() for p in target.iterdir()}
    big_file(src / "big.bin", 12)  # random data: does not compress below 4 MiB
    run = pipeline.SetRun.of(spec, "OMS", T0.add(hours=1))
    pipeline.preflight(spec, ["OMS"], run.executed)
    pipeline.decide(run)
    pipeline.snapshot(run)
    with pytest.raises(pipeline.OutOfSpace, match=rf"staging area is full: no space left writing {run.staged_archive}"
                                                  r" \(\d+ bytes free now; a set needs about \d+"):
        pipeline.archive(run)
    with pytest.raises(pipeline.RunIncomplete):
        pipeline.record(spec, ["OMS"], run.executed.isoformat())  # the DAG's record runs whatever happened
    assert list((small_tmpfs / "staging" / run.task_dir).glob("3.1.0_*")) == []  # staging swept
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before  # the earlier set is intact
    restored = tmp_path / "restored"
    restore_source(spec, "OMS", restored)
    assert [p for p, _e in iter_tree(restored / str(src).lstrip("/"))] == ["small.xml"]


def test_a_full_target_fails_clearly_and_removes_its_partial_file(tmp_path, small_tmpfs):
    src = tmp_path / "conf"
    src.mkdir()
    big_file(src / "big.bin", 6)
    spec = write_spec(tmp_path, src, target=small_tmpfs / "backups")
    run = pipeline.SetRun.of(spec, "OMS", T0)
    pipeline.decide(run)
    pipeline.snapshot(run)
    pipeline.archive(run)
    with pytest.raises(pipeline.OutOfSpace, match=r"target file://.*/backups/modes_20261124000000 is full: no space "
                                                  r"left storing 3\.1\.0_OMS_20261124030000\.tar\.gz \(\d+ bytes needed"):
        pipeline.upload(run)
    leftovers = [p.name for p in (small_tmpfs / "backups" / run.task_dir).iterdir()]
    assert leftovers == []
    with pytest.raises(pipeline.RunIncomplete):
        pipeline.record(spec, ["OMS"], run.executed.isoformat())
    assert not run.workdir.exists()


def test_preflight_sweeps_work_directories_of_runs_that_never_reached_record(tmp_path):
    src = tmp_path / "conf"
    src.mkdir()
    (src / "a").write_text("a\n")
    spec = write_spec(tmp_path, src)
    dead = pipeline.SetRun.of(spec, "OMS", T0)
    pipeline.decide(dead)
    pipeline.snapshot(dead)
    from metabackup.locks import lock_for
    lock_for(spec, "OMS").release()  # its worker died for good and the lease was broken by hand
    run = pipeline.SetRun.of(spec, "OMS", T0.add(hours=1))
    pipeline.preflight(spec, ["OMS"], run.executed)
    assert not dead.workdir.exists()
    shutil.rmtree(tmp_path / "data")
