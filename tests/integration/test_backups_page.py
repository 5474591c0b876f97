"""The Backups page from real sets, without Airflow running: recovery point badges, usage and free
space, the charts and the chain diagram (element counts), the last run and progress Airflow
reports, the actions only for users who may trigger, and the tasks a user may not read left out."""

from __future__ import annotations

import re

import pendulum
from conftest import files_spec, write_spec

from metabackup.overview import overview, task_overview
from metabackup.pipeline import backup

NOW = pendulum.now("UTC").replace(microsecond=0)


def hourly(name, tmp_path, **overrides):
    folder = tmp_path / f"{name}-src"
    folder.mkdir()
    (folder / "a.conf").write_text("x\n" * 100)
    return write_spec(tmp_path, files_spec(
        name, tmp_path, {"OMS": {"kind": "files", "paths": [str(folder)],
                                 "target": {"type": "LocalDir", "path": name, "max_backups": 10}}},
        type="periodic", schedule={"start": NOW.subtract(days=3).to_iso8601_string(), "period": "hour"},
        policy={"type": "full_every_n", "n": 3}, **overrides))


def page(tasks, **extra):
    from metabackup.airflow.ui_render import render_page

    return render_page({"tasks": tasks, "spec_errors": [], "at": NOW.to_iso8601_string(), **extra})


def test_charts_and_the_chain_diagram_show_every_kept_set(tmp_path):
    spec = hourly("charts", tmp_path)
    for hours in (7, 6, 5, 4, 3):  # F I I F I
        backup(spec, executed=NOW.subtract(hours=hours))
    task = {**task_overview(spec, NOW), "can_trigger": True, "can_verify": True}
    html = page([task])
    (section,) = re.findall(r'<section class="task" id="task-charts".*?</section>', html, re.S)
    assert len(re.findall(r'<rect class="bar full"', section)) == 2 * 2  # size and run time charts
    assert len(re.findall(r'<rect class="bar incremental"', section)) == 3 * 2
    diagram = re.search(r'<svg class="chain-diagram".*?</svg>', section, re.S).group(0)
    assert len(re.findall(r'<g class="set full">', diagram)) == 2
    assert len(re.findall(r'<g class="set incremental">', diagram)) == 3
    assert len(re.findall(r'<line class="link"', diagram)) == 3  # each incremental to its parent
    assert 'class="rpo rpo-stale"' in section  # the newest set is 3 h old: past 2 periods
    assert "5 sets" in section and "free" in section
    assert "Back up now" in section and "Verify now" in section and "Restore…" in section


def test_every_rpo_state_and_the_summary(tmp_path):
    tasks = []
    for name, age in (("fresh", 20), ("late", 95), ("stale", 300)):
        spec = hourly(name, tmp_path)
        backup(spec, executed=NOW.subtract(minutes=age))
        tasks.append(task_overview(spec, NOW))
    (tmp_path / "mansrc").mkdir()
    manual = write_spec(tmp_path, files_spec("man", tmp_path, {"OMS": {"kind": "files", "paths": [str(tmp_path / "mansrc")],
                                                                       "target": {"type": "LocalDir", "path": "m"}}}))
    tasks.append(task_overview(manual, NOW))
    html = page(tasks)
    states = dict(re.findall(r'<section class="task" id="task-(\w+)" data-rpo="(\w+)"', html))
    assert states == {"fresh": "ok", "late": "late", "stale": "stale", "man": "manual"}
    summary = re.search(r'<p id="summary">.*?</p>', html, re.S).group(0)
    for state in ("ok", "late", "stale", "manual"):
        assert f'class="rpo rpo-{state}" data-count="1"' in summary, summary
    assert "late after 1 h 15 min, stale after 2 h" in html


def test_the_last_run_its_failed_steps_and_the_running_step_s_progress(tmp_path):
    spec = hourly("runs", tmp_path)
    task = task_overview(spec, NOW)
    task["airflow"] = {"exists": True, "is_paused": False, "next_run": "2026-11-29T05:00:00+00:00",
                       "last_run": {"run_id": "scheduled__2026-11-29T04:00:00+00:00", "state": "failed",
                                    "run_type": "scheduled", "run_after": "2026-11-29T04:00:00+00:00",
                                    "start": "2026-11-29T04:00:01+00:00", "end": None,
                                    "failed_steps": ["OMS.check"]},
                       "running": [{"task_id": "OMS.archive", "start": "2026-11-29T04:10:00+00:00",
                                    "progress": "OMS: archive: 1.0 GiB of 2.0 GiB (50 %), 100.0 MiB/s, ETA 10 s"}]}
    html = page([task])
    assert 'data-state="failed"' in html and "failed at OMS.check" in html
    assert 'href="../dags/backup_runs/runs/scheduled__2026-11-29T04:00:00+00:00"' in html
    assert "2026-11-29 05:00:00 UTC" in html
    assert re.search(r'<p class="progress">.*OMS\.archive.*1\.0 GiB of 2\.0 GiB \(50 %\)', html)
    assert 'id="failed-count">1 last run failed' in html


def test_a_user_who_may_not_trigger_gets_no_buttons(tmp_path):
    spec = hourly("ro", tmp_path)
    backup(spec, executed=NOW.subtract(minutes=5))
    html = page([{**task_overview(spec, NOW), "can_trigger": False, "can_verify": False}])
    assert "read-only" in html
    assert "Back up now" not in html.split("<body>")[1].split("<script>")[0]
    assert '<button class="restore"' not in html and '<button class="act' not in html


def test_asset_links_point_at_airflow_s_asset_view(tmp_path):
    spec = hourly("assets", tmp_path)
    task = task_overview(spec, NOW)
    (src,) = task["sources"]
    html = page([task], assets={src["target"]: 17, src["asset_uris"][0]: 4})
    assert 'href="../assets/17"' in html and 'href="../assets/4"' in html


def test_hostile_texts_are_escaped(tmp_path):
    spec = hourly("esc", tmp_path, description='<script>alert(1)</script> "quoted"')
    task = task_overview(spec, NOW)
    task["airflow"] = {"exists": True, "is_paused": False, "next_run": None, "running": [],
                       "last_run": {"run_id": 'x"><img src=x onerror=alert(2)>', "state": "success",
                                    "run_type": "manual", "run_after": None, "start": None, "end": None,
                                    "failed_steps": []}}
    html = page([task])
    assert "<script>alert(1)" not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_only_the_tasks_the_user_may_read_and_which_they_may_trigger(tmp_path):
    from metabackup.airflow.ui import _permitted

    for name in ("mine", "theirs"):
        hourly(name, tmp_path)
    data = overview(tmp_path, NOW)

    class Manager:
        def is_authorized_dag(self, *, method, user, access_entity=None, details=None):
            if details.id == "backup_theirs":
                return False
            return method == "GET" or user == "operator"

    viewer = _permitted(Manager(), "viewer", [dict(t) for t in data["tasks"]])
    assert [(t["name"], t["can_trigger"], t["can_verify"]) for t in viewer] == [("mine", False, False)]
    operator = _permitted(Manager(), "operator", [dict(t) for t in data["tasks"]])
    assert [(t["name"], t["can_trigger"], t["can_verify"]) for t in operator] == [("mine", True, True)]


def test_the_chain_diagram_follows_parents_not_times():
    """A set may have an earlier execution time than its parent (a scheduled slot's run that started
    late): it still sits after its parent, and every arrow points back to the left."""
    from metabackup.airflow.ui_svg import chain_diagram, chains

    rows = [  # newest first, as the overview gives them
        {"set": "c", "type": "incremental", "parent": "b", "chain_root": "a", "restorable": True,
         "executed_at": "2026-11-29T04:00:00Z"},
        {"set": "b", "type": "incremental", "parent": "a", "chain_root": "a", "restorable": True,
         "executed_at": "2026-11-29T04:02:00Z"},
        {"set": "a", "type": "full", "parent": None, "chain_root": "a", "restorable": True,
         "executed_at": "2026-11-29T02:00:00Z"},
        {"set": "x", "type": "incremental", "parent": "gone", "chain_root": "gone", "restorable": False,
         "executed_at": "2026-11-29T01:00:00Z"},
    ]
    assert [[r["set"] for r in group] for group in chains(rows)] == [["a", "b", "c"], ["x"]]
    svg = chain_diagram("OMS", rows)
    for x1, x2 in re.findall(r'<line class="link" x1="([\d.]+)" y1="[\d.]+" x2="([\d.]+)"', svg):
        assert float(x2) < float(x1)
    assert '<g class="set incremental broken">' in svg


def test_a_manifest_is_parsed_once_per_content_and_again_when_it_changes(tmp_path, monkeypatch):
    """The API server reads every catalog on each page load: an unchanged manifest is not validated
    again, a rewritten one (key rotation, tampering) is, and an invalid one is refused every time."""
    import json

    from metabackup.manifest import Manifest

    spec = hourly("cache", tmp_path)
    backup(spec, executed=NOW.subtract(hours=2))
    backup(spec, executed=NOW.subtract(hours=1))
    parsed = []
    real = Manifest.from_json.__func__

    def counting(cls, data, origin=""):
        parsed.append(origin)
        return real(cls, data, origin=origin)

    monkeypatch.setattr(Manifest, "from_json", classmethod(counting))
    first = task_overview(spec, NOW)["sources"][0]
    again = task_overview(spec, NOW)["sources"][0]
    assert first["sets"] == again["sets"] and len(first["sets"]) == 2
    assert len(parsed) <= 2  # none the second time (earlier tests may have parsed these bytes already)
    parsed.clear()
    (newest,) = [p for p in (tmp_path / "data" / "cache").rglob("*.manifest.json") if first["sets"][0]["set"] in p.name]
    raw = json.loads(newest.read_text())
    raw["archive"]["size"] = "big"
    newest.write_text(json.dumps(raw))
    for _ in range(2):
        row = task_overview(spec, NOW)["sources"][0]
        assert [s["set"] for s in row["sets"]] == [first["sets"][1]["set"]]
        assert row["invalid"] and "archive.size" in row["invalid"][0]["reason"]
    assert parsed == [parsed[0]] * 2 and parsed[0].endswith(newest.name)  # the changed one, each time


def test_active_alarms_show_on_their_source_and_in_the_summary(tmp_path):
    spec = hourly("alarmed", tmp_path)
    task = task_overview(spec, NOW)
    task["sources"][0]["alarms"] = [
        {"alarm": "ALM-12034", "raised_at": "2026-11-29T04:00:05+00:00", "step": "OMS.check", "host": "mgmt-1"},
        {"alarm": "METABACKUP-RPO-STALE", "raised_at": "2026-11-29T04:15:00+00:00", "newest": "<b>x</b>"}]
    html = page([task])
    alarms = re.findall(r'<p class="alarm bad" data-alarm="([\w-]+)">(.*?)</p>', html)
    assert [a for a, _ in alarms] == ["ALM-12034", "METABACKUP-RPO-STALE"]
    assert "Periodic backup failure: active since 2026-11-29 04:00:05 UTC (step OMS.check, host mgmt-1)" in alarms[0][1]
    assert "Recovery point objective missed" in alarms[1][1] and "&lt;b&gt;x&lt;/b&gt;" in alarms[1][1]
    assert 'id="alarm-count">2 active alarms' in html
