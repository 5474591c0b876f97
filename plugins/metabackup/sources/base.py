"""What a source kind provides: a snapshot into a staging directory, its archive members, a restore."""

from __future__ import annotations

import tarfile
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, ClassVar

from metabackup.errors import BackupError, RestoreError  # noqa: F401 - re-exported for the kinds
from metabackup.manifest import Manifest
from metabackup.policy import Decision
from metabackup.spec import Source


@dataclass(frozen=True)
class ArchiveResult:
    content: dict[str, Any]  # counts for the manifest
    position: dict[str, Any]  # the source position this set covers


class SourceKind(ABC):
    kind: ClassVar[str]
    supports_incremental: ClassVar[bool]

    def __init__(self, source: Source, task: str = ""):
        self.source = source
        self.task = task  # the backup task's name (e.g. to name server-side resources per task)

    def tool_versions(self) -> dict[str, str]:
        return {}

    def check(self) -> None:
        """Raise with a clear message if the source cannot be read now (run by preflight)."""

    def incremental_blocker(self, parent: Manifest) -> str | None:
        """Why an incremental on ``parent`` is impossible now (the source lost what it needs,
        e.g. a purged change log), or None.  The decision then falls back to a full backup."""
        return None

    @abstractmethod
    def snapshot(self, workdir: Path, decision: Decision, parent: Manifest | None,
                 open_parent: Callable[[], BinaryIO] | None) -> dict[str, Any]:
        """Capture what this set will hold into ``workdir``; return a small JSON-able summary.

        For an incremental, ``parent`` is the parent set's manifest and ``open_parent`` opens its
        archive (both None for a full).
        """

    @abstractmethod
    def write_archive(self, workdir: Path, tar: tarfile.TarFile, set_stem: str) -> ArchiveResult:
        """Add this set's members to ``tar`` from what ``snapshot`` left in ``workdir``."""

    @classmethod
    @abstractmethod
    def restore(cls, chain: list[Manifest], open_archive: Callable[[str], BinaryIO], dest: Any) -> dict[str, Any]:
        """Rebuild the source's state at ``chain[-1]`` from the verified chain into ``dest``
        (a directory for ``files``; a destination server for database-like kinds)."""
