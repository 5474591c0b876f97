"""Operators of a task's restore DAG.  Each reads the run's params and calls the core
(``metabackup.restore``); the chain resolved first is handed on through XCom (set names only) and
re-checked by every later step, so a retention run in between cannot swap the chain.  ``choose``
picks the ``source`` param's task group; that group's steps carry the source's queue (its host
holds the source's lease, its staging area and, for an in-place restore, its live data).

Parsing a DAG file builds these operators but runs none of them: the core they call (restore,
pipeline, locks, the spec loader) is imported by ``execute``, in the worker."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pendulum
from airflow.sdk import BaseBranchOperator, BaseOperator, Context
from airflow.sdk.exceptions import AirflowSkipException

from metabackup.airflow.operators import announce_worker, yields_slot_while_lease_busy

if TYPE_CHECKING:
    from metabackup import restore
    from metabackup.spec import TaskSpec

RESOLVE_TASK = "resolve"
VERIFY_TASK = "verify"
STEPS = (RESOLVE_TASK, VERIFY_TASK, "safety_backup", "restore", "validate", "report")


def restore_params(context: Context) -> dict[str, Any]:
    params = context["params"]
    return {
        "source": params.get("source"),
        "backup_set": (params.get("backup_set") or "latest").strip(),
        "point_in_time": (params.get("point_in_time") or "").strip() or None,
        "destination": (params.get("destination") or "").strip(),
        "in_place": bool(params.get("in_place")),
        "dry_run": bool(params.get("dry_run", True)),
        "allow_version_mismatch": bool(params.get("allow_version_mismatch")),
        "keep_running": bool(params.get("keep_running")),
        "target": (params.get("target") or "auto").strip(),
    }


class RestoreChooseSourceOperator(BaseBranchOperator):
    """The branch to the task group of the run's ``source`` param (the form offers only the task's
    sources; a run triggered with another is refused here, before anything runs)."""

    ui_color = "#fff4d6"

    def __init__(self, *, source_names: list[str], **kwargs: Any):
        super().__init__(**kwargs)
        self.source_names = list(source_names)

    def choose_branch(self, context: Context) -> str:
        from metabackup.errors import RestoreError

        announce_worker(self, context)
        source = context["params"].get("source")
        if source not in self.source_names:
            raise RestoreError(f"source {source!r} is not a source of this task; choose one of {self.source_names}")
        return f"{source}.{RESOLVE_TASK}"


class _RestoreStep(BaseOperator):
    ui_color = "#fce8e6"
    step = ""

    def __init__(self, *, spec_path: str, source: str, **kwargs: Any):
        super().__init__(**kwargs)
        self.spec_path, self.source = spec_path, source

    def step_id(self, step: str) -> str:
        """The task id of ``step`` of this source's group."""
        return f"{self.source}.{step}"

    def pull(self, context: Context, step: str) -> Any:
        return context["ti"].xcom_pull(task_ids=self.step_id(step))

    def skip_unless_chosen(self, context: Context) -> None:
        """Every step of a group other than the ``source`` param's skips (cleared by hand, say)."""
        chosen = context["params"].get("source")
        if chosen != self.source:
            raise AirflowSkipException(f"this run restores {chosen}, not {self.source}")

    def load(self) -> TaskSpec:
        from metabackup.spec import load_spec

        return load_spec(self.spec_path)

    def holder(self, context: Context) -> str:
        """This restore run's name on the source's lease (held from resolve to report)."""
        return f"restore {context['dag_run'].dag_id} run {context['run_id']}"

    def hold(self, context: Context) -> None:
        from metabackup.locks import lock_for

        p = restore_params(context)
        spec = self.load()
        if p["source"] in [s.name for s in spec.sources]:
            lock_for(spec, p["source"]).acquire(self.holder(context))

    def plan(self, context: Context) -> restore.RestorePlan:
        """The plan for this run's params, checked against the chain the resolve step chose."""
        from metabackup import restore

        p = restore_params(context)
        spec = self.load()
        if p["source"] not in [s.name for s in spec.sources]:
            raise restore.RestoreError(f"task {spec.name} has no source {p['source']!r}")
        resolved = self.pull(context, RESOLVE_TASK) if self.step != RESOLVE_TASK else None
        # later steps restore the set resolve chose ("latest" must not move to the safety backup)
        chosen = resolved["set"] if resolved else p["backup_set"]
        plan = restore.plan_restore(spec, p["source"], chosen, p["point_in_time"], self.location(context))
        if resolved and resolved["chain"] != [m.set for m in plan.chain]:
            raise restore.RestoreError(f"the catalog changed since this run resolved {resolved['chain']}; "
                                       f"it now gives {[m.set for m in plan.chain]}. Trigger the restore again")
        return plan

    def location(self, context: Context) -> str | None:
        """Where this step reads the chain: the ``target`` param, or with ``auto`` the location the
        verify step found intact (resolve's before it; None for resolve itself: the first that has it)."""
        chosen = restore_params(context)["target"]
        if chosen != "auto":
            return chosen
        if self.step == RESOLVE_TASK:
            return None
        if self.step != VERIFY_TASK:
            verified = self.pull(context, VERIFY_TASK)
            if verified and verified.get("location"):
                return verified["location"]
        resolved = self.pull(context, RESOLVE_TASK)
        return resolved.get("location") if resolved else None

    def skip_if_dry_run(self, context: Context, what: str) -> None:
        if restore_params(context)["dry_run"]:
            raise AirflowSkipException(f"dry run: would {what}")


class RestoreResolveOperator(_RestoreStep):
    """Resolve the chain from the catalog (set, latest, or the set reaching a point in time)."""

    step = RESOLVE_TASK

    @yields_slot_while_lease_busy
    def execute(self, context: Context) -> dict[str, Any]:
        from metabackup import restore

        p = restore_params(context)
        announce_worker(self, context)
        self.skip_unless_chosen(context)
        self.hold(context)
        plan = self.plan(context)
        described = plan.describe()
        if p["in_place"] and not plan.source.plugin.in_place:
            raise restore.RestoreError(f"in_place is supported for {', '.join(restore.in_place_kinds())} sources; "
                                       f"give {plan.source.name} ({plan.source.kind}) a new destination")
        if p["in_place"] and plan.source.plugin.needs_service and plan.source.service is None:
            raise restore.RestoreError(f"in-place restore of {plan.source.name} ({plan.source.kind}) needs "
                                       f"sources.{plan.source.name}.service in the spec (systemd: <unit>, or stop, "
                                       "start and status argv lists; data_dirs; owner)")
        if not p["in_place"] and not p["destination"]:
            raise restore.RestoreError("destination is required unless in_place is set")
        if not p["in_place"] and plan.source.plugin.restores_into == "directory":
            restore.check_destination(plan.spec, p["destination"])  # refused before anything runs
        self.log.info("restore of %s: chain %s (%d bytes) at %s", described["source"], " -> ".join(described["chain"]),
                      described["bytes"], described["target"])
        return described


class RestoreVerifyOperator(_RestoreStep):
    """Re-read every archive of the chain against its SHA-256 and check the cluster version."""

    step = VERIFY_TASK

    @yields_slot_while_lease_busy
    def execute(self, context: Context) -> dict[str, Any]:
        from metabackup import restore

        p = restore_params(context)
        announce_worker(self, context)
        self.skip_unless_chosen(context)
        self.hold(context)
        resolved = self.pull(context, RESOLVE_TASK)
        # auto: the first location where the resolved chain is intact (primary, mirror, copies)
        location = None if p["target"] == "auto" else p["target"]
        plan = restore.verified_plan(self.load(), p["source"], resolved["set"], p["point_in_time"], location)
        if [m.set for m in plan.chain] != resolved["chain"]:
            raise restore.RestoreError(f"{plan.location} holds the chain {[m.set for m in plan.chain]}, not "
                                       f"{resolved['chain']} as resolved; trigger the restore again")
        warning = restore.check_cluster_version(plan, p["allow_version_mismatch"])
        self.log.info("verified the chain at %s (%s)", plan.location, plan.target.uri)
        found = None
        if p["in_place"]:  # nothing is changed yet: the service, the live directories, the room beside them
            from metabackup import inplace

            found = inplace.preflight(plan)
        return {"verified": [m.set for m in plan.chain], "version_warning": warning, "location": plan.location,
                "target": plan.target.uri, "in_place": found}


class RestoreSafetyBackupOperator(_RestoreStep):
    """Before an in-place restore, take a full backup of what is there now."""

    step = "safety_backup"

    @yields_slot_while_lease_busy
    def execute(self, context: Context) -> dict[str, Any]:
        from metabackup import inplace, pipeline

        p = restore_params(context)
        announce_worker(self, context)
        self.skip_unless_chosen(context)
        if not p["in_place"]:
            raise AirflowSkipException("not an in-place restore: the current state is left untouched")
        self.skip_if_dry_run(context, "take a safety backup of the current state first")
        self.hold(context)
        found = (self.pull(context, VERIFY_TASK) or {}).get("in_place")
        skipped = inplace.safety_backup_needed(self.plan(context), found) if found else None
        if skipped:
            self.log.warning("NO SAFETY BACKUP: %s", skipped)
            raise AirflowSkipException(f"no safety backup: {skipped}")
        return pipeline.safety_backup(self.load(), p["source"], pendulum.now("UTC").isoformat(),
                                      holder=self.holder(context))


class RestoreRunOperator(_RestoreStep):
    """Restore the chain into the destination (or in place)."""

    step = "restore"

    @yields_slot_while_lease_busy
    def execute(self, context: Context) -> dict[str, Any]:
        from metabackup import restore

        p = restore_params(context)
        announce_worker(self, context)
        self.skip_unless_chosen(context)
        self.hold(context)
        self.skip_if_dry_run(context, f"restore into {p['destination'] or 'place'}")
        plan = self.plan(context)
        if p["in_place"]:
            from metabackup import inplace
            from metabackup.airflow.notifier import raise_alarm

            stamp = pendulum.now("UTC").format("YYYYMMDDHHmmss")
            return inplace.restore_in_place(plan, stamp, alarm=lambda alarm: raise_alarm(alarm, context))
        dest = restore.destination_for(plan, p["destination"], keep_running=p["keep_running"])
        result = restore.execute_plan(plan, dest)
        return {k: v for k, v in result.items() if isinstance(v, (str, int, float, bool, list, dict, type(None)))}


class RestoreValidateOperator(_RestoreStep):
    """Compare the restored state with what the set recorded (entries, identifiers, txids)."""

    step = "validate"

    @yields_slot_while_lease_busy
    def execute(self, context: Context) -> dict[str, Any]:
        from metabackup import restore

        p = restore_params(context)
        announce_worker(self, context)
        self.skip_unless_chosen(context)
        self.hold(context)
        self.skip_if_dry_run(context, "validate the restored state")
        plan = self.plan(context)
        if p["in_place"]:  # again, now that the restore step is over: the service still serves the set
            restored = self.pull(context, "restore") or {}
            return plan.source.plugin.validate_in_place(plan.chain, plan.source, restored.get("rebuilt") or {})
        return restore.validate_restore(plan, p["destination"])


class RestoreReportOperator(_RestoreStep):
    """Say what was done, or for a dry run what would be done; release the source's lease whatever
    happened (it runs when all else is done) and fail the run if the restore did not complete.
    In the groups of the sources not chosen it skips."""

    step = "report"

    def execute(self, context: Context) -> dict[str, Any]:
        from metabackup import restore
        from metabackup.locks import lock_for

        p = restore_params(context)
        announce_worker(self, context)
        self.skip_unless_chosen(context)
        spec = self.load()
        if p["source"] in [s.name for s in spec.sources] and lock_for(spec, p["source"]).release(self.holder(context)):
            self.log.info("released the lease on %s", p["source"])
        resolved = self.pull(context, RESOLVE_TASK) or {}
        verified = self.pull(context, VERIFY_TASK) or {}
        safety = self.pull(context, "safety_backup")
        restored = self.pull(context, "restore")
        validated = self.pull(context, "validate")
        where = "in place" if p["in_place"] else p["destination"]
        lines = [f"{'DRY RUN: would restore' if p['dry_run'] else 'restored'} {resolved.get('source')} "
                 f"({resolved.get('kind')}) set {resolved.get('set')} into {where}",
                 f"chain: {' -> '.join(resolved.get('chain', []))} ({resolved.get('bytes')} bytes), every archive "
                 f"verified at {verified.get('location', resolved.get('location'))} "
                 f"({verified.get('target', resolved.get('target'))})",
                 ]
        if resolved.get("point_in_time"):
            lines.append(f"recovery target time: {resolved['point_in_time']}")
        if verified.get("version_warning"):
            lines.append(f"WARNING: {verified['version_warning']}")
        if p["in_place"]:
            found = verified.get("in_place") or {}
            lines.append(f"service before the restore: {found.get('service', 'unknown')}; live directories: "
                         f"{', '.join(found.get('live_dirs', []))}")
            lines.append(f"safety backup: {safety['set'] if safety else ('would be taken first' if p['dry_run'] else 'NONE (see the safety_backup step)')}")
            if restored and "downtime_s" in restored:
                lines.append(f"service down for {restored['downtime_s']:.1f} s (stop to validated start); previous "
                             f"data kept at {', '.join(d['previous'] for d in restored['in_place'] if d['previous'])}")
        if restored:
            lines.append(f"restore result: {restored}")
        if validated:
            lines.append(f"validation: {validated}")
        for line in lines:
            self.log.info("%s", line)
        if not resolved or not verified or (not p["dry_run"] and (restored is None or validated is None)):
            raise restore.RestoreError("the restore did not complete: a step before this report failed (see it); "
                                       "the source's lease was released")
        return {"dry_run": p["dry_run"], "resolved": resolved, "safety_backup": safety, "restored": restored,
                "validated": validated, "summary": lines}
