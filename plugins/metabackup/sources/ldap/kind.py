"""The ``ldap`` source kind: check, whether an incremental can be taken, snapshot (a full export
or an incremental's change records), archive members, and the restore entry point."""

from __future__ import annotations

import contextlib
import json
import logging
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import ldap
import ldif

from metabackup.archive import open_tar_stream
from metabackup.connections import ConnectionInfo, get_connection
from metabackup.fsutil import FILE_MODE, private_open, write_private
from metabackup.manifest import FULL, Manifest
from metabackup.progress import Progress
from metabackup.sources.base import ArchiveResult, RestoreError, SourceEngine
from metabackup.sources.ldap.capture import DigestComparison, accesslog_incremental, accesslog_readable, watermark
from metabackup.sources.ldap import ldapsearch, slapcat
from metabackup.sources.ldap.client import LdapSourceError, connect, search_pages
from metabackup.sources.ldap.index import (
    Index, IndexRefused, IndexWriter, cached_path, delta_header, keep_cached, read_index, read_legacy, whole_header,
)
from metabackup.sources.ldap.records import (
    CHANGES_MEMBER, CONFIG_MEMBER, INDEX_MEMBER, LEGACY_INDEX_MEMBER, base_member, entry_digests,
    entry_ldif, stored_attrs,
)
from metabackup.sources.ldap.restore import LdapDestination, restore_chain

log = logging.getLogger(__package__)  # one logger for the whole ldap source

if TYPE_CHECKING:  # the run's decision, only in annotations (the plug-in stays light)
    from metabackup.policy import Decision

INDEX_FILE = "index.jsonl"  # in the work directory: the index member of the set


class LdapSource(SourceEngine):

    @property
    def conn(self) -> ConnectionInfo:
        return get_connection(self.options.conn_id)

    def tool_versions(self) -> dict[str, str]:
        return {"python-ldap": ldap.__version__}

    @property
    def bases(self) -> list[str]:
        return list(self.options.base_dns)

    @property
    def _accesslog_base(self) -> str:
        return self.options.accesslog_base

    def _accesslog_readable(self, client) -> bool:
        if self.options.change_method == "digest":
            return False
        return accesslog_readable(client, self._accesslog_base)

    def _method_for(self, client, parent: Manifest) -> tuple[str | None, str]:
        """(method, why) for an incremental on ``parent``; method None when impossible."""
        pos = parent.position
        wanted = self.options.change_method
        if wanted != "digest" and pos.get("accesslog") and self._accesslog_readable(client):
            mark = pos.get("watermark")
            if mark is None:
                return "accesslog", "accesslog (it was empty at the parent)"
            found = client.search_s(self._accesslog_base, ldap.SCOPE_ONELEVEL, f"(reqStart={mark})", ["1.1"])
            if found:
                return "accesslog", f"accesslog since {mark}"
            if wanted == "accesslog":
                return None, f"the accesslog no longer holds the parent's watermark {mark} (purged)"
        elif wanted == "accesslog":
            return None, "the accesslog is not readable"
        if pos.get("index"):
            return "digest", "comparison with the parent's per-entry digest index"
        return None, "the accesslog cannot be used and the parent has no per-entry index"

    def check(self) -> None:
        if self.options.method == "slapcat":
            for base in self.bases:
                slapcat.check_mdb(self.options.slapd_conf, self.options.slapd_config_dir, base)
        client = connect(self.conn)
        try:
            for base in self.bases:
                try:
                    client.search_s(base, ldap.SCOPE_BASE, "(objectClass=*)", ["1.1"])
                except ldap.NO_SUCH_OBJECT:
                    raise LdapSourceError(f"LDAP connection {self.conn.conn_id!r}: base DN {base!r} does not exist") from None
        finally:
            client.unbind_s()

    def incremental_blocker(self, parent: Manifest) -> str | None:
        client = connect(self.conn)
        try:
            method, why = self._method_for(client, parent)
            return None if method else why
        finally:
            client.unbind_s()

    def snapshot(self, workdir: Path, decision: Decision, parent: Manifest | None,
                 open_parent: Callable[[], BinaryIO] | None) -> dict[str, Any]:
        client = connect(self.conn)
        try:
            accesslog = self._accesslog_readable(client)
            if decision.type == FULL:
                method, why = "export", "full export"
            else:
                method, why = self._method_for(client, parent)
                if method is None:
                    raise LdapSourceError(f"cannot take an incremental on {parent.set}: {why}; run with force_full")
            position: dict[str, Any] = {"method": method, "method_detail": why, "accesslog": accesslog,
                                        "base_dns": self.bases}
            if method == "accesslog":
                summary = accesslog_incremental(client, self._accesslog_base, self.bases, workdir,
                                                parent.position.get("watermark"), position)
            else:
                # The watermark is taken before the export: changes made during it are replayed
                # again by the next incremental, which is harmless (replay is idempotent).
                position["watermark"] = watermark(client, self._accesslog_base) if accesslog else None
                if method == "export" and self.options.method == "slapcat":
                    summary = self._slapcat(client, workdir, position)
                else:
                    parent_index = self._parent_index(workdir, parent, open_parent) if method == "digest" else None
                    summary = self._export(client, workdir, position, parent, parent_index)
            position["context_csn"] = self._context_csns(client)
            write_private(workdir / "ldap-position.json", json.dumps(position))
            log.info("%s: %s backup by %s: %s", self.source.name, decision.type, why, summary)
            return summary
        finally:
            client.unbind_s()

    def _context_csns(self, client) -> dict[str, list[str]]:
        out = {}
        for base in self.bases:
            with contextlib.suppress(ldap.NO_SUCH_OBJECT):
                [(_, entry)] = client.search_s(base, ldap.SCOPE_BASE, "(objectClass=*)", ["contextCSN"])
                out[base] = sorted(v.decode() for v in entry.get("contextCSN", []))
        return out

    def _export(self, client, workdir: Path, position: dict[str, Any], parent: Manifest | None = None,
                parent_index: Index | None = None) -> dict[str, Any]:
        """Write each base as LDIF (a full) or the change records since the parent (a digest
        incremental, comparing each entry with ``parent_index`` as it arrives), and the per-entry
        digest index; return counts.  Streams: a page of entries at a time."""
        compare = DigestComparison(parent_index.entries) if parent_index is not None else None
        meter = Progress(log, f"{self.source.name}: export", unit="entries")
        page_size = self.options.page_size
        whole = workdir / ("index-whole.jsonl" if compare is not None else INDEX_FILE)
        reader = "ldapsearch" if ldapsearch.available() else "python-ldap"
        position["reader"] = reader
        with private_open(whole, "wb") as raw:
            index = IndexWriter(raw, whole_header())
            for i, base in enumerate(self.bases):
                ldif_out = private_open(workdir / f"base-{i}.ldif", "wb") if compare is None else contextlib.nullcontext()
                with ldif_out as out:
                    try:
                        pages = (ldapsearch.search_pages(self.conn, base, page_size, workdir) if reader == "ldapsearch"
                                 else _with_ldif(search_pages(client, base, ldap.SCOPE_SUBTREE, "(objectClass=*)",
                                                              ["*", "+"], page_size)))
                        for page in pages:
                            chunk = []
                            for dn, entry, record in page:
                                attrs, digests = entry_digests(entry)
                                index.entry(dn, attrs, digests)
                                if compare is None:
                                    chunk.append(record)
                                else:
                                    compare.see(dn, entry, attrs, digests)
                            if out is not None:
                                out.write(b"".join(chunk))
                            meter.add(len(page))
                    except ldap.NO_SUCH_OBJECT:
                        raise LdapSourceError(f"base DN {base!r} does not exist on the server") from None
            whole_sha = index.close()
        meter.done()
        entries = index.entries
        position["entries"] = entries
        position["index"] = True
        position["index_sha256"] = whole_sha
        config = self._export_config(client, workdir)
        position["config_saved"] = config
        summary: dict[str, Any] = {"entries": entries, "config_saved": config}
        if compare is not None:
            summary.update(compare.write(workdir))
            (workdir / "config.ldif").unlink(missing_ok=True)  # an incremental keeps the index, not the data
            if self.options.digest_index == "delta":
                with private_open(workdir / INDEX_FILE, "wb") as raw:
                    delta = IndexWriter(raw, delta_header(parent.set, parent_index.sha256, whole_sha, entries))
                    for row in compare.changed:
                        delta.entry(*row)
                    for dn in compare.deleted():
                        delta.deleted(dn)
                    delta.close()
                position["index_form"] = "delta"
                keep_cached(workdir, self.source.name, whole, workdir.name, keep={parent.set})
                whole.unlink()
            else:
                whole.replace(workdir / INDEX_FILE)
                position["index_form"] = "whole"
        else:
            position["index_form"] = "whole"
        return summary

    def _slapcat(self, client, workdir: Path, position: dict[str, Any]) -> dict[str, Any]:
        """A full by ``slapcat`` from the local server's database files: the LDIF as slapcat writes
        it, and no per-entry index (incrementals on it use the accesslog)."""
        entries = 0
        for i, base in enumerate(self.bases):
            entries += slapcat.export(self.options.slapd_conf, self.options.slapd_config_dir, base, workdir / f"base-{i}.ldif")
        log.info("%s: export by slapcat: %d entries", self.source.name, entries)
        position.update(entries=entries, index=False, reader="slapcat")
        config = self._export_config(client, workdir)
        position["config_saved"] = config
        return {"entries": entries, "config_saved": config}

    def _parent_index(self, workdir: Path, parent: Manifest, open_parent: Callable[[], BinaryIO]) -> Index:
        """The parent's whole index: from its archive, or (a delta there) from the staging area,
        checked against the delta's reference and content."""
        with open_parent() as stream:
            stored = read_set_index(stream, parent.set)
        if stored.type == "whole":
            return stored
        expected = stored.header["whole"]
        path = cached_path(workdir, self.source.name, parent.set)
        if not path.is_file():
            raise LdapSourceError(
                f"{parent.set} stores its per-entry index as changes to {stored.header['base']['set']}; its whole index "
                f"is kept in the staging area of the worker that took it ({path}), which is not here. Run with "
                "force_full (or share staging_dir between workers, or set the source's digest_index: whole)")
        with open(path, "rb") as handle:
            whole = read_index(handle, f"{path}")
        if whole.type != "whole" or whole.sha256 != expected["sha256"] or len(whole.entries) != expected["entries"]:
            raise IndexRefused(f"{path} is not the whole index {parent.set} refers to (SHA-256 or entry count "
                               "differ); run with force_full")
        for ndn, row in stored.entries.items():
            if whole.entries.get(ndn) != row:
                raise IndexRefused(f"{path} does not hold the entry {row[0][:200]!r} as {parent.set} recorded it; "
                                   "run with force_full")
        if any(ndn in whole.entries for ndn in stored.deleted):
            raise IndexRefused(f"{path} holds entries {parent.set} recorded as deleted; run with force_full")
        whole.sha256 = expected["sha256"]
        return whole

    def _export_config(self, client, workdir: Path) -> bool:
        if not self.options.include_config:
            return False
        try:
            # the config backend is small and does not page
            results = client.search_s("cn=config", ldap.SCOPE_SUBTREE, "(objectClass=*)", ["*", "+"])
        except (ldap.NO_SUCH_OBJECT, ldap.INSUFFICIENT_ACCESS, ldap.UNWILLING_TO_PERFORM):
            results = []
        if not results:
            log.info("cn=config is not readable with this connection; not saved")
            return False
        with private_open(workdir / "config.ldif", "w") as out:
            writer = ldif.LDIFWriter(out, cols=76)
            for dn, entry in results:
                writer.unparse(dn, stored_attrs(entry))
        return True

    def write_archive(self, workdir: Path, tar: tarfile.TarFile, set_stem: str) -> ArchiveResult:
        position = json.loads((workdir / "ldap-position.json").read_text())
        members = [(workdir / f"base-{i}.ldif", base_member(i)) for i in range(len(self.bases))]
        members += [(workdir / "config.ldif", CONFIG_MEMBER), (workdir / "changes.ldif", CHANGES_MEMBER),
                    (workdir / INDEX_FILE, INDEX_MEMBER)]  # the index last
        content: dict[str, Any] = {}
        for path, name in members:
            if path.exists():
                info = tar.gettarinfo(str(path), arcname=name)
                info.mode, info.uid, info.gid, info.uname, info.gname = FILE_MODE, 0, 0, "", ""
                with open(path, "rb") as handle:
                    tar.addfile(info, handle)
                content[name] = info.size
        return ArchiveResult(content={"members": content, "entries": position.get("entries")}, position=position)

    @classmethod
    def restore(cls, chain: list[Manifest], open_archive: Callable[[str], BinaryIO], dest: Any) -> dict[str, Any]:
        dest = dest if isinstance(dest, LdapDestination) else LdapDestination(conn=get_connection(str(dest)))
        return restore_chain(chain, open_archive, dest)


def _with_ldif(pages):
    """python-ldap's pages as the export takes them: (dn, stored attributes, LDIF record)."""
    for page in pages:
        out = []
        for dn, entry in page:
            entry = stored_attrs(entry)
            out.append((dn, entry, entry_ldif(dn, entry)))
        yield out


def read_set_index(stream: BinaryIO, set_name: str) -> Index:
    """The per-entry digest index of a set's archive (its last member), checked: version 2
    (``ldap/index.jsonl``) or an earlier set's ``ldap/index.json``."""
    with open_tar_stream(stream) as tar:
        for member in tar:
            if member.name == INDEX_MEMBER and member.isfile():
                return read_index(tar.extractfile(member), f"{set_name}: {INDEX_MEMBER}")
            if member.name == LEGACY_INDEX_MEMBER and member.isfile():
                return read_legacy(tar.extractfile(member).read(), f"{set_name}: {LEGACY_INDEX_MEMBER}")
    raise RestoreError(f"archive of {set_name} has no {INDEX_MEMBER}: it is not an ldap backup with an index, or it "
                       "is truncated")
