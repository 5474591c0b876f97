"""What a user types into the restore DAG's trigger form or the CLI is untrusted: destinations
that would run commands, escape through a link, land inside a live or backup directory, or are
relative are refused before anything runs, through Airflow itself and through the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pendulum
import pytest

from conftest import files_spec
from metabackup.airflow.dag_factory import dags_for_dag_file
from conftest import task_states

pytestmark = pytest.mark.airflow

REPO = Path(__file__).resolve().parents[2]
T0 = pendulum.datetime(2026, 11, 24, 3, tz="UTC")


@pytest.fixture(scope="module")
def restorable(airflow_db, tmp_path_factory):
    from conftest import AirflowProject

    tmp = tmp_path_factory.mktemp("inputs")
    src = tmp / "oms" / "conf"
    src.mkdir(parents=True)
    (src / "a.conf").write_text("a=1\n")
    spec = files_spec("inputs", tmp, {"OMS": {"kind": "files", "paths": [str(src)],
                                             "target": {"type": "LocalDir", "max_backups": 5}}}, retries=0)
    backup, restore = dags_for_dag_file(AirflowProject().install(spec))
    assert str(backup.test(run_after=T0).state).endswith("success")
    return {"tmp": tmp, "src": src, "restore": restore, "spec_path": str(AirflowProject.specs / "inputs.yaml")}


def hostile(tmp: Path) -> dict[str, tuple[str, str]]:
    """Destination text -> the refusal it must get."""
    (tmp / "real").mkdir(exist_ok=True)
    if not (tmp / "via-link").exists():
        (tmp / "via-link").symlink_to(tmp / "real")
    return {
        f"{tmp}/x/$(touch {tmp}/INJECTED)/data": ("contains", "command substitution"),
        f"{tmp}/x/`touch {tmp}/INJECTED`": ("contains", "backquotes"),
        f"{tmp}/x;touch {tmp}/INJECTED": ("contains", "a semicolon"),
        f"{tmp}/new\nline": ("contains", "a newline"),
        "relative/dir": ("must be an absolute directory", "relative"),
        f"{tmp}/a/../b": ("must be a normalised directory", "parent reference"),
        f"{tmp}/via-link/restored": ("symbolic link", "a link in the path"),
        f"{tmp}/oms/conf/restored": ("lies inside", "inside the live source"),
        f"{tmp}/data/LocalBackup/restored": ("lies inside", "inside the backup target"),
        f"{tmp}/oms": ("contains", "around the live source"),
        "/": ("must be a normalised directory below /", "the root"),
    }


def snapshot(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.parametrize("case", range(11))
def test_the_restore_dag_refuses_a_hostile_destination_before_anything_runs(restorable, case):
    tmp = restorable["tmp"]
    destination, (message, _why) = list(hostile(tmp).items())[case]
    before = snapshot(tmp)
    dr = restorable["restore"].test(run_after=T0.add(hours=1, minutes=case),
                                    run_conf={"source": "OMS", "destination": destination, "dry_run": False})
    states = task_states(restorable["restore"].dag_id, dr.run_id)
    assert not str(dr.state).endswith("success")
    assert states["OMS.resolve"] == "failed" and states["OMS.restore"] in ("upstream_failed", "skipped")
    assert not (tmp / "INJECTED").exists()
    assert snapshot(tmp) == before


@pytest.mark.parametrize("case", range(11))
def test_the_cli_refuses_a_hostile_destination(restorable, case):
    tmp = restorable["tmp"]
    destination, (message, _why) = list(hostile(tmp).items())[case]
    before = snapshot(tmp)
    done = subprocess.run([sys.executable, "-m", "metabackup", "restore", "--spec", restorable["spec_path"],
                           "--source", "OMS", "--dest", destination],
                          env={**os.environ, "PYTHONPATH": str(REPO / "plugins")}, capture_output=True, text=True)
    assert done.returncode == 1 and done.stdout == ""
    assert message in done.stderr, done.stderr
    assert not (tmp / "INJECTED").exists()
    assert snapshot(tmp) == before
