"""The core imports nothing from Airflow: import-linter's contract (``.importlinter``) is kept, names
every core module, and breaks when a core module imports Airflow."""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / ".importlinter"
PLUGINS = REPO / "plugins"
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"  # the venv's, pinned in requirements.txt
CORE_CONTRACT = "importlinter:contract:core-without-airflow"
NOT_CORE = {"airflow"}


def lint_imports(plugins: Path, cwd: Path) -> tuple[int, str]:
    """``lint-imports`` with ``metabackup`` found on ``PYTHONPATH=plugins`` (no cache written): its exit
    status and its report, whitespace runs (the report's line wrapping) made single spaces."""
    assert LINT_IMPORTS.exists(), f"{LINT_IMPORTS} is missing: install requirements.txt (import-linter)"
    env = {**os.environ, "PYTHONPATH": str(plugins)}
    result = subprocess.run([str(LINT_IMPORTS), "--no-cache", "--no-logo", str(CONFIG)], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=300)
    print(result.stdout + result.stderr)  # the report, for the record (pytest -s shows it)
    return result.returncode, " ".join((result.stdout + result.stderr).split())


def test_the_core_imports_no_airflow():
    status, report = lint_imports(PLUGINS, REPO)
    assert status == 0, report
    assert "metabackup.airflow) imports no Airflow KEPT (2 ignored imports)" in report, report
    assert "The metabackup package module imports no Airflow KEPT" in report
    assert "Contracts: 2 kept, 0 broken." in report and "BROKEN" not in report


def test_the_contract_names_every_core_module():
    """A new core module or package is checked only if the contract lists it."""
    config = configparser.ConfigParser()
    config.read(CONFIG)
    listed = set(config[CORE_CONTRACT]["source_modules"].split())
    package = PLUGINS / "metabackup"
    core = {f"metabackup.{p.stem}" for p in package.glob("*.py") if p.name != "__init__.py"}
    core |= {f"metabackup.{p.name}" for p in package.iterdir()
             if p.is_dir() and (p / "__init__.py").exists() and p.name not in NOT_CORE}
    assert listed == core


def test_a_core_module_importing_airflow_breaks_the_contract(tmp_path):
    plugins = tmp_path / "plugins"
    shutil.copytree(PLUGINS / "metabackup", plugins / "metabackup", ignore=shutil.ignore_patterns("__pycache__"))
    with open(plugins / "metabackup" / "naming.py", "a") as handle:
        handle.write("\nimport airflow  # noqa: E402 - the violation this test plants\n")
    status, report = lint_imports(plugins, tmp_path)
    assert status == 1, report
    assert "metabackup.airflow) imports no Airflow BROKEN" in report and "Contracts: 1 kept, 1 broken." in report
    assert "metabackup.naming is not allowed to import airflow:" in report
    planted = len((plugins / "metabackup" / "naming.py").read_text().splitlines())  # the last line
    assert f"metabackup.naming -> airflow (l.{planted})" in report
    # planted in the copy only
    assert (PLUGINS / "metabackup" / "naming.py").read_text().count("import airflow") == 0
