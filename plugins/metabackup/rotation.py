"""Key rotation: re-wrap every encrypted set's data key under a new key-encryption key.

Archives are never rewritten: each encrypted set's manifest holds its data key wrapped by the key
it names, so rotating means unwrapping with the old key and writing the manifest again with the
data key wrapped by the new one.  Each manifest is replaced atomically (the target's ``put_bytes``),
so every set stays restorable throughout: before its manifest is replaced it needs the old key,
after, the new one.  A killed rotation is resumed by running it again: sets already under the new
key are skipped, and the lease it left is the rerun's own (every rotation holds it under one name).  Each source is rotated under its lease, so no backup run commits a set under the
old key meanwhile; after the rotation, point the spec's ``encryption.key_id`` at the new key, then
retire the old one.

Re-wrapping protects the sets from the old key from now on; it cannot take back a copy of a
manifest someone made while it was under the old key (restic and every envelope scheme share
this).  When an old key was exposed, rotate, then take new full sets (new data keys) and let
retention expire the old chains.
"""

from __future__ import annotations

import logging
from typing import Any

from metabackup.catalog import Catalog
from metabackup.encryption import EncryptionError, fingerprint
from metabackup.keys import KeyConfig, KeyRing
from metabackup.locks import lock_for
from metabackup.naming import SetName
from metabackup.sealed import rewrapped
from metabackup.spec import TaskSpec

log = logging.getLogger(__name__)


class RotationIncomplete(EncryptionError):
    """Some sets could not be re-wrapped (their old key is missing or wrong); the message lists them."""


def rotate(spec: TaskSpec, new_key_id: str, old_key_id: str | None = None, keys: KeyRing | None = None,
           sources: list[str] | None = None) -> dict[str, Any]:
    """Re-wrap the data key of every encrypted set of the spec (at every location that keeps a catalog:
    the primary, whose LocalDir mirror is written with it, and each copy) under ``new_key_id``; with
    ``old_key_id``, only the sets under that key.  Returns counts per source and location; raises
    :class:`RotationIncomplete` after trying every set if any could not be re-wrapped."""
    keys = keys or KeyRing.for_spec(spec)
    new = KeyConfig(key_id=new_key_id)
    new_fingerprint = fingerprint(keys.key(new_key_id, needed_for="the rotation"))  # fail before touching anything
    report: dict[str, Any] = {"new_key_id": new_key_id, "new_key_fingerprint": new_fingerprint, "sources": {}}
    failed: list[str] = []
    for source in spec.sources:
        if sources and source.name not in sources:
            continue
        holder = f"key rotation of {spec.name}"  # the same for every rotation: a rerun resumes in a killed one's lease
        lock = lock_for(spec, source.name)
        lock.acquire(holder)
        try:
            for label, config in source.locations():
                if label == "mirror":
                    continue  # written with every manifest of the primary
                counts = _rotate_location(spec, source.name, config.open(), new, new_fingerprint, old_key_id, keys,
                                          failed, label)
                report["sources"].setdefault(source.name, {})[label] = counts
        finally:
            lock.release(holder)  # also the lease a killed rotation left
    if failed:
        raise RotationIncomplete(f"{len(failed)} set(s) of task {spec.name} could not be re-wrapped under key "
                                 f"{new_key_id!r} (they remain restorable with their old key, if it exists):\n  "
                                 + "\n  ".join(failed))
    return report


def _rotate_location(spec: TaskSpec, source: str, target, new: KeyConfig, new_fingerprint: str,
                     old_key_id: str | None, keys: KeyRing, failed: list[str], label: str) -> dict[str, int]:
    catalog = Catalog.read(target, spec.name, spec.task_dir, source, spec.timezone)
    counts = {"rewrapped": 0, "already": 0, "unencrypted": 0, "other_key": 0}
    for manifest in catalog.sets:
        info = manifest.encryption
        if info is None:
            counts["unencrypted"] += 1
        elif info.key_id == new.key_id and info.key_fingerprint == new_fingerprint:
            counts["already"] += 1
        elif old_key_id is not None and info.key_id != old_key_id:
            counts["other_key"] += 1
        else:
            try:
                updated = rewrapped(manifest, keys, new)
            except EncryptionError as exc:
                failed.append(f"{source} {label} {manifest.set}: {exc}")
                log.error("%s: cannot re-wrap %s at %s: %s", source, manifest.set, target.uri, exc)
                continue
            target.put_bytes(updated.to_json(), spec.task_dir, SetName.parse(manifest.set).manifest)
            counts["rewrapped"] += 1
            log.info("%s: %s at %s re-wrapped from key %s to %s", source, manifest.set, target.uri, info.key_id,
                     new.key_id)
    log.info("%s %s (%s): %s", source, label, target.uri, counts)
    return counts

