"""The "Backups" page in the Airflow UI: a FastAPI app mounted by the plugin at ``/metabackup``,
shown inside Airflow's own layout (an external view: *Browse > Backups*, ``/plugin/backups``).

* ``GET /metabackup/backups`` - every task at a glance: its last run (state, link, failed steps),
  next scheduled run, the steps running now with their progress; per source the recovery point
  status, where the sets are (off-cluster, encrypted), the target's usage and free space, links
  to the lineage assets, charts of set size and run time, the chain diagram, and the sets with
  their chains and last verification; *Back up now* (optionally full), *Verify now* and *Restore…*;
* ``GET /metabackup/api/backups`` - the same as JSON.

Both need a logged-in Airflow user (the UI's ``_token`` cookie or a bearer token) and show only
tasks whose backup DAG the user may read; the buttons are offered only to users who may trigger
that task's runs, and they trigger them through Airflow's own REST API
(``POST /api/v2/dags/{dag_id}/dagRuns``) as that user, so Airflow decides who may run what.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path
from typing import Any

from airflow.api_fastapi.core_api.security import GetUserDep
from fastapi import FastAPI
from fastapi.responses import HTMLResponse, JSONResponse

from metabackup.airflow.ui_render import render_page
from metabackup.overview import overview

SPEC_DIR_ENV = "METABACKUP_SPEC_DIR"

log = logging.getLogger(__name__)

app = FastAPI(title="metabackup", description="Backups of cluster metadata: catalog and actions")


def spec_dir() -> Path:
    """The spec folder the DAG files use: ``$METABACKUP_SPEC_DIR`` or ``include/backup_tasks``
    beside the configured DAGs folder."""
    from airflow.configuration import conf

    from metabackup.airflow.dag_factory import spec_dir_for

    configured = os.environ.get(SPEC_DIR_ENV)
    return Path(configured) if configured else spec_dir_for(conf.get("core", "dags_folder"))


def _permitted(manager: Any, user: Any, tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The tasks whose backup DAG the user may read, each marked with whether they may trigger its
    runs (``can_trigger``) and the verification DAG's (``can_verify``)."""
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails

    from metabackup.airflow.verify_dag import VERIFY_DAG_ID

    can_verify = manager.is_authorized_dag(method="POST", access_entity=DagAccessEntity.RUN,
                                           details=DagDetails(id=VERIFY_DAG_ID), user=user)
    permitted = []
    for task in tasks:
        if not manager.is_authorized_dag(method="GET", details=DagDetails(id=task["backup_dag_id"]), user=user):
            continue
        task["can_trigger"] = manager.is_authorized_dag(method="POST", access_entity=DagAccessEntity.RUN,
                                                        details=DagDetails(id=task["backup_dag_id"]), user=user)
        task["can_verify"] = can_verify
        permitted.append(task)
    return permitted


def _with_airflow_state(data: dict[str, Any]) -> dict[str, Any]:
    """Each task's last run, next run and running steps; each asset's id (the page links to them)."""
    from metabackup.airflow.ui_airflow_state import airflow_state

    uris = sorted({uri for task in data["tasks"] for src in task["sources"]
                   for uri in [*src.get("asset_uris", []), src["target"], *(c["target"] for c in src["copies"])]})
    state = airflow_state([t["backup_dag_id"] for t in data["tasks"]], uris, [t["name"] for t in data["tasks"]])
    for task in data["tasks"]:
        task["airflow"] = state["dags"][task["backup_dag_id"]]
        for src in task["sources"]:
            src["alarms"] = state["alarms"].get(task["name"], {}).get(src["source"], [])
    data["assets"] = state["assets"]
    return data


class _Timings:
    """How long each part of building the page took: logged, and sent as a ``Server-Timing``
    header (a browser's developer tools show it)."""

    def __init__(self) -> None:
        self.parts: list[tuple[str, float]] = []
        self._last = time.monotonic()

    def mark(self, name: str) -> None:
        now = time.monotonic()
        self.parts.append((name, now - self._last))
        self._last = now

    def header(self) -> str:
        return ", ".join(f"{name};dur={seconds * 1000:.0f}" for name, seconds in self.parts)

    def log(self, what: str, tasks: int) -> None:
        log.info("%s of %d tasks built in %.2f s (%s)", what, tasks, sum(s for _, s in self.parts),
                 ", ".join(f"{name} {seconds:.2f} s" for name, seconds in self.parts))


async def _authorized_overview(user: Any, timings: _Timings) -> dict[str, Any]:
    from airflow.api_fastapi.app import get_auth_manager

    data = await asyncio.to_thread(overview, spec_dir())
    timings.mark("catalogs")
    data["tasks"] = _permitted(get_auth_manager(), user, data["tasks"])
    data["user"] = user.get_name()
    timings.mark("permissions")
    data = await asyncio.to_thread(_with_airflow_state, data)
    timings.mark("airflow")
    return data


@app.get("/api/backups")
async def backups_json(user: GetUserDep) -> JSONResponse:
    timings = _Timings()
    data = await _authorized_overview(user, timings)
    timings.log("Backups data", len(data["tasks"]))
    return JSONResponse(data, headers={"Server-Timing": timings.header()})


@app.get("/backups", response_class=HTMLResponse)
async def backups_page(user: GetUserDep) -> HTMLResponse:
    timings = _Timings()
    data = await _authorized_overview(user, timings)
    page = await asyncio.to_thread(render_page, data)
    timings.mark("render")
    timings.log("Backups page", len(data["tasks"]))
    return HTMLResponse(page, headers={"Server-Timing": timings.header()})
