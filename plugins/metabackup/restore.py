"""Restore a backup set: resolve its chain from the catalog, verify every member, then rebuild."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from metabackup.catalog import Catalog
from metabackup.manifest import Manifest
from metabackup.naming import task_dir_name
from metabackup.sources import RestoreError, kind_class
from metabackup.spec import TaskSpec
from metabackup.targets import BackupTarget, TargetError, open_target

log = logging.getLogger(__name__)


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


def restore_source(spec: TaskSpec, source_name: str, dest: str | Path, set_stem: str | None = None) -> dict[str, Any]:
    source = spec.source(source_name)
    target = open_target(source.target)
    task_dir = task_dir_name(spec.name, spec.created, spec.timezone)
    catalog = Catalog.of(target.manifests(task_dir, source_name))
    chain = resolve_chain(catalog, set_stem)
    log.info("restoring %s from chain %s", chain[-1].set, " -> ".join(m.set for m in chain))
    verify_chain(target, chain)
    kind = kind_class(chain[-1].kind)
    result = kind.restore(chain, lambda stem: target.open_read(task_dir, catalog.get(stem).archive.name), dest)
    return {"set": chain[-1].set, "chain": [m.set for m in chain], **result}
