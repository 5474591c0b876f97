"""Backup targets by spec type."""

from __future__ import annotations

from metabackup.spec import Target
from metabackup.targets.base import BackupTarget, TargetError
from metabackup.targets.localdir import LocalDirTarget


def open_target(target: Target) -> BackupTarget:
    if target.type == "LocalDir":
        return LocalDirTarget(target.path, target.mirror)
    raise TargetError(
        f"target type {target.type} is accepted in specs but not implemented yet in this release; "
        "use LocalDir for now"
    )


__all__ = ["BackupTarget", "LocalDirTarget", "TargetError", "open_target"]
