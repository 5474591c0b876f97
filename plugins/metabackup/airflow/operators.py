"""Operators for one backup task's DAG.  Each loads the spec by path at run time and calls one
pipeline step; none holds state of its own, so any worker that can read the spec, the sources,
the target and the staging directory can run any of them.

Parsing a DAG file builds these operators but runs none of them, so this module imports only
Airflow's base classes: the pipeline (and through it the archive, catalog, encryption and the
sources' and targets' clients) and the spec loader are imported by ``execute``, in the worker.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseBranchOperator, BaseOperator, Context

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


class _SpecMixin:
    spec_path: str

    def load(self) -> TaskSpec:
        from metabackup.spec import load_spec

        return load_spec(self.spec_path)


class BackupPreflightOperator(_SpecMixin, BaseOperator):
    """Targets reachable and writable, free space at least the last full backup's size (+20 %)."""

    ui_color = "#e8f0fe"

    def __init__(self, *, spec_path: str, **kwargs: Any):
        super().__init__(**kwargs)
        self.spec_path = spec_path

    def execute(self, context: Context) -> dict[str, Any]:
        from metabackup import pipeline

        spec = self.load()
        return pipeline.preflight(spec, selected_sources(spec, context), execution_time(context))


class BackupTypeBranchOperator(_SpecMixin, BaseBranchOperator):
    """Chooses ``full`` or ``incremental`` for one source from the policy and the catalog."""

    ui_color = "#fff4d6"

    def __init__(self, *, spec_path: str, source: str, full_task_id: str, incremental_task_id: str, **kwargs: Any):
        super().__init__(**kwargs)
        self.spec_path, self.source = spec_path, source
        self.full_task_id, self.incremental_task_id = full_task_id, incremental_task_id

    def choose_branch(self, context: Context) -> str | Sequence[str] | None:
        from metabackup import pipeline
        from metabackup.manifest import FULL

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

    def execute(self, context: Context) -> dict[str, Any]:
        from metabackup import pipeline

        run = pipeline.SetRun.of(self.load(), self.source, execution_time(context), holder=lease_holder(context))
        kill_point(f"{self.source}.{self.step}.before")
        result = getattr(pipeline, self.step)(run)
        kill_point(f"{self.source}.{self.step}.after")
        return result


class BackupVerifyOperator(_SpecMixin, BaseOperator):
    """Verifies the uploaded archive, commits its manifest and emits the location asset event."""

    ui_color = "#e6f4ea"

    def __init__(self, *, spec_path: str, source: str, **kwargs: Any):
        super().__init__(**kwargs)
        self.spec_path, self.source = spec_path, source

    def execute(self, context: Context) -> dict[str, Any]:
        from metabackup import pipeline

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

    def execute(self, context: Context) -> dict[str, Any]:
        from metabackup import pipeline
        from metabackup.replication import replicate

        run = pipeline.SetRun.of(self.load(), self.source, execution_time(context), holder=lease_holder(context))
        kill_point(f"{self.source}.replicate_{self.copy}.before")
        event = replicate(run, self.copy)
        kill_point(f"{self.source}.replicate_{self.copy}.after")
        for outlet in self.outlets:
            context["outlet_events"][outlet].extra = event
        return event


class BackupRecordOperator(_SpecMixin, BaseOperator):
    """Summarises what the run committed (from the catalog) and frees its staging space."""

    def __init__(self, *, spec_path: str, **kwargs: Any):
        super().__init__(**kwargs)
        self.spec_path = spec_path

    def execute(self, context: Context) -> dict[str, Any]:
        from metabackup import pipeline

        spec = self.load()
        kill_point("record.before")
        result = pipeline.record(spec, selected_sources(spec, context), execution_time(context),
                                 holder=lease_holder(context))
        kill_point("record.after")
        return result
