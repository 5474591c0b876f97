"""Memory benchmark: the peak RSS of every backup and restore step, per source kind, each step in a
fresh child process, against the RSS of a child that only imports the same modules.

    PYTHONPATH=plugins:. .venv/bin/python bench/memory.py [--quick] [--kinds files,ldap,postgres]
        [--files-mb 1024] [--ldap-entries 100000] [--pg-mb 512] [--keep] [--seed N]

For each kind it sets up a realistic source (``files``: the tree of archive_throughput.py, fixed
seed; ``ldap``: a slapd seeded by slapadd as in ldap_export.py; ``postgres``: a PostgreSQL 15
cluster loaded by ``pgbench -i`` as in postgres_backup.py), each with a LocalDir target, then runs
one full backup, one step per child, as Airflow's tasks do (the steps hand over through the run's
work directory): ``decide``, ``snapshot``, ``archive``, ``upload``, ``verify``, ``retention``; and
the restore of that set in two children, as the restore DAG does: ``restore-verify``
(``restore.verified_plan``: every archive of the chain re-read against its manifest) and
``restore-run`` (``plan_restore`` + ``destination_for`` + ``execute_plan``: into a new directory,
an empty slapd, or a new PostgreSQL data directory).

Every child first imports ``metabackup.pipeline``, ``metabackup.restore`` and ``metabackup.spec``,
loads the spec and, for kinds with a connection, looks it up (Airflow's one-time start-up).  The
peak RSS of a step is the child's ``ru_maxrss`` from ``os.wait4`` (the child and the largest of the
processes it waited for, e.g. ``pg_basebackup`` or ``slapcat``: the largest single process, not a
sum).  The baseline of a kind is one more child doing the same start-up and then importing every
module any of the kind's step children had loaded (their ``sys.modules``, in order): "imports
only".  The metric is the step's peak minus that baseline; the goal is at most 256 MiB for every
step.  Ends with ``metric | ours | baseline | ratio | goal | met`` where ours is MiB beyond
imports, baseline the 256 MiB budget and ratio ours / 256.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MiB = 1 << 20
BUDGET_MIB = 256
CHILD_FLAG = "--_child"
EXECUTED = "2026-11-25T01:00:00+00:00"
BACKUP_STEPS = ("decide", "snapshot", "archive", "upload", "verify", "retention")
RESTORE_STEPS = ("restore-verify", "restore-run")


# ---------------------------------------------------------------------------------------------
# The child: one step (or the imports only)
# ---------------------------------------------------------------------------------------------
def child(cfg: dict) -> None:
    from metabackup import pipeline, restore
    from metabackup.spec import load_spec

    spec = load_spec(cfg["spec"])
    if cfg.get("conn"):
        from metabackup.connections import get_connection

        get_connection(cfg["conn"])  # Airflow's one-time start-up, in the baseline as well
    step, source = cfg["step"], cfg["source"]
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if step == "imports":
        failed = []
        for name in json.loads(Path(cfg["modules"]).read_text()):
            if name in sys.modules or name.startswith("__"):
                continue
            try:
                importlib.import_module(name)
            except BaseException:  # noqa: BLE001 - a module that imports only in its context (e.g. a test hook)
                failed.append(name)
        result = {"not_importable": len(failed)}
    elif step in BACKUP_STEPS:
        run = pipeline.SetRun.of(spec, source, cfg["executed"])
        summary = getattr(pipeline, step)(run)
        result = {k: v for k, v in (summary or {}).items() if isinstance(v, (int, float, str, bool))} if isinstance(
            summary, dict) else {}
        if step == "decide":
            result = {"type": summary.type}
    elif step == "restore-verify":
        plan = restore.verified_plan(spec, source, None, None, "primary")
        result = {"chain": [m.set for m in plan.chain], "bytes": plan.describe()["bytes"]}
    elif step == "restore-run":
        plan = restore.plan_restore(spec, source, None, None, "primary")
        dest = restore.destination_for(plan, cfg["dest"])
        out = restore.execute_plan(plan, dest)
        result = {k: v for k, v in out.items() if isinstance(v, (int, float, str, bool))}
    else:
        raise SystemExit(f"unknown step {step}")
    if cfg.get("modules_out"):
        Path(cfg["modules_out"]).write_text(json.dumps(list(sys.modules)))
    print(json.dumps({"rss_before_kb": before, "result": result}), flush=True)


def run_child(cfg: dict, log: Path) -> dict:
    """One child: its peak RSS (KiB, os.wait4), wall seconds and what it printed last."""
    env = {**os.environ}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "plugins"), str(REPO)] + (
        [env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    with open(log, "w+b") as out:
        started = time.monotonic()
        proc = subprocess.Popen([sys.executable, __file__, CHILD_FLAG, json.dumps(cfg)], stdout=out,
                                stderr=subprocess.STDOUT, env=env, cwd=REPO)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.monotonic() - started
        code = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read().decode(errors="replace")
    if code != 0:
        raise SystemExit(f"step {cfg['step']} of {cfg['source']} failed with exit code {code}:\n{text[-4000:]}")
    data = json.loads(text.strip().splitlines()[-1])
    return {"maxrss_kb": usage.ru_maxrss, "seconds": seconds, **data}


# ---------------------------------------------------------------------------------------------
# Sources
# ---------------------------------------------------------------------------------------------
def files_source(work: Path, size_mb: int, seed: int) -> dict:
    from bench import archive_throughput as tree_gen

    tree = work / "tree"
    started = time.monotonic()
    tree_gen.generate(tree, size_mb, seed)
    files, size = tree_gen.tree_bytes(tree)
    print(f"files: {size / MiB:.0f} MiB in {files} files (archive_throughput's generator, seed {seed}), "
          f"generated in {time.monotonic() - started:.1f} s", flush=True)
    spec = tree_gen.write_spec(work / "ours", tree)  # a files source OMS, LocalDir target, gzip
    return {"spec": spec, "source": tree_gen.SOURCE, "conn": None, "dest": str(work / "restored"),
            "what": f"{size / MiB:.0f} MiB, {files} files"}


def ldap_source(work: Path, entries: int, servers: list) -> dict:
    from bench import ldap_export
    from harness import slapd

    started = time.monotonic()
    server = ldap_export.seeded_server(work / "slapd", entries)
    servers.append(server)
    print(f"ldap: seeded {entries} users by slapadd in {time.monotonic() - started:.1f} s", flush=True)
    empty = slapd.start(slapd.prepare(work / "slapd-restore", accesslog=False))
    servers.append(empty)
    os.environ["AIRFLOW_CONN_BENCH_LDAP"] = server.connection_uri()
    os.environ["AIRFLOW_CONN_BENCH_LDAP_RESTORE"] = empty.connection_uri()
    spec = ldap_export.write_spec(work, "memory", "auto")
    return {"spec": spec, "source": "LdapServer", "conn": "bench_ldap", "dest": "bench_ldap_restore",
            "what": f"{entries} entries"}


def postgres_source(work: Path, size_mb: int, servers: list) -> dict:
    import psycopg
    import yaml

    from harness import postgres as pg

    work.chmod(0o755)
    shutil.chown(work, "postgres", "postgres")
    server = pg.prepare(work / "cluster")
    pg.start(server)
    servers.append(server)
    env = {"PGPASSWORD": server.superuser_password, "PGHOST": "127.0.0.1", "PGPORT": str(server.port), "PGUSER": "postgres"}
    scale = max(1, size_mb * 100 // 1500)  # pgbench: ~15 MB per scale unit (as postgres_backup.py)
    started = time.monotonic()
    subprocess.run(["runuser", "-u", "postgres", "--", "env", *[f"{k}={v}" for k, v in env.items()],
                    str(pg.BIN / "pgbench"), "-i", "-q", "-s", str(scale), "postgres"], check=True, capture_output=True)
    with psycopg.connect(server.superuser_dsn(), autocommit=True) as conn:
        size = conn.execute("SELECT pg_database_size('postgres')").fetchone()[0]
        conn.execute("CHECKPOINT")
    print(f"postgres: {size / MiB:.0f} MiB (pgbench scale {scale}), loaded in {time.monotonic() - started:.0f} s",
          flush=True)
    os.environ["AIRFLOW_CONN_BENCH_PG"] = json.dumps(server.connection())
    spec = work / "bench_memory.yaml"
    spec.write_text(yaml.safe_dump({
        "name": "bench_memory", "created": "2026-11-24T00:00:00Z", "cluster_version": "3.5.0", "type": "manual",
        "data_path": str(work / "ours"),
        "sources": {"DBService": {"kind": "postgres", "conn_id": "bench_pg", "target": {"type": "LocalDir", "max_backups": 5}}}}))
    restore_root = work / "restore"
    restore_root.mkdir(mode=0o755)
    return {"spec": spec, "source": "DBService", "conn": "bench_pg", "dest": str(restore_root / "data"),
            "what": f"{size / MiB:.0f} MiB database"}


# ---------------------------------------------------------------------------------------------
def imports_only(kind: str, label: str, modules: list[str], base: dict, logs: Path) -> dict:
    path = logs / f"{kind}-{label}.baseline-modules.json"
    path.write_text(json.dumps(modules))
    return run_child({**base, "step": "imports", "modules": str(path)}, logs / f"{kind}-{label}.imports.log")


def measure_kind(kind: str, src: dict, work: Path, per_step: bool) -> dict:
    """Each step in its child; then the imports-only child(ren): by default one per kind importing
    the modules EVERY step had loaded (their intersection, so a step's own lazy imports count as
    beyond: never less than the truth), with ``per_step`` one per step importing exactly its modules."""
    logs = work / "logs"
    logs.mkdir(exist_ok=True)
    base = {"spec": str(src["spec"]), "source": src["source"], "conn": src["conn"], "executed": EXECUTED}
    steps: dict[str, dict] = {}
    loaded: dict[str, list[str]] = {}
    for step in BACKUP_STEPS + RESTORE_STEPS:
        cfg = {**base, "step": step, "dest": src["dest"], "modules_out": str(logs / f"{kind}-{step}.modules.json")}
        r = steps[step] = run_child(cfg, logs / f"{kind}-{step}.log")
        loaded[step] = json.loads(Path(cfg["modules_out"]).read_text())
        print(f"  {kind} {step:<15} peak RSS {r['maxrss_kb'] / 1024:7.1f} MiB ({r['rss_before_kb'] / 1024:.1f} MiB "
              f"after its start-up), {r['seconds']:.1f} s  {json.dumps(r['result'])[:110]}", flush=True)
    if steps["decide"]["result"].get("type") != "full":
        raise SystemExit(f"{kind}: expected a full backup, got {steps['decide']['result']}")
    if per_step:
        for step, modules in loaded.items():
            b = imports_only(kind, step, modules, base, logs)
            steps[step]["baseline_kb"] = b["maxrss_kb"]
            print(f"  {kind} {step:<15} imports only: peak RSS {b['maxrss_kb'] / 1024:7.1f} MiB ({len(modules)} modules, "
                  f"{b['result']['not_importable']} not importable alone), {b['seconds']:.1f} s", flush=True)
    else:
        shared = set.intersection(*(set(m) for m in loaded.values()))
        modules = [m for m in loaded[BACKUP_STEPS[0]] if m in shared]
        b = imports_only(kind, "shared", modules, base, logs)
        for step in steps:
            steps[step]["baseline_kb"] = b["maxrss_kb"]
        print(f"  {kind} imports only    peak RSS {b['maxrss_kb'] / 1024:7.1f} MiB (the {len(modules)} modules every "
              f"step loaded, of {min(map(len, loaded.values()))}-{max(map(len, loaded.values()))}; "
              f"{b['result']['not_importable']} not importable alone), {b['seconds']:.1f} s", flush=True)
    return {"steps": steps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kinds", default="files,ldap,postgres", help="comma-separated (default files,ldap,postgres)")
    parser.add_argument("--files-mb", type=int, default=1024, help="files tree size in MiB (default 1024)")
    parser.add_argument("--ldap-entries", type=int, default=100_000, help="LDAP users (default 100000)")
    parser.add_argument("--pg-mb", type=int, default=512, help="pgbench database size in MiB (default 512)")
    parser.add_argument("--seed", type=int, default=20261124)
    parser.add_argument("--keep", action="store_true", help="keep the work directories (servers are stopped)")
    parser.add_argument("--per-step-baseline", action="store_true",
                        help="one imports-only child per step with exactly its modules (default: one per kind, with "
                             "the modules every step loaded)")
    parser.add_argument("--quick", action="store_true",
                        help="smaller, for bench/run_all.py --quick: 100 MiB tree, 5000 entries, 64 MiB database "
                             "(explicit flags still win)")
    if "--quick" in sys.argv[1:]:
        parser.set_defaults(files_mb=100, ldap_entries=5_000, pg_mb=64)
    args = parser.parse_args()
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    unknown = set(kinds) - {"files", "ldap", "postgres"}
    if unknown:
        parser.error(f"unknown kinds {sorted(unknown)}")

    # A SIGTERM (run_all.py interrupted, a CI timeout) unwinds like Ctrl-C, through the finally below.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    root = Path(tempfile.mkdtemp(prefix="metabackup-bench-memory-"))
    root.chmod(0o755)  # the postgres user must traverse it
    os.environ.setdefault("AIRFLOW_HOME", str(root / "airflow"))
    servers: list = []
    results: dict[str, dict] = {}
    what: dict[str, str] = {}
    try:
        for kind in kinds:
            work = root / kind
            work.mkdir()
            if kind == "files":
                src = files_source(work, args.files_mb, args.seed)
            elif kind == "ldap":
                src = ldap_source(work, args.ldap_entries, servers)
            else:
                src = postgres_source(work, args.pg_mb, servers)
            what[kind] = src["what"]
            results[kind] = measure_kind(kind, src, work, args.per_step_baseline)
            while servers:
                servers.pop().stop()
            if not args.keep:
                shutil.rmtree(work, ignore_errors=True)

        print("\npeak RSS per step, MiB (whole child; beyond imports = minus its imports-only child)")
        print(f"{'kind':<10}{'step':<16}{'peak':>8}{'imports':>9}{'beyond':>8}{'seconds':>9}")
        rows = []
        for kind, r in results.items():
            for step, s in r["steps"].items():
                peak, base = s["maxrss_kb"] / 1024, s["baseline_kb"] / 1024
                print(f"{kind:<10}{step:<16}{peak:8.1f}{base:9.1f}{peak - base:8.1f}{s['seconds']:9.1f}")
                rows.append((kind, step, peak - base))
        print(f"\n{time.strftime('%Y-%m-%d', time.gmtime())}, {', '.join(f'{k}: {w}' for k, w in what.items())}; "
              f"load average {os.getloadavg()[0]:.1f}")
        print("metric | ours | baseline | ratio | goal | met")
        for kind, step, beyond in rows:
            ratio = beyond / BUDGET_MIB
            print(f"peak RSS beyond imports, {kind} {step} | {beyond:.1f} | {BUDGET_MIB} | {ratio:.2f}x | <= 1.00x | "
                  f"{'yes' if ratio <= 1.0 else 'NO'}")
    finally:
        for server in servers:
            try:
                server.stop()
            except Exception as exc:  # noqa: BLE001 - stop the others anyway
                print(f"could not stop {server}: {exc}", file=sys.stderr)
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == CHILD_FLAG:
        child(json.loads(sys.argv[2]))
    else:
        main()
