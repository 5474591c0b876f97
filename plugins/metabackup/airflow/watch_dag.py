"""``metabackup_watch``: on a schedule, the recovery point status (:mod:`metabackup.rpo`) of every
source of every task spec, and the alarm METABACKUP-RPO-STALE "Recovery point objective missed":
raised once when a source turns ``stale``, cleared once when it leaves ``stale``, through the
notifier's channels (webhook and e-mail, see :mod:`metabackup.airflow.notifier`).  The active
alarms are kept in the Variable ``metabackup_rpo_alarms``.

Schedule: ``METABACKUP_WATCH_SCHEDULE`` (a cron expression or preset; default every 15 minutes,
``*/15 * * * *``).  The specs are read when the task runs, not when the DAG file is parsed; a spec
that does not load is logged and left out (its alarms, if any, stay as they were).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pendulum
from airflow.sdk import DAG, BaseOperator, Context

from metabackup.airflow.notifier import MetabackupFailureNotifier

WATCH_DAG_ID = "metabackup_watch"
SCHEDULE_ENV = "METABACKUP_WATCH_SCHEDULE"
DEFAULT_SCHEDULE = "*/15 * * * *"


class RpoWatchOperator(BaseOperator):
    """Every spec's recovery point status; raises and clears the RPO alarm.  Returns the status
    ``{task: {source: {"state", "text", ...}}}``."""

    ui_color = "#fef7e0"

    def __init__(self, *, spec_dir: str, **kwargs: Any):
        super().__init__(**kwargs)
        self.spec_dir = spec_dir

    def statuses(self) -> dict[str, dict[str, dict[str, Any]]]:
        from metabackup import rpo
        from metabackup.spec import load_spec

        found: dict[str, dict[str, dict[str, Any]]] = {}
        for path in sorted(Path(self.spec_dir).glob("*.yaml")):
            try:
                spec = load_spec(path)
            except Exception as exc:  # one broken spec must not hide the others' status
                self.log.warning("left out %s: it does not load: %s", path, exc)
                continue
            try:
                found[spec.name] = rpo.task_status(spec)
            except Exception as exc:
                self.log.warning("left out task %s: its status could not be evaluated: %s", spec.name, exc)
                continue
            for source, status in found[spec.name].items():
                self.log.info("%s %s: %s (%s)", spec.name, source, status["state"], status["text"])
        return found

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow.sdk import Variable

        from metabackup import alarms
        from metabackup.airflow.notifier import send_alarm_change

        statuses = self.statuses()
        raw = Variable.get(alarms.RPO_VARIABLE, default=None)
        try:
            state = json.loads(raw) if raw is not None else None
        except ValueError as exc:
            self.log.warning("Variable %s does not hold JSON (%s); counting no alarm as active", alarms.RPO_VARIABLE, exc)
            state = None
        new, notes = alarms.after_rpo_watch(state, statuses, now=pendulum.now("UTC").to_iso8601_string())
        for note in notes:  # sent before the state is saved: a crash in between repeats, never loses, one
            send_alarm_change(note, context)
        if notes or (new or None) != (state or None):
            Variable.set(alarms.RPO_VARIABLE, new, description="metabackup: active RPO stale alarms",
                         serialize_json=True)
        return statuses


def build_watch_dag(spec_dir: str | Path, dag_file: str | Path | None = None) -> DAG:
    """The DAG; reads nothing (no spec, no target) while it is built."""
    with DAG(
        dag_id=WATCH_DAG_ID,
        description="Recovery point status of every backup source; alarm when one is stale",
        doc_md=__doc__,
        schedule=os.environ.get(SCHEDULE_ENV) or DEFAULT_SCHEDULE,
        start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        catchup=False,
        max_active_runs=1,
        default_args={"owner": "metabackup", "retries": 0, "on_failure_callback": [MetabackupFailureNotifier()]},
        tags=["metabackup", "monitoring"],
    ) as dag:
        RpoWatchOperator(task_id="rpo", spec_dir=str(spec_dir))
    if dag_file is not None:
        dag.fileloc = str(Path(dag_file).resolve())
    return dag
