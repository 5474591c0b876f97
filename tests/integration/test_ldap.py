"""The ldap source kind against real slapd: failures, fallbacks, offline restore, corrupt chains."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import ldap
import pendulum
import pytest
import yaml

from conftest import REPO, backup_once
from harness import slapd
from metabackup import pipeline
from metabackup.connections import get_connection
from metabackup.restore import restore_source
from metabackup.sources import RestoreError
from metabackup.sources.ldap.restore import LdapDestination, dump_state, slapadd_call
from metabackup.spec import load_spec

T0 = pendulum.datetime(2026, 11, 24, 3, tz="UTC")
BASE = slapd.SUFFIX
OTHER = "dc=other,dc=org"


@pytest.fixture()
def server(tmp_path, monkeypatch):
    instance = slapd.prepare(tmp_path / "src")
    slapd.seed_offline(instance, slapd.seed_ldif(users=15, groups=3))
    slapd.start(instance)
    monkeypatch.setenv("AIRFLOW_CONN_LDAP_SRC", instance.connection_uri())
    yield instance
    instance.stop()


def make_spec(tmp_path: Path, conn_id: str = "ldap_src", **options):
    path = tmp_path / "lt.yaml"
    path.write_text(yaml.safe_dump({
        "name": "lt", "created": "2026-11-24T00:00:00Z", "cluster_version": "3.1.0", "type": "manual",
        "data_path": str(tmp_path / "data"),
        "sources": {"LdapServer": {"kind": "ldap", "conn_id": conn_id, "base_dns": [BASE], **options,
                                   "target": {"type": "LocalDir", "max_backups": 5}}}}))
    return load_spec(path)


def backup(spec, hour: int) -> dict:
    return backup_once(spec, "LdapServer", T0.add(hours=hour))


def task_dir(tmp_path: Path) -> Path:
    return tmp_path / "data" / "LocalBackup" / "lt_20261124000000"


def ldapmodify(server, text: str) -> None:
    subprocess.run(["ldapmodify", "-x", "-H", server.url, "-D", server.admin_dn, "-w", server.password],
                   input=text, text=True, check=True, capture_output=True)


def test_bad_credentials_fail_preflight_naming_the_connection_and_write_nothing(tmp_path, server, monkeypatch):
    conn = json.loads(server.connection_uri())
    conn["password"] = "wrong-password"
    monkeypatch.setenv("AIRFLOW_CONN_LDAP_BAD", json.dumps(conn))
    spec = make_spec(tmp_path, "ldap_bad")
    with pytest.raises(pipeline.PreflightError) as failure:
        pipeline.preflight(spec, ["LdapServer"])
    message = str(failure.value)
    assert "LDAP connection 'ldap_bad'" in message and "rejected the bind DN" in message
    assert "wrong-password" not in message
    assert not any(p.is_file() for p in task_dir(tmp_path).glob("*")) if task_dir(tmp_path).exists() else True


def test_unreachable_server_and_undefined_connection_fail_clearly(tmp_path, monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    monkeypatch.setenv("AIRFLOW_CONN_LDAP_DOWN", json.dumps({"conn_type": "ldap", "host": "127.0.0.1", "port": port,
                                                             "login": "cn=x", "password": "p", "extra": {"timeout": 3}}))
    with pytest.raises(pipeline.PreflightError, match=rf"LDAP connection 'ldap_down' \(ldap://127.0.0.1:{port}\): cannot reach the server"):
        pipeline.preflight(make_spec(tmp_path, "ldap_down"), ["LdapServer"])
    with pytest.raises(pipeline.PreflightError, match="Airflow connection 'ldap_nowhere' is not defined"):
        pipeline.preflight(make_spec(tmp_path, "ldap_nowhere"), ["LdapServer"])


def test_purged_accesslog_makes_the_next_run_full_with_the_reason(tmp_path, server):
    spec = make_spec(tmp_path, change_method="accesslog")
    backup(spec, 0)
    ldapmodify(server, f"dn: uid=user00001,ou=People,{BASE}\nchangetype: modify\nreplace: mail\nmail: a@b\n")
    second = backup(spec, 1)
    assert second["type"] == "incremental"
    watermark = json.loads((task_dir(tmp_path) / f"{second['stem']}.manifest.json").read_text())["position"]["watermark"]
    # the log is purged past the watermark (as logpurge would after days of downtime)
    subprocess.run(["ldapdelete", "-x", "-H", server.url, "-D", slapd.ACCESSLOG_ADMIN_DN, "-w", server.password,
                    f"reqStart={watermark},cn=accesslog"], check=True, capture_output=True)
    third = backup(spec, 2)
    assert third["type"] == "full"
    assert f"no longer holds the parent's watermark {watermark}" in third["reason"]
    manifest = json.loads((task_dir(tmp_path) / f"{third['stem']}.manifest.json").read_text())
    assert "purged" in manifest["reason"]


def test_offline_slapadd_restore_then_online_incrementals(tmp_path, server):
    spec = make_spec(tmp_path)
    backup(spec, 0)
    ldapmodify(server, f"dn: cn=group0,ou=Groups,{BASE}\nchangetype: modify\nadd: memberUid\nmemberUid: someone\n")
    last = backup(spec, 1)
    expected = dump_state(get_connection("ldap_src"), [BASE])
    target = slapd.prepare(tmp_path / "dst", accesslog=False)
    try:
        dest = LdapDestination(conn=get_connection_for(target), slapd_conf=str(target.conf),
                               start_server=lambda: slapd.start(target))
        result = restore_source(spec, "LdapServer", dest, last["stem"])
        assert result["full_entries"] == len(expected) and result["changes_applied"] == 1
        assert dump_state(get_connection_for(target), [BASE]) == expected
    finally:
        target.stop()


def test_slapadd_gets_only_the_allow_listed_environment(tmp_path, server, monkeypatch):
    """The worker's Airflow connections (AIRFLOW_CONN_LDAP_SRC holds the source's password) and
    variables never reach slapadd; the offline restore still works with that environment."""
    monkeypatch.setenv("AIRFLOW_VAR_API_TOKEN", "variable-secret-value")
    monkeypatch.setenv("AIRFLOW_CONN_SECRET", "postgres://user:conn-secret-value@db:5432/x")
    argv, env = slapadd_call("/etc/ldap/slapd.conf", BASE, tmp_path / "base-0.ordered.ldif")
    assert argv == ["slapadd", "-q", "-f", "/etc/ldap/slapd.conf", "-b", BASE, "-l", str(tmp_path / "base-0.ordered.ldif")]
    assert not [k for k in env if k.startswith("AIRFLOW")], env
    assert not [v for v in env.values() if server.password in v or "secret-value" in v]
    assert env["PATH"]
    spec = make_spec(tmp_path)
    stem = backup(spec, 0)["stem"]
    target = slapd.prepare(tmp_path / "dst", accesslog=False)
    try:
        dest = LdapDestination(conn=get_connection_for(target), slapd_conf=str(target.conf),
                               start_server=lambda: slapd.start(target))
        result = restore_source(spec, "LdapServer", dest, stem)
        assert result["full_entries"] == len(dump_state(get_connection("ldap_src"), [BASE]))
    finally:
        target.stop()


def test_work_directory_files_are_private_whatever_the_umask(tmp_path, server):
    """The snapshot's JSON (position, index) and LDIF in the staging work directory are 0600 even
    under a permissive umask: they describe (and hold) the directory's password hashes."""
    spec = make_spec(tmp_path, change_method="digest")
    previous = os.umask(0o022)
    try:
        for hour, expected in ((0, {"ldap-position.json", "index.jsonl", "base-0.ldif", "config.ldif"}),
                               (1, {"ldap-position.json", "index.jsonl", "changes.ldif"})):
            if hour:
                ldapmodify(server, f"dn: uid=user00003,ou=People,{BASE}\nchangetype: modify\nreplace: mail\nmail: u3@x\n")
            run = pipeline.SetRun.of(spec, "LdapServer", T0.add(hours=hour))
            pipeline.preflight(spec, ["LdapServer"])
            pipeline.decide(run)
            pipeline.snapshot(run)
            modes = {p.name: p.stat().st_mode & 0o777 for p in run.workdir.iterdir()}
            assert expected <= set(modes), modes
            assert {name: mode for name, mode in modes.items() if mode != 0o600} == {}
            assert run.workdir.stat().st_mode & 0o777 == 0o700
            for step in (pipeline.archive, pipeline.upload, pipeline.verify, pipeline.retention):
                step(run)
    finally:
        os.umask(previous)


def get_connection_for(instance):
    from metabackup.connections import ConnectionInfo

    return ConnectionInfo(conn_id="restore-target", conn_type="ldap", host="127.0.0.1", port=instance.port,
                          login=instance.admin_dn, password=instance.password)


def test_restore_refuses_a_corrupt_member_and_a_non_empty_destination(tmp_path, server, monkeypatch):
    spec = make_spec(tmp_path)
    full = backup(spec, 0)["stem"]
    ldapmodify(server, f"dn: uid=user00002,ou=People,{BASE}\nchangetype: delete\n")
    inc = backup(spec, 1)["stem"]
    with pytest.raises(RestoreError, match="destination already holds"):
        restore_source(spec, "LdapServer", "ldap_src", inc)  # the source itself is not empty
    archive = task_dir(tmp_path) / f"{full}.tar.gz"
    data = bytearray(archive.read_bytes())
    data[-40] ^= 0x01
    archive.write_bytes(bytes(data))
    target = slapd.prepare(tmp_path / "dst", accesslog=False)
    slapd.start(target)
    monkeypatch.setenv("AIRFLOW_CONN_LDAP_DST", target.connection_uri())
    try:
        with pytest.raises(RestoreError, match=f"chain member {full} failed verification"):
            restore_source(spec, "LdapServer", "ldap_dst", inc)
        assert dump_state(get_connection("ldap_dst"), [BASE]) == {}, "nothing was written"
    finally:
        target.stop()


def test_backup_files_are_private_and_hold_hashes_only_inside(tmp_path, server):
    spec = make_spec(tmp_path)
    stem = backup(spec, 0)["stem"]
    archive = task_dir(tmp_path) / f"{stem}.tar.gz"
    assert archive.stat().st_mode & 0o777 == 0o600
    assert task_dir(tmp_path).stat().st_mode & 0o777 == 0o700
    import tarfile

    with tarfile.open(archive) as tar:
        names = tar.getnames()
        ldif_text = tar.extractfile("ldap/base-0.ldif").read().decode()
        assert all(m.mode == 0o600 for m in tar.getmembers())
    assert names[-1] == "ldap/index.jsonl" and "ldap/config.ldif" in names
    assert "userPassword::" in ldif_text or "userPassword:" in ldif_text


@pytest.mark.parametrize("mode", ["ldaps", "starttls"])
def test_ldaps_and_starttls_connections_back_up(tmp_path, monkeypatch, mode):
    instance = slapd.prepare(tmp_path / "tls", tls=True)
    slapd.seed_offline(instance, slapd.seed_ldif(users=3, groups=1))
    slapd.start(instance)
    try:
        conn = json.loads(instance.connection_uri())
        conn["extra"] = {"ca_file": instance.ca_file}
        if mode == "ldaps":
            conn.update(port=instance.tls_port)
            conn["extra"]["scheme"] = "ldaps"
        else:
            conn["extra"].update(scheme="ldap", starttls=True)
        monkeypatch.setenv("AIRFLOW_CONN_LDAP_TLS", json.dumps(conn))
        first = backup(make_spec(tmp_path, "ldap_tls"), 0)
        assert first["type"] == "full"
        # the same server without trusting its CA is refused, naming the connection
        conn["extra"].pop("ca_file")
        monkeypatch.setenv("AIRFLOW_CONN_LDAP_UNTRUSTED", json.dumps(conn))
        with pytest.raises(pipeline.PreflightError, match="LDAP connection 'ldap_untrusted'") as failure:
            pipeline.preflight(make_spec(tmp_path, "ldap_untrusted"), ["LdapServer"])
        assert "certificate is trusted (extra.ca_file)" in str(failure.value)
    finally:
        instance.stop()


def test_parents_first_orders_children_after_parents_whatever_the_input_order(tmp_path):
    import io

    import ldif as ldif_module

    from metabackup.sources.ldap.records import iter_entries
    from metabackup.sources.ldap.restore import parents_first

    source = tmp_path / "in.ldif"
    source.write_text(
        "dn: uid=a,ou=Moved,dc=x\nuid: a\n\n"          # child before its parent (after a subtree move)
        "dn: ou=Moved,dc=x\nou: Moved\n\n"
        "dn: dc=x\ndc: x\n\n"
        "dn: cn=deep,uid=a,ou=Moved,dc=x\ncn: deep\n\n")
    out = io.StringIO()
    assert parents_first(source, ldif_module.LDIFWriter(out)) == 4
    order = [dn for dn, _ in iter_entries(io.BytesIO(out.getvalue().encode()))]
    assert order.index("dc=x") < order.index("ou=Moved,dc=x") < order.index("uid=a,ou=Moved,dc=x") < order.index("cn=deep,uid=a,ou=Moved,dc=x")


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "metabackup", *args], capture_output=True, text=True, timeout=180,
                          env={**os.environ, "PYTHONPATH": str(REPO / "plugins")})


def test_cli_ldap_restore_prints_its_result_alone_and_only_its_own_messages(tmp_path, server, monkeypatch):
    """Airflow (imported for the connection) must not add its logging set-up's lines, nor its
    secrets masker's warning about the short ``scheme`` extra, to the CLI's output."""
    spec = make_spec(tmp_path)
    full = backup(spec, 0)["stem"]
    ldapmodify(server, f"dn: cn=group1,ou=Groups,{BASE}\nchangetype: modify\nadd: memberUid\nmemberUid: cli\n")
    inc = backup(spec, 1)["stem"]
    target = slapd.start(slapd.prepare(tmp_path / "dst", accesslog=False))
    monkeypatch.setenv("AIRFLOW_CONN_LDAP_CLI_DST", target.connection_uri())
    try:
        done = run_cli("restore", "--spec", str(spec.path), "--source", "LdapServer", "--dest", "ldap_cli_dst")
        assert done.returncode == 0, done.stderr
        result = json.loads(done.stdout)
        assert done.stdout == json.dumps(result, indent=2) + "\n", "stdout is the result and nothing else"
        assert result["set"] == inc and result["chain"] == [full, inc] and result["changes_applied"] == 1
        lines = done.stderr.splitlines()
        assert lines, "our own progress messages"
        assert all(line.startswith(("INFO verified ", "INFO restoring ", "INFO applied ")) for line in lines), done.stderr
        assert "mask" not in done.stderr.lower() and "airflow" not in done.stderr.lower()
        assert dump_state(get_connection("ldap_cli_dst"), [BASE]) == dump_state(get_connection("ldap_src"), [BASE])
        # an undefined destination connection is one error line, no traceback
        missing = run_cli("restore", "--spec", str(spec.path), "--source", "LdapServer", "--dest", "ldap_nowhere")
        assert missing.returncode == 1 and missing.stdout == ""
        assert missing.stderr.startswith("error: --dest 'ldap_nowhere': Airflow connection 'ldap_nowhere' is not defined")
        assert "Traceback" not in missing.stderr and len(missing.stderr.splitlines()) == 1, missing.stderr
    finally:
        target.stop()


def test_harness_starts_a_throwaway_server_with_the_asked_suffix(tmp_path):
    """``python -m harness.slapd start DIR --suffix DN``: the server, its connection file
    and its root DSE name that suffix; a malformed one is refused before anything is made."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "plugins"), str(REPO)])}
    directory = tmp_path / "throwaway"
    started = subprocess.run([sys.executable, "-m", "harness.slapd", "start", str(directory), "--suffix", OTHER],
                             capture_output=True, text=True, timeout=60, env=env)
    try:
        assert started.returncode == 0, started.stderr
        printed = json.loads(started.stdout)
        assert printed["suffix"] == OTHER and printed["bind_dn"] == f"cn=admin,{OTHER}"
        conn = json.loads(Path(printed["airflow_connection_file"]).read_text())
        assert conn["login"] == f"cn=admin,{OTHER}"
        client = ldap.initialize(printed["url"], bytes_mode=False)
        [(_, root_dse)] = client.search_s("", ldap.SCOPE_BASE, "(objectClass=*)", ["namingContexts"])
        assert OTHER.encode() in root_dse["namingContexts"]
        # a bad suffix is refused with one line and nothing is made
        bad = subprocess.run([sys.executable, "-m", "harness.slapd", "start", str(tmp_path / "bad"),
                              "--suffix", "not a dn"], capture_output=True, text=True, timeout=60, env=env)
        assert bad.returncode == 2 and bad.stderr.startswith("error: suffix 'not a dn' is not a DN")
        assert not (tmp_path / "bad").exists()
    finally:
        slapd.stop(directory)


def index_member(archive: Path) -> list[dict | list]:
    import tarfile

    with tarfile.open(archive) as tar:
        return [json.loads(line) for line in tar.extractfile("ldap/index.jsonl").read().splitlines()]


def index_lines(lines: list, *tags: str) -> list:
    """The lines of an index (after its header) whose tag is one of ``tags``."""
    return [line for line in lines[1:] if line[0] in tags]


def test_digest_incrementals_store_only_the_changed_index_and_restore_as_a_chain(tmp_path, server, monkeypatch):
    """A digest incremental's index is the changed part and a reference to its parent's whole
    index (kept in the staging area); the next incremental finds the changes from it; the chain
    restores to the source's state; a missing or altered staging copy is refused, naming force_full."""
    from metabackup.sources.ldap.index import cache_dir

    spec = make_spec(tmp_path, change_method="digest")
    full = backup(spec, 0)
    ldapmodify(server, f"dn: uid=user00001,ou=People,{BASE}\nchangetype: modify\nreplace: mail\nmail: one@x\n")
    first = backup(spec, 1)
    ldapmodify(server, f"dn: uid=user00002,ou=People,{BASE}\nchangetype: delete\n\n"
                       f"dn: uid=new1,ou=People,{BASE}\nchangetype: add\nobjectClass: account\nuid: new1\n")
    second = backup(spec, 2)
    assert [full["type"], first["type"], second["type"]] == ["full", "incremental", "incremental"]
    folder = task_dir(tmp_path)
    whole = index_member(folder / f"{full['stem']}.tar.gz")
    assert whole[0] == {"format": "metabackup-ldap-index", "version": 2, "type": "whole"}
    assert len(index_lines(whole, "e")) == 15 + 3 + 4 + 1 + 1 + 3  # users, groups, ous, policy, suffix, services
    delta = index_member(folder / f"{first['stem']}.tar.gz")
    assert delta[0]["type"] == "delta" and delta[0]["base"]["set"] == full["stem"]
    assert delta[0]["whole"]["entries"] == 27
    assert [line[1] for line in index_lines(delta, "e")] == [f"uid=user00001,ou=People,{BASE}"]
    delta = index_member(folder / f"{second['stem']}.tar.gz")
    assert delta[0]["base"]["set"] == first["stem"]
    assert sorted((line[0], line[1]) for line in index_lines(delta, "e", "d")) == [
        ("d", f"uid=user00002,ou=People,{BASE}"), ("e", f"uid=new1,ou=People,{BASE}")]
    manifest = json.loads((folder / f"{second['stem']}.manifest.json").read_text())
    assert manifest["position"]["method"] == "digest" and manifest["position"]["index_form"] == "delta"
    assert manifest["content"]["members"]["ldap/index.jsonl"] < 1000

    expected = dump_state(get_connection("ldap_src"), [BASE])
    target = slapd.start(slapd.prepare(tmp_path / "dst", accesslog=False))
    try:
        result = restore_source(spec, "LdapServer", LdapDestination(conn=get_connection_for(target)), second["stem"])
        assert result["changes_applied"] == 3
        assert dump_state(get_connection_for(target), [BASE]) == expected
    finally:
        target.stop()

    # the staging copy of the last whole index: altered, then missing
    staged = sorted(cache_dir(Path(spec.staging_dir) / spec.task_dir / "x", "LdapServer").glob("*.jsonl"))
    assert [p.stem for p in staged] == [first["stem"], second["stem"]]
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in staged)
    copy = staged[-1]
    ldapmodify(server, f"dn: uid=user00003,ou=People,{BASE}\nchangetype: modify\nreplace: mail\nmail: three@x\n")
    good = copy.read_bytes()
    copy.write_bytes(good.replace(b"user00004", b"user00044", 1))
    with pytest.raises(Exception, match="is not the whole index .* run with force_full"):
        backup(spec, 3)
    copy.unlink()
    with pytest.raises(Exception, match="whole index is kept in the staging area .* force_full"):
        backup(spec, 3)
    copy.write_bytes(good)
    third = backup(spec, 3)
    assert third["type"] == "incremental"
    delta = index_member(folder / f"{third['stem']}.tar.gz")
    assert [line[1] for line in index_lines(delta, "e")] == [f"uid=user00003,ou=People,{BASE}"]


def test_digest_index_whole_needs_no_staging_copy(tmp_path, server):
    from metabackup.sources.ldap.index import cache_dir

    spec = make_spec(tmp_path, change_method="digest", digest_index="whole")
    backup(spec, 0)
    for hour in (1, 2):
        ldapmodify(server, f"dn: uid=user0000{hour},ou=People,{BASE}\nchangetype: modify\nreplace: mail\nmail: {hour}@x\n")
        made = backup(spec, hour)
        assert made["type"] == "incremental"
        assert not cache_dir(Path(spec.staging_dir) / spec.task_dir / "x", "LdapServer").exists()
        lines = index_member(task_dir(tmp_path) / f"{made['stem']}.tar.gz")
        assert lines[0]["type"] == "whole" and len(index_lines(lines, "e")) == 27


def test_slapcat_full_of_a_running_server_restores_with_its_accesslog_incrementals(tmp_path, server):
    """method: slapcat reads the running server's back-mdb files; the set restores (online) to
    the source's state, and accesslog incrementals chain on it."""
    spec = make_spec(tmp_path, method="slapcat", slapd_conf=str(server.conf))
    full = backup(spec, 0)
    ldapmodify(server, f"dn: uid=user00005,ou=People,{BASE}\nchangetype: modify\nreplace: mail\nmail: five@x\n")
    inc = backup(spec, 1)
    assert (full["type"], inc["type"]) == ("full", "incremental")
    folder = task_dir(tmp_path)
    position = json.loads((folder / f"{full['stem']}.manifest.json").read_text())["position"]
    assert position["reader"] == "slapcat" and position["entries"] == 27 and position["index"] is False
    assert json.loads((folder / f"{inc['stem']}.manifest.json").read_text())["position"]["method"] == "accesslog"
    expected = dump_state(get_connection("ldap_src"), [BASE])
    target = slapd.start(slapd.prepare(tmp_path / "dst", accesslog=False))
    try:
        result = restore_source(spec, "LdapServer", LdapDestination(conn=get_connection_for(target)), inc["stem"])
        assert result["full_entries"] == 27 and result["changes_applied"] == 1
        assert dump_state(get_connection_for(target), [BASE]) == expected
    finally:
        target.stop()


def test_slapcat_runs_as_an_argument_list_and_refuses_what_it_cannot_read_safely(tmp_path, server, monkeypatch):
    from metabackup.sources.ldap.client import LdapSourceError
    from metabackup.sources.ldap.slapcat import check_mdb, count_entries, slapcat_call

    monkeypatch.setenv("AIRFLOW_CONN_SECRET", "postgres://user:conn-secret-value@db:5432/x")
    argv, env = slapcat_call("/etc/ldap/slapd.conf", None, BASE)
    assert argv == ["slapcat", "-f", "/etc/ldap/slapd.conf", "-b", BASE]
    assert slapcat_call("/etc/ldap/slapd.conf", None, f"ou=People,{BASE}", BASE)[0][3:] == [
        "-b", BASE, "-a", f"(entryDN:dnSubtreeMatch:=ou=People,{BASE})"]
    assert slapcat_call(None, "/etc/ldap/slapd.d", BASE)[0][1:3] == ["-F", "/etc/ldap/slapd.d"]
    assert not [k for k in env if k.startswith("AIRFLOW")] and env["PATH"]
    other = tmp_path / "other.conf"
    other.write_text(f'database ldif\nsuffix "{BASE}"\ndirectory {tmp_path}\n')
    with pytest.raises(LdapSourceError, match="served by a ldif database .* only for back-mdb"):
        check_mdb(str(other), None, BASE)
    with pytest.raises(LdapSourceError, match="no database of .* serves dc=nowhere"):
        check_mdb(str(server.conf), None, "dc=nowhere")
    assert check_mdb(str(server.conf), None, f"ou=People,{BASE}") == BASE  # below the mdb suffix
    from metabackup.sources.ldap.slapcat import export
    assert export(str(server.conf), None, f"ou=People,{BASE}", tmp_path / "people.ldif") == 16  # the ou and 15 users
    spec = make_spec(tmp_path, method="slapcat", slapd_conf=str(other))
    with pytest.raises(pipeline.PreflightError, match="only for back-mdb"):
        pipeline.preflight(spec, ["LdapServer"])
    sample = tmp_path / "s.ldif"
    sample.write_bytes(b"dn: dc=x\ndc: x\n\ndn: cn=a,dc=x\ndescription: a folded\n line with dn: inside\ncn: a\n\n")
    assert count_entries(sample) == 2


def test_ldapsearch_reader_yields_what_python_ldap_reads_and_keeps_the_password_out_of_argv(tmp_path, server, monkeypatch):
    """The export reads through ldapsearch (python-ldap's result parsing is its slowest part): the
    same entries, values byte for byte (binary, UTF-8, leading and trailing spaces, multi-valued),
    the same index and LDIF of the same entries as the python-ldap reader; the password only in a
    0600 file."""
    import io
    import tarfile

    import ldap

    from metabackup.sources.ldap.records import iter_entries, stored_attrs

    from metabackup.sources.ldap import ldapsearch
    from metabackup.sources.ldap.client import connect, paged_search

    ldapmodify(server, f"dn: cn=Odd Ünïcode,ou=People,{BASE}\nchangetype: add\nobjectClass: inetOrgPerson\n"
                       f"cn: Odd Ünïcode\nsn:: IGxlYWRpbmcgYW5kIHRyYWlsaW5nIA==\ndescription: one\ndescription: two\n"
                       f"description:: bGluZQpicmVhaw==\njpegPhoto:: AAECAwQFBgcICQ==\n")
    conn = get_connection("ldap_src")
    pages = list(ldapsearch.search_pages(conn, BASE, 7, tmp_path))
    assert not (tmp_path / ".ldapsearch-bind").exists()
    client = connect(conn)
    try:
        expected = {dn: stored_attrs(entry)
                    for dn, entry in paged_search(client, BASE, ldap.SCOPE_SUBTREE, "(objectClass=*)", ["*", "+"])}
    finally:
        client.unbind_s()
    got = {dn: entry for page in pages for dn, entry, _ in page}
    assert got == expected and len(got) == 28
    records = b"".join(record for page in pages for _, _, record in page)
    assert {dn: entry for dn, entry in iter_entries(io.BytesIO(records))} == expected
    assert got[f"cn=Odd Ünïcode,ou=People,{BASE}"]["sn"] == [b" leading and trailing "]

    argv, env = ldapsearch.ldapsearch_call(conn, BASE, 500, tmp_path / "pw")
    assert server.password not in " ".join(argv) and argv[argv.index("-y") + 1] == str(tmp_path / "pw")
    assert not [k for k in env if k.startswith("AIRFLOW")]
    with pytest.raises(Exception, match="does not exist on the server"):
        list(ldapsearch.search_pages(conn, f"ou=Nowhere,{BASE}", 500, tmp_path))

    def members(hour: int) -> dict[str, bytes]:
        spec = make_spec(tmp_path / str(hour))
        made = backup(spec, hour)
        with tarfile.open(tmp_path / str(hour) / "data" / "LocalBackup" / "lt_20261124000000" / f"{made['stem']}.tar.gz") as tar:
            return {m.name: tar.extractfile(m).read() for m in tar if m.name in ("ldap/base-0.ldif", "ldap/index.jsonl")}

    (tmp_path / "0").mkdir()
    (tmp_path / "1").mkdir()
    by_ldapsearch = members(0)
    monkeypatch.setattr(ldapsearch, "available", lambda: False)
    by_python_ldap = members(1)
    assert by_python_ldap["ldap/index.jsonl"] == by_ldapsearch["ldap/index.jsonl"]
    # the same entries, attributes and values; python-ldap's LDIF writer sorts and folds, ldapsearch's does not
    ldif_of = {name: {dn: {a: sorted(v) for a, v in entry.items()}
                      for dn, entry in iter_entries(io.BytesIO(found["ldap/base-0.ldif"]))}
               for name, found in (("ldapsearch", by_ldapsearch), ("python-ldap", by_python_ldap))}
    assert ldif_of["ldapsearch"] == ldif_of["python-ldap"] and len(ldif_of["ldapsearch"]) == 28
