"""Scheduled verification's test restore into a scratch instance, per kind, against real servers."""

from __future__ import annotations

import json

import pytest

from metabackup.verification import VerificationFailed, record_name, test_restore as scratch_restore, verify_sets
from test_ldap import backup, ldapmodify, make_spec, server, task_dir  # noqa: F401 - server is a fixture


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
