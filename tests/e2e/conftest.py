"""End-to-end: a real ``airflow standalone`` with this project's plugins, real slapd, PostgreSQL
and HDFS, driven through Airflow's REST API v2 (and a browser for the UI test)."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]

TASK_CREATED = "2026-11-24T10:00:00+08:00"


def pytest_configure(config):
    config.addinivalue_line("markers", "e2e: end-to-end through a running airflow standalone")


@pytest.fixture(scope="session")
def servers(tmp_path_factory):
    """The sources (slapd, PostgreSQL, HDFS), an empty slapd to restore into, and a second HDFS
    standing for the standby cluster haclusterX the NameNode sets are copied to (RemoteHDFS)."""
    from harness import hdfs, slapd
    from harness import postgres as pg

    root = tmp_path_factory.mktemp("e2e-servers")
    ldap_src = slapd.prepare(root / "slapd-src")
    slapd.seed_offline(ldap_src, slapd.seed_ldif(users=10, groups=2))
    slapd.start(ldap_src)
    ldap_empty = slapd.start(slapd.prepare(root / "slapd-empty", accesslog=False))
    database = pg.prepare()
    pg.start(database)
    cluster = hdfs.start(root / "hdfs")
    standby = hdfs.start(root / "hdfs-standby")
    yield {"ldap_src": ldap_src, "ldap_empty": ldap_empty, "pg": database, "hdfs": cluster, "hdfs_standby": standby}
    standby.stop()
    cluster.stop()
    database.stop("immediate")
    shutil.rmtree(database.directory, ignore_errors=True)
    ldap_src.stop()
    ldap_empty.stop()


@pytest.fixture(scope="session")
def project(tmp_path_factory, servers):
    """An Astronomer-style project: two task specs (manual, periodic) and their DAG files."""
    root = tmp_path_factory.mktemp("e2e-project")
    dags, specs, conf = root / "dags", root / "specs", root / "conf"
    for d in (dags, specs, conf):
        d.mkdir()
    (conf / "oms.conf").write_text("role=primary\n")
    data = Path(tempfile.mkdtemp(prefix="metabackup-e2e-data-"))  # restores run as postgres: enterable
    data.chmod(0o755)
    nn = servers["hdfs"]
    manual = {
        "name": "default", "created": TASK_CREATED, "cluster_version": "3.1.0", "timezone": "Asia/Shanghai",
        "type": "manual", "data_path": str(data), "description": "end-to-end manual task",
        "sources": {
            "OMS": {"kind": "files", "paths": [str(conf)], "target": {"type": "LocalDir", "max_backups": 3}},
            "LdapServer": {"kind": "ldap", "conn_id": "e2e_ldap", "base_dns": ["dc=hadoop,dc=com"],
                           "target": {"type": "LocalDir", "max_backups": 3}},
            "DBService": {"kind": "postgres", "conn_id": "e2e_pg", "target": {"type": "LocalDir", "max_backups": 3}},
            "NameNode": {"kind": "namenode", "fs_uri": nn.fs_uri, "tool_command": nn.namenode_tool_command(),
                         "target": {"type": "LocalDir", "max_backups": 3},
                         "copies": [{"type": "RemoteHDFS", "nameservice": "haclusterX", "path": "/backup/metadata",
                                     "max_backups": 3}]},
        },
    }
    periodic = {
        "name": "e2eper", "created": TASK_CREATED, "cluster_version": "3.1.0", "timezone": "UTC", "type": "periodic",
        "schedule": {"start": "2030-01-01T00:00:00+00:00", "period": "day"}, "data_path": str(data),
        "sources": {"OMS": {"kind": "oms", "database": {"conn_id": "e2e_oms_db"}, "paths": [str(conf)],
                            "target": {"type": "LocalDir", "max_backups": 3}}},
    }
    for spec in (manual, periodic):
        (specs / f"{spec['name']}.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
        shutil.copy(REPO / "dags" / "backup_default.py", dags / f"backup_{spec['name']}.py")
    rpo_sets = rpo_tasks(root, specs, dags, data)
    slow = files_task("e2eslow", root, data, pool="e2eslow", description="a run that pauses after its upload")
    (specs / "e2eslow.yaml").write_text(yaml.safe_dump(slow, sort_keys=False))
    shutil.copy(REPO / "dags" / "backup_default.py", dags / "backup_e2eslow.py")
    shutil.copy(REPO / "dags" / "metabackup_verify.py", dags / "metabackup_verify.py")
    return {"root": root, "dags": dags, "specs": specs, "conf": conf, "data": data, "rpo_sets": rpo_sets,
            "markers": root / "markers"}


def files_task(name: str, root: Path, data: Path, **fields) -> dict:
    """A task backing up one folder of its own (``<root>/<name>-src``) with the ``files`` kind."""
    source = root / f"{name}-src"
    source.mkdir()
    (source / "app.conf").write_text(f"{name}\n" * 200)
    return {"name": name, "created": TASK_CREATED, "cluster_version": "3.1.0", "timezone": "UTC", "type": "manual",
            "data_path": str(data), "retries": 0,
            "sources": {"OMS": {"kind": "files", "paths": [str(source)], "target": {"type": "LocalDir", "max_backups": 5}}},
            **fields}


#: tasks run every 4 hours whose newest set is this many minutes old when Airflow starts: ok (late
#: after 1.25 periods, 5 h), late (stale after 2 periods, 8 h), stale; each at least 1.5 h from the
#: next state, however slowly the suite gets to the page
RPO_AGES = {"e2erpo_ok": 30, "e2erpo_late": 390, "e2erpo_stale": 720}


def rpo_tasks(root: Path, specs: Path, dags: Path, data: Path) -> dict[str, list[str]]:
    """Three tasks (every 4 hours) with real sets taken by the core (no scheduler) 30 min, 6.5 h
    and 12 h ago.  The late and stale tasks' source folders are then removed: the scheduled run Airflow makes
    at start fails its check, so they stay late and stale, each with a failed last run."""
    import pendulum

    from metabackup.pipeline import backup
    from metabackup.spec import load_spec

    now = pendulum.now("UTC")
    made = {}
    for name, minutes in RPO_AGES.items():
        spec = files_task(name, root, data, type="periodic", pool="e2erpo",
                          schedule={"start": now.subtract(days=3).start_of("hour").to_iso8601_string(), "period": "hour",
                                    "every": 4})
        path = specs / f"{name}.yaml"
        path.write_text(yaml.safe_dump(spec, sort_keys=False))
        loaded = load_spec(path)
        made[name] = [backup(loaded, executed=now.subtract(minutes=minutes + 240))["OMS"]["set"],
                      backup(loaded, executed=now.subtract(minutes=minutes))["OMS"]["set"]]
        if name != "e2erpo_ok":
            shutil.rmtree(root / f"{name}-src")
        shutil.copy(REPO / "dags" / "backup_default.py", dags / f"backup_{name}.py")
    return made


@pytest.fixture(scope="session")
def airflow(project, servers, tmp_path_factory):
    from harness import airflow_standalone

    env = {
        "AIRFLOW_CONN_E2E_LDAP": servers["ldap_src"].connection_uri(),
        "AIRFLOW_CONN_E2E_LDAP_EMPTY": servers["ldap_empty"].connection_uri(),
        "AIRFLOW_CONN_E2E_PG": json.dumps(servers["pg"].connection()),
        "AIRFLOW_CONN_E2E_OMS_DB": json.dumps(servers["pg"].connection()),
        "AIRFLOW_CONN_WEBHDFS_HACLUSTER": servers["hdfs"].connection_uri(),
        "AIRFLOW_CONN_WEBHDFS_HACLUSTERX": servers["hdfs_standby"].connection_uri(),
        "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps({"type": "file", "log_file_path": str(project["root"] / "openlineage.jsonl"), "append": True}),
        "AIRFLOW__OPENLINEAGE__NAMESPACE": "metabackup-e2e",
        # a viewer-role user besides the admin (Airflow writes its generated password to passwords.json)
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin,viewer:viewer",
        # verification only when triggered (the Backups page's Verify now), not at start
        "METABACKUP_VERIFY_SCHEDULE": "none",
        # the e2eslow task's run stops after its upload (25 s) so the page shows a running step
        "METABACKUP_PAUSE_AT": "backup_e2eslow:OMS.upload.after",
        "METABACKUP_PAUSE_SECONDS": "25",
        "METABACKUP_KILL_MARKERS": str(project["markers"]),
    }
    project["markers"].mkdir(exist_ok=True)
    instance = airflow_standalone.start(tmp_path_factory.mktemp("e2e-airflow"), project["dags"], project["specs"], env)
    yield instance
    instance.stop()


@pytest.fixture(scope="session")
def client(airflow):
    api = airflow.client()
    for dag_id in ("backup_default", "restore_default", "backup_e2eper", "restore_e2eper", "backup_e2eslow",
                   "metabackup_verify", *(f"backup_{name}" for name in RPO_AGES)):
        api.wait_for_dag(dag_id)
    assert api.import_errors() == []
    return api
