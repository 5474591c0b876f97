"""Compile a validated task spec into its Airflow DAG: parse (spec.py) -> plan (here) -> graph (here)
-> operators.

Graph of ``backup_<name>``::

    per source TaskGroup:  check ─┐
                                  preflight (all checks passed?)
                                  └─> decide (branch) -> full | incremental (the snapshot; the other is skipped)
                                      -> archive -> upload -> verify (commit + asset event)
                                      -> replicate_N -> retention -> finish (whatever happened)
    record (after every source's finish)

The decision is taken per source because each source has its own chain in the catalog.  A
source's tasks carry its queue (its own, else the spec's): they hand files to each other through
the staging directory of the host whose worker listens on it.  ``preflight`` and ``record`` read
only XCom and run on the spec's queue.  Every task of both DAGs draws a slot from the spec's
``pool`` (``metabackup``: created with one slot when missing, the cluster manager's one task at a time).

Graph of ``restore_<name>``: ``choose`` (a branch on the ``source`` param) -> that source's
TaskGroup ``resolve -> verify -> safety_backup -> restore -> validate -> report``, on its queue.

DAG files stay cheap to parse: nothing touches the network, a subprocess or a target at import or
build time.  A validated spec is first reduced to its *plan* (:func:`dag_plan`: plain JSON values,
everything the two DAGs are built from), and the DAGs are built from the plan alone.  The plan of a
spec that validated is kept (:mod:`metabackup.airflow.parse_cache`), so the next parse of the same
spec by the same code imports neither the spec models nor the source kinds and target types, and
reads no YAML; the operators import the core only when they run.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pendulum
from airflow.sdk import DAG, Asset, Param, TaskGroup, TriggerRule

from metabackup.airflow import parse_cache
from metabackup.airflow.operators import (
    BackupCheckOperator,
    BackupFinishOperator,
    BackupPreflightOperator,
    BackupRecordOperator,
    BackupReplicateOperator,
    BackupStepOperator,
    BackupTypeBranchOperator,
    BackupVerifyOperator,
)
from metabackup.airflow.restore_operators import (
    RestoreChooseSourceOperator,
    RestoreReportOperator,
    RestoreResolveOperator,
    RestoreRunOperator,
    RestoreSafetyBackupOperator,
    RestoreValidateOperator,
    RestoreVerifyOperator,
)
from metabackup.airflow.timetable import PeriodicFromStartTimetable

if TYPE_CHECKING:
    from metabackup.spec import TaskSpec

SPEC_DIR_ENV = "METABACKUP_SPEC_DIR"
DAG_FILE_PREFIX = "backup_"
MAX_RETRY_DELAY = pendulum.duration(minutes=30)


# ---------------------------------------------------------------------------------------------
# Params with shared schemas
# ---------------------------------------------------------------------------------------------
# Airflow deep-copies a DAG's params into every operator it builds; with a plain dict as schema that
# copies every schema once per task, the most expensive step of building our DAGs.  A schema here
# is built once per shape (same keywords, same values) and shared: read-only, it is its own copy.
# It is still a dict (list) to Airflow, jsonschema and the serializer, so the serialized DAG and
# the validation of run params are the same as with plain ones.
def _read_only(self: Any, *args: Any, **kwargs: Any) -> None:
    raise TypeError("a Param schema of a metabackup DAG is shared between its tasks and read-only")


class _SharedList(list):
    __setitem__ = __delitem__ = __iadd__ = __imul__ = _read_only
    append = extend = insert = remove = pop = clear = sort = reverse = _read_only

    def __copy__(self) -> _SharedList:
        return self

    def __deepcopy__(self, memo: Any) -> _SharedList:
        return self


class _SharedSchema(dict):
    __setitem__ = __delitem__ = __ior__ = _read_only
    update = pop = popitem = clear = setdefault = _read_only

    def __copy__(self) -> _SharedSchema:
        return self

    def __deepcopy__(self, memo: Any) -> _SharedSchema:
        return self


def _shared(value: Any) -> Any:
    if isinstance(value, dict):
        return _SharedSchema({k: _shared(v) for k, v in value.items()})
    if isinstance(value, list):
        return _SharedList(_shared(v) for v in value)
    return value


_SCHEMAS: dict[str, _SharedSchema] = {}


def _param(default: Any, description: str | None = None, **schema: Any) -> Param:
    """``Param(default, description, **schema)`` with the schema shared by every Param of its shape."""
    key = repr(schema)
    shared = _SCHEMAS.get(key)
    if shared is None:
        shared = _SCHEMAS[key] = _shared(schema)
    return Param(default, description, schema=shared)


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
    from metabackup.spec import check_no_name_clash, check_task_limit, load_spec

    spec_path = spec_path_for_dag_file(dag_file)
    if not spec_path.exists():
        raise FileNotFoundError(f"{Path(dag_file).name} expects the task spec {spec_path}, which does not exist")
    # Another spec whose name differs only in case (Nightly.yaml beside nightly.yaml) is the same task
    # for output directories: neither file's DAGs are built (one directory listing, no parsing).
    check_no_name_clash(spec_path)
    check_task_limit(spec_path)  # more task specs in the folder than allowed: those past the limit are refused
    return load_spec(spec_path)


def plan_for_dag_file(dag_file: str | Path) -> dict[str, Any]:
    """The plan of the spec of one DAG file: cached if its bytes and our code are unchanged since it
    last validated, else validated now (raising what :func:`metabackup.spec.load_spec` raises)."""
    spec_path = spec_path_for_dag_file(dag_file)
    if not spec_path.exists():
        raise FileNotFoundError(f"{Path(dag_file).name} expects the task spec {spec_path}, which does not exist")
    cached, key = parse_cache.lookup(spec_path)
    if cached is not None:
        return _decode_plan(cached)
    plan = dag_plan(_spec_for_dag_file(dag_file))
    if key is not None:
        encoded = _encode_plan(plan)
        if _same_plan(_decode_plan(_json_copy(encoded)), plan):  # stored only if it reads back equal
            parse_cache.store(spec_path, key, encoded)
    return plan


def dags_for_dag_file(dag_file: str | Path) -> tuple[DAG, DAG]:
    """The backup DAG ``backup_<name>`` and the restore DAG ``restore_<name>`` of one spec."""
    plan = plan_for_dag_file(dag_file)
    dags = build_dag_from_plan(plan), build_restore_dag_from_plan(plan)
    for dag in dags:
        dag.fileloc = str(Path(dag_file).resolve())
    return dags


def timetable_for(spec: TaskSpec) -> PeriodicFromStartTimetable | None:
    if spec.schedule is None:
        return None
    sched = spec.schedule
    return PeriodicFromStartTimetable(sched.start, sched.period, sched.every, spec.timezone)


# ---------------------------------------------------------------------------------------------
# The plan: what the DAGs are built from
# ---------------------------------------------------------------------------------------------
def dag_plan(spec: TaskSpec) -> dict[str, Any]:
    """Everything :func:`build_dag_from_plan` and :func:`build_restore_dag_from_plan` need from a
    validated spec, as plain values (the two times as pendulum DateTimes; :func:`_encode_plan` makes
    them JSON)."""
    task_dir = spec.task_dir
    return {
        "path": spec.path,
        "name": spec.name,
        "dag_id": spec.dag_id,
        "restore_dag_id": restore_dag_id(spec),
        "description": spec.description or f"Metadata backup task {spec.name}",
        "doc_md": _doc_md(spec),
        "restore_doc_md": _restore_doc_md(spec),
        "schedule": None if spec.schedule is None else {
            "start": spec.schedule.start, "period": spec.schedule.period, "every": spec.schedule.every},
        "timezone": spec.timezone,
        "created": spec.created,
        "type": spec.type,
        "retries": spec.retries,
        "retry_delay": spec.retry_delay,
        "queue": spec.queue,
        "pool": spec.pool,
        "tags": list(spec.tags),
        "sources": [{
            "name": s.name,
            "queue": s.queue or spec.queue,
            "tooltip": f"{s.name} ({s.kind}) -> {s.target.type}",
            "inlets": list(s.plugin.asset_uris(s.options)),
            "location": s.target.uri(task_dir),
            "copies": [copy.uri(task_dir) for copy in s.copies],
        } for s in spec.sources],
        "locations": list(dict.fromkeys(label for s in spec.sources for label, _ in s.locations())),
    }


def _encode_time(moment: Any) -> dict[str, Any]:
    tz = moment.tzinfo
    return {"iso": moment.isoformat(), "tz": tz.name, "fixed": isinstance(tz, pendulum.FixedTimezone)}


def _decode_time(data: dict[str, Any]) -> Any:
    moment = pendulum.parse(data["iso"], exact=True)
    if not data["fixed"] or moment.tzinfo.name != data["tz"]:
        moment = moment.in_timezone(pendulum.timezone(data["tz"]))
    return moment


def _encode_plan(plan: dict[str, Any]) -> dict[str, Any]:
    encoded = {**plan, "created": _encode_time(plan["created"])}
    if plan["schedule"] is not None:
        encoded["schedule"] = {**plan["schedule"], "start": _encode_time(plan["schedule"]["start"])}
    return encoded


def _decode_plan(encoded: dict[str, Any]) -> dict[str, Any]:
    plan = {**encoded, "created": _decode_time(encoded["created"])}
    if encoded["schedule"] is not None:
        plan["schedule"] = {**encoded["schedule"], "start": _decode_time(encoded["schedule"]["start"])}
    return plan


def _json_copy(value: Any) -> Any:
    import json

    return json.loads(json.dumps(value))


def _same_plan(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Equal values, and the times equal down to their time zone objects."""
    times = [("created",)] + ([("schedule", "start")] if b["schedule"] is not None else [])
    for path in times:
        x, y = a, b
        for part in path:
            x, y = x[part], y[part]
        if x != y or repr(x.tzinfo) != repr(y.tzinfo) or type(x.tzinfo) is not type(y.tzinfo):
            return False
    return a == b


def _doc_md(spec: TaskSpec) -> str:
    from metabackup.naming import TIMESTAMP_FORMAT

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


def _restore_doc_md(spec: TaskSpec) -> str:
    source_names = [s.name for s in spec.sources]
    return f"""### Restore from backup task `{spec.name}`

Pick a **source**, a **backup_set** (`latest` or a set name such as
`{spec.cluster_version}_{source_names[0]}_<time>`) or, for PostgreSQL, a **point_in_time**
(ISO-8601 with offset), and a **destination**: a new directory (files, postgres, oms, namenode) or
the Airflow connection of an empty directory server (ldap). **in_place** restores over the
source's live data instead: safety backup, rebuild beside it, stop the service (the spec's
`service:` block), swap directories (the old ones kept as `<dir>.pre-restore-<time>`), start,
validate; any failure after the stop rolls back to the old data. **dry_run** (on by default) resolves and verifies the chain and
reports what would happen. A set taken at another cluster version is refused unless
**allow_version_mismatch** is set.
"""


# ---------------------------------------------------------------------------------------------
# The graphs
# ---------------------------------------------------------------------------------------------
def build_dag(spec: TaskSpec) -> DAG:
    return build_dag_from_plan(dag_plan(spec))


def build_dag_from_plan(plan: dict[str, Any]) -> DAG:
    source_names = [s["name"] for s in plan["sources"]]
    default_args = {
        "owner": "metabackup",
        "retries": plan["retries"],
        "retry_delay": pendulum.duration(seconds=plan["retry_delay"]),
        "retry_exponential_backoff": True,
        "max_retry_delay": MAX_RETRY_DELAY,
    }
    if plan["queue"]:
        default_args["queue"] = plan["queue"]
    default_args["pool"] = plan["pool"]
    sched = plan["schedule"]
    with DAG(
        dag_id=plan["dag_id"],
        description=plan["description"],
        doc_md=plan["doc_md"],
        schedule=None if sched is None else PeriodicFromStartTimetable(sched["start"], sched["period"], sched["every"],
                                                                       plan["timezone"]),
        # The creation time, so a manual run works at any time; the timetable holds scheduled
        # runs back until the spec's start time.
        start_date=plan["created"],
        catchup=False,
        max_active_runs=1,
        default_args=default_args,
        tags=["metabackup", plan["type"], *source_names, *plan["tags"]],
        params={
            "force_full": _param(False, type="boolean", title="Force a full backup",
                                 description="Take a full backup of every selected source, whatever the policy says."),
            # examples: Airflow's trigger form shows an array with examples as a multi-select
            "sources": _param(source_names, type="array", title="Sources", examples=source_names,
                              items={"type": "string", "enum": source_names}, uniqueItems=True, minItems=1,
                              description="Back up only these sources in this run (all of them by default)."),
        },
    ) as dag:
        spec_path = plan["path"]
        # preflight runs after every check, whatever their outcome: it fails with all their problems
        preflight = BackupPreflightOperator(task_id="preflight", spec_path=spec_path, trigger_rule=TriggerRule.ALL_DONE)
        # record runs whatever happened (each finish has freed its source's staging space and lease),
        # then fails the run if a selected source committed no set
        record = BackupRecordOperator(task_id="record", spec_path=spec_path, trigger_rule=TriggerRule.ALL_DONE)
        for source in plan["sources"]:
            common = {"spec_path": spec_path, "source": source["name"]}
            if source["queue"]:
                common["queue"] = source["queue"]
            with TaskGroup(group_id=source["name"], tooltip=source["tooltip"]) as group:
                check = BackupCheckOperator(task_id="check", **common)
                decide = BackupTypeBranchOperator(
                    task_id="decide", full_task_id=f"{group.group_id}.full",
                    incremental_task_id=f"{group.group_id}.incremental", **common,
                )
                inlets = [Asset(uri=uri, group="metabackup-source") for uri in source["inlets"]]
                full = BackupStepOperator(task_id="full", step="snapshot", inlets=inlets, **common)
                incremental = BackupStepOperator(task_id="incremental", step="snapshot", inlets=inlets, **common)
                archive = BackupStepOperator(task_id="archive", step="archive",
                                             trigger_rule=TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS, **common)
                upload = BackupStepOperator(task_id="upload", step="upload", **common)
                verify = BackupVerifyOperator(task_id="verify", inlets=inlets,
                                              outlets=[_location_asset(source["location"])], **common)
                retention = BackupStepOperator(task_id="retention", step="retention", **common)
                replicas = [BackupReplicateOperator(task_id=f"replicate_{number}", copy=number,
                                                    outlets=[_location_asset(uri)], **common)
                            for number, uri in enumerate(source["copies"], 1)]
                steps = [check, decide, full, incremental, archive, upload, verify, *replicas, retention]
                finish = BackupFinishOperator(task_id="finish", trigger_rule=TriggerRule.ALL_DONE,
                                              steps=[t.task_id for t in steps] + [preflight.task_id], **common)
                decide >> [full, incremental] >> archive >> upload >> verify
                if replicas:
                    verify >> replicas >> retention
                else:
                    verify >> retention
                retention >> finish
            check >> preflight >> decide
            finish >> record
    return dag


def _location_asset(uri: str) -> Asset:
    """As :func:`metabackup.airflow.assets.location_asset`, from the location's URI."""
    return Asset(uri=uri, group="metabackup-location")


def restore_dag_id(spec: TaskSpec) -> str:
    return spec.restore_dag_id


def build_restore_dag(spec: TaskSpec) -> DAG:
    return build_restore_dag_from_plan(dag_plan(spec))


def build_restore_dag_from_plan(plan: dict[str, Any]) -> DAG:
    """``restore_<name>``: choose -> <source>.resolve -> verify -> safety_backup -> restore ->
    validate -> report, the chosen source's group on its queue (the others skipped).

    One restore DAG per task, so its form offers exactly that task's sources and its runs sit
    beside the backups they read.  ``dry_run`` is on by default: a run does everything but the
    safety backup, the restore and the validation, and reports what it would do.
    """
    source_names = [s["name"] for s in plan["sources"]]
    locations = plan["locations"]
    default_args: dict = {"owner": "metabackup", "retries": 0, "pool": plan["pool"]}
    if plan["queue"]:
        default_args["queue"] = plan["queue"]
    with DAG(
        dag_id=plan["restore_dag_id"],
        description=f"Restore from backup task {plan['name']}",
        doc_md=plan["restore_doc_md"],
        schedule=None,
        start_date=plan["created"],
        catchup=False,
        max_active_runs=1,
        default_args=default_args,
        tags=["metabackup", "restore", *source_names],
        params={
            "source": _param(source_names[0], type="string", enum=source_names, title="Source",
                             description="The source whose set is restored."),
            "backup_set": _param("latest", type="string", minLength=1, title="Backup set",
                                 description="A set name from the Backups page, or latest."),
            "point_in_time": _param(None, type=["null", "string"], title="Point in time (PostgreSQL)",
                                    description="ISO-8601 with offset, e.g. 2026-11-24T10:30:00+08:00; empty for a set."),
            "destination": _param("", type="string", title="Destination",
                                  description="A new absolute directory, or (ldap) an Airflow connection id."),
            "in_place": _param(False, type="boolean", title="Restore in place",
                               description="Over the source's live data (its service: block in the spec), after a "
                                           "safety backup; rolled back if the restored service fails its checks."),
            "dry_run": _param(True, type="boolean", title="Dry run",
                              description="Resolve and verify only; report what would happen."),
            "allow_version_mismatch": _param(False, type="boolean", title="Allow a cluster version mismatch",
                                             description="Restore a set taken on another cluster version than "
                                                         "the spec's cluster_version."),
            "keep_running": _param(False, type="boolean", title="Keep a restored PostgreSQL server running",
                                   description="Leave the PostgreSQL server a restore to a new directory "
                                               "started running (to inspect it); stopped otherwise."),
            "target": _param("auto", type="string", enum=["auto", *locations], title="Read from",
                             description="auto: the first location where the chain is intact (primary, mirror, "
                                         "then each off-site copy); or one of them."),
        },
    ) as dag:
        choose = RestoreChooseSourceOperator(task_id="choose", source_names=source_names)
        for source in plan["sources"]:
            common = {"spec_path": plan["path"], "source": source["name"]}
            if source["queue"]:
                common["queue"] = source["queue"]
            with TaskGroup(group_id=source["name"], tooltip=f"restore {source['tooltip']}"):
                resolve = RestoreResolveOperator(task_id="resolve", **common)
                verify = RestoreVerifyOperator(task_id="verify", **common)
                safety = RestoreSafetyBackupOperator(task_id="safety_backup", **common)
                # the restore runs after a skipped safety backup (not in place), but only in the
                # chosen group: verify is its upstream too, and must have succeeded
                run = RestoreRunOperator(task_id="restore", trigger_rule=TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS,
                                         **common)
                validate = RestoreValidateOperator(task_id="validate", **common)
                report = RestoreReportOperator(task_id="report", trigger_rule=TriggerRule.ALL_DONE, **common)
                resolve >> verify >> safety >> run >> validate >> report
                verify >> run
            choose >> resolve
    return dag
