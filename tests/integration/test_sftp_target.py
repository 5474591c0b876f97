"""The SFTP target against a real OpenSSH server (``harness.sshd``): host keys, a dropped link, a
whole backup and restore through the core."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import threading
import time

import pendulum
import pytest

from conftest import backup_once, files_spec, staged_run, write_spec
from harness import sshd
from metabackup import pipeline
from metabackup.fsutil import child_env
from metabackup.naming import is_temp_name
from metabackup.restore import restore_source
from metabackup.sources.files import iter_tree
from metabackup.targets import TargetError
from metabackup.targets.sftp import SFTPConfig

T0 = pendulum.datetime(2026, 11, 24, 3, tz="UTC")
TD = "sftp_20261124000000"
CONN = "sftp_it"


@pytest.fixture()
def server(tmp_path, monkeypatch):
    """A fresh sshd whose host key is pinned in the connection ``sftp_it``."""
    instance = sshd.start(sshd.prepare(tmp_path / "sshd"))
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN.upper()}", instance.connection_uri())
    yield instance
    instance.stop()


@pytest.fixture()
def raw(server):
    """The test's own SFTP session to the server (not the target's)."""
    session = server.sftp_session()
    yield session
    session.get_channel().get_transport().close()


def sftp_target(server, **fields) -> SFTPConfig:
    return SFTPConfig(type="SFTP", conn_id=CONN, path=f"{server.root}/backups", **fields)


def tree(sftp, top: str) -> set[str]:
    """Every path below ``top`` on the server."""
    found, todo = set(), [top]
    while todo:
        directory = todo.pop()
        try:
            entries = sftp.listdir_attr(directory)
        except FileNotFoundError:
            continue
        for entry in entries:
            path = f"{directory}/{entry.filename}"
            found.add(path)
            if stat.S_ISDIR(entry.st_mode):
                todo.append(path)
    return found


def logins(server) -> int:
    """Password logins sshd accepted so far (its log, LogLevel VERBOSE)."""
    with open(os.path.join(server.directory, "sshd.log"), errors="replace") as log:
        return log.read().count("Accepted password")


# ---------------------------------------------------------------------------------------------
# (a) host keys: verified, never accepted blindly
# ---------------------------------------------------------------------------------------------
def test_a_changed_host_key_is_refused_with_the_remedy_and_nothing_is_written(server, raw, tmp_path):
    config = sftp_target(server)
    target = config.open()
    target.put_bytes(b"first", TD, "a.json")  # the pinned key: works
    before, accepted = tree(raw, server.root), logins(server)
    target.close()

    sshd.new_host_key(server)  # the same address now shows another key; the connection still pins the old one
    with pytest.raises(TargetError) as refused:
        config.open().put_bytes(b"second", TD, "b.json")
    message = str(refused.value)
    assert f"sftp://{CONN}{server.root}/backups" in message
    assert f"connection {CONN!r}" in message and f"127.0.0.1:{server.port}" in message
    assert "is ssh-ed25519 SHA256:" in message and "not the expected" in message
    assert "host_key" in message and "known_hosts" in message, "the message says how to fix it"
    raw2 = server.sftp_session()  # (the restart ended the old session)
    try:
        assert tree(raw2, server.root) == before, "nothing was written"
    finally:
        raw2.get_channel().get_transport().close()
    assert logins(server) == accepted + 1, "the target never logged in (the one new login is the test's own)"


def test_no_host_key_anywhere_is_refused_before_connecting(server, monkeypatch):
    connection = server.connection()
    del connection["extra"]["host_key"]
    connection["extra"]["no_host_key_check"] = True  # the provider's own switch cannot turn the check off
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN.upper()}", json.dumps(connection))
    accepted = logins(server)
    with pytest.raises(TargetError) as refused:
        sftp_target(server).open().ensure_writable(TD)
    message = str(refused.value)
    assert f"connection {CONN!r} (127.0.0.1:{server.port}) has no host_key" in message
    assert "no known_hosts file" in message and "never accepted" in message
    assert logins(server) == accepted


def test_a_known_hosts_file_is_used_and_a_stale_one_refused(server, tmp_path, monkeypatch):
    connection = server.connection()
    del connection["extra"]["host_key"]
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN.upper()}", json.dumps(connection))
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{server.port} {server.host_key}\n")
    config = sftp_target(server, known_hosts=str(known))
    target = config.open()
    target.put_bytes(b"via known_hosts", TD, "k.json")
    assert target.list_names(TD) == ["k.json"]
    target.close()

    sshd.new_host_key(server)
    with pytest.raises(TargetError, match=r"is ssh-ed25519 SHA256:\S+, not the expected ssh-ed25519 SHA256:"):
        config.open().list_names(TD)
    other = tmp_path / "other_known_hosts"
    other.write_text(f"[127.0.0.1]:{server.port + 1} {server.host_key}\n")  # another port's entry only
    with pytest.raises(TargetError, match=rf"the known_hosts file {other} has no key for \[127.0.0.1\]:{server.port}"):
        sftp_target(server, known_hosts=str(other)).open().list_names(TD)


def test_a_pinned_key_of_another_type_is_refused(server, tmp_path, monkeypatch):
    """The server has an ed25519 key only; the connection pins an ECDSA key (of another host)."""
    subprocess.run(["ssh-keygen", "-q", "-t", "ecdsa", "-N", "", "-f", str(tmp_path / "other")], check=True,
                   env=child_env())
    connection = server.connection()
    connection["extra"]["host_key"] = " ".join((tmp_path / "other.pub").read_text().split()[:2])
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN.upper()}", json.dumps(connection))
    accepted = logins(server)
    with pytest.raises(TargetError) as refused:
        sftp_target(server).open().list_names(TD)
    message = str(refused.value)  # (paramiko names both keys; an older one says only that the type is unknown)
    assert "ecdsa-sha2-nistp256 SHA256:" in message and "refusing to log in" in message, message
    assert logins(server) == accepted


# ---------------------------------------------------------------------------------------------
# (b) the link dropped mid-upload
# ---------------------------------------------------------------------------------------------
def test_a_connection_dropped_mid_upload_leaves_no_visible_set_and_the_retry_commits_it(server, tmp_path):
    src = tmp_path / "conf"
    src.mkdir()
    with open(src / "big.bin", "wb") as handle:  # incompressible: the archive is as big
        for _ in range(64):
            handle.write(os.urandom(1 << 20))
    spec = write_spec(tmp_path, files_spec("drop", tmp_path, {
        "OMS": {"kind": "files", "paths": [str(src)],
                "target": {"type": "SFTP", "conn_id": CONN, "path": f"{server.root}/backups"}}}))
    run = staged_run(spec, "OMS", T0)
    task_dir = f"{server.root}/backups/{run.task_dir}"

    failure: list[BaseException] = []
    uploader = threading.Thread(target=lambda: _capture(failure, pipeline.upload, run))
    watcher = server.sftp_session()
    uploader.start()
    deadline, killed = time.monotonic() + 60, []
    while uploader.is_alive() and time.monotonic() < deadline and not killed:
        if any(is_temp_name(n) for n in watcher.listdir(task_dir)):
            killed = sshd.kill_sessions(server)  # every session, the watcher's too: the link is gone
        else:
            time.sleep(0.002)
    uploader.join(60)
    assert killed, "inconclusive: the upload ended before its partial file showed"
    assert len(failure) == 1 and isinstance(failure[0], TargetError), failure
    assert f"sftp://{CONN}{server.root}/backups" in str(failure[0])

    assert run.target.list_names(run.task_dir) == [], "no visible archive or manifest"
    # Airflow's retry runs the step again: it sweeps the partial and commits the set
    assert pipeline.upload(run)["uploaded"] is True
    pipeline.verify(run)
    pipeline.retention(run)
    names = run.target.list_names(run.task_dir)
    assert names == sorted([run.name.archive, run.name.manifest])
    check = server.sftp_session()
    try:
        assert sorted(check.listdir(task_dir)) == names, "no partial left behind"
        with check.open(f"{task_dir}/{run.name.archive}", "rb") as handle:
            handle.prefetch()
            stored = hashlib.sha256(handle.read()).hexdigest()
    finally:
        check.get_channel().get_transport().close()
    assert stored == run.catalog().get(run.name.stem).archive.sha256


def _capture(failures: list, step, *args) -> None:
    try:
        step(*args)
    except BaseException as exc:  # noqa: BLE001 - handed to the test thread
        failures.append(exc)


# ---------------------------------------------------------------------------------------------
# (c) a whole backup and restore through the core
# ---------------------------------------------------------------------------------------------
def test_a_files_source_backs_up_to_sftp_and_restores_equal(server, tmp_path, every_log):
    src = tmp_path / "etc" / "oms"
    (src / "conf.d").mkdir(parents=True)
    (src / "server.xml").write_text("<server port='1'/>\n")
    (src / "conf.d" / "a.properties").write_text("a=1\n")
    (src / "keystore.bin").write_bytes(os.urandom(300_000))
    os.chmod(src / "keystore.bin", 0o600)
    os.symlink("server.xml", src / "current.xml")
    spec = write_spec(tmp_path, files_spec("viasftp", tmp_path, {
        "OMS": {"kind": "files", "paths": [str(src)],
                "target": {"type": "SFTP", "conn_id": CONN, "path": f"{server.root}/backups", "max_backups": 3}}}))
    assert spec.source("OMS").target.uri(spec.task_dir) == f"sftp://{CONN}{server.root}/backups/{spec.task_dir}"
    full = backup_once(spec, "OMS", T0)
    first = dict(iter_tree(src))
    (src / "server.xml").write_text("<server port='2'/>\n")
    (src / "conf.d" / "b.properties").write_text("b=2\n")
    incremental = backup_once(spec, "OMS", T0.add(hours=1))
    assert (full["type"], incremental["type"]) == ("full", "incremental")

    for made, state in ((full, first), (incremental, dict(iter_tree(src)))):
        dest = tmp_path / f"restore-{made['stem']}"
        result = restore_source(spec, "OMS", dest, made["stem"])
        assert result["set"] == made["stem"]
        assert dict(iter_tree(dest / str(src).lstrip("/"))) == state
    assert every_log and not [m for m in every_log if server.password in m], "the password was logged"


@pytest.fixture()
def every_log():
    """Every log message of the test, paramiko's and the providers' too (a handler on the root logger)."""
    import logging

    records: list[str] = []
    handler = logging.Handler(level=logging.DEBUG)
    handler.emit = lambda record: records.append(record.getMessage())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield records
    root.removeHandler(handler)
    root.setLevel(level)
