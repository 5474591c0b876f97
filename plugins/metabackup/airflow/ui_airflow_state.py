"""What Airflow knows about the tasks on the Backups page: for each backup DAG its last run (state,
type, times, the failed steps), whether it is paused, when the scheduler will create its next run,
the steps running now with the progress they reported; and the id of each asset the page links to.

Read from Airflow's metadata database in the API server, a fixed number of queries whatever the
number of tasks.  Runs in the API server only (it imports Airflow's models)."""

from __future__ import annotations

import json
from typing import Any

PROGRESS_KEY = "progress"


def _iso(moment) -> str | None:
    return moment.isoformat() if moment is not None else None


def airflow_state(dag_ids: list[str], asset_uris: list[str], tasks: list[str] | None = None) -> dict[str, Any]:
    """``{"dags": {dag_id: {...}}, "assets": {uri: id}, "alarms": {task: {source: [alarm, ...]}}}``
    for the given DAGs, asset URIs and backup tasks (their active alarms, from the Variables the
    backup DAGs' ``record`` and ``metabackup_watch`` keep)."""
    from sqlalchemy import func, select

    from airflow.models.asset import AssetModel
    from airflow.models.dag import DagModel
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    dags: dict[str, dict[str, Any]] = {dag_id: {"exists": False, "is_paused": None, "next_run": None,
                                                "last_run": None, "running": []} for dag_id in dag_ids}
    with create_session() as session:
        for model in session.scalars(select(DagModel).where(DagModel.dag_id.in_(dag_ids))):
            dags[model.dag_id].update(exists=True, is_paused=model.is_paused,
                                      next_run=_iso(model.next_dagrun_create_after))
        newest = (select(DagRun.dag_id, func.max(DagRun.run_after).label("run_after"))
                  .where(DagRun.dag_id.in_(dag_ids)).group_by(DagRun.dag_id).subquery())
        runs = session.scalars(select(DagRun).join(newest, (DagRun.dag_id == newest.c.dag_id)
                                                   & (DagRun.run_after == newest.c.run_after)))
        last: dict[str, DagRun] = {}
        for run in runs:
            last.setdefault(run.dag_id, run)
        for dag_id, run in last.items():
            dags[dag_id]["last_run"] = {"run_id": run.run_id, "state": str(run.state.value if hasattr(run.state, "value")
                                                                             else run.state),
                                        "run_type": str(getattr(run.run_type, "value", run.run_type)),
                                        "run_after": _iso(run.run_after), "start": _iso(run.start_date),
                                        "end": _iso(run.end_date), "failed_steps": []}
        pairs = [(dag_id, run.run_id) for dag_id, run in last.items()]
        if pairs:
            wanted = {(d, r) for d, r in pairs}
            rows = session.execute(select(TaskInstance.dag_id, TaskInstance.run_id, TaskInstance.task_id,
                                          TaskInstance.state, TaskInstance.start_date)
                                   .where(TaskInstance.dag_id.in_([d for d, _ in pairs]),
                                          TaskInstance.run_id.in_([r for _, r in pairs]),
                                          TaskInstance.state.in_(["running", "failed", "upstream_failed"])))
            running: list[tuple[str, str, str]] = []
            for dag_id, run_id, task_id, state, started in rows:
                if (dag_id, run_id) not in wanted:
                    continue
                state = str(getattr(state, "value", state))
                if state == "running":
                    dags[dag_id]["running"].append({"task_id": task_id, "start": _iso(started), "progress": None})
                    running.append((dag_id, run_id, task_id))
                elif state == "failed":
                    dags[dag_id]["last_run"]["failed_steps"].append(task_id)
            if running:
                progress = session.execute(select(XComModel.dag_id, XComModel.run_id, XComModel.task_id,
                                                  XComModel.value)
                                           .where(XComModel.key == PROGRESS_KEY,
                                                  XComModel.dag_id.in_([d for d, _, _ in running]),
                                                  XComModel.run_id.in_([r for _, r, _ in running])))
                for dag_id, run_id, task_id, value in progress:
                    for step in dags[dag_id]["running"]:
                        if step["task_id"] == task_id and (dag_id, run_id) in wanted:
                            step["progress"] = _progress_text(XComModel.deserialize_value(_Row(value)))
        assets = {uri: asset_id for asset_id, uri in
                  session.execute(select(AssetModel.id, AssetModel.uri).where(AssetModel.uri.in_(asset_uris)))} \
            if asset_uris else {}
        active = _active_alarms(session, tasks or [])
    for entry in dags.values():
        entry["running"].sort(key=lambda step: step["task_id"])
        if entry["last_run"]:
            entry["last_run"]["failed_steps"].sort()
    return {"dags": dags, "assets": assets, "alarms": active}


def _active_alarms(session, tasks: list[str]) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """The active alarms of each task's sources, read from their Variables (values that are not the
    expected JSON are left out: the page shows alarms, it does not judge the store)."""
    from sqlalchemy import select

    from airflow.models.variable import Variable

    from metabackup import alarms

    keys = {alarms.backup_variable(task): task for task in tasks}
    wanted = [*keys, alarms.RPO_VARIABLE]
    found: dict[str, Any] = {}
    for variable in session.scalars(select(Variable).where(Variable.key.in_(wanted))):
        try:
            found[variable.key] = json.loads(variable.val)
        except (TypeError, ValueError):
            continue
    active: dict[str, dict[str, list[dict[str, Any]]]] = {}

    def add(task: str, source: Any, alarm: Any) -> None:
        if isinstance(source, str) and isinstance(alarm, dict):
            active.setdefault(task, {}).setdefault(source, []).append(
                {k: str(alarm[k])[:300] for k in ("alarm", "raised_at", "run_id", "step", "host", "newest") if alarm.get(k)})

    for key, task in keys.items():
        for source, alarm in (found.get(key) if isinstance(found.get(key), dict) else {}).items():
            add(task, source, alarm)
    rpo = found.get(alarms.RPO_VARIABLE)
    for task in tasks:
        sources = rpo.get(task) if isinstance(rpo, dict) else None
        for source, alarm in (sources if isinstance(sources, dict) else {}).items():
            add(task, source, alarm)
    return active


class _Row:
    """What :meth:`XComModel.deserialize_value` reads a stored value from."""

    def __init__(self, value: Any):
        self.value = value


def _progress_text(value: Any) -> str | None:
    """The line a step reported (a string, or ``{"line": ...}``), never more than 300 characters."""
    if isinstance(value, dict):
        value = value.get("line")
    return str(value)[:300] if value else None
