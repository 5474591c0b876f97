"""Test-wide set-up: a throwaway AIRFLOW_HOME (SQLite), set before anything imports Airflow.

DAG tests write a task spec into ``$METABACKUP_SPEC_DIR`` and the tiny DAG file beside the
others in the test DAGs folder, exactly as an operator would, then run it with ``dag.test()``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
if __name__ != "conftest":  # e.g. `from tests.conftest import ...`: a second copy would move AIRFLOW_HOME
    raise ImportError("import test helpers with `from conftest import ...` (pytest's own copy of this module)")
_HOME = Path(tempfile.mkdtemp(prefix="metabackup-test-airflow-"))
os.environ.update({
    "AIRFLOW_HOME": str(_HOME),
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    "AIRFLOW__CORE__DAGS_FOLDER": str(_HOME / "dags"),
    "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
    "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
    "METABACKUP_SPEC_DIR": str(_HOME / "specs"),
    # a lease left behind by a test fails the next holder in two minutes, not the default half hour
    "METABACKUP_LOCK_WAIT_SECONDS": os.environ.get("METABACKUP_LOCK_WAIT_SECONDS", "120"),
})
(_HOME / "dags").mkdir()
(_HOME / "specs").mkdir()


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """Migrate the test Airflow database once per session."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "plugins")}
    result = subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return _HOME


class AirflowProject:
    """The test's view of an Astronomer-style project: specs beside a DAGs folder."""

    dags = _HOME / "dags"
    specs = _HOME / "specs"

    def install(self, spec: dict) -> Path:
        """Write ``<specs>/<name>.yaml`` and ``<dags>/backup_<name>.py``; return the DAG file."""
        name = spec["name"]
        (self.specs / f"{name}.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
        dag_file = self.dags / f"backup_{name}.py"
        shutil.copy(REPO / "dags" / "backup_default.py", dag_file)
        return dag_file


@pytest.fixture()
def airflow_project(airflow_db) -> AirflowProject:
    return AirflowProject()


def files_spec(name: str, tmp: Path, sources: dict, **overrides) -> dict:
    """A valid manual task spec backing up ``files`` sources into ``tmp/data``."""
    spec = {
        "name": name, "created": "2026-11-24T10:00:00+08:00", "cluster_version": "3.1.0",
        "timezone": "Asia/Shanghai", "type": "manual", "policy": "full_then_incremental",
        "data_path": str(tmp / "data"), "sources": sources,
    }
    spec.update(overrides)
    return spec


# Every table of the public schema with a digest of its rows: compares a restored PostgreSQL with its source.
PG_CAPTURE = """
SELECT c.relname,
       (xpath('/row/h/text()', query_to_xml(format(
           'SELECT md5(coalesce(string_agg(md5(t::text), '','' ORDER BY md5(t::text)), '''')) AS h FROM %I.%I t',
           n.nspname, c.relname), false, true, '')))[1]::text
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND n.nspname = 'public' ORDER BY 1
"""


def write_spec(folder: Path, spec: dict):
    """Write ``<folder>/<name>.yaml`` from a spec mapping (e.g. :func:`files_spec`) and load it."""
    from metabackup.spec import load_spec

    path = Path(folder) / f"{spec['name']}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return load_spec(path)


@contextlib.contextmanager
def seeded_postgres(monkeypatch, rows: int):
    """A throwaway PostgreSQL 15 (the project's harness) as connection ``pg_src``, with a table
    ``t`` of ``rows`` rows; stopped and removed afterwards."""
    import json

    import psycopg

    from harness import postgres as pg

    instance = pg.prepare()
    pg.start(instance)
    monkeypatch.setenv("AIRFLOW_CONN_PG_SRC", json.dumps(instance.connection()))
    with psycopg.connect(instance.superuser_dsn(), autocommit=True) as conn:
        conn.execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
        conn.execute("INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, %s) g", (rows,))
    try:
        yield instance
    finally:
        instance.stop("immediate")
        shutil.rmtree(instance.directory, ignore_errors=True)


@pytest.fixture()
def our_logs():
    """Messages our code logged during the test, also inside ``dag.test()`` task runs.  (Airflow's
    logging set-up replaces pytest's caplog handler, so this hangs a handler on the loggers.)"""
    import logging

    records: list[str] = []
    handler = logging.Handler(level=logging.DEBUG)
    handler.emit = lambda record: records.append(record.getMessage())
    loggers = [logging.getLogger("metabackup")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
    yield records
    for logger, level in zip(loggers, levels):
        logger.removeHandler(handler)
        logger.setLevel(level)


@pytest.fixture(scope="module")
def hdfs_cluster(tmp_path_factory):
    """A real single-NameNode HDFS (the project's harness) shared by one test module."""
    from harness import hdfs

    instance = hdfs.start(tmp_path_factory.mktemp("hdfs") / "single")
    yield instance
    instance.stop()


@pytest.fixture()
def hdfs_connected(hdfs_cluster, monkeypatch):
    """``hdfs_cluster`` as the Airflow connection of the NameService hacluster."""
    monkeypatch.setenv("AIRFLOW_CONN_WEBHDFS_HACLUSTER", hdfs_cluster.connection_uri())
    return hdfs_cluster


def cli_list_json(spec_path) -> list[dict]:
    """``python -m metabackup list --spec ... --json`` in a child process; its stdout parsed."""
    import json

    listed = subprocess.run([sys.executable, "-m", "metabackup", "list", "--spec", str(spec_path), "--json"],
                            capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO / "plugins")})
    assert listed.returncode == 0, listed.stderr
    return json.loads(listed.stdout)


def task_states(dag_id: str, run_id: str) -> dict[str, str]:
    """Each task instance's state in one DAG run, from Airflow's database."""
    from airflow.models import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.scalars(select(TaskInstance).where(TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id))
        return {ti.task_id: str(ti.state.value if hasattr(ti.state, "value") else ti.state) for ti in rows}


def staged_run(spec, source: str, when):
    """One set's run taken up to its upload, as the DAG runs the steps: preflight, decide, snapshot, archive."""
    from metabackup import pipeline

    run = pipeline.SetRun.of(spec, source, when)
    pipeline.preflight(spec, [source])
    pipeline.decide(run)
    pipeline.snapshot(run)
    pipeline.archive(run)
    return run


def backup_once(spec, source: str, when) -> dict:
    """Preflight, then every step of one set as the DAG runs them (``pipeline.run_set``: replication
    to the source's copies included); the decision, the set name and its manifest."""
    from metabackup import pipeline

    run = pipeline.SetRun.of(spec, source, when)
    pipeline.preflight(spec, [source])
    result = pipeline.run_set(run)
    return {**{k: v for k, v in result.items() if k != "event"}, "stem": run.name.stem,
            "manifest": run.catalog().get(run.name.stem)}


# ---------------------------------------------------------------------------------------------
# Order: the suites that start whole deployments first (end-to-end, then DAG runs), so that with
# `pytest -n 2 --dist loadfile` (make test) the two workers do not end on one long file each.
# Within a suite, and within a file, the order stays as collected.
# ---------------------------------------------------------------------------------------------
_SUITE_ORDER = ("e2e", "dags", "integration", "adversarial", "contract", "unit")
_FILES_FIRST = ("test_kill_retry.py",)  # a whole airflow standalone, killed and retried step by step


def pytest_collection_modifyitems(config, items):
    def rank(item) -> tuple[int, int]:
        path = Path(str(item.fspath))
        parts = path.parts
        name = parts[parts.index("tests") + 1] if "tests" in parts else ""
        return (0 if path.name in _FILES_FIRST else 1,
                _SUITE_ORDER.index(name) if name in _SUITE_ORDER else len(_SUITE_ORDER))

    items.sort(key=rank)  # stable


# ---------------------------------------------------------------------------------------------
# tests/adversarial: every test is one attack or mishap; a pass means it was refused (nothing
# outside the destination or target changed), a failure means it escaped.  One line per class
# (the test module) at the end of the run.
# ---------------------------------------------------------------------------------------------
_ADVERSARIAL: dict[str, list[str]] = {}


def pytest_runtest_logreport(report):
    if "tests/adversarial/" not in report.nodeid.replace("\\", "/") and not report.nodeid.startswith("adversarial/"):
        return
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        module = Path(report.nodeid.split("::", 1)[0]).stem.removeprefix("test_")
        _ADVERSARIAL.setdefault(module, []).append(report.outcome)


def pytest_terminal_summary(terminalreporter):
    if not _ADVERSARIAL:
        return
    terminalreporter.section("adversarial")
    for module, outcomes in sorted(_ADVERSARIAL.items()):
        refused = outcomes.count("passed")
        skipped = outcomes.count("skipped")
        escaped = len(outcomes) - refused - skipped
        line = f"adversarial {module}: {len(outcomes)} cases, {refused} refused, {escaped} escaped"
        terminalreporter.write_line(line + (f", {skipped} skipped" if skipped else ""))


# ---------------------------------------------------------------------------------------------
# Alert receivers: a real SMTP server and a real HTTP listener on loopback
# ---------------------------------------------------------------------------------------------
@contextlib.contextmanager
def smtp_sink():
    """A real SMTP server on loopback (aiosmtpd): its port and the (recipients, message) it received."""
    from email import message_from_bytes

    from aiosmtpd.controller import Controller

    from harness import free_port

    received = []

    class Sink:
        async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's naming
            received.append((envelope.rcpt_tos, message_from_bytes(envelope.content)))
            return "250 OK"

    port = free_port()
    controller = Controller(Sink(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield port, received
    finally:
        controller.stop()


@contextlib.contextmanager
def http_sink(path: str = "/alert"):
    """A real HTTP listener on loopback: the URL to POST to and the JSON bodies POSTed."""
    import http.server
    import json
    import threading

    received = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's naming
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}{path}", received
    finally:
        server.shutdown()


@pytest.fixture()
def mailbox(monkeypatch):
    """A real SMTP server on loopback (aiosmtpd) and the Airflow connection to it."""
    import json

    with smtp_sink() as (port, received):
        monkeypatch.setenv("AIRFLOW_CONN_SMTP_ALERTS", json.dumps({
            "conn_type": "smtp", "host": "127.0.0.1", "port": port,
            "extra": {"from_email": "airflow@example.com", "disable_tls": True, "disable_ssl": True, "retry_limit": 0}}))
        monkeypatch.setenv("METABACKUP_ALERT_SMTP_CONN_ID", "smtp_alerts")
        yield received


@pytest.fixture()
def webhook():
    with http_sink() as sink:
        yield sink


def mail_body(message) -> str:
    part = next(p for p in message.walk() if p.get_content_type() == "text/html")
    return part.get_payload(decode=True).decode()


def postgres_service(instance, fail_start_marker: Path | None = None) -> dict:
    """A ``service:`` block for a harness PostgreSQL, as an operator would write it for a server
    managed with pg_ctl: ``pg_ctl status`` exits 0 when running and 3 when stopped.  With
    ``fail_start_marker``, a start fails (exit 1) while that file exists and removes it (a start that
    fails once); a marker whose name starts with ``always`` is kept (every start fails)."""
    from harness import postgres as pg

    pg_ctl = [str(pg.BIN / "pg_ctl"), "-D", str(instance.data)]
    run_as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    start = [*run_as, *pg_ctl, "-l", str(Path(instance.directory) / "postgres.log"), "-w", "-t", "60", "start"]
    if fail_start_marker is not None:
        start = [sys.executable, "-c", "import os, sys\n"
                 "marker = sys.argv[1]\n"
                 "if os.path.exists(marker):\n"
                 "    if not os.path.basename(marker).startswith('always'):\n"
                 "        os.remove(marker)\n"
                 "    sys.exit('start refused by the test (marker file ' + marker + ')')\n"
                 "os.execvp(sys.argv[2], sys.argv[2:])", str(fail_start_marker), *start]
    return {"stop": [*run_as, *pg_ctl, "-m", "fast", "-w", "stop"], "start": start,
            "status": [*run_as, *pg_ctl, "status"], "data_dirs": [str(instance.data)],
            "owner": "postgres" if os.geteuid() == 0 else None, "timeout": 120}
