"""Scheduled verification's test restore into a scratch instance, per kind, against real servers."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from metabackup.verification import VerificationFailed, record_name, restore_to_scratch as scratch_restore, verify_sets
from test_ldap import backup, ldapmodify, make_spec, server, task_dir  # noqa: F401 - server is a fixture


@pytest.fixture()
def pg_cluster(monkeypatch):
    from harness import postgres as pg

    instance = pg.prepare()
    pg.start(instance)
    monkeypatch.setenv("AIRFLOW_CONN_PG_SRC", json.dumps(instance.connection()))
    from test_postgres import write

    write(instance, "CREATE TABLE t (id int PRIMARY KEY, v text)")
    write(instance, "INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 1000) g")
    yield instance
    instance.stop("immediate")
    shutil.rmtree(instance.directory, ignore_errors=True)


def test_ldap_chain_test_restores_into_a_scratch_slapd_with_the_backed_up_suffix(tmp_path, server):  # noqa: F811
    spec = make_spec(tmp_path)
    backup(spec, 0)
    ldapmodify(server, "dn: uid=user00001,ou=People,dc=hadoop,dc=com\nchangetype: modify\nreplace: loginShell\nloginShell: /bin/zsh\n")
    second = backup(spec, 1)
    assert verify_sets(spec, "LdapServer") == {"target": f"file://{tmp_path}/data/LocalBackup", "sets": 2, "failed": []}
    outcome = scratch_restore(spec, "LdapServer", str(tmp_path))
    assert outcome["ok"] and outcome["set"] == second["stem"]
    record = json.loads((task_dir(tmp_path) / record_name("LdapServer")).read_text())
    assert record["test_restore"]["set"] == second["stem"] and len(record["sets"]) == 2
    assert not list(tmp_path.glob("metabackup-verify-*")), "the scratch instance is removed"


def test_a_truncated_archive_fails_the_test_restore_and_is_recorded(tmp_path, server):  # noqa: F811
    spec = make_spec(tmp_path)
    first = backup(spec, 0)
    archive = task_dir(tmp_path) / f"{first['stem']}.tar.gz"
    archive.write_bytes(archive.read_bytes()[:-100])
    with pytest.raises(VerificationFailed, match="failed verification"):
        scratch_restore(spec, "LdapServer", str(tmp_path))
    record = json.loads((task_dir(tmp_path) / record_name("LdapServer")).read_text())
    assert record["test_restore"]["ok"] is False and first["stem"] in record["test_restore"]["error"]
    with pytest.raises(VerificationFailed, match=first["stem"]):
        verify_sets(spec, "LdapServer")
    record = json.loads((task_dir(tmp_path) / record_name("LdapServer")).read_text())
    assert record["sets"][first["stem"]]["ok"] is False


def test_postgres_chain_test_restores_into_a_scratch_data_directory(tmp_path, pg_cluster):
    import tempfile

    from test_postgres import make_spec as pg_spec, run_steps, write

    data = Path(tempfile.mkdtemp(prefix="metabackup-verify-pg-"))  # the postgres user must enter it
    data.chmod(0o755)
    spec = pg_spec(data)
    run_steps(spec, 0)
    write(pg_cluster, "INSERT INTO t SELECT g, 'later' FROM generate_series(1001, 1100) g")
    second = run_steps(spec, 1)
    outcome = scratch_restore(spec, "DBService", str(data))
    assert outcome["ok"] and outcome["set"] == second["stem"]
    assert outcome["checks"]["cluster_state"] in ("shut down", "in production")
    assert not list(data.glob("metabackup-verify-*")), "the scratch data directory is removed"


def test_namenode_chain_test_restores_into_a_scratch_name_directory(tmp_path, hdfs_connected):
    from test_namenode import backup as nn_backup, make_spec as nn_spec

    spec = nn_spec(tmp_path, hdfs_connected, name="nnverify")
    nn_backup(spec, 0)
    second = nn_backup(spec, 1)
    outcome = scratch_restore(spec, "NameNode", str(tmp_path))
    assert outcome["ok"] and outcome["set"] == second["stem"]
    assert outcome["checks"]["last_txid"] == second["manifest"].position["end_txid"]
