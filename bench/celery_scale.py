"""Scale: N generated specs parsed by the DAG processor, N manual backup runs drained through one
pool by Celery workers, against N EmptyOperator DAGs of the same shape in the same deployment.

One deployment (``harness.airflow_celery``: Redis, PostgreSQL 15, api-server, scheduler,
dag-processor, ``--workers`` Celery workers of ``--concurrency`` each on the ``default`` queue)
over one DAG folder holding, from the start:

* ours: ``--count`` (100) specs ``<specs>/scale_NNN.yaml`` — manual, one ``files`` source (``OMS``)
  of ``--files`` (3) small files, a LocalDir target — and their DAG files ``backup_scale_NNN.py``
  (copies of ``dags/backup_default.py``: DAGs ``backup_scale_NNN`` and ``restore_scale_NNN``);
* baseline: ``--count`` files ``empty_scale_NNN.py``, one DAG ``empty_scale_NNN`` each, made of
  ``EmptyOperator`` tasks with the task ids, trigger rules and dependency edges of one generated
  backup DAG (read before the start by building that DAG with ``DagBag`` in a child interpreter,
  checked after the start against ``GET /api/v2/dags/backup_scale_000/tasks``), ``schedule=None``,
  and the pool of the backup tasks — or, while the spec has no ``pool`` (the backup tasks are in
  ``default_pool``), the pool ``metabackup`` through ``default_args``.

The pool (``metabackup`` or the spec's) is created or resized through ``POST/PATCH /api/v2/pools``
with ``--pool-slots`` (4) slots before any run; ``default_pool`` gets the same number of slots
(``AIRFLOW__CORE__DEFAULT_POOL_TASK_SLOT_COUNT``), so both sides wait on the same number of slots
whichever pool their tasks name.

Measures:

1. **DAG processor**: the time from the dag-processor process's start (``/proc/<pid>/stat``) until
   every one of the 3N DAGs is listed by ``GET /api/v2/dags`` (paginated) with no import error
   (``GET /api/v2/importErrors``) — polled every second once the deployment is healthy, so when
   everything is already listed at the first poll this is an upper bound (marked ``<=``); the exact
   moment each DAG was first serialized (``dag_version.created_at`` in the metadata database) gives
   the time to the last DAG of each kind; and the per-file "Last Duration" of the first
   "DAG File Processing Stats" table in ``dag-processor.log`` that lists every file with one (the
   first full loop; ``print_stats_interval`` 10 s).
2. **Drain**: all N backup DAGs triggered at once (``POST .../dagRuns``, 8 threads), until every run
   has ended (``GET /api/v2/dags/~/dagRuns``, polled every 2 s): total = the last run's
   ``end_date`` minus the moment before the first trigger; tasks = the task instances of those runs
   in a final state (skipped ones included: the scheduler handles them too); per task = total /
   tasks.  Then the same for the N EmptyOperator DAGs.  Note: Airflow's scheduler marks an
   ``EmptyOperator`` task success without sending it to the executor, so the baseline is the
   scheduler's own cost per task, with no Celery, no worker and no task process; the ratio is the
   whole cost of a real task over that.

Every backup run must succeed; otherwise the failed tasks and a log excerpt are printed and the
script exits 1.  The deployment is always stopped (and its processes checked gone).

    PYTHONPATH=plugins:. .venv/bin/python bench/celery_scale.py [--count 100] [--pool-slots 4]
        [--workers 2] [--concurrency 2] [--files 3] [--dir DIR] [--keep] [--seed N] [--quick]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "plugins"), str(REPO)]

PER_TASK_GOAL = 3.0  # ours/baseline per task, at most
DEFAULT_POOL = "metabackup"  # the pool to use while the spec has no `pool`
FINAL = {"success", "failed", "skipped", "upstream_failed", "removed"}
SHAPE_FLAG = "--_child-shape"

BASELINE_TEMPLATE = '''\
"""Scale benchmark baseline {dag_id}: EmptyOperator tasks shaped like one backup DAG."""

import pendulum
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG

TASKS = {tasks!r}

with DAG(dag_id={dag_id!r}, schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False,
         default_args={{"pool": {pool!r}}}, tags=["bench"]):
    ops = {{task_id: EmptyOperator(task_id=task_id, trigger_rule=rule) for task_id, (rule, _) in TASKS.items()}}
    for task_id, (_, downstream) in TASKS.items():
        for other in downstream:
            ops[task_id] >> ops[other]
'''

NOOP_TEMPLATE = '''\
"""Scale benchmark second baseline {dag_id}: no-op PythonOperator tasks shaped like one backup DAG."""

import pendulum
from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk import DAG

TASKS = {tasks!r}


def _noop():
    return None


with DAG(dag_id={dag_id!r}, schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False,
         default_args={{"pool": {pool!r}}}, tags=["bench"]):
    ops = {{task_id: PythonOperator(task_id=task_id, trigger_rule=rule, python_callable=_noop)
           for task_id, (rule, _) in TASKS.items()}}
    for task_id, (_, downstream) in TASKS.items():
        for other in downstream:
            ops[task_id] >> ops[other]
'''


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# ---------------------------------------------------------------------------------------------
# Generation
# ---------------------------------------------------------------------------------------------
def generate(base: Path, count: int, files: int, seed: int) -> tuple[Path, Path, list[str]]:
    """Specs, their DAG files and small source trees; the task names."""
    rng = random.Random(seed)
    dags, specs = base / "dags", base / "specs"
    dags.mkdir(parents=True)
    specs.mkdir(parents=True)
    names = []
    for i in range(count):
        name = f"scale_{i:03d}"
        src = base / "src" / name
        src.mkdir(parents=True)
        (base / "data" / name).mkdir(parents=True)
        for j in range(files):
            (src / f"part{j}.conf").write_text("".join(f"key{k}={rng.getrandbits(64):x}\n"
                                                      for k in range(rng.randint(20, 120))))
        spec = {
            "name": name, "description": f"celery_scale benchmark task {i}", "created": "2026-11-24T10:00:00+08:00",
            "cluster_version": "3.1.0", "timezone": "Asia/Shanghai", "type": "manual",
            "policy": "full_then_incremental", "data_path": str(base / "data" / name),
            "sources": {"OMS": {"kind": "files", "paths": [str(src)],
                                "target": {"type": "LocalDir", "path": "LocalBackup"}}},
        }
        (specs / f"{name}.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
        shutil.copy(REPO / "dags" / "backup_default.py", dags / f"backup_{name}.py")
        names.append(name)
    return dags, specs, names


def child_shape(dag_file: str) -> None:
    """(child) Build one DAG file with DagBag; print the backup DAG's tasks as JSON."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_file)
    if bag.import_errors:
        raise SystemExit(f"import errors: {bag.import_errors}")
    dag = next(d for d in bag.dags.values() if d.dag_id.startswith("backup_"))
    tasks = {t.task_id: [str(t.trigger_rule.value if hasattr(t.trigger_rule, "value") else t.trigger_rule),
                         sorted(t.downstream_task_ids)] for t in dag.tasks}
    pools = sorted({t.pool for t in dag.tasks})
    print("@@SHAPE@@" + json.dumps({"dag_id": dag.dag_id, "tasks": tasks, "pools": pools}))


def backup_shape(dag_file: Path, spec_dir: Path, home: Path) -> dict:
    env = {**os.environ, "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
           "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"), "METABACKUP_SPEC_DIR": str(spec_dir),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "plugins"), str(REPO), os.environ.get("PYTHONPATH")]))}
    out = subprocess.run([sys.executable, __file__, SHAPE_FLAG, str(dag_file)], env=env, capture_output=True,
                         text=True, timeout=600)
    for line in out.stdout.splitlines():
        if line.startswith("@@SHAPE@@"):
            return json.loads(line[len("@@SHAPE@@"):])
    raise RuntimeError(f"could not build {dag_file} (exit {out.returncode}):\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")


def write_baselines(dags: Path, names: list[str], tasks: dict, pool: str, prefix: str = "empty",
                    template: str = BASELINE_TEMPLATE) -> list[str]:
    ids = []
    for name in names:
        dag_id = f"{prefix}_{name}"
        (dags / f"{dag_id}.py").write_text(template.format(dag_id=dag_id, tasks=tasks, pool=pool))
        ids.append(dag_id)
    return ids


# ---------------------------------------------------------------------------------------------
# Measuring
# ---------------------------------------------------------------------------------------------
def boottime() -> float:
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def process_start(pid: int) -> float:
    """The start of process ``pid`` in CLOCK_BOOTTIME seconds."""
    with open(f"/proc/{pid}/stat", "rb") as stat:
        fields = stat.read().rsplit(b")", 1)[1].split()
    return int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22, starttime


def paged(api, path: str, key: str, params: dict | None = None) -> list[dict]:
    items: list[dict] = []
    while True:
        query = urllib.parse.urlencode({**(params or {}), "limit": 100, "offset": len(items)})
        page = api.get(f"{path}?{query}")
        items.extend(page[key])
        if not page[key] or len(items) >= page["total_entries"]:
            return items


def wait_all_listed(api, expected: set[str], started: float, timeout: float) -> tuple[float, bool]:
    """Seconds from ``started`` (boottime) until every expected DAG is listed without import errors."""
    first = True
    deadline = time.monotonic() + timeout
    last_report = 0.0
    while True:
        listed = {d["dag_id"] for d in paged(api, "/api/v2/dags", "dags")}
        errors = api.import_errors()
        if errors:
            raise RuntimeError("import errors:\n" + "\n".join(f"{e.get('filename')}: {e.get('stack_trace', '')[-1500:]}"
                                                              for e in errors[:3]))
        missing = expected - listed
        now = boottime()
        if not missing:
            return now - started, first
        if time.monotonic() - last_report > 15:
            log(f"  {len(expected) - len(missing)}/{len(expected)} DAGs listed after {now - started:.0f} s")
            last_report = time.monotonic()
        if time.monotonic() > deadline:
            raise RuntimeError(f"{len(missing)} DAGs not listed within {timeout:.0f} s, e.g. {sorted(missing)[:5]}")
        first = False
        time.sleep(1)


def first_serialized(instance) -> dict[str, datetime.datetime]:
    """Each DAG's first version time (``dag_version.created_at``) from the metadata database."""
    import psycopg

    with psycopg.connect(instance.postgres.superuser_dsn("airflow")) as conn:
        rows = conn.execute("SELECT dag_id, min(created_at) FROM dag_version GROUP BY dag_id").fetchall()
    return dict(rows)


STATS_RE = re.compile(r"(\S+\.py)\s.*?(\d+\.\d+)s\s+\d{4}-\d\d-\d\dT")


def parse_stats_tables(log_path: Path) -> list[dict[str, float]]:
    """Every "DAG File Processing Stats" table of the log: {file: last duration in s} (files with one)."""
    text = log_path.read_text(errors="replace")
    if "DAG File Processing Stats\\n" in text:  # a renderer that escaped the newlines
        text = text.replace("\\n", "\n")
    tables = []
    for chunk in text.split("DAG File Processing Stats")[1:]:
        body = chunk.split("=" * 80, 1)[0]
        durations = {}
        for line in body.splitlines():
            match = STATS_RE.search(line)
            if match:
                durations[Path(match.group(1)).name] = float(match.group(2))
        tables.append(durations)
    return tables


def first_full_table(log_path: Path, files: set[str], timeout: float) -> dict[str, float] | None:
    deadline = time.monotonic() + timeout
    while True:
        for table in parse_stats_tables(log_path):
            if files <= set(table):
                return table
        if time.monotonic() > deadline:
            return None
        time.sleep(2)


def parse_dt(value: str | None) -> datetime.datetime | None:
    return datetime.datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def drain(api, dag_ids: list[str], label: str, timeout: float) -> dict:
    """Trigger one manual run of every DAG at once; wait until all have ended; timings and task instances."""
    wanted = set(dag_ids)
    began_wall = datetime.datetime.now(datetime.timezone.utc)
    began = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        run_ids = dict(zip(dag_ids, pool.map(api.trigger, dag_ids)))
    triggered = time.monotonic() - began
    log(f"{label}: {len(run_ids)} runs triggered in {triggered:.1f} s; waiting")
    deadline = began + timeout
    last_report = 0.0
    while True:
        runs = {r["dag_id"]: r for r in paged(api, "/api/v2/dags/~/dagRuns", "dag_runs", {"run_type": "manual"})
                if r["dag_id"] in wanted and r["dag_run_id"] == run_ids.get(r["dag_id"])}
        done = [r for r in runs.values() if r["state"] in ("success", "failed")]
        if len(done) == len(wanted):
            break
        if time.monotonic() - last_report > 30:
            states: dict[str, int] = {}
            for r in runs.values():
                states[r["state"]] = states.get(r["state"], 0) + 1
            log(f"  {label}: {time.monotonic() - began:.0f} s, runs {states}")
            last_report = time.monotonic()
        if time.monotonic() > deadline:
            raise RuntimeError(f"{label}: {len(wanted) - len(done)} runs not finished within {timeout:.0f} s")
        time.sleep(2)
    observed = time.monotonic() - began
    ended = max(parse_dt(r["end_date"]) for r in runs.values())
    total = (ended - began_wall).total_seconds()
    tis = [t for t in paged(api, "/api/v2/dags/~/dagRuns/~/taskInstances", "task_instances")
           if t["dag_id"] in wanted and t["dag_run_id"] == run_ids.get(t["dag_id"])]
    final = [t for t in tis if t["state"] in FINAL]
    by_state: dict[str, int] = {}
    for t in tis:
        by_state[str(t["state"])] = by_state.get(str(t["state"]), 0) + 1
    work = [t["duration"] for t in tis if t.get("duration") is not None and t["state"] in ("success", "failed")]
    waits = [(parse_dt(t["start_date"]) - parse_dt(t["queued_when"])).total_seconds()
             for t in tis if t.get("queued_when") and t.get("start_date")]
    return {"runs": runs, "run_ids": run_ids, "total": total, "observed": observed, "triggered": triggered,
            "tis": tis, "tasks": len(final), "by_state": by_state, "work_sum": sum(work),
            "work_median": statistics.median(work) if work else 0.0,
            "queue_wait_median": statistics.median(waits) if waits else None}


def report_failures(api, result: dict) -> list[str]:
    failed = [r for r in result["runs"].values() if r["state"] != "success"]
    lines = []
    for run in failed[:5]:
        quoted = urllib.parse.quote(run["dag_run_id"], safe="")
        bad = [t for t in result["tis"] if t["dag_id"] == run["dag_id"] and t["state"] not in ("success", "skipped")]
        lines.append(f"{run['dag_id']} {run['dag_run_id']}: {run['state']}; tasks "
                     + ", ".join(f"{t['task_id']}={t['state']}" for t in bad))
        for t in bad:
            if t["state"] == "failed":
                lines.append(f"--- log of {t['task_id']} (end) ---\n{api._task_log(run['dag_id'], quoted, t)[-2500:]}")
                break
    if len(failed) > 5:
        lines.append(f"... and {len(failed) - 5} more failed runs")
    return lines


def ensure_pool(api, name: str, slots: int) -> None:
    from harness.airflow_standalone import AirflowError

    try:
        api._post("/api/v2/pools", {"name": name, "slots": slots, "description": "celery_scale benchmark",
                                    "include_deferred": False})
    except AirflowError as exc:
        if "409" not in str(exc):
            raise
        api._request("PATCH", f"/api/v2/pools/{urllib.parse.quote(name)}?update_mask=slots", {"slots": slots})


def drain_baseline(api, dag_ids: list[str], label: str, short: str, timeout: float) -> dict:
    """:func:`drain` of a baseline's runs, logging its totals and any run that did not succeed."""
    result = drain(api, dag_ids, label, timeout)
    log(f"{short} runs: {result['total']:.1f} s (poll saw the end at {result['observed']:.1f} s), "
        f"task instances {result['by_state']}")
    not_success = [r for r in result["runs"].values() if r["state"] != "success"]
    if not_success:
        log(f"note: {len(not_success)} {short} runs did not succeed")
    return result


def row(metric: str, ours: str, base: str, ratio: str, goal: str, met: str) -> str:
    return f"| {metric} | {ours} | {base} | {ratio} | {goal} | {met} |"


def leftover_processes(sessions: list[int]) -> list[str]:
    out = subprocess.run(["ps", "-eo", "pid,sid,args"], capture_output=True, text=True).stdout.splitlines()[1:]
    wanted = {str(s) for s in sessions if s}
    return [line for line in out if line.split(None, 2)[1] in wanted]


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=100, help="generated specs, and as many baseline DAGs (default 100)")
    parser.add_argument("--pool-slots", type=int, default=4, help="slots of the pool both sides run in (default 4)")
    parser.add_argument("--workers", type=int, default=2, help="Celery workers on the default queue (default 2)")
    parser.add_argument("--concurrency", type=int, default=2, help="task slots of each worker (default 2)")
    parser.add_argument("--files", type=int, default=3, help="small files in each spec's source (default 3)")
    parser.add_argument("--min-file-process-interval", type=int, default=30,
                        help="the DAG processor's re-parse interval in s (default 30, Airflow's default)")
    parser.add_argument("--noop-baseline", action="store_true",
                        help="also N DAGs of no-op PythonOperator tasks of the same shape, which do go through "
                             "Celery and a task process (a third drain; for information)")
    parser.add_argument("--timeout", type=float, default=5400, help="limit of each drain, in s (default 5400)")
    parser.add_argument("--dir", help="work here instead of a new temp directory")
    parser.add_argument("--keep", action="store_true", help="keep the generated folders and logs")
    parser.add_argument("--seed", type=int, default=20261129)
    parser.add_argument("--quick", action="store_true", help="for run_all.py --quick: --count 20 (explicit flags still win)")
    if "--quick" in sys.argv[1:]:
        parser.set_defaults(count=20)
    args = parser.parse_args()

    from harness import airflow_celery

    base = Path(args.dir).resolve() if args.dir else Path(tempfile.mkdtemp(prefix="metabackup-bench-scale-"))
    base.mkdir(parents=True, exist_ok=True)
    subdirs = ("dags", "specs", "src", "data", "airflow", "probe-home")
    for sub in subdirs:
        shutil.rmtree(base / sub, ignore_errors=True)
    instance = None
    sessions: list[int] = []
    code = 0
    try:
        n = args.count
        dags, specs, names = generate(base, n, args.files, args.seed)
        log(f"generated {n} specs and DAG files under {base}")
        shape = backup_shape(dags / f"backup_{names[0]}.py", specs, base / "probe-home")
        tasks = {k: tuple(v) for k, v in shape["tasks"].items()}
        spec_pools = [p for p in shape["pools"] if p != "default_pool"]
        pool = spec_pools[0] if spec_pools else DEFAULT_POOL
        log(f"{shape['dag_id']} has {len(tasks)} tasks in pool(s) {shape['pools']}; baseline: {len(tasks)} "
            f"EmptyOperator tasks per DAG, same edges and trigger rules, pool {pool!r}")
        if not spec_pools:
            log(f"  (the spec has no pool yet: the backup tasks run in default_pool, given {args.pool_slots} slots too)")
        empty_ids = write_baselines(dags, names, tasks, pool)
        backup_ids = [f"backup_{n_}" for n_ in names]
        noop_ids = write_baselines(dags, names, tasks, pool, "noop", NOOP_TEMPLATE) if args.noop_baseline else []
        expected = set(backup_ids) | {f"restore_{n_}" for n_ in names} | set(empty_ids) | set(noop_ids)

        workers = {f"w{i}": {"queues": ["default"], "concurrency": args.concurrency} for i in range(args.workers)}
        env = {"AIRFLOW__CORE__DEFAULT_POOL_TASK_SLOT_COUNT": str(args.pool_slots),
               "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": str(args.min_file_process_interval),
               "AIRFLOW__DAG_PROCESSOR__PRINT_STATS_INTERVAL": "10"}
        log(f"starting the deployment ({args.workers} workers x {args.concurrency}, pool slots {args.pool_slots})")
        began = time.monotonic()
        # start() stops whatever it started if it fails
        instance = airflow_celery.start(base / "airflow", dags, specs, workers=workers, env=env, timeout=900)
        sessions = [p.pid for p in instance.processes.values()] + [instance.redis.pid]
        log(f"deployment healthy after {time.monotonic() - began:.0f} s")
        api = instance.client()
        processor_started = process_start(instance.processes["dag-processor"].pid)

        # 1. the DAG processor
        listed_s, at_first_poll = wait_all_listed(api, expected, processor_started, timeout=1800)
        log(f"all {len(expected)} DAGs listed {'<= ' if at_first_poll else ''}{listed_s:.1f} s after the "
            f"dag-processor started; no import errors")
        first = first_serialized(instance)
        started_wall = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(
            seconds=boottime() - processor_started)

        def last_of(ids) -> float:
            return (max(first[i] for i in ids) - started_wall).total_seconds()

        ours_last = last_of(backup_ids + [f"restore_{n_}" for n_ in names])
        base_last = last_of(empty_ids)
        first_any = (min(first[i] for i in expected) - started_wall).total_seconds()
        loop_s = max(ours_last, base_last) - first_any
        log(f"first serialization (dag_version.created_at), s after the dag-processor started: first DAG "
            f"{first_any:.1f}, last of ours {ours_last:.1f}, last baseline {base_last:.1f}; first loop "
            f"(first to last DAG) {loop_s:.1f} s")
        ours_files = {f"backup_{n_}.py" for n_ in names}
        base_files = {f"{i}.py" for i in empty_ids}
        table = first_full_table(instance.logs["dag-processor"], ours_files | base_files | {f"{i}.py" for i in noop_ids},
                                 timeout=60)
        if table:
            ours_parse = [table[f] for f in ours_files]
            base_parse = [table[f] for f in base_files]
            log(f"per-file Last Duration (first full stats table): ours median {statistics.median(ours_parse):.2f} s, "
                f"sum {sum(ours_parse):.1f} s; baseline median {statistics.median(base_parse):.2f} s, "
                f"sum {sum(base_parse):.1f} s")
        else:
            ours_parse = base_parse = []
            log("no 'DAG File Processing Stats' table with every file in dag-processor.log within 60 s")

        # 2. the drains
        shape_rest = api.get(f"/api/v2/dags/{backup_ids[0]}/tasks")
        rest_count = shape_rest["total_entries"]
        if rest_count != len(tasks):
            raise RuntimeError(f"{backup_ids[0]}: {rest_count} tasks in the API, {len(tasks)} when built locally")
        rest_pools = sorted({t["pool"] for t in shape_rest["tasks"]})
        ensure_pool(api, pool, args.pool_slots)
        if "default_pool" in rest_pools:
            ensure_pool(api, "default_pool", args.pool_slots)
        pools = {p["name"]: p["slots"] for p in paged(api, "/api/v2/pools", "pools")}
        log(f"pools: {pools}; backup tasks in {rest_pools}, baseline tasks in [{pool!r}]")
        for dag in paged(api, "/api/v2/dags", "dags"):
            if dag["dag_id"] in expected and dag["is_paused"]:
                api._request("PATCH", f"/api/v2/dags/{dag['dag_id']}", {"is_paused": False})

        ours = drain(api, backup_ids, f"{n} backup runs", args.timeout)
        log(f"backup runs: {ours['total']:.1f} s (poll saw the end at {ours['observed']:.1f} s), "
            f"task instances {ours['by_state']}")
        failed = report_failures(api, ours)
        if failed:
            print("\n".join(failed))
            log("FAILED: not every backup run succeeded")
            return 1
        baseline = drain_baseline(api, empty_ids, f"{n} EmptyOperator runs", "EmptyOperator", args.timeout)
        noop = drain_baseline(api, noop_ids, f"{n} no-op PythonOperator runs", "no-op", args.timeout) \
            if noop_ids else None

        per_ours = ours["total"] / ours["tasks"]
        per_base = baseline["total"] / baseline["tasks"]
        slots = min(args.pool_slots, args.workers * args.concurrency)
        print()
        print(f"{'':<22}{'total s':>9}{'tasks':>7}{'s/task':>8}{'task s (sum)':>14}{'median task s':>15}{'median queued->start s':>24}")
        for label, r in [("backup (ours)", ours), ("EmptyOperator", baseline)] + ([("no-op PythonOperator", noop)]
                                                                                   if noop else []):
            wait = r["queue_wait_median"]
            print(f"{label:<22}{r['total']:9.1f}{r['tasks']:7d}{r['total'] / r['tasks']:8.3f}{r['work_sum']:14.1f}"
                  f"{r['work_median']:15.2f}{'-' if wait is None else f'{wait:.2f}':>24}")
        print(f"(ours: {slots} task slots; busy share of the slots = task s / (total s x slots) = "
              f"{ours['work_sum'] / (ours['total'] * slots):.0%}; EmptyOperator tasks never reach a worker: "
              f"the scheduler marks them success)")

        print()
        print(row("metric", "ours", "baseline", "ratio", "goal", "met"))
        print(row("---", "---", "---", "---", "---", "---"))
        print(row(f"dag processor: all {len(expected)} DAGs listed (s, from its start)",
                  f"{'<= ' if at_first_poll else ''}{listed_s:.1f}", "-", "-", "-", "-"))
        print(row(f"dag processor: first loop, first to last of the {len(expected)} DAGs serialized (s)",
                  f"{loop_s:.1f}", "-", "-", "-", "-"))
        print(row(f"dag processor: last DAG first serialized (s from its start; ours {2 * n} / baseline {n})",
                  f"{ours_last:.1f}", f"{base_last:.1f}", "-", "-", "-"))
        if ours_parse:
            po, pb = statistics.median(ours_parse), statistics.median(base_parse)
            print(row("dag processor: median file parse, first full loop (s)", f"{po:.2f}", f"{pb:.2f}",
                      f"{po / pb:.2f}x", "-", "-"))
        print(row(f"{n} runs drain (s)", f"{ours['total']:.1f}", f"{baseline['total']:.1f}",
                  f"{ours['total'] / baseline['total']:.2f}x", "-", "-"))
        print(row(f"per task (s; {ours['tasks']} / {baseline['tasks']} task instances)", f"{per_ours:.3f}",
                  f"{per_base:.3f}", f"{per_ours / per_base:.2f}x", f"<= {PER_TASK_GOAL:.0f}x baseline per task",
                  "yes" if per_ours / per_base <= PER_TASK_GOAL else "NO"))
        if noop:
            per_noop = noop["total"] / noop["tasks"]
            print(row(f"per task vs no-op PythonOperator on the workers (s; {ours['tasks']} / {noop['tasks']})",
                      f"{per_ours:.3f}", f"{per_noop:.3f}", f"{per_ours / per_noop:.2f}x", "-", "-"))
        return code
    except Exception as exc:
        log(f"FAILED: {type(exc).__name__}: {exc}")
        if instance is not None:
            for name in ("scheduler", "dag-processor"):
                print(f"--- {name}.log (end) ---\n{instance.log_tail(name, 30)}")
        return 1
    finally:
        if instance is not None:
            began = time.monotonic()
            sessions += [p.pid for p in instance.processes.values()]
            try:
                instance.stop()
            finally:
                left = leftover_processes(sessions)
                log(f"deployment stopped in {time.monotonic() - began:.0f} s; "
                    + (f"LEFT RUNNING: {left}" if left else "no process of it left"))
        if args.keep:
            print(f"kept {base}")
        elif args.dir:
            for sub in subdirs:
                shutil.rmtree(base / sub, ignore_errors=True)
        else:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == SHAPE_FLAG:
        child_shape(sys.argv[2])
        raise SystemExit(0)
    raise SystemExit(main())
