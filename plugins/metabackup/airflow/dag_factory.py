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
    BackupStepOperator,
    BackupTypeBranchOperator,
    BackupVerifyOperator,
)
from metabackup.airflow.timetable import PeriodicFromStartTimetable
from metabackup.naming import TIMESTAMP_FORMAT, task_dir_name
from metabackup.spec import TaskSpec, load_spec

SPEC_DIR_ENV = "METABACKUP_SPEC_DIR"
DAG_FILE_PREFIX = "backup_"
RETRY_DELAY = pendulum.duration(minutes=1)
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


def dag_for_dag_file(dag_file: str | Path) -> DAG:
    """Build the DAG of the spec named after ``dag_file``; a bad spec raises with file and field."""
    spec_path = spec_path_for_dag_file(dag_file)
    if not spec_path.exists():
        raise FileNotFoundError(f"{Path(dag_file).name} expects the task spec {spec_path}, which does not exist")
    dag = build_dag(load_spec(spec_path))
    dag.fileloc = str(Path(dag_file).resolve())  # the DAG belongs to its file, not to this factory
    return dag


def timetable_for(spec: TaskSpec) -> PeriodicFromStartTimetable | None:
    if spec.schedule is None:
        return None
    sched = spec.schedule
    return PeriodicFromStartTimetable(sched.start, sched.period, sched.every, spec.timezone)


def _doc_md(spec: TaskSpec) -> str:
    task_dir = task_dir_name(spec.name, spec.created, spec.timezone)
    if spec.schedule:
        when = f"periodic: every {spec.schedule.every} {spec.schedule.period}(s) from {spec.schedule.start.isoformat()}"
    else:
        when = "manual: run it with **Trigger** (the console's *Start*)"
    policy = spec.policy.type + (f" (n={spec.policy.n})" if spec.policy.n else "")
    rows = "\n".join(
        f"| {s.name} | {s.kind} | {s.target.type} | `{s.target.path}/{task_dir}/` | {s.target.max_backups} |"
        + (f" mirror `{s.target.mirror}`" if s.target.mirror else "")
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
        "retry_delay": RETRY_DELAY,
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
        record = BackupRecordOperator(task_id="record", spec_path=spec.path, trigger_rule=TriggerRule.NONE_FAILED)
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
                verify = BackupVerifyOperator(task_id="verify", outlets=[location_asset(spec, source)], **common)
                retention = BackupStepOperator(task_id="retention", step="retention", **common)
                decide >> [full, incremental] >> archive >> upload >> verify >> retention
            preflight >> group >> record
    return dag
