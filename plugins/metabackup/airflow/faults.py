"""Kill points: the test suite's way to SIGKILL a task's own process at a named point of a step,
once, and so prove that Airflow's retry of that task finishes the run without a partial or
duplicate set.  Inert unless ``METABACKUP_KILL_AT`` is set in the worker's environment (it never
is in a deployment):

    METABACKUP_KILL_AT=OMS.upload.after,OMS.verify.before   points, comma-separated
    METABACKUP_KILL_MARKERS=/some/dir                        one marker file per point fired

A point fires at most once (its marker is created first), so the retry passes it.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

KILL_AT_ENV = "METABACKUP_KILL_AT"
MARKERS_ENV = "METABACKUP_KILL_MARKERS"


def kill_point(name: str) -> None:
    wanted = os.environ.get(KILL_AT_ENV)
    if not wanted or name not in wanted.split(","):
        return
    markers = os.environ.get(MARKERS_ENV)
    if not markers:
        return
    try:
        fd = os.open(Path(markers) / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    os.close(fd)
    os.kill(os.getpid(), signal.SIGKILL)
