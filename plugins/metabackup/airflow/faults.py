"""Kill points: the test suite's way to SIGKILL a task's own process at a named point of a step,
once, and so prove that Airflow's retry of that task finishes the run without a partial or
duplicate set.  Inert unless ``METABACKUP_KILL_AT`` is set in the worker's environment (it never
is in a deployment):

    METABACKUP_KILL_AT=OMS.upload.after,OMS.verify.before   points, comma-separated
    METABACKUP_KILL_MARKERS=/some/dir                        one marker file per point fired

A point fires at most once (its marker is created first), so the retry passes it.

``METABACKUP_PAUSE_AT`` (same names) instead stops the task at the point, once: it creates the
marker ``<point>.paused`` and sleeps (up to ``METABACKUP_PAUSE_SECONDS``, default 600), so that a
test can kill the whole worker while the task is in flight.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

KILL_AT_ENV = "METABACKUP_KILL_AT"
PAUSE_AT_ENV = "METABACKUP_PAUSE_AT"
PAUSE_SECONDS_ENV = "METABACKUP_PAUSE_SECONDS"
MARKERS_ENV = "METABACKUP_KILL_MARKERS"


def _first_time(env: str, name: str, marker: str) -> bool:
    """``name`` is among the points ``$env`` names, and its marker did not exist (it does now)."""
    wanted = os.environ.get(env)
    markers = os.environ.get(MARKERS_ENV)
    if not wanted or name not in wanted.split(",") or not markers:
        return False
    try:
        fd = os.open(Path(markers) / marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    os.close(fd)
    return True


def kill_point(name: str, scope: str | None = None) -> None:
    """Fire the point ``name`` (e.g. ``OMS.upload.after``) when listed; with a ``scope`` (a DAG id)
    also when listed as ``<scope>:<name>``, which fires in that DAG only."""
    for point in (name, f"{scope}:{name}") if scope else (name,):
        if _first_time(KILL_AT_ENV, point, point):
            os.kill(os.getpid(), signal.SIGKILL)
        if _first_time(PAUSE_AT_ENV, point, f"{point}.paused"):
            time.sleep(float(os.environ.get(PAUSE_SECONDS_ENV) or 600))
