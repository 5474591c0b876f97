"""The catalog: what backups exist, read from the manifests at the target (never Airflow's DB)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property

from metabackup.manifest import Manifest

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class InvalidSet:
    """A manifest at the target that failed validation: reported, never restored, never deleted."""

    name: str  # the manifest's file name
    reason: str


@dataclass(frozen=True)
class Catalog:
    """The committed sets of one source at one target, oldest first."""

    sets: tuple[Manifest, ...]
    invalid: tuple[InvalidSet, ...] = ()

    @classmethod
    def of(cls, manifests: Iterable[Manifest], invalid: Iterable[InvalidSet] = ()) -> Catalog:
        return cls(tuple(sorted(manifests, key=lambda m: (m.executed_at, m.set))), tuple(invalid))

    @classmethod
    def read(cls, target, task: str, task_dir: str, source: str) -> Catalog:
        """The catalog of one source at ``target``: every manifest validated and checked to belong to
        this task, task directory and source; the ones that fail are kept aside in ``invalid``."""
        valid, invalid = target.read_manifests(task, task_dir, source)
        for bad in invalid:
            log.warning("%s: ignoring an invalid manifest: %s", source, bad.reason)
        return cls.of(valid, invalid)

    @cached_property
    def _index(self) -> dict[str, Manifest]:
        return {m.set: m for m in self.sets}

    def by_name(self) -> dict[str, Manifest]:
        return self._index

    def get(self, stem: str) -> Manifest | None:
        return self.by_name().get(stem)

    def chain(self, stem: str) -> list[Manifest] | None:
        """The sets needed to restore ``stem``, full first; None if any member is missing."""
        index = self.by_name()
        chain: list[Manifest] = []
        current = index.get(stem)
        while current is not None:
            chain.append(current)
            if current.is_full:
                return list(reversed(chain))
            if current.parent is None or len(chain) > len(index):
                return None
            current = index.get(current.parent)
        return None

    def restorable(self) -> list[Manifest]:
        return [m for m in self.sets if self.chain(m.set) is not None]

    def orphans(self) -> list[Manifest]:
        return [m for m in self.sets if self.chain(m.set) is None]

    def latest_restorable(self) -> Manifest | None:
        usable = self.restorable()
        return usable[-1] if usable else None

    def latest_full(self) -> Manifest | None:
        fulls = [m for m in self.restorable() if m.is_full]
        return fulls[-1] if fulls else None
