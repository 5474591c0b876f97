"""``python -m metabackup backup``: a whole run without a scheduler, the same steps as the DAG."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from conftest import files_spec, write_spec
from metabackup.locks import lock_for
from metabackup.pipeline import SetRun

REPO = Path(__file__).resolve().parents[2]


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "metabackup", *args], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO / "plugins")})


def test_backup_command_takes_full_then_incremental_then_forced_full(tmp_path):
    src = tmp_path / "conf"
    src.mkdir()
    (src / "a.xml").write_text("a\n")
    spec = write_spec(tmp_path, files_spec("clib", tmp_path, {
        "OMS": {"kind": "files", "paths": [str(src)], "target": {"type": "LocalDir"}}}))
    path = spec.path
    types = []
    for extra in ((), (), ("--full",)):
        (src / "a.xml").write_text(f"a {len(types)}\n")
        done = cli("backup", "--spec", str(path), "--source", "OMS", *extra)
        assert done.returncode == 0, done.stderr
        summary = json.loads(done.stdout)
        types.append(summary["OMS"]["type"])
        time.sleep(1.1)  # set names are per second
    assert types == ["full", "incremental", "full"]
    catalog = SetRun.of(spec, "OMS", "2026-11-24T00:00:00Z").catalog()
    assert [m.type for m in catalog.sets] == types and catalog.orphans() == []
    assert lock_for(spec, "OMS").holder() is None


def test_backup_command_names_an_unknown_source(tmp_path):
    (tmp_path / "conf").mkdir()
    spec = write_spec(tmp_path, files_spec("clib2", tmp_path, {
        "OMS": {"kind": "files", "paths": [str(tmp_path / "conf")], "target": {"type": "LocalDir"}}}))
    done = cli("backup", "--spec", spec.path, "--source", "DBService")
    assert done.returncode == 1 and "has no source 'DBService'" in done.stderr and done.stdout == ""
