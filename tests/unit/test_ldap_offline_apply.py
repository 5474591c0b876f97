"""The ldap in-place restore's offline replay of change records (metabackup.sources.ldap.inplace.apply_offline)."""

from __future__ import annotations

import ldap
import pytest

from metabackup.sources import RestoreError
from metabackup.sources.ldap.inplace import apply_offline
from metabackup.sources.ldap.records import Change, normalize_dn

BASE = "dc=hadoop,dc=com"


def make_state(*entries):
    return {normalize_dn(dn): (dn, {a: list(v) for a, v in entry.items()}) for dn, entry in entries}


def test_modify_add_delete_replace_increment_and_csn_stamp():
    dn = f"uid=a,ou=People,{BASE}"
    state = make_state((dn, {"uid": [b"a"], "mail": [b"x@y"], "memberUid": [b"1", b"2"], "uidNumber": [b"10"],
                             "entryCSN": [b"20261124000000.000000Z#000000#000#000000"]}))
    apply_offline(state, Change("modify", dn, modlist=[
        (ldap.MOD_ADD, "memberuid", [b"2", b"3"]),  # attribute names match whatever their case
        (ldap.MOD_DELETE, "memberUid", [b"1"]),
        (ldap.MOD_REPLACE, "mail", [b"z@y"]),
        (ldap.MOD_INCREMENT, "uidNumber", [b"5"]),
        (ldap.MOD_DELETE, "description", None),  # absent: nothing to do, as the online replay
        (ldap.MOD_REPLACE, "structuralObjectClass", [b"x"]),  # computed by the server: not replayed
    ]), "set1", stamp=b"20261125000000.000000Z#000000#000#000000")
    entry = state[normalize_dn(dn)][1]
    assert entry["memberUid"] == [b"2", b"3"] and entry["mail"] == [b"z@y"] and entry["uidNumber"] == [b"15"]
    assert "description" not in entry and "structuralObjectClass" not in entry
    assert entry["entryCSN"] == [b"20261125000000.000000Z#000000#000#000000"]
    apply_offline(state, Change("modify", dn, modlist=[(ldap.MOD_DELETE, "mail", None),
                                                       (ldap.MOD_REPLACE, "entryCSN", [b"csn-from-the-log"])]), "set2")
    assert "mail" not in state[normalize_dn(dn)][1] and state[normalize_dn(dn)][1]["entryCSN"] == [b"csn-from-the-log"]


def test_add_of_an_existing_entry_makes_it_equal_and_delete_is_idempotent():
    dn = f"uid=b,ou=People,{BASE}"
    state = make_state((dn, {"uid": [b"b"], "cn": [b"old"], "sn": [b"keep"], "objectClass": [b"person"]}))
    apply_offline(state, Change("add", dn, entry={"uid": [b"b"], "cn": [b"new"], "objectClass": [b"other"],
                                                  "entryCSN": [b"c"]}), "s")
    entry = state[normalize_dn(dn)][1]
    assert entry["cn"] == [b"new"] and entry["sn"] == [b"keep"] and entry["objectClass"] == [b"person"]
    apply_offline(state, Change("delete", dn), "s")
    apply_offline(state, Change("delete", dn), "s")  # already gone: as the online replay, nothing to do
    assert state == {}
    with pytest.raises(RestoreError, match="replaying a modify of .* from s: no such entry"):
        apply_offline(state, Change("modify", dn, modlist=[(ldap.MOD_REPLACE, "cn", [b"x"])]), "s")


def test_modrdn_moves_the_subtree_and_rewrites_the_rdn_values():
    ou = f"ou=Old,{BASE}"
    state = make_state((ou, {"ou": [b"Old"], "objectClass": [b"organizationalUnit"]}),
                       (f"uid=c,{ou}", {"uid": [b"c"]}), (f"cn=d,uid=c,{ou}", {"cn": [b"d"]}),
                       (f"ou=Target,{BASE}", {"ou": [b"Target"]}))
    apply_offline(state, Change("modrdn", ou, newrdn="ou=New", deleteoldrdn=True, newsuperior=f"ou=Target,{BASE}"), "s")
    new = f"ou=new,ou=target,{BASE}"
    assert sorted(state) == sorted([new, f"uid=c,{new}", f"cn=d,uid=c,{new}", f"ou=target,{BASE}"])
    dn, entry = state[new]
    assert dn == f"ou=New,ou=Target,{BASE}" and entry["ou"] == [b"New"]
    assert state[f"cn=d,uid=c,{new}"][0] == f"cn=d,uid=c,ou=New,ou=Target,{BASE}"
    apply_offline(state, Change("modrdn", ou, newrdn="ou=New", deleteoldrdn=True, newsuperior=None), "s")  # again: no-op
    assert len(state) == 4
    apply_offline(state, Change("modrdn", f"uid=c,{new}", newrdn="uid=e", deleteoldrdn=False, newsuperior=None), "s")
    assert state[f"uid=e,{new}"][1]["uid"] == [b"c", b"e"]
