"""Change capture of the ``ldap`` source: the LDIF change records of an incremental.

- ``accesslog``: successful writes read from the server's slapo-accesslog database after the
  parent's ``reqStart`` watermark;
- ``digest``: a fresh export compared with the parent's per-entry digest index.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import ldap
import ldap.dn

from metabackup.fsutil import private_open
from metabackup.sources.ldap.client import paged_search
from metabackup.sources.ldap.records import (
    Change, ChangeWriter, is_under, iter_entries, normalize_dn, parse_digests, write_change,
)

# Set by the server on every write unless the replayed change carries them.
REPLAY_STAMPS = {"modifytimestamp", "modifiersname"}


# ---------------------------------------------------------------------------------------------
# Accesslog
# ---------------------------------------------------------------------------------------------
_MOD_OPS = {"+": ldap.MOD_ADD, "-": ldap.MOD_DELETE, "=": ldap.MOD_REPLACE, "#": ldap.MOD_INCREMENT}


def parse_reqmods(values: list[bytes]) -> list[tuple[int, str, list[bytes] | None]]:
    """``attr:<op>[ value]`` lines of an accesslog entry into a modlist (same attr+op merged)."""
    modlist: list[tuple[int, str, list[bytes]]] = []
    for raw in values:
        colon = raw.index(b":")
        attr, op = raw[:colon].decode(), _MOD_OPS[chr(raw[colon + 1])]
        value = raw[colon + 3:] if len(raw) > colon + 2 else None
        if modlist and modlist[-1][0] == op and modlist[-1][1] == attr:
            if value is not None:
                modlist[-1][2].append(value)
        else:
            modlist.append((op, attr, [value] if value is not None else []))
    return [(op, attr, vals or None) for op, attr, vals in modlist]


def first_value(entry: dict[str, list[bytes]], attr: str) -> str | None:
    values = entry.get(attr)
    return values[0].decode() if values else None


def accesslog_changes(entry: dict[str, list[bytes]]) -> list[Change]:
    """One accesslog entry (auditAdd/Modify/Delete/ModRDN) as change records."""
    kind, dn = first_value(entry, "reqType"), first_value(entry, "reqDN")
    mods = parse_reqmods(entry.get("reqMod", []))
    if kind == "add":
        return [Change("add", dn, entry={attr: vals for _, attr, vals in mods if vals})]
    if kind == "modify":
        return [Change("modify", dn, modlist=mods)] if mods else []
    if kind == "delete":
        return [Change("delete", dn)]
    if kind == "modrdn":
        newrdn = first_value(entry, "reqNewRDN")
        newsuperior = first_value(entry, "reqNewSuperior")
        changes = [Change("modrdn", dn, newrdn=newrdn, deleteoldrdn=first_value(entry, "reqDeleteOldRDN") == "TRUE",
                          newsuperior=newsuperior)]
        if mods:
            parent = newsuperior if newsuperior is not None else ldap.dn.dn2str(ldap.dn.str2dn(dn)[1:])
            changes.append(Change("modify", f"{newrdn},{parent}" if parent else newrdn, modlist=mods))
        return changes
    return []


def accesslog_readable(client, accesslog_base: str) -> bool:
    try:
        client.search_s(accesslog_base, ldap.SCOPE_BASE, "(objectClass=*)", ["1.1"])
        return True
    except (ldap.NO_SUCH_OBJECT, ldap.INSUFFICIENT_ACCESS):
        return False


def watermark(client, accesslog_base: str, since: str | None = None) -> str | None:
    """The newest ``reqStart`` in the accesslog (optionally only those after ``since``)."""
    newest = since
    flt = f"(reqStart>={since})" if since else "(objectClass=auditObject)"
    for _, entry in paged_search(client, accesslog_base, ldap.SCOPE_ONELEVEL, flt, ["reqStart"]):
        stamp = first_value(entry, "reqStart")
        if stamp and (newest is None or stamp > newest):
            newest = stamp
    return newest


def accesslog_incremental(client, accesslog_base: str, base_dns: list[str], workdir: Path, since: str | None,
                          position: dict[str, Any]) -> dict[str, Any]:
    """Write ``changes.ldif``: the accesslog's successful writes under ``base_dns`` after ``since``,
    in order; set the position's watermark; return counts."""
    flt = f"(&(objectClass=auditWriteObject)(reqResult=0)(reqStart>={since}))" if since else \
        "(&(objectClass=auditWriteObject)(reqResult=0))"
    records = [(e.get("reqStart", [b""])[0].decode(), e)
               for _, e in paged_search(client, accesslog_base, ldap.SCOPE_ONELEVEL, flt, ["*"])]
    records = sorted((r for r in records if since is None or r[0] > since), key=lambda r: r[0])
    bases = [normalize_dn(b) for b in base_dns]
    counts: dict[str, int] = {}
    with private_open(workdir / "changes.ldif", "w") as out:
        writer = ChangeWriter(out, cols=76)
        for _, entry in records:
            if not is_under(normalize_dn(first_value(entry, "reqDN")), bases):
                continue
            for change in accesslog_changes(entry):
                write_change(writer, change)
                counts[change.type] = counts.get(change.type, 0) + 1
    position["watermark"] = watermark(client, accesslog_base, since) if records or since else watermark(client, accesslog_base)
    if records:
        position["watermark"] = max(position["watermark"] or "", records[-1][0])
    position["index"] = False
    return {"changes": sum(counts.values()), **counts}


# ---------------------------------------------------------------------------------------------
# Digest comparison
# ---------------------------------------------------------------------------------------------
def digest_changes(workdir: Path, base_dns: list[str], parent_entries: dict[str, list[Any]]) -> dict[str, Any]:
    """Digest method: change records turning the parent's state into the fresh export."""
    current = json.loads((workdir / "index.json").read_text())["entries"]
    changed = {ndn for ndn, row in current.items() if ndn not in parent_entries or parent_entries[ndn][1] != row[1]}
    deleted = sorted((ndn for ndn in parent_entries if ndn not in current), key=lambda d: -d.count(","))
    pending: dict[str, Change] = {}
    for i, _ in enumerate(base_dns):
        with open(workdir / f"base-{i}.ldif", "rb") as stream:
            for dn, entry in iter_entries(stream):
                ndn = normalize_dn(dn)
                if ndn not in changed:
                    continue
                if ndn not in parent_entries:
                    pending[ndn] = Change("add", dn, entry=entry)
                    continue
                # only the attributes whose values changed: replaying an unchanged userPassword
                # would make a password policy record a password change that never happened
                old = parse_digests(parent_entries[ndn][1])
                new = parse_digests(current[ndn][1])
                # modifyTimestamp/modifiersName always ride along (as in accesslog records):
                # at one-second resolution they may look unchanged, and the restoring server
                # would otherwise stamp the replay time.
                mods = [(ldap.MOD_REPLACE, a, v) for a, v in entry.items()
                        if a.lower() in new and (old.get(a.lower(), ("", ""))[1] != new[a.lower()][1]
                                                 or a.lower() in REPLAY_STAMPS)]
                mods += [(ldap.MOD_DELETE, old[a][0], None) for a in sorted(set(old) - set(new))]
                pending[ndn] = Change("modify", dn, modlist=mods)
    with private_open(workdir / "changes.ldif", "w") as out:
        writer = ChangeWriter(out, cols=76)
        for ndn in deleted:
            writer.delete(parent_entries[ndn][0])
        for ndn in sorted(pending, key=lambda d: d.count(",")):
            write_change(writer, pending[ndn])
    for i, _ in enumerate(base_dns):  # an incremental keeps the index, not the data
        (workdir / f"base-{i}.ldif").unlink()
    (workdir / "config.ldif").unlink(missing_ok=True)
    return {"added": sum(1 for c in pending.values() if c.type == "add"),
            "modified": sum(1 for c in pending.values() if c.type == "modify"), "deleted": len(deleted)}
