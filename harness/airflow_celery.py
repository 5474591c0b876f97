"""A multi-worker Airflow for tests: the CeleryExecutor with a Redis broker, a PostgreSQL 15
metadata database, ``airflow api-server``, ``scheduler``, ``dag-processor`` and one
``airflow celery worker`` per entry of ``workers``, each on its own queues, with its own Celery
hostname, its own staging directory and its own extra environment.

    instance = airflow_celery.start(home, dags_folder, spec_dir,
                                    workers={"hostA": ["qa"], "hostB": {"queues": ["qb"], "env": {...}}})
    api = instance.client()            # harness.airflow_standalone.AirflowClient (REST API v2)
    instance.kill_worker("hostA")      # SIGKILL its whole session (the celery worker, its pool, the tasks)
    instance.start_worker("hostA")     # the same command and environment again; waits for its PONG
    instance.stop()                    # workers first, then the rest; nothing is left running

    PYTHONPATH=plugins:. python -m harness.airflow_celery HOME [--dags D] [--specs S] [--worker hostA=qa,qb]...

Every process gets one shared configuration as ``AIRFLOW__...`` variables (also written to the
0600 ``HOME/airflow.env``): the same JWT secret, API secret key and Fernet key, the execution API
URL of the API server, the broker (``redis://``) and result backend (``db+postgresql://``).  A
worker's task instances record the worker's name as their ``hostname`` (see
:mod:`harness.hostname`).  Each process runs in its own session, logging to ``HOME/<name>.log``;
stopping or killing one signals every process of its session, so the task processes the Task SDK
puts in process groups of their own go too.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import free_port, log_tail, process_alive, write_private_json
from harness import postgres as pg
from harness import redis as redis_harness
from harness.airflow_standalone import PASSWORD, USER, AirflowClient
from harness.hostname import ENV as HOSTNAME_ENV

REPO = Path(__file__).resolve().parents[1]  # harness/ is at the repository root
STAGING_ENV = "METABACKUP_STAGING_DIR"  # metabackup.spec.STAGING_ENV: the worker's own staging area
DB_ROLE = "airflow"
DB_NAME = "airflow"
COMPONENTS = ("metadatabase", "scheduler", "dag_processor")  # no triggerer here
DEFAULT_WORKERS = {"hostA": ["queue_a"], "hostB": ["queue_b"]}


@dataclass
class Process:
    """One component: its command line, its environment, its log and (while running) its process."""
    name: str
    argv: list[str]
    env: dict[str, str]
    log: Path
    cwd: Path
    popen: subprocess.Popen | None = None

    @property
    def pid(self) -> int:
        return self.popen.pid if self.popen else 0

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.popen = subprocess.Popen(self.argv, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, start_new_session=True, cwd=self.cwd)

    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def signal_session(self, sig: int) -> None:
        """``sig`` to every process of this component's session (its leader's, its children's,
        the task processes in their own process groups, orphans reparented to init)."""
        if self.popen is None:
            return
        for pid in session_members(self.popen.pid):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    def stop(self, timeout: float) -> None:
        """SIGTERM the session, wait ``timeout`` seconds for the leader, then SIGKILL whatever is left."""
        if self.popen is None:
            return
        if self.popen.poll() is None:
            self.signal_session(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        self.kill(signal.SIGKILL)

    def kill(self, sig: int = signal.SIGKILL, timeout: float = 30) -> None:
        """``sig`` to the whole session; with SIGKILL, wait until none of it is left."""
        if self.popen is None:
            return
        self.signal_session(sig)
        if sig != signal.SIGKILL:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.popen.poll()  # reap the leader
            members = session_members(self.popen.pid)
            if not members:
                return
            for pid in members:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                process_alive(pid)  # reaps it if it is our child
            time.sleep(0.05)
        raise RuntimeError(f"{self.name}: processes {session_members(self.popen.pid)} survived SIGKILL")


def session_members(sid: int) -> list[int]:
    """The live (not zombie) processes of session ``sid``."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        try:
            if os.getsid(pid) != sid:
                continue
            with open(f"/proc/{pid}/stat", "rb") as stat:
                state = stat.read().rsplit(b")", 1)[1].split()[0]
        except (ProcessLookupError, PermissionError, FileNotFoundError, IndexError):
            continue
        if state not in (b"Z", b"X"):
            members.append(pid)
    return members


@dataclass
class CeleryAirflow:
    home: Path
    port: int
    redis: redis_harness.RedisInstance
    postgres: pg.PgInstance
    processes: dict[str, Process] = field(default_factory=dict)
    workers: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def broker_url(self) -> str:
        return self.redis.url(0)

    def client(self) -> AirflowClient:
        return AirflowClient(self.url, USER, PASSWORD)

    @property
    def logs(self) -> dict[str, Path]:
        """Each component's log (``api-server``, ``scheduler``, ``dag-processor``, ``worker-<name>``),
        the migration's, Redis's and PostgreSQL's."""
        paths = {name: process.log for name, process in self.processes.items()}
        paths.update({"db-migrate": self.home / "db-migrate.log", "redis": self.redis.log,
                      "postgres": Path(self.postgres.directory) / "postgres.log"})
        return paths

    def log_tail(self, name: str, lines: int = 60) -> str:
        return log_tail(self.logs[name], lines)

    def worker(self, name: str) -> Process:
        return self.processes[f"worker-{name}"]

    def staging(self, name: str) -> Path:
        return Path(self.workers[name]["env"][STAGING_ENV])

    def kill_worker(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to every process of worker ``name`` (celery, its pool, the Task SDK
        supervisors and task processes): with SIGKILL, a crash of that worker machine."""
        self.worker(name).kill(sig)

    def start_worker(self, name: str, timeout: float = 120) -> None:
        """(Re)start worker ``name`` with its command and environment; wait until it answers a ping."""
        process = self.worker(name)
        if process.running():
            raise RuntimeError(f"worker {name} is running (pid {process.pid})")
        process.start()
        wait_for_workers(self, [name], timeout)

    def stop(self, timeout: float = 30) -> None:
        """Workers first (SIGTERM: Celery's warm shutdown, then SIGKILL after ``timeout``), then the
        scheduler, the DAG processor and the API server, Redis and PostgreSQL (its data removed)."""
        order = [n for n in self.processes if n.startswith("worker-")] + [
            n for n in ("scheduler", "dag-processor", "api-server") if n in self.processes]
        errors = []
        for name in order:
            try:
                self.processes[name].stop(timeout)
            except RuntimeError as exc:
                errors.append(str(exc))
        self.redis.stop()
        self.postgres.stop("fast")
        shutil.rmtree(self.postgres.directory, ignore_errors=True)
        if errors:
            raise RuntimeError("; ".join(errors))


def _worker_specs(workers: dict[str, Any], home: Path) -> dict[str, dict[str, Any]]:
    """``{name: [queues]}`` or ``{name: {"queues": [...], "env": {...}, "concurrency": N}}`` made
    whole: each worker's env has its staging directory and its hostname for the task instances."""
    specs = {}
    for name, spec in workers.items():
        spec = {"queues": list(spec)} if isinstance(spec, (list, tuple)) else dict(spec)
        if not spec.get("queues"):
            raise ValueError(f"worker {name}: no queues")
        staging = home / "staging" / name
        env = {STAGING_ENV: str(staging), HOSTNAME_ENV: name, **spec.get("env", {})}
        Path(env[STAGING_ENV]).mkdir(parents=True, exist_ok=True)
        specs[name] = {"queues": spec["queues"], "env": env, "concurrency": int(spec.get("concurrency", 2))}
    return specs


def _create_database(instance: pg.PgInstance, password: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(instance.superuser_dsn(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} WITH LOGIN PASSWORD {}").format(sql.Identifier(DB_ROLE),
                                                                             sql.Literal(password)))
        conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(DB_NAME), sql.Identifier(DB_ROLE)))


def shared_config(home: Path, port: int, broker_url: str, db_url: str, dags_folder: Path, spec_dir: Path,
                  passwords: Path) -> dict[str, str]:
    """The ``AIRFLOW__...`` variables every process gets (secrets generated here, once)."""
    from cryptography.fernet import Fernet

    return {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__CORE__FERNET_KEY": Fernet.generate_key().decode(),
        "AIRFLOW__CORE__HOSTNAME_CALLABLE": "harness.hostname.from_env",
        "AIRFLOW__CORE__AUTH_MANAGER": "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USER}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": db_url,
        "AIRFLOW__CELERY__BROKER_URL": broker_url,
        "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + db_url,
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "5",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
        "METABACKUP_SPEC_DIR": str(spec_dir),
        # the hostname callable (harness.hostname) and the plugins for every process and task
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "plugins"), str(REPO), os.environ.get("PYTHONPATH")])),
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
    }


def start(home: str | Path, dags_folder: str | Path, spec_dir: str | Path,
          workers: dict[str, Any] | None = None, env: dict[str, str] | None = None,
          timeout: float = 600) -> CeleryAirflow:
    """Redis, PostgreSQL with an ``airflow`` database, ``airflow db migrate``, then the API server,
    scheduler, DAG processor and the workers; return once the API reports the metadatabase,
    scheduler and DAG processor healthy and every worker answers a Celery ping.

    ``workers`` maps a worker's name (its ``--celery-hostname`` and the ``hostname`` its task
    instances record) to its queues, or to ``{"queues": [...], "env": {...}, "concurrency": N}``;
    its staging directory (``$METABACKUP_STAGING_DIR``, which overrides every spec's staging_dir) is ``HOME/staging/<name>`` unless its
    env says otherwise.  ``env`` is extra environment for every process (connections, ...).
    """
    began = time.monotonic()
    home = Path(home).resolve()
    home.mkdir(parents=True, exist_ok=True)
    specs = _worker_specs(workers or DEFAULT_WORKERS, home)
    redis_instance = redis_harness.start(redis_harness.prepare(home / "redis"))
    database = None
    instance = None
    try:
        database = pg.prepare()  # under the system temp directory: the postgres user must reach it
        pg.start(database)
        db_password = secrets.token_urlsafe(18)
        _create_database(database, db_password)
        port = free_port()
        passwords = write_private_json(home / "passwords.json", {USER: PASSWORD})
        db_url = f"postgresql+psycopg2://{DB_ROLE}:{db_password}@127.0.0.1:{database.port}/{DB_NAME}"
        config = shared_config(home, port, redis_instance.url(0), db_url, Path(dags_folder).resolve(),
                               Path(spec_dir).resolve(), passwords)
        write_private_json(home / "airflow.env", config)
        environment = {**os.environ, **config, **(env or {})}
        instance = CeleryAirflow(home, port, redis_instance, database, workers=specs)
        airflow = str(Path(sys.executable).with_name("airflow"))
        with open(home / "db-migrate.log", "ab") as log:
            migrated = subprocess.run([airflow, "db", "migrate"], env=environment, stdout=log,
                                      stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=home,
                                      timeout=max(60.0, timeout - (time.monotonic() - began)))
        if migrated.returncode != 0:
            raise RuntimeError(f"airflow db migrate failed:\n{log_tail(home / 'db-migrate.log')}")
        commands = {
            "api-server": [airflow, "api-server", "--port", str(port), "--host", "127.0.0.1"],
            "scheduler": [airflow, "scheduler"],
            "dag-processor": [airflow, "dag-processor"],
        }
        for name, argv in commands.items():
            instance.processes[name] = Process(name, argv, environment, home / f"{name}.log", home)
        for name, spec in specs.items():
            worker_env = {**environment, "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()), **spec["env"]}
            argv = [airflow, "celery", "worker", "--queues", ",".join(spec["queues"]), "--celery-hostname", name,
                    "--concurrency", str(spec["concurrency"])]
            instance.processes[f"worker-{name}"] = Process(f"worker-{name}", argv, worker_env,
                                                           home / f"worker-{name}.log", home)
        for process in instance.processes.values():
            process.start()
        deadline = began + timeout
        while not _healthy(health := _health(instance.url)):
            _check_running(instance)
            if time.monotonic() > deadline:
                raise RuntimeError(f"Airflow was not healthy within {timeout}s (health: {health}):\n"
                                   f"{instance.log_tail('api-server')}")
            time.sleep(1)
        wait_for_workers(instance, list(specs), max(30.0, deadline - time.monotonic()))
        return instance
    except BaseException:
        if instance is not None:
            instance.stop(timeout=10)
        else:
            redis_instance.stop()
            if database is not None:
                database.stop("immediate")
                shutil.rmtree(database.directory, ignore_errors=True)
        raise


def _health(url: str) -> dict[str, Any] | str:
    """``GET /api/v2/monitor/health``, or why it failed."""
    try:
        with urllib.request.urlopen(f"{url}/api/v2/monitor/health", timeout=10) as response:
            return json.loads(response.read())
    except (OSError, ValueError) as exc:
        return repr(exc)


def _healthy(health: dict[str, Any] | str) -> bool:
    return isinstance(health, dict) and all(health.get(c, {}).get("status") == "healthy" for c in COMPONENTS)


def _check_running(instance: CeleryAirflow) -> None:
    for name, process in instance.processes.items():
        if not process.running():
            raise RuntimeError(f"{name} exited with {process.popen.returncode}:\n{instance.log_tail(name)}")


def wait_for_workers(instance: CeleryAirflow, names: list[str], timeout: float) -> None:
    """Until every worker in ``names`` answers a Celery ping through the broker."""
    from celery import Celery

    wanted = set(names)
    deadline = time.monotonic() + timeout
    app = Celery(broker=instance.broker_url)
    try:
        while True:
            for name in wanted:
                process = instance.worker(name)
                if not process.running():
                    raise RuntimeError(f"worker {name} exited with {process.popen.returncode}:\n"
                                       f"{instance.log_tail(f'worker-{name}')}")
            replies = app.control.ping(timeout=1.0)
            answered = {node.split("@", 1)[-1] for reply in replies for node in reply}
            if wanted <= answered:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"workers {sorted(wanted - answered)} did not answer a ping within {timeout}s")
            time.sleep(0.5)
    finally:
        app.close()


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m harness.airflow_celery")
    parser.add_argument("home")
    parser.add_argument("--dags", default=str(REPO / "dags"))
    parser.add_argument("--specs", default=str(REPO / "include" / "backup_tasks"))
    parser.add_argument("--worker", action="append", default=[], metavar="NAME=QUEUE[,QUEUE...]",
                        help=f"a worker and its queues (repeatable; default {DEFAULT_WORKERS})")
    args = parser.parse_args(argv)
    workers = {name: queues.split(",") for name, _, queues in (w.partition("=") for w in args.worker)} or None
    instance = start(args.home, args.dags, args.specs, workers)
    print(json.dumps({"url": instance.url, "user": USER, "password_file": str(instance.home / "passwords.json"),
                      "logs": {k: str(v) for k, v in instance.logs.items()}}))
    try:
        while all(p.running() for p in instance.processes.values()):
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        instance.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
