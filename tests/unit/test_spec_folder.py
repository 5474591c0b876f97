"""The spec folder as a whole: task names unique ignoring case, on every path that reads specs
(load_spec_dir, the folder check DAG file, each backup DAG file)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from metabackup import spec as spec_module
from metabackup.spec import SpecError, load_spec_dir

REPO = Path(__file__).resolve().parents[2]


def spec_dict(name: str, tmp_path: Path) -> dict:
    return {"name": name, "created": "2026-11-24T10:00:00+08:00", "cluster_version": "3.5.0", "type": "manual",
            "data_path": str(tmp_path / "data"),
            "sources": {"OMS": {"kind": "files", "paths": [str(tmp_path / "src")],
                                "target": {"type": "LocalDir", "max_backups": 3}}}}


@pytest.fixture()
def folder(tmp_path, monkeypatch):
    """dags/ and specs/ with good.yaml, nightly.yaml and Nightly.yaml, each with its DAG file."""
    dags, specs = tmp_path / "dags", tmp_path / "specs"
    dags.mkdir()
    specs.mkdir()
    for name in ("good", "nightly", "Nightly"):
        (specs / f"{name}.yaml").write_text(yaml.safe_dump(spec_dict(name, tmp_path)))
        shutil.copy(REPO / "dags" / "backup_default.py", dags / f"backup_{name}.py")
    shutil.copy(REPO / "dags" / "backup_task_specs_check.py", dags)
    monkeypatch.setenv("METABACKUP_SPEC_DIR", str(specs))
    return dags, specs


def test_a_case_clash_is_reported_even_when_one_of_the_files_is_broken(folder):
    _, specs = folder
    broken = spec_dict("Nightly", specs.parent) | {"type": "weekly"}
    (specs / "Nightly.yaml").write_text(yaml.safe_dump(broken))
    found, errors = load_spec_dir(specs)
    assert list(found) == ["good"]
    rows = [row for error in errors for row in error.problems]
    clashes = sorted(Path(f).name for f, fld, why in rows if fld == "name" and "several files" in why)
    assert clashes == ["Nightly.yaml", "nightly.yaml"], rows
    assert any(f.endswith("Nightly.yaml") and fld == "type" for f, fld, _ in rows), "its own errors too"


def test_a_case_clash_makes_the_folder_check_file_fail(folder):
    from metabackup.airflow.spec_check import SpecFolderError, check_spec_folder

    dags, specs = folder
    (specs / "Nightly.yaml").write_text("name: Nightly\ntype: [broken\n")  # not even YAML: still a clash
    with pytest.raises(SpecFolderError) as failure:
        check_spec_folder(dags / "backup_task_specs_check.py")
    message = str(failure.value)
    for name in ("nightly.yaml", "Nightly.yaml"):
        assert f"{specs / name}: name: task name " in message and "is used by several files (Nightly.yaml, nightly.yaml)" in message


@pytest.mark.parametrize("name", ["nightly", "Nightly"])
def test_building_the_dags_of_either_clashing_file_fails_naming_both(folder, name):
    from metabackup.airflow.dag_factory import dags_for_dag_file

    dags, specs = folder
    other = "Nightly" if name == "nightly" else "nightly"
    with pytest.raises(SpecError) as failure:
        dags_for_dag_file(dags / f"backup_{name}.py")
    (file, fld, why), = failure.value.problems
    assert (file, fld) == (str(specs / f"{name}.yaml"), "name")
    assert "is used by several files (Nightly.yaml, nightly.yaml) (they differ only in case" in why
    assert why.endswith(f"(the other: {specs / f'{other}.yaml'})")


def test_without_a_clash_the_dags_build(folder):
    from metabackup.airflow.dag_factory import dags_for_dag_file

    dags, specs = folder
    (specs / "Nightly.yaml").unlink()
    backup, restore = dags_for_dag_file(dags / "backup_nightly.py")
    assert (backup.dag_id, restore.dag_id) == ("backup_nightly", "restore_nightly")


def test_a_yml_twin_is_a_clash_too(folder):
    from metabackup.airflow.dag_factory import dags_for_dag_file

    dags, specs = folder
    (specs / "Nightly.yaml").unlink()
    shutil.copy(specs / "good.yaml", specs / "good.yml")
    with pytest.raises(SpecError, match=r"is used by several files \(good.yaml, good.yml\); names must be unique"):
        dags_for_dag_file(dags / "backup_good.py")


@pytest.mark.airflow
def test_dagbag_shows_a_case_clash_on_both_dag_files_and_the_check_file(folder):
    from airflow.dag_processing.dagbag import DagBag

    dags, specs = folder
    bag = DagBag(dag_folder=str(dags))
    assert sorted(bag.dag_ids) == ["backup_good", "restore_good"]
    failed = {Path(f).name: message for f, message in bag.import_errors.items()}
    assert sorted(failed) == ["backup_Nightly.py", "backup_nightly.py", "backup_task_specs_check.py"]
    for dag_file in ("backup_Nightly.py", "backup_nightly.py"):
        assert str(specs / "nightly.yaml") in failed[dag_file] and str(specs / "Nightly.yaml") in failed[dag_file]
    assert "is used by several files (Nightly.yaml, nightly.yaml)" in failed["backup_task_specs_check.py"]


def test_an_unexpected_failure_on_one_file_does_not_stop_the_others(folder, monkeypatch):
    _, specs = folder
    (specs / "Nightly.yaml").unlink()
    real = spec_module.load_spec

    def flaky(path):
        if Path(path).name == "good.yaml":
            raise MemoryError("simulated")
        return real(path)

    monkeypatch.setattr(spec_module, "load_spec", flaky)
    found, errors = load_spec_dir(specs)
    assert list(found) == ["nightly"]
    assert [row for e in errors for row in e.problems] == [
        (str(specs / "good.yaml"), "<file>", "could not be checked (MemoryError: simulated)")]
