"""``[core] hostname_callable`` for the CeleryExecutor harness (:mod:`harness.airflow_celery`).

Every worker of the harness runs on this one machine, so Airflow's default (the machine's FQDN)
would record the same ``hostname`` on every task instance.  The harness sets
``AIRFLOW__CORE__HOSTNAME_CALLABLE=harness.hostname.from_env`` for all its processes and
``METABACKUP_WORKER_HOSTNAME=<worker name>`` for each worker alone: a task instance then records the
name of the worker that ran it; the other components fall back to the FQDN.
"""

from __future__ import annotations

import os
import socket

ENV = "METABACKUP_WORKER_HOSTNAME"


def from_env() -> str:
    """``$METABACKUP_WORKER_HOSTNAME`` when set and not empty, else the machine's FQDN."""
    return os.environ.get(ENV) or socket.getfqdn()
