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
        "name": "e2eman", "created": TASK_CREATED, "cluster_version": "3.1.0", "timezone": "Asia/Shanghai",
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
    return {"root": root, "dags": dags, "specs": specs, "conf": conf, "data": data}


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
    }
    instance = airflow_standalone.start(tmp_path_factory.mktemp("e2e-airflow"), project["dags"], project["specs"], env)
    yield instance
    instance.stop()


@pytest.fixture(scope="session")
def client(airflow):
    api = airflow.client()
    for dag_id in ("backup_e2eman", "restore_e2eman", "backup_e2eper", "restore_e2eper"):
        api.wait_for_dag(dag_id)
    assert api.import_errors() == []
    return api
