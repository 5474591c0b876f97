"""The project's one error hierarchy: every failure we raise on purpose is a
:class:`MetabackupError`, whose message names the file, field or place and the remedy.

    MetabackupError
    ├── SpecError            a task spec (or the spec folder) is invalid     (also a ValueError)
    ├── ManifestError        a manifest read back from a target is invalid   (also a ValueError)
    ├── TargetError          a target cannot be used as asked
    ├── LockBusy             another run holds the source's lease
    ├── BackupError          a set cannot be taken (preflight, disk full, a source's own failure)
    │   ├── PreflightError, OutOfSpace, RunIncomplete
    │   └── PostgresSourceError, LdapSourceError, NameNodeSourceError
    ├── RestoreError         a set cannot be restored as asked
    └── VerificationFailed   a committed set failed verification
"""

from __future__ import annotations


class MetabackupError(RuntimeError):
    """Base of every error metabackup raises on purpose (a RuntimeError, as before)."""


class BackupError(MetabackupError):
    """A backup set cannot be taken; the message says which source, where and why."""


class RestoreError(MetabackupError):
    """A backup cannot be restored as asked; the message says why."""


class SpecError(MetabackupError, ValueError):
    """A spec (or a set of specs) is invalid.  ``problems`` holds ``(file, field, reason)`` rows."""

    def __init__(self, problems: list[tuple[str, str, str]]):
        self.problems = problems
        lines = [f"{file}: {fld}: {reason}" for file, fld, reason in problems]
        super().__init__("invalid backup task spec\n  " + "\n  ".join(lines))


class SpecClash(SpecError):
    """A problem across spec files (a task name used by several files), which no single file's DAG can see."""
