"""The ``ldap`` source kind: an LDAP directory (OpenLDAP's LdapServer), over the LDAP protocol.

Full: every entry under each base DN, read with paged results, written as LDIF by python-ldap's
LDIF writer, with the operational attributes a faithful restore needs (entryUUID,
create/modifyTimestamp, creators/modifiersName, entryCSN, ppolicy state) and binary values
intact; ``cn=config`` too when the bind identity can read it.

Incremental: LDIF change records (add / modify / delete / modrdn), in order, since the parent:
- ``accesslog``: read from the server's slapo-accesslog database (successful writes after the
  parent's ``reqStart`` watermark);
- ``digest``: a fresh export compared with the parent's per-entry digest index (changed entries
  become replace/delete modifications, new ones adds, vanished ones deletes; a rename appears as
  delete + add, keeping its entryUUID).
The manifest's ``position`` records the method, the watermark and each base's contextCSN.

Restore: load the full into an empty server (online adds with the Relax Rules control, or
offline ``slapadd`` when the server is local and stopped), then apply each incremental's change
records in order.  Replay is idempotent, so changes made while a full was exported (and thus
possibly in both the full and the next incremental) apply cleanly.

Modules, one concern each:
- :mod:`.client`: the LDAP protocol client (server URL, bind, error messages, paged search);
- :mod:`.records`: LDIF records, the archive's members, DNs and per-entry digests;
- :mod:`.capture`: change capture for incrementals (accesslog, digest comparison);
- :mod:`.kind`: the source kind (:class:`LdapSource`);
- :mod:`.restore`: restore into a directory server, and :func:`dump_state`.
This package re-exports the names other modules use, so they import ``metabackup.sources.ldap``.
"""

from __future__ import annotations

from metabackup.sources.ldap.capture import REPLAY_STAMPS, accesslog_changes, parse_reqmods
from metabackup.sources.ldap.client import (
    LdapSourceError, connect, ldap_message, naming_contexts, paged_search, server_url,
)
from metabackup.sources.ldap.kind import PROGRESS_EVERY, LdapSource
from metabackup.sources.ldap.records import (
    CHANGES_MEMBER, CONFIG_MEMBER, DYNAMIC_ATTRS, INDEX_MEMBER, MEMBER_DIR, NOT_COMPARED, VOLATILE_ATTRS, Change,
    ChangeWriter, RecordReader, attribute_digests, base_member, iter_entries, normalize_dn, parent_dn, read_changes,
    stored_attrs,
)
from metabackup.sources.ldap.restore import (
    RELAX, SERVER_COMPUTED_ON_ADD, LdapDestination, apply_change, config_suffixes, dump_state, parents_first,
    restore_chain, slapadd_call, unserved_bases,
)

__all__ = [
    "CHANGES_MEMBER", "CONFIG_MEMBER", "DYNAMIC_ATTRS", "INDEX_MEMBER", "MEMBER_DIR", "NOT_COMPARED", "PROGRESS_EVERY",
    "RELAX", "REPLAY_STAMPS", "SERVER_COMPUTED_ON_ADD", "VOLATILE_ATTRS",
    "Change", "ChangeWriter", "LdapDestination", "LdapSource", "LdapSourceError", "RecordReader",
    "accesslog_changes", "apply_change", "attribute_digests", "base_member", "config_suffixes", "connect",
    "dump_state", "iter_entries", "ldap_message", "naming_contexts", "normalize_dn", "paged_search", "parent_dn",
    "parents_first", "parse_reqmods", "read_changes", "restore_chain", "server_url", "slapadd_call", "stored_attrs",
    "unserved_bases",
]
