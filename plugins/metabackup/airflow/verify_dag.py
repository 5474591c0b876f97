"""``metabackup_verify``: on a schedule, for every task spec and source, re-read every committed
set at its target (checksum and size against the manifest; an encrypted set is decrypted to
nowhere, every chunk's tag checked, and one whose key cannot be had fails as UNRESTORABLE), then
test-restore the newest chain
into a scratch instance.  A failure fails the task and alerts through
:class:`~metabackup.airflow.notifier.MetabackupFailureNotifier`.

Schedule: ``METABACKUP_VERIFY_SCHEDULE`` (a cron expression or preset, or ``none`` for runs only
when triggered; default ``@daily``).  A run triggered with ``{"task": <name>}`` (the Backups page's
*Verify now*) verifies that task only; the other tasks' steps are skipped.
Specs that do not validate are left out here; their own DAG files show the error.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import pendulum
from airflow.sdk import DAG, BaseOperator, Context, Param, TaskGroup
from airflow.sdk.exceptions import AirflowSkipException

from metabackup.airflow.notifier import MetabackupFailureNotifier
from metabackup.spec import SpecError, load_spec

log = logging.getLogger(__name__)

VERIFY_DAG_ID = "metabackup_verify"
SCHEDULE_ENV = "METABACKUP_VERIFY_SCHEDULE"
SCRATCH_ENV = "METABACKUP_SCRATCH_DIR"


class _SourceOperator(BaseOperator):
    def __init__(self, *, spec_path: str, task_name: str, source: str, **kwargs: Any):
        super().__init__(**kwargs)
        self.spec_path, self.task_name, self.source = spec_path, task_name, source

    def skip_unless_chosen(self, context: Context) -> None:
        """A run for one task (the Backups page's *Verify now*: ``{"task": name}``) skips the others."""
        chosen = (context["params"].get("task") or "").strip()
        if chosen and chosen != self.task_name:
            raise AirflowSkipException(f"this run verifies task {chosen} only")


class VerifySetsOperator(_SourceOperator):
    """Re-read every committed set of one source at its target."""

    ui_color = "#e6f4ea"

    def execute(self, context: Context) -> dict[str, Any]:
        from metabackup.verification import verify_sets

        self.skip_unless_chosen(context)
        return verify_sets(load_spec(self.spec_path), self.source)


class ScratchRestoreOperator(_SourceOperator):
    """Restore the newest chain of one source into a scratch instance and validate it."""

    ui_color = "#fce8e6"

    def execute(self, context: Context) -> dict[str, Any]:
        from metabackup.verification import restore_to_scratch

        self.skip_unless_chosen(context)
        return restore_to_scratch(load_spec(self.spec_path), self.source, os.environ.get(SCRATCH_ENV))


def verify_schedule() -> str | None:
    """``$METABACKUP_VERIFY_SCHEDULE`` (a cron expression or preset; ``none``: only when triggered,
    e.g. by the Backups page's *Verify now*), default ``@daily``."""
    value = os.environ.get(SCHEDULE_ENV, "@daily").strip()
    return None if value.lower() in ("", "none") else value


def build_verify_dag(spec_dir: str | Path, dag_file: str | Path | None = None) -> DAG:
    specs = []
    for path in sorted(Path(spec_dir).glob("*.yaml")):
        try:
            specs.append(load_spec(path))
        except (SpecError, OSError) as exc:
            log.warning("verification leaves out %s: %s", path, exc)
    with DAG(
        dag_id=VERIFY_DAG_ID,
        description="Re-read every backup set's checksum and test-restore the newest chain of each source",
        doc_md=__doc__,
        schedule=verify_schedule(),
        start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        catchup=False,
        max_active_runs=1,
        default_args={"owner": "metabackup", "retries": 0, "on_failure_callback": [MetabackupFailureNotifier()]},
        tags=["metabackup", "verification"],
        params={"task": Param("", type="string", title="Task",
                              description="Verify only this backup task (its name); empty: every task.",
                              **({"examples": [spec.name for spec in specs]} if specs else {}))},
    ) as dag:
        for spec in specs:
            with TaskGroup(group_id=spec.name, tooltip=f"backup task {spec.name}"):
                for source in spec.sources:
                    extra = {"queue": spec.queue} if spec.queue else {}
                    with TaskGroup(group_id=source.name):
                        common = {"spec_path": spec.path, "task_name": spec.name, "source": source.name, **extra}
                        checksums = VerifySetsOperator(task_id="checksums", **common)
                        scratch = ScratchRestoreOperator(task_id="test_restore", **common)
                        checksums >> scratch
    if dag_file is not None:
        dag.fileloc = str(Path(dag_file).resolve())
    return dag
