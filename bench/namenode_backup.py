"""NameNode backup benchmark on one real HDFS (the project's minicluster harness, one NameNode):
our full backup of the namespace against ``hdfs dfsadmin -fetchImage`` of the same image, and the
size of an incremental after 1 % more namespace operations, all in one run.

    PYTHONPATH=plugins:. .venv/bin/python bench/namenode_backup.py [--files 200000] [--quick]
        [--rounds 3] [--seed 14] [--keep]

The namespace: ``--files`` empty files (create + close over RPC, no blocks) made by
``bench/NamespaceLoad.java`` in one JVM, then ``dfsadmin -saveNamespace`` so that the NameNode's
latest fsimage holds all of them.  Then, in alternating rounds (fresh child processes):

* baseline: ``bin/hdfs dfsadmin -fetchImage DIR``, wall time (JVM start, image download);
* ours: a full set of a ``namenode`` source through the pipeline's steps ``decide``,
  ``snapshot``, ``archive`` (the same latest image over the same servlet, its MD5 checked, plus
  the edit-log segments after it up to a roll of our own, the ``NameNodeTool`` calls, tar.gz
  and SHA-256 to a LocalDir staging area), wall time of the steps in a child that has already
  imported our code and started Airflow's connection lookup.

Both read the same image; ours also reads the few short segments written since the
``saveNamespace`` (the rolls of earlier rounds), as it must.  Then a committed full (all steps),
1 % of ``--files`` namespace operations (a third creates, a third renames, a third deletes, of
files picked at random with ``--seed``), and an incremental; its archive size / the full's.

Prints medians and ends with ``metric | ours | baseline | ratio | goal | met`` lines.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pendulum
import yaml

from harness import hdfs

REPO = Path(__file__).resolve().parents[1]
LOAD = REPO / "bench" / "NamespaceLoad.java"
BASE = "/bench"
PER_DIR = 1000

CHILD = """
import json, os, sys, time, pendulum
from metabackup import pipeline
from metabackup.spec import load_spec
spec_path, hour, steps = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(",")
spec = load_spec(spec_path)
run = pipeline.SetRun.of(spec, "NameNode", pendulum.datetime(2026, 11, 24, 3 + hour, tz="UTC"))
from metabackup.connections import get_connection
get_connection("webhdfs_hacluster")  # Airflow's one-time start-up is not part of a backup
import requests  # imported by the first snapshot; not part of a backup either
profile = os.environ.get("BENCH_PROFILE")
if profile:
    import cProfile
    profiler = cProfile.Profile()
    profiler.enable()
times = {}
started = time.monotonic()
for step in steps:
    begun = time.monotonic()
    result = getattr(pipeline, step)(run)
    times[step] = time.monotonic() - begun
    if step == "decide":
        decision = result
elapsed = time.monotonic() - started
if profile:
    profiler.disable()
    profiler.dump_stats(profile)
manifest = json.loads((run.workdir / "manifest.json").read_text()) if (run.workdir / "manifest.json").exists() else None
print(json.dumps({"seconds": elapsed, "steps": times, "type": decision.type,
                  "size": manifest["archive"]["size"] if manifest else None,
                  "content": manifest["content"] if manifest else None}))
"""


def ours(spec_path: Path, hour: int, steps: str, profile: str | None = None) -> dict:
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'plugins'}{os.pathsep}{REPO}"}
    if profile:
        env["BENCH_PROFILE"] = profile
    out = subprocess.run([sys.executable, "-c", CHILD, str(spec_path), str(hour), steps], env=env,
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"our backup failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def write_spec(folder: Path, name: str, instance: hdfs.HdfsInstance) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump({
        "name": name, "created": "2026-11-24T00:00:00Z", "cluster_version": "3.4.2", "type": "manual",
        "data_path": str(folder / f"data-{name}"),
        "sources": {"NameNode": {"kind": "namenode", "fs_uri": instance.fs_uri,
                                 "tool_command": instance.namenode_tool_command(),
                                 "target": {"type": "LocalDir", "max_backups": 5}}}}))
    return path


def run_tool(argv: list[str], what: str) -> tuple[float, str]:
    started = time.monotonic()
    done = subprocess.run(argv, capture_output=True, text=True)
    seconds = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"{what} failed (exit {done.returncode}):\n{(done.stderr or done.stdout)[-3000:]}")
    return seconds, done.stdout


def dfsadmin(instance: hdfs.HdfsInstance, *args: str) -> float:
    return run_tool([instance.hdfs_command(), "dfsadmin", "-fs", instance.fs_uri, *args], f"dfsadmin {' '.join(args)}")[0]


def load(instance: hdfs.HdfsInstance, *args: str) -> dict:
    """bench/NamespaceLoad.java by the JDK's source launcher, on the cluster's client classpath."""
    hadoop = str(Path(instance.directory) / "bin" / "hadoop")
    _, out = run_tool([hadoop, str(LOAD), instance.fs_uri, *args], f"NamespaceLoad {' '.join(args[:1])}")
    return json.loads(out.strip().splitlines()[-1])


def goal_line(metric: str, ours_value: str, baseline: str, ratio: float, goal: str, met: bool) -> str:
    return f"{metric} | {ours_value} | {baseline} | {ratio:.2f}x | {goal} | {'yes' if met else 'NO'}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=None, help="empty files in the namespace (default 200000; "
                        "--quick 20000)")
    parser.add_argument("--quick", action="store_true", help="20 000 files and 2 rounds (under 90 s)")
    parser.add_argument("--rounds", type=int, default=None, help="alternating rounds of the full (default 3; --quick 2)")
    parser.add_argument("--threads", type=int, default=8, help="client threads creating the files (default 8)")
    parser.add_argument("--seed", type=int, default=14, help="picks the renamed and deleted files")
    parser.add_argument("--profile", help="also run our full once under cProfile, stats to this file")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (the cluster is stopped)")
    args = parser.parse_args()
    files = args.files or (20_000 if args.quick else 200_000)
    rounds = args.rounds or (2 if args.quick else 3)
    work = Path(tempfile.mkdtemp(prefix="metabackup-bench-nn-"))
    os.environ.setdefault("AIRFLOW_HOME", str(work / "airflow"))
    instance = None
    try:
        started = time.monotonic()
        instance = hdfs.start(work / "hdfs")
        os.environ["AIRFLOW_CONN_WEBHDFS_HACLUSTER"] = instance.connection_uri()
        print(f"HDFS up in {time.monotonic() - started:.1f} s ({instance.fs_uri})")
        made = load(instance, "create", BASE, str(files), str(PER_DIR), str(args.threads))
        print(f"created {made['operations']} empty files in {made['seconds']:.1f} s "
              f"({made['operations'] / made['seconds']:.0f}/s, {args.threads} client threads)")
        dfsadmin(instance, "-safemode", "enter")
        saved = dfsadmin(instance, "-saveNamespace")
        dfsadmin(instance, "-safemode", "leave")
        print(f"saveNamespace in {saved:.1f} s")

        times: dict[str, list[float]] = {"ours": [], "fetchImage": []}
        steps: dict[str, list[float]] = {}
        image_size = archive_size = 0
        for i in range(rounds):
            result = ours(write_spec(work, f"full{i}", instance), 0, "decide,snapshot,archive")
            if result["type"] != "full":
                raise SystemExit(f"expected a full, got {result}")
            times["ours"].append(result["seconds"])
            for step, secs in result["steps"].items():
                steps.setdefault(step, []).append(secs)
            archive_size = result["size"]
            fetched = work / f"fetched{i}"
            fetched.mkdir()
            times["fetchImage"].append(dfsadmin(instance, "-fetchImage", str(fetched)))
            image = [p for p in fetched.iterdir() if p.name.startswith("fsimage_")]
            image_size = image[0].stat().st_size
            shutil.rmtree(fetched)
            print(f"round {i + 1}: ours {result['seconds']:.2f} s ({', '.join(f'{k} {v:.2f}' for k, v in result['steps'].items())}; "
                  f"{result['content']['segments']} segments), fetchImage {times['fetchImage'][-1]:.2f} s")
        if args.profile:
            ours(write_spec(work, "profiled", instance), 0, "decide,snapshot,archive", profile=args.profile)
            import pstats

            print(f"\nprofile of our full ({args.profile}), top 20 by cumulative time:")
            pstats.Stats(args.profile).sort_stats("cumulative").print_stats(20)
        med = {k: statistics.median(v) for k, v in times.items()}
        mib = image_size / 2**20
        print(f"\nfull backup of a namespace of {files} files (fsimage {mib:.1f} MiB), median of {rounds} alternating rounds")
        print(f"{'':28}{'seconds':>9}{'MiB/s':>8}{'output MiB':>12}")
        print(f"{'ours (decide+snapshot+archive)':28}{med['ours']:9.2f}{mib / med['ours']:8.1f}{archive_size / 2**20:12.1f}")
        print(f"{'dfsadmin -fetchImage':28}{med['fetchImage']:9.2f}{mib / med['fetchImage']:8.1f}{mib:12.1f}")
        print("ours by step (median s): " + ", ".join(f"{k} {statistics.median(v):.2f}" for k, v in steps.items()))
        ratio = med["fetchImage"] / med["ours"]
        lines = [goal_line(f"full backup throughput, {files} files (x dfsadmin -fetchImage)",
                           f"{med['ours']:.2f} s", f"{med['fetchImage']:.2f} s", ratio, ">= 0.90x", ratio >= 0.90)]

        # a committed full, 1 % more namespace operations, an incremental on it
        spec = write_spec(work, "chain", instance)
        every = "decide,snapshot,archive,upload,verify,retention"
        full = ours(spec, 1, every)
        operations = max(3, files // 100)
        churn = load(instance, "churn", BASE, str(files), str(PER_DIR), str(operations), str(args.seed))
        incremental = ours(spec, 2, every)
        if (full["type"], incremental["type"]) != ("full", "incremental"):
            raise SystemExit(f"expected a full and an incremental, got {full['type']} and {incremental['type']}")
        size_ratio = incremental["size"] / full["size"]
        print(f"\n{churn['operations']} namespace operations (1 %: creates, renames, deletes) in {churn['seconds']:.1f} s")
        print(f"{'':28}{'seconds':>9}{'KiB':>10}{'transactions':>14}")
        for name, made in (("full", full), ("incremental", incremental)):
            print(f"{name:28}{made['seconds']:9.2f}{made['size'] / 1024:10.1f}{made['content']['transactions']:14}")
        lines.append(goal_line(f"incremental after {churn['operations']} operations (size x the full)",
                               f"{incremental['size'] / 1024:.0f} KiB", f"{full['size'] / 1024:.0f} KiB", size_ratio,
                               "<= 0.05x", size_ratio <= 0.05))

        load1, load5, _ = os.getloadavg()
        print(f"\n{pendulum.now('UTC').to_date_string()}, {os.cpu_count()} cores, load average {load1:.2f} {load5:.2f}, "
              f"{files} files, {rounds} rounds")
        print("metric | ours | baseline | ratio | goal | met")
        for line in lines:
            print(line)
    finally:
        if instance is not None:
            instance.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"kept {work}")


if __name__ == "__main__":
    main()
