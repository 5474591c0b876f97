"""In-place restore of the ldap kind against a real slapd (harness.slapd): slapadd into a fresh
database directory beside the live one, swap, start, validate; and the rollback when the start fails."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import ldap
import pendulum
import pytest
import yaml

from conftest import REPO, backup_once
from harness import slapd
from metabackup.connections import get_connection
from metabackup.inplace import restore_in_place
from metabackup.restore import verified_plan
from metabackup.sources import RestoreError
from metabackup.sources.ldap.restore import dump_state
from metabackup.spec import SpecError, load_spec

T0 = pendulum.datetime(2026, 11, 24, 3, tz="UTC")
BASE = slapd.SUFFIX

# The service's commands (argv lists, no shell).  A slapd run from its slapd.conf: the harness's own
# service-stop / service-start / service-status DIR (harness.slapd.service_argv), the start wrapped
# so that it fails once, removing it, while the marker file exists.
_FAIL_ONCE = ("import subprocess, sys; from pathlib import Path\n"
              "m = Path(sys.argv[1])\n"
              "if m.exists():\n"
              "    m.unlink(); print('start refused once (test marker)'); sys.exit(1)\n"
              "sys.exit(subprocess.call(sys.argv[2:]))")

# A slapd run from a cn=config directory (DIR/slapd.d, slapd -F), which the harness does not start:
# Python one-liners; status exits 0 while slapd runs, 3 when it does not (a zombie counts as stopped).
_PRELUDE = (f"import os, sys, signal, time; sys.path[:0] = {[str(REPO / 'plugins'), str(REPO)]!r}; "
            "from pathlib import Path; from harness import slapd\n"
            "def alive(d):\n"
            "    p = Path(d) / 'slapd.pid'\n"
            "    for _ in range(100):  # slapd may be writing its pid file\n"
            "        try: pid = int(p.read_text().split()[0]); break\n"
            "        except FileNotFoundError: return 0\n"
            "        except (OSError, ValueError, IndexError): time.sleep(0.02)\n"
            "    else: return 0\n"
            "    try: state = Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()[0]\n"
            "    except OSError: return 0\n"
            "    return 0 if state in 'ZX' else pid\n")
_STATUS = "sys.exit(0 if alive(D) else 3)"
_STOP = ("pid = alive(D)\n"
         "if pid:\n"
         "    try: os.kill(pid, signal.SIGTERM)\n"
         "    except ProcessLookupError: pass\n"
         "    end = time.monotonic() + 20\n"
         "    while alive(D) and time.monotonic() < end: time.sleep(0.05)\n"
         "sys.exit(3 if alive(D) else 0)")
_START_F = ("import socket, subprocess\n"
            "i = slapd.load(D)\n"
            "subprocess.run(['slapd', '-F', D + '/slapd.d', '-h', i.url + '/'], check=True)\n"
            "end = time.monotonic() + 20\n"
            "while time.monotonic() < end:\n"
            "    with socket.socket() as s:\n"
            "        if s.connect_ex(('127.0.0.1', i.port)) == 0: sys.exit(0)\n"
            "    time.sleep(0.05)\n"
            "sys.exit(1)")


def service_argv(directory: Path, marker: Path, config_dir: bool = False) -> dict[str, list[str]]:
    if config_dir:
        head = f"{_PRELUDE}D = {str(directory)!r}\n"
        argv = {name: [sys.executable, "-c", head + body] for name, body in
                (("stop", _STOP), ("start", _START_F), ("status", _STATUS))}
    else:
        argv = slapd.service_argv(directory)
    argv["start"] = [sys.executable, "-c", _FAIL_ONCE, str(marker), *argv["start"]]
    return argv


def stop_any(directory: Path) -> None:
    """Stop the slapd of DIR however it was started (by its pid file)."""
    subprocess.run(service_argv(directory, directory / "none", config_dir=True)["stop"], check=False, timeout=60)


@pytest.fixture()
def server(tmp_path, monkeypatch):
    instance = slapd.prepare(tmp_path / "src")
    slapd.seed_offline(instance, slapd.seed_ldif(users=15, groups=3))
    slapd.start(instance)
    monkeypatch.setenv("AIRFLOW_CONN_LDAP_SRC", instance.connection_uri())
    yield instance
    stop_any(Path(instance.directory))


def make_spec(tmp_path: Path, server, config_dir: bool = False, **options):
    service = {**service_argv(Path(server.directory), tmp_path / "fail-once", config_dir),
               "data_dirs": [str(Path(server.directory) / "data"), str(Path(server.directory) / "accesslog")],
               "owner": "root", "timeout": 60}
    config = ({"slapd_config_dir": str(Path(server.directory) / "slapd.d")} if config_dir
              else {"slapd_conf": str(server.conf)})
    path = tmp_path / "lt.yaml"
    path.write_text(yaml.safe_dump({
        "name": "lt", "created": "2026-11-24T00:00:00Z", "cluster_version": "3.1.0", "type": "manual",
        "data_path": str(tmp_path / "data"),
        "sources": {"LdapServer": {"kind": "ldap", "conn_id": "ldap_src", "base_dns": [BASE],
                                   **config, **options, "service": service,
                                   "target": {"type": "LocalDir", "max_backups": 5}}}}))
    return load_spec(path)


def ldapmodify(server, text: str) -> None:
    subprocess.run(["ldapmodify", "-x", "-H", server.url, "-D", server.admin_dn, "-w", server.password],
                   input=text, text=True, check=True, capture_output=True)


def state(server) -> dict:
    return dump_state(get_connection("ldap_src"), [BASE])


def entry_changes(server, tag: str) -> None:
    """An add, a modify (with a new value), a rename and a delete."""
    ldapmodify(server, f"dn: uid={tag},ou=People,{BASE}\nchangetype: add\nobjectClass: inetOrgPerson\nuid: {tag}\n"
                       f"cn: {tag}\nsn: {tag}\n\n"
                       f"dn: cn=group0,ou=Groups,{BASE}\nchangetype: modify\nadd: memberUid\nmemberUid: {tag}\n-\n"
                       f"replace: description\ndescription: changed by {tag}\n\n"
                       f"dn: uid=user00003,ou=People,{BASE}\nchangetype: modrdn\nnewrdn: uid={tag}-renamed\n"
                       f"deleteoldrdn: 1\n\n"
                       f"dn: uid=user00004,ou=People,{BASE}\nchangetype: delete\n")


@pytest.mark.parametrize("change_method", ["accesslog", "digest"])
def test_in_place_restores_the_chain_into_the_live_server(tmp_path, server, change_method):
    spec = make_spec(tmp_path, server, change_method=change_method)
    backup_once(spec, "LdapServer", T0)
    entry_changes(server, "inc1")
    last = backup_once(spec, "LdapServer", T0.add(hours=1))
    assert last["type"] == "incremental"
    expected = state(server)
    assert f"uid=inc1-renamed,ou=people,{BASE}" in expected and f"uid=user00004,ou=people,{BASE}" not in expected
    # the live directory moves on after the backup
    ldapmodify(server, f"dn: uid=user00005,ou=People,{BASE}\nchangetype: delete\n\n"
                       f"dn: uid=user00006,ou=People,{BASE}\nchangetype: modify\nreplace: mail\nmail: x@y\n\n"
                       f"dn: uid=late,ou=People,{BASE}\nchangetype: add\nobjectClass: account\nuid: late\n")
    assert state(server) != expected
    data = Path(server.directory) / "data"
    before_inode = data.stat().st_ino
    stamp = "20261124050000"
    report = restore_in_place(verified_plan(spec, "LdapServer"), stamp)
    after = state(server)  # the same connection: the same URL and port
    assert after == expected
    assert report["set"] == last["stem"] and report["downtime_s"] > 0
    assert report["validation"]["entries"] == {BASE: len(expected)} and report["validation"]["sampled"] > 0
    assert report["rebuilt"]["changes_replayed"] >= 4
    # a digest chain's replay is checked against the sets' per-entry digests before the stop
    assert report["rebuilt"]["checked_against"].startswith(
        "the per-entry index of" if change_method == "digest" else "nothing (")
    previous = Path(f"{data}.pre-restore-{stamp}")
    assert previous.is_dir() and previous.stat().st_ino == before_inode and (previous / "data.mdb").is_file()
    assert data.stat().st_ino != before_inode and (data / "data.mdb").is_file()
    assert not list(data.parent.glob(".metabackup-restore-*"))  # the scratch directory is gone
    journal = json.loads(Path(report["journal"]).read_text())
    assert journal["step"] == "done"


def serve_from_config_dir(server, tmp_path: Path) -> Path:
    """Convert the server's slapd.conf to DIR/slapd.d and restart it from there (slapd -F)."""
    directory = Path(server.directory)
    (directory / "slapd.d").mkdir(mode=0o700)
    # slaptest converts (and then exits 1 as its own database check fails beside the running server; -u would not write)
    subprocess.run(["slaptest", "-f", str(server.conf), "-F", str(directory / "slapd.d")], capture_output=True)
    assert (directory / "slapd.d" / "cn=config.ldif").is_file()
    subprocess.run(slapd.service_argv(directory)["stop"], check=True, timeout=60)  # the harness started it
    subprocess.run(service_argv(directory, tmp_path / "none", True)["start"], check=True, timeout=60)
    return directory / "slapd.d"


def config_files(config_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(config_dir)): p.read_bytes() for p in config_dir.rglob("*.ldif")}


def served_indexes(server) -> list[bytes]:
    client = ldap.initialize(server.url)
    client.simple_bind_s(server.admin_dn, server.password)  # the harness lets it read cn=config
    [(_, entry)] = client.search_s("olcDatabase={2}mdb,cn=config", ldap.SCOPE_BASE, "(objectClass=*)", ["olcDbIndex"])
    client.unbind_s()
    return sorted(entry["olcDbIndex"])


def add_index(server) -> None:
    subprocess.run(["ldapmodify", "-x", "-H", server.url, "-D", slapd.CONFIG_ADMIN_DN, "-w", server.password],
                   input="dn: olcDatabase={2}mdb,cn=config\nchangetype: modify\nadd: olcDbIndex\nolcDbIndex: mail eq\n",
                   text=True, check=True, capture_output=True)


def test_in_place_through_a_cn_config_directory(tmp_path, server):
    """slapd run from slapd.d (cn=config): slapadd goes through a copy of that directory whose
    olcDbDirectory points at the fresh database (its CRC line dropped); the live slapd.d is untouched."""
    directory = Path(server.directory)
    spec = make_spec(tmp_path, server, config_dir=True, change_method="digest")
    before_config = config_files(serve_from_config_dir(server, tmp_path))
    backup_once(spec, "LdapServer", T0)
    entry_changes(server, "viaconfig")
    backup_once(spec, "LdapServer", T0.add(hours=1))
    expected = state(server)
    ldapmodify(server, f"dn: uid=user00007,ou=People,{BASE}\nchangetype: delete\n")
    stamp = "20261124080000"
    report = restore_in_place(verified_plan(spec, "LdapServer"), stamp)
    assert state(server) == expected
    assert report["validation"]["entries"] == {BASE: len(expected)}
    assert Path(f"{directory / 'data'}.pre-restore-{stamp}").is_dir()
    assert config_files(directory / "slapd.d") == before_config


def test_restore_config_swaps_the_cn_config_directory_too(tmp_path, server):
    config_dir = serve_from_config_dir(server, tmp_path)
    spec = make_spec(tmp_path, server, config_dir=True, restore_config=True)
    assert [path for _, path in spec.source("LdapServer").live_dirs()] == [
        f"{server.directory}/data", f"{server.directory}/accesslog", str(config_dir)]
    indexes = served_indexes(server)
    saved_config = config_files(config_dir)
    backup_once(spec, "LdapServer", T0)
    expected = state(server)
    add_index(server)  # the configuration moves on after the backup, and the data too
    ldapmodify(server, f"dn: uid=user00008,ou=People,{BASE}\nchangetype: delete\n")
    assert served_indexes(server) == sorted([*indexes, b"mail eq"])
    changed_config = config_files(config_dir)
    stamp = "20261124090000"
    report = restore_in_place(verified_plan(spec, "LdapServer"), stamp)
    assert state(server) == expected
    assert served_indexes(server) == indexes
    assert report["validation"]["config_checked"] == f"{len(report['rebuilt']['config']['sample'])} entries equal"
    assert config_files(Path(f"{config_dir}.pre-restore-{stamp}")) == changed_config
    restored = config_files(config_dir)
    assert sorted(restored) == sorted(saved_config) and restored != changed_config
    assert [d["live"] for d in report["in_place"]] == [f"{server.directory}/data", f"{server.directory}/accesslog",
                                                       str(config_dir)]


def test_restore_config_rolls_back_both_directories(tmp_path, server):
    config_dir = serve_from_config_dir(server, tmp_path)
    spec = make_spec(tmp_path, server, config_dir=True, restore_config=True)
    backup_once(spec, "LdapServer", T0)
    add_index(server)
    ldapmodify(server, f"dn: uid=user00008,ou=People,{BASE}\nchangetype: delete\n")
    before, before_config, indexes = state(server), config_files(config_dir), served_indexes(server)
    (tmp_path / "fail-once").write_text("")
    stamp = "20261124100000"
    with pytest.raises(RestoreError, match=r"(?s)failed at step start.*Rolled back"):
        restore_in_place(verified_plan(spec, "LdapServer"), stamp)
    assert state(server) == before and served_indexes(server) == indexes
    assert config_files(config_dir) == before_config
    assert Path(f"{config_dir}.failed-restore-{stamp}").is_dir()


def test_a_failed_start_rolls_back_to_the_previous_data(tmp_path, server):
    spec = make_spec(tmp_path, server)
    backup_once(spec, "LdapServer", T0)
    ldapmodify(server, f"dn: uid=user00001,ou=People,{BASE}\nchangetype: delete\n\n"
                       f"dn: uid=after-backup,ou=People,{BASE}\nchangetype: add\nobjectClass: account\n"
                       "uid: after-backup\n")
    before = state(server)
    data = Path(server.directory) / "data"
    before_inode = data.stat().st_ino
    (tmp_path / "fail-once").write_text("")
    stamp = "20261124060000"
    with pytest.raises(RestoreError) as failure:
        restore_in_place(verified_plan(spec, "LdapServer"), stamp)
    message = str(failure.value)
    assert "failed at step start" in message and "Rolled back" in message, message
    assert not (tmp_path / "fail-once").exists()  # the start did fail once
    assert data.stat().st_ino == before_inode
    assert state(server) == before  # serving, and unchanged
    assert Path(f"{data}.failed-restore-{stamp}").is_dir() and not Path(f"{data}.pre-restore-{stamp}").exists()


def test_a_data_dir_that_is_not_the_databases_directory_is_refused_before_the_stop(tmp_path, server):
    spec = make_spec(tmp_path, server)
    backup_once(spec, "LdapServer", T0)
    wrong = Path(server.directory) / "accesslog"  # a real directory, but another database's
    source = spec.source("LdapServer")
    object.__setattr__(source, "service", source.service.model_copy(update={"data_dirs": (str(wrong),)}))
    before = state(server)
    with pytest.raises(RestoreError, match=r"service.data_dirs\[0\] is .*/accesslog, but .*slapd.conf keeps the "
                                           r"database of dc=hadoop,dc=com in .*/data"):
        restore_in_place(verified_plan(spec, "LdapServer"), "20261124070000")
    # the accesslog database not named: its log would outlive the writes the restore undoes
    data_only = (str(Path(server.directory) / "data"),)
    object.__setattr__(source, "service", source.service.model_copy(update={"data_dirs": data_only}))
    with pytest.raises(RestoreError, match=r"has an accesslog database \(cn=accesslog, in .*/accesslog\); add that "
                                           r"directory to sources.LdapServer.service.data_dirs"):
        restore_in_place(verified_plan(spec, "LdapServer"), "20261124070001")
    assert state(server) == before  # never stopped
    assert not list(wrong.parent.glob("*.pre-restore-*")) and not list(wrong.parent.glob("*.restored-*"))


def test_the_spec_names_what_an_in_place_ldap_restore_needs(tmp_path, server):
    path = tmp_path / "bad.yaml"
    service = {**service_argv(Path(server.directory), tmp_path / "m"),
               "data_dirs": ["/var/lib/ldap/a", "/var/lib/ldap/b", "/var/lib/ldap/c"]}
    path.write_text(yaml.safe_dump({
        "name": "lt", "created": "2026-11-24T00:00:00Z", "cluster_version": "3.1.0", "type": "manual",
        "sources": {"LdapServer": {"kind": "ldap", "conn_id": "c", "base_dns": [BASE], "service": service,
                                   "target": {"type": "LocalDir"}}}}))
    with pytest.raises(SpecError) as failure:
        load_spec(path)
    rows = {fld: why for _, fld, why in failure.value.problems}
    assert "one slapd database directory per base DN" in rows["sources.LdapServer.service.data_dirs"]
    assert "is required for an in-place restore" in rows["sources.LdapServer.slapd_conf"]


def test_the_whole_in_place_restore_takes_a_safety_backup_that_restores_back(tmp_path, server):
    """restore_source_in_place (the CLI's restore --in-place): the lease, the verified chain, the
    safety backup of the live state, the restore; then the safety set restores the later state back."""
    from metabackup.inplace import restore_source_in_place

    spec = make_spec(tmp_path, server)
    first = backup_once(spec, "LdapServer", T0)["stem"]
    expected = state(server)
    ldapmodify(server, f"dn: uid=user00009,ou=People,{BASE}\nchangetype: delete\n")
    later = state(server)
    report = restore_source_in_place(spec, "LdapServer", first)
    assert report["set"] == first and state(server) == expected
    safety = report["safety_backup"]["set"]
    assert safety != first
    restore_in_place(verified_plan(spec, "LdapServer", safety), "20261124110000")
    assert state(server) == later


def test_a_base_dn_below_its_databases_suffix_is_refused(tmp_path, server):
    spec = make_spec(tmp_path, server, base_dns=[f"ou=People,{BASE}"])
    backup_once(spec, "LdapServer", T0)
    before = state(server)
    with pytest.raises(RestoreError, match=r"ou=People,dc=hadoop,dc=com is below the suffix dc=hadoop,dc=com of its "
                                           r"database .*would lose the entries outside"):
        restore_in_place(verified_plan(spec, "LdapServer"), "20261124120000")
    assert state(server) == before


def test_after_an_in_place_restore_the_next_backup_is_no_accesslog_replay(tmp_path, server):
    """The old accesslog holds the writes the restore undid: an accesslog incremental on the
    safety backup would describe a state the directory no longer has.  The restore empties the
    log (the old one kept beside it), so the next backup compares digests instead, and its chain
    restores the directory as it is."""
    from metabackup.inplace import restore_source_in_place

    spec = make_spec(tmp_path, server)  # change_method auto: accesslog when it can
    first = backup_once(spec, "LdapServer", T0)["stem"]
    entry_changes(server, "undone")
    second = backup_once(spec, "LdapServer", T0.add(hours=1))
    assert second["manifest"].position["method"] == "accesslog"
    report = restore_source_in_place(spec, "LdapServer", first)
    log_dir = f"{server.directory}/accesslog"
    assert report["rebuilt"]["accesslog"] == f"{log_dir} replaced by an empty log"
    assert (Path(f"{log_dir}.pre-restore-{report['journal'].rsplit('-', 1)[1][:-5]}") / "data.mdb").is_file()
    ldapmodify(server, f"dn: uid=user00010,ou=People,{BASE}\nchangetype: modify\nreplace: mail\nmail: new@x\n")
    now = state(server)
    third = backup_once(spec, "LdapServer", T0.add(hours=2))
    assert third["type"] == "incremental" and third["manifest"].position["method"] == "digest"
    ldapmodify(server, f"dn: uid=user00011,ou=People,{BASE}\nchangetype: delete\n")
    restore_in_place(verified_plan(spec, "LdapServer", third["stem"]), "20261124130000")
    assert state(server) == now


def test_an_offline_replay_that_misses_the_sets_digests_is_refused_before_the_stop(tmp_path, server, monkeypatch):
    """Fault injection in our own replay (one change record lost): the computed state no longer
    matches the per-entry index the digest incremental recorded; refused, the service never stopped."""
    from metabackup.sources.ldap import inplace

    spec = make_spec(tmp_path, server, change_method="digest")
    backup_once(spec, "LdapServer", T0)
    entry_changes(server, "lost")
    backup_once(spec, "LdapServer", T0.add(hours=1))
    before = state(server)
    pid = Path(server.directory, "slapd.pid").read_text().split()[0]
    real = inplace.apply_offline

    def lossy(state_, change, set_name, stamp=None):
        if change.type != "add":
            real(state_, change, set_name, stamp)

    monkeypatch.setattr(inplace, "apply_offline", lossy)
    with pytest.raises(RestoreError, match=r"differs from the per-entry index of .* nothing was stopped"):
        restore_in_place(verified_plan(spec, "LdapServer"), "20261124140000")
    assert Path(server.directory, "slapd.pid").read_text().split()[0] == pid and state(server) == before
    assert not list(Path(server.directory).glob("*.pre-restore-*"))
