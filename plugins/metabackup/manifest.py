"""The manifest: the JSON record beside each archive that makes a backup set a backup set.

It is written last, atomically, after the archive has been uploaded and its checksum verified at
the target, so a set without a manifest is by definition incomplete and is never in the catalog.

A manifest read back from a target is untrusted input: whoever can write to the target can write
one.  :meth:`Manifest.from_json` therefore validates it by allow-list (field names and types, the
set-name grammar, ``archive.name == set + .tar.gz`` or ``.tar.zst`` (``.enc`` added when encrypted), hex digests, times, and per kind the
position fields a restore uses), and :func:`check_belongs` checks it against the spec (task,
task directory, source).  What a restore does is decided by the spec (kind, live paths), never
by a manifest.
"""

from __future__ import annotations

import functools
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
from metabackup.naming import COMPRESSIONS, SetName, archive_suffix

FORMAT_VERSION = 1
FULL = "full"
INCREMENTAL = "incremental"


@dataclass(frozen=True)
class ArchiveInfo:
    name: str
    size: int
    sha256: str


@dataclass(frozen=True)
class EncryptionInfo:
    """How a set's archive is encrypted (:mod:`metabackup.encryption`): the key-encryption key by id
    and fingerprint, the data key wrapped by it, and the plaintext ``.tar.gz``'s SHA-256 and size
    (``archive.sha256``/``size`` are the stored, encrypted file's)."""

    algorithm: str
    chunk_size: int
    key_id: str
    key_fingerprint: str
    wrapped_key: str
    plaintext_sha256: str
    plaintext_size: int


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
    encryption: EncryptionInfo | None = None
    host: str | None = None  # the host that took the set (the worker that ran its archive step)

    def to_json(self) -> bytes:
        data = asdict(self)
        if self.encryption is None:  # an unencrypted set's manifest reads as it always did
            del data["encryption"]
        if self.host is None:  # nor does one written before sets named their host
            del data["host"]
        return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()

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

    @property
    def plaintext(self) -> tuple[str, int]:
        """SHA-256 and size of the set's ``.tar.gz`` (decrypted, when it is encrypted)."""
        if self.encryption is None:
            return self.archive.sha256, self.archive.size
        return self.encryption.plaintext_sha256, self.encryption.plaintext_size


MAX_MANIFEST_BYTES = 1 << 20
HEX64 = re.compile(r"^[0-9a-f]{64}$")
HEX32 = re.compile(r"^[0-9a-f]{32}$")
_TASK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,63}$")
_TASK_DIR = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,63}_\d{14}$")
HOST = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,252}$")
_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.\-]{0,31}$")
_OFFSET = re.compile(r"(Z|[+-]\d\d:?\d\d)\Z")
_short = reprlib.Repr()
_short.maxstring, _short.maxother, _short.maxlist, _short.maxdict = 60, 60, 4, 4


class ManifestError(MetabackupError, ValueError):
    """A manifest read from a target is malformed or does not belong where it was found."""


class _Invalid(Exception):
    pass


def need(ok: bool, fld: str, value: Any, what: str) -> None:
    if not ok:
        raise _Invalid(f"{fld}: {what}, got {_short.repr(value)}")


def text_field(raw: dict, fld: str, pattern: re.Pattern | None = None, what: str = "a string", optional: bool = False) -> Any:
    value = raw.get(fld.rsplit(".", 1)[-1])
    if optional and value is None:
        return None
    need(isinstance(value, str) and (pattern is None or pattern.fullmatch(value) is not None), fld, value, what)
    return value


def int_field(raw: dict, fld: str, optional: bool = False, low: int = 0) -> Any:
    value = raw.get(fld.rsplit(".", 1)[-1])
    if optional and value is None:
        return None
    need(isinstance(value, int) and not isinstance(value, bool) and value >= low, fld, value,
         f"a whole number >= {low}")
    return value


def time_field(raw: dict, fld: str, optional: bool = False) -> str | None:
    if optional and raw.get(fld.rsplit(".", 1)[-1]) is None:
        return None
    value = text_field(raw, fld, what="an ISO-8601 time with offset")
    try:
        parsed = pendulum.parse(value)
    except Exception:
        parsed = None
    need(isinstance(parsed, pendulum.DateTime) and _OFFSET.search(value) is not None, fld, value,
         "an ISO-8601 time with offset")
    return value


def object_field(raw: dict, fld: str) -> dict:
    value = raw.get(fld.rsplit(".", 1)[-1])
    need(isinstance(value, dict) and all(isinstance(k, str) for k in value), fld, value, "a JSON object")
    return value


def names_field(raw: dict, fld: str, pattern: re.Pattern, what: str, optional: bool = False) -> None:
    value = raw.get(fld.rsplit(".", 1)[-1])
    if optional and value is None:
        return
    need(isinstance(value, list) and all(isinstance(v, str) and pattern.fullmatch(v) for v in value), fld, value,
         f"a list of {what}")


def _validated(raw: Any) -> dict[str, Any]:
    """The manifest's fields, checked by allow-list; raises :class:`_Invalid` naming the field."""
    need(isinstance(raw, dict), "<manifest>", raw, "a JSON object")
    allowed = {f.name for f in fields(Manifest)}
    unknown = sorted(set(raw) - allowed)
    need(not unknown, "<manifest>", unknown, "no unknown fields")
    need(type(raw.get("format")) is int and raw["format"] == FORMAT_VERSION, "format", raw.get("format"),
         f"format {FORMAT_VERSION}")
    stem = text_field(raw, "set", what="a set name <version>_<source>_<YYYYMMDDHHmmss>")
    name = SetName.parse(stem)
    need(name is not None, "set", stem, "a set name <version>_<source>_<YYYYMMDDHHmmss>")
    text_field(raw, "task", _TASK, "a task name")
    text_field(raw, "task_dir", _TASK_DIR, "a task directory <task>_<YYYYMMDDHHmmss>")
    need(raw["task_dir"].startswith(raw["task"] + "_"), "task_dir", raw["task_dir"], f"'{raw['task']}_<time>'")
    source = text_field(raw, "source", re.compile(r"^[A-Za-z0-9\-]{1,64}$"), "a source name")
    need(name.source == source, "set", stem, f"a set of source {source}")
    text_field(raw, "cluster_version", _VERSION, "a cluster version")
    need(name.version == raw["cluster_version"], "set", stem, f"a set of version {raw['cluster_version']}")
    from metabackup.sources import KINDS, source_kind  # the kinds know their positions; they import this module

    kind = text_field(raw, "kind", what=f"one of {', '.join(KINDS.names())}")
    need(kind in KINDS, "kind", kind, f"one of {', '.join(KINDS.names())}")
    kind_type = text_field(raw, "type", what="full or incremental")
    need(kind_type in (FULL, INCREMENTAL), "type", kind_type, "full or incremental")
    parent = raw.get("parent")
    root = text_field(raw, "chain_root", what="a set name")
    if kind_type == FULL:
        need(parent is None, "parent", parent, "null for a full set")
        need(root == stem, "chain_root", root, "the set itself for a full set")
    else:
        need(isinstance(parent, str) and SetName.parse(parent) is not None and SetName.parse(parent).source == source
             and parent != stem, "parent", parent, f"the name of an earlier set of source {source}")
        need(SetName.parse(root) is not None and SetName.parse(root).source == source, "chain_root", root,
             f"a set name of source {source}")
    for fld in ("executed_at", "started_at", "finished_at"):
        time_field(raw, fld)
    archive = object_field(raw, "archive")
    need(set(archive) == {"name", "size", "sha256"}, "archive", sorted(archive), "exactly name, size and sha256")
    encryption = _encryption(raw)
    names = [stem + archive_suffix(compression, encryption is not None) for compression in COMPRESSIONS]
    need(archive["name"] in names, "archive.name", archive["name"], " or ".join(map(repr, names)))
    int_field(archive, "archive.size")
    text_field(archive, "archive.sha256", HEX64, "a SHA-256 in hex")
    object_field(raw, "content")
    position = object_field(raw, "position")
    source_kind(kind).check_position(position, "position")
    text_field(raw, "reason")
    tools = raw.get("tools", {})
    need(isinstance(tools, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in tools.items()),
         "tools", tools, "an object of strings")
    text_field(raw, "host", HOST, "a host name", optional=True)
    return {**raw, "archive": ArchiveInfo(**archive), "encryption": encryption}


_KEY_ID = re.compile(r"^[A-Za-z0-9_.\-]{1,250}$")
_BASE64 = re.compile(r"^[A-Za-z0-9+/]{40,200}={0,2}$")


def _encryption(raw: dict) -> EncryptionInfo | None:
    from metabackup.encryption import ALGORITHM, MAX_CHUNK_SIZE

    info = raw.get("encryption")
    if info is None:
        return None
    info = object_field(raw, "encryption")
    expected = {f.name for f in fields(EncryptionInfo)}
    need(set(info) == expected, "encryption", sorted(info), f"exactly {', '.join(sorted(expected))}")
    need(info["algorithm"] == ALGORITHM, "encryption.algorithm", info["algorithm"], f"{ALGORITHM!r}")
    need(int_field(info, "encryption.chunk_size", low=1) <= MAX_CHUNK_SIZE, "encryption.chunk_size",
         info["chunk_size"], f"at most {MAX_CHUNK_SIZE}")
    text_field(info, "encryption.key_id", _KEY_ID, "a key id (an Airflow connection id)")
    text_field(info, "encryption.key_fingerprint", HEX32, "a key fingerprint (32 hex digits)")
    text_field(info, "encryption.wrapped_key", _BASE64, "a wrapped key in base64")
    text_field(info, "encryption.plaintext_sha256", HEX64, "a SHA-256 in hex")
    int_field(info, "encryption.plaintext_size")
    return EncryptionInfo(**info)


@functools.lru_cache(maxsize=65536)
def _stamp(executed_at: str, timezone: str) -> str:
    """The set-name time of ``executed_at`` in ``timezone`` (remembered: catalogs are read often)."""
    from metabackup.naming import format_timestamp

    return format_timestamp(pendulum.parse(executed_at), timezone)


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
        stamp = _stamp(manifest.executed_at, timezone)
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
