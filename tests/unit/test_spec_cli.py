"""``python -m metabackup validate`` checks the folder the DAGs read: --spec-dir, else
$METABACKUP_SPEC_DIR, else the repository's include/backup_tasks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from metabackup import cli

REPO = Path(__file__).resolve().parents[2]


def write_spec(folder: Path, name: str, **changes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    spec = {"name": name, "created": "2026-11-24T10:00:00+08:00", "cluster_version": "3.5.0", "type": "manual",
            "sources": {"OMS": {"kind": "files", "paths": ["/srv/BigData/om-server/conf"],
                                "target": {"type": "LocalDir"}}}} | changes
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def validate(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(["validate", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_validate_reads_the_environment_folder(tmp_path, monkeypatch, capsys):
    spec = write_spec(tmp_path / "env", "fromenv")
    monkeypatch.setenv("METABACKUP_SPEC_DIR", str(tmp_path / "env"))
    code, out, err = validate(capsys)
    assert code == 0 and out == f"ok  fromenv  ({spec})\n"
    assert f"checking {tmp_path / 'env'} ($METABACKUP_SPEC_DIR)" in err


def test_validate_fails_on_a_bad_spec_in_the_environment_folder(tmp_path, monkeypatch, capsys):
    bad = write_spec(tmp_path / "env", "bad", cluster_version=3.1)
    monkeypatch.setenv("METABACKUP_SPEC_DIR", str(tmp_path / "env"))
    code, out, err = validate(capsys)
    assert code == 1 and out == ""
    assert f"{bad}: cluster_version: must be a string, got float 3.1" in err


def test_an_explicit_spec_dir_wins_over_the_environment(tmp_path, monkeypatch, capsys):
    write_spec(tmp_path / "env", "bad", type="weekly")
    good = write_spec(tmp_path / "explicit", "explicit")
    monkeypatch.setenv("METABACKUP_SPEC_DIR", str(tmp_path / "env"))
    code, out, err = validate(capsys, "--spec-dir", str(tmp_path / "explicit"))
    assert code == 0 and out == f"ok  explicit  ({good})\n" and "(--spec-dir)" in err


@pytest.mark.parametrize("env", [None, ""])
def test_without_the_environment_the_repository_folder_is_checked(monkeypatch, capsys, env):
    if env is None:
        monkeypatch.delenv("METABACKUP_SPEC_DIR", raising=False)
    else:
        monkeypatch.setenv("METABACKUP_SPEC_DIR", env)
    code, out, err = validate(capsys)
    assert code == 0 and f"ok  default  ({REPO / 'include' / 'backup_tasks' / 'default.yaml'})" in out
    assert "(default)" in err


def test_a_missing_folder_is_an_error_not_an_empty_success(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("METABACKUP_SPEC_DIR", str(tmp_path / "nowhere"))
    code, out, err = validate(capsys)
    assert code == 1 and out == "" and f"spec folder {tmp_path / 'nowhere'} ($METABACKUP_SPEC_DIR) is not a directory" in err


def test_validate_as_a_command(tmp_path):
    spec = write_spec(tmp_path / "env", "child")
    env = {**os.environ, "PYTHONPATH": str(REPO / "plugins"), "METABACKUP_SPEC_DIR": str(tmp_path / "env")}
    done = subprocess.run([sys.executable, "-m", "metabackup", "validate"], capture_output=True, text=True, env=env,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"ok  child  ({spec})\n"
