"""DAG parse time: our spec-compiled DAG files against equivalent hand-written DAG files.

Generates, under a temp directory (fixed seed):

* ours: ``include/backup_tasks/<name>.yaml`` — ``--count`` (200) valid, varied task specs
  (periodic/manual, timezones, policies, 1-4 sources among OMS, LdapServer, DBService, NameNode, all
  of kind ``files``, each with a LocalDir target, some with a mirror) — and ``dags/backup_<name>.py``,
  a copy of the shipped ``dags/backup_default.py`` for each (it builds two DAGs: ``backup_<name>``
  and ``restore_<name>``);
* baseline: as many plain Python DAG files written the way one would by hand (``airflow.sdk`` DAG,
  TaskGroup, ``EmptyOperator``), each with the same two DAGs: for every DAG the same task ids,
  the same number of tasks and the same dependency edges as ours (checked after loading).  The
  hand-written DAGs declare no Params, so building our Params counts against us.

Measures, each sample in a fresh interpreter in which ``airflow.sdk`` and ``DagBag`` are imported
before the clock starts (the state of Airflow's DAG processor before it parses a file; everything
else a file imports, our package or the standard provider, is inside the timing):

(a) one DAG file: ``DagBag`` over a single file, for ``--single`` (5) files of different sizes;
(b) a folder: ``DagBag`` over all ``--count`` files.

Ours is measured twice: **cold** (``METABACKUP_PARSE_CACHE=off``: every spec is read and validated,
as at the first parse after a spec or our code changed) and **warm** (the plan of each spec cached
by an earlier parse, as at every later parse).  Samples alternate between the three for
``--repeat`` rounds, after one untimed warm-up of each (AIRFLOW_HOME, bytecode caches, the plan
cache).  The children write bytecode under the temp directory (``PYTHONPYCACHEPREFIX``), as a
deployment would have it.  Prints medians and a table ``metric | ours | baseline | ratio | goal | met``.

    PYTHONPATH=plugins:. .venv/bin/python bench/parse_time.py [--repeat 3] [--count 200] [--single 5] [--dir DIR] [--keep]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
MARK = "@@PARSE-RESULT@@"
CHILD_FLAG = "--_child-bag"
IMPORT_FLAG = "--_child-import"
GOAL = 1.5  # ours/baseline, at most
OUR_MODULE = "metabackup.airflow.dag_factory"
BASELINE_MODULE = "airflow.providers.standard.operators.empty"
SOURCE_NAMES = ("OMS", "LdapServer", "DBService", "NameNode")
TIMEZONES = ("UTC", "Asia/Shanghai", "Europe/Berlin", "America/New_York")
OFFSETS = {"UTC": "Z", "Asia/Shanghai": "+08:00", "Europe/Berlin": "+01:00", "America/New_York": "-05:00"}
SOURCE_DIRS = {
    "OMS": ("om-server/conf", "om-server/workspace"),
    "LdapServer": ("ldapserver/etc", "ldapserver/data"),
    "DBService": ("dbservice/conf", "dbservice/data"),
    "NameNode": ("namenode/conf", "namenode/current"),
}


# ---------------------------------------------------------------------------------------------
# Generation
# ---------------------------------------------------------------------------------------------
def spec_doc(i: int, rng: random.Random) -> dict:
    name = f"task_{i:03d}"
    tz = rng.choice(TIMEZONES)
    off = OFFSETS[tz]
    created = f"2026-{rng.randint(1, 10):02d}-{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}:{rng.choice((0, 15, 30)):02d}:00{off}"
    doc: dict = {"name": name, "description": f"Generated benchmark task {i}", "created": created,
                 "cluster_version": rng.choice(("3.5.0", "3.5.1", "8.3.0", "6.5.1-sp2")), "timezone": tz}
    if rng.random() < 0.7:
        doc["type"] = "periodic"
        period = rng.choice(("hour", "day", "day"))
        doc["schedule"] = {"start": f"2026-12-{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}:00:00{off}",
                           "period": period, "every": rng.choice((1, 1, 2, 6, 12) if period == "hour" else (1, 1, 7))}
    else:
        doc["type"] = "manual"
    doc["policy"] = rng.choice(("full_then_incremental", "full_always",
                                {"type": "full_every_n", "n": rng.randint(2, 14)}))
    data_path = rng.choice(("/srv/BigData", "/data/cluster", "/opt/huawei/Bigdata"))
    doc["data_path"] = data_path
    if rng.random() < 0.2:
        doc["staging_dir"] = f"/var/tmp/metabackup-staging/{name}"
    if rng.random() < 0.2:
        doc["queue"] = rng.choice(("backup", "mgmt-node"))
    doc["retries"] = rng.randint(0, 5)
    if rng.random() < 0.5:
        doc["tags"] = rng.sample(["nightly", "prod", "dr", "compliance", "oms"], rng.randint(1, 3))
    sources = {}
    for src in rng.sample(SOURCE_NAMES, rng.randint(1, 4)):
        body: dict = {"kind": "files", "paths": [f"{data_path}/{d}" for d in SOURCE_DIRS[src]]}
        if rng.random() < 0.6:
            body["exclude"] = rng.sample(["*.tmp", "*.swp", "*.lock", "logs/*", "*.pid"], rng.randint(1, 3))
        target: dict = {"type": "LocalDir", "max_backups": rng.randint(1, 100)}
        pick = rng.random()
        if pick < 0.4:
            target["path"] = "LocalBackup"
        elif pick < 0.8:
            target["path"] = f"/srv/Backup/{src.lower()}"
        if rng.random() < 0.25:
            target["mirror"] = f"/mnt/standby/{name}/{src.lower()}"
        body["target"] = target
        sources[src] = body
    doc["sources"] = sources
    policy = doc["policy"]
    if isinstance(policy, dict):  # full_every_n: a chain of n sets must fit in every target's retention
        for body in sources.values():
            body["target"]["max_backups"] = max(body["target"]["max_backups"], policy["n"])
    return doc


BASELINE_TEMPLATE = '''\
"""Backup task {name}: hand-written DAG."""

from datetime import timedelta

import pendulum
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG, TaskGroup

with DAG(
    dag_id="backup_{name}",
    description={description!r},
    schedule={schedule},
    start_date=pendulum.parse({start!r}),
    catchup=False,
    max_active_runs=1,
    default_args={{"owner": "metabackup", "retries": {retries}, "retry_delay": timedelta(minutes=1)}},
    tags={tags!r},
) as dag:
    preflight = EmptyOperator(task_id="preflight")
    record = EmptyOperator(task_id="record", trigger_rule="none_failed")
{groups}
'''

GROUP_TEMPLATE = '''
    with TaskGroup(group_id="{src}") as {var}:
        decide = EmptyOperator(task_id="decide")
        full = EmptyOperator(task_id="full")
        incremental = EmptyOperator(task_id="incremental")
        archive = EmptyOperator(task_id="archive", trigger_rule="none_failed_min_one_success")
        upload = EmptyOperator(task_id="upload")
        verify = EmptyOperator(task_id="verify")
        retention = EmptyOperator(task_id="retention")
        decide >> [full, incremental] >> archive >> upload >> verify >> retention
    preflight >> {var} >> record
'''

RESTORE_TEMPLATE = '''

with DAG(
    dag_id="restore_{name}",
    description="Restore from backup task {name}",
    schedule=None,
    start_date=pendulum.parse({start!r}),
    catchup=False,
    max_active_runs=1,
    default_args={{"owner": "metabackup", "retries": 0}},
    tags={tags!r},
) as restore_dag:
    resolve = EmptyOperator(task_id="resolve")
    verify = EmptyOperator(task_id="verify")
    safety_backup = EmptyOperator(task_id="safety_backup")
    restore = EmptyOperator(task_id="restore", trigger_rule="none_failed")
    validate = EmptyOperator(task_id="validate")
    report = EmptyOperator(task_id="report", trigger_rule="none_failed")
    resolve >> verify >> safety_backup >> restore >> validate >> report
'''


def baseline_source(doc: dict) -> str:
    sched = doc.get("schedule")
    if sched is None:
        schedule = "None"
    else:
        schedule = f"timedelta({'hours' if sched['period'] == 'hour' else 'days'}={sched['every']})"
    groups = "".join(GROUP_TEMPLATE.format(src=src, var=src.lower()) for src in doc["sources"])
    backup = BASELINE_TEMPLATE.format(
        name=doc["name"], description=doc["description"], schedule=schedule, start=doc["created"],
        retries=doc["retries"], tags=["metabackup", doc["type"], *doc["sources"], *doc.get("tags", [])], groups=groups)
    return backup + RESTORE_TEMPLATE.format(name=doc["name"], start=doc["created"],
                                            tags=["metabackup", "restore", *doc["sources"]])


def generate(base: Path, count: int, seed: int) -> tuple[Path, Path, Path]:
    rng = random.Random(seed)
    ours_dags, spec_dir = base / "ours" / "dags", base / "ours" / "include" / "backup_tasks"
    base_dags = base / "baseline" / "dags"
    for d in (ours_dags, spec_dir, base_dags):
        d.mkdir(parents=True, exist_ok=True)
    template = REPO / "dags" / "backup_default.py"
    for i in range(count):
        doc = spec_doc(i, rng)
        (spec_dir / f"{doc['name']}.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
        shutil.copy(template, ours_dags / f"backup_{doc['name']}.py")
        (base_dags / f"backup_{doc['name']}.py").write_text(baseline_source(doc))
    return ours_dags, spec_dir, base_dags


# ---------------------------------------------------------------------------------------------
# Measurement
# ---------------------------------------------------------------------------------------------
def child_bag(folder: str) -> None:
    """Fresh interpreter: load one folder (or one file) with DagBag; print timings and what it found."""
    import inspect

    import airflow.sdk  # noqa: F401 - both kinds of DAG file use it; imported before timing
    from airflow.dag_processing.dagbag import DagBag

    kwargs: dict = {"dag_folder": folder}
    if "include_examples" in inspect.signature(DagBag).parameters:  # gone in Airflow 3.x
        kwargs["include_examples"] = False
    t0 = time.perf_counter()
    bag = DagBag(**kwargs)
    seconds = time.perf_counter() - t0
    shapes = {}
    for dag_id, dag in bag.dags.items():
        edges = sorted((t.task_id, d) for t in dag.tasks for d in t.downstream_task_ids)
        shapes[dag_id] = [len(dag.tasks), hashlib.sha1(json.dumps(edges).encode()).hexdigest()]
    per_file = sorted(s.duration.total_seconds() for s in bag.dagbag_stats)
    serialize_s = None
    if os.path.isfile(folder) and bag.dags:
        # what the DAG processor does next with each DAG (plug-ins loaded first, outside the timing)
        from airflow import plugins_manager
        from airflow.serialization.serialized_objects import DagSerialization

        plugins_manager.get_timetables_plugins()
        t1 = time.perf_counter()
        for dag in bag.dags.values():
            DagSerialization.to_dict(dag)
        serialize_s = time.perf_counter() - t1
    print(MARK + json.dumps({
        "seconds": seconds, "dags": len(bag.dags), "files": len(per_file),
        "import_errors": {k: v[-1500:] for k, v in list(bag.import_errors.items())[:3]},
        "n_import_errors": len(bag.import_errors), "shapes": shapes,
        "file_median_s": statistics.median(per_file) if per_file else 0.0,
        "file_max_s": per_file[-1] if per_file else 0.0,
        "serialize_s": serialize_s,
    }))


def child_import(module: str) -> None:
    """Fresh interpreter: the one-time cost of a DAG file's own imports once Airflow is loaded."""
    import importlib

    import airflow.sdk  # noqa: F401
    from airflow.dag_processing.dagbag import DagBag  # noqa: F401

    t0 = time.perf_counter()
    importlib.import_module(module)
    print(MARK + json.dumps({"seconds": time.perf_counter() - t0}))


def import_cost(module: str, env: dict) -> float:
    proc = subprocess.run([sys.executable, __file__, IMPORT_FLAG, module], env=env, capture_output=True, text=True,
                          timeout=300)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(MARK)]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"importing {module} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len(MARK):])["seconds"]


def measure(folder: Path, env: dict) -> dict:
    """One fresh child over ``folder`` (a folder or a single DAG file); ``process_s`` is its whole life,
    interpreter start-up and Airflow's import included."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, CHILD_FLAG, str(folder)], env=env,
                          capture_output=True, text=True, timeout=600)
    process_s = time.perf_counter() - t0
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(MARK)]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"loading {folder} failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return {**json.loads(lines[-1][len(MARK):]), "process_s": process_s}


DAGS_PER_FILE = 2  # backup_<name> and restore_<name>
SIDES = ("cold", "warm", "baseline")
LABELS = {"cold": "ours, cold (validates)", "warm": "ours, warm (cached plan)", "baseline": "hand-written"}


def check(result: dict, label: str, count: int) -> None:
    want = count * DAGS_PER_FILE
    if result["dags"] != want or result["n_import_errors"]:
        detail = "\n".join(f"--- {k}\n{v}" for k, v in result["import_errors"].items())
        raise SystemExit(f"{label}: DagBag found {result['dags']} DAGs (want {want}) and "
                         f"{result['n_import_errors']} import errors (want 0)\n{detail}")


def pick_single(shapes: dict, n: int) -> list[str]:
    """``n`` task names spread over the backup DAG sizes (smallest to largest)."""
    by_size = sorted((size, dag_id.removeprefix("backup_")) for dag_id, (size, _) in shapes.items()
                     if dag_id.startswith("backup_"))
    if n <= 1:
        return [by_size[len(by_size) // 2][1]]
    return list(dict.fromkeys(by_size[round(i * (len(by_size) - 1) / (n - 1))][1] for i in range(n)))


def row(metric: str, ours: float, base: float, unit: str, goal: float | None = GOAL) -> str:
    ratio = ours / base if base else float("inf")
    met = "-" if goal is None else ("yes" if ratio <= goal else "NO")
    goal_text = "-" if goal is None else f"<= {goal:.1f}x"
    return f"{metric:<46} | {ours:9.1f} {unit:<2} | {base:9.1f} {unit:<2} | {ratio:6.2f}x | {goal_text:<7} | {met}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="alternating rounds (default 3)")
    parser.add_argument("--count", type=int, default=200, help="DAG files per folder (default 200)")
    parser.add_argument("--single", type=int, default=5, help="files measured one by one (default 5)")
    parser.add_argument("--dir", help="work here instead of a new temp directory")
    parser.add_argument("--keep", action="store_true", help="keep the generated folders")
    parser.add_argument("--seed", type=int, default=20261124)
    parser.add_argument("--quick", action="store_true",
                        help="smaller and shorter, for bench/run_all.py --quick: 20 DAG files, 1 single file, 1 round (explicit flags still win)")
    if "--quick" in sys.argv[1:]:
        parser.set_defaults(repeat=1, count=20, single=1)
    args = parser.parse_args()

    base = Path(args.dir).resolve() if args.dir else Path(tempfile.mkdtemp(prefix="metabackup-bench-parse-"))
    base.mkdir(parents=True, exist_ok=True)
    subdirs = ("ours", "baseline", "airflow_home", "parse-cache", "pycache")
    for sub in subdirs:
        shutil.rmtree(base / sub, ignore_errors=True)
    try:
        ours_dags, spec_dir, base_dags = generate(base, args.count, args.seed)
        home = base / "airflow_home"
        (home / "dags").mkdir(parents=True)
        plugins = str(REPO / "plugins")
        env = {**os.environ, "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
               "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"), "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
               "AIRFLOW__CORE__PLUGINS_FOLDER": plugins,
               "METABACKUP_SPEC_DIR": str(spec_dir), "PYTHONPYCACHEPREFIX": str(base / "pycache"),
               "PYTHONPATH": plugins + (os.pathsep + os.environ["PYTHONPATH"] if os.environ.get("PYTHONPATH") else "")}
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        envs = {"cold": {**env, "METABACKUP_PARSE_CACHE": "off"},
                "warm": {**env, "METABACKUP_PARSE_CACHE": str(base / "parse-cache")},
                "baseline": env}
        folders = {"cold": ours_dags, "warm": ours_dags, "baseline": base_dags}

        t0 = time.perf_counter()
        warm = {k: measure(folders[k], envs[k]) for k in ("warm", "baseline", "cold")}  # untimed; fills the caches
        for k, r in warm.items():
            check(r, k, args.count)
        for k in ("cold", "warm"):
            if warm[k]["shapes"] != warm["baseline"]["shapes"]:
                diff = sorted(d for d in warm[k]["shapes"] if warm[k]["shapes"][d] != warm["baseline"]["shapes"].get(d))
                raise SystemExit(f"baseline DAGs differ from ours ({k}) in task count or edges: {diff[:5]}")
        shapes = warm["cold"]["shapes"]
        tasks = sum(n for n, _ in shapes.values())
        sizes = sorted(n for n, _ in shapes.values())
        print(f"{args.count} DAG files per folder ({args.count * DAGS_PER_FILE} DAGs), {tasks} tasks in all "
              f"({sizes[0]}-{sizes[-1]} per DAG: restore 6, backup 9 + 7 per extra source), same task ids and edges "
              f"in both; warm-up {time.perf_counter() - t0:.1f} s", flush=True)

        # (a) single files
        names = pick_single(shapes, args.single)
        files = {"cold": {n: ours_dags / f"backup_{n}.py" for n in names},
                 "warm": {n: ours_dags / f"backup_{n}.py" for n in names},
                 "baseline": {n: base_dags / f"backup_{n}.py" for n in names}}
        for n in names:  # untimed: bytecode of the single-file path
            for k in SIDES:
                check(measure(files[k][n], envs[k]), f"{k} {n}", 1)
        single: dict[str, list[dict]] = {k: [] for k in SIDES}
        for i in range(args.repeat):
            for n in names:
                order = SIDES[i % 3:] + SIDES[:i % 3]
                for k in order:
                    r = measure(files[k][n], envs[k])
                    check(r, f"{k} {n}", 1)
                    single[k].append(r)
            print(f"  single files, round {i + 1}: " + ", ".join(
                f"{k} {statistics.median(r['seconds'] for r in single[k][-len(names):]) * 1000:.1f} ms" for k in SIDES),
                flush=True)

        # (b) folders
        rows: dict[str, list[dict]] = {k: [] for k in SIDES}
        for i in range(args.repeat):
            order = SIDES[i % 3:] + SIDES[:i % 3]
            for k in order:
                r = measure(folders[k], envs[k])
                check(r, k, args.count)
                rows[k].append(r)
            print(f"  folder, round {i + 1}: " + ", ".join(f"{k} {rows[k][-1]['seconds']:.2f} s" for k in SIDES),
                  flush=True)

        def med(samples: list[dict], key: str) -> float:
            return statistics.median(r[key] for r in samples)

        print()
        print(f"(a) one DAG file, DagBag in a fresh interpreter (airflow.sdk and DagBag imported first): "
              f"{len(names)} files ({', '.join(str(shapes['backup_' + n][0]) for n in names)} backup tasks) x "
              f"{args.repeat} rounds, median")
        print(f"{'':<26}{'parse ms':>10}{'serialize ms':>14}{'whole process ms':>18}")
        for k in SIDES:
            print(f"{LABELS[k]:<26}{med(single[k], 'seconds') * 1000:10.1f}{med(single[k], 'serialize_s') * 1000:14.1f}"
                  f"{med(single[k], 'process_s') * 1000:18.0f}")
        print()
        print(f"(b) DagBag over the folder, {args.count} files, median of {args.repeat} rounds, fresh process each")
        print(f"{'':<26}{'s/folder':>10}{'ms/file':>9}{'median file ms':>16}{'slowest file ms':>17}")
        for k in SIDES:
            print(f"{LABELS[k]:<26}{med(rows[k], 'seconds'):10.2f}{med(rows[k], 'seconds') / args.count * 1000:9.1f}"
                  f"{med(rows[k], 'file_median_s') * 1000:16.1f}{med(rows[k], 'file_max_s') * 1000:17.1f}")
        print("(slowest file = usually the first, which pays the one-time imports: metabackup/yaml vs the provider)")
        ours_imp, base_imp = import_cost(OUR_MODULE, envs["warm"]), import_cost(BASELINE_MODULE, env)
        print(f"one-time import after airflow.sdk and DagBag (1 sample each): {OUR_MODULE} {ours_imp * 1000:.1f} ms, "
              f"{BASELINE_MODULE} {base_imp * 1000:.1f} ms")

        print()
        print(f"{'metric':<46} | {'ours':>12} | {'baseline':>12} | {'ratio':>7} | {'goal':<7} | met")
        b = single["baseline"]
        for k in ("warm", "cold"):
            print(row(f"(a) one file, parse, {k}", med(single[k], "seconds") * 1000, med(b, "seconds") * 1000, "ms"))
        for k in ("warm", "cold"):
            print(row(f"(a) one file, parse + serialize, {k}",
                      (med(single[k], "seconds") + med(single[k], "serialize_s")) * 1000,
                      (med(b, "seconds") + med(b, "serialize_s")) * 1000, "ms", None))
        for k in ("warm", "cold"):
            print(row(f"(a) one file, whole process, {k}", med(single[k], "process_s") * 1000,
                      med(b, "process_s") * 1000, "ms", None))
        for k in ("warm", "cold"):
            print(row(f"(b) DagBag {args.count} files, {k}", med(rows[k], "seconds"), med(rows["baseline"], "seconds"), "s"))
        for k in ("warm", "cold"):
            print(row(f"(b) DagBag per-file median, {k}", med(rows[k], "file_median_s") * 1000,
                      med(rows["baseline"], "file_median_s") * 1000, "ms", None))
    finally:
        if args.keep:
            print(f"kept {base}")
        elif args.dir:
            for sub in subdirs:
                shutil.rmtree(base / sub, ignore_errors=True)
        else:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == CHILD_FLAG:
        child_bag(sys.argv[2])
    elif len(sys.argv) == 3 and sys.argv[1] == IMPORT_FLAG:
        child_import(sys.argv[2])
    else:
        main()
