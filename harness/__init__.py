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
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

from metabackup.scratch_slapd import free_port, free_ports

__all__ = ["CONNECTION_FILE", "INSTANCE_FILE", "NOT_RUNNING", "RUNNING", "SERVICE_COMMANDS", "STATUS_ERROR", "ServiceError",
           "command_line_parser", "end_process", "free_port", "free_ports", "instance_to_start", "load_instance", "log_tail",
           "os_user_name", "process_alive", "reusable", "run_service_command", "save_instance", "service_argv_for",
           "write_private_json"]

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


def command_line_parser(prog: str, service: bool = False):
    """``start DIR [--reuse]`` / ``stop DIR``; the caller adds its own start options.

    With ``service``, also ``service-stop DIR`` / ``service-start DIR`` / ``service-status DIR``
    (:func:`run_service_command`), their parsers in ``parser.service_parsers`` for the caller's options."""
    import argparse

    parser = argparse.ArgumentParser(prog=prog)
    sub = parser.add_subparsers(dest="command", required=True)
    start = sub.add_parser("start")
    start.add_argument("directory")
    start.add_argument("--reuse", action="store_true", help="restart an existing instance in DIRECTORY, keeping its data")
    sub.add_parser("stop").add_argument("directory")
    parser.service_parsers = []
    if service:
        helps = {"service-stop": "stop the server of the instance in DIRECTORY cleanly, keeping its data",
                 "service-start": "start it again on the same data, port and config; wait until it answers",
                 "service-status": "exit 0 when it runs and answers, 3 when it is not running, 1 on other errors"}
        for name, text in helps.items():
            service_parser = sub.add_parser(name, help=text)
            service_parser.add_argument("directory")
            if name != "service-status":
                service_parser.add_argument("--timeout", type=float, default=None, help="seconds to wait")
            parser.service_parsers.append(service_parser)
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


def end_process_group(pid: int, timeout: float) -> None:
    """SIGTERM the process group led by ``pid``, SIGKILL it after ``timeout`` seconds."""
    end_process(pid, timeout, group=True)


def process_alive(pid: int) -> bool:
    """True while ``pid`` runs; reaps it when it is our own exited child (else it stays a zombie).
    A zombie someone else has not reaped yet counts as ended."""
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
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")


def end_process(pid: int, timeout: float, group: bool = False) -> None:
    """SIGTERM ``pid`` (its process group with ``group``), give it ``timeout`` seconds to end, then
    SIGKILL it (reaped if our child)."""
    send = os.killpg if group else os.kill
    try:
        send(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not process_alive(pid):
            return
        time.sleep(0.02)
    try:
        send(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process_alive(pid)


# --- service commands: act on an existing instance as a service manager would (stop / start / status)

SERVICE_COMMANDS = ("service-stop", "service-start", "service-status")
RUNNING, STATUS_ERROR, NOT_RUNNING = 0, 1, 3  # service-status exit codes (LSB: 3 = not running)


class ServiceError(RuntimeError):
    """A service command failed; the message (with the server log's tail) goes to stderr."""


def os_user_name(uid: int | None = None) -> str:
    """The name of ``uid`` (default: the effective user), or the number when it has none."""
    import pwd

    uid = os.geteuid() if uid is None else uid
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def service_argv_for(module_file: str | Path, directory: str | Path, *options: str) -> dict[str, list[str]]:
    """``{"stop": [...], "start": [...], "status": [...]}``: argv lists running the harness module
    ``module_file`` as a script (``python .../harness/NAME.py service-VERB DIR [options]``), which
    works whatever the child's working directory and PYTHONPATH (the module puts the repository
    root and ``plugins/`` on sys.path itself when run as a script)."""
    script = str(Path(module_file).resolve())
    target = str(Path(directory).resolve())
    return {verb: [sys.executable, script, f"service-{verb}", target, *options] for verb in ("stop", "start", "status")}


def run_service_command(args, stop, start, status) -> int:
    """Run ``service-stop`` / ``service-start`` / ``service-status`` for a harness's ``main``.

    ``stop(directory, args)`` and ``start(directory, args)`` return a message (printed on stdout,
    exit 0) or raise (message on stderr, exit 1); ``status(directory, args)`` returns
    ``(code, message)`` with code RUNNING (0), NOT_RUNNING (3) or STATUS_ERROR (1)."""
    directory = Path(args.directory)
    verb = args.command.removeprefix("service-")
    if not (directory / INSTANCE_FILE).is_file():
        message = f"{verb}: {directory} holds no {INSTANCE_FILE}: not an instance directory"
        print(message, file=sys.stdout if verb == "status" else sys.stderr)
        return STATUS_ERROR
    try:
        if verb == "status":
            code, message = status(directory, args)
            print(message)
            return code
        print((stop if verb == "stop" else start)(directory, args))
        return 0
    except Exception as exc:  # noqa: BLE001 - a command line: the message, not a traceback
        text = f"{verb} failed: {exc}"
        if verb == "status":
            print(text.replace("\n", " ")[:500])
        else:
            print(text, file=sys.stderr)
        return STATUS_ERROR

