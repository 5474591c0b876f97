"""``metabackup_rotate_keys``: triggered by hand, re-wraps every encrypted set's data key of one
backup task under a new key-encryption key (:func:`metabackup.rotation.rotate`).  Archives are not
rewritten; each manifest is replaced atomically, so a failed or killed run is simply triggered again.

The form asks for the task, the new key's id (an Airflow connection whose password holds it, or a
key_id with a key_command in the spec) and optionally the old key's id.  No key material passes
through the form, the logs or XCom: only key ids, fingerprints and counts.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pendulum
from airflow.sdk import DAG, BaseOperator, Context, Param

from metabackup.airflow.notifier import MetabackupFailureNotifier
from metabackup.spec import SpecError, load_spec

log = logging.getLogger(__name__)

ROTATE_DAG_ID = "metabackup_rotate_keys"
_KEY_ID = r"^[A-Za-z0-9_.\-]{1,250}$"


class RotateKeysOperator(BaseOperator):
    """Re-wrap the data keys of the chosen task's sets (the spec is the one whose name the form gives)."""

    ui_color = "#fff4e5"

    def __init__(self, *, spec_paths: dict[str, str], **kwargs: Any):
        super().__init__(**kwargs)
        self.spec_paths = spec_paths

    def execute(self, context: Context) -> dict[str, Any]:
        from metabackup.rotation import rotate

        params = context["params"]
        task = params["task"]
        if task not in self.spec_paths:
            raise ValueError(f"task {task!r} has no spec in the spec folder (known: {sorted(self.spec_paths)})")
        spec = load_spec(self.spec_paths[task])
        report = rotate(spec, params["new_key_id"], old_key_id=params.get("old_key_id") or None)
        log.info("every encrypted set of %s is under key %s now; set encryption.key_id: %s in %s, then retire the "
                 "old key", spec.name, params["new_key_id"], params["new_key_id"], spec.path)
        return report


def build_rotate_keys_dag(spec_dir: str | Path, dag_file: str | Path | None = None) -> DAG:
    spec_paths = {}
    for path in sorted(Path(spec_dir).glob("*.yaml")):
        try:
            spec = load_spec(path)
        except (SpecError, OSError) as exc:
            log.warning("key rotation leaves out %s: %s", path, exc)
            continue
        spec_paths[spec.name] = spec.path
    names = sorted(spec_paths) or ["(none)"]
    with DAG(
        dag_id=ROTATE_DAG_ID,
        description="Re-wrap every encrypted backup set's data key under a new key (archives unchanged)",
        doc_md=__doc__,
        schedule=None,
        start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        catchup=False,
        max_active_runs=1,
        default_args={"owner": "metabackup", "retries": 0, "on_failure_callback": [MetabackupFailureNotifier()]},
        tags=["metabackup", "encryption"],
        params={
            "task": Param(names[0], type="string", enum=names, title="Backup task"),
            "new_key_id": Param("", type="string", pattern=_KEY_ID, title="New key id",
                                description="The Airflow connection (its password holds the new key)."),
            "old_key_id": Param(None, type=["null", "string"], title="Old key id (optional)",
                                description="Only the sets under this key; empty: every set not under the new key."),
        },
    ) as dag:
        RotateKeysOperator(task_id="rotate", spec_paths=spec_paths)
    if dag_file is not None:
        dag.fileloc = str(Path(dag_file).resolve())
    return dag
