"""Chain-safe retention.

The rule, per source and target: keep the newest ``max_backups`` restorable sets, plus every
ancestor (parent, grandparent, ... up to the full) any of them needs; delete the other
restorable sets.  An incremental is therefore never left without its parents, and the number of
sets kept can exceed ``max_backups`` only while a kept incremental still needs an older full
(the decision table starts a new full before a chain outgrows ``max_backups``, so the excess
disappears at the next retention after that full).  Sets whose chain is already broken
(orphans, e.g. a parent deleted by hand) are never counted and never deleted: they are reported.
"""

from __future__ import annotations

from dataclasses import dataclass

from metabackup.catalog import Catalog
from metabackup.manifest import Manifest


@dataclass(frozen=True)
class RetentionPlan:
    keep: tuple[Manifest, ...]
    delete: tuple[Manifest, ...]
    orphans: tuple[Manifest, ...]


def plan_retention(catalog: Catalog, max_backups: int) -> RetentionPlan:
    if max_backups < 1:
        raise ValueError(f"max_backups must be at least 1, got {max_backups}")
    restorable = catalog.restorable()
    newest = restorable[-max_backups:]
    keep_names: set[str] = set()
    for kept in newest:
        keep_names.update(m.set for m in catalog.chain(kept.set) or ())
    keep = tuple(m for m in restorable if m.set in keep_names)
    delete = tuple(m for m in restorable if m.set not in keep_names)
    return RetentionPlan(keep=keep, delete=delete, orphans=tuple(catalog.orphans()))
