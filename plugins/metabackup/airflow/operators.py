"""Operators for one backup task's DAG.  Each loads the spec by path at run time and calls one
pipeline step; none holds state of its own.  A source's tasks (check, decide, snapshot, archive,
upload, verify, replicate, retention, finish) hand files to each other through the staging
directory of the host they run on, so they all carry the source's queue; ``preflight`` and
``record`` only read what those tasks reported (XCom) and run on the spec's queue, anywhere.
Every task names the worker host and queue it ran on, in its log and as its ``worker`` XCom.

Parsing a DAG file builds these operators but runs none of them, so this module imports only
Airflow's base classes: the pipeline (and through it the archive, catalog, encryption and the
sources' and targets' clients) and the spec loader are imported by ``execute``, in the worker.
"""

from __future__ import annotations

import datetime
import functools
import socket
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseBranchOperator, BaseOperator, Context
from airflow.sdk.exceptions import AirflowRescheduleException, AirflowSkipException

from metabackup import progress
from metabackup.airflow.faults import kill_point

if TYPE_CHECKING:
    from metabackup.spec import TaskSpec


def selected_sources(spec: TaskSpec, context: Context) -> list[str]:
    """The run's ``sources`` param (a subset chosen in the trigger form), defaulting to all."""
    chosen = context["params"].get("sources") or [s.name for s in spec.sources]
    unknown = sorted(set(chosen) - {s.name for s in spec.sources})
    if unknown:
        raise ValueError(f"run parameter sources names {unknown}, which task {spec.name} does not back up")
    return [s.name for s in spec.sources if s.name in chosen]


def lease_holder(context: Context) -> str:
    """This DAG run's name on a source's lease (its retries share it, other runs do not)."""
    return f"backup {context['dag_run'].dag_id} run {context['run_id']}"


def execution_time(context: Context) -> str:
    """The run's execution time (its ``run_after``), the ``<execution time>`` of set names."""
    return context["dag_run"].run_after.isoformat()


def worker_host(context: Context) -> str:
    """The worker's host name as its task instance records it (else this machine's FQDN)."""
    return getattr(context["ti"], "hostname", None) or socket.getfqdn()


def announce_worker(operator: BaseOperator, context: Context) -> dict[str, str]:
    """Say where this task runs (log line and the ``worker`` XCom): the worker's host name as its
    task instance records it, and the queue the task was sent to."""
    host = worker_host(context)
    where = {"host": host, "queue": operator.queue}
    operator.log.info("running on worker host %s (queue %s)", host, operator.queue)
    context["ti"].xcom_push(key="worker", value=where)
    return where


#: a busy lease is waited for this long inside a task, then the task gives its pool slot up ...
LEASE_WAIT_IN_TASK = 20.0
#: ... and is rescheduled this much later, until it has waited the lease's whole wait (locks.DEFAULT_WAIT)
LEASE_RESCHEDULE_AFTER = 30.0


def yields_slot_while_lease_busy(method: Callable[..., Any]) -> Callable[..., Any]:
    """For an ``execute`` (or ``choose_branch``) that takes a source's lease: when another run holds
    it, wait :data:`LEASE_WAIT_IN_TASK` seconds, then reschedule the task (state
    ``up_for_reschedule``: its pool slot is free meanwhile, so the holder's own tasks can run and
    let go of the lease) instead of waiting in the slot; once the reschedules add up to the lease
    wait (``$METABACKUP_LOCK_WAIT_SECONDS``), the last try waits the rest and fails as before."""

    @functools.wraps(method)
    def execute(self: BaseOperator, context: Context, *args: Any, **kwargs: Any) -> Any:
        from metabackup import locks

        waited = int(context.get("task_reschedule_count") or 0) * (LEASE_WAIT_IN_TASK + LEASE_RESCHEDULE_AFTER)
        left = locks.DEFAULT_WAIT - waited
        if left <= LEASE_WAIT_IN_TASK + LEASE_RESCHEDULE_AFTER:
            with locks.waiting_at_most(max(left, LEASE_WAIT_IN_TASK)):
                return method(self, context, *args, **kwargs)
        try:
            with locks.waiting_at_most(LEASE_WAIT_IN_TASK):
                return method(self, context, *args, **kwargs)
        except locks.LockBusy as exc:
            self.log.info("%s. Giving the pool slot up; trying again in %.0f s", exc, LEASE_RESCHEDULE_AFTER)
            raise AirflowRescheduleException(datetime.datetime.now(datetime.timezone.utc)
                                             + datetime.timedelta(seconds=LEASE_RESCHEDULE_AFTER)) from None

    return execute


#: the XCom key under which a failed backup step says what failed
FAILURE_KEY = "failure"


def reports_failure(method: Callable[..., Any]) -> Callable[..., Any]:
    """For the ``execute`` (or ``choose_branch``) of a backup step: when it fails, push the XCom
    ``failure`` = ``{"step": <task id>, "error": <the exception's text, cut to 2000 characters>,
    "host": <worker host>, "log_url": <the try's log>}`` (read by the source's ``finish``), then
    re-raise.  A skip or a reschedule is no failure."""

    @functools.wraps(method)
    def execute(self: BaseOperator, context: Context, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, context, *args, **kwargs)
        except (AirflowSkipException, AirflowRescheduleException):
            raise
        except Exception as exc:
            from metabackup.alarms import clip

            ti = context["ti"]
            try:
                ti.xcom_push(key=FAILURE_KEY, value={
                    "step": self.task_id, "error": clip(str(exc) or type(exc).__name__),
                    "host": worker_host(context), "log_url": getattr(ti, "log_url", None)})
            except Exception as push_error:  # the step's own failure is what matters
                self.log.warning("could not record this failure for the finish step: %s", push_error)
            raise

    return execute


class _SpecMixin:
    spec_path: str

    def load(self) -> TaskSpec:
        from metabackup.spec import load_spec

        return load_spec(self.spec_path)


class _SourceOperator(_SpecMixin, BaseOperator):
    """A task of one source's group that runs only when the source is among the run's sources."""

    def __init__(self, *, spec_path: str, source: str, **kwargs: Any):
        super().__init__(**kwargs)
        self.spec_path, self.source = spec_path, source

    def spec_if_selected(self, context: Context) -> TaskSpec:
        """Say where this runs; the spec, or skip when the source is not among this run's sources."""
        announce_worker(self, context)
        spec = self.load()
        if self.source not in selected_sources(spec, context):
            raise AirflowSkipException(f"{self.source} is not among this run's sources")
        return spec


def _source_task(source: str, step: str) -> str:
    """The task id of ``step`` in ``source``'s task group."""
    return f"{source}.{step}"


class BackupCheckOperator(_SourceOperator):
    """One source's preflight, on its own host: the source readable, its target writable with room
    for a new set (the last full's size and growth, +20 %), the staging area with room, stale partial
    files and work directories of failed runs cleared.  Its problems are also its ``problems`` XCom."""

    ui_color = "#e8f0fe"

    @reports_failure
    def execute(self, context: Context) -> dict[str, Any]:
        from metabackup import pipeline

        spec = self.spec_if_selected(context)
        try:
            return pipeline.check_source(spec, self.source, execution_time(context))
        except pipeline.PreflightError as exc:
            context["ti"].xcom_push(key="problems", value=exc.problems)
            raise


class BackupPreflightOperator(_SpecMixin, BaseOperator):
    """Gate of the run (after every source's check, whatever their outcome): fails with every
    source's problems together, so that no source starts unless all can; warns of off-cluster
    locations whose sets would be stored unencrypted.  Reads only XCom: it runs on any worker."""

    ui_color = "#e8f0fe"

    def __init__(self, *, spec_path: str, **kwargs: Any):
        super().__init__(**kwargs)
        self.spec_path = spec_path

    @reports_failure
    def execute(self, context: Context) -> dict[str, Any]:
        from metabackup import pipeline

        announce_worker(self, context)
        spec = self.load()
        pipeline.warn_unencrypted_off_cluster(spec)
        ti = context["ti"]
        report, problems = {}, []
        for name in selected_sources(spec, context):
            check = _source_task(name, "check")
            found = ti.xcom_pull(task_ids=check)
            if found is not None:
                report[name] = found
                continue
            problems += ti.xcom_pull(task_ids=check, key="problems") or [
                f"{name}: its check did not finish (see the log of {check})"]
        if problems:
            raise pipeline.PreflightError(f"preflight failed for task {spec.name}:\n  " + "\n  ".join(problems),
                                          problems)
        return report


class BackupTypeBranchOperator(_SpecMixin, BaseBranchOperator):
    """Chooses ``full`` or ``incremental`` for one source from the policy and the catalog."""

    ui_color = "#fff4d6"

    def __init__(self, *, spec_path: str, source: str, full_task_id: str, incremental_task_id: str, **kwargs: Any):
        super().__init__(**kwargs)
        self.spec_path, self.source = spec_path, source
        self.full_task_id, self.incremental_task_id = full_task_id, incremental_task_id

    @reports_failure
    @yields_slot_while_lease_busy
    def choose_branch(self, context: Context) -> str | Sequence[str] | None:
        from metabackup import pipeline
        from metabackup.manifest import FULL

        announce_worker(self, context)
        spec = self.load()
        if self.source not in selected_sources(spec, context):
            self.log.info("%s is not among this run's sources; skipping it", self.source)
            return None
        run = pipeline.SetRun.of(spec, self.source, execution_time(context), holder=lease_holder(context))
        kill_point(f"{self.source}.decide.before")
        decision = pipeline.decide(run, force_full=bool(context["params"].get("force_full")))
        kill_point(f"{self.source}.decide.after")
        context["ti"].xcom_push(key="decision", value=decision.model_dump(mode="json"))
        return self.full_task_id if decision.type == FULL else self.incremental_task_id


class BackupStepOperator(_SpecMixin, BaseOperator):
    """Runs one pipeline step (snapshot, archive, upload, retention) for one source."""

    #: the step names, each a function of :mod:`metabackup.pipeline` taking the :class:`SetRun`
    STEPS = ("snapshot", "archive", "upload", "retention")

    def __init__(self, *, spec_path: str, source: str, step: str, **kwargs: Any):
        super().__init__(**kwargs)
        if step not in self.STEPS:
            raise ValueError(f"unknown backup step {step!r}")
        self.spec_path, self.source, self.step = spec_path, source, step

    @reports_failure
    @yields_slot_while_lease_busy
    def execute(self, context: Context) -> dict[str, Any]:
        from metabackup import pipeline

        where = announce_worker(self, context)
        run = pipeline.SetRun.of(self.load(), self.source, execution_time(context), holder=lease_holder(context),
                                 host=where["host"])
        scope = context["dag_run"].dag_id
        with progress.reporting_to(lambda line: context["ti"].xcom_push(key="progress", value={"line": line})):
            kill_point(f"{self.source}.{self.step}.before", scope)
            result = getattr(pipeline, self.step)(run)
            kill_point(f"{self.source}.{self.step}.after", scope)
        return result


class BackupVerifyOperator(_SpecMixin, BaseOperator):
    """Verifies the uploaded archive, commits its manifest and emits the location asset event."""

    ui_color = "#e6f4ea"

    def __init__(self, *, spec_path: str, source: str, **kwargs: Any):
        super().__init__(**kwargs)
        self.spec_path, self.source = spec_path, source

    @reports_failure
    @yields_slot_while_lease_busy
    def execute(self, context: Context) -> dict[str, Any]:
        from metabackup import pipeline

        announce_worker(self, context)
        run = pipeline.SetRun.of(self.load(), self.source, execution_time(context), holder=lease_holder(context))
        kill_point(f"{self.source}.verify.before")
        event = pipeline.verify(run)
        kill_point(f"{self.source}.verify.after")
        for outlet in self.outlets:
            context["outlet_events"][outlet].extra = event
        return event


class BackupReplicateOperator(_SpecMixin, BaseOperator):
    """Replicates the set the primary committed (and any ancestor the copy lacks) to one off-site
    copy, verifies and commits it there, and emits the copy's location asset event."""

    ui_color = "#e6f4ea"

    def __init__(self, *, spec_path: str, source: str, copy: int, **kwargs: Any):
        super().__init__(**kwargs)
        self.spec_path, self.source, self.copy = spec_path, source, copy

    @reports_failure
    @yields_slot_while_lease_busy
    def execute(self, context: Context) -> dict[str, Any]:
        from metabackup import pipeline
        from metabackup.replication import replicate

        announce_worker(self, context)
        run = pipeline.SetRun.of(self.load(), self.source, execution_time(context), holder=lease_holder(context))
        kill_point(f"{self.source}.replicate_{self.copy}.before")
        event = replicate(run, self.copy)
        kill_point(f"{self.source}.replicate_{self.copy}.after")
        for outlet in self.outlets:
            context["outlet_events"][outlet].extra = event
        return event


class BackupFinishOperator(_SourceOperator):
    """The end of one source's part of the run, on its own host, whatever happened before: what the
    run committed (from the catalog), the run's work directory and the source's lease freed.

    Also which step failed and why: ``steps`` are the task ids of the source's steps in their order
    (check, decide, full, incremental, archive, upload, verify, replicate_N, retention), then
    ``preflight``; the first whose ``failure`` XCom is set gives ``failed_step``, ``error``, ``host``
    (and ``log_url``) of the result, all None when none failed."""

    def __init__(self, *, steps: Sequence[str] = (), **kwargs: Any):
        super().__init__(**kwargs)
        self.steps = list(steps)

    def execute(self, context: Context) -> dict[str, Any]:
        from metabackup import pipeline

        spec = self.spec_if_selected(context)
        kill_point(f"{self.source}.finish.before")
        result = pipeline.finish_source(spec, self.source, execution_time(context), holder=lease_holder(context))
        kill_point(f"{self.source}.finish.after")
        failure = self.failure(context)
        return {**result, "failed_step": failure.get("step"), "error": failure.get("error"),
                "host": failure.get("host"), "log_url": failure.get("log_url")}

    def failure(self, context: Context) -> dict[str, Any]:
        ti = context["ti"]
        for task_id in self.steps:
            try:
                found = ti.xcom_pull(task_ids=task_id, key=FAILURE_KEY)
            except Exception as exc:  # what the run committed matters more than why it failed
                self.log.warning("cannot read the failure of %s: %s", task_id, exc)
                continue
            if isinstance(found, dict):
                self.log.info("step %s failed on %s: %s", found.get("step"), found.get("host"), found.get("error"))
                return found
        return {}


def load_alarm_state(raw: Any, key: str, logger: Any) -> Any:
    """The JSON a Variable holds (None when missing; an unreadable value is logged and counts as none)."""
    import json

    if raw is None or isinstance(raw, dict):
        return raw
    try:
        return json.loads(raw)
    except (TypeError, ValueError) as exc:
        logger.warning("Variable %s does not hold JSON (%s); counting no alarm as active", key, exc)
        return None


class BackupRecordOperator(_SpecMixin, BaseOperator):
    """Summarises what the run committed (each source's finish step) and fails the run if a
    selected source committed no set.  Reads only XCom: it runs on any worker.

    Before that, the alarm ALM-12034 "Periodic backup failure" (:mod:`metabackup.alarms`): raised
    once for a source a *scheduled* run committed no set for, cleared when a later run commits one;
    the active alarms are kept in the Variable ``metabackup_alarms_<task>``."""

    def __init__(self, *, spec_path: str, **kwargs: Any):
        super().__init__(**kwargs)
        self.spec_path = spec_path

    def execute(self, context: Context) -> dict[str, Any]:
        from metabackup import pipeline

        announce_worker(self, context)
        spec = self.load()
        kill_point("record.before")
        ti = context["ti"]
        finished = {name: ti.xcom_pull(task_ids=_source_task(name, "finish")) for name in selected_sources(spec, context)}
        try:
            self.update_alarms(spec.name, finished, context)
        except Exception as exc:  # the run's own outcome is still recorded (and the failure logged)
            self.log.error("the periodic backup failure alarm could not be updated: %s", exc)
        result = pipeline.summarize(finished)
        kill_point("record.after")
        return result

    def update_alarms(self, task: str, finished: dict[str, dict[str, Any] | None], context: Context) -> None:
        import pendulum
        from airflow.sdk import Variable

        from metabackup import alarms
        from metabackup.airflow.notifier import send_alarm_change

        dag_run = context["dag_run"]
        run_type = getattr(dag_run, "run_type", None)
        scheduled = str(getattr(run_type, "value", run_type)) == "scheduled"
        outcomes = {name: alarms.source_outcome(result) for name, result in finished.items()}
        key = alarms.backup_variable(task)
        state = load_alarm_state(Variable.get(key, default=None), key, self.log)
        new, notes = alarms.after_backup_run(state, task, scheduled, outcomes,
                                             {"dag_id": dag_run.dag_id, "run_id": context["run_id"]},
                                             now=pendulum.now("UTC").to_iso8601_string())
        for note in notes:  # sent before the state is saved: a crash in between repeats, never loses, one
            send_alarm_change(note, context)
        if notes or (new or None) != (state or None):
            Variable.set(key, new, description=f"metabackup: active ALM-12034 alarms of backup task {task}",
                         serialize_json=True)
