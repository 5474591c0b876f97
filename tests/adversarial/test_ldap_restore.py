"""LDAP restores aimed at the wrong server: each is refused up front, in one line, writing nothing.

A backup of dc=hadoop,dc=com restored into a server whose suffix is another one used to end in a
13-frame traceback (UNWILLING_TO_PERFORM: no global superior knowledge) from the first add.
"""

from __future__ import annotations

import os
import subprocess
import sys

import ldap
import pendulum
import pytest
import yaml

from conftest import REPO, backup_once
from harness import slapd
from metabackup.connections import ConnectionInfo, get_connection
from metabackup.restore import restore_source
from metabackup.sources import RestoreError
from metabackup.sources.ldap.restore import LdapDestination, dump_state
from metabackup.spec import load_spec

T0 = pendulum.datetime(2026, 11, 24, 3, tz="UTC")
BASE = slapd.SUFFIX
OTHER = "dc=other,dc=org"


@pytest.fixture()
def backed_up(tmp_path, monkeypatch):
    """A seeded dc=hadoop,dc=com server, backed up once (full); the spec and the set."""
    source = slapd.prepare(tmp_path / "src")
    slapd.seed_offline(source, slapd.seed_ldif(users=4, groups=2))
    slapd.start(source)
    monkeypatch.setenv("AIRFLOW_CONN_LDAP_SRC", source.connection_uri())
    path = tmp_path / "lr.yaml"
    path.write_text(yaml.safe_dump({
        "name": "lr", "created": "2026-11-24T00:00:00Z", "cluster_version": "3.1.0", "type": "manual",
        "data_path": str(tmp_path / "data"),
        "sources": {"LdapServer": {"kind": "ldap", "conn_id": "ldap_src", "base_dns": [BASE],
                                   "target": {"type": "LocalDir", "max_backups": 5}}}}))
    spec = load_spec(path)
    made = backup_once(spec, "LdapServer", T0)
    yield spec, made["stem"]
    source.stop()


@pytest.fixture()
def other_suffix_server(tmp_path, monkeypatch):
    """A running, empty throwaway server whose suffix is dc=other,dc=org (accesslog on: it shows
    every write), as the connection ldap_other."""
    instance = slapd.start(slapd.prepare(tmp_path / "other", suffix=OTHER))
    monkeypatch.setenv("AIRFLOW_CONN_LDAP_OTHER", instance.connection_uri())
    yield instance
    instance.stop()


def writes_logged(instance) -> int:
    """Successful writes the server's accesslog recorded (the rootdn of the suffix may read it)."""
    client = ldap.initialize(instance.url, bytes_mode=False)
    client.simple_bind_s(instance.admin_dn, instance.password)
    try:
        return len(client.search_s("cn=accesslog", ldap.SCOPE_ONELEVEL, "(objectClass=auditWriteObject)", ["1.1"]))
    finally:
        client.unbind_s()


def test_online_restore_into_another_suffix_is_refused_naming_both_and_the_remedy(backed_up, other_suffix_server):
    spec, stem = backed_up
    with pytest.raises(RestoreError) as refused:
        restore_source(spec, "LdapServer", "ldap_other", stem)
    message = str(refused.value)
    assert "\n" not in message, "one line"
    assert f"LDAP connection 'ldap_other' ({other_suffix_server.url})" in message
    assert "naming contexts cn=accesslog, dc=other,dc=org" in message  # read from the root DSE
    assert f"needs the base DNs {BASE}" in message
    assert f"start DIR --suffix {BASE}" in message and "nothing was written" in message
    assert other_suffix_server.password not in message
    assert dump_state(get_connection("ldap_other"), [OTHER]) == {}
    assert writes_logged(other_suffix_server) == 0, "the server saw no write"


def test_offline_restore_into_another_suffix_is_refused_before_slapadd(tmp_path, backed_up):
    spec, stem = backed_up
    target = slapd.prepare(tmp_path / "offline", accesslog=False, suffix=OTHER)
    started = []
    conn = ConnectionInfo(conn_id="offline-target", conn_type="ldap", host="127.0.0.1", port=target.port,
                          login=target.admin_dn, password=target.password)
    dest = LdapDestination(conn=conn, slapd_conf=str(target.conf), start_server=lambda: started.append(slapd.start(target)))
    try:
        with pytest.raises(RestoreError) as refused:
            restore_source(spec, "LdapServer", dest, stem)
        message = str(refused.value)
        assert "\n" not in message and "slapadd" not in message  # refused by us, not by slapadd's failure
        assert f"the slapd configuration {target.conf}" in message and "'offline-target'" in message
        assert f"naming contexts {OTHER}" in message and f"--suffix {BASE}" in message
        assert started == [], "the server was not started for the incrementals"
        slapd.start(target)
        assert dump_state(conn, [OTHER, BASE]) == {}, "slapadd loaded nothing"
    finally:
        target.stop()


def test_cli_restore_into_another_suffix_prints_one_error_line_and_no_traceback(backed_up, other_suffix_server):
    spec, stem = backed_up
    done = subprocess.run([sys.executable, "-m", "metabackup", "restore", "--spec", str(spec.path), "--source",
                           "LdapServer", "--set", stem, "--dest", "ldap_other"],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO / "plugins")})
    assert done.returncode == 1
    assert done.stdout == ""
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "dc=other,dc=org" in errors[0] and f"--suffix {BASE}" in errors[0], done.stderr
    assert writes_logged(other_suffix_server) == 0
