"""Alarms that are raised once and cleared once: the state transitions, without Airflow.

Two alarms are kept as state between runs (the Airflow side stores the state in a Variable):

* **ALM-12034 "Periodic backup failure"**: a *scheduled* run of a backup task committed no set
  for a source.  Raised once per (task, source): a retry of the run's ``record`` step, or the
  next failed run, finds it active and sends nothing.  Cleared (one ``cleared`` notification)
  by the first later run of the task, of any run type, that commits a set for the source.
* **METABACKUP-RPO-STALE "Recovery point objective missed"**: a source's recovery point status
  (:mod:`metabackup.rpo`) turned ``stale``.  Raised once when it turns stale, cleared once when it
  leaves ``stale`` (to ``ok``, ``late``, ``pending`` or ``manual``).

Each function takes the previous state (whatever the store held: anything that is not the
expected mapping counts as empty) and this run's observations, and returns the new state and the
notifications to send, each a flat JSON-able dict with ``alarm``, ``title``, ``status``
(``raised`` or ``cleared``), ``task`` and ``source``.  A source that is not observed keeps its
state as it was.
"""

from __future__ import annotations

import copy
from typing import Any

PERIODIC_BACKUP_FAILURE = "ALM-12034"
PERIODIC_BACKUP_FAILURE_TITLE = "Periodic backup failure"
RPO_STALE = "METABACKUP-RPO-STALE"
RPO_STALE_TITLE = "Recovery point objective missed"
RAISED, CLEARED = "raised", "cleared"

#: the Variable that holds a backup task's active ALM-12034 alarms (one per task: the runs of two
#: tasks that end together never write the same Variable)
BACKUP_VARIABLE_PREFIX = "metabackup_alarms_"
#: the Variable that holds the active RPO alarms of every task (written by metabackup_watch only)
RPO_VARIABLE = "metabackup_rpo_alarms"
#: an error text is cut to this many characters
ERROR_LIMIT = 2000


def backup_variable(task: str) -> str:
    """The Variable key of one backup task's ALM-12034 state."""
    return f"{BACKUP_VARIABLE_PREFIX}{task}"


def clip(text: Any, limit: int = ERROR_LIMIT) -> str | None:
    """``text`` as a string of at most ``limit`` characters (None stays None)."""
    if text is None:
        return None
    text = str(text)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _mapping(value: Any) -> dict[str, Any]:
    return copy.deepcopy(value) if isinstance(value, dict) else {}


def source_outcome(finished: dict[str, Any] | None) -> dict[str, Any]:
    """What one source's ``finish`` step reported (None: it did not report), as the observation
    :func:`after_backup_run` takes: committed or not, the set, and the failed step, its error and
    host when a step failed."""
    finished = finished or {}
    event = finished.get("event")
    error = finished.get("error")
    if error is None and finished.get("problem"):
        error = finished["problem"]
    if not finished:
        error = "the source's finish step did not report (see its log)"
    return {"committed": bool(event), "set": (event or {}).get("set") if isinstance(event, dict) else None,
            "step": finished.get("failed_step"), "error": clip(error), "host": finished.get("host"),
            "log_url": finished.get("log_url")}


def after_backup_run(state: Any, task: str, scheduled: bool, outcomes: dict[str, dict[str, Any]],
                     run: dict[str, Any] | None = None, now: str | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """ALM-12034 after one run of backup task ``task``.

    ``state``: ``{source: <the alarm raised>}`` for this task.  ``scheduled``: whether the run is a
    scheduled one (only those raise).  ``outcomes``: ``{source: source_outcome(...)}`` for the run's
    selected sources.  ``run``: fields added to every notification (``dag_id``, ``run_id``).
    """
    new = _mapping(state)
    notes: list[dict[str, Any]] = []
    run = dict(run or {})
    for source, outcome in outcomes.items():
        active = new.get(source)
        if outcome.get("committed"):
            if active is not None:
                del new[source]
                raised = active if isinstance(active, dict) else {}
                notes.append({"alarm": PERIODIC_BACKUP_FAILURE, "title": PERIODIC_BACKUP_FAILURE_TITLE,
                              "status": CLEARED, "task": task, "source": source, **run,
                              "set": outcome.get("set"), "raised_at": raised.get("raised_at"),
                              "raised_by_run": raised.get("run_id"), "cleared_at": now})
        elif scheduled and active is None:
            note = {"alarm": PERIODIC_BACKUP_FAILURE, "title": PERIODIC_BACKUP_FAILURE_TITLE, "status": RAISED,
                    "task": task, "source": source, **run, "host": outcome.get("host"),
                    "step": outcome.get("step"), "error": clip(outcome.get("error")),
                    "log_url": outcome.get("log_url"), "raised_at": now}
            notes.append(note)
            new[source] = {k: note[k] for k in ("alarm", "raised_at", "run_id", "step", "host") if k in note}
    return new, notes


def after_rpo_watch(state: Any, statuses: dict[str, dict[str, dict[str, Any]]],
                    now: str | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The RPO alarm after one evaluation.

    ``state``: ``{task: {source: <the alarm raised>}}``.  ``statuses``: ``{task: {source:
    <metabackup.rpo status>}}`` for the tasks evaluated (a task or source left out keeps its state).
    """
    new = _mapping(state)
    notes: list[dict[str, Any]] = []
    for task, sources in statuses.items():
        active_sources = new.get(task) if isinstance(new.get(task), dict) else {}
        for source, status in sources.items():
            stale = status.get("state") == "stale"
            active = active_sources.get(source)
            fields = {"state": status.get("state"), "text": status.get("text"), "newest": status.get("newest"),
                      "age_seconds": status.get("age_seconds"), "stale_after_seconds": status.get("stale_after_seconds")}
            if stale and active is None:
                notes.append({"alarm": RPO_STALE, "title": RPO_STALE_TITLE, "status": RAISED, "task": task,
                              "source": source, **fields, "raised_at": now})
                active_sources[source] = {"alarm": RPO_STALE, "raised_at": now, "newest": status.get("newest")}
            elif not stale and active is not None:
                del active_sources[source]
                raised = active if isinstance(active, dict) else {}
                notes.append({"alarm": RPO_STALE, "title": RPO_STALE_TITLE, "status": CLEARED, "task": task,
                              "source": source, **fields, "raised_at": raised.get("raised_at"), "cleared_at": now})
        if active_sources:
            new[task] = active_sources
        else:
            new.pop(task, None)
    return new, notes
