"""DBService backup benchmark on one PostgreSQL 15 database (pgbench, ~512 MiB by default), all in
one run: our full against raw ``pg_basebackup -Ft -z`` and pgBackRest; then two 1 % workloads,
each followed by our set and a pgBackRest incremental (sizes as a fraction of each one's own full):

(b) 1 % of the rows of ``pgbench_accounts`` in one clustered range (hot rows side by side):
    goal: our incremental <= 0.05x our full;
(a) 1 % of the rows scattered over the whole table (``aid % 100 = 0``): full-page images of most
    pages; goal: the committed set <= 1.0x a full (the size rule, ``max_incremental_fraction``,
    turns it into a full, or the incremental is smaller);

then the WAL the same scattered update writes with ``wal_compression`` off, ``lz4`` and ``zstd``
(after a checkpoint each), our set after the ``lz4`` one, and our restore of the clustered
incremental (with WAL replay) against the raw extract-and-start.

    PYTHONPATH=plugins:. .venv/bin/python bench/postgres_backup.py [--size-mb 512] [--keep]

Needs Debian's pgbackrest (make bench installs it).  Prints ratios against baselines measured
in the same run, and the goals as ``metric | ours | baseline | ratio | goal | met`` lines.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
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
from metabackup.sources.postgres import (
    PostgresDestination, counted_full_bytes, full_database_bytes, full_stored_bytes, parse_lsn, wal_written_since,
)
from metabackup.spec import load_spec

T0 = pendulum.datetime(2026, 11, 24, 3, tz="UTC")


def our_backup(spec, hour: int) -> tuple[float, int, str, object]:
    """One set through the pipeline's steps: seconds, stored size, type and its manifest."""
    run = pipeline.SetRun.of(spec, "DBService", T0.add(hours=hour))
    started = time.monotonic()
    decision = pipeline.decide(run)
    for step in (pipeline.snapshot, pipeline.archive, pipeline.upload, pipeline.verify):
        step(run)
    seconds = time.monotonic() - started
    pipeline.retention(run)  # as the DAG's last step: it also lets go of the run's lease on the source
    manifest = run.catalog().get(run.name.stem)
    return seconds, manifest.archive.size, decision.type, manifest


def current_lsn(dsn: str) -> str:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return str(conn.execute("SELECT pg_current_wal_lsn()").fetchone()[0])


def wal_since(dsn: str, lsn: str) -> int:
    """WAL written since ``lsn`` (a position read before a workload)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        return int(conn.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s::pg_lsn)", (lsn,)).fetchone()[0])


def wal_since_set(dsn: str, position: dict) -> int:
    """WAL written since a set's end as the size rule counts it (no segment padding)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        now = int(conn.execute("SELECT wal_bytes FROM pg_stat_wal").fetchone()[0])
    return wal_written_since(parse_lsn(position["end_lsn"]), parse_lsn(current_lsn(dsn)), 16 << 20,
                             position.get("wal_generated"), now)


def sql(dsn: str, *statements: str) -> float:
    started = time.monotonic()
    with psycopg.connect(dsn, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)
    return time.monotonic() - started


def pgbackrest_incr(env: dict, conf: Path, repo: Path) -> tuple[float, int]:
    """A pgBackRest incremental: seconds, and what it added to the repository (its backup and the
    WAL archived since the previous one)."""
    before = dir_size(repo)
    secs = as_postgres(env, "pgbackrest", f"--config={conf}", "--stanza=bench", "--type=incr", "backup")
    return secs, dir_size(repo) - before


def goal_line(metric: str, ours: float, baseline: float | None, goal: str, met: bool | None, unit: str = "") -> str:
    ratio = f"{ours / baseline:.2f}" if baseline else "-"
    base = f"{baseline:.3f}{unit}" if baseline is not None else "-"
    return f"{metric} | {ours:.3f}{unit} | {base} | {ratio} | {goal} | {'-' if met is None else 'yes' if met else 'NO'}"


def as_postgres(env: dict, *args: str) -> float:
    started = time.monotonic()
    subprocess.run(["runuser", "-u", "postgres", "--", "env", *[f"{k}={v}" for k, v in env.items()], *args],
                   check=True, capture_output=True)
    return time.monotonic() - started


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=512)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--quick", action="store_true",
                        help="smaller and shorter, for bench/run_all.py --quick: a 64 MiB database (explicit flags still win)")
    if "--quick" in sys.argv[1:]:
        parser.set_defaults(size_mb=64)
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
        ours_s, ours_size, kind, ours_manifest = our_backup(spec, 0)
        assert kind == "full"
        print(f"\nfull backup of {mib:.0f} MiB")
        print(f"{'':24}{'seconds':>9}{'MiB/s':>8}{'output MiB':>12}")
        for name, secs, out in (("ours", ours_s, ours_size), ("pg_basebackup -Ft -z", raw_s, raw_size), ("pgbackrest full", br_s, br_size)):
            print(f"{name:24}{secs:9.1f}{mib / secs:8.1f}{out / 2**20:12.1f}")
        print(f"ratio throughput ours/pg_basebackup {raw_s / ours_s:.2f}x   ours/pgbackrest {br_s / ours_s:.2f}x")

        dsn = server.superuser_dsn()
        repo = work / "repo"
        rows = scale * 100000
        lines = []

        # (b) 1 % of the rows, side by side: one clustered range of aids in the middle of the table
        first = rows // 2
        start_lsn = current_lsn(dsn)
        upd_b = sql(dsn, f"UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid > {first} AND aid <= {first + rows // 100}")
        wal_b = wal_since(dsn, start_lsn)
        inc_s, inc_size, kind_b, inc_manifest = our_backup(spec, 1)
        br_b_s, br_b_size = pgbackrest_incr(env, conf, repo)
        print(f"\n(b) clustered: updated {rows // 100} rows (aid {first + 1}..{first + rows // 100}) in {upd_b:.1f} s, "
              f"{wal_b / 2**20:.1f} MiB of WAL; ours: {kind_b}")
        print(f"{'':24}{'seconds':>9}{'MiB':>8}{'size vs own full':>18}{'time vs own full':>18}")
        print(f"{'ours (' + kind_b + ')':24}{inc_s:9.1f}{inc_size / 2**20:8.1f}{inc_size / ours_size:18.3f}{inc_s / ours_s:18.3f}")
        print(f"{'pgbackrest incr':24}{br_b_s:9.1f}{br_b_size / 2**20:8.1f}{br_b_size / br_size:18.3f}{br_b_s / br_s:18.3f}")
        lines.append(goal_line("(b) clustered 1 %: our set / own full", inc_size / ours_size, br_b_size / br_size,
                               "<= 0.05", kind_b == "incremental" and inc_size <= 0.05 * ours_size))

        # (a) 1 % of the rows scattered over the whole table: full-page images of most pages
        upd_a = sql(dsn, "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid % 100 = 0")
        wal_a = wal_since_set(dsn, inc_manifest.position)
        a_s, a_size, kind_a, a_manifest = our_backup(spec, 2)
        br_a_s, br_a_size = pgbackrest_incr(env, conf, repo)
        full_raw, full_stored = full_database_bytes(ours_manifest), full_stored_bytes(ours_manifest)
        full_base = counted_full_bytes(full_raw, full_stored)
        print(f"\nthe full: {full_raw / 2**20:.1f} MiB uncompressed, {full_stored / 2**20:.1f} MiB compressed "
              f"({full_raw / full_stored:.1f}x); the size rule counts {full_base / 2**20:.1f} MiB; the clustered WAL "
              f"compressed {wal_b / inc_size:.1f}x")
        print(f"\n(a) scattered: updated {rows // 100} rows (aid % 100 = 0) in {upd_a:.1f} s, {wal_a / 2**20:.1f} MiB of WAL "
              f"since the parent = {wal_a / full_base:.2f} of the full as counted; ours: {kind_a}")
        print(f"  reason: {a_manifest.reason}")
        print(f"{'':24}{'seconds':>9}{'MiB':>8}{'size vs own full':>18}{'time vs own full':>18}")
        print(f"{'ours (' + kind_a + ')':24}{a_s:9.1f}{a_size / 2**20:8.1f}{a_size / ours_size:18.3f}{a_s / ours_s:18.3f}")
        print(f"{'pgbackrest incr':24}{br_a_s:9.1f}{br_a_size / 2**20:8.1f}{br_a_size / br_size:18.3f}{br_a_s / br_s:18.3f}")
        if kind_a == "full":
            print(f"  (our set is a full of the updated table: {a_size / ours_size:.3f}x the first full; "
                  f"bridge WAL kept: {'bridge' in a_manifest.position})")
        lines.append(goal_line("(a) scattered 1 %: our set / own full", a_size / ours_size, br_a_size / br_size,
                               "<= 1.0 (a full, or a smaller incremental)",
                               kind_a == "full" and "bridge" not in a_manifest.position or a_size <= ours_size))
        lines.append(goal_line("(a) scattered 1 %: WAL since parent / full as counted", wal_a / full_base, None,
                               "> 0.5 takes a full", None))

        # wal_compression: the same scattered update after a checkpoint, off / lz4 / zstd
        wal_by = {}
        for offset, setting in enumerate(("lz4", "off", "zstd"), start=1):
            sql(dsn, f"ALTER SYSTEM SET wal_compression = '{setting}'", "SELECT pg_reload_conf()")
            sql(dsn, "CHECKPOINT")
            before = current_lsn(dsn)
            sql(dsn, f"UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid % 100 = {offset}")
            wal_by[setting] = wal_since(dsn, before)
            if setting == "lz4":  # our set of that WAL (since the previous set: the checkpoint and the update)
                lz_s, lz_size, kind_lz, lz_manifest = our_backup(spec, 3)
                # and the clustered workload (b) again, after a checkpoint, with lz4
                sql(dsn, "CHECKPOINT")
                second = rows // 4
                before_b = current_lsn(dsn)
                sql(dsn, f"UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid > {second} AND aid <= {second + rows // 100}")
                wal_b_lz = wal_since(dsn, before_b)
                blz_s, blz_size, kind_blz, _ = our_backup(spec, 4)
        sql(dsn, "ALTER SYSTEM RESET wal_compression", "SELECT pg_reload_conf()")
        print("\nWAL of the scattered 1 % update after a checkpoint, by wal_compression")
        for setting, size in wal_by.items():
            print(f"{setting:24}{size / 2**20:9.1f} MiB{size / wal_by['off']:8.2f}x off")
        print(f"ours after the lz4 update: {kind_lz}, {lz_size / 2**20:.1f} MiB = {lz_size / ours_size:.3f}x our full "
              f"({lz_s:.1f} s)")
        print(f"ours after the clustered update with lz4 ({wal_b_lz / 2**20:.1f} MiB of WAL, {wal_b / 2**20:.1f} MiB without): "
              f"{kind_blz}, {blz_size / 2**20:.2f} MiB = {blz_size / ours_size:.3f}x our full ({blz_s:.1f} s)")
        for setting in ("lz4", "zstd"):
            lines.append(goal_line(f"scattered 1 % WAL MiB, wal_compression {setting} vs off", wal_by[setting] / 2**20,
                                   wal_by["off"] / 2**20, "smaller", wal_by[setting] < wal_by["off"]))
        lines.append(goal_line("(a) with wal_compression lz4: our set / own full", lz_size / ours_size, None,
                               "<= 1.0", kind_lz == "full" or lz_size <= ours_size))
        lines.append(goal_line("(b) with wal_compression lz4: our set / own full", blz_size / ours_size, None,
                               "<= 0.05", kind_blz == "incremental" and blz_size <= 0.05 * ours_size))

        restore_root = Path(tempfile.mkdtemp(prefix="metabackup-bench-pgrestore-"))
        restore_root.chmod(0o755)
        started = time.monotonic()
        result = restore_source(spec, "DBService", PostgresDestination(data_dir=str(restore_root / "ours"), keep_running=False),
                                inc_manifest.set)  # the clustered incremental: the full plus its WAL replayed
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
        lines.append(goal_line("restore seconds (clustered chain, WAL replay) vs raw extract-and-start", ours_restore,
                               raw_restore, "-", None, " s"))

        print(f"\n{pendulum.now('UTC').to_date_string()}, database {mib:.0f} MiB (pgbench scale {scale})")
        print("metric | ours | baseline | ratio | goal | met")
        for line in lines:
            print(line)
    finally:
        server.stop("immediate")
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"kept {work}")


if __name__ == "__main__":
    main()
