"""Throwaway PostgreSQL clusters for tests, benchmarks and the demo (Debian's PostgreSQL 15).

    PYTHONPATH=plugins:. python -m harness.postgres start DIR [--reuse]   # DIR/airflow-connection.json (0600)
    PYTHONPATH=plugins:. python -m harness.postgres stop DIR
    python harness/postgres.py service-stop|service-start|service-status DIR [--timeout S]   # see below

``service-stop`` / ``service-start`` / ``service-status`` act on an existing instance and keep its
data (``pg_ctl stop -m fast`` / ``pg_ctl start`` on the same data directory / ``pg_ctl status`` and
``pg_isready``; status exits 0 running, 3 not running, 1 other errors); :func:`service_argv` gives
them as argv lists for a backup spec's ``service:``.

``initdb``/``pg_ctl`` run as the ``postgres`` user; the cluster listens on 127.0.0.1 on a free
port with ``wal_level=replica``, replication slots and WAL senders, SCRAM authentication, and a
``metabackup`` role with REPLICATION (and EXECUTE on pg_switch_wal) for backups.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

if __name__ == "__main__" and __spec__ is None:  # run as a script (service_argv): import from the repository root
    _ROOT = Path(__file__).resolve().parents[1]
    sys.path[:] = [str(_ROOT), str(_ROOT / "plugins"),
                   *(entry for entry in sys.path if Path(entry or ".").resolve() != _ROOT / "harness")]

from harness import (  # noqa: E402
    CONNECTION_FILE, NOT_RUNNING, RUNNING, SERVICE_COMMANDS, STATUS_ERROR, ServiceError, command_line_parser, free_port,
    instance_to_start, load_instance, log_tail, os_user_name, run_service_command, save_instance, service_argv_for,
    write_private_json,
)
from metabackup.fsutil import child_env  # noqa: E402

PG_MAJOR = 15
BIN = Path(f"/usr/lib/postgresql/{PG_MAJOR}/bin")
OS_USER = "postgres"
BACKUP_ROLE = "metabackup"


def as_postgres(*args: str, **kwargs) -> subprocess.CompletedProcess:
    """Run a command as the postgres OS user (we are root in tests and CI)."""
    command = list(args) if os.geteuid() != 0 else ["runuser", "-u", OS_USER, "--", *args]
    return subprocess.run(command, capture_output=True, text=True, env=child_env(), **kwargs)


def give_to_postgres(path: Path) -> None:
    if os.geteuid() == 0:
        shutil.chown(path, OS_USER, OS_USER)


@dataclass
class PgInstance:
    directory: str
    port: int
    superuser_password: str
    backup_password: str
    # for an in-place restore (filled in when missing from an older instance.json):
    data_dir: str = ""  # the cluster's data directory (PGDATA)
    os_user: str = ""  # the OS user owning data_dir and running the server
    log_file: str = ""

    def __post_init__(self):
        self.data_dir = self.data_dir or str(Path(self.directory) / "data")
        self.os_user = self.os_user or (OS_USER if os.geteuid() == 0 else os_user_name())
        self.log_file = self.log_file or str(Path(self.directory) / "postgres.log")

    @property
    def data(self) -> Path:
        return Path(self.data_dir)

    @property
    def socket_dir(self) -> str:
        return str(Path(self.directory) / "sock")

    def connection(self) -> dict:
        """The backup role as an Airflow connection (JSON form)."""
        return {"conn_type": "postgres", "host": "127.0.0.1", "port": self.port, "login": BACKUP_ROLE,
                "password": self.backup_password, "schema": "postgres"}

    def superuser_dsn(self, dbname: str = "postgres") -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres password={self.superuser_password} dbname={dbname}"

    def stop(self, mode: str = "fast") -> None:
        stop(self.directory, mode)


def prepare(directory: str | Path | None = None) -> PgInstance:
    """A fresh, stopped cluster.  ``directory`` must be traversable by the postgres user (not
    under a 0700 root-owned folder); by default a new one under the system temp directory."""
    base = Path(directory) if directory else Path(tempfile.mkdtemp(prefix="metabackup-pg-"))
    if (base / "data" / "postmaster.pid").exists():
        stop(base)
    if base.exists():
        shutil.rmtree(base)
    base.mkdir(parents=True)
    os.chmod(base, 0o755)
    (base / "sock").mkdir()
    give_to_postgres(base)
    give_to_postgres(base / "sock")
    superuser_password = secrets.token_urlsafe(12)
    pwfile = base / "pwfile"
    pwfile.write_text(superuser_password + "\n")
    give_to_postgres(pwfile)
    result = as_postgres(str(BIN / "initdb"), "-D", str(base / "data"), "-U", "postgres", "--pwfile", str(pwfile),
                         "--auth-local=scram-sha-256", "--auth-host=scram-sha-256", "-E", "UTF8",
                         "--data-checksums", "--no-instructions")
    pwfile.unlink()
    if result.returncode != 0:
        raise RuntimeError(f"initdb failed: {result.stderr.strip()}")
    port = free_port()
    with open(base / "data" / "postgresql.auto.conf", "a") as conf:
        conf.write(f"""
listen_addresses = '127.0.0.1'
port = {port}
unix_socket_directories = '{base / "sock"}'
wal_level = replica
max_wal_senders = 10
max_replication_slots = 10
max_slot_wal_keep_size = 2GB
wal_keep_size = 0
fsync = off
synchronous_commit = off
full_page_writes = on
""")
    (base / "data" / "pg_hba.conf").write_text(
        "local all all scram-sha-256\n"
        "host all all 127.0.0.1/32 scram-sha-256\n"
        "host replication all 127.0.0.1/32 scram-sha-256\n")
    instance = PgInstance(str(base), port, superuser_password, secrets.token_urlsafe(12))
    _save(instance)
    return instance


def _save(instance: PgInstance) -> None:
    save_instance(instance)


def load(directory: str | Path) -> PgInstance:
    return load_instance(PgInstance, directory)


def start_data_dir(data: Path, log: Path, timeout: int = 60) -> None:
    result = as_postgres(str(BIN / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", str(timeout), "start")
    if result.returncode != 0:
        tail = log.read_text()[-2000:] if log.exists() else ""
        raise RuntimeError(f"pg_ctl start failed for {data}: {result.stdout.strip()} {result.stderr.strip()}\n{tail}")


def start(instance: PgInstance) -> PgInstance:
    log = Path(instance.directory) / "postgres.log"
    if not log.exists():
        log.touch()
        give_to_postgres(log)
    start_data_dir(instance.data, log)
    _ensure_backup_role(instance)
    return instance


def _ensure_backup_role(instance: PgInstance) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(instance.superuser_dsn(), autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (BACKUP_ROLE,)).fetchone()
        conn.execute(sql.SQL("{} ROLE {} WITH LOGIN REPLICATION PASSWORD {}").format(
            sql.SQL("ALTER" if exists else "CREATE"), sql.Identifier(BACKUP_ROLE), sql.Literal(instance.backup_password)))
        conn.execute(f"GRANT EXECUTE ON FUNCTION pg_switch_wal() TO {BACKUP_ROLE}")
        conn.execute(f"GRANT pg_read_all_settings, pg_read_all_stats TO {BACKUP_ROLE}")


def stop(directory: str | Path, mode: str = "fast") -> None:
    data = Path(directory) / "data"
    stop_data_dir(data, mode)


def stop_data_dir(data: Path, mode: str = "fast") -> None:
    if (data / "postmaster.pid").exists():
        as_postgres(str(BIN / "pg_ctl"), "-D", str(data), "-m", mode, "-w", "-t", "60", "stop")


def wait_ready(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if subprocess.run([str(BIN / "pg_isready"), "-h", "127.0.0.1", "-p", str(port)], capture_output=True,
                          env=child_env()).returncode == 0:
            return
        time.sleep(0.1)
    raise RuntimeError(f"PostgreSQL on port {port} not ready after {timeout}s")


def service_argv(directory: str | Path) -> dict[str, list[str]]:
    """``{"stop": [...], "start": [...], "status": [...]}``: ``[sys.executable, <repo>/harness/postgres.py,
    "service-stop", DIR]`` etc., independent of the child's cwd and PYTHONPATH."""
    return service_argv_for(__file__, directory)


def service_paths(directory: str | Path) -> dict[str, str]:
    """What an in-place restore swaps: the data directory and its owner."""
    instance = load(directory)
    return {"data_dir": instance.data_dir, "os_user": instance.os_user, "config_file": str(instance.data / "postgresql.conf")}


def _pg_ctl_status(data: Path) -> subprocess.CompletedProcess:
    return as_postgres(str(BIN / "pg_ctl"), "status", "-D", str(data))  # 0 running, 3 not running, 4 no data dir


def _accepting(port: int) -> bool:
    return subprocess.run([str(BIN / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(port), "-t", "5"],
                          capture_output=True, env=child_env()).returncode == 0


def service_status(directory: str | Path, args=None) -> tuple[int, str]:
    instance = load(directory)
    state = _pg_ctl_status(instance.data)
    if state.returncode == 3:
        return NOT_RUNNING, f"PostgreSQL is not running (data directory {instance.data})"
    if state.returncode != 0:
        return STATUS_ERROR, f"PostgreSQL status unknown: pg_ctl status exited {state.returncode}: " \
                             f"{(state.stdout + state.stderr).strip()}".replace("\n", " ")
    if not _accepting(instance.port):
        return STATUS_ERROR, f"PostgreSQL runs but does not accept connections on 127.0.0.1:{instance.port}"
    return RUNNING, f"PostgreSQL is running and accepting connections on 127.0.0.1:{instance.port}"


def service_stop(directory: str | Path, args=None) -> str:
    """``pg_ctl stop -m fast`` on the instance's data directory; the data stays."""
    instance = load(directory)
    timeout = int(getattr(args, "timeout", None) or 60)
    if _pg_ctl_status(instance.data).returncode == 3:
        return f"PostgreSQL was not running (data directory {instance.data})"
    done = as_postgres(str(BIN / "pg_ctl"), "-D", str(instance.data), "-m", "fast", "-w", "-t", str(timeout), "stop")
    if done.returncode != 0 or _pg_ctl_status(instance.data).returncode != 3:
        raise ServiceError(f"pg_ctl stop failed for {instance.data}: {(done.stdout + done.stderr).strip()}\n"
                           f"{log_tail(Path(instance.log_file))}")
    return f"PostgreSQL stopped (data directory {instance.data})"


def service_start(directory: str | Path, args=None) -> str:
    """``pg_ctl start`` on the same data directory (its config: port, sockets); wait for connections."""
    instance = load(directory)
    timeout = int(getattr(args, "timeout", None) or 60)
    if _pg_ctl_status(instance.data).returncode == 0 and _accepting(instance.port):
        return f"PostgreSQL was already running on 127.0.0.1:{instance.port}"
    log = Path(instance.log_file)
    if not log.exists():
        log.touch()
        give_to_postgres(log)
    start_data_dir(instance.data, log, timeout)  # raises with the log's tail
    try:
        wait_ready(instance.port, timeout)
    except RuntimeError as exc:
        raise ServiceError(f"{exc}\n{log_tail(log)}") from None
    return f"PostgreSQL is running on 127.0.0.1:{instance.port} (data directory {instance.data})"


def main(argv: list[str] | None = None) -> int:
    parser, _ = command_line_parser("python -m harness.postgres", service=True)
    args = parser.parse_args(argv)
    if args.command in SERVICE_COMMANDS:
        return run_service_command(args, service_stop, service_start, service_status)
    instance = instance_to_start(args, load, stop, prepare)
    if instance is None:
        return 0
    start(instance)
    conn_file = write_private_json(Path(instance.directory) / CONNECTION_FILE, instance.connection())
    print(json.dumps({"port": instance.port, "directory": instance.directory, "airflow_connection_file": str(conn_file)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
