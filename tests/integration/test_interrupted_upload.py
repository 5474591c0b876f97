"""A killed upload leaves nothing that looks complete; the retry commits exactly one set."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pendulum
import yaml

from metabackup import pipeline
from metabackup.catalog import Catalog
from metabackup.spec import load_spec

T0 = pendulum.datetime(2026, 11, 24, 3, tz="UTC")
REPO = Path(__file__).resolve().parents[2]

CHILD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from metabackup import fsutil, pipeline
    from metabackup.spec import load_spec

    spec_path, executed, marker = sys.argv[1:4]
    original = fsutil.copy_stream

    def copy_then_hang(src, dst, on_chunk=None):
        block = src.read(fsutil.COPY_CHUNK)
        dst.write(block)
        dst.flush()
        if on_chunk:
            on_chunk(block)
        Path(marker).write_text("mid-copy")
        time.sleep(600)  # killed here

    fsutil.copy_stream = copy_then_hang
    pipeline.upload(pipeline.SetRun.of(load_spec(spec_path), "OMS", executed))
""")


def test_killed_upload_then_retry(tmp_path):
    src = tmp_path / "conf"
    src.mkdir()
    (src / "big.bin").write_bytes(os.urandom(3 << 20))  # several copy chunks
    spec_path = tmp_path / "killed.yaml"
    spec_path.write_text(yaml.safe_dump({
        "name": "killed", "created": "2026-11-24T00:00:00Z", "cluster_version": "3.1.0", "type": "manual",
        "data_path": str(tmp_path / "data"),
        "sources": {"OMS": {"kind": "files", "paths": [str(src)],
                            "target": {"type": "LocalDir", "max_backups": 3, "mirror": str(tmp_path / "standby")}}}}))
    spec = load_spec(spec_path)
    run = pipeline.SetRun.of(spec, "OMS", T0)
    pipeline.decide(run)
    pipeline.snapshot(run)
    pipeline.archive(run)

    marker = tmp_path / "marker"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(spec_path), T0.isoformat(), str(marker)],
                             env={**os.environ, "PYTHONPATH": str(REPO / "plugins")})
    deadline = time.monotonic() + 60
    while not marker.exists():
        assert child.poll() is None, "the upload child ended before it was killed"
        assert time.monotonic() < deadline, "the upload never started"
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)

    task_dir = tmp_path / "data" / "LocalBackup" / "killed_20261124000000"
    mirror_dir = tmp_path / "standby" / "killed_20261124000000"
    # the mirror is written first: the kill left a hidden partial there, and nothing at the primary
    left = sorted(p.name for p in mirror_dir.iterdir())
    assert left and all(name.startswith(".") and ".partial-" in name for name in left), left
    assert not task_dir.exists() or list(task_dir.iterdir()) == []
    assert Catalog.of(run.target.manifests(run.task_dir)).sets == ()

    # The retry (Airflow retries the upload task, then verify runs) - and a second, redundant retry.
    for _ in range(2):
        pipeline.upload(run)
        pipeline.verify(run)
    for directory in (task_dir, mirror_dir):
        assert sorted(p.name for p in directory.iterdir()) == sorted([run.name.archive, run.name.manifest])
    committed = Catalog.of(run.target.manifests(run.task_dir)).sets
    assert [m.set for m in committed] == [run.name.stem]


def test_preflight_sweeps_partials_of_an_interrupted_run(tmp_path):
    src = tmp_path / "conf"
    src.mkdir()
    spec_path = tmp_path / "sweep.yaml"
    spec_path.write_text(yaml.safe_dump({
        "name": "sweep", "created": "2026-11-24T00:00:00Z", "cluster_version": "3.1.0", "type": "manual",
        "data_path": str(tmp_path / "data"),
        "sources": {"OMS": {"kind": "files", "paths": [str(src)], "target": {"type": "LocalDir"}}}}))
    spec = load_spec(spec_path)
    task_dir = tmp_path / "data" / "LocalBackup" / "sweep_20261124000000"
    task_dir.mkdir(parents=True)
    stale = task_dir / ".3.1.0_OMS_20261124030000.tar.gz.partial-deadbeef"
    stale.write_bytes(b"half")
    report = pipeline.preflight(spec, ["OMS"])
    assert not stale.exists()
    assert report["OMS"]["estimate_bytes"] == 0
