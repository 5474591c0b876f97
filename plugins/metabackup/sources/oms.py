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
from typing import TYPE_CHECKING, Any, BinaryIO

from pydantic import Field

from metabackup.fsutil import ensure_private_dir
from metabackup.manifest import Manifest, object_field
from metabackup.sources.base import ArchiveResult, Rebuilt, RestoreRequest, SourceEngine, SourceKind
from metabackup.sources.files import KIND as FILES
from metabackup.sources.files import FilesOptions, FilesSource, validate_tree
from metabackup.sources.postgres import KIND as POSTGRES
from metabackup.sources.postgres import (
    PostgresDestination, PostgresOptions, PostgresSource, live_server_identity, rebuild_data_dir, validate_live_server,
)

if TYPE_CHECKING:  # the run's decision, only in annotations (the plug-in stays light)
    from metabackup.policy import Decision

COMPONENTS = ("postgres", "files")


def component_view(manifest: Manifest, component: str) -> Manifest:
    """The manifest as one component sees it (its own position)."""
    return dataclasses.replace(manifest, kind=component, position=manifest.position[component])


@dataclass
class OmsDestination:
    database: PostgresDestination
    files_dir: str


class OmsOptions(FilesOptions):
    """``kind: oms``: the manager's ``database`` (PostgreSQL options) and its configuration ``paths``."""

    database: PostgresOptions = Field(description="the manager database: postgres options")

    @property
    def files(self) -> FilesOptions:
        return FilesOptions(paths=self.paths, exclude=self.exclude)


class OmsKind(SourceKind):
    name = "oms"
    Options = OmsOptions
    engine_path = "metabackup.sources.oms:OmsSource"
    pitr_coverage = True  # its database's WAL

    def destination(self, where: Any, request: RestoreRequest) -> OmsDestination:
        return OmsDestination(database=POSTGRES.destination(where / "database", request), files_dir=str(where / "files"))

    def check_position(self, pos: dict, at: str) -> None:
        """A set's position: its database's and its files' positions."""
        POSTGRES.check_position(object_field(pos, f"{at}.postgres"), f"{at}.postgres")
        FILES.check_position(object_field(pos, f"{at}.files"), f"{at}.files")

    def validate_restored(self, chain: list[Manifest], source: Any, dest: Any, in_place: bool) -> dict[str, Any]:
        # the options of an oms source hold the files options' paths
        return {**FILES.validate_restored([component_view(m, "files") for m in chain], source, dest.files_dir, False),
                **POSTGRES.validate_restored([component_view(m, "postgres") for m in chain], source, dest.database, False)}

    def asset_uris(self, options: OmsOptions) -> list[str]:
        return POSTGRES.asset_uris(options.database) + FILES.asset_uris(options.files)

    def backed_up_dirs(self, options: OmsOptions) -> list[tuple[str, str]]:
        return FILES.backed_up_dirs(options.files)

    # ---- in place: the database and the configuration directories together, or neither ----
    in_place = True
    live_dirs_hint = "the manager database's data directory (PGDATA), exactly one; its paths are restored with it"

    def live_dirs(self, options: OmsOptions, service: Any) -> list[tuple[str, str]]:
        database = [("service.data_dirs[0]", service.data_dirs[0])] if service is not None and service.data_dirs else []
        return database + FILES.backed_up_dirs(options.files)

    def service_problems(self, options: OmsOptions, service: Any) -> list[tuple[str, str]]:
        return POSTGRES.service_problems(options.database, service)

    def rebuild_beside(self, chain: list[Manifest], open_archive: Callable[[str], BinaryIO], source: Any,
                       scratch: Path, request: RestoreRequest) -> Rebuilt:
        database = rebuild_data_dir([component_view(m, "postgres") for m in chain], open_archive,
                                    source.options.database, source.service, source.service.data_dirs[0],
                                    scratch / "pg", request)
        tree = scratch / "tree"
        files = FilesSource.restore([component_view(m, "files") for m in chain], open_archive, tree)
        dirs = {**database.dirs, **{path: tree / path.lstrip("/") for path in source.options.paths
                                    if (tree / path.lstrip("/")).is_dir()}}
        return Rebuilt(dirs, {"postgres": database.facts, "files": {"entries": files.get("entries")}})

    def validate_in_place(self, chain: list[Manifest], source: Any, facts: dict[str, Any]) -> dict[str, Any]:
        return {**validate_tree(chain[-1].position["files"], source.options.paths, Path("/")),
                **validate_live_server(source.options.database.conn_id, facts["postgres"])}

    def live_identity(self, source: Any) -> dict[str, Any]:
        return live_server_identity(source.options.database.conn_id)


KIND = OmsKind()


class OmsSource(SourceEngine):
    def __init__(self, source: Any, task: str = ""):
        super().__init__(source, task)
        opts = source.options
        self.database = PostgresSource(source.model_copy(update={"kind": "postgres", "options": opts.database}), task)
        self.files = FilesSource(source.model_copy(update={"kind": "files", "options": opts.files}), task)

    def tool_versions(self) -> dict[str, str]:
        return self.database.tool_versions()

    def check(self) -> None:
        self.database.check()
        self.files.check()

    def incremental_blocker(self, parent: Manifest) -> str | None:
        """The database's rules (``PostgresSource.incremental_blocker``): continuity, and the size
        rule with the database's own ``max_incremental_fraction``: its WAL since the parent against
        the database part of the chain's full (the configuration files' part of a set is small)."""
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
