"""Off-site copies: every set committed at a source's primary target is replicated to each of its
``copies``, where it is committed again (manifest last), so each copy holds a catalog of its own and
a restore works from it when the primary is gone.

``replicate(run, n)`` runs after the primary's ``verify``: it copies the run's set and every ancestor
of its chain the copy lacks (so a copy that missed a run catches up), re-reads each archive there
against its manifest, commits it, then applies the copy's own ``max_backups``.  The bytes come from
the run's staged archive when it is still there, otherwise from the primary (checked against the
manifest on the way).  Every step is idempotent: a set already committed at the copy is skipped.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any, BinaryIO

from metabackup import fsutil, sealed
from metabackup.catalog import Catalog
from metabackup.errors import BackupError
from metabackup.manifest import Manifest, sha256_of
from metabackup.naming import SetName, compression_of
from metabackup.pipeline import SetRun, prune, set_event
from metabackup.targets import BackupTarget, TargetError
from metabackup.targets.base import TargetConfig

log = logging.getLogger(__name__)


def replicate(run: SetRun, number: int, keep: bool = True) -> dict[str, Any]:
    """Replicate the run's committed set (with its missing ancestors) to copy ``number`` (1-based)."""
    run.hold()
    if not 1 <= number <= len(run.source.copies):
        raise BackupError(f"{run.source.name} has {len(run.source.copies)} copies; there is no copy {number}")
    config = run.source.copies[number - 1]
    decision = run.decision()
    primary = run.catalog()
    manifest = primary.get(decision.set)
    if manifest is None:
        raise BackupError(f"{run.source.name}: set {decision.set} is not committed at {run.target.uri}; "
                          f"nothing to replicate to copy {number}")
    chain = primary.chain(manifest.set)
    if chain is None:
        raise BackupError(f"{run.source.name}: the chain of {manifest.set} is broken at {run.target.uri}; "
                          f"not replicating it to copy {number}")
    target = config.open()
    target.ensure_writable(run.task_dir)
    target.remove_partials(run.task_dir)
    there = Catalog.read(target, run.spec.name, run.task_dir, run.source.name, run.spec.timezone)
    copied = []
    for member in chain:
        if there.get(member.set) is None:
            _copy_set(run, member, target, config)
            copied.append(member.set)
    log.info("%s: copy %d (%s) holds the chain of %s; copied %s", run.source.name, number, target.uri,
             manifest.set, copied or "nothing (already there)")
    kept = prune(run, target, Catalog.read(target, run.spec.name, run.task_dir, run.source.name, run.spec.timezone),
                 config.max_backups) if keep else None
    return {**set_event(target, manifest), "copy": number, "copied": copied, "retention": kept}


def _copy_set(run: SetRun, manifest: Manifest, target: BackupTarget, config: TargetConfig) -> None:
    """Store one set at ``target``: its archive (verified there), then its manifest.  A copy that keeps
    its sets under another key gets the same archive and a manifest whose data key is wrapped by its
    own key; one that keeps them encrypted where the primary does not (or the reverse) gets the
    archive encrypted under a new data key (or decrypted), from the authenticated ``.tar.gz``."""
    wanted = run.spec.encryption_for(config)
    if sealed.same_key(manifest, wanted):
        stored = manifest
    elif manifest.encryption is not None and wanted is not None:
        stored = sealed.rewrapped(manifest, run.keys, wanted)
    else:
        stored = None  # transcoded below, unless a retry finds it there already
    name = stored.archive.name if stored else SetName.parse(manifest.set).archive_name(
        wanted is not None, compression_of(manifest.archive.name))
    if stored is not None and target.exists(run.task_dir, name):
        try:
            target.verify(run.task_dir, name, stored.archive.sha256, stored.archive.size)
            return _commit_copy(run, stored, target)  # a retry after the archive landed
        except TargetError as exc:
            log.info("replacing an uncommitted copy of %s at %s: %s", name, target.uri, exc)
    fsutil.ensure_private_dir(run.workdir)
    if stored is None:
        local, fetched = run.workdir / f".replicate-{name}", True
        stored = sealed.transcoded(manifest, lambda: _open_plain(run, manifest), run.keys, wanted, local)
    else:
        local, fetched = _local_archive(run, manifest)
    try:
        target.put_file(local, run.task_dir, name)
    finally:
        if fetched:
            local.unlink(missing_ok=True)
    target.verify(run.task_dir, name, stored.archive.sha256, stored.archive.size)
    _commit_copy(run, stored, target)


def _commit_copy(run: SetRun, manifest: Manifest, target: BackupTarget) -> None:
    target.put_bytes(manifest.to_json(), run.task_dir, SetName.parse(manifest.set).manifest)
    log.info("replicated %s to %s/%s%s", manifest.set, target.uri, run.task_dir,
             f" (encrypted with key {manifest.encryption.key_id})" if manifest.encryption else "")


def _open_plain(run: SetRun, manifest: Manifest) -> BinaryIO:
    """The set's ``.tar.gz`` from the run's staged archive when it is still there, else from the primary."""
    staged = run.workdir / manifest.archive.name
    if manifest.set == run.name.stem and staged.exists():
        return sealed.plain_reader(open(staged, "rb"), manifest, run.keys, str(staged))
    return sealed.open_plain(run.target, run.task_dir, manifest, run.keys)


def _local_archive(run: SetRun, manifest: Manifest) -> tuple[Path, bool]:
    """A local file holding the set's archive: the run's staged one if it is still there and intact,
    else a private copy fetched from the primary and checked against the manifest (True: delete it)."""
    staged = run.workdir / manifest.archive.name
    if manifest.set == run.name.stem and staged.exists():
        if _sha256_of_file(staged) == (manifest.archive.sha256, manifest.archive.size):
            return staged, False
    fsutil.ensure_private_dir(run.workdir)
    local = run.workdir / f".replicate-{manifest.archive.name}"
    digest = hashlib.sha256()
    with run.target.open_read(run.task_dir, manifest.archive.name) as source, fsutil.private_open(local) as out:
        size = fsutil.copy_stream(source, out, on_chunk=digest.update)
    if (digest.hexdigest(), size) != (manifest.archive.sha256, manifest.archive.size):
        local.unlink(missing_ok=True)
        raise BackupError(f"{run.source.name}: {manifest.archive.name} at {run.target.uri} does not match its manifest "
                          f"(sha256 {digest.hexdigest()}, {size} bytes); not replicating a corrupt archive")
    return local, True


def _sha256_of_file(path: Path) -> tuple[str, int]:
    with open(path, "rb") as handle:
        return sha256_of(handle)
