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
    def read(cls, target, task: str, task_dir: str, source: str, timezone: str | None = None) -> Catalog:
        """The catalog of one source at ``target``: every manifest validated and checked to belong to
        this task, task directory and source (and, given the task's ``timezone``, executed when its
        name says); the ones that fail are kept aside in ``invalid``."""
        valid, invalid = target.read_manifests(task, task_dir, source, timezone)
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

    @cached_property
    def _chains(self) -> dict[str, tuple[Manifest, ...] | None]:
        return {}

    def chain(self, stem: str) -> list[Manifest] | None:
        """The sets needed to restore ``stem``, full first; None if any member is missing."""
        known = self._chains
        if stem in known:
            found = known[stem]
            return None if found is None else list(found)
        index = self.by_name()
        walked: list[Manifest] = []
        current = index.get(stem)
        result: tuple[Manifest, ...] | None = None
        while current is not None:
            if current.set in known:  # the rest of the chain is known already
                rest = known[current.set]
                result = None if rest is None else rest + tuple(reversed(walked))
                break
            walked.append(current)
            if current.is_full:
                result = tuple(reversed(walked))
                break
            if current.parent is None or len(walked) > len(index):
                break
            current = index.get(current.parent)
        # every set walked has its own chain: the result's tail from it (or None with it)
        for depth, member in enumerate(walked):
            known[member.set] = None if result is None else result[:len(result) - depth]
        known.setdefault(stem, result)
        return None if result is None else list(result)

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

    # -----------------------------------------------------------------------------------------
    # Point-in-time coverage (PostgreSQL kinds)
    # -----------------------------------------------------------------------------------------
    @staticmethod
    def pg_position(manifest: Manifest) -> dict:
        """The PostgreSQL position of a ``postgres`` set (or of an ``oms`` set's database)."""
        position = manifest.position or {}
        return position.get("postgres", position) if manifest.kind == "oms" else position

    @staticmethod
    def _latest(*times: str | None) -> str | None:
        import pendulum

        present = [t for t in times if t]
        return max(present, key=lambda t: pendulum.parse(t)) if present else None

    @classmethod
    def pg_until(cls, manifest: Manifest) -> str:
        """Until when (server clock) the WAL up to a set's end holds every commit: an
        incremental's time before its WAL switch (or its last commit, if later), a full's
        consistency time; older sets without these times: their finish time."""
        position = cls.pg_position(manifest)
        if manifest.is_full:
            return position.get("consistent_at") or manifest.finished_at
        return cls._latest(position.get("wal_end_time"), position.get("last_commit_time")) or manifest.finished_at

    @classmethod
    def bridge_until(cls, full: Manifest) -> str | None:
        """Until when a full's bridge WAL holds every commit (None without a bridge)."""
        bridge = cls.pg_position(full).get("bridge")
        return cls._latest(bridge.get("covered_until"), bridge.get("last_commit_time")) if bridge else None

    @classmethod
    def pg_floor(cls, full: Manifest) -> str:
        """No commit in a full's own WAL is later than this: its bridge's last commit (or the
        bridge's start time when it holds none), else its consistency time.  A moment from
        here on is reached by the full's chain once an incremental follows it."""
        bridge = cls.pg_position(full).get("bridge")
        if bridge and (bridge.get("last_commit_time") or bridge.get("covered_until")):
            return bridge.get("last_commit_time") or bridge["covered_until"]
        return cls.pg_until(full)

    def bridge_after(self, stem: str) -> Manifest | None:
        """The committed full whose bridge WAL continues the set ``stem`` (the WAL from its end to
        that full's end), or None."""
        last = self.get(stem)
        if last is None:
            return None
        end = self.pg_position(last).get("end_lsn")
        for manifest in self.restorable():
            bridge = self.pg_position(manifest).get("bridge") if manifest.is_full else None
            if bridge and (bridge.get("from_set") == stem or (bridge.get("from_set") is None and bridge.get("start_lsn") == end)):
                return manifest
        return None

    def pitr_coverage(self) -> dict:
        """What a point-in-time restore can reach, in server time (ISO-8601 UTC strings).

        ``chains``: per chain (oldest first) ``full``, ``last`` (its newest set), ``sets`` (each
        set and until when its WAL holds every commit), ``start`` (from when the chain reaches:
        the full's consistency time, or earlier when its bridge shows no later commit in its WAL),
        ``end`` (until when the chain, plus the next full's bridge WAL if any, reaches) and
        ``bridge`` (that full, or None).  ``gaps``: the spans no chain reaches between two
        chains, with ``after``/``after_end``, ``before``/``before_start`` and the ``reason``.
        Older sets without the recorded times count from their finish times."""
        import pendulum

        def at(text: str):
            return pendulum.parse(text).in_timezone("UTC")

        usable = self.restorable()
        chains = []
        for full in (m for m in usable if m.is_full):
            members = [m for m in usable if (self.chain(m.set) or [None])[0] is full]
            sets = [{"set": full.set, "until": self.pg_until(full)}]
            sets += [{"set": m.set, "until": self.pg_until(m)} for m in members[1:]]
            start = self._latest(self.pg_floor(full)) if len(members) > 1 else sets[0]["until"]
            if len(members) > 1 and at(start) > at(sets[0]["until"]):
                start = sets[0]["until"]
            chains.append({"full": full.set, "last": members[-1].set, "sets": sets, "start": start,
                           "end": sets[-1]["until"], "bridge": None})
        gaps = []
        for older, newer in zip(chains, chains[1:]):
            bridge_full = self.bridge_after(older["last"])
            newer_full = self.get(newer["full"])
            if bridge_full is not None and bridge_full.set == newer["full"]:
                older["bridge"] = bridge_full.set
                older["end"] = self._latest(older["end"], self.bridge_until(newer_full))
                if at(older["end"]) < at(newer["start"]):
                    gaps.append({"after": older["last"], "after_end": older["end"], "before": newer["full"],
                                 "before_start": newer["start"],
                                 "reason": f"the moment falls while the base backup of {newer['full']} was taken "
                                           "(reachable once an incremental follows it)"})
                continue
            gap = self.pg_position(newer_full).get("bridge_gap") or {}
            reason = gap.get("reason") or "no bridge WAL was kept between them"
            gaps.append({"after": older["last"], "after_end": older["end"], "before": newer["full"],
                         "before_start": newer["start"], "reason": reason})
        return {"chains": chains, "gaps": gaps}
