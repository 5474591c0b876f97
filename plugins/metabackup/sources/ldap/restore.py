"""Restore of the ``ldap`` source: the destination, its suffix checks, the full loaded online
(adds with the Relax Rules control) or offline (``slapadd``), the incrementals' change records
replayed idempotently; and :func:`dump_state`, what a restore must reproduce."""

from __future__ import annotations

import contextlib
import io
import logging
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import ldap
import ldif
from ldap.controls.simple import RelaxRulesControl

from metabackup.archive import open_tar_stream
from metabackup.connections import ConnectionInfo
from metabackup.fsutil import child_env, private_open
from metabackup.manifest import Manifest
from metabackup.sources.base import RestoreError
from metabackup.sources.ldap.client import connect, ldap_message, naming_contexts, paged_search, server_url
from metabackup.sources.ldap.records import (
    CHANGES_MEMBER, MEMBER_DIR, NOT_COMPARED, VOLATILE_ATTRS, Change, is_under, iter_entries, normalize_dn, parent_dn,
    read_changes,
)

log = logging.getLogger(__package__)  # one logger for the whole ldap source

RELAX = [RelaxRulesControl(criticality=True)]
# Computed by the server when an entry is added over LDAP (the Relax Rules control cannot set them).
SERVER_COMPUTED_ON_ADD = VOLATILE_ATTRS | {"structuralobjectclass"}


@dataclass
class LdapDestination:
    """An empty directory server to restore into.

    Online (default): adds over LDAP as ``conn`` (the server's rootdn, which may use the Relax
    Rules control to set operational attributes).  Offline: with ``slapd_conf`` the full is loaded
    by ``slapadd`` into the stopped local server, then ``start_server`` starts it for the
    incrementals.
    """

    conn: ConnectionInfo
    slapd_conf: str | None = None
    start_server: Callable[[], None] | None = None


# ---------------------------------------------------------------------------------------------
# Suffix checks
# ---------------------------------------------------------------------------------------------
def unserved_bases(bases: list[str], contexts: list[str]) -> list[str]:
    """The base DNs that are neither a naming context nor below one."""
    served = [normalize_dn(c) for c in contexts]
    return [b for b in bases if not is_under(normalize_dn(b), served)]


def config_suffixes(slapd_conf: str) -> list[str]:
    """The ``suffix`` directives of a slapd.conf (its databases' naming contexts)."""
    suffixes = []
    with open(slapd_conf, encoding="utf-8") as handle:
        for line in handle:
            words = line.strip().split(None, 1)
            if len(words) == 2 and words[0].lower() == "suffix":
                suffixes.append(words[1].strip().strip('"'))
    return suffixes


def _refuse_other_suffix(where: str, contexts: list[str], bases: list[str], set_name: str) -> None:
    """Refuse, before anything is written, a destination that does not serve every base DN."""
    missing = unserved_bases(bases, contexts) if contexts else []
    if missing:
        raise RestoreError(
            f"refusing to restore {set_name}: {where} serves the naming contexts {', '.join(contexts)}, but the set "
            f"needs the base DNs {', '.join(bases)} ({', '.join(missing)} not served); nothing was written. Restore into "
            f"an empty server with suffix {missing[0]} (or a suffix above it), e.g. a throwaway one from a checkout of "
            f"this project: PYTHONPATH=plugins:. python -m harness.slapd start DIR --suffix {missing[0]}")


def slapadd_call(slapd_conf: str, base: str, ldif_path: str | Path) -> tuple[list[str], dict[str, str]]:
    """argv and environment of the ``slapadd`` that loads one base offline: the child gets only the
    allow-listed environment (never the worker's Airflow connections and variables)."""
    return ["slapadd", "-q", "-f", slapd_conf, "-b", base, "-l", str(ldif_path)], child_env()


# ---------------------------------------------------------------------------------------------
# The chain
# ---------------------------------------------------------------------------------------------
def restore_chain(chain: list[Manifest], open_archive: Callable[[str], BinaryIO], dest: LdapDestination) -> dict[str, Any]:
    full = chain[0]
    bases = full.position["base_dns"]
    where = f"LDAP connection {dest.conn.conn_id!r} ({server_url(dest.conn)})"
    client = None
    if dest.slapd_conf:
        _refuse_other_suffix(f"the slapd configuration {dest.slapd_conf} (for {where})", config_suffixes(dest.slapd_conf),
                             bases, full.set)
    else:
        client = connect(dest.conn)
    try:
        if client is not None:
            _refuse_other_suffix(where, naming_contexts(client), bases, full.set)
            for base in bases:
                with contextlib.suppress(ldap.NO_SUCH_OBJECT):
                    client.search_s(base, ldap.SCOPE_BASE, "(objectClass=*)", ["1.1"])
                    raise RestoreError(f"{where}: the destination already holds {base}; restore into an empty "
                                       "directory server")
        scratch = Path(tempfile.mkdtemp(prefix="metabackup-ldap-restore-"))
        try:
            with open_archive(full.set) as stream, open_tar_stream(stream) as tar:
                for member in tar:
                    if member.name.startswith(f"{MEMBER_DIR}/base-"):
                        target = scratch / Path(member.name).name
                        with private_open(target, "wb") as out:
                            shutil.copyfileobj(tar.extractfile(member), out, 1 << 20)
            ordered = [scratch / f"base-{i}.ordered.ldif" for i in range(len(bases))]
            full_entries = 0
            for i in range(len(bases)):
                with private_open(ordered[i], "w") as out:
                    full_entries += parents_first(scratch / f"base-{i}.ldif", ldif.LDIFWriter(out, cols=76))
            stats = {"full_entries": 0, "changes_applied": 0, "changes_already_applied": 0}
            if dest.slapd_conf:
                for i, base in enumerate(bases):
                    argv, env = slapadd_call(dest.slapd_conf, base, ordered[i])
                    result = subprocess.run(argv, capture_output=True, text=True, env=env)
                    if result.returncode != 0:
                        raise RestoreError(f"slapadd of {base} failed: {result.stderr.strip()[-1500:]}")
                stats["full_entries"] = full_entries
                if dest.start_server:
                    dest.start_server()
                client = connect(dest.conn)
            else:
                for path in ordered:
                    with open(path, "rb") as stream:
                        for dn, entry in iter_entries(stream):
                            try:
                                client.add_ext_s(dn, [(a, v) for a, v in entry.items()
                                                      if a.lower() not in SERVER_COMPUTED_ON_ADD], serverctrls=RELAX)
                            except ldap.LDAPError as exc:
                                raise RestoreError(
                                    f"{where}: adding {dn} of {full.set} failed ({ldap_message(exc)}) after "
                                    f"{stats['full_entries']} entries; the server is partly restored: restore again "
                                    "into an empty server") from None
                            stats["full_entries"] += 1
            for manifest in chain[1:]:
                with open_archive(manifest.set) as stream, open_tar_stream(stream) as tar:
                    for member in tar:
                        if member.name == CHANGES_MEMBER:
                            data = tar.extractfile(member).read()
                            for change in read_changes(io.BytesIO(data)):
                                try:
                                    applied = apply_change(client, change)
                                except ldap.LDAPError as exc:
                                    raise RestoreError(
                                        f"{where}: replaying {change.type} of {change.dn} from {manifest.set} failed "
                                        f"({ldap_message(exc)}); the server is partly restored (the chain before "
                                        f"{manifest.set} and part of it)") from None
                                stats["changes_applied" if applied else "changes_already_applied"] += 1
                log.info("applied %s", manifest.set)
            return stats
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    finally:
        if client is not None:
            client.unbind_s()


def parents_first(path: Path, writer: ldif.LDIFWriter) -> int:
    """Rewrite the LDIF at ``path`` so every entry follows its parent (a server returns no such
    order after subtree moves).  Two streaming passes; only entries that come before their parent
    are held in memory.  Returns the number of entries."""
    with open(path, "rb") as stream:
        known = {normalize_dn(dn) for dn, _ in iter_entries(stream)}
    written: set[str] = set()
    deferred: list[tuple[str, dict[str, list[bytes]]]] = []
    with open(path, "rb") as stream:
        for dn, entry in iter_entries(stream):
            parent = parent_dn(dn)
            if parent not in known or parent in written:
                writer.unparse(dn, entry)
                written.add(normalize_dn(dn))
            else:
                deferred.append((dn, entry))
    while deferred:
        still = []
        for dn, entry in deferred:
            if parent_dn(dn) in written:
                writer.unparse(dn, entry)
                written.add(normalize_dn(dn))
            else:
                still.append((dn, entry))
        if len(still) == len(deferred):
            raise RestoreError(f"{len(still)} entries have no parent in the backup, e.g. {still[0][0]}")
        deferred = still
    return len(written)


# ---------------------------------------------------------------------------------------------
# Replaying change records
# ---------------------------------------------------------------------------------------------
def apply_change(client, change: Change) -> bool:
    """Apply one change record; True if it changed the server, False if it was already applied."""
    try:
        if change.type == "add":
            client.add_ext_s(change.dn, [(a, v) for a, v in change.entry.items() if a.lower() not in SERVER_COMPUTED_ON_ADD],
                             serverctrls=RELAX)
        elif change.type == "delete":
            client.delete_ext_s(change.dn)
        elif change.type == "modrdn":
            client.rename_s(change.dn, change.newrdn, change.newsuperior, int(change.deleteoldrdn))
        else:
            return _apply_modify(client, change)
        return True
    except ldap.ALREADY_EXISTS:
        if change.type == "add":  # already there (added during the parent's export): make it equal
            client.modify_ext_s(change.dn, [(ldap.MOD_REPLACE, a, v) for a, v in change.entry.items()
                                            if a.lower() not in VOLATILE_ATTRS | {"objectclass", "structuralobjectclass"}],
                                serverctrls=RELAX)
        return False
    except ldap.NO_SUCH_OBJECT:
        if change.type in ("delete", "modrdn"):
            return False
        raise


def _apply_modify(client, change: Change) -> bool:
    modlist = [(op, a, v) for op, a, v in change.modlist if a.lower() not in SERVER_COMPUTED_ON_ADD]
    if not modlist:
        return False
    try:
        client.modify_ext_s(change.dn, modlist, serverctrls=RELAX)
        return True
    except (ldap.TYPE_OR_VALUE_EXISTS, ldap.NO_SUCH_ATTRIBUTE):
        changed = False  # part of it was applied already: apply operation by operation
        for op in modlist:
            with contextlib.suppress(ldap.TYPE_OR_VALUE_EXISTS, ldap.NO_SUCH_ATTRIBUTE):
                client.modify_ext_s(change.dn, [op], serverctrls=RELAX)
                changed = True
        return changed


# ---------------------------------------------------------------------------------------------
# What a restore must reproduce
# ---------------------------------------------------------------------------------------------
def dump_state(conn: ConnectionInfo, bases: list[str]) -> dict[str, dict[str, list[bytes]]]:
    """Every entry under ``bases`` as {normalized DN: {attr: sorted values}}, volatile attributes
    left out: what a restore must reproduce."""
    client = connect(conn)
    try:
        state = {}
        for base in bases:
            with contextlib.suppress(ldap.NO_SUCH_OBJECT):  # an absent base holds no entries
                for dn, entry in paged_search(client, base, ldap.SCOPE_SUBTREE, "(objectClass=*)", ["*", "+"]):
                    state[normalize_dn(dn)] = {a.lower(): sorted(v) for a, v in entry.items()
                                               if a.lower() not in NOT_COMPARED}
        return state
    finally:
        client.unbind_s()
