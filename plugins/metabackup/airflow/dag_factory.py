"""Compile a validated task spec into its Airflow DAG: parse (spec.py) -> graph (here) -> operators.

Graph of ``backup_<name>``::

    preflight -> [per source TaskGroup:
                    decide (branch) -> full | incremental   (the snapshot; the other is skipped)
                    -> archive -> upload -> verify (commit + asset event) -> retention]
              -> record

The decision is taken per source because each source has its own chain in the catalog.

DAG files stay cheap to parse: this module imports only the spec model and the operator
classes; nothing touches the network, a subprocess or a target at import or build time.
"""

from __future__ import annotations

import os
from pathlib import Path

import pendulum
from airflow.sdk import DAG, Param, TaskGroup, TriggerRule

from metabackup.airflow.assets import location_asset, source_assets
from metabackup.airflow.operators import (
    BackupPreflightOperator,
    BackupRecordOperator,
    BackupReplicateOperator,
    BackupStepOperator,
    BackupTypeBranchOperator,
    BackupVerifyOperator,
)
from metabackup.airflow.restore_operators import (
    RestoreReportOperator,
    RestoreResolveOperator,
    RestoreRunOperator,
    RestoreSafetyBackupOperator,
    RestoreValidateOperator,
    RestoreVerifyOperator,
)
from metabackup.airflow.timetable import PeriodicFromStartTimetable
from metabackup.naming import TIMESTAMP_FORMAT
from metabackup.spec import TaskSpec, load_spec

SPEC_DIR_ENV = "METABACKUP_SPEC_DIR"
DAG_FILE_PREFIX = "backup_"
MAX_RETRY_DELAY = pendulum.duration(minutes=30)


def spec_dir_for(dags_dir: str | Path) -> Path:
    """``$METABACKUP_SPEC_DIR``, or ``include/backup_tasks`` beside the DAGs folder."""
    configured = os.environ.get(SPEC_DIR_ENV)
    return Path(configured) if configured else Path(dags_dir).resolve().parent / "include" / "backup_tasks"


def spec_path_for_dag_file(dag_file: str | Path) -> Path:
    dag_file = Path(dag_file)
    if not dag_file.stem.startswith(DAG_FILE_PREFIX):
        raise ValueError(f"{dag_file.name}: a backup DAG file must be named {DAG_FILE_PREFIX}<task name>.py")
    return spec_dir_for(dag_file.parent) / f"{dag_file.stem.removeprefix(DAG_FILE_PREFIX)}.yaml"


def _spec_for_dag_file(dag_file: str | Path) -> TaskSpec:
    from metabackup.spec import check_no_name_clash

    spec_path = spec_path_for_dag_file(dag_file)
    if not spec_path.exists():
        raise FileNotFoundError(f"{Path(dag_file).name} expects the task spec {spec_path}, which does not exist")
    # Another spec whose name differs only in case (Nightly.yaml beside nightly.yaml) is the same task
    # for output directories: neither file's DAGs are built (one directory listing, no parsing).
    check_no_name_clash(spec_path)
    return load_spec(spec_path)


def dags_for_dag_file(dag_file: str | Path) -> tuple[DAG, DAG]:
    """The backup DAG ``backup_<name>`` and the restore DAG ``restore_<name>`` of one spec."""
    spec = _spec_for_dag_file(dag_file)
    dags = build_dag(spec), build_restore_dag(spec)
    for dag in dags:
        dag.fileloc = str(Path(dag_file).resolve())
    return dags


def timetable_for(spec: TaskSpec) -> PeriodicFromStartTimetable | None:
    if spec.schedule is None:
        return None
    sched = spec.schedule
    return PeriodicFromStartTimetable(sched.start, sched.period, sched.every, spec.timezone)


def _doc_md(spec: TaskSpec) -> str:
    task_dir = spec.task_dir
    if spec.schedule:
        when = f"periodic: every {spec.schedule.every} {spec.schedule.period}(s) from {spec.schedule.start.isoformat()}"
    else:
        when = "manual: run it with **Trigger** (the console's *Start*)"
    policy = spec.policy.type + (f" (n={spec.policy.n})" if spec.policy.n else "")
    rows = "\n".join(
        f"| {s.name} | {s.kind} | {s.target.type} | `{s.target.uri(task_dir)}/` | {s.target.max_backups} |"
        + "".join(f" {fld} `{path}`" for fld, path, _ in s.target.local_dirs() if fld != "path")
        for s in spec.sources
    )
    return f"""### Backup task `{spec.name}`
{spec.description}

* **Spec:** `{spec.path}` (created {spec.created.isoformat()}, cluster version {spec.cluster_version})
* **Type:** {when}
* **Policy:** {policy}
* **Files:** `<version>_<source>_<execution time>.tar.gz` + `.manifest.json`, times as `{TIMESTAMP_FORMAT}` in {spec.timezone}

| source | kind | target | directory | max backups |
|---|---|---|---|---|
{rows}

Trigger with **force_full** to take a full backup now, or pick a subset of **sources**.
"""


def build_dag(spec: TaskSpec) -> DAG:
    source_names = [s.name for s in spec.sources]
    default_args = {
        "owner": "metabackup",
        "retries": spec.retries,
        "retry_delay": pendulum.duration(seconds=spec.retry_delay),
        "retry_exponential_backoff": True,
        "max_retry_delay": MAX_RETRY_DELAY,
    }
    if spec.queue:
        default_args["queue"] = spec.queue
    with DAG(
        dag_id=spec.dag_id,
        description=spec.description or f"Metadata backup task {spec.name}",
        doc_md=_doc_md(spec),
        schedule=timetable_for(spec),
        # The creation time, so a manual run works at any time; the timetable holds scheduled
        # runs back until the spec's start time.
        start_date=spec.created,
        catchup=False,
        max_active_runs=1,
        default_args=default_args,
        tags=["metabackup", spec.type, *source_names, *spec.tags],
        params={
            "force_full": Param(False, type="boolean", title="Force a full backup",
                                description="Take a full backup of every selected source, whatever the policy says."),
            "sources": Param(source_names, type="array", title="Sources",
                             items={"type": "string", "enum": source_names}, uniqueItems=True, minItems=1,
                             description="Back up only these sources in this run."),
        },
    ) as dag:
        preflight = BackupPreflightOperator(task_id="preflight", spec_path=spec.path)
        # record runs whatever happened: it frees the run's staging space and leases, then fails the
        # run if a selected source committed no set
        record = BackupRecordOperator(task_id="record", spec_path=spec.path, trigger_rule=TriggerRule.ALL_DONE)
        for source in spec.sources:
            common = {"spec_path": spec.path, "source": source.name}
            with TaskGroup(group_id=source.name, tooltip=f"{source.name} ({source.kind}) -> {source.target.type}") as group:
                decide = BackupTypeBranchOperator(
                    task_id="decide", full_task_id=f"{group.group_id}.full",
                    incremental_task_id=f"{group.group_id}.incremental", **common,
                )
                inlets = source_assets(source)
                full = BackupStepOperator(task_id="full", step="snapshot", inlets=inlets, **common)
                incremental = BackupStepOperator(task_id="incremental", step="snapshot", inlets=inlets, **common)
                archive = BackupStepOperator(task_id="archive", step="archive",
                                             trigger_rule=TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS, **common)
                upload = BackupStepOperator(task_id="upload", step="upload", **common)
                verify = BackupVerifyOperator(task_id="verify", inlets=inlets, outlets=[location_asset(spec, source)], **common)
                retention = BackupStepOperator(task_id="retention", step="retention", **common)
                replicas = [BackupReplicateOperator(task_id=f"replicate_{number}", copy=number,
                                                    outlets=[location_asset(spec, source, copy)], **common)
                            for number, copy in enumerate(source.copies, 1)]
                decide >> [full, incremental] >> archive >> upload >> verify
                if replicas:
                    verify >> replicas >> retention
                else:
                    verify >> retention
            preflight >> group >> record
    return dag


def restore_dag_id(spec: TaskSpec) -> str:
    return spec.restore_dag_id


def build_restore_dag(spec: TaskSpec) -> DAG:
    """``restore_<name>``: resolve -> verify -> safety_backup -> restore -> validate -> report.

    One restore DAG per task, so its form offers exactly that task's sources and its runs sit
    beside the backups they read.  ``dry_run`` is on by default: a run does everything but the
    safety backup, the restore and the validation, and reports what it would do.
    """
    source_names = [s.name for s in spec.sources]
    locations = list(dict.fromkeys(label for s in spec.sources for label, _ in s.locations()))
    default_args: dict = {"owner": "metabackup", "retries": 0}
    if spec.queue:
        default_args["queue"] = spec.queue
    with DAG(
        dag_id=restore_dag_id(spec),
        description=f"Restore from backup task {spec.name}",
        doc_md=f"""### Restore from backup task `{spec.name}`

Pick a **source**, a **backup_set** (`latest` or a set name such as
`{spec.cluster_version}_{source_names[0]}_<time>`) or, for PostgreSQL, a **point_in_time**
(ISO-8601 with offset), and a **destination**: a new directory (files, postgres, oms, namenode) or
the Airflow connection of an empty directory server (ldap). **in_place** (files only) restores
over the source's own directories after a safety backup, keeping the old ones as
`<dir>.pre-restore-<time>`. **dry_run** (on by default) resolves and verifies the chain and
reports what would happen. A set taken at another cluster version is refused unless
**allow_version_mismatch** is set.
""",
        schedule=None,
        start_date=spec.created,
        catchup=False,
        max_active_runs=1,
        default_args=default_args,
        tags=["metabackup", "restore", *source_names],
        params={
            "source": Param(source_names[0], type="string", enum=source_names, title="Source"),
            "backup_set": Param("latest", type="string", minLength=1, title="Backup set",
                                description="A set name from the Backups page, or latest."),
            "point_in_time": Param(None, type=["null", "string"], title="Point in time (PostgreSQL)",
                                   description="ISO-8601 with offset, e.g. 2026-11-24T10:30:00+08:00; empty for a set."),
            "destination": Param("", type="string", title="Destination",
                                 description="A new absolute directory, or (ldap) an Airflow connection id."),
            "in_place": Param(False, type="boolean", title="Restore in place (files)",
                              description="Over the source's own directories, after a safety backup."),
            "dry_run": Param(True, type="boolean", title="Dry run",
                             description="Resolve and verify only; report what would happen."),
            "allow_version_mismatch": Param(False, type="boolean", title="Allow a cluster version mismatch"),
            "keep_running": Param(False, type="boolean", title="Keep a restored PostgreSQL server running"),
            "target": Param("auto", type="string", enum=["auto", *locations], title="Read from",
                            description="auto: the first location where the chain is intact (primary, mirror, "
                                        "then each off-site copy); or one of them."),
        },
    ) as dag:
        common = {"spec_path": spec.path}
        resolve = RestoreResolveOperator(task_id="resolve", **common)
        verify = RestoreVerifyOperator(task_id="verify", **common)
        safety = RestoreSafetyBackupOperator(task_id="safety_backup", **common)
        run = RestoreRunOperator(task_id="restore", trigger_rule=TriggerRule.NONE_FAILED, **common)
        validate = RestoreValidateOperator(task_id="validate", **common)
        report = RestoreReportOperator(task_id="report", trigger_rule=TriggerRule.ALL_DONE, **common)
        resolve >> verify >> safety >> run >> validate >> report
    return dag
