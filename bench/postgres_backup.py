"""DBService backup benchmark on one PostgreSQL 15 database (~1 GB by default), all in one run:
our full against raw ``pg_basebackup -Ft -z`` and pgBackRest; our 1 % incremental against
pgBackRest's; our restore (with WAL replay) against the raw extract-and-start.

    PYTHONPATH=plugins:. .venv/bin/python bench/postgres_backup.py [--size-mb 1024] [--keep]

Needs Debian's pgbackrest (make bench installs it).  Prints ratios against baselines measured
in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pendulum
import psycopg
import yaml

from harness import postgres as pg
from metabackup import pipeline
from metabackup.connections import get_connection
from metabackup.restore import restore_source
from metabackup.sources.postgres import PostgresDestination
from metabackup.spec import load_spec

T0 = pendulum.datetime(2026, 11, 24, 3, tz="UTC")


def our_backup(spec, hour: int) -> tuple[float, int, str]:
    run = pipeline.SetRun.of(spec, "DBService", T0.add(hours=hour))
    started = time.monotonic()
    decision = pipeline.decide(run)
    for step in (pipeline.snapshot, pipeline.archive, pipeline.upload, pipeline.verify):
        step(run)
    manifest = run.catalog().get(run.name.stem)
    return time.monotonic() - started, manifest.archive.size, decision.type


def as_postgres(env: dict, *args: str) -> float:
    started = time.monotonic()
    subprocess.run(["runuser", "-u", "postgres", "--", "env", *[f"{k}={v}" for k, v in env.items()], *args],
                   check=True, capture_output=True)
    return time.monotonic() - started


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    if not shutil.which("pgbackrest"):
        raise SystemExit("pgbackrest is not installed (apt-get install pgbackrest)")
    work = Path(tempfile.mkdtemp(prefix="metabackup-bench-pg-"))
    work.chmod(0o755)
    shutil.chown(work, "postgres", "postgres")
    os.environ.setdefault("AIRFLOW_HOME", str(work / "airflow"))
    server = pg.prepare(work / "cluster")
    env = {"PGPASSWORD": server.superuser_password, "PGHOST": "127.0.0.1", "PGPORT": str(server.port), "PGUSER": "postgres"}
    conf = work / "pgbackrest.conf"
    conf.write_text(f"""[global]
repo1-path={work / 'repo'}
compress-type=gz
compress-level=6
process-max=1
start-fast=y
log-level-console=warn
log-path={work}
lock-path={work}
[bench]
pg1-path={server.data}
pg1-port={server.port}
pg1-host-user=postgres
pg1-socket-path={server.socket_dir}
""")
    shutil.chown(conf, "postgres", "postgres")
    with open(server.data / "postgresql.auto.conf", "a") as auto:
        auto.write(f"archive_mode = on\narchive_command = 'pgbackrest --config={conf} --stanza=bench archive-push %p'\n")
    (work / "repo").mkdir()
    shutil.chown(work / "repo", "postgres", "postgres")
    pg.start(server)
    try:
        scale = max(1, args.size_mb * 100 // 1500)  # pgbench: ~15 MB per scale unit
        started = time.monotonic()
        as_postgres(env, str(pg.BIN / "pgbench"), "-i", "-q", "-s", str(scale), "postgres")
        with psycopg.connect(server.superuser_dsn(), autocommit=True) as conn:
            size = conn.execute("SELECT pg_database_size('postgres')").fetchone()[0]
            conn.execute("CHECKPOINT")
        mib = size / 2**20
        print(f"database: {mib:.0f} MiB (pgbench scale {scale}), loaded in {time.monotonic() - started:.0f} s")

        os.environ["AIRFLOW_CONN_BENCH_PG"] = json.dumps(server.connection())
        get_connection("bench_pg")  # Airflow's one-time start-up is not part of a backup
        spec_path = work / "bench.yaml"
        spec_path.write_text(yaml.safe_dump({
            "name": "bench", "created": "2026-11-24T00:00:00Z", "cluster_version": "3.5.0", "type": "manual",
            "data_path": str(work / "ours"),
            "sources": {"DBService": {"kind": "postgres", "conn_id": "bench_pg", "target": {"type": "LocalDir", "max_backups": 5}}}}))
        spec = load_spec(spec_path)

        raw_dir = work / "raw"
        raw_s = as_postgres(env, str(pg.BIN / "pg_basebackup"), "-D", str(raw_dir), "-Ft", "-z", "-X", "stream", "-c", "fast")
        raw_size = dir_size(raw_dir)
        as_postgres(env, "pgbackrest", f"--config={conf}", "--stanza=bench", "stanza-create")
        br_s = as_postgres(env, "pgbackrest", f"--config={conf}", "--stanza=bench", "--type=full", "backup")
        br_size = dir_size(work / "repo" / "backup")
        ours_s, ours_size, kind = our_backup(spec, 0)
        assert kind == "full"
        print(f"\nfull backup of {mib:.0f} MiB")
        print(f"{'':24}{'seconds':>9}{'MiB/s':>8}{'output MiB':>12}")
        for name, secs, out in (("ours", ours_s, ours_size), ("pg_basebackup -Ft -z", raw_s, raw_size), ("pgbackrest full", br_s, br_size)):
            print(f"{name:24}{secs:9.1f}{mib / secs:8.1f}{out / 2**20:12.1f}")
        print(f"ratio throughput ours/pg_basebackup {raw_s / ours_s:.2f}x   ours/pgbackrest {br_s / ours_s:.2f}x")

        with psycopg.connect(server.superuser_dsn(), autocommit=True) as conn:
            conn.execute("UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid % 100 = 0")
        ours_inc_s, ours_inc_size, kind = our_backup(spec, 1)
        assert kind == "incremental"
        before = dir_size(work / "repo")
        br_inc_s = as_postgres(env, "pgbackrest", f"--config={conf}", "--stanza=bench", "--type=incr", "backup")
        br_inc_size = dir_size(work / "repo") - before
        print("\nincremental after updating 1 % of pgbench_accounts")
        print(f"{'':24}{'seconds':>9}{'MiB':>8}{'size vs own full':>18}{'time vs own full':>18}")
        print(f"{'ours (WAL)':24}{ours_inc_s:9.1f}{ours_inc_size / 2**20:8.1f}{ours_inc_size / ours_size:18.3f}{ours_inc_s / ours_s:18.3f}")
        print(f"{'pgbackrest incr':24}{br_inc_s:9.1f}{br_inc_size / 2**20:8.1f}{br_inc_size / br_size:18.3f}{br_inc_s / br_s:18.3f}")
        print("(pgBackRest's incremental size includes the WAL it archived since its full)")

        restore_root = Path(tempfile.mkdtemp(prefix="metabackup-bench-pgrestore-"))
        restore_root.chmod(0o755)
        started = time.monotonic()
        result = restore_source(spec, "DBService", PostgresDestination(data_dir=str(restore_root / "ours"), keep_running=False))
        ours_restore = time.monotonic() - started
        raw_data = restore_root / "raw"
        raw_data.mkdir(mode=0o700)
        started = time.monotonic()
        subprocess.run(["tar", "-xzf", str(raw_dir / "base.tar.gz"), "-C", str(raw_data)], check=True)
        subprocess.run(["tar", "-xzf", str(raw_dir / "pg_wal.tar.gz"), "-C", str(raw_data / "pg_wal")], check=True)
        with open(raw_data / "postgresql.auto.conf", "a") as auto:
            auto.write(f"port = {pg.free_port()}\narchive_mode = off\nunix_socket_directories = '{restore_root / 'sock'}'\n")
        (restore_root / "sock").mkdir()
        (restore_root / "raw.log").touch()
        subprocess.run(["chown", "-R", "postgres:postgres", str(raw_data), str(restore_root / "raw.log"),
                        str(restore_root / "sock")], check=True)
        pg.start_data_dir(raw_data, restore_root / "raw.log")
        raw_restore = time.monotonic() - started
        pg.stop_data_dir(raw_data, "immediate")
        print("\nrestore")
        print(f"{'ours (verify chain, extract, pg_verifybackup, replay WAL, promote)':70}{ours_restore:7.1f} s")
        print(f"{'raw (extract pg_basebackup tar.gz, start)':70}{raw_restore:7.1f} s")
        print(f"ratio time ours/raw {ours_restore / raw_restore:.2f}x   ({result['recovery'][:60]})")
        shutil.rmtree(restore_root, ignore_errors=True)
    finally:
        server.stop("immediate")
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"kept {work}")


if __name__ == "__main__":
    main()
