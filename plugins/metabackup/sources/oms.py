"""The ``oms`` source kind: the cluster manager = its database (``postgres``) plus its
configuration directories (``files``), captured together in one backup set.

Each component runs in a sub-folder of the work directory and adds its own members to the one
archive (``pg/...`` and the files' absolute paths); the manifest's position and content hold one
entry per component.  Restore rebuilds both: the database into a new data directory and the
directories under a new folder.
"""

from __future__ import annotations

import dataclasses
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from metabackup.fsutil import ensure_private_dir
from metabackup.manifest import Manifest
from metabackup.policy import Decision
from metabackup.sources.base import ArchiveResult, SourceKind
from metabackup.sources.files import FilesSource
from metabackup.sources.postgres import PostgresDestination, PostgresSource
from metabackup.spec import Source

COMPONENTS = ("postgres", "files")


def component_view(manifest: Manifest, component: str) -> Manifest:
    """The manifest as one component sees it (its own position)."""
    return dataclasses.replace(manifest, kind=component, position=manifest.position[component])


@dataclass
class OmsDestination:
    database: PostgresDestination
    files_dir: str


class OmsSource(SourceKind):
    kind = "oms"
    supports_incremental = True

    def __init__(self, source: Source, task: str = ""):
        super().__init__(source, task)
        opts = source.options
        self.database = PostgresSource(dataclasses.replace(source, kind="postgres", options=opts["database"]), task)
        self.files = FilesSource(dataclasses.replace(source, kind="files", options=opts["files"]), task)

    def tool_versions(self) -> dict[str, str]:
        return self.database.tool_versions()

    def check(self) -> None:
        self.database.check()
        self.files.check()

    def incremental_blocker(self, parent: Manifest) -> str | None:
        return self.database.incremental_blocker(component_view(parent, "postgres"))

    def snapshot(self, workdir: Path, decision: Decision, parent: Manifest | None,
                 open_parent: Callable[[], BinaryIO] | None) -> dict[str, Any]:
        summary = {}
        for name, component in (("postgres", self.database), ("files", self.files)):
            ensure_private_dir(workdir / name)
            view = component_view(parent, name) if parent else None
            summary[name] = component.snapshot(workdir / name, decision, view, open_parent)
        return summary

    def write_archive(self, workdir: Path, tar: tarfile.TarFile, set_stem: str) -> ArchiveResult:
        database = self.database.write_archive(workdir / "postgres", tar, set_stem)
        files = self.files.write_archive(workdir / "files", tar, set_stem)
        return ArchiveResult(content={"postgres": database.content, "files": files.content},
                             position={"postgres": database.position, "files": files.position})

    @classmethod
    def restore(cls, chain: list[Manifest], open_archive: Callable[[str], BinaryIO], dest: Any) -> dict[str, Any]:
        if not isinstance(dest, OmsDestination):
            raise TypeError("an oms restore needs an OmsDestination (a new data directory and a new files folder)")
        return {
            "postgres": PostgresSource.restore([component_view(m, "postgres") for m in chain], open_archive, dest.database),
            "files": FilesSource.restore([component_view(m, "files") for m in chain], open_archive, dest.files_dir),
        }
