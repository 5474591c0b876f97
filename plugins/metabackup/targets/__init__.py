"""Backup targets: one plug-in per ``type`` of a spec's ``target``, found through :data:`TYPES`.

A target type is one module holding its settings model (a :class:`TargetConfig`: fields, checks,
``uri()``, ``open()``) and its :class:`BackupTarget` (put, open-for-read, list, delete, partial
sweep, free space).  Adding one = that module + one line here + one line in the target contract
suite (``tests/contract/backends.py``).
"""

from __future__ import annotations

from metabackup.registry import Registry
from metabackup.targets.base import BackupTarget, TargetConfig, TargetError

TYPES = Registry("target type", {
    "LocalDir": "metabackup.targets.localdir:LocalDirConfig",
    "LocalHDFS": "metabackup.targets.localhdfs:LocalHDFSConfig",
    "RemoteHDFS": "metabackup.targets.remotehdfs:RemoteHDFSConfig",
    "S3": "metabackup.targets.s3:S3Config",
    "SFTP": "metabackup.targets.sftp:SFTPConfig",
})


def target_config(type_name: str) -> type[TargetConfig]:
    """The settings model of a target type."""
    return TYPES.get(type_name)


__all__ = ["TYPES", "BackupTarget", "TargetConfig", "TargetError", "target_config"]
