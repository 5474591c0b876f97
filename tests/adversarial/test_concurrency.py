"""Runs that overlap: two backups of one task, a backup and a restore, a verification, a parent
deleted under a running incremental.  Each source has one lease (``metabackup.locks``): a second
holder waits with a message and never corrupts the chain."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pendulum
import pytest

from conftest import files_spec, write_spec
from metabackup import locks, pipeline, verification
from metabackup.catalog import Catalog
from metabackup.locks import LockBusy, lock_for
from metabackup.restore import restore_source
from metabackup.sources.files import iter_tree

REPO = Path(__file__).resolve().parents[2]
T0 = pendulum.datetime(2026, 11, 24, 3, tz="UTC")
STEPS = (pipeline.snapshot, pipeline.archive, pipeline.upload, pipeline.verify, pipeline.retention)


@pytest.fixture()
def spec(tmp_path):
    src = tmp_path / "conf"
    src.mkdir()
    (src / "a.xml").write_text("a\n")
    return write_spec(tmp_path, files_spec("conc", tmp_path, {
        "OMS": {"kind": "files", "paths": [str(src)], "target": {"type": "LocalDir", "max_backups": 3}}}))


@pytest.fixture()
def short_wait(monkeypatch):
    monkeypatch.setattr(locks, "DEFAULT_WAIT", 1.0)
    monkeypatch.setattr(locks, "POLL", 0.1)


def full_run(spec, hour: int) -> pipeline.SetRun:
    run = pipeline.SetRun.of(spec, "OMS", T0.add(hours=hour))
    pipeline.preflight(spec, ["OMS"], run.executed)
    pipeline.decide(run)
    for step in STEPS:
        step(run)
    pipeline.record(spec, ["OMS"], run.executed.isoformat())
    return run


def catalog(spec) -> Catalog:
    run = pipeline.SetRun.of(spec, "OMS", T0)
    return run.catalog()


def test_a_second_run_waits_for_the_first_and_says_who_holds_the_source(spec, short_wait):
    first = pipeline.SetRun.of(spec, "OMS", T0)
    pipeline.decide(first)
    second = pipeline.SetRun.of(spec, "OMS", T0.add(hours=1))
    with pytest.raises(LockBusy, match=r"OMS of conc_\d{14} is locked by backup conc run 2026-11-24T03:00:00Z .*unlock"):
        pipeline.decide(second)
    assert not second.workdir.exists()  # the waiting run touched nothing
    for step in STEPS:
        step(first)
    pipeline.decide(second)  # retention released the lease
    for step in STEPS:
        step(second)
    assert [(m.set, m.type) for m in catalog(spec).sets] == [(first.name.stem, "full"), (second.name.stem, "incremental")]


def test_retention_of_another_run_cannot_delete_a_parent_in_use(spec, short_wait):
    """The reported interleaving: run B decides an incremental on P, run A's retention deletes P,
    B commits an orphan and reports success.  Now A's retention waits for B's lease."""
    full_run(spec, 0)
    b = pipeline.SetRun.of(spec, "OMS", T0.add(hours=2))
    decision = pipeline.decide(b)
    assert decision.type == "incremental"
    a = pipeline.SetRun.of(spec, "OMS", T0.add(hours=1))
    with pytest.raises(LockBusy):
        pipeline.retention(a)
    for step in STEPS:
        step(b)
    cat = catalog(spec)
    assert cat.orphans() == [] and cat.chain(b.name.stem) is not None


def test_verify_refuses_to_commit_when_the_parent_vanished(spec, short_wait):
    full_run(spec, 0)
    run = pipeline.SetRun.of(spec, "OMS", T0.add(hours=1))
    decision = pipeline.decide(run)
    pipeline.snapshot(run), pipeline.archive(run), pipeline.upload(run)
    parent = catalog(spec).get(decision.parent)
    folder = Path(spec.sources[0].target.path) / run.task_dir
    (folder / f"{parent.set}.manifest.json").unlink()  # deleted by hand behind the lease
    with pytest.raises(RuntimeError, match="no longer restorable.*not committing an incremental"):
        pipeline.verify(run)
    assert catalog(spec).get(run.name.stem) is None


def test_a_restore_holds_its_chain_against_a_backup(spec, short_wait, tmp_path):
    full_run(spec, 0)
    lock = lock_for(spec, "OMS")
    started = threading.Event()
    release = threading.Event()
    results = {}

    def slow_open(original):
        def opener(*args, **kwargs):
            started.set()
            release.wait(10)
            return original(*args, **kwargs)
        return opener

    from metabackup.targets.localdir import LocalDirTarget
    original = LocalDirTarget.open_read

    def restore():
        try:
            results["restore"] = restore_source(spec, "OMS", tmp_path / "restored", holder="restore test")
        except Exception as exc:  # reported below
            results["restore"] = exc

    LocalDirTarget.open_read = slow_open(original)
    try:
        thread = threading.Thread(target=restore)
        thread.start()
        assert started.wait(10)
        assert lock.holder()["holder"] == "restore test"
        with pytest.raises(LockBusy, match="locked by restore test"):
            pipeline.decide(pipeline.SetRun.of(spec, "OMS", T0.add(hours=1)))
    finally:
        LocalDirTarget.open_read = original
        release.set()
        thread.join(30)
    assert isinstance(results["restore"], dict), results["restore"]
    assert lock.holder() is None
    full_run(spec, 1)  # the lease is free again


def test_verification_waits_for_a_running_backup(spec, short_wait):
    full_run(spec, 0)
    run = pipeline.SetRun.of(spec, "OMS", T0.add(hours=1))
    pipeline.decide(run)
    with pytest.raises(LockBusy, match="backup conc run"):
        verification.verify_sets(spec, "OMS")
    for step in STEPS:
        step(run)
    assert verification.verify_sets(spec, "OMS")["failed"] == []


def test_record_frees_a_failed_runs_lease_and_staging(spec, short_wait):
    run = pipeline.SetRun.of(spec, "OMS", T0)
    pipeline.decide(run)
    pipeline.snapshot(run)  # then the archive step fails for good
    with pytest.raises(pipeline.RunIncomplete, match="no set was committed for OMS"):
        pipeline.record(spec, ["OMS"], run.executed.isoformat())
    assert lock_for(spec, "OMS").holder() is None and not run.workdir.exists()


def test_two_processes_at_once_both_commit_and_the_chain_holds(spec, tmp_path):
    """Two real processes run whole backups of the same source at the same moment."""
    script = (
        "import sys, pendulum\n"
        "from metabackup import pipeline\nfrom metabackup.spec import load_spec\n"
        "spec = load_spec(sys.argv[1]); when = pendulum.parse(sys.argv[2])\n"
        "run = pipeline.SetRun.of(spec, 'OMS', when)\n"
        "pipeline.preflight(spec, ['OMS'], when)\n"
        "pipeline.decide(run)\n"
        "for step in (pipeline.snapshot, pipeline.archive, pipeline.upload, pipeline.verify, pipeline.retention):\n"
        "    step(run)\n"
        "pipeline.record(spec, ['OMS'], when.isoformat())\n"
    )
    full_run(spec, 0)
    env = {**os.environ, "PYTHONPATH": str(REPO / "plugins"), "METABACKUP_LOCK_WAIT_SECONDS": "60"}
    procs = [subprocess.Popen([sys.executable, "-c", script, spec.path, T0.add(hours=h).isoformat()], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for h in (1, 2)]
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    cat = catalog(spec)
    assert cat.orphans() == [] and cat.invalid == ()
    newest = cat.latest_restorable()
    result = restore_source(spec, "OMS", tmp_path / "restored")
    assert result["set"] == newest.set
    src = Path(spec.sources[0].options.paths[0])
    assert dict(iter_tree(tmp_path / "restored" / str(src).lstrip("/"))) == dict(iter_tree(src))


def test_unlock_breaks_a_dead_runs_lease(spec, short_wait):
    lock = lock_for(spec, "OMS")
    lock.acquire("backup conc run that died")
    done = subprocess.run([sys.executable, "-m", "metabackup", "unlock", "--spec", spec.path, "--source", "OMS"],
                          env={**os.environ, "PYTHONPATH": str(REPO / "plugins")}, capture_output=True, text=True)
    assert done.returncode == 0 and "released the lease of backup conc run that died" in done.stdout
    assert lock.holder() is None


def test_a_stale_lease_is_taken_over(spec, short_wait, monkeypatch):
    lock = lock_for(spec, "OMS")
    lock.acquire("a run that died long ago")
    lease = json.loads(lock.lease_path.read_text())
    lease["renewed"] = time.time() - 10
    lock.lease_path.write_text(json.dumps(lease))
    monkeypatch.setattr(locks, "DEFAULT_STALE_AFTER", 5.0)
    full_run(spec, 0)
    assert lock.holder() is None
