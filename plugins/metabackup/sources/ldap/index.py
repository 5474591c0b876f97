"""The per-entry digest index of the ``ldap`` source: what a ``digest`` incremental compares a
fresh export with to find the entries (and, in them, the attributes) that changed.

Format (version 2): UTF-8 JSON lines, written and read as a stream (never one JSON document):

- a header object ``{"format": "metabackup-ldap-index", "version": 2, "type": "whole"|"delta", ...}``;
- ``["a", id, [attr, ...]]``: an attribute list, numbered 0, 1, ... in order of first use (most
  entries share a handful of them);
- ``["e", dn, id, hex]``: an entry: its DN, its compared attributes (an attribute list), and
  their digests: the first 48 bits of each attribute's SHA-256, 12 hex digits per attribute;
- ``["d", dn]``: (delta only) an entry of the base index that is gone;
- ``["end", entries, deletions]``: the counts, last (a truncated index is refused).

A ``whole`` index lists every entry.  A ``delta`` (what an incremental stores by default, the
``digest_index: delta`` option) lists only the entries added or changed since its parent and
those deleted, with a reference: its parent's set and the SHA-256 of the parent's whole index,
and the SHA-256 and entry count of its own whole index.  That whole index stays in the staging
area (:func:`cache_dir`) for the next incremental, which checks it against the reference and
against the delta before it uses it.

Sets written before version 2 hold ``ldap/index.json``: ``{"entries": {ndn: [dn, "attr=hex;..."]}}``;
they are still read (:func:`read_legacy`).  Everything read back is untrusted: checked line by
line, refused whole with :class:`IndexRefused` naming what is wrong.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from json.encoder import encode_basestring_ascii
from pathlib import Path
from typing import Any, BinaryIO

import ldap

from metabackup.sources.ldap.client import LdapSourceError
from metabackup.sources.ldap.records import DIGEST_BYTES, normalize_dn

FORMAT = "metabackup-ldap-index"
VERSION = 2
MAX_LINE = 1 << 20  # an entry line longer than this is refused
MAX_ATTRS = 4096
_ATTR = re.compile(r"^(?:[A-Za-z][A-Za-z0-9-]{0,127}|[0-9]{1,9}(?:\.[0-9]{1,9}){1,64})(?:;[A-Za-z0-9-]{1,64}){0,8}$")
_HEX = re.compile(r"^[0-9a-f]*$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_SET = re.compile(r"^[A-Za-z0-9_.:+\-]{1,200}$")

# one entry of an index as held for a comparison: (dn, attributes, digests)
Row = tuple[str, tuple[str, ...], bytes]


class IndexRefused(LdapSourceError):
    """A stored per-entry index (read back from a set or the staging area) is not valid."""


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------
class IndexWriter:
    """Write an index to the binary file ``handle`` line by line; :meth:`close` returns the
    SHA-256 of everything written."""

    def __init__(self, handle: BinaryIO, header: dict[str, Any]):
        self._handle = handle
        self._sha = hashlib.sha256()
        self._ids: dict[tuple[str, ...], int] = {}
        self._buffer: list[bytes] = []
        self._size = 0
        self.entries = 0
        self.deletions = 0
        self._put(json.dumps({"format": FORMAT, "version": VERSION, **header}, sort_keys=True).encode() + b"\n")

    def _put(self, line: bytes) -> None:
        self._buffer.append(line)
        self._size += len(line)
        if self._size >= 1 << 20:
            self._flush()

    def _flush(self) -> None:
        data = b"".join(self._buffer)
        self._sha.update(data)
        self._handle.write(data)
        self._buffer, self._size = [], 0

    def entry(self, dn: str, attrs: tuple[str, ...], digests: bytes) -> None:
        sid = self._ids.get(attrs)
        if sid is None:
            sid = self._ids[attrs] = len(self._ids)
            self._put(b'["a",%d,%s]\n' % (sid, json.dumps(list(attrs)).encode()))
        self._put(b'["e",%s,%d,"%s"]\n' % (encode_basestring_ascii(dn).encode(), sid, digests.hex().encode()))
        self.entries += 1

    def deleted(self, dn: str) -> None:
        self._put(b'["d",%s]\n' % encode_basestring_ascii(dn).encode())
        self.deletions += 1

    def close(self) -> str:
        self._put(b'["end",%d,%d]\n' % (self.entries, self.deletions))
        self._flush()
        return self._sha.hexdigest()


def whole_header() -> dict[str, Any]:
    return {"type": "whole"}


def delta_header(base_set: str, base_sha256: str, whole_sha256: str, entries: int) -> dict[str, Any]:
    return {"type": "delta", "base": {"set": base_set, "sha256": base_sha256},
            "whole": {"sha256": whole_sha256, "entries": entries}}


# ---------------------------------------------------------------------------------------------
# Reading (untrusted)
# ---------------------------------------------------------------------------------------------
@dataclass
class Index:
    """An index read back: its header, its entries by normalized DN, the deletions (delta only,
    by normalized DN), and the SHA-256 of its bytes."""

    header: dict[str, Any]
    entries: dict[str, Row] = field(default_factory=dict)
    deleted: dict[str, str] = field(default_factory=dict)
    sha256: str = ""

    @property
    def type(self) -> str:
        return self.header["type"]


def _check_header(header: Any, where: str) -> dict[str, Any]:
    def refuse(why: str) -> IndexRefused:
        return IndexRefused(f"{where}: header {why}")

    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise refuse(f"is not a {FORMAT} header")
    if header.get("version") != VERSION:
        raise refuse(f"has version {str(header.get('version'))[:20]!r}; this version reads {VERSION}")
    kind = header.get("type")
    expected = {"whole": {"format", "version", "type"}, "delta": {"format", "version", "type", "base", "whole"}}
    if kind not in expected:
        raise refuse("type must be whole or delta")
    if set(header) != expected[kind]:
        raise refuse(f"keys must be {sorted(expected[kind])}")
    if kind == "delta":
        base, whole = header["base"], header["whole"]
        if not (isinstance(base, dict) and set(base) == {"set", "sha256"} and isinstance(base["set"], str)
                and _SET.match(base["set"]) and isinstance(base["sha256"], str) and _SHA256.match(base["sha256"])):
            raise refuse("base must be {set: a set name, sha256: 64 hex digits}")
        if not (isinstance(whole, dict) and set(whole) == {"sha256", "entries"} and isinstance(whole["sha256"], str)
                and _SHA256.match(whole["sha256"]) and type(whole["entries"]) is int and whole["entries"] >= 0):
            raise refuse("whole must be {sha256: 64 hex digits, entries: a count}")
    return header


def _check_dn(value: Any, where: str) -> tuple[str, str]:
    if not isinstance(value, str) or len(value) > 16384:
        raise IndexRefused(f"{where}: a DN must be a string of at most 16384 characters")
    try:
        return value, normalize_dn(value)
    except (ldap.LDAPError, ValueError, TypeError):
        raise IndexRefused(f"{where}: {value[:200]!r} is not a DN") from None


def read_index(stream: BinaryIO, where: str) -> Index:
    """Read and check a version 2 index from the binary ``stream`` (``where`` names it in errors)."""
    sha = hashlib.sha256()
    lists: list[tuple[str, ...]] = []
    index: Index | None = None
    ended = False
    number = 0
    for number, raw in enumerate(_lines(stream, where), 1):
        sha.update(raw)
        at = f"{where}, line {number}"
        if ended:
            raise IndexRefused(f"{at}: data after the end line")
        try:
            item = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise IndexRefused(f"{at}: not JSON") from None
        if index is None:
            index = Index(_check_header(item, at))
            continue
        if not isinstance(item, list) or not item:
            raise IndexRefused(f"{at}: not an index line")
        tag = item[0]
        if tag == "e" and len(item) == 4:
            dn, ndn = _check_dn(item[1], at)
            sid, digests = item[2], item[3]
            if type(sid) is not int or not 0 <= sid < len(lists):
                raise IndexRefused(f"{at}: attribute list {str(sid)[:20]} was not defined")
            attrs = lists[sid]
            if not isinstance(digests, str) or len(digests) != 2 * DIGEST_BYTES * len(attrs) or not _HEX.match(digests):
                raise IndexRefused(f"{at}: digests must be {2 * DIGEST_BYTES} hex digits per attribute")
            if ndn in index.entries or ndn in index.deleted:
                raise IndexRefused(f"{at}: {dn[:200]!r} is listed twice")
            index.entries[ndn] = (dn, attrs, bytes.fromhex(digests))
        elif tag == "a" and len(item) == 3:
            if item[1] != len(lists):
                raise IndexRefused(f"{at}: attribute lists must be numbered 0, 1, ... in order")
            names = item[2]
            if not (isinstance(names, list) and len(names) <= MAX_ATTRS
                    and all(isinstance(n, str) and _ATTR.match(n) for n in names)):
                raise IndexRefused(f"{at}: an attribute list must hold attribute names")
            if len({n.lower() for n in names}) != len(names):
                raise IndexRefused(f"{at}: an attribute list names an attribute twice")
            lists.append(tuple(names))
        elif tag == "d" and len(item) == 2 and index.type == "delta":
            dn, ndn = _check_dn(item[1], at)
            if ndn in index.entries or ndn in index.deleted:
                raise IndexRefused(f"{at}: {dn[:200]!r} is listed twice")
            index.deleted[ndn] = dn
        elif tag == "end" and len(item) == 3:
            if item[1:] != [len(index.entries), len(index.deleted)]:
                raise IndexRefused(f"{at}: the end line counts {item[1:]!r}, the index holds "
                                   f"{len(index.entries)} entries and {len(index.deleted)} deletions")
            ended = True
        else:
            raise IndexRefused(f"{at}: not an index line")
    if index is None:
        raise IndexRefused(f"{where}: empty")
    if not ended:
        raise IndexRefused(f"{where}: no end line after line {number} (truncated)")
    index.sha256 = sha.hexdigest()
    return index


def _lines(stream: BinaryIO, where: str) -> Iterator[bytes]:
    while True:
        line = stream.readline(MAX_LINE + 1)
        if not line:
            return
        if len(line) > MAX_LINE or not line.endswith(b"\n"):
            raise IndexRefused(f"{where}: a line is longer than {MAX_LINE} bytes or unterminated")
        yield line


def read_legacy(data: bytes, where: str) -> Index:
    """A version 1 index (``ldap/index.json`` of earlier sets) as a whole :class:`Index`."""
    try:
        document = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise IndexRefused(f"{where}: not JSON") from None
    entries = document.get("entries") if isinstance(document, dict) else None
    if not isinstance(entries, dict):
        raise IndexRefused(f"{where}: no entries object")
    index = Index({"format": FORMAT, "version": 1, "type": "whole"}, sha256=hashlib.sha256(data).hexdigest())
    for key, row in entries.items():
        if not (isinstance(row, list) and len(row) == 2 and isinstance(row[1], str)):
            raise IndexRefused(f"{where}: entry {key[:200]!r} must be [dn, digests]")
        dn, ndn = _check_dn(row[0], f"{where}, entry {key[:200]!r}")
        if ndn != key:
            raise IndexRefused(f"{where}: entry {key[:200]!r} is filed under another DN than its own")
        attrs, digests = [], []
        for part in row[1].split(";") if row[1] else ():
            attr, _, digest = part.rpartition("=")
            if not _ATTR.match(attr) or len(digest) != 2 * DIGEST_BYTES or not _HEX.match(digest):
                raise IndexRefused(f"{where}: entry {key[:200]!r} has malformed digests")
            attrs.append(attr)
            digests.append(digest)
        if len({a.lower() for a in attrs}) != len(attrs):
            raise IndexRefused(f"{where}: entry {key[:200]!r} names an attribute twice")
        index.entries[ndn] = (dn, tuple(attrs), bytes.fromhex("".join(digests)))
    return index


# ---------------------------------------------------------------------------------------------
# A delta's parent state, kept in the staging area
# ---------------------------------------------------------------------------------------------
def cache_dir(workdir: Path, source: str) -> Path:
    """Where the whole indexes of a source's incrementals are kept: beside the sets' work
    directories in the staging area (a dot-directory: never taken for a work directory)."""
    return workdir.parent / f".ldap-index.{source}"


def cached_path(workdir: Path, source: str, set_stem: str) -> Path:
    return cache_dir(workdir, source) / f"{set_stem}.jsonl"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def keep_cached(workdir: Path, source: str, whole: Path, set_stem: str, keep: set[str], spare: int = 2) -> None:
    """Keep ``whole`` as the whole index of ``set_stem`` (a hard link: same file system); remove
    cached indexes other than ``keep``'s and the ``spare`` newest others."""
    from metabackup.fsutil import ensure_private_dir

    folder = ensure_private_dir(cache_dir(workdir, source))
    final = folder / f"{set_stem}.jsonl"
    tmp = folder / f".{set_stem}.jsonl.tmp"
    tmp.unlink(missing_ok=True)
    try:
        os.link(whole, tmp)
    except OSError:
        import shutil

        shutil.copyfile(whole, tmp)
        os.chmod(tmp, 0o600)
    os.replace(tmp, final)
    keep = keep | {set_stem}
    others = sorted((p for p in folder.glob("*.jsonl") if p.stem not in keep),
                    key=lambda p: p.stat().st_mtime, reverse=True)
    for stale in others[spare:]:
        stale.unlink(missing_ok=True)
