"""The harnesses' service commands (``service-stop`` / ``service-start`` / ``service-status``), run
as a backup spec's ``service:`` argv lists would be: each on an instance of its own, from another
working directory and without PYTHONPATH; the data stays across a stop and a start."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from harness import hdfs, slapd
from harness import postgres as pg
from hdfs_helpers import WebHdfs


def run(argv: list[str], cwd, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def expect(argv: list[str], cwd, code: int) -> str:
    done = run(argv, cwd)
    assert done.returncode == code, f"{argv[2:]} exited {done.returncode}, not {code}:\n{done.stdout}\n{done.stderr}"
    assert len(done.stdout.strip().splitlines()) == 1, done.stdout
    return done.stdout.strip()


def cycle(service: dict[str, list[str]], cwd) -> None:
    """stop -> 0, status -> 3, stop again -> 0, start -> 0, status -> 0."""
    expect(service["stop"], cwd, 0)
    assert "not running" in expect(service["status"], cwd, 3)
    assert "not running" in expect(service["stop"], cwd, 0)
    expect(service["start"], cwd, 0)
    assert "running" in expect(service["status"], cwd, 0)


def test_service_argv_runs_the_module_as_a_script():
    argv = pg.service_argv("/tmp/x")
    assert set(argv) == {"stop", "start", "status"}
    assert argv["stop"][1].endswith("/harness/postgres.py") and argv["stop"][2:] == ["service-stop", "/tmp/x"]
    assert hdfs.service_argv("/tmp/x", nn="nn2")["start"][2:] == ["service-start", "/tmp/x", "--nn", "nn2"]


def test_postgres_stops_and_starts_on_the_same_data(tmp_path):
    import psycopg

    instance = pg.start(pg.prepare())
    try:
        recorded = json.loads((Path(instance.directory) / "instance.json").read_text())
        assert recorded["data_dir"] == str(instance.data) and recorded["os_user"] == "postgres"
        assert pg.service_paths(instance.directory)["data_dir"] == str(instance.data)
        service = pg.service_argv(instance.directory)
        assert "accepting connections" in expect(service["status"], tmp_path, 0)
        with psycopg.connect(instance.superuser_dsn(), autocommit=True) as conn:
            conn.execute("CREATE TABLE kept (id int PRIMARY KEY, v text)")
            conn.execute("INSERT INTO kept VALUES (1, 'before the stop')")
        cycle(service, tmp_path)
        with psycopg.connect(instance.superuser_dsn()) as conn:
            assert conn.execute("SELECT v FROM kept").fetchall() == [("before the stop",)]
    finally:
        pg.stop(instance.directory, "immediate")
        shutil.rmtree(instance.directory, ignore_errors=True)


def test_slapd_stops_and_starts_on_the_same_database(tmp_path):
    import ldap
    import ldap.modlist

    instance = slapd.prepare(tmp_path / "ldap")
    slapd.seed_offline(instance, slapd.seed_ldif(users=3, groups=1))
    slapd.start(instance)
    try:
        paths = slapd.service_paths(instance.directory)
        assert paths == {"db_dir": str(tmp_path / "ldap" / "data"), "accesslog_dir": str(tmp_path / "ldap" / "accesslog"),
                         "config_file": str(tmp_path / "ldap" / "slapd.conf"), "os_user": paths["os_user"]}
        assert (tmp_path / "ldap" / "data" / "data.mdb").exists()
        service = slapd.service_argv(instance.directory)
        assert "answering" in expect(service["status"], tmp_path, 0)
        dn = f"uid=kept,ou=People,{instance.suffix}"
        conn = ldap.initialize(instance.url)
        conn.simple_bind_s(instance.admin_dn, instance.password)
        conn.add_s(dn, ldap.modlist.addModlist({"objectClass": [b"account"], "uid": [b"kept"]}))
        conn.unbind_s()
        old_pid = slapd.load(instance.directory).pid
        cycle(service, tmp_path)
        new = slapd.load(instance.directory)
        assert new.pid != old_pid and new.port == instance.port
        conn = ldap.initialize(instance.url)
        conn.simple_bind_s(instance.admin_dn, instance.password)
        assert [found for found, _ in conn.search_s(dn, ldap.SCOPE_BASE)] == [dn]
        conn.unbind_s()
    finally:
        slapd.stop(instance.directory)


def test_slapd_start_failure_is_reported_with_the_reason(tmp_path):
    instance = slapd.start(slapd.prepare(tmp_path / "ldap", accesslog=False))
    try:
        service = slapd.service_argv(instance.directory)
        expect(service["stop"], tmp_path, 0)
        with open(instance.conf, "a") as conf:
            conf.write("no-such-directive here\n")
        failed = run(service["start"], tmp_path)
        assert failed.returncode == 1
        assert "start failed" in failed.stderr and "no-such-directive" in failed.stderr
        assert expect(service["status"], tmp_path, 3)
    finally:
        slapd.stop(instance.directory)


def test_an_ha_pair_stops_and_starts_whole_or_one_namenode(tmp_path):
    instance = hdfs.start(tmp_path / "ha", mode="ha")
    try:
        paths = hdfs.service_paths(instance.directory)
        assert set(paths["name_dirs"]) == {"nn1", "nn2"} and paths["shared_edits_dir"]
        service = hdfs.service_argv(instance.directory)
        assert expect(service["status"], tmp_path, 0) == "NameNode nn1 running (active); nn2 running (standby)"
        WebHdfs(instance.webhdfs_url("nn1")).write("/kept/ha", b"ha")
        cycle(service, tmp_path)
        assert expect(service["status"], tmp_path, 0) == "NameNode nn1 running (active); nn2 running (standby)"
        standby = hdfs.service_argv(instance.directory, nn="nn2")
        cycle(standby, tmp_path)
        expect(standby["stop"], tmp_path, 0)
        assert expect(service["status"], tmp_path, 1) == "NameNode nn1 running (active); nn2 not running"
        expect(hdfs.service_argv(instance.directory, nn="nn1")["status"], tmp_path, 0)
        expect(service["start"], tmp_path, 0)  # starts nn2, leaves nn1 running
        # (reading the content goes through the DataNode, which does not resolve the NameService)
        assert WebHdfs(instance.webhdfs_url("nn1")).status("/kept/ha")["length"] == 2
        bad = run(hdfs.service_argv(instance.directory, nn="nn3")["stop"], tmp_path)
        assert bad.returncode == 1 and "no NameNode 'nn3'" in bad.stderr
    finally:
        instance.stop()


@pytest.mark.parametrize("nn", ["nn1", None])
def test_nn_option_and_a_missing_instance(tmp_path, nn):
    service = hdfs.service_argv(tmp_path / "nothing", nn=nn)
    done = run(service["status"], tmp_path)
    assert done.returncode == 1 and "no instance.json" in done.stdout
    assert run(service["start"], tmp_path).returncode == 1
