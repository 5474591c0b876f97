"""Change capture of the ``ldap`` source: the LDIF change records of an incremental.

- ``accesslog``: successful writes read from the server's slapo-accesslog database after the
  parent's ``reqStart`` watermark;
- ``digest``: a fresh export compared with the parent's per-entry digest index.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import ldap
import ldap.dn

from metabackup.fsutil import private_open
from metabackup.sources.ldap.client import paged_search
from metabackup.sources.ldap.records import DIGEST_BYTES, Change, ChangeWriter, is_under, normalize_dn, write_change

Row = tuple[str, tuple[str, ...], bytes]  # an index entry: (dn, attributes, digests)

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
class DigestComparison:
    """Digest method: change records turning the parent's state (its whole index) into the fresh
    export, found while the export runs (each entry compared as it arrives; the parent's rows are
    let go as they are matched, what is left at the end was deleted)."""

    def __init__(self, parent: dict[str, Row]):
        self.parent = parent
        self.pending: dict[str, Change] = {}
        self.changed: list[Row] = []  # the new rows of added and changed entries, for the delta index

    def see(self, dn: str, entry: dict[str, list[bytes]], attrs: tuple[str, ...], digests: bytes) -> None:
        ndn = normalize_dn(dn)
        old = self.parent.pop(ndn, None)
        if old is not None and old[1] == attrs and old[2] == digests:
            return
        self.changed.append((dn, attrs, digests))
        entry = dict(sorted(entry.items()))  # as the LDIF round trip ordered it
        if old is None:
            self.pending[ndn] = Change("add", dn, entry=entry)
            return
        # only the attributes whose values changed: replaying an unchanged userPassword
        # would make a password policy record a password change that never happened
        old_digests = _by_attr(old[1], old[2])
        new = _by_attr(attrs, digests)
        # modifyTimestamp/modifiersName always ride along (as in accesslog records):
        # at one-second resolution they may look unchanged, and the restoring server
        # would otherwise stamp the replay time.
        mods = [(ldap.MOD_REPLACE, a, v) for a, v in entry.items()
                if a.lower() in new and (old_digests.get(a.lower(), ("", b""))[1] != new[a.lower()][1]
                                         or a.lower() in REPLAY_STAMPS)]
        mods += [(ldap.MOD_DELETE, old_digests[a][0], None) for a in sorted(set(old_digests) - set(new))]
        self.pending[ndn] = Change("modify", dn, modlist=mods)

    def deleted(self) -> list[str]:
        """The DNs of the parent's entries the export did not see, deepest first."""
        return [self.parent[ndn][0] for ndn in sorted(self.parent, key=lambda d: -d.count(","))]

    def write(self, workdir: Path) -> dict[str, Any]:
        """Write ``changes.ldif``; return the counts."""
        deleted = self.deleted()
        with private_open(workdir / "changes.ldif", "w") as out:
            writer = ChangeWriter(out, cols=76)
            for dn in deleted:
                writer.delete(dn)
            for ndn in sorted(self.pending, key=lambda d: d.count(",")):
                write_change(writer, self.pending[ndn])
        return {"added": sum(1 for c in self.pending.values() if c.type == "add"),
                "modified": sum(1 for c in self.pending.values() if c.type == "modify"), "deleted": len(deleted)}


def _by_attr(attrs: tuple[str, ...], digests: bytes) -> dict[str, tuple[str, bytes]]:
    """{attr lower: (attr, its digest)}."""
    n = DIGEST_BYTES
    return {a.lower(): (a, digests[i * n:(i + 1) * n]) for i, a in enumerate(attrs)}
