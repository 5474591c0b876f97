"""Many workers (issue 16), through a real CeleryExecutor deployment started by the project's
harness (:mod:`harness.airflow_celery`): Redis, PostgreSQL, the API server, scheduler, DAG
processor and two Celery workers, ``hostA`` on queue ``mgmt_a`` and ``hostB`` on ``mgmt_b``, each
with its own staging directory (``$METABACKUP_STAGING_DIR``), so that a hand-off between tasks of
one source that crossed workers would fail instead of passing by accident.  Every run is triggered
through the REST API, never ``dags test``.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
import urllib.parse
from pathlib import Path

import pendulum
import pytest
import yaml

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
CREATED = "2026-11-24T10:00:00+08:00"
POOL = "metabackup"


def _tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _own_processes(pids: list[int]) -> list[str]:
    """``ps`` lines of processes in the sessions of ``pids`` (should be none after stop)."""
    out = subprocess.run(["ps", "-eww", "-o", "pid,sid,args"], capture_output=True, text=True).stdout.splitlines()[1:]
    return [line for line in out if line.split(None, 2)[1] in {str(p) for p in pids}]


def _state(pid: int) -> str | None:
    """The process state letter of ``pid`` (``Z`` for a zombie), None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[1].split()[0].decode()
    except FileNotFoundError:
        return None


class Deployment:
    def __init__(self, root: Path):
        self.root = root
        self.dags, self.specs, self.markers = root / "dags", root / "specs", root / "markers"
        self.data = root / "data"
        for d in (self.dags, self.specs, self.markers, self.data):
            d.mkdir(parents=True)
        self.instance = self.api = None

    def add_task(self, name: str, sources: dict, **fields) -> dict:
        spec = {"name": name, "created": CREATED, "cluster_version": "3.1.0", "timezone": "UTC", "type": "manual",
                "policy": "full_then_incremental", "data_path": str(self.data / name), "retries": 2,
                "retry_delay": 1, "sources": sources, **fields}
        spec = json.loads(json.dumps(spec))  # no shared objects: the spec reader refuses YAML aliases
        (self.specs / f"{name}.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
        (self.dags / f"backup_{name}.py").write_text((REPO / "dags" / "backup_default.py").read_text())
        return spec

    def source_dir(self, name: str, files: int = 3) -> Path:
        src = self.root / "sources" / name
        src.mkdir(parents=True)
        for i in range(files):
            (src / f"file{i}.conf").write_text(f"{name} setting {i}\n" * (i + 1))
        return src

    def tis(self, dag_id: str, run_id: str) -> dict[str, dict]:
        quoted = urllib.parse.quote(run_id, safe="")
        found = self.api.get(f"/api/v2/dags/{dag_id}/dagRuns/{quoted}/taskInstances?limit=100")["task_instances"]
        return {t["task_id"]: t for t in found}

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value"):
        quoted = urllib.parse.quote(run_id, safe="")
        return self.api.get(f"/api/v2/dags/{dag_id}/dagRuns/{quoted}/taskInstances/{task_id}/xcomEntries/{key}")["value"]


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    from harness import airflow_celery

    root = tmp_path_factory.mktemp("celery-workers")
    d = Deployment(root)
    oms, db = d.source_dir("oms"), d.source_dir("dbservice")
    target = {"type": "LocalDir", "max_backups": 10}
    # OMS on the spec's queue (hostA), DBService on its own (hostB); preflight and record on mgmt_a
    d.add_task("pinned", {"OMS": {"kind": "files", "paths": [str(oms)], "target": target},
                          "DBService": {"kind": "files", "paths": [str(db)], "target": target, "queue": "mgmt_b"}},
               queue="mgmt_a")
    for n in range(3):  # three tasks for the pool: one source each (not OMS: it pauses), alternating workers
        src = d.source_dir(f"pool{n}")
        d.add_task(f"pool{n}", {"NameNode": {"kind": "files", "paths": [str(src)], "target": target,
                                        "queue": "mgmt_a" if n % 2 == 0 else "mgmt_b"}}, queue="mgmt_a")
    common = {"METABACKUP_KILL_MARKERS": str(d.markers), "METABACKUP_PAUSE_AT": "OMS.upload.before"}
    began = time.monotonic()
    d.instance = airflow_celery.start(
        root / "airflow", d.dags, d.specs,
        workers={"hostA": {"queues": ["mgmt_a"], "env": common, "concurrency": 4},
                 "hostB": {"queues": ["mgmt_b"], "env": {"METABACKUP_KILL_MARKERS": str(d.markers)},
                           "concurrency": 4}},
        # a killed worker's task is noticed after 20 s without a heartbeat (default 5 minutes)
        env={"AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "20",
             "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5"})
    print(f"\ncelery deployment: start-up {time.monotonic() - began:.1f}s")
    d.api = d.instance.client()
    for name in ("pinned", "pool0", "pool1", "pool2"):
        d.api.wait_for_dag(f"backup_{name}", timeout=300)
        d.api.wait_for_dag(f"restore_{name}", timeout=300)
    assert d.api.import_errors() == []
    sessions = [p.pid for p in d.instance.processes.values()] + [d.instance.redis.pid]
    try:
        yield d
    finally:
        sessions += [p.pid for p in d.instance.processes.values()]  # restarted workers have new sessions
        d.instance.stop()
        assert _own_processes(sessions) == []


def _backups_page(d: Deployment) -> dict:
    import urllib.request

    request = urllib.request.Request(f"{d.instance.url}/metabackup/api/backups",
                                     headers={"Authorization": f"Bearer {d.api.token}"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def _catalog(d: Deployment, task: str, source: str):
    from metabackup.catalog import Catalog
    from metabackup.spec import load_spec

    spec = load_spec(d.specs / f"{task}.yaml")
    target = spec.source(source).target.open()
    return Catalog.read(target, spec.name, spec.task_dir, source, spec.timezone), spec


def test_the_plugin_created_the_pool_with_one_slot(deployment):
    pool = deployment.api.get(f"/api/v2/pools/{POOL}")
    assert pool["slots"] == 1, pool


def test_each_source_runs_on_the_worker_of_its_queue_and_restores_there(deployment):
    d = deployment
    run_id = d.api.trigger("backup_pinned", {"sources": ["DBService"]})  # OMS pauses in upload: see the kill test
    result = d.api.wait("backup_pinned", run_id, timeout=300)
    assert result["state"] == "success", result
    tis = d.tis("backup_pinned", run_id)
    ran = {k: (t["queue"], t["hostname"]) for k, t in tis.items() if t["state"] == "success"}
    assert all(where == ("mgmt_b", "hostB") for k, where in ran.items() if k.startswith("DBService.")), ran
    assert ran["preflight"] == ("mgmt_a", "hostA") and ran["record"] == ("mgmt_a", "hostA"), ran
    assert {"DBService.check", "DBService.full", "DBService.upload", "DBService.finish"} <= set(ran)
    assert d.xcom("backup_pinned", run_id, "DBService.upload", "worker") == {"host": "hostB", "queue": "mgmt_b"}
    assert tis["OMS.check"]["state"] == "skipped"
    catalog, _ = _catalog(d, "pinned", "DBService")
    assert [m.host for m in catalog.sets] == ["hostB"]  # the manifest names the host that took the set
    page = _backups_page(d)  # and the Backups page shows it
    task = next(t for t in page["tasks"] if t["name"] == "pinned")
    (db,) = [s for s in task["sources"] if s["source"] == "DBService"]
    assert [s["host"] for s in db["sets"]] == ["hostB"]
    # nothing of the run is left in either worker's staging area (its finish step ran on hostB)
    for worker in ("hostA", "hostB"):
        left = [p for p in d.instance.staging(worker).rglob("*") if p.is_dir() and "DBService" in p.name]
        assert left == [], left

    dest = d.root / "restored-db"
    run_id = d.api.trigger("restore_pinned", {"source": "DBService", "destination": str(dest), "dry_run": False})
    result = d.api.wait("restore_pinned", run_id, timeout=300)
    assert result["state"] == "success", result
    tis = d.tis("restore_pinned", run_id)
    assert (tis["choose"]["queue"], tis["choose"]["hostname"]) == ("mgmt_a", "hostA")
    for step in ("resolve", "verify", "restore", "validate", "report"):
        t = tis[f"DBService.{step}"]
        assert (t["queue"], t["hostname"], t["state"]) == ("mgmt_b", "hostB", "success"), (step, t)
    assert all(t["state"] == "skipped" for k, t in tis.items() if k.startswith("OMS.")), tis
    restored = next(p for p in dest.rglob("file0.conf")).parent
    assert _tree_digest(restored) == _tree_digest(d.root / "sources" / "dbservice")


def test_a_worker_killed_in_upload_retries_it_and_commits_the_set_once(deployment):
    d = deployment
    run_id = d.api.trigger("backup_pinned")
    paused = d.markers / "OMS.upload.before.paused"
    deadline = time.monotonic() + 300
    while not paused.exists():
        assert time.monotonic() < deadline, d.tis("backup_pinned", run_id)
        time.sleep(1)
    upload = d.tis("backup_pinned", run_id)["OMS.upload"]
    assert (upload["state"], upload["hostname"], upload["try_number"]) == ("running", "hostA", 1), upload
    task_pid = upload["pid"]
    assert os.getsid(task_pid) == d.instance.worker("hostA").pid  # the task process is in the worker's session
    d.instance.kill_worker("hostA")  # SIGKILL: the worker, its pool and the task process in flight
    deadline = time.monotonic() + 30  # dead at once; gone once init has reaped the orphan
    while (state := _state(task_pid)) is not None:
        assert state == "Z" and time.monotonic() < deadline, state  # killed, not yet reaped
        time.sleep(0.2)
    d.instance.start_worker("hostA")
    result = d.api.wait("backup_pinned", run_id, timeout=420)
    tis = d.tis("backup_pinned", run_id)
    assert result["state"] == "success", {k: (t["state"], t["try_number"]) for k, t in tis.items()}
    assert tis["OMS.upload"]["try_number"] == 2 and tis["OMS.upload"]["hostname"] == "hostA"
    # the other source was not touched: each of its tasks ran once, on its own worker
    assert all(t["try_number"] == 1 and t["hostname"] == "hostB" for k, t in tis.items()
               if k.startswith("DBService.") and t["state"] == "success")
    record = d.xcom("backup_pinned", run_id, "record")
    catalog, spec = _catalog(d, "pinned", "OMS")
    assert [m.set for m in catalog.sets] == [record["OMS"]["set"]]  # committed once
    names = sorted(os.listdir(d.data / "pinned" / "LocalBackup" / spec.task_dir))
    oms = [n for n in names if "_OMS_" in n]
    assert len(oms) == 2 and any(n.endswith(".manifest.json") for n in oms), names  # archive + manifest
    assert not [n for n in names if "partial" in n or n.startswith(".")], names
    dest = d.root / "restored-oms"
    run_id = d.api.trigger("restore_pinned", {"source": "OMS", "destination": str(dest), "dry_run": False})
    assert d.api.wait("restore_pinned", run_id, timeout=300)["state"] == "success"
    restored = next(p for p in dest.rglob("file0.conf")).parent
    assert _tree_digest(restored) == _tree_digest(d.root / "sources" / "oms")


def test_ten_runs_of_three_tasks_drain_through_a_one_slot_pool_one_task_at_a_time(deployment):
    d = deployment
    # each run a second apart (a set is named after its run's time, to the second: two runs of one
    # task in the same second are the same set, and the second commits nothing new)
    start = pendulum.now("UTC").subtract(minutes=1).replace(microsecond=0)
    runs = []
    for n in range(10):
        dag_id = f"backup_pool{n % 3}"
        run = d.api._post(f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": {},
                                                              "run_after": start.add(seconds=n).isoformat()})
        runs.append((dag_id, run["dag_run_id"]))
    for dag_id, run_id in runs:
        assert d.api.wait(dag_id, run_id, timeout=900)["state"] == "success", (dag_id, run_id)
    spans = []
    for dag_id, run_id in runs:
        for task_id, t in d.tis(dag_id, run_id).items():
            if t["state"] == "success":
                assert t["pool"] == POOL, t
                spans.append((pendulum.parse(t["start_date"]), pendulum.parse(t["end_date"]), f"{dag_id} {task_id}"))
    spans.sort()
    overlaps = [(a[2], b[2]) for a, b in zip(spans, spans[1:]) if b[0] < a[1]]
    assert overlaps == [], overlaps[:5]
    for n in range(3):  # the catalog holds exactly the sets the runs committed
        committed = [d.xcom(dag_id, run_id, "record")["NameNode"]["set"] for dag_id, run_id in runs
                     if dag_id == f"backup_pool{n}"]
        catalog, _ = _catalog(d, f"pool{n}", "NameNode")
        assert sorted(m.set for m in catalog.sets) == sorted(committed)
        assert len(set(committed)) == len(committed)
