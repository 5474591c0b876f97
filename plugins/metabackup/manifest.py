"""The manifest: the JSON record beside each archive that makes a backup set a backup set.

It is written last, atomically, after the archive has been uploaded and its checksum verified at
the target, so a set without a manifest is by definition incomplete and is never in the catalog.

A manifest read back from a target is untrusted input: whoever can write to the target can write
one.  :meth:`Manifest.from_json` therefore validates it by allow-list (field names and types, the
set-name grammar, ``archive.name == set + .tar.gz``, hex digests, times, and per kind the
position fields a restore uses), and :func:`check_belongs` checks it against the spec (task,
task directory, source).  What a restore does is decided by the spec (kind, live paths), never
by a manifest.
"""

from __future__ import annotations

import hashlib
import json
import platform
import re
import reprlib
from dataclasses import asdict, dataclass, field, fields
from typing import Any, BinaryIO

import pendulum

from metabackup import __version__
from metabackup.errors import MetabackupError
from metabackup.naming import ARCHIVE_SUFFIX, SetName

FORMAT_VERSION = 1
FULL = "full"
INCREMENTAL = "incremental"


@dataclass(frozen=True)
class ArchiveInfo:
    name: str
    size: int
    sha256: str


@dataclass(frozen=True)
class Manifest:
    set: str  # the set stem: <version>_<source>_<execution time>
    task: str
    task_dir: str
    source: str
    kind: str
    type: str  # full | incremental
    parent: str | None  # stem of the parent set (incrementals only)
    chain_root: str  # stem of the full this chain starts from (itself for a full)
    cluster_version: str
    executed_at: str  # the run's execution time, ISO-8601 UTC
    started_at: str
    finished_at: str
    archive: ArchiveInfo
    content: dict[str, Any]  # kind-specific counts: entries, bytes, ...
    position: dict[str, Any]  # the source position covered (file index digest, later LSN/CSN/txid)
    reason: str  # why this type was chosen
    tools: dict[str, str] = field(default_factory=dict)
    format: int = FORMAT_VERSION

    def to_json(self) -> bytes:
        return (json.dumps(asdict(self), indent=2, sort_keys=True) + "\n").encode()

    @classmethod
    def from_json(cls, data: bytes | str, origin: str = "<manifest>") -> Manifest:
        """Parse and validate a manifest; raise :class:`ManifestError` naming ``origin`` and the field."""
        if len(data) > MAX_MANIFEST_BYTES:
            raise ManifestError(f"{origin}: not a valid backup manifest: {len(data)} bytes, more than "
                                f"{MAX_MANIFEST_BYTES}")
        try:
            raw = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ManifestError(f"{origin}: not a valid backup manifest: not JSON ({exc})") from None
        try:
            return cls(**_validated(raw))
        except _Invalid as exc:
            raise ManifestError(f"{origin}: not a valid backup manifest: {exc}") from None

    @property
    def is_full(self) -> bool:
        return self.type == FULL


MAX_MANIFEST_BYTES = 1 << 20
KINDS = ("files", "ldap", "postgres", "oms", "namenode")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_HEX32 = re.compile(r"^[0-9a-f]{32}$")
_TASK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,63}$")
_TASK_DIR = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,63}_\d{14}$")
_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.\-]{0,31}$")
_LSN = re.compile(r"^[0-9A-F]{1,8}/[0-9A-F]{1,8}$")
_WAL_SEGMENT = re.compile(r"^[0-9A-F]{24}$")
_EDITS = re.compile(r"^edits_\d{19}-\d{19}$")
_OFFSET = re.compile(r"(Z|[+-]\d\d:?\d\d)\Z")
_short = reprlib.Repr()
_short.maxstring, _short.maxother, _short.maxlist, _short.maxdict = 60, 60, 4, 4


class ManifestError(MetabackupError, ValueError):
    """A manifest read from a target is malformed or does not belong where it was found."""


class _Invalid(Exception):
    pass


def _need(ok: bool, fld: str, value: Any, what: str) -> None:
    if not ok:
        raise _Invalid(f"{fld}: {what}, got {_short.repr(value)}")


def _str(raw: dict, fld: str, pattern: re.Pattern | None = None, what: str = "a string", optional: bool = False) -> Any:
    value = raw.get(fld.rsplit(".", 1)[-1])
    if optional and value is None:
        return None
    _need(isinstance(value, str) and (pattern is None or pattern.fullmatch(value) is not None), fld, value, what)
    return value


def _int(raw: dict, fld: str, optional: bool = False, low: int = 0) -> Any:
    value = raw.get(fld.rsplit(".", 1)[-1])
    if optional and value is None:
        return None
    _need(isinstance(value, int) and not isinstance(value, bool) and value >= low, fld, value,
          f"a whole number >= {low}")
    return value


def _time(raw: dict, fld: str, optional: bool = False) -> str | None:
    if optional and raw.get(fld.rsplit(".", 1)[-1]) is None:
        return None
    value = _str(raw, fld, what="an ISO-8601 time with offset")
    try:
        parsed = pendulum.parse(value)
    except Exception:
        parsed = None
    _need(isinstance(parsed, pendulum.DateTime) and _OFFSET.search(value) is not None, fld, value,
          "an ISO-8601 time with offset")
    return value


def _dict(raw: dict, fld: str) -> dict:
    value = raw.get(fld.rsplit(".", 1)[-1])
    _need(isinstance(value, dict) and all(isinstance(k, str) for k in value), fld, value, "a JSON object")
    return value


def _names(raw: dict, fld: str, pattern: re.Pattern, what: str, optional: bool = False) -> None:
    value = raw.get(fld.rsplit(".", 1)[-1])
    if optional and value is None:
        return
    _need(isinstance(value, list) and all(isinstance(v, str) and pattern.fullmatch(v) for v in value), fld, value,
          f"a list of {what}")


def _files_position(pos: dict, at: str) -> None:
    _str(pos, f"{at}.file_index_sha256", _HEX64, "a SHA-256 in hex")
    _int(pos, f"{at}.entries")
    _need(isinstance(pos.get("paths"), list) and all(isinstance(p, str) and p.startswith("/") for p in pos["paths"]),
          f"{at}.paths", pos.get("paths"), "a list of absolute paths")


def _postgres_position(pos: dict, at: str) -> None:
    _int(pos, f"{at}.timeline", low=1)
    _str(pos, f"{at}.start_lsn", _LSN, "an LSN such as 0/3000028")
    _str(pos, f"{at}.end_lsn", _LSN, "an LSN such as 0/3000028")
    _str(pos, f"{at}.last_record_lsn", _LSN, "an LSN such as 0/3000028", optional=True)
    _str(pos, f"{at}.system_identifier", re.compile(r"^\d{1,20}$"), "a decimal system identifier")
    _int(pos, f"{at}.server_version", low=90000)
    _int(pos, f"{at}.segment_size", low=1)
    _names(pos, f"{at}.segments", _WAL_SEGMENT, "WAL segment names", optional=True)
    for fld in ("consistent_at", "wal_end_time", "last_commit_time"):
        _time(pos, f"{at}.{fld}", optional=True)
    if pos.get("bridge_gap") is not None:
        _str(_dict(pos, f"{at}.bridge_gap"), f"{at}.bridge_gap.reason", optional=True)
        _time(pos["bridge_gap"], f"{at}.bridge_gap.covered_until", optional=True)
    bridge = pos.get("bridge")
    if bridge is not None:
        _dict(pos, f"{at}.bridge")
        _str(bridge, f"{at}.bridge.start_lsn", _LSN, "an LSN such as 0/3000028")
        _str(bridge, f"{at}.bridge.end_lsn", _LSN, "an LSN such as 0/3000028")
        _str(bridge, f"{at}.bridge.last_record_lsn", _LSN, "an LSN such as 0/3000028", optional=True)
        _names(bridge, f"{at}.bridge.segments", _WAL_SEGMENT, "WAL segment names", optional=True)
        for fld in ("covered_until", "last_commit_time"):
            _time(bridge, f"{at}.bridge.{fld}", optional=True)
        _need(bridge.get("from_set") is None or (isinstance(bridge["from_set"], str) and SetName.parse(bridge["from_set"])),
              f"{at}.bridge.from_set", bridge.get("from_set"), "a set name")


def _ldap_position(pos: dict, at: str) -> None:
    _need(isinstance(pos.get("base_dns"), list) and all(isinstance(b, str) and "=" in b for b in pos["base_dns"]),
          f"{at}.base_dns", pos.get("base_dns"), "a list of DNs")
    _int(pos, f"{at}.entries", optional=True)
    _str(pos, f"{at}.method", re.compile(r"^(full|accesslog|digest|export)$"), "full, accesslog, digest or export",
         optional=True)
    _str(pos, f"{at}.watermark", optional=True)


def _namenode_position(pos: dict, at: str) -> None:
    _str(pos, f"{at}.cluster_id", re.compile(r"^[A-Za-z0-9_.\-]{1,128}$"), "a cluster id")
    _int(pos, f"{at}.namespace_id")
    _str(pos, f"{at}.block_pool_id", re.compile(r"^[A-Za-z0-9_.\-]{1,128}$"), "a block pool id")
    _int(pos, f"{at}.ctime")
    _need(isinstance(pos.get("layout_version"), int), f"{at}.layout_version", pos.get("layout_version"), "a number")
    _int(pos, f"{at}.start_txid")
    _int(pos, f"{at}.end_txid")
    _int(pos, f"{at}.image_txid", optional=True)
    _str(pos, f"{at}.image_md5", _HEX32, "an MD5 in hex", optional=True)
    _names(pos, f"{at}.segments", _EDITS, "edit-log segment names")


def _oms_position(pos: dict, at: str) -> None:
    _postgres_position(_dict(pos, f"{at}.postgres"), f"{at}.postgres")
    _files_position(_dict(pos, f"{at}.files"), f"{at}.files")


_POSITION_CHECKS = {"files": _files_position, "postgres": _postgres_position, "ldap": _ldap_position,
                    "namenode": _namenode_position, "oms": _oms_position}


def _validated(raw: Any) -> dict[str, Any]:
    """The manifest's fields, checked by allow-list; raises :class:`_Invalid` naming the field."""
    _need(isinstance(raw, dict), "<manifest>", raw, "a JSON object")
    allowed = {f.name for f in fields(Manifest)}
    unknown = sorted(set(raw) - allowed)
    _need(not unknown, "<manifest>", unknown, "no unknown fields")
    _need(type(raw.get("format")) is int and raw["format"] == FORMAT_VERSION, "format", raw.get("format"),
          f"format {FORMAT_VERSION}")
    stem = _str(raw, "set", what="a set name <version>_<source>_<YYYYMMDDHHmmss>")
    name = SetName.parse(stem)
    _need(name is not None, "set", stem, "a set name <version>_<source>_<YYYYMMDDHHmmss>")
    _str(raw, "task", _TASK, "a task name")
    _str(raw, "task_dir", _TASK_DIR, "a task directory <task>_<YYYYMMDDHHmmss>")
    _need(raw["task_dir"].startswith(raw["task"] + "_"), "task_dir", raw["task_dir"], f"'{raw['task']}_<time>'")
    source = _str(raw, "source", re.compile(r"^[A-Za-z0-9\-]{1,64}$"), "a source name")
    _need(name.source == source, "set", stem, f"a set of source {source}")
    _str(raw, "cluster_version", _VERSION, "a cluster version")
    _need(name.version == raw["cluster_version"], "set", stem, f"a set of version {raw['cluster_version']}")
    kind = _str(raw, "kind", what=f"one of {', '.join(KINDS)}")
    _need(kind in KINDS, "kind", kind, f"one of {', '.join(KINDS)}")
    kind_type = _str(raw, "type", what="full or incremental")
    _need(kind_type in (FULL, INCREMENTAL), "type", kind_type, "full or incremental")
    parent = raw.get("parent")
    root = _str(raw, "chain_root", what="a set name")
    if kind_type == FULL:
        _need(parent is None, "parent", parent, "null for a full set")
        _need(root == stem, "chain_root", root, "the set itself for a full set")
    else:
        _need(isinstance(parent, str) and SetName.parse(parent) is not None and SetName.parse(parent).source == source
              and parent != stem, "parent", parent, f"the name of an earlier set of source {source}")
        _need(SetName.parse(root) is not None and SetName.parse(root).source == source, "chain_root", root,
              f"a set name of source {source}")
    for fld in ("executed_at", "started_at", "finished_at"):
        _time(raw, fld)
    archive = _dict(raw, "archive")
    _need(set(archive) == {"name", "size", "sha256"}, "archive", sorted(archive), "exactly name, size and sha256")
    _need(archive["name"] == stem + ARCHIVE_SUFFIX, "archive.name", archive["name"], f"{stem + ARCHIVE_SUFFIX!r}")
    _int(archive, "archive.size")
    _str(archive, "archive.sha256", _HEX64, "a SHA-256 in hex")
    _dict(raw, "content")
    position = _dict(raw, "position")
    _POSITION_CHECKS[kind](position, "position")
    _str(raw, "reason")
    tools = raw.get("tools", {})
    _need(isinstance(tools, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in tools.items()),
          "tools", tools, "an object of strings")
    return {**raw, "archive": ArchiveInfo(**archive)}


def check_belongs(manifest: Manifest, task: str, task_dir: str, source: str, origin: str,
                  timezone: str | None = None) -> None:
    """Refuse a manifest that names another task, task directory or source than where it was found,
    or (given the task's ``timezone``) whose execution time is not the one its set name says."""
    for fld, found, expected in (("task", manifest.task, task), ("task_dir", manifest.task_dir, task_dir),
                                 ("source", manifest.source, source)):
        if found != expected:
            raise ManifestError(f"{origin}: not a valid backup manifest: {fld} is {_short.repr(found)}, but it lies "
                                f"in the catalog of {expected!r}")
    if timezone is not None:
        from metabackup.naming import format_timestamp

        stamp = format_timestamp(pendulum.parse(manifest.executed_at), timezone)
        if not manifest.set.endswith("_" + stamp):
            raise ManifestError(f"{origin}: not a valid backup manifest: executed_at {manifest.executed_at} is "
                                f"{stamp} in {timezone}, not the time its set name {manifest.set} says")


def tool_versions(**extra: str) -> dict[str, str]:
    return {"metabackup": __version__, "python": platform.python_version(), **extra}


def sha256_of(stream: BinaryIO, chunk: int = 1 << 20) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    while block := stream.read(chunk):
        digest.update(block)
        size += len(block)
    return digest.hexdigest(), size
