"""Where backup sets are kept.  A target stores files by (task directory, file name)."""

from __future__ import annotations

import collections
import hashlib
import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, ClassVar

from pydantic import Field

from metabackup.errors import MetabackupError
from metabackup.fields import SpecModel, between
from metabackup.keys import KeyConfig
from metabackup.manifest import MAX_MANIFEST_BYTES, Manifest, ManifestError, check_belongs, sha256_of
from metabackup.naming import MANIFEST_SUFFIX, SetName

log = logging.getLogger(__name__)


class TargetError(MetabackupError):
    """The target cannot be used as asked; the message names it and says why."""


DEFAULT_MAX_BACKUPS = 7


class TargetConfig(SpecModel):
    """A target's settings in a spec (``sources.<name>.target``): one model per target type.

    ``type`` names the type in the registry (:data:`metabackup.targets.TYPES`); ``max_backups`` is
    common to all.  A type adds its own fields and says where it keeps a task's sets (:meth:`uri`),
    which local directories it writes to (:meth:`local_dirs`, kept apart from the backed-up ones),
    and how it is opened (:meth:`open`).
    """

    #: whether the sets leave the cluster they protect (then the spec's ``encryption`` applies by default)
    off_cluster: ClassVar[bool] = False

    type: str
    max_backups: between(1, 100) = DEFAULT_MAX_BACKUPS
    encryption: KeyConfig | None = Field(
        None, description="this location's key ({key_id, key_command}), or {enabled: false} to store its sets "
                          "unencrypted; default: the spec's encryption for off-cluster targets")

    @abstractmethod
    def uri(self, task_dir: str = "") -> str:
        """Where the sets are kept: the target's root, or a task's directory in it."""

    @abstractmethod
    def open(self, **kwargs: Any) -> BackupTarget:
        """The :class:`BackupTarget` that reads and writes here."""

    def local_dirs(self) -> list[tuple[str, str, str]]:
        """Directories of this machine the target writes to: ``(field, path, note)``."""
        return []

    @property
    def hdfs_nameservice(self) -> str | None:
        """The HDFS NameService the target writes into, if it is in HDFS."""
        return None

    def mirror_location(self) -> TargetConfig | None:
        """A standby copy the target writes with every file, readable as a target of its own."""
        return None


class StreamReader:
    """A file-like reader over a response body (its ``read`` and ``close``), usable in ``with``."""

    def __init__(self, read: Callable[[int | None], bytes], close: Callable[[], None]):
        self._read, self._close = read, close

    def read(self, size: int = -1) -> bytes:
        return self._read(None if size is None or size < 0 else size)

    def close(self) -> None:
        self._close()

    def __enter__(self) -> StreamReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def check_name(what: str, name: str) -> None:
    """A target stores flat names: never a separator, a parent reference or an empty name."""
    if not isinstance(name, str) or "/" in name or "\0" in name or name in ("", ".", ".."):
        raise TargetError(f"refusing {what} name {name!r}: a name at a target has no '/' and is not '.' or '..'")


def join_uri(root: str, task_dir: str) -> str:
    return f"{root.rstrip('/')}/{task_dir}" if task_dir else root


_PARSED: collections.OrderedDict[bytes, Manifest] = collections.OrderedDict()
_PARSED_LOCK = threading.Lock()
#: manifests kept parsed (a process that reads catalogs again and again, e.g. the API server
#: serving the Backups page, validates each manifest once, not on every request)
PARSED_MANIFESTS_KEPT = 50_000


def _parsed_manifest(origin: str, data: bytes) -> Manifest:
    """``Manifest.from_json(data, origin)``, remembered by a digest of both: the same bytes from the
    same place parse to the same manifest.  Only valid manifests are remembered (an invalid one is
    refused again each time, with its reason); any change of the bytes is a new parse."""
    key = hashlib.sha256(origin.encode() + b"\0" + data).digest()
    with _PARSED_LOCK:
        manifest = _PARSED.get(key)
        if manifest is not None:
            _PARSED.move_to_end(key)
            return manifest
    manifest = Manifest.from_json(data, origin=origin)
    with _PARSED_LOCK:
        _PARSED[key] = manifest
        while len(_PARSED) > PARSED_MANIFESTS_KEPT:
            _PARSED.popitem(last=False)
    return manifest


class BackupTarget(ABC):
    #: its config's ``uri()``: the one name of the target in lineage, messages and the Backups page
    uri: str

    @abstractmethod
    def ensure_writable(self, task_dir: str) -> None: ...

    @abstractmethod
    def free_bytes(self) -> int | None:
        """Free space for new sets, or None when the target cannot tell."""

    @abstractmethod
    def list_names(self, task_dir: str) -> list[str]: ...

    @abstractmethod
    def open_read(self, task_dir: str, name: str) -> BinaryIO: ...

    @abstractmethod
    def put_file(self, local: Path, task_dir: str, name: str) -> None:
        """Store ``local`` as ``name`` atomically: afterwards the file is there whole, or not at all."""

    def put_file_reporting(self, local: Path, task_dir: str, name: str, on_bytes: Callable[[int], None]) -> None:
        """:meth:`put_file`, telling ``on_bytes`` how many bytes are stored as it goes (a target that
        cannot tell reports the whole file once it is stored)."""
        self.put_file(local, task_dir, name)
        on_bytes(Path(local).stat().st_size)

    @abstractmethod
    def put_bytes(self, data: bytes, task_dir: str, name: str) -> None: ...

    @abstractmethod
    def delete(self, task_dir: str, name: str) -> None: ...

    @abstractmethod
    def remove_partials(self, task_dir: str, name: str | None = None) -> list[str]: ...

    def verify(self, task_dir: str, name: str, sha256: str, size: int) -> None:
        """Re-read the stored file; raise :class:`TargetError` unless checksum and size match."""
        with self.open_read(task_dir, name) as handle:
            actual, actual_size = sha256_of(handle)
        if (actual, actual_size) != (sha256, size):
            raise TargetError(f"{self.uri}/{task_dir}/{name} has sha256 {actual} ({actual_size} bytes); "
                              f"expected {sha256} ({size} bytes)")

    def exists(self, task_dir: str, name: str) -> bool:
        return name in self.list_names(task_dir)

    def manifests(self, task_dir: str, source: str | None = None) -> list[Manifest]:
        """Every valid manifest in the task directory (optionally of one source); see
        :meth:`read_manifests` for the checked form the catalog uses."""
        found = []
        for name in self.list_names(task_dir):
            stem = SetName.parse(name.removesuffix(MANIFEST_SUFFIX)) if name.endswith(MANIFEST_SUFFIX) else None
            if stem is None or (source is not None and stem.source != source):
                continue
            try:
                found.append(self._read_manifest(task_dir, name))
            except (ManifestError, OSError) as exc:
                log.warning("ignoring an invalid manifest: %s", exc)
        return found

    def _read_manifest(self, task_dir: str, name: str) -> Manifest:
        origin = f"{self.uri}/{task_dir}/{name}"
        with self.open_read(task_dir, name) as handle:
            data = handle.read(MAX_MANIFEST_BYTES + 1)
        manifest = _parsed_manifest(origin, data)
        if manifest.set + MANIFEST_SUFFIX != name:
            raise ManifestError(f"{origin}: not a valid backup manifest: it describes set {manifest.set!r}")
        return manifest

    def read_manifests(self, task: str, task_dir: str, source: str, timezone: str | None = None):
        """The manifests of one source in the task directory, validated and checked to belong to
        ``task``/``task_dir``/``source``: ``(valid manifests, [InvalidSet, ...])``."""
        from metabackup.catalog import InvalidSet

        valid, invalid = [], []
        for name in self.list_names(task_dir):
            if not name.endswith(MANIFEST_SUFFIX) or name.startswith("."):
                continue
            stem = SetName.parse(name.removesuffix(MANIFEST_SUFFIX))
            if stem is not None and stem.source != source:
                continue  # another source's set
            try:
                if stem is None:
                    raise ManifestError(f"{self.uri}/{task_dir}/{name}: not a valid backup manifest: its file name is "
                                        "not <version>_<source>_<YYYYMMDDHHmmss>.manifest.json")
                manifest = self._read_manifest(task_dir, name)
                check_belongs(manifest, task, task_dir, source, f"{self.uri}/{task_dir}/{name}", timezone)
                valid.append(manifest)
            except (ManifestError, OSError) as exc:
                invalid.append(InvalidSet(name=name, reason=str(exc)))
        return valid, invalid
