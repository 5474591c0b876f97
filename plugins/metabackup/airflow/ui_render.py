"""The Backups page's HTML from the overview (:mod:`metabackup.overview`) joined with what Airflow
knows (:mod:`metabackup.airflow.ui_airflow_state`).  Server-rendered, self-contained (styles,
pictures and the small script are inline: it works offline), every text escaped.

The page runs inside Airflow's layout (an iframe of the *Backups* external view) and follows its
light or dark theme; links to Airflow's own pages open in the top window."""

from __future__ import annotations

import json
from html import escape as e
from typing import Any

from metabackup.airflow.ui_svg import chain_diagram, duration_chart, size_chart, size_text
from metabackup.alarms import PERIODIC_BACKUP_FAILURE, PERIODIC_BACKUP_FAILURE_TITLE, RPO_STALE, RPO_STALE_TITLE

RPO_LABEL = {"ok": "RPO ok", "late": "RPO late", "stale": "RPO stale", "pending": "no set yet", "manual": "manual"}
RPO_ORDER = ("stale", "late", "pending", "ok", "manual")
ALARM_TITLES = {PERIODIC_BACKUP_FAILURE: PERIODIC_BACKUP_FAILURE_TITLE, RPO_STALE: RPO_STALE_TITLE}
RUN_STATES = {"success": "ok", "failed": "bad", "running": "run", "queued": "run"}


def _time(text: str | None) -> str:
    return e(text[:19].replace("T", " ")) if text else "-"


def _verification(v: dict[str, Any] | None) -> str:
    if not v:
        return '<span class="muted">never</span>'
    mark = ('<span class="ok">ok</span>' if v.get("ok")
            else f'<span class="bad" title="{e(v.get("error") or "")}">FAILED</span>')
    return f"{mark} {_time(str(v.get('verified_at', '')))}"


def _storage(location: dict[str, Any]) -> str:
    where = ('<span class="tag off">off-cluster</span>' if location.get("off_cluster")
             else '<span class="tag on">on-cluster</span>')
    key = location.get("key_id")
    crypt = (f'<span class="tag enc" title="key {e(key)}">encrypted</span>' if key
             else '<span class="tag plain">unencrypted</span>')
    return f"{where} {crypt}"


def _asset_link(assets: dict[str, int], uri: str, label: str) -> str:
    asset_id = assets.get(uri)
    if asset_id is None:
        return f'<span class="asset muted" title="no asset event yet">{e(label)}</span>'
    return f'<a class="asset" target="_top" href="../assets/{int(asset_id)}" title="{e(uri)}">{e(label)}</a>'


def task_rpo(task: dict[str, Any]) -> str:
    """The worst recovery point status among the task's sources."""
    states = {src.get("rpo", {}).get("state", "manual") for src in task["sources"]}
    return next((s for s in RPO_ORDER if s in states), "manual")


def _last_run(task: dict[str, Any]) -> str:
    state = task.get("airflow") or {}
    run = state.get("last_run")
    if not state.get("exists", True):
        return '<span class="muted">its DAG is not loaded yet</span>'
    if run is None:
        return '<span class="muted">never run</span>'
    css = RUN_STATES.get(run["state"], "muted")
    link = (f'<a target="_top" href="../dags/{e(task["backup_dag_id"])}/runs/{e(run["run_id"])}">'
            f'{e(run["run_id"])}</a>')
    failed = (f' <span class="bad">failed at {e(", ".join(run["failed_steps"]))}</span>'
              if run.get("failed_steps") else "")
    return (f'<span class="state {css}" data-state="{e(run["state"])}">{e(run["state"])}</span> {link} '
            f'<small>({e(run["run_type"])}, {_time(run.get("start") or run.get("run_after"))} UTC)</small>{failed}')


def _next_run(task: dict[str, Any]) -> str:
    state = task.get("airflow") or {}
    if task["type"] != "periodic":
        return "manual task"
    if state.get("is_paused"):
        return '<span class="bad">paused</span>'
    return f"{_time(state.get('next_run'))} UTC" if state.get("next_run") else "-"


def _running(task: dict[str, Any]) -> str:
    steps = (task.get("airflow") or {}).get("running") or []
    return "".join(f'<p class="progress"><span class="state run">running</span> <code>{e(step["task_id"])}</code> '
                   f'since {_time(step.get("start"))} UTC'
                   f'{" &mdash; " + e(step["progress"]) if step.get("progress") else ""}</p>' for step in steps)


def _actions(task: dict[str, Any]) -> str:
    if not task.get("can_trigger"):
        return '<p class="muted readonly">read-only: you may not trigger runs of this task</p>'
    verify = (f' <button class="act verify" data-dag="metabackup_verify" data-conf="{e(json.dumps({"task": task["name"]}))}">'
              'Verify now</button>') if task.get("can_verify") else ""
    return (f'<p class="actions"><button class="act backup" data-dag="{e(task["backup_dag_id"])}" data-conf="{{}}">'
            f'Back up now</button> <label><input type="checkbox" class="force-full"> force full</label>{verify} '
            f'&middot; <a target="_top" href="../dags/{e(task["backup_dag_id"])}">backup DAG</a> &middot; '
            f'<a target="_top" href="../dags/{e(task["restore_dag_id"])}">restore DAG</a></p>')


def _source(task: dict[str, Any], src: dict[str, Any], assets: dict[str, int]) -> str:
    parts = []
    rpo = src.get("rpo") or {"state": "manual", "text": ""}
    test = src.get("test_restore")
    test_text = ("never" if not test else
                 f'{"ok" if test["ok"] else "FAILED"} {e(str(test.get("set")))} at {_time(str(test.get("at", "")))}')
    free = src.get("free_bytes")
    usage = (f'{len(src["sets"])} sets, {size_text(src.get("used_bytes") or 0)} used'
             f'{"; " + size_text(free) + " free" if free is not None else ""}')
    lineage = " ".join(_asset_link(assets, uri, uri) for uri in src.get("asset_uris", []))
    locations = " ".join([_asset_link(assets, src["target"], "primary"),
                          *(_asset_link(assets, c["target"], c["location"]) for c in src["copies"])])
    parts.append(f'<div class="source" id="source-{e(task["name"])}-{e(src["source"])}" data-rpo="{e(rpo["state"])}">'
                 f'<h3>{e(src["source"])} <small>{e(src["kind"])} &rarr; {e(src["target_type"])} '
                 f'<code>{e(src["target"])}</code>, keeps {src["max_backups"]}</small></h3>'
                 f'<p><span class="rpo rpo-{e(rpo["state"])}">{e(RPO_LABEL.get(rpo["state"], rpo["state"]))}</span> '
                 f'<small class="rpo-text">{e(rpo.get("text") or "")}</small></p>'
                 f'<p>{_storage(src)} <span class="usage">{e(usage)}</span> &middot; last test restore: {test_text}</p>'
                 f'<p class="lineage">lineage: {lineage or "-"} &rarr; {locations}</p>')
    for alarm in src.get("alarms") or []:
        title = ALARM_TITLES.get(alarm.get("alarm"), "")
        detail = ", ".join(f"{k} {alarm[k]}" for k in ("step", "host", "newest") if alarm.get(k))
        parts.append(f'<p class="alarm bad" data-alarm="{e(alarm.get("alarm", ""))}">&#9888; {e(alarm.get("alarm", ""))} '
                     f'{e(title)}: active since {_time(alarm.get("raised_at"))} UTC'
                     f'{" (" + e(detail) + ")" if detail else ""}</p>')
    if src.get("storage_warning"):
        parts.append(f'<p class="bad warn-unencrypted">primary: {e(src["storage_warning"])}</p>')
    for copy in src.get("copies") or []:
        if copy["error"]:
            parts.append(f'<p class="bad">{e(copy["location"])} <code>{e(copy["target"])}</code>: cannot read it: '
                         f'{e(copy["error"])}</p>')
            continue
        problems = ([f'{len(copy["failed_verification"])} failed verification'] if copy["failed_verification"]
                    else []) + ([f'{copy["invalid"]} invalid manifests'] if copy["invalid"] else [])
        parts.append(f'<p class="{"bad" if problems else "muted"}">{e(copy["location"])} ({e(copy["target_type"])}) '
                     f'<code>{e(copy["target"])}</code>: {copy["sets"]} sets ({copy["restorable"]} restorable), '
                     f'newest {e(str(copy["newest"]))}, keeps {copy["max_backups"]} {_storage(copy)}'
                     f'{"; " + e(", ".join(problems)) if problems else ""}</p>')
        if copy.get("storage_warning"):
            parts.append(f'<p class="bad warn-unencrypted">{e(copy["location"])}: {e(copy["storage_warning"])}</p>')
    if src["error"]:
        parts.append(f'<p class="bad">cannot read this target: {e(src["error"])}</p></div>')
        return "".join(parts)
    pitr = src.get("pitr")
    if pitr and pitr.get("chains"):
        parts.append(f'<p>point in time: from {_time(pitr["chains"][0]["start"])} to '
                     f'{_time(pitr["chains"][-1]["end"])} (UTC)</p>')
    for gap in (pitr or {}).get("gaps") or []:
        parts.append(f'<p class="bad">point-in-time gap from {_time(gap["after_end"])} to '
                     f'{_time(gap["before_start"])}, between {e(gap["after"])} and {e(gap["before"])}: '
                     f'{e(gap["reason"])}</p>')
    for bad in src.get("invalid") or []:
        parts.append(f'<p class="bad">invalid manifest <code>{e(bad["name"])}</code>: {e(bad["reason"])}</p>')
    if not src["sets"]:
        parts.append('<p class="muted">no backup set yet</p></div>')
        return "".join(parts)
    parts.append('<div class="pictures">' + size_chart(src["source"], src["sets"])
                 + duration_chart(src["source"], src["sets"]) + chain_diagram(src["source"], src["sets"])
                 + '<span class="legend"><i class="swatch full"></i> full <i class="swatch incremental"></i> '
                   'incremental</span></div>')
    rows = []
    for s in src["sets"]:
        chain = (f'{s["chain_length"]} set(s) from {e(s["chain_root"])}' if s["restorable"]
                 else '<span class="bad">broken chain</span>')
        conf = json.dumps({"source": src["source"], "backup_set": s["set"], "dry_run": True})
        restore = (f'<button class="restore" data-dag="{e(task["restore_dag_id"])}" data-conf="{e(conf)}">'
                   'Restore…</button>') if s["restorable"] and task.get("can_trigger") else ""
        rows.append(f'<tr><td><code>{e(s["set"])}</code></td><td>{e(s["type"])}</td>'
                    f'<td>{_time(s["executed_at"])}</td><td>{size_text(s["size"])}</td>'
                    f'<td>{e(s.get("host") or "-")}</td><td>{chain}</td>'
                    f'<td>{_verification(s["verification"])}</td><td>{restore}</td></tr>')
    parts.append(f'<details class="sets"><summary>{len(src["sets"])} sets</summary>'
                 '<table><thead><tr><th>set</th><th>type</th><th>executed (UTC)</th><th>size</th>'
                 '<th>taken on</th><th>chain</th><th>last verified</th><th></th></tr></thead><tbody>'
                 + "".join(rows) + "</tbody></table></details></div>")
    return "".join(parts)


def _summary(tasks: list[dict[str, Any]]) -> str:
    counts = {state: 0 for state in RPO_ORDER}
    for task in tasks:
        for src in task["sources"]:
            counts[(src.get("rpo") or {}).get("state", "manual")] += 1
    failed = [t["name"] for t in tasks if ((t.get("airflow") or {}).get("last_run") or {}).get("state") == "failed"]
    running = [t["name"] for t in tasks if (t.get("airflow") or {}).get("running")]
    alarms = sum(len(src.get("alarms") or []) for t in tasks for src in t["sources"])
    badges = " ".join(f'<span class="rpo rpo-{s}" data-count="{counts[s]}">{counts[s]} {e(RPO_LABEL[s])}</span>'
                      for s in RPO_ORDER if counts[s])
    return (f'<p id="summary">{len(tasks)} tasks &middot; sources: {badges or "none"} &middot; '
            f'<span class="{"bad" if failed else "muted"}" id="failed-count">{len(failed)} last run failed</span>'
            f'{" (" + e(", ".join(failed)) + ")" if failed else ""} &middot; '
            f'<span class="{"bad" if alarms else "muted"}" id="alarm-count">{alarms} active alarms</span> &middot; '
            f'{len(running)} running</p>')


def render_page(data: dict[str, Any]) -> str:
    assets = data.get("assets") or {}
    parts = [_summary(data["tasks"])]
    for task in data["tasks"]:
        parts.append(f'<section class="task" id="task-{e(task["name"])}" data-rpo="{task_rpo(task)}">'
                     f'<h2>{e(task["name"])} <small>{e(task["schedule"])}, {e(task["policy"])}</small></h2>'
                     f'<p class="desc">{e(task["description"] or "")}</p>'
                     f'<p class="runs">last run: {_last_run(task)} &middot; next run: {_next_run(task)}</p>'
                     f'{_running(task)}{_actions(task)}')
        parts.extend(_source(task, src, assets) for src in task["sources"])
        parts.append("</section>")
    if not data["tasks"]:
        parts.append('<p class="muted">No backup tasks you may read. Create one with '
                     '<code>python -m metabackup new-task</code>.</p>')
    for error in data["spec_errors"]:
        parts.append(f'<pre class="bad">{e(error)}</pre>')
    return PAGE.replace("{{AT}}", _time(data.get("at"))).replace("{{BODY}}", "\n".join(parts))


PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Backups · metabackup</title>
<style>
 :root { --fg: #1f2937; --bg: #ffffff; --muted: #6b7280; --line: #e5e7eb; --card: #f9fafb;
         --ok: #047857; --bad: #b91c1c; --warn: #b45309; --run: #1d4ed8; --full: #2563eb; --incr: #10b981; }
 html.dark { --fg: #e5e7eb; --bg: #111827; --muted: #9ca3af; --line: #374151; --card: #1f2937;
             --ok: #34d399; --bad: #f87171; --warn: #fbbf24; --run: #60a5fa; --full: #60a5fa; --incr: #34d399; }
 body { font-family: system-ui, sans-serif; margin: 1rem 1.5rem; color: var(--fg); background: var(--bg); }
 a { color: var(--run); }
 h1 { font-size: 1.4rem; margin: 0 0 .3rem; } h2 { font-size: 1.2rem; margin: 0 0 .2rem; }
 h3 { font-size: 1rem; margin: .2rem 0; }
 small, .muted { color: var(--muted); font-weight: normal; }
 section.task { border: 1px solid var(--line); border-radius: 8px; padding: .8rem 1rem; margin: 1rem 0; background: var(--card); }
 section.task[data-rpo=stale] { border-left: 6px solid var(--bad); } section.task[data-rpo=late] { border-left: 6px solid var(--warn); }
 section.task[data-rpo=ok] { border-left: 6px solid var(--ok); }
 .source { border-top: 1px solid var(--line); padding-top: .4rem; margin-top: .5rem; }
 .source p { margin: .25rem 0; }
 table { border-collapse: collapse; width: 100%; font-size: .85rem; }
 th, td { text-align: left; padding: .25rem .5rem; border-bottom: 1px solid var(--line); }
 .ok { color: var(--ok); font-weight: 600; } .bad { color: var(--bad); font-weight: 600; }
 .state { border-radius: 4px; padding: 0 .4rem; font-weight: 600; color: #fff; background: var(--muted); }
 .state.ok { background: var(--ok); color: var(--bg); } .state.bad { background: var(--bad); color: var(--bg); }
 .state.run { background: var(--run); color: var(--bg); }
 .rpo { border-radius: 4px; padding: 0 .4rem; font-weight: 600; border: 1px solid currentColor; }
 .rpo-ok { color: var(--ok); } .rpo-late { color: var(--warn); } .rpo-stale { color: var(--bad); }
 .rpo-pending, .rpo-manual { color: var(--muted); }
 .tag { font-size: .8rem; border: 1px solid var(--line); border-radius: 4px; padding: 0 .3rem; }
 .tag.plain { color: var(--warn); } .tag.off, .tag.enc { color: var(--ok); }
 .pictures { display: flex; flex-wrap: wrap; gap: 1rem; align-items: flex-start; margin: .4rem 0; }
 svg text { fill: var(--muted); font-size: 10px; } svg .axis { stroke: var(--line); }
 svg .bar.full, .swatch.full { fill: var(--full); background: var(--full); }
 svg .bar.incremental, .swatch.incremental { fill: var(--incr); background: var(--incr); }
 .chain-diagram rect { stroke-width: 1.5; } .chain-diagram .set.full rect { fill: var(--full); stroke: var(--full); }
 .chain-diagram .set.incremental rect { fill: var(--incr); stroke: var(--incr); }
 .chain-diagram .set.broken rect { fill: var(--bg); stroke: var(--bad); stroke-dasharray: 3 2; }
 .chain-diagram text { fill: var(--bg); font-weight: 700; font-size: 12px; } .chain-diagram .broken text { fill: var(--bad); }
 .chain-diagram .link { stroke: var(--muted); stroke-width: 1.5; } .arrowhead { fill: var(--muted); }
 .swatch { display: inline-block; width: .8rem; height: .8rem; border-radius: 2px; vertical-align: middle; }
 .legend { font-size: .8rem; color: var(--muted); }
 button { cursor: pointer; } #restore-form { display: none; border: 1px solid var(--line); padding: 1rem; margin: 1rem 0; }
 #message { margin: .5rem 0; font-weight: 600; min-height: 1.2rem; }
 input { background: var(--bg); color: var(--fg); border: 1px solid var(--line); }
</style>
<script>
// Airflow's theme (its <html> carries the class "dark" or "light"); this page is in its iframe
function applyTheme() {
  let dark = null;
  try { if (window.parent !== window) { const top = window.parent.document.documentElement;
        dark = top.classList.contains("dark") || top.style.colorScheme === "dark"; } } catch (err) {}
  if (dark === null) dark = window.matchMedia && window.matchMedia("(prefers-color-scheme: dark)").matches;
  document.documentElement.classList.toggle("dark", dark);
  document.documentElement.classList.toggle("light", !dark);
}
applyTheme();
try { if (window.parent !== window) new MutationObserver(applyTheme).observe(window.parent.document.documentElement,
      {attributes: true, attributeFilter: ["class", "style"]}); } catch (err) {}
</script>
</head>
<body>
<h1>Backups</h1>
<p class="muted">as of {{AT}} UTC &middot; recovery point status: ok while the newest restorable set is at most
1.25 periods old, late after that, stale after 2 periods</p>
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
  message.textContent = "";
  if (!response.ok) {
    message.className = "bad";
    message.textContent = `Could not trigger ${dagId}: ${typeof body.detail === "string" ? body.detail : response.status}`;
    return;
  }
  message.className = "";
  const link = document.createElement("a");
  link.href = `../dags/${encodeURIComponent(dagId)}/runs/${encodeURIComponent(body.dag_run_id)}`;
  link.target = "_top";
  link.textContent = body.dag_run_id;
  message.append("Triggered ", link, ` of ${dagId}`);
}
let pending = null;
document.querySelectorAll("button.act").forEach(b => b.addEventListener("click", () => {
  const conf = JSON.parse(b.dataset.conf);
  const force = b.closest("p").querySelector("input.force-full");
  if (b.classList.contains("backup") && force && force.checked) conf.force_full = true;
  trigger(b.dataset.dag, conf);
}));
document.querySelectorAll("button.restore").forEach(b => b.addEventListener("click", () => {
  pending = {dag: b.dataset.dag, conf: JSON.parse(b.dataset.conf)};
  document.getElementById("rf-set").textContent = `${pending.conf.source} ${pending.conf.backup_set}`;
  document.getElementById("rf-dag").textContent = pending.dag;
  document.getElementById("rf-dry").checked = true;
  document.getElementById("restore-form").style.display = "block";
  document.getElementById("restore-form").scrollIntoView();
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
