"""Many workers (issue 16) without a scheduler: per-source queues in the spec and on every task,
the pool on every task, the worker's own staging directory, the task-spec limit, the pools the
plugin creates, and a busy lease that gives the pool slot up instead of waiting in it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from metabackup.spec import SpecError, load_spec, load_spec_dir

REPO = Path(__file__).resolve().parents[2]


def spec_dict(name: str, tmp_path: Path, **fields) -> dict:
    return {"name": name, "created": "2026-11-24T10:00:00+08:00", "cluster_version": "3.5.0", "type": "manual",
            "data_path": str(tmp_path / "data"),
            "sources": {"OMS": {"kind": "files", "paths": [str(tmp_path / "oms")],
                                "target": {"type": "LocalDir", "max_backups": 3}},
                        "DBService": {"kind": "files", "paths": [str(tmp_path / "db")], "queue": "dbservice_host",
                                      "target": {"type": "LocalDir", "path": "db", "max_backups": 3}}},
            **fields}


def write(tmp_path: Path, spec: dict) -> Path:
    path = tmp_path / f"{spec['name']}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def rows(error: SpecError) -> list[tuple[str, str]]:
    return [(fld, why) for _, fld, why in error.problems]


def test_a_source_queue_overrides_the_spec_queue_and_the_pool_defaults_to_metabackup(tmp_path):
    spec = load_spec(write(tmp_path, spec_dict("q", tmp_path, queue="mgmt")))
    assert (spec.queue, spec.source("OMS").queue, spec.source("DBService").queue) == ("mgmt", None, "dbservice_host")
    assert spec.pool == "metabackup"
    assert load_spec(write(tmp_path, spec_dict("p", tmp_path, pool="nightly_backups"))).pool == "nightly_backups"


@pytest.mark.parametrize(("where", "value"), [("spec", "a queue"), ("spec", "x;rm"), ("source", "-leading"),
                                              ("source", 7), ("source", "q" * 129), ("pool", "two words")])
def test_queue_and_pool_names_are_allow_listed(tmp_path, where, value):
    spec = spec_dict("bad", tmp_path)
    if where == "spec":
        spec["queue"] = value
    elif where == "pool":
        spec["pool"] = value
    else:
        spec["sources"]["DBService"]["queue"] = value
    with pytest.raises(SpecError) as failure:
        load_spec(write(tmp_path, spec))
    fld = {"spec": "queue", "pool": "pool", "source": "sources.DBService.queue"}[where]
    assert [f for f, _ in rows(failure.value)] == [fld], rows(failure.value)
    assert "not a valid" in rows(failure.value)[0][1]


def test_a_workers_staging_directory_overrides_the_specs(tmp_path, monkeypatch):
    path = write(tmp_path, spec_dict("s", tmp_path))
    assert load_spec(path).staging_dir == str(tmp_path / "data" / "LocalBackup" / ".staging")
    monkeypatch.setenv("METABACKUP_STAGING_DIR", str(tmp_path / "worker-a" / "staging"))
    assert load_spec(path).staging_dir == str(tmp_path / "worker-a" / "staging")
    monkeypatch.setenv("METABACKUP_STAGING_DIR", "relative/staging")
    with pytest.raises(SpecError, match=r"METABACKUP_STAGING_DIR must be an absolute path"):
        load_spec(path)
    monkeypatch.setenv("METABACKUP_STAGING_DIR", str(tmp_path / "oms" / "staging"))  # inside a source: refused
    with pytest.raises(SpecError, match="staging_dir"):
        load_spec(path)


def test_the_dag_tasks_carry_their_sources_queue_and_the_pool(tmp_path):
    from metabackup.airflow.dag_factory import build_dag, build_restore_dag

    spec = load_spec(write(tmp_path, spec_dict("q", tmp_path, queue="mgmt", pool="backups")))
    backup, restore = build_dag(spec), build_restore_dag(spec)
    queues = {t.task_id: t.queue for t in backup.tasks}
    assert queues["preflight"] == queues["record"] == "mgmt"
    for step in ("check", "decide", "full", "incremental", "archive", "upload", "verify", "retention", "finish"):
        assert queues[f"OMS.{step}"] == "mgmt" and queues[f"DBService.{step}"] == "dbservice_host", step
    assert {t.pool for t in backup.tasks} == {t.pool for t in restore.tasks} == {"backups"}
    restore_queues = {t.task_id: t.queue for t in restore.tasks}
    assert restore_queues["choose"] == "mgmt"
    for step in ("resolve", "verify", "safety_backup", "restore", "validate", "report"):
        assert restore_queues[f"OMS.{step}"] == "mgmt" and restore_queues[f"DBService.{step}"] == "dbservice_host"
    # check -> preflight -> decide; retention -> finish -> record
    assert backup.get_task("OMS.check").downstream_task_ids == {"preflight"}
    assert backup.get_task("preflight").downstream_task_ids == {"OMS.decide", "DBService.decide"}
    assert backup.get_task("OMS.finish").upstream_task_ids == {"OMS.retention"}
    assert backup.get_task("record").upstream_task_ids == {"OMS.finish", "DBService.finish"}
    assert restore.get_task("choose").downstream_task_ids == {"OMS.resolve", "DBService.resolve"}
    # a group not chosen skips all through: its restore needs its verify to have succeeded
    run = restore.get_task("OMS.restore")
    assert run.upstream_task_ids == {"OMS.verify", "OMS.safety_backup"}
    assert run.trigger_rule == "none_failed_min_one_success"


def test_without_queues_the_tasks_go_to_airflows_default_queue(tmp_path):
    from metabackup.airflow.dag_factory import build_dag

    spec = spec_dict("d", tmp_path)
    del spec["sources"]["DBService"]["queue"]
    backup = build_dag(load_spec(write(tmp_path, spec)))
    assert {t.queue for t in backup.tasks} == {"default"}


def test_a_folder_over_the_task_limit_refuses_the_specs_past_it_in_name_order(tmp_path, monkeypatch):
    from metabackup.airflow.dag_factory import dags_for_dag_file

    specs, dags = tmp_path / "specs", tmp_path / "dags"
    specs.mkdir()
    dags.mkdir()
    for name in ("a1", "a2", "a3", "b1"):
        write(specs, spec_dict(name, tmp_path))
        shutil.copy(REPO / "dags" / "backup_default.py", dags / f"backup_{name}.py")
    monkeypatch.setenv("METABACKUP_SPEC_DIR", str(specs))
    monkeypatch.setenv("METABACKUP_MAX_TASKS", "3")
    found, errors = load_spec_dir(specs)
    assert sorted(found) == ["a1", "a2", "a3"]
    (file, fld, why), = [row for error in errors for row in error.problems]
    assert (Path(file).name, fld) == ("b1.yaml", "<file>")
    assert "holds 4 task specs and at most 3 are allowed ($METABACKUP_MAX_TASKS" in why
    assert dags_for_dag_file(dags / "backup_a3.py")[0].dag_id == "backup_a3"
    with pytest.raises(SpecError, match="past the limit in name order"):
        dags_for_dag_file(dags / "backup_b1.py")
    monkeypatch.delenv("METABACKUP_MAX_TASKS")  # the default, 100
    assert dags_for_dag_file(dags / "backup_b1.py")[0].dag_id == "backup_b1"
    monkeypatch.setenv("METABACKUP_MAX_TASKS", "many")
    with pytest.raises(SpecError, match="METABACKUP_MAX_TASKS"):
        load_spec_dir(specs)


def test_a_cached_plan_is_not_used_past_the_task_limit(tmp_path, monkeypatch):
    from metabackup.airflow.dag_factory import dags_for_dag_file

    specs, dags = tmp_path / "specs", tmp_path / "dags"
    specs.mkdir()
    dags.mkdir()
    monkeypatch.setenv("METABACKUP_SPEC_DIR", str(specs))
    monkeypatch.setenv("METABACKUP_PARSE_CACHE", str(tmp_path / "cache"))
    write(specs, spec_dict("z9", tmp_path))
    shutil.copy(REPO / "dags" / "backup_default.py", dags / "backup_z9.py")
    dags_for_dag_file(dags / "backup_z9.py")  # validated and cached
    for name in ("a1", "a2"):
        write(specs, spec_dict(name, tmp_path))
    monkeypatch.setenv("METABACKUP_MAX_TASKS", "2")
    with pytest.raises(SpecError, match="past the limit"):
        dags_for_dag_file(dags / "backup_z9.py")


def test_the_plugin_creates_the_pools_the_specs_name_only_in_the_server_processes(tmp_path):
    from metabackup.airflow import pools

    write(tmp_path, spec_dict("a", tmp_path, pool="nightly"))
    write(tmp_path, spec_dict("b", tmp_path))
    (tmp_path / "c.yaml").write_text("pool: 'quoted.pool'  # a comment\nname: c\n")
    assert pools.pools_named_in(tmp_path) == {"metabackup", "nightly", "quoted.pool"}
    assert pools.is_server_process(["/venv/bin/airflow", "api-server", "--port", "1"])
    assert pools.is_server_process(["/usr/lib/python3/site-packages/airflow/__main__.py", "scheduler"])
    for argv in (["/venv/bin/airflow", "dag-processor"], ["/venv/bin/airflow", "celery", "worker"],
                 ["/venv/bin/airflow", "tasks", "run"], ["/venv/bin/python", "-m", "pytest"], ["airflow"]):
        assert not pools.is_server_process(argv), argv


def test_a_busy_lease_gives_the_pool_slot_up_and_the_last_try_waits_as_before(tmp_path, monkeypatch):
    from airflow.sdk.exceptions import AirflowRescheduleException

    from metabackup import locks
    from metabackup.airflow import operators

    lock = locks.SourceLock(str(tmp_path), "t_20261124100000", "OMS")
    lock.acquire("another run")
    monkeypatch.setattr(operators, "LEASE_WAIT_IN_TASK", 0.1)
    monkeypatch.setattr(operators, "LEASE_RESCHEDULE_AFTER", 0.1)
    monkeypatch.setattr(locks, "DEFAULT_WAIT", 1.0)
    monkeypatch.setattr(locks, "POLL", 0.05)

    class Step:
        log = __import__("logging").getLogger("test")

        @operators.yields_slot_while_lease_busy
        def execute(self, context):
            lock.acquire("this run")
            return "done"

    with pytest.raises(AirflowRescheduleException):
        Step().execute({"task_reschedule_count": 0})
    with pytest.raises(locks.LockBusy, match="locked by another run"):  # the whole wait is used up: fail
        Step().execute({"task_reschedule_count": 5})
    lock.release("another run")
    assert Step().execute({"task_reschedule_count": 1}) == "done"
