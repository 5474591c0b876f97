"""Every source kind backs up through Airflow to each off-site target type (SFTP, S3, RemoteHDFS,
as copies of a LocalDir primary) and restores from each, against real servers: OpenSSH's sshd,
s3proxy, a second HDFS standing for the standby cluster haclusterX, slapd, PostgreSQL 15 and HDFS."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pendulum
import pytest

from conftest import files_spec, seeded_postgres
from metabackup.airflow.dag_factory import dags_for_dag_file
from metabackup.connections import get_connection
from metabackup.restore import plan_restore, restore_source, validate_restore
from metabackup.sources.files import iter_tree
from metabackup.sources.ldap.restore import dump_state
from metabackup.spec import load_spec

pytestmark = pytest.mark.airflow

T0 = pendulum.datetime(2026, 11, 24, 3, tz="UTC")
COPIES = ("SFTP", "S3", "RemoteHDFS")  # copy 1, 2, 3 of every source
BASE = "dc=hadoop,dc=com"


def ok(dr) -> bool:
    return str(dr.state) in ("success", "DagRunState.SUCCESS")


@pytest.fixture(scope="module")
def offsite(tmp_path_factory):
    """The three off-site servers, the NameNode's own HDFS and the directory servers, once per module."""
    from harness import hdfs, s3proxy, slapd, sshd

    root = tmp_path_factory.mktemp("offsite")
    servers = {
        "sftp": sshd.start(sshd.prepare(root / "sshd")),
        "s3": s3proxy.start(s3proxy.prepare(root / "s3proxy")),
        "standby": hdfs.start(root / "hdfs-standby"),
        "hdfs": hdfs.start(root / "hdfs"),
        "ldap": slapd.prepare(root / "slapd-src"),
        "empty": [slapd.prepare(root / f"slapd-empty-{n}", accesslog=False) for n in range(1, 4)],
    }
    servers["s3"].create_bucket("offsite")
    slapd.seed_offline(servers["ldap"], slapd.seed_ldif(users=12, groups=2))
    for instance in (servers["ldap"], *servers["empty"]):
        slapd.start(instance)
    yield servers
    for instance in (servers["ldap"], *servers["empty"], servers["sftp"], servers["s3"], servers["standby"],
                     servers["hdfs"]):
        instance.stop()


def copies_for(offsite, kind: str) -> list[dict]:
    return [
        {"type": "SFTP", "conn_id": "off_sftp", "path": f"{offsite['sftp'].root}/{kind}", "max_backups": 3},
        {"type": "S3", "conn_id": "off_s3", "bucket": "offsite", "prefix": kind, "max_backups": 3},
        {"type": "RemoteHDFS", "nameservice": "haclusterX", "path": f"/offsite/{kind}", "max_backups": 3},
    ]


@pytest.fixture()
def connected(offsite, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_OFF_SFTP", json.dumps(offsite["sftp"].connection()))
    monkeypatch.setenv("AIRFLOW_CONN_OFF_S3", offsite["s3"].connection_uri())
    monkeypatch.setenv("AIRFLOW_CONN_WEBHDFS_HACLUSTERX", offsite["standby"].connection_uri())
    monkeypatch.setenv("AIRFLOW_CONN_WEBHDFS_HACLUSTER", offsite["hdfs"].connection_uri())
    monkeypatch.setenv("AIRFLOW_CONN_OFF_LDAP", offsite["ldap"].connection_uri())
    for n, instance in enumerate(offsite["empty"], 1):
        monkeypatch.setenv(f"AIRFLOW_CONN_OFF_LDAP_EMPTY{n}", instance.connection_uri())
    return offsite


def pg_folder() -> str:
    folder = Path(tempfile.mkdtemp(prefix="metabackup-offsite-pg-"))
    folder.chmod(0o755)  # the postgres user restores into it
    return str(folder)


def test_every_kind_backs_up_to_each_offsite_target_and_restores_from_it(airflow_project, tmp_path, connected,
                                                                         monkeypatch):
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "core-site.xml").write_text("<configuration/>\n")
    nn = connected["hdfs"]
    with seeded_postgres(monkeypatch, rows=200):
        spec_dict = files_spec("offsite", tmp_path, {
            "OMS": {"kind": "files", "paths": [str(conf)], "target": {"type": "LocalDir"},
                    "copies": copies_for(connected, "files")},
            "LdapServer": {"kind": "ldap", "conn_id": "off_ldap", "base_dns": [BASE], "target": {"type": "LocalDir"},
                           "copies": copies_for(connected, "ldap")},
            "DBService": {"kind": "postgres", "conn_id": "pg_src", "target": {"type": "LocalDir"},
                          "copies": copies_for(connected, "postgres")},
            "NameNode": {"kind": "namenode", "fs_uri": nn.fs_uri, "tool_command": nn.namenode_tool_command(),
                         "target": {"type": "LocalDir"}, "copies": copies_for(connected, "namenode")},
        })
        oms_dict = files_spec("offsiteoms", tmp_path, {
            "OMS": {"kind": "oms", "database": {"conn_id": "pg_src"}, "paths": [str(conf)],
                    "target": {"type": "LocalDir", "path": "oms"}, "copies": copies_for(connected, "oms")},
        })
        specs = []
        for spec_file in (spec_dict, oms_dict):
            backup, _ = dags_for_dag_file(airflow_project.install(spec_file))
            dr = backup.test(run_after=T0)
            assert ok(dr), f"{backup.dag_id}: {dr.state}"
            specs.append(load_spec(airflow_project.specs / f"{spec_file['name']}.yaml"))
        spec, oms_spec = specs
        expected_ldap = dump_state(get_connection("off_ldap"), [BASE])
        for number, kind in enumerate(COPIES, 1):
            where = f"copy {number}"
            for task, source in ((spec, "OMS"), (spec, "LdapServer"), (spec, "DBService"), (spec, "NameNode"),
                                 (oms_spec, "OMS")):
                plan = plan_restore(task, source, location=where)
                assert plan.target.uri.split(":")[0] == {"SFTP": "sftp", "S3": "s3", "RemoteHDFS": "hdfs"}[kind]
                label = f"{task.name}/{source} from {where} ({kind})"
                if source == "LdapServer":
                    result = restore_source(task, source, f"off_ldap_empty{number}", location=where)
                    assert dump_state(get_connection(f"off_ldap_empty{number}"), [BASE]) == expected_ldap, label
                    destination = f"off_ldap_empty{number}"
                elif source in ("DBService",) or task is oms_spec:
                    destination = pg_folder()
                    result = restore_source(task, source, destination, location=where)
                else:
                    destination = str(tmp_path / f"restored-{task.name}-{source}-{number}")
                    result = restore_source(task, source, destination, location=where)
                assert result["location"] == where, label
                checks = validate_restore(plan, destination)
                assert checks, label
                if source == "OMS" and task is spec:
                    assert dict(iter_tree(Path(destination) / str(conf).lstrip("/"))) == dict(iter_tree(conf)), label
                if destination.startswith(tempfile.gettempdir() + "/metabackup-offsite-pg-"):
                    shutil.rmtree(destination, ignore_errors=True)
