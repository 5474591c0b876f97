"""Restore a backup set: resolve its chain from the catalog, verify every member, then rebuild."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pendulum

from metabackup.catalog import Catalog
from metabackup.manifest import Manifest
from metabackup.naming import task_dir_name
from metabackup.sources import RestoreError, kind_class
from metabackup.spec import TaskSpec
from metabackup.targets import BackupTarget, TargetError, open_target

log = logging.getLogger(__name__)

POINT_IN_TIME_KINDS = ("postgres",)


def with_target_time(dest: Any, moment: str) -> Any:
    from metabackup.sources.postgres import PostgresDestination

    if not isinstance(dest, PostgresDestination):
        dest = PostgresDestination(data_dir=str(dest))
    dest.target_time = moment
    return dest


def resolve_chain(catalog: Catalog, set_stem: str | None) -> list[Manifest]:
    if set_stem is None:
        latest = catalog.latest_restorable()
        if latest is None:
            raise RestoreError("the catalog holds no restorable backup set")
        set_stem = latest.set
    if catalog.get(set_stem) is None:
        known = ", ".join(m.set for m in catalog.sets) or "none"
        raise RestoreError(f"no committed backup set {set_stem!r} (known: {known})")
    chain = catalog.chain(set_stem)
    if chain is None:
        raise RestoreError(f"backup set {set_stem} cannot be restored: a set of its chain is missing")
    return chain


def verify_chain(target: BackupTarget, chain: list[Manifest]) -> None:
    """Re-read every archive of the chain; refuse the whole chain if any member is missing or corrupt."""
    for manifest in chain:
        try:
            target.verify(manifest.task_dir, manifest.archive.name, manifest.archive.sha256, manifest.archive.size)
        except (TargetError, OSError) as exc:
            raise RestoreError(f"refusing to restore: chain member {manifest.set} failed verification: {exc}") from exc
        log.info("verified %s (%d bytes)", manifest.set, manifest.archive.size)


def set_for_point_in_time(catalog: Catalog, moment: pendulum.DateTime) -> str:
    """The earliest restorable set whose WAL reaches ``moment`` (it finished after it)."""
    for manifest in catalog.restorable():
        if pendulum.parse(manifest.finished_at) >= moment:
            if pendulum.parse(catalog.chain(manifest.set)[0].finished_at) > moment:
                raise RestoreError(f"{moment.isoformat()} is before the end of the oldest full backup kept "
                                   f"({catalog.chain(manifest.set)[0].set}); no chain reaches it")
            return manifest.set
    raise RestoreError(f"no backup set reaches {moment.isoformat()} yet; the newest ends at "
                       f"{catalog.sets[-1].finished_at if catalog.sets else 'never'}")


def restore_source(spec: TaskSpec, source_name: str, dest: Any, set_stem: str | None = None,
                   point_in_time: str | None = None) -> dict[str, Any]:
    """Restore ``source_name`` at a set (default: the latest) or at a point in time (PostgreSQL
    kinds: the chain of the first set that reaches it, replayed up to that moment)."""
    source = spec.source(source_name)
    target = open_target(source.target)
    task_dir = task_dir_name(spec.name, spec.created, spec.timezone)
    catalog = Catalog.of(target.manifests(task_dir, source_name))
    if point_in_time is not None:
        if source.kind not in POINT_IN_TIME_KINDS:
            raise RestoreError(f"source kind {source.kind} restores to backup sets only, not to a point in time")
        moment = pendulum.parse(point_in_time)
        if moment.tzinfo is None or "T" not in point_in_time:
            raise RestoreError(f"point in time {point_in_time!r} needs a date, a time and a UTC offset")
        set_stem = set_stem or set_for_point_in_time(catalog, moment)
        dest = with_target_time(dest, moment.in_timezone("UTC").format("YYYY-MM-DD HH:mm:ss.SSSSSS") + "+00")
    chain = resolve_chain(catalog, set_stem)
    log.info("restoring %s from chain %s", chain[-1].set, " -> ".join(m.set for m in chain))
    verify_chain(target, chain)
    kind = kind_class(chain[-1].kind)
    result = kind.restore(chain, lambda stem: target.open_read(task_dir, catalog.get(stem).archive.name), dest)
    return {"set": chain[-1].set, "chain": [m.set for m in chain], **result}
