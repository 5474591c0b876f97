"""SIGKILL of the task's own process at every step of a backup run, through a real Airflow retry.

One ``airflow standalone`` (our plugins, LocalExecutor) runs a manual task with one ``files``
source.  Its environment lists every kill point of the run in ``METABACKUP_KILL_AT``; a point
fires only when its marker file is absent, so the test arms a group of points by deleting their
markers before a run:

* run 1 (a full): a kill right *after* every step (decide, snapshot, archive, upload, verify,
  retention, record): the step did its work, then the process died before Airflow heard of it;
* run 2 (an incremental, after the tree changed): a kill right *before* every step.

Each killed task must be retried by Airflow (try 2) and the run must succeed; after each run the
target holds exactly one committed set per run (archive + manifest, also at the mirror), nothing
hidden or partial, a catalog that lists exactly those sets, all restorable, the latest of which
restores the source tree exactly; and the staging area holds nothing of the finished runs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

import pytest
import yaml

from metabackup.catalog import Catalog
from metabackup.restore import restore_source
from metabackup.sources.files import iter_tree
from metabackup.spec import load_spec

pytestmark = pytest.mark.airflow

REPO = Path(__file__).resolve().parents[2]
TASK = "killretry"
DAG_ID = f"backup_{TASK}"
SOURCE = "OMS"
STEPS = ("decide", "snapshot", "archive", "upload", "verify", "retention", "finish")


def points(when: str) -> list[str]:
    return [f"{SOURCE}.{step}.{when}" for step in STEPS] + [f"record.{when}"]


ALL_POINTS = points("after") + points("before")


def task_of(point: str, snapshot_task: str) -> str:
    """The Airflow task id in which a kill point fires."""
    if point.startswith("record."):
        return "record"
    step = point.split(".")[1]
    return f"{SOURCE}.{snapshot_task}" if step == "snapshot" else f"{SOURCE}.{step}"


@pytest.fixture(scope="module")
def world():
    """Directories, the spec and DAG file, and one airflow standalone with every kill point listed
    (all disarmed: each marker already exists)."""
    from harness import airflow_standalone

    root = Path(tempfile.mkdtemp(prefix="metabackup-kill-"))
    dags, specs, markers, data = root / "dags", root / "specs", root / "markers", root / "data"
    conf = root / "etc" / "oms"
    for d in (dags, specs, markers, data, conf / "conf.d"):
        d.mkdir(parents=True)
    (conf / "server.xml").write_text("<server port='1'/>\n")
    (conf / "conf.d" / "a.properties").write_text("a=1\n")
    (conf / "conf.d" / "b.properties").write_text("b=2\n")
    (conf / "keystore.bin").write_bytes(os.urandom(200_000))
    os.chmod(conf / "keystore.bin", 0o600)
    os.symlink("server.xml", conf / "current.xml")
    spec = {
        "name": TASK, "created": "2026-11-24T00:00:00+00:00", "cluster_version": "3.1.0", "timezone": "UTC",
        "type": "manual", "policy": "full_then_incremental", "data_path": str(data), "staging_dir": "staging",
        "retries": 4, "retry_delay": 1,
        "sources": {SOURCE: {"kind": "files", "paths": [str(conf)],
                             "target": {"type": "LocalDir", "path": "backups", "max_backups": 5,
                                        "mirror": str(root / "standby")}}},
    }
    spec_path = specs / f"{TASK}.yaml"
    spec_path.write_text(yaml.safe_dump(spec, sort_keys=False))
    shutil.copy(REPO / "dags" / "backup_default.py", dags / f"{DAG_ID}.py")
    for point in ALL_POINTS:
        (markers / point).touch()
    env = {"METABACKUP_KILL_AT": ",".join(ALL_POINTS), "METABACKUP_KILL_MARKERS": str(markers)}
    instance = airflow_standalone.start(root / "airflow", dags, specs, env)
    try:
        client = instance.client()
        client.wait_for_dag(DAG_ID)
        assert client.import_errors() == []
        yield {"root": root, "conf": conf, "markers": markers, "spec_path": spec_path, "airflow": instance,
               "client": client, "runs": []}
    finally:
        instance.stop()
        if os.environ.get("KEEP_KILL_RETRY"):  # keep the logs, target and staging for a post-mortem
            print(f"\n[kill-retry] kept {root} (airflow log: {instance.home / 'standalone.log'})")
        else:
            shutil.rmtree(root, ignore_errors=True)


def run_with_kills(world, armed: list[str], snapshot_task: str) -> dict:
    """Arm ``armed`` (delete their markers), trigger a run, wait; assert it succeeded, every armed
    point fired, and every killed task was retried by Airflow."""
    markers, client = world["markers"], world["client"]
    for point in armed:
        (markers / point).unlink()
    started = time.monotonic()
    run_id = client.trigger(DAG_ID)
    outcome = client.wait(DAG_ID, run_id, timeout=200)
    elapsed = time.monotonic() - started
    print(f"\n[kill-retry] {run_id}: {outcome['state']} in {elapsed:.0f}s with {len(armed)} kills")
    assert outcome["state"] == "success", json.dumps(outcome, indent=1)[-6000:]
    assert not [p for p in armed if not (markers / p).exists()], "kill points that never fired"
    assert sorted(p.name for p in markers.iterdir()) == sorted(ALL_POINTS)  # nothing else fired either

    quoted = urllib.parse.quote(run_id, safe="")
    tis = {t["task_id"]: t for t in
           client.get(f"/api/v2/dags/{DAG_ID}/dagRuns/{quoted}/taskInstances")["task_instances"]}
    killed = {task_of(p, snapshot_task) for p in armed}
    other_branch = f"{SOURCE}.{'incremental' if snapshot_task == 'full' else 'full'}"
    assert tis[other_branch]["state"] == "skipped"
    for task_id, ti in tis.items():
        if task_id == other_branch:
            continue
        assert ti["state"] == "success", (task_id, ti["state"])
        if task_id in killed:
            # killed once, retried once: the retry itself must not have failed again
            assert ti["try_number"] == 2, (task_id, ti["try_number"])
            tries = client.get(f"/api/v2/dags/{DAG_ID}/dagRuns/{quoted}/taskInstances/"
                               f"{urllib.parse.quote(task_id, safe='')}/tries")["task_instances"]
            first = next(t for t in tries if t["try_number"] == 1)
            assert first["state"] in ("failed", "up_for_retry"), (task_id, first["state"])
        else:
            assert ti["try_number"] == 1, (task_id, ti["try_number"])
    world["runs"].append(run_id)
    return {"run_id": run_id, "outcome": outcome, "tis": tis}


def assert_airflow_saw_one_set(world, run_id: str, stem: str, set_type: str) -> None:
    """What Airflow kept of the run names the committed set once: one asset event of the location
    (the killed first try of verify emitted none), and record's summary."""
    client = world["client"]
    quoted = urllib.parse.quote(run_id, safe="")
    events = client.get(f"/api/v2/assets/events?source_dag_id={DAG_ID}&source_run_id={quoted}&limit=100")["asset_events"]
    assert [(e["source_task_id"], e["extra"].get("set"), e["extra"].get("type")) for e in events] == \
        [(f"{SOURCE}.verify", stem, set_type)], events
    summary = client.get(f"/api/v2/dags/{DAG_ID}/dagRuns/{quoted}/taskInstances/record/xcomEntries/return_value"
                         "?deserialize=true")["value"]
    summary = json.loads(summary) if isinstance(summary, str) else summary
    assert summary[SOURCE]["set"] == stem and summary[SOURCE]["type"] == set_type, summary


def assert_consistent(world, expected_types: list[str]) -> list:
    """The target (and its mirror) hold exactly the committed sets, nothing partial; the catalog
    lists them all restorable; the latest restores the source; staging is empty."""
    spec = load_spec(world["spec_path"])
    source = spec.source(SOURCE)
    task_dir = spec.task_dir
    target = source.target.open()
    catalog = Catalog.of(target.manifests(task_dir, SOURCE))
    stems = [m.set for m in catalog.sets]
    assert [m.type for m in catalog.sets] == expected_types, stems
    assert len(set(stems)) == len(stems)
    assert [m.set for m in catalog.restorable()] == stems and catalog.orphans() == []
    for parent, child in zip(catalog.sets, catalog.sets[1:]):
        assert child.parent == parent.set and child.chain_root == catalog.sets[0].set

    committed = sorted(n for m in catalog.sets for n in (m.archive.name, f"{m.set}.manifest.json"))
    for root in (Path(source.target.path), Path(source.target.mirror)):
        directory = root / task_dir
        names = sorted(os.listdir(directory))
        assert names == committed, f"{directory}: {names} (hidden/partial/uncommitted files?)"
        assert sorted(os.listdir(root)) == [task_dir], f"{root}: {sorted(os.listdir(root))}"
    for m in catalog.sets:
        primary = (Path(source.target.path) / task_dir / m.archive.name).read_bytes()
        assert primary == (Path(source.target.mirror) / task_dir / m.archive.name).read_bytes()
        assert len(primary) == m.archive.size

    listed = subprocess.run([sys.executable, "-m", "metabackup", "list", "--spec", str(world["spec_path"]), "--json"],
                            capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": str(REPO / "plugins")})
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert [(r["set"], r["type"], r["restorable"]) for r in rows] == [(m.set, m.type, True) for m in catalog.sets]

    dest = Path(tempfile.mkdtemp(prefix="metabackup-kill-restore-")) / "dest"
    try:
        result = restore_source(spec, SOURCE, str(dest))
        assert result["set"] == stems[-1]
        restored = dict(iter_tree(dest / str(world["conf"]).lstrip("/")))
        assert restored == dict(iter_tree(world["conf"]))
    finally:
        shutil.rmtree(dest.parent, ignore_errors=True)

    staging = Path(spec.staging_dir)
    leftovers = sorted(str(p.relative_to(staging)) for p in staging.rglob("*")) if staging.exists() else []
    assert not [p for p in leftovers if any(s in p for s in stems)], f"work directories left in staging: {leftovers}"
    # only the task's folder with the source's lock file (the flock target stays; the lease is gone)
    assert [p for p in leftovers if p not in (task_dir, f"{task_dir}/.lock-OMS.flock")] == [], f"staging holds {leftovers}"
    return catalog.sets


def test_kill_after_every_step_of_a_full_run(world):
    run = run_with_kills(world, points("after"), "full")
    sets = assert_consistent(world, ["full"])
    assert sets[0].set.startswith(f"3.1.0_{SOURCE}_")
    assert_airflow_saw_one_set(world, run["run_id"], sets[0].set, "full")


def test_kill_before_every_step_of_an_incremental_run(world):
    if not world["runs"]:  # run alone: take the parent full without kills first
        run_with_kills(world, [], "full")
    conf = world["conf"]
    (conf / "server.xml").write_text("<server port='2' changed='yes'/>\n")
    (conf / "conf.d" / "b.properties").unlink()
    os.rename(conf / "conf.d" / "a.properties", conf / "conf.d" / "renamed.properties")
    (conf / "new" / "deeper").mkdir(parents=True)
    (conf / "new" / "deeper" / "c.txt").write_text("new file\n")
    os.chmod(conf / "server.xml", 0o640)
    run = run_with_kills(world, points("before"), "incremental")
    sets = assert_consistent(world, ["full", "incremental"])
    assert sets[1].parent == sets[0].set
    assert_airflow_saw_one_set(world, run["run_id"], sets[1].set, "incremental")
