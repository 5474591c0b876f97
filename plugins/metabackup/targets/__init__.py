"""Backup targets by spec type."""

from __future__ import annotations

from metabackup.spec import Target
from metabackup.targets.base import BackupTarget, TargetError
from metabackup.targets.localdir import LocalDirTarget


def open_target(target: Target) -> BackupTarget:
    if target.type == "LocalDir":
        return LocalDirTarget(target.path, target.mirror)
    if target.type == "LocalHDFS":
        from metabackup.targets.localhdfs import LocalHDFSTarget

        return LocalHDFSTarget(target)
    raise TargetError(f"unknown target type {target.type!r}")


__all__ = ["BackupTarget", "LocalDirTarget", "TargetError", "open_target"]
