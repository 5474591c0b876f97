"""The "Backups" page in the Airflow UI: a FastAPI app mounted by the plugin at ``/metabackup``.

* ``GET /metabackup/backups`` - every task, its sets per source and target (type, time, size,
  chain, last verification), with *Back up now* and *Restore* buttons;
* ``GET /metabackup/api/backups`` - the same as JSON.

Both need a logged-in Airflow user (the UI's ``_token`` cookie or a bearer token) and show only
tasks whose backup DAG the user may read.  The buttons trigger runs through Airflow's own REST
API (``POST /api/v2/dags/{dag_id}/dagRuns``) as that user, so Airflow decides who may run what.
"""

from __future__ import annotations

import asyncio
import html
import json
import os
from pathlib import Path
from typing import Any

from airflow.api_fastapi.core_api.security import GetUserDep
from fastapi import FastAPI
from fastapi.responses import HTMLResponse, JSONResponse

from metabackup.overview import overview

SPEC_DIR_ENV = "METABACKUP_SPEC_DIR"

app = FastAPI(title="metabackup", description="Backups of cluster metadata: catalog and actions")


def spec_dir() -> Path:
    """The spec folder the DAG files use: ``$METABACKUP_SPEC_DIR`` or ``include/backup_tasks``
    beside the configured DAGs folder."""
    from airflow.configuration import conf

    from metabackup.airflow.dag_factory import spec_dir_for

    configured = os.environ.get(SPEC_DIR_ENV)
    return Path(configured) if configured else spec_dir_for(conf.get("core", "dags_folder"))


async def _authorized_overview(user: Any) -> dict[str, Any]:
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import DagDetails

    data = await asyncio.to_thread(overview, spec_dir())
    manager = get_auth_manager()
    data["tasks"] = [t for t in data["tasks"]
                     if manager.is_authorized_dag(method="GET", details=DagDetails(id=t["backup_dag_id"]), user=user)]
    data["user"] = user.get_name()
    return data


@app.get("/api/backups")
async def backups_json(user: GetUserDep) -> JSONResponse:
    return JSONResponse(await _authorized_overview(user))


@app.get("/backups", response_class=HTMLResponse)
async def backups_page(user: GetUserDep) -> HTMLResponse:
    return HTMLResponse(render_page(await _authorized_overview(user)))


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def _verification(v: dict[str, Any] | None) -> str:
    if not v:
        return '<span class="muted">never</span>'
    mark = '<span class="ok">ok</span>' if v.get("ok") else f'<span class="bad" title="{html.escape(v.get("error") or "")}">FAILED</span>'
    return f"{mark} {html.escape(str(v.get('verified_at', ''))[:19])}"


def _storage(location: dict[str, Any]) -> str:
    where = "off-cluster" if location.get("off_cluster") else "on-cluster"
    key = location.get("key_id")
    return f'{where}, {"encrypted (key " + html.escape(key) + ")" if key else "unencrypted"}'


def render_page(data: dict[str, Any]) -> str:
    e = html.escape
    parts = []
    for task in data["tasks"]:
        parts.append(f'<section class="task" id="task-{e(task["name"])}"><h2>{e(task["name"])} '
                     f'<small>{e(task["schedule"])}, {e(task["policy"])}</small></h2>'
                     f'<p>{e(task["description"] or "")}</p>'
                     f'<p><button class="act" data-dag="{e(task["backup_dag_id"])}" data-conf="{{}}">Back up now</button> '
                     f'<a href="../dags/{e(task["backup_dag_id"])}">backup DAG</a> · '
                     f'<a href="../dags/{e(task["restore_dag_id"])}">restore DAG</a></p>')
        for src in task["sources"]:
            test = src.get("test_restore")
            test_text = ("never" if not test else
                         f'{"ok" if test["ok"] else "FAILED"} {e(str(test.get("set")))} at {e(str(test.get("at", ""))[:19])}')
            parts.append(f'<h3>{e(src["source"])} <small>{e(src["kind"])} → {e(src["target_type"])} '
                         f'<code>{e(src["target"])}</code>, keeps {src["max_backups"]}, {_storage(src)}; '
                         f'last test restore: {test_text}</small></h3>')
            if src.get("storage_warning"):
                parts.append(f'<p class="bad warn-unencrypted">primary: {e(src["storage_warning"])}</p>')
            for copy in src.get("copies") or []:
                if copy["error"]:
                    parts.append(f'<p class="bad">{e(copy["location"])} <code>{e(copy["target"])}</code>: cannot read '
                                 f'it: {e(copy["error"])}</p>')
                    continue
                problems = ([f'{len(copy["failed_verification"])} failed verification'] if copy["failed_verification"]
                            else []) + ([f'{copy["invalid"]} invalid manifests'] if copy["invalid"] else [])
                parts.append(f'<p class="{"bad" if problems else "muted"}">{e(copy["location"])} ({e(copy["target_type"])}) '
                             f'<code>{e(copy["target"])}</code>: {copy["sets"]} sets ({copy["restorable"]} restorable), '
                             f'newest {e(str(copy["newest"]))}, keeps {copy["max_backups"]}, {_storage(copy)}'
                             f'{"; " + e(", ".join(problems)) if problems else ""}</p>')
                if copy.get("storage_warning"):
                    parts.append(f'<p class="bad warn-unencrypted">{e(copy["location"])}: '
                                 f'{e(copy["storage_warning"])}</p>')
            if src["error"]:
                parts.append(f'<p class="bad">cannot read this target: {e(src["error"])}</p>')
                continue
            pitr = src.get("pitr")
            if pitr and pitr.get("chains"):
                parts.append(f'<p>point in time: from {e(pitr["chains"][0]["start"][:19])} to '
                             f'{e(pitr["chains"][-1]["end"][:19])} (UTC)</p>')
            for gap in (pitr or {}).get("gaps") or []:
                parts.append(f'<p class="bad">point-in-time gap from {e(gap["after_end"][:19])} to '
                             f'{e(gap["before_start"][:19])}, between {e(gap["after"])} and {e(gap["before"])}: '
                             f'{e(gap["reason"])}</p>')
            for bad in src.get("invalid") or []:
                parts.append(f'<p class="bad">invalid manifest <code>{e(bad["name"])}</code>: {e(bad["reason"])}</p>')
            if not src["sets"]:
                parts.append('<p class="muted">no backup set yet</p>')
                continue
            rows = []
            for s in src["sets"]:
                chain = (f'{s["chain_length"]} set(s) from {e(s["chain_root"])}' if s["restorable"]
                         else '<span class="bad">broken chain</span>')
                conf = json.dumps({"source": src["source"], "backup_set": s["set"], "dry_run": True})
                restore = (f'<button class="restore" data-dag="{e(task["restore_dag_id"])}" data-conf="{e(conf)}">'
                           'Restore…</button>') if s["restorable"] else ""
                rows.append(f'<tr><td><code>{e(s["set"])}</code></td><td>{e(s["type"])}</td>'
                            f'<td>{e(s["executed_at"][:19])}</td><td>{_size(s["size"])}</td>'
                            f'<td>{e(s.get("host") or "-")}</td><td>{chain}</td>'
                            f'<td>{_verification(s["verification"])}</td><td>{restore}</td></tr>')
            parts.append('<table><thead><tr><th>set</th><th>type</th><th>executed (UTC)</th><th>size</th>'
                         '<th>taken on</th><th>chain</th><th>last verified</th><th></th></tr></thead><tbody>'
                         + "".join(rows) + "</tbody></table>")
        parts.append("</section>")
    if not data["tasks"]:
        parts.append('<p class="muted">No backup tasks you may read. Create one with '
                     '<code>python -m metabackup new-task</code>.</p>')
    for error in data["spec_errors"]:
        parts.append(f'<pre class="bad">{e(error)}</pre>')
    return PAGE.replace("{{BODY}}", "\n".join(parts))


PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Backups · metabackup</title>
<style>
 body { font-family: system-ui, sans-serif; margin: 1.5rem; color: #1f2937; }
 h1 { font-size: 1.4rem; } h2 { font-size: 1.2rem; margin-top: 2rem; } h3 { font-size: 1rem; margin-bottom: .3rem; }
 small { font-weight: normal; color: #6b7280; }
 table { border-collapse: collapse; width: 100%; font-size: .9rem; }
 th, td { text-align: left; padding: .3rem .6rem; border-bottom: 1px solid #e5e7eb; }
 .muted { color: #9ca3af; } .ok { color: #047857; font-weight: 600; } .bad { color: #b91c1c; font-weight: 600; }
 button { cursor: pointer; } #restore-form { display: none; border: 1px solid #d1d5db; padding: 1rem; margin: 1rem 0; }
 #message { margin: .5rem 0; font-weight: 600; }
</style></head>
<body>
<h1>Backups</h1>
<div id="message"></div>
<form id="restore-form">
 <strong>Restore <span id="rf-set"></span></strong> (<span id="rf-dag"></span>)<br>
 <label>Destination (new directory, or for LDAP a connection id) <input id="rf-dest" size="50"></label><br>
 <label><input type="checkbox" id="rf-dry" checked> dry run (resolve and verify only)</label><br>
 <button type="submit">Trigger restore</button> <button type="button" id="rf-cancel">Cancel</button>
</form>
{{BODY}}
<script>
const message = document.getElementById("message");
async function trigger(dagId, conf) {
  const response = await fetch(`../api/v2/dags/${encodeURIComponent(dagId)}/dagRuns`, {
    method: "POST", credentials: "same-origin", headers: {"Content-Type": "application/json"},
    body: JSON.stringify({logical_date: null, conf: conf}),
  });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) { message.textContent = `Could not trigger ${dagId}: ${body.detail || response.status}`; return; }
  message.innerHTML = `Triggered <a href="../dags/${dagId}/runs/${encodeURIComponent(body.dag_run_id)}">${body.dag_run_id}</a> of ${dagId}`;
}
let pending = null;
document.querySelectorAll("button.act").forEach(b => b.addEventListener("click", () => trigger(b.dataset.dag, JSON.parse(b.dataset.conf))));
document.querySelectorAll("button.restore").forEach(b => b.addEventListener("click", () => {
  pending = {dag: b.dataset.dag, conf: JSON.parse(b.dataset.conf)};
  document.getElementById("rf-set").textContent = `${pending.conf.source} ${pending.conf.backup_set}`;
  document.getElementById("rf-dag").textContent = pending.dag;
  document.getElementById("restore-form").style.display = "block";
}));
document.getElementById("rf-cancel").addEventListener("click", () => { document.getElementById("restore-form").style.display = "none"; });
document.getElementById("restore-form").addEventListener("submit", ev => {
  ev.preventDefault();
  const conf = {...pending.conf, destination: document.getElementById("rf-dest").value, dry_run: document.getElementById("rf-dry").checked};
  trigger(pending.dag, conf);
});
</script>
</body></html>
"""
