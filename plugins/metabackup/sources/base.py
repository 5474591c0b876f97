"""What a source kind is to the core: a :class:`SourceKind` plug-in and its :class:`SourceEngine`.

The plug-in is light (imported while a DAG file is parsed): it names its options model, says what it
can do (incrementals, point-in-time recovery, in-place restore, what a restore destination is),
how a restored copy is validated, how the verification DAG test-restores it, and which lineage
assets it reads.  The engine does the I/O: check the source, snapshot it, add archive members,
rebuild a chain; it is imported only when a task runs (it may need a client library).
"""

from __future__ import annotations

import contextlib
import importlib
import tarfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, ClassVar, Literal

from metabackup.errors import BackupError, RestoreError  # noqa: F401 - re-exported for the kinds
from metabackup.fields import SpecModel
from metabackup.manifest import Manifest

if TYPE_CHECKING:
    from metabackup.policy import Decision
    from metabackup.spec import Source


@dataclass(frozen=True)
class ArchiveResult:
    content: dict[str, Any]  # counts for the manifest
    position: dict[str, Any]  # the source position this set covers


@dataclass(frozen=True)
class RestoreRequest:
    """How a restore runs, besides where to: given by the restore DAG's form or the CLI."""

    keep_running: bool = False  # database kinds: leave the restored server running
    port: int = 0  # database kinds: the port to start it on (0: a free one)
    point_in_time: str | None = None  # point-in-time kinds: recover up to this moment (UTC text)
    bridge: Manifest | None = None  # point-in-time kinds: the later full whose bridge WAL reaches it


@dataclass(frozen=True)
class Rebuilt:
    """What :meth:`SourceKind.rebuild_beside` made: each live directory's rebuilt copy, and facts
    about it that :meth:`SourceKind.validate_in_place` checks the started service against."""

    dirs: dict[str, Path]
    facts: dict[str, Any]


class SourceKind(ABC):
    """A source kind plug-in (one per name in :data:`metabackup.sources.KINDS`)."""

    name: ClassVar[str]
    #: the source's options in a spec: every field of ``sources.<name>`` besides kind and target
    Options: ClassVar[type[SpecModel]]
    #: the engine class, ``"module:Class"``, imported on first use
    engine_path: ClassVar[str]
    supports_incremental: ClassVar[bool] = True
    #: restores to a moment between sets (``point_in_time`` of the restore DAG)
    point_in_time: ClassVar[bool] = False
    #: its sets record the WAL they cover, whose gaps ``list`` and the Backups page report
    pitr_coverage: ClassVar[bool] = False
    #: restores over its own live state (``in_place`` of the restore DAG)
    in_place: ClassVar[bool] = False
    #: an in-place restore stops and starts the source's service (``sources.<name>.service``)
    needs_service: ClassVar[bool] = True
    #: what ``service.data_dirs`` names for this kind (in messages)
    live_dirs_hint: ClassVar[str] = "the directories the service keeps its data in"
    #: what a restore destination names: a new local directory, or an Airflow connection
    restores_into: ClassVar[Literal["directory", "connection"]] = "directory"

    def engine_class(self) -> type[SourceEngine]:
        module, attribute = self.engine_path.split(":")
        return getattr(importlib.import_module(module), attribute)

    def engine(self, source: Source, task: str = "") -> SourceEngine:
        """The engine backing up ``source`` of task ``task``."""
        return self.engine_class()(source, task=task)

    def restore(self, chain: list[Manifest], open_archive: Callable[[str], BinaryIO], dest: Any) -> dict[str, Any]:
        """Rebuild the state at ``chain[-1]`` from the verified chain into ``dest`` (see :meth:`destination`)."""
        return self.engine_class().restore(chain, open_archive, dest)

    def destination(self, where: Any, request: RestoreRequest) -> Any:
        """The engine's destination object: ``where`` is a checked directory (a ``Path``) or, for a kind
        that restores into a connection, a connection id."""
        return where

    @abstractmethod
    def check_position(self, pos: dict, at: str) -> None:
        """Check a set's ``position`` read back from a target, by allow-list (the helpers of
        :mod:`metabackup.manifest`: ``need``, ``text_field``, ``int_field``...); raise through them."""

    @abstractmethod
    def validate_restored(self, chain: list[Manifest], source: Source, dest: Any, in_place: bool) -> dict[str, Any]:
        """Check the restored state (``dest`` from :meth:`destination`; the live directories when
        ``in_place``) against what ``chain[-1]`` recorded; raise :class:`RestoreError` if it differs."""

    @contextlib.contextmanager
    def scratch_destination(self, source: Source, scratch: Path) -> Iterator[Any]:
        """A throwaway destination under ``scratch`` for the verification DAG's test restore."""
        yield self.destination(scratch / "restored", RestoreRequest())

    @abstractmethod
    def asset_uris(self, options: Any) -> list[str]:
        """Lineage: the URIs of what a source of this kind reads (no network at parse time)."""

    def target_problem(self, options: Any, target: Any) -> str | None:
        """Why a source of this kind must not keep its sets at ``target`` (a TargetConfig), or None."""
        return None

    # ---- in-place restore (see metabackup.inplace) ----
    def live_dirs(self, options: Any, service: Any) -> list[tuple[str, str]]:
        """The live directories an in-place restore replaces, as ``(spec field, path)``: by default
        the service's ``data_dirs``."""
        if service is None:
            return []
        return [(f"service.data_dirs[{i}]", path) for i, path in enumerate(service.data_dirs)]

    def service_problems(self, options: Any, service: Any) -> list[tuple[str, str]]:
        """What is wrong with a source's ``service`` block for this kind, as ``(field, reason)``; a
        field ``"../<name>"`` names the source's own option ``<name>`` instead of a service field."""
        return []

    def rebuild_beside(self, chain: list[Manifest], open_archive: Callable[[str], BinaryIO], source: Source,
                       scratch: Path, request: RestoreRequest) -> Rebuilt:
        """Rebuild ``chain[-1]`` under ``scratch`` (a new directory beside the live data, on its file
        system) while the service runs; map each live directory (:meth:`live_dirs`) to its copy."""
        raise RestoreError(f"source kind {self.name} cannot be restored in place")

    def validate_in_place(self, chain: list[Manifest], source: Source, facts: dict[str, Any]) -> dict[str, Any]:
        """Check that the started service serves the rebuilt data (``facts`` from :meth:`rebuild_beside`)."""
        return self.validate_restored(chain, source, None, in_place=True)

    def live_identity(self, source: Source) -> dict[str, Any]:
        """What identifies the data the running service serves (compared before and after a rollback)."""
        return {}

    def backed_up_dirs(self, options: Any) -> list[tuple[str, str]]:
        """Local directories a source of this kind backs up, as ``(field, path)``: kept apart from
        where backups are written, and never a restore destination."""
        return []


class SourceEngine(ABC):
    """Backs up one configured source: check, snapshot, archive members; and restores a chain."""

    def __init__(self, source: Source, task: str = ""):
        self.source = source
        self.options = source.options
        self.task = task  # the backup task's name (e.g. to name server-side resources per task)

    def tool_versions(self) -> dict[str, str]:
        return {}

    def check(self) -> None:
        """Raise with a clear message if the source cannot be read now (run by preflight)."""

    def incremental_blocker(self, parent: Manifest) -> str | None:
        """Why an incremental on ``parent`` is impossible now (the source lost what it needs,
        e.g. a purged change log) or not worth it (it would outgrow a full), or None.  The
        decision then falls back to a full backup, with this as its reason."""
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
        """Rebuild the source's state at ``chain[-1]`` from the verified chain into ``dest``."""
