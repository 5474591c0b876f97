"""Throwaway servers (slapd, PostgreSQL, HDFS, airflow standalone) on loopback for tests,
benchmarks and the demo.

Not product code: this package sits at the repository root, outside ``plugins/``, so it does not
ship with the Airflow plugin.  Import it as ``harness.slapd`` etc. with the repository root and
``plugins/`` on sys.path (``PYTHONPATH=plugins:.`` from the root; pytest.ini does this for the
tests).  It builds on the product where the product has the piece (:mod:`metabackup.scratch_slapd`,
:mod:`metabackup.fsutil`); the product never imports it.
"""

from __future__ import annotations

import json
import os
import signal
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

from metabackup.scratch_slapd import free_port

__all__ = ["CONNECTION_FILE", "INSTANCE_FILE", "command_line_parser", "end_process", "free_port", "instance_to_start",
           "load_instance", "log_tail", "process_alive", "reusable", "save_instance", "write_private_json"]

CONNECTION_FILE = "airflow-connection.json"
INSTANCE_FILE = "instance.json"
Instance = TypeVar("Instance")


def write_private_json(path: Path, data: Any) -> Path:
    """Write JSON readable by the owner only (it holds a password)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle)
    return path


def save_instance(instance: Any) -> None:
    """Record an instance (a dataclass with a ``directory``) in its ``instance.json``, owner-only
    (it may hold a password)."""
    write_private_json(Path(instance.directory) / INSTANCE_FILE, asdict(instance))


def load_instance(cls: type[Instance], directory: str | Path) -> Instance:
    """The instance recorded by :func:`save_instance` in ``directory``."""
    return cls(**json.loads((Path(directory) / INSTANCE_FILE).read_text()))


def command_line_parser(prog: str):
    """``start DIR [--reuse]`` / ``stop DIR``; the caller adds its own start options."""
    import argparse

    parser = argparse.ArgumentParser(prog=prog)
    sub = parser.add_subparsers(dest="command", required=True)
    start = sub.add_parser("start")
    start.add_argument("directory")
    start.add_argument("--reuse", action="store_true", help="restart an existing instance in DIRECTORY, keeping its data")
    sub.add_parser("stop").add_argument("directory")
    return parser, start


def reusable(directory: str | Path, reuse: bool) -> bool:
    return reuse and (Path(directory) / "instance.json").exists()


def instance_to_start(args, load, stop, prepare):
    """The common part of a server's ``main``: after ``stop DIR``, None; after ``start DIR``, the
    instance to start: the one in DIR (stopped first) with ``--reuse``, else a fresh one."""
    if args.command == "stop":
        stop(args.directory)
        return None
    if reusable(args.directory, args.reuse):
        instance = load(args.directory)
        stop(args.directory)
        return instance
    return prepare(Path(args.directory).resolve())


def log_tail(path: Path, lines: int = 30) -> str:
    """The last lines of a server's log, for an error message."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def process_alive(pid: int) -> bool:
    """True while ``pid`` runs; reaps it when it is our own exited child (else it stays a zombie)."""
    if pid <= 0:
        return False
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    except ChildProcessError:  # not our child: someone else reaps it
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def end_process(pid: int, timeout: float) -> None:
    """SIGTERM ``pid``, give it ``timeout`` seconds to end, then SIGKILL it (reaped if our child)."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not process_alive(pid):
            return
        time.sleep(0.02)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process_alive(pid)
