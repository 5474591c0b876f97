"""Run every benchmark, one after the other, and end with one summary table of all their goals.

    PYTHONPATH=plugins:. .venv/bin/python bench/run_all.py [--quick] [--only NAME ...]

Each benchmark script runs as a child process (the same interpreter, ``PYTHONPATH=plugins:.``);
its output goes through to the terminal as it comes.  The rows of its closing table
``metric | ours | baseline | ratio | goal | met`` are collected, and at the very end one table
``benchmark | metric | ours | baseline | ratio | goal | met`` (markdown) sums them up, with the
date, the cores, the load average and how many goals were met.  A benchmark that fails shows as a
``FAILED (exit N)`` row and makes this script exit with 1; the others still run.

``--quick`` is passed to every benchmark (smaller sizes, fewer rounds: see bench/README.md).
``--only NAME`` (repeatable; ``archive_throughput`` or ``archive_throughput.py``) runs just those.
"""

from __future__ import annotations

import argparse
import datetime
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"
HEADER = ["metric", "ours", "baseline", "ratio", "goal", "met"]
# The order they run in (servers that start slowly last); optional ones are run when their file exists.
SCRIPTS = ["archive_throughput", "encryption", "parse_time", "ldap_export", "postgres_backup", "memory",
           "hdfs_upload", "offsite_upload"]
OPTIONAL = ["namenode_backup", "celery_scale", "ui_page"]


def discover() -> list[str]:
    return SCRIPTS + [name for name in OPTIONAL if (BENCH / f"{name}.py").is_file()]


def cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def closing_table(lines: list[str]) -> list[list[str]]:
    """The rows after the LAST ``metric | ours | baseline | ratio | goal | met`` header: every
    following line with six cells (a markdown separator row is skipped), up to the first that is not."""
    start = None
    for i, line in enumerate(lines):
        if cells(line) == HEADER:
            start = i + 1
    if start is None:
        return []
    rows = []
    for line in lines[start:]:
        parts = cells(line)
        if len(parts) != len(HEADER):
            if rows or line.strip():
                break
            continue  # a blank line right after the header
        if all(set(p) <= set("-: ") for p in parts):
            continue
        rows.append(parts)
    return rows


def run(name: str, quick: bool) -> tuple[int, list[str], float]:
    """Run one benchmark, echoing its output line by line; its exit code, output lines and wall time."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "plugins"), str(REPO)] + (
        [env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    cmd = [sys.executable, str(BENCH / f"{name}.py")] + (["--quick"] if quick else [])
    print(f"\n===== {name}: {' '.join(cmd[1:])} =====", flush=True)
    lines: list[str] = []
    started = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            bufsize=1, errors="replace")
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            lines.append(line.rstrip("\n"))
        code = proc.wait()
    except KeyboardInterrupt:
        # Ctrl-C reached the benchmark too (same process group): its finally blocks stop its servers.
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.terminate()
            proc.wait()
        raise
    seconds = time.monotonic() - started
    print(f"===== {name}: exit {code} after {seconds:.0f} s =====", flush=True)
    return code, lines, seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="pass --quick to every benchmark")
    parser.add_argument("--only", action="append", metavar="NAME", help="run only this benchmark (repeatable)")
    args = parser.parse_args()
    names = discover()
    if args.only:
        wanted = [Path(n).stem for n in args.only]
        unknown = [n for n in wanted if n not in names]
        if unknown:
            parser.error(f"unknown benchmark {', '.join(unknown)}; known: {', '.join(names)}")
        names = [n for n in names if n in wanted]

    started = time.monotonic()
    results = []
    for name in names:
        code, lines, seconds = run(name, args.quick)
        results.append((name, code, closing_table(lines), seconds))
    total = time.monotonic() - started

    met = not_met = failed = 0
    out = ["| benchmark | metric | ours | baseline | ratio | goal | met |", "|---|---|---|---|---|---|---|"]
    for name, code, rows, _ in results:
        if code != 0:
            failed += 1
            out.append(f"| {name} | FAILED (exit {code}) | | | | | |")
            continue
        if not rows:
            out.append(f"| {name} | (no closing metric table in its output) | | | | | |")
            continue
        for row in rows:
            mark = row[5].strip("*").lower()
            met += mark == "yes"
            not_met += mark in ("no", "false")
            out.append("| " + " | ".join([name] + [c.replace("|", "\\|") for c in row]) + " |")
    load = os.getloadavg()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print("\n\n===== summary =====")
    print("\n".join(out))
    print()
    print(f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}, {cores} cores, load average "
          f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; {'quick' if args.quick else 'full'} mode, "
          f"{len(results)} benchmarks in {total / 60:.1f} min "
          f"({', '.join(f'{n} {s:.0f} s' for n, _, _, s in results)})")
    print(f"goals met: {met}, not met: {not_met}" + (f"; FAILED benchmarks: {failed}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
