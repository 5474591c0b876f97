"""Checks across the spec folder that no single spec's DAG file can see."""

from __future__ import annotations

from pathlib import Path

from metabackup.airflow.dag_factory import DAG_FILE_PREFIX, spec_dir_for
from metabackup.errors import MetabackupError
from metabackup.spec import SpecClash, SpecError, load_spec_dir


class SpecFolderError(MetabackupError):
    """The spec folder as a whole is wrong (a spec without its DAG file, a .yml file, a name clash)."""


def folder_problems(dags_dir: Path, spec_dir: Path) -> list[str]:
    problems = []
    _, errors = load_spec_dir(spec_dir)
    for error in errors:  # only cross-file problems; a spec's own errors belong to its DAG file
        if isinstance(error, SpecClash):
            problems += [f"{file}: {fld}: {reason}" for file, fld, reason in error.problems]
    for spec_file in sorted(spec_dir.glob("*.y*ml")):
        dag_file = dags_dir / f"{DAG_FILE_PREFIX}{spec_file.stem}.py"
        if not dag_file.exists() and spec_file.suffix == ".yaml":
            problems.append(f"{spec_file}: has no DAG file; create {dag_file} (python -m metabackup new-task does both)")
        elif spec_file.suffix == ".yml":
            problems.append(f"{spec_file}: task specs end in .yaml; rename it to {spec_file.stem}.yaml")
    return problems


def check_spec_folder(dag_file: str | Path) -> None:
    dags_dir = Path(dag_file).resolve().parent
    spec_dir = spec_dir_for(dags_dir)
    problems = folder_problems(dags_dir, spec_dir)
    if problems:
        raise SpecFolderError(f"backup task spec folder {spec_dir}:\n  " + "\n  ".join(problems))


__all__ = ["SpecError", "SpecFolderError", "check_spec_folder", "folder_problems"]
