"""Every task's backup sets per source and target, with chains and last verification: the data
behind the Airflow "Backups" page and ``/metabackup/api/backups``.  Reads the catalog at each
target (never Airflow's database); a target that cannot be read is reported, not fatal."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pendulum

from metabackup import rpo
from metabackup.catalog import Catalog
from metabackup.spec import TaskSpec, load_spec_dir


def overview(spec_dir: str | Path, now: pendulum.DateTime | None = None) -> dict[str, Any]:
    specs, errors = load_spec_dir(spec_dir)
    now = now or pendulum.now("UTC")
    return {
        "tasks": [task_overview(spec, now) for spec in specs.values()],
        "spec_errors": [str(e) for e in errors],
        "at": now.to_iso8601_string(),
    }


def task_overview(spec: TaskSpec, now: pendulum.DateTime | None = None) -> dict[str, Any]:
    task_dir = spec.task_dir
    now = now or pendulum.now("UTC")
    return {
        "name": spec.name, "type": spec.type, "policy": spec.policy.type, "description": spec.description,
        "backup_dag_id": spec.dag_id, "restore_dag_id": spec.restore_dag_id, "task_dir": task_dir,
        "schedule": (f"every {spec.schedule.every} {spec.schedule.period}(s) from {spec.schedule.start.isoformat()}"
                     if spec.schedule else "manual"),
        "sources": [source_overview(spec, name, task_dir, now) for name in (s.name for s in spec.sources)],
    }


def chain_verification(catalog: Catalog, stem: str, verified: dict[str, Any]) -> dict[str, Any] | None:
    """A set's last verification, marked failed when any set of its chain failed its own: a child
    of a corrupt parent is no more restorable than the parent."""
    own = verified.get(stem)
    chain = catalog.chain(stem) or []
    broken = [m.set for m in chain[:-1] if (verified.get(m.set) or {}).get("ok") is False]
    if own is None or not broken:
        return own
    return {**own, "ok": False, "error": f"its chain member {broken[0]} failed verification: "
                                         f"{verified[broken[0]].get('error')}"}


def source_overview(spec: TaskSpec, source_name: str, task_dir: str,
                    now: pendulum.DateTime | None = None) -> dict[str, Any]:
    from metabackup.verification import read_record

    source = spec.source(source_name)
    row: dict[str, Any] = {"source": source.name, "kind": source.kind, "target_type": source.target.type,
                           "max_backups": source.target.max_backups, "sets": [], "error": None,
                           "test_restore": None, "invalid": [], "used_bytes": 0, "free_bytes": None}
    row["target"] = source.target.uri(task_dir)
    row["asset_uris"] = list(source.plugin.asset_uris(source.options))
    row.update(_storage(spec, source.target))
    row["copies"] = [copy_overview(spec, source.name, number, task_dir) for number in range(1, len(source.copies) + 1)]
    try:
        target = source.target.open()
        catalog = Catalog.read(target, spec.name, task_dir, source.name, spec.timezone)
        record = read_record(target, task_dir, source.name)
    except Exception as exc:  # one unreachable target must not hide the others
        row["error"] = f"{type(exc).__name__}: {exc}"
        row["rpo"] = rpo.unreadable(spec, row["error"], now)
        return row
    row["rpo"] = rpo.status(spec, rpo.newest_restorable(catalog), now)
    row["used_bytes"] = sum(m.archive.size for m in catalog.sets)
    try:
        row["free_bytes"] = target.free_bytes()
    except Exception as exc:  # free space is a hint: the sets are still shown
        row["free_bytes_error"] = f"{type(exc).__name__}: {exc}"
    verified = record.get("sets", {})
    row["invalid"] = [{"name": bad.name, "reason": bad.reason} for bad in catalog.invalid]
    for manifest in reversed(catalog.sets):  # newest first
        chain = catalog.chain(manifest.set)
        row["sets"].append({
            "set": manifest.set, "type": manifest.type, "parent": manifest.parent, "chain_root": manifest.chain_root,
            "chain_length": len(chain) if chain else None, "restorable": chain is not None,
            "executed_at": manifest.executed_at, "finished_at": manifest.finished_at,
            "size": manifest.archive.size, "archive": manifest.archive.name, "cluster_version": manifest.cluster_version,
            "encrypted_with": manifest.encryption.key_id if manifest.encryption else None,
            "host": manifest.host,
            "verification": chain_verification(catalog, manifest.set, verified),
        })
    row["test_restore"] = record.get("test_restore")
    row["pitr"] = pitr_summary(catalog) if source.plugin.pitr_coverage else None
    return row


def copy_overview(spec: TaskSpec, source_name: str, number: int, task_dir: str) -> dict[str, Any]:
    """One off-site copy: where, how many sets it holds, its newest, and whether they verified."""
    from metabackup.verification import read_record

    config = spec.source(source_name).copies[number - 1]
    row: dict[str, Any] = {"location": f"copy {number}", "target_type": config.type, "target": config.uri(task_dir),
                           "max_backups": config.max_backups, "sets": 0, "newest": None, "restorable": 0,
                           "failed_verification": [], "invalid": 0, "error": None, **_storage(spec, config)}
    try:
        target = config.open()
        catalog = Catalog.read(target, spec.name, task_dir, source_name, spec.timezone)
        verified = read_record(target, task_dir, source_name).get("sets", {})
    except Exception as exc:  # an unreachable copy must not hide the rest
        row["error"] = f"{type(exc).__name__}: {exc}"
        return row
    row.update(sets=len(catalog.sets), newest=catalog.sets[-1].set if catalog.sets else None,
               restorable=sum(1 for m in catalog.sets if catalog.chain(m.set) is not None),
               failed_verification=[name for name, entry in verified.items() if not entry.get("ok")],
               invalid=len(catalog.invalid))
    return row


def _storage(spec: TaskSpec, config) -> dict[str, Any]:
    """Whether a location's new sets leave the cluster, under which key, and the warning when they
    leave it unencrypted."""
    encryption = spec.encryption_for(config)
    warning = None
    if config.off_cluster and encryption is None:
        warning = ("sets leave the cluster unencrypted: set the spec's encryption: {key_id: ...} "
                   "(README, Encryption)")
    return {"off_cluster": config.off_cluster, "key_id": encryption.key_id if encryption else None,
            "storage_warning": warning}


def pitr_summary(catalog: Catalog) -> dict[str, Any] | None:
    """What a point-in-time restore reaches: each chain's span, and the gaps between them."""
    try:
        coverage = catalog.pitr_coverage()
    except Exception as exc:  # a position without the recorded times must not hide the sets
        return {"error": f"{type(exc).__name__}: {exc}", "chains": [], "gaps": []}
    return {"chains": [{"full": c["full"], "start": c["start"], "end": c["end"]} for c in coverage["chains"]],
            "gaps": coverage["gaps"]}
