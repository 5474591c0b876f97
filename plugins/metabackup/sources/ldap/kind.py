"""The ``ldap`` source kind: check, whether an incremental can be taken, snapshot (a full export
or an incremental's change records), archive members, and the restore entry point."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import ldap
import ldif

from metabackup.archive import MissingMember, read_json_member
from metabackup.connections import ConnectionInfo, get_connection
from metabackup.fsutil import FILE_MODE, atomic_writer, private_open, write_private
from metabackup.manifest import FULL, Manifest
from metabackup.sources.base import ArchiveResult, RestoreError, SourceEngine
from metabackup.sources.ldap.capture import accesslog_incremental, accesslog_readable, digest_changes, watermark
from metabackup.sources.ldap.client import LdapSourceError, connect, paged_search
from metabackup.sources.ldap.records import (
    CHANGES_MEMBER, CONFIG_MEMBER, INDEX_MEMBER, attribute_digests, base_member, normalize_dn, stored_attrs,
)
from metabackup.sources.ldap.restore import LdapDestination, restore_chain

log = logging.getLogger(__package__)  # one logger for the whole ldap source

if TYPE_CHECKING:  # the run's decision, only in annotations (the plug-in stays light)
    from metabackup.policy import Decision

PROGRESS_EVERY = 10_000


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
                summary = self._export(client, workdir, position)
                if method == "digest":
                    with open_parent() as stream:
                        parent_index = _read_index(stream)
                    summary.update(digest_changes(workdir, self.bases, parent_index["entries"]))
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

    def _export(self, client, workdir: Path, position: dict[str, Any]) -> dict[str, Any]:
        """Write each base as LDIF and the per-entry digest index; return counts."""
        index: dict[str, list[Any]] = {}
        page = self.options.page_size
        for i, base in enumerate(self.bases):
            count = 0
            with private_open(workdir / f"base-{i}.ldif", "w") as out:
                writer = ldif.LDIFWriter(out, cols=76)
                try:
                    for dn, entry in paged_search(client, base, ldap.SCOPE_SUBTREE, "(objectClass=*)", ["*", "+"], page):
                        entry = stored_attrs(entry)
                        writer.unparse(dn, entry)
                        index[normalize_dn(dn)] = [dn, attribute_digests(entry)]
                        count += 1
                        if count % PROGRESS_EVERY == 0:
                            log.info("exported %d entries under %s", count, base)
                except ldap.NO_SUCH_OBJECT:
                    raise LdapSourceError(f"base DN {base!r} does not exist on the server") from None
            log.info("exported %d entries under %s", count, base)
        position["entries"] = len(index)
        position["index"] = True
        config = self._export_config(client, workdir)
        position["config_saved"] = config
        with atomic_writer(workdir / "index.json") as raw:  # 0600, whole or absent (a retry rewrites it)
            out = io.TextIOWrapper(raw, encoding="utf-8")
            json.dump({"entries": index}, out)
            out.flush()
            out.detach()  # atomic_writer fsyncs and closes the file itself
        return {"entries": len(index), "config_saved": config}

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
                    (workdir / "index.json", INDEX_MEMBER)]  # the index last
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


def _read_index(stream: BinaryIO) -> dict[str, Any]:
    """The per-entry digest index of a set's archive (its last member)."""
    try:
        return read_json_member(stream, INDEX_MEMBER)
    except MissingMember:
        raise RestoreError(f"archive has no {INDEX_MEMBER}: it is not an ldap backup with an index, or it is "
                           "truncated") from None
