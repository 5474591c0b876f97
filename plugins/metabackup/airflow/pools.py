"""The Airflow pools the backup and restore DAGs draw from, created when missing.

Every task of a ``backup_<name>`` and ``restore_<name>`` DAG takes one slot of its spec's ``pool``
(``metabackup`` unless the spec names another).  The scheduler never queues a task whose pool does
not exist, so the plugin creates each missing pool, with **one slot** (the cluster manager runs one
backup task at a time; waiting runs queue up in Airflow), when Airflow loads it in a process that
has the metadata database (the API server and the scheduler).  An existing pool is never changed:
widen it with ``airflow pools set metabackup 2 "metabackup backups and restores"`` or in the UI
(*Admin > Pools*).

The pools named by specs are read from the spec folder when the plugin loads; a spec added later
with a new pool name gets its pool at the next start of the API server, or by hand as above.
"""

from __future__ import annotations

import logging
import re
import sys
from pathlib import Path

log = logging.getLogger(__name__)

DEFAULT_POOL = "metabackup"  # as metabackup.spec.DEFAULT_POOL (not imported: the spec models are heavy)
DEFAULT_SLOTS = 1
DESCRIPTION = "metabackup backups and restores (one slot: one task at a time, as the cluster manager runs them)"
_POOL_LINE = re.compile(r"^pool:\s*['\"]?([A-Za-z0-9][A-Za-z0-9_.\-]{0,255})['\"]?\s*(?:#.*)?$", re.MULTILINE)
_MAX_BYTES = 64 * 1024
#: the Airflow commands whose process creates missing pools (they hold the metadata database; a
#: DAG file processor or a task must not reach for it)
SERVER_COMMANDS = ("api-server", "scheduler", "standalone")


def pools_named_in(spec_dir: Path) -> set[str]:
    """The default pool and every pool a spec file in ``spec_dir`` names (its top-level ``pool:``
    line; the spec itself is validated when its DAG file is parsed)."""
    names = {DEFAULT_POOL}
    try:
        paths = sorted(spec_dir.glob("*.y*ml"))
    except OSError:
        return names
    for path in paths:
        try:
            with open(path, "rb") as handle:
                text = handle.read(_MAX_BYTES).decode("utf-8", "replace")
        except OSError:
            continue
        names.update(_POOL_LINE.findall(text))
    return names


def ensure_pools(names: set[str], slots: int = DEFAULT_SLOTS) -> list[str]:
    """Create each pool of ``names`` that does not exist, with ``slots`` slots; return those created.
    Needs the metadata database (raises what SQLAlchemy raises without it)."""
    from airflow.models.pool import Pool

    created = []
    for name in sorted(names):
        if Pool.get_pool(name) is None:
            Pool.create_or_update_pool(name, slots=slots, description=DESCRIPTION, include_deferred=False)
            created.append(name)
            log.info("created the Airflow pool %s with %d slot(s) for metabackup's DAGs", name, slots)
    return created


def is_server_process(argv: list[str] | None = None) -> bool:
    """This process is ``airflow api-server``, ``scheduler`` or ``standalone``."""
    argv = sys.argv if argv is None else argv
    return len(argv) > 1 and "airflow" in argv[0] and argv[1] in SERVER_COMMANDS


def ensure_pools_at_load() -> list[str]:
    """In the API server, scheduler or standalone: :func:`ensure_pools` for the spec folder that
    Airflow's DAGs folder implies.  Nothing elsewhere (DAG file processors, workers, tasks), and a
    failure is logged, never raised: it must not stop Airflow from loading the plugin."""
    if not is_server_process():
        return []
    try:
        from airflow.configuration import conf

        from metabackup.airflow.dag_factory import spec_dir_for

        return ensure_pools(pools_named_in(spec_dir_for(conf.get("core", "dags_folder"))))
    except Exception as exc:  # noqa: BLE001 - never stop Airflow from loading the plugin
        log.warning("metabackup could not create its pools (create them with `airflow pools set`): %s", exc)
        return []
