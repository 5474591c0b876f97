"""Test helpers: build backup-set manifests and chains without touching a target.

A set is named by a small integer ``t`` (its "stem time"): the set executed ``t`` minutes after
2026-11-24 00:00 UTC, so ``t`` orders sets exactly as their 14-digit stamps and their
``executed_at`` strings do.  A parent may be given as an int (the parent's stem time, same
version and source) or as a full stem string (e.g. a parent at another version).

Imported by the unit tests as ``from chains import ...`` (pytest puts ``tests/unit`` on sys.path
because the folder is not a package).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from metabackup.catalog import Catalog
from metabackup.manifest import FULL, INCREMENTAL, ArchiveInfo, Manifest

BASE = datetime(2026, 11, 24, tzinfo=UTC)
TASK = "default"
TASK_DIR = "default_20261124000000"


def moment(t: int) -> datetime:
    return BASE + timedelta(minutes=t)


def stamp(t: int) -> str:
    """The 14-digit ``YYYYMMDDHHmmss`` stamp of stem time ``t``."""
    return moment(t).strftime("%Y%m%d%H%M%S")


def iso(t: int) -> str:
    """The ``executed_at`` of stem time ``t``: ISO-8601 UTC, as pendulum's to_iso8601_string writes it."""
    return moment(t).strftime("%Y-%m-%dT%H:%M:%SZ")


def stem(t: int, version: str = "3.1.0", source: str = "OMS") -> str:
    return f"{version}_{source}_{stamp(t)}"


def time_of(m: Manifest) -> int:
    """The stem time ``t`` a manifest built here was made from."""
    when = datetime.strptime(m.set.rsplit("_", 1)[1], "%Y%m%d%H%M%S").replace(tzinfo=UTC)
    return int((when - BASE).total_seconds() // 60)


def times(manifests: Iterable[Manifest]) -> list[int]:
    return [time_of(m) for m in manifests]


def make_set(
    stem_time: int,
    type: str,  # noqa: A002 - the manifest's own field name
    parent: int | str | None,
    version: str = "3.1.0",
    source: str = "OMS",
    *,
    chain_root: str | None = None,
    executed_at: str | None = None,
) -> Manifest:
    """One committed backup set.  ``type`` is ``full``/``incremental`` (or ``F``/``I``)."""
    type = {"F": FULL, "I": INCREMENTAL}.get(type, type)
    if type not in (FULL, INCREMENTAL):
        raise ValueError(f"unknown set type {type!r}")
    name = stem(stem_time, version, source)
    parent_stem = stem(parent, version, source) if isinstance(parent, int) else parent
    if chain_root is None:
        chain_root = name if type == FULL else (parent_stem or name)
    when = executed_at or iso(stem_time)
    return Manifest(
        set=name, task=TASK, task_dir=TASK_DIR, source=source, kind="files", type=type,
        parent=parent_stem, chain_root=chain_root, cluster_version=version,
        executed_at=when, started_at=when, finished_at=when,
        archive=ArchiveInfo(name=f"{name}.tar.gz", size=1000 + stem_time,
                            sha256=hashlib.sha256(name.encode()).hexdigest()),
        content={"entries": stem_time, "bytes": 1000 + stem_time}, position={"file_index_sha256": hashlib.sha256(name.encode()).hexdigest(), "entries": stem_time,
                  "paths": ["/srv/BigData/om-server/conf"]},
        reason="test", tools={"metabackup": "test"},
    )


def full(t: int, **kw) -> Manifest:
    return make_set(t, FULL, None, **kw)


def inc(t: int, parent: int | str | None, **kw) -> Manifest:
    return make_set(t, INCREMENTAL, parent, **kw)


def linear(shape: str, start: int = 0, **kw) -> list[Manifest]:
    """Sets from a shape like ``"F I I F I"``: one per letter at stem times start, start+1, ...;
    each ``I`` is an incremental on the set just before it; chain roots are tracked."""
    out: list[Manifest] = []
    root: str | None = None
    for offset, letter in enumerate(shape.split()):
        t = start + offset
        if letter == "F":
            m = make_set(t, FULL, None, **kw)
            root = m.set
        elif letter == "I":
            if not out:
                raise ValueError("a shape cannot start with an incremental")
            m = make_set(t, INCREMENTAL, out[-1].set, chain_root=root, **kw)
        else:
            raise ValueError(f"unknown letter {letter!r} in shape {shape!r}")
        out.append(m)
    return out


def catalog(*groups: Manifest | Iterable[Manifest]) -> Catalog:
    """A catalog of the given sets (single manifests or iterables of them), in any order."""
    sets: list[Manifest] = []
    for group in groups:
        if isinstance(group, Manifest):
            sets.append(group)
        else:
            sets.extend(group)
    return Catalog.of(sets)


def reference_chain(sets: Iterable[Manifest], name: str) -> list[str] | None:
    """An independent model of "the sets needed to restore ``name``", full first (or None)."""
    index = {m.set: m for m in sets}
    seen: list[str] = []
    current = index.get(name)
    while current is not None and current.set not in seen:
        seen.append(current.set)
        if current.type == FULL:
            return list(reversed(seen))
        current = index.get(current.parent) if current.parent else None
    return None
