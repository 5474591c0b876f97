"""Scheduled verification: re-read every committed set, and test-restore the newest chain.

Results are kept at the target beside the sets, one hidden file per source
(``.metabackup-verification-<source>.json``, written atomically, 0600), so anything that can
read the catalog (the Backups page, the CLI) also sees when each set was last verified.

An LDAP chain is test-restored into a scratch slapd of its own (:mod:`metabackup.scratch_slapd`).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pendulum

from metabackup.catalog import Catalog
from metabackup.encryption import EncryptionError, KeyUnavailable, WrongKey
from metabackup.errors import MetabackupError
from metabackup.keys import KeyRing
from metabackup.locks import lock_for
from metabackup.restore import RestorePlan, execute_plan, plan_restore, validate_restore, verified_plan
from metabackup.sealed import check_decrypts
from metabackup.spec import TaskSpec
from metabackup.targets import BackupTarget, TargetError

log = logging.getLogger(__name__)

RECORD_PREFIX = ".metabackup-verification-"

class VerificationFailed(MetabackupError):
    """At least one set failed verification; the message lists them."""


def record_name(source: str) -> str:
    return f"{RECORD_PREFIX}{source}.json"


def read_record(target: BackupTarget, task_dir: str, source: str) -> dict[str, Any]:
    """``{"sets": {set: {...}}, "test_restore": {...}}``, empty when never verified.  The file is read
    back from the target, so it is untrusted: entries of the wrong shape are dropped."""
    name = record_name(source)
    try:
        if name not in target.list_names(task_dir):
            return {}
        with target.open_read(task_dir, name) as handle:
            raw = json.loads(handle.read(1 << 24))
    except (TargetError, OSError, ValueError) as exc:
        log.warning("cannot read %s at %s/%s: %s", name, target.uri, task_dir, exc)
        return {}
    if not isinstance(raw, dict):
        return {}
    sets = raw.get("sets") if isinstance(raw.get("sets"), dict) else {}
    record: dict[str, Any] = {"sets": {k: v for k, v in sets.items() if isinstance(k, str) and _well_formed(v)}}
    if _well_formed(raw.get("test_restore")):
        record["test_restore"] = raw["test_restore"]
    return record


def _well_formed(entry: Any) -> bool:
    return (isinstance(entry, dict) and isinstance(entry.get("ok"), bool)
            and all(isinstance(entry.get(k), (str, type(None))) for k in ("error", "verified_at", "at", "set", "location")))


def _write_record(target: BackupTarget, task_dir: str, source: str, record: dict[str, Any]) -> None:
    target.put_bytes(json.dumps(record, indent=2, sort_keys=True).encode(), task_dir, record_name(source))


def verify_sets(spec: TaskSpec, source_name: str) -> dict[str, Any]:
    """Re-read every committed set of the source against its manifest; record and report."""
    with lock_for(spec, source_name).held(f"verification of {spec.name} by pid {os.getpid()}"):
        return _verify_sets(spec, source_name)


def _verify_sets(spec: TaskSpec, source_name: str) -> dict[str, Any]:
    """Every location of the source that keeps a catalog of its own (the primary and each off-site
    copy; a LocalDir mirror is written and checked with the primary) is verified and recorded."""
    summaries, failed = [], []
    for label, config in spec.source(source_name).locations():
        if label == "mirror":
            continue
        summary = _verify_location(spec, source_name, config.open())
        summaries.append({"location": label, **summary})
        failed += [f"{label}: {problem}" if label != "primary" else problem for problem in summary["failed"]]
    where = ", ".join(f"{s['location']} {s['target']}" for s in summaries)
    if failed:
        raise VerificationFailed(f"{spec.name}/{source_name} at {where}: {len(failed)} problem(s):\n  " + "\n  ".join(failed))
    primary = {k: v for k, v in summaries[0].items() if k != "location"}
    return {**primary, "copies": summaries[1:]} if len(summaries) > 1 else primary


def _verify_location(spec: TaskSpec, source_name: str, target: BackupTarget) -> dict[str, Any]:
    """Each set re-read against its manifest; an encrypted one decrypted to nowhere, every chunk's
    tag checked; a set whose key cannot be had is reported UNRESTORABLE."""
    task_dir = spec.task_dir
    keys = KeyRing.for_spec(spec)
    catalog = Catalog.read(target, spec.name, task_dir, source_name, spec.timezone)
    record = read_record(target, task_dir, source_name)
    sets = {k: v for k, v in record.get("sets", {}).items() if catalog.get(k) is not None}
    failed = []
    for number, manifest in enumerate(catalog.sets, 1):
        now = pendulum.now("UTC").to_iso8601_string()
        try:
            target.verify(task_dir, manifest.archive.name, manifest.archive.sha256, manifest.archive.size)
            check_decrypts(target, task_dir, manifest, keys)
            sets[manifest.set] = {"ok": True, "verified_at": now, "error": None}
            log.info("%s: %d/%d %s ok (%d bytes%s)", source_name, number, len(catalog.sets), manifest.set,
                     manifest.archive.size, ", every chunk authenticated" if manifest.encryption else "")
        except (KeyUnavailable, WrongKey) as exc:
            error = f"UNRESTORABLE: its key cannot be had: {exc}"
            sets[manifest.set] = {"ok": False, "verified_at": now, "error": error}
            failed.append(f"{manifest.set}: {error}")
            log.error("%s: %s is %s", source_name, manifest.set, error)
        except (TargetError, OSError, EncryptionError) as exc:
            sets[manifest.set] = {"ok": False, "verified_at": now, "error": str(exc)}
            failed.append(f"{manifest.set}: {exc}")
            log.error("%s: %s FAILED verification: %s", source_name, manifest.set, exc)
    for orphan in catalog.orphans():
        failed.append(f"{orphan.set}: its chain is broken (a parent set is missing)")
    for bad in catalog.invalid:
        failed.append(f"{bad.name}: invalid manifest: {bad.reason}")
    _write_record(target, task_dir, source_name, {**record, "sets": sets})
    return {"target": target.uri, "sets": len(catalog.sets), "failed": failed}


def restore_to_scratch(spec: TaskSpec, source_name: str, scratch_root: str | None = None) -> dict[str, Any]:
    """The test restore: the newest restorable chain of the source into a scratch instance (a
    directory under ``scratch_root``, or a scratch slapd), validated, then discarded."""
    with lock_for(spec, source_name).held(f"test restore of {spec.name} by pid {os.getpid()}"):
        return _restore_to_scratch(spec, source_name, scratch_root)


def _restore_to_scratch(spec: TaskSpec, source_name: str, scratch_root: str | None = None) -> dict[str, Any]:
    newest = plan_restore(spec, source_name, location=None).chain[-1].set
    scratch = Path(tempfile.mkdtemp(prefix=f"metabackup-verify-{spec.name}-{source_name}-", dir=scratch_root))
    os.chmod(scratch, 0o755)  # a PostgreSQL restore runs as the postgres user, which must enter it
    started = pendulum.now("UTC")
    location = None
    try:  # read from the first location where the chain is intact, and say which
        plan = verified_plan(spec, source_name, newest)
        location = plan.location
        checks = _restore_into_scratch(plan, scratch)
        outcome = {"set": newest, "ok": True, "at": started.to_iso8601_string(), "checks": checks,
                   "location": location, "seconds": round((pendulum.now("UTC") - started).total_seconds(), 1),
                   "error": None}
    except Exception as exc:
        outcome = {"set": newest, "ok": False, "at": started.to_iso8601_string(), "location": location,
                   "error": str(exc)}
        _record_test_restore(spec, source_name, outcome)
        raise VerificationFailed(f"test restore of {newest} failed: {exc}") from exc
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    _record_test_restore(spec, source_name, outcome)
    log.info("%s: test restore of %s from %s passed in %.1f s: %s", source_name, newest, location,
             outcome["seconds"], checks)
    return outcome


def _record_test_restore(spec: TaskSpec, source: str, outcome: dict[str, Any]) -> None:
    """Kept with the primary's verification record (the Backups page reads it there)."""
    target = spec.source(source).target.open()
    record = read_record(target, spec.task_dir, source)
    _write_record(target, spec.task_dir, source, {**record, "test_restore": outcome})


def _restore_into_scratch(plan: RestorePlan, scratch: Path) -> dict[str, Any]:
    """Restore into the kind's scratch destination (a directory, or a scratch server) and validate."""
    with plan.source.plugin.scratch_destination(plan.source, scratch) as destination:
        execute_plan(plan, destination)
        return validate_restore(plan, destination)
