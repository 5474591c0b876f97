"""LocalHDFS upload throughput: our target against a raw WebHDFS upload, in the same run.

Starts the project's real HDFS (minicluster, one DataNode, loopback), writes a ``--size-mb`` MiB
archive-like file (incompressible: it is what a tar.gz looks like), then alternates for
``--repeat`` rounds:

(a) raw: WebHDFS ``CREATE`` (the NameNode's redirect) and one streamed ``PUT`` of the file to the
    DataNode, with ``requests`` - the least any WebHDFS client can do;
(b) ours: ``LocalHDFSTarget.put_file`` through the provider's hook: hidden ``.partial-`` name
    with permission 0600, length check, ``RENAME`` with ``OVERWRITE`` into place;
(c) ours + verify: (b), then the verify step's full re-read against the manifest's SHA-256
    (what a backup run does before it commits a set).

Prints medians in MiB/s and the ratios ours/raw (1.0 = as fast as raw WebHDFS).

    PYTHONPATH=plugins:. .venv/bin/python bench/hdfs_upload.py [--size-mb 1024] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import requests

MiB = 1 << 20


def raw_upload(base: str, user: str, path: str, local: Path) -> None:
    redirect = requests.put(f"{base}/webhdfs/v1{path}", params={"op": "CREATE", "overwrite": "true",
                                                                 "user.name": user}, allow_redirects=False, timeout=60)
    redirect.raise_for_status()
    with open(local, "rb") as handle:
        done = requests.put(redirect.headers["Location"], data=handle, timeout=3600)
    done.raise_for_status()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true",
                        help="smaller and shorter, for bench/run_all.py --quick: 128 MiB, 1 round (explicit flags still win)")
    if "--quick" in sys.argv[1:]:
        parser.set_defaults(size_mb=128, repeat=1)
    args = parser.parse_args()

    from harness import hdfs
    from metabackup.manifest import sha256_of
    from metabackup.targets.localhdfs import LocalHDFSConfig

    work = Path(tempfile.mkdtemp(prefix="metabackup-bench-hdfs-"))
    cluster = hdfs.start(work / "hdfs")
    os.environ["AIRFLOW_CONN_WEBHDFS_HACLUSTER"] = cluster.connection_uri()
    try:
        local = work / "set.tar.gz"
        with open(local, "wb") as out:
            for _ in range(args.size_mb):
                out.write(os.urandom(MiB))
        with open(local, "rb") as handle:
            sha, size = sha256_of(handle)
        user = cluster.airflow_connection()["login"]
        target = LocalHDFSConfig(type="LocalHDFS", path="/bench/meta", max_backups=3, nameservice="hacluster").open()
        target.ensure_writable("task")
        times: dict[str, list[float]] = {"raw": [], "ours": [], "ours+verify": []}
        for round_number in range(args.repeat):
            start = time.perf_counter()
            raw_upload(cluster.webhdfs_url(), user, f"/bench/raw/set-{round_number}.tar.gz", local)
            times["raw"].append(time.perf_counter() - start)
            start = time.perf_counter()
            target.put_file(local, "task", f"set-{round_number}.tar.gz")
            times["ours"].append(time.perf_counter() - start)
            start = time.perf_counter()
            target.put_file(local, "task", f"v-{round_number}.tar.gz")
            target.verify("task", f"v-{round_number}.tar.gz", sha, size)
            times["ours+verify"].append(time.perf_counter() - start)
            print(f"round {round_number + 1}: " + ", ".join(f"{k} {v[-1]:.1f} s" for k, v in times.items()), flush=True)
        medians = {k: statistics.median(v) for k, v in times.items()}
        mb = size / MiB
        print(f"\n{mb:.0f} MiB set, {args.repeat} rounds, median throughput:")
        for name, seconds in medians.items():
            print(f"  {name:<12} {mb / seconds:7.1f} MiB/s  ({seconds:.1f} s)  ratio to raw {medians['raw'] / seconds:.2f}x")
        # The closing table bench/run_all.py collects; the goal is offsite_upload.py's (0.9x the raw client).
        print("\nmetric | ours | baseline | ratio | goal | met")
        for name, goal in (("ours", 0.9), ("ours+verify", None)):
            ratio = medians["raw"] / medians[name]
            print(f"LocalHDFS upload MiB/s, {name} vs raw WebHDFS | {mb / medians[name]:.1f} | {mb / medians['raw']:.1f} | "
                  f"{ratio:.2f} | {'-' if goal is None else f'>= {goal}'} | "
                  f"{'-' if goal is None else 'yes' if ratio >= goal else 'NO'}")
    finally:
        cluster.stop()
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
