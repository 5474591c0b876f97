"""LdapServer backups through Airflow DAG runs against real slapd, restored into fresh slapd."""

from __future__ import annotations

import json
import stat
import subprocess

import pendulum
import pytest

from conftest import files_spec
from harness import slapd
from metabackup.airflow.dag_factory import dags_for_dag_file
from metabackup.connections import get_connection
from metabackup.restore import restore_source
from metabackup.sources.ldap.restore import dump_state
from metabackup.spec import load_spec

pytestmark = pytest.mark.airflow
T0 = pendulum.datetime(2026, 11, 24, 3, tz="UTC")
BASE = slapd.SUFFIX


def ldapmodify(server: slapd.SlapdInstance, ldif_text: str) -> None:
    subprocess.run(["ldapmodify", "-x", "-H", server.url, "-D", server.admin_dn, "-w", server.password],
                   input=ldif_text, text=True, check=True, capture_output=True)


def ldappasswd(server: slapd.SlapdInstance, dn: str, new: str) -> None:
    subprocess.run(["ldappasswd", "-x", "-H", server.url, "-D", server.admin_dn, "-w", server.password, "-s", new, dn],
                   check=True, capture_output=True)


def state_diff(expected: dict, got: dict) -> list:
    """(dn, attribute, expected values, restored values) for every difference."""
    out = []
    for dn in sorted(set(expected) | set(got)):
        a, b = expected.get(dn), got.get(dn)
        if a is None or b is None:
            out.append((dn, "<entry>", a is not None, b is not None))
            continue
        out += [(dn, attr, a.get(attr), b.get(attr)) for attr in sorted(set(a) | set(b)) if a.get(attr) != b.get(attr)]
    return out


FIRST_CHANGES = f"""dn: uid=alice,ou=People,{BASE}
changetype: add
objectClass: inetOrgPerson
uid: alice
cn: Alice
sn: Admin
userPassword: alice-initial-pw

dn: cn=group1,ou=Groups,{BASE}
changetype: modify
add: memberUid
memberUid: alice
-
delete: memberUid
memberUid: user00001

dn: uid=user00004,ou=People,{BASE}
changetype: delete

dn: uid=user00005,ou=People,{BASE}
changetype: modrdn
newrdn: uid=user5renamed
deleteoldrdn: 1
newsuperior: ou=Services,{BASE}
"""

SECOND_CHANGES = f"""dn: uid=user00006,ou=People,{BASE}
changetype: modify
replace: mail
mail: six@new.example
-
delete: loginShell

dn: cn=group0,ou=Groups,{BASE}
changetype: modify
add: memberUid
memberUid: user5renamed

dn: ou=Temporary,{BASE}
changetype: add
objectClass: organizationalUnit
ou: Temporary

dn: uid=alice,ou=People,{BASE}
changetype: delete
"""


@pytest.fixture()
def source_server(tmp_path, monkeypatch, request):
    server = slapd.prepare(tmp_path / "slapd-src", accesslog=request.param)
    slapd.seed_offline(server, slapd.seed_ldif(users=30, groups=4))
    slapd.start(server)
    monkeypatch.setenv("AIRFLOW_CONN_LDAP_SRC", server.connection_uri())
    yield server
    server.stop()


@pytest.mark.parametrize("source_server", [True, False], ids=["accesslog", "digest"], indirect=True)
def test_ldap_chain_through_airflow_restores_every_point(airflow_project, tmp_path, source_server, monkeypatch, our_logs):
    accesslog = source_server.accesslog
    name = "ldapchain" + ("al" if accesslog else "dg")
    dag = dags_for_dag_file(airflow_project.install(files_spec(name, tmp_path, {
        "LdapServer": {"kind": "ldap", "conn_id": "ldap_src", "base_dns": [BASE],
                       "target": {"type": "LocalDir", "max_backups": 5}}})))[0]
    spec = load_spec(airflow_project.specs / f"{name}.yaml")
    conn = get_connection("ldap_src")
    states: dict[str, dict] = {}

    def backup(hour: int) -> str:
        dr = dag.test(run_after=T0.add(hours=hour))
        assert "success" in str(dr.state).lower()
        stem = f"3.1.0_LdapServer_{T0.add(hours=hour).in_timezone('Asia/Shanghai').format('YYYYMMDDHHmmss')}"
        states[stem] = dump_state(conn, [BASE])
        return stem

    backup(0)
    ldapmodify(source_server, FIRST_CHANGES)
    ldappasswd(source_server, f"uid=user00002,ou=People,{BASE}", "changed-password-2")
    backup(1)
    ldapmodify(source_server, SECOND_CHANGES)
    ldappasswd(source_server, f"uid=user00003,ou=People,{BASE}", "changed-password-3")
    backup(2)

    task_dir = tmp_path / "data" / "LocalBackup" / f"{name}_20261124100000"
    manifests = [json.loads(p.read_text()) for p in sorted(task_dir.glob("*.manifest.json"))]
    assert [m["type"] for m in manifests] == ["full", "incremental", "incremental"]
    expected_method = "accesslog" if accesslog else "digest"
    assert [m["position"]["method"] for m in manifests] == ["export", expected_method, expected_method]
    if accesslog:
        marks = [m["position"]["watermark"] for m in manifests]
        # the seed was loaded offline, so the accesslog was empty at the full
        assert marks[0] is None and marks[1] < marks[2], "the accesslog watermark advances"
    assert manifests[0]["position"]["config_saved"] is True, "cn=config is readable here and saved"
    assert manifests[0]["position"]["context_csn"][BASE]
    for archive in task_dir.glob("*.tar.gz"):
        assert stat.S_IMODE(archive.stat().st_mode) == 0o600
    # the changes changed something: the points differ from each other
    assert len({json.dumps({k: sorted(map(repr, v.items())) for k, v in s.items()}, sort_keys=True) for s in states.values()}) == 3

    for i, (stem, expected) in enumerate(states.items()):
        target = slapd.prepare(tmp_path / f"slapd-dst-{i}", accesslog=False)
        slapd.start(target)
        monkeypatch.setenv(f"AIRFLOW_CONN_LDAP_DST{i}", target.connection_uri())
        try:
            result = restore_source(spec, "LdapServer", f"ldap_dst{i}", stem)
            assert result["set"] == stem
            restored = dump_state(get_connection(f"ldap_dst{i}"), [BASE])
            assert restored == expected, f"restore of {stem} differs: {state_diff(expected, restored)}"
        finally:
            target.stop()

    logged = "\n".join(our_logs)
    assert "verified and committed" in logged, "the runs' logs were captured"
    assert "{SSHA}" not in logged, "password hashes never reach the logs"
    assert source_server.password not in logged
