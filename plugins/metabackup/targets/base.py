"""Where backup sets are kept.  A target stores files by (task directory, file name)."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from pathlib import Path
from typing import BinaryIO

from metabackup.manifest import Manifest, sha256_of
from metabackup.naming import MANIFEST_SUFFIX

log = logging.getLogger(__name__)


class TargetError(RuntimeError):
    """The target cannot be used as asked; the message names it and says why."""


class BackupTarget(ABC):
    #: a URI for lineage and messages, e.g. file:///srv/BigData/LocalBackup
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
        """Every committed set's manifest in the task directory (optionally of one source)."""
        found = []
        for name in self.list_names(task_dir):
            if not name.endswith(MANIFEST_SUFFIX) or name.startswith("."):
                continue
            with self.open_read(task_dir, name) as handle:
                data = handle.read()
            try:
                manifest = Manifest.from_json(data, origin=f"{self.uri}/{task_dir}/{name}")
            except ValueError as exc:
                log.warning("ignoring unreadable manifest: %s", exc)
                continue
            if source is None or manifest.source == source:
                found.append(manifest)
        return found
