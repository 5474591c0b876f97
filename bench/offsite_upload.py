"""Off-site target upload throughput: each target against a raw upload with the same client, in the
same run.

Starts the project's real servers (OpenSSH's sshd, s3proxy, an HDFS standing for the standby cluster
haclusterX), writes a ``--size-mb`` MiB incompressible file (what a tar.gz looks like), then for
``--repeat`` rounds uploads it

- SFTP:       raw ``paramiko`` ``SFTPClient.put``     vs  ``SFTPTarget.put_file`` (partial name, 0600,
              size check, posix-rename);
- S3:         raw ``boto3`` ``upload_file``           vs  ``S3Target.put_file`` (multipart, size check);
- RemoteHDFS: raw WebHDFS CREATE + one streamed PUT   vs  ``RemoteHDFSTarget.put_file`` (partial name,
              length check, rename);

and prints the median throughput of each and the ratio ours/raw (goal: at least 0.9x each).

    PYTHONPATH=plugins:. .venv/bin/python bench/offsite_upload.py [--size-mb 256] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

MiB = 1 << 20
GOAL = 0.9


def timed(action) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mb", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true",
                        help="smaller and shorter, for bench/run_all.py --quick: 32 MiB, 1 round (explicit flags still win)")
    if "--quick" in sys.argv[1:]:
        parser.set_defaults(size_mb=32, repeat=1)
    args = parser.parse_args()

    from bench.hdfs_upload import raw_upload
    from harness import hdfs, s3proxy, sshd
    from metabackup.targets.remotehdfs import RemoteHDFSConfig
    from metabackup.targets.s3 import S3Config
    from metabackup.targets.sftp import SFTPConfig

    work = Path(tempfile.mkdtemp(prefix="metabackup-bench-offsite-"))
    sftp_server = sshd.start(sshd.prepare(work / "sshd"))
    s3_server = s3proxy.start(s3proxy.prepare(work / "s3proxy"))
    standby = hdfs.start(work / "hdfs")
    try:
        os.environ["AIRFLOW_CONN_BENCH_SFTP"] = json.dumps(sftp_server.connection())
        os.environ["AIRFLOW_CONN_BENCH_S3"] = s3_server.connection_uri()
        os.environ["AIRFLOW_CONN_WEBHDFS_HACLUSTERX"] = standby.connection_uri()
        s3_server.create_bucket("bench")
        local = work / "set.tar.gz"
        with open(local, "wb") as out:
            for _ in range(args.size_mb):
                out.write(os.urandom(MiB))
        targets = {
            "SFTP": SFTPConfig(type="SFTP", conn_id="bench_sftp", path=f"{sftp_server.root}/bench").open(),
            "S3": S3Config(type="S3", conn_id="bench_s3", bucket="bench", prefix="ours").open(),
            "RemoteHDFS": RemoteHDFSConfig(type="RemoteHDFS", nameservice="haclusterX", path="/bench/ours").open(),
        }
        sftp_raw = sftp_server.sftp_session()
        sftp_raw.mkdir(f"{sftp_server.root}/raw")
        s3_raw = s3_server.client()
        hdfs_user = standby.airflow_connection()["login"]
        raw = {
            "SFTP": lambda n: sftp_raw.put(str(local), f"{sftp_server.root}/raw/set-{n}.tar.gz"),
            "S3": lambda n: s3_raw.upload_file(str(local), "bench", f"raw/set-{n}.tar.gz"),
            "RemoteHDFS": lambda n: raw_upload(standby.webhdfs_url(), hdfs_user, f"/bench/raw/set-{n}.tar.gz", local),
        }
        rows = []
        for name, target in targets.items():
            target.ensure_writable("task")
            ours, base = [], []
            for n in range(args.repeat):
                base.append(timed(lambda: raw[name](n)))
                ours.append(timed(lambda: target.put_file(local, "task", f"set-{n}.tar.gz")))
                print(f"{name} round {n + 1}: raw {base[-1]:.2f} s, ours {ours[-1]:.2f} s", flush=True)
            mb = args.size_mb
            rows.append((name, mb / statistics.median(ours), mb / statistics.median(base)))
        print(f"\n{args.size_mb} MiB set, {args.repeat} rounds, median throughput (MiB/s):")
        print("metric | ours | baseline | ratio | goal | met")
        for name, ours_rate, raw_rate in rows:
            ratio = ours_rate / raw_rate
            print(f"{name} upload | {ours_rate:.1f} | {raw_rate:.1f} | {ratio:.2f} | >= {GOAL} | "
                  f"{'yes' if ratio >= GOAL else 'no'}")
    finally:
        for server in (sftp_server, s3_server, standby):
            server.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
