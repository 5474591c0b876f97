"""Throwaway PostgreSQL clusters for tests, benchmarks and the demo (Debian's PostgreSQL 15).

    PYTHONPATH=plugins:. python -m harness.postgres start DIR [--reuse]   # DIR/airflow-connection.json (0600)
    PYTHONPATH=plugins:. python -m harness.postgres stop DIR

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

from harness import (
    CONNECTION_FILE, command_line_parser, free_port, instance_to_start, load_instance, save_instance, write_private_json,
)
from metabackup.fsutil import child_env

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

    @property
    def data(self) -> Path:
        return Path(self.directory) / "data"

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


def main(argv: list[str] | None = None) -> int:
    parser, _ = command_line_parser("python -m harness.postgres")
    instance = instance_to_start(parser.parse_args(argv), load, stop, prepare)
    if instance is None:
        return 0
    start(instance)
    conn_file = write_private_json(Path(instance.directory) / CONNECTION_FILE, instance.connection())
    print(json.dumps({"port": instance.port, "directory": instance.directory, "airflow_connection_file": str(conn_file)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
