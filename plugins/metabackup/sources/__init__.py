"""Source kinds: one plug-in per ``kind`` of a spec's source, found through :data:`KINDS`.

A kind is one module (or package) holding its options model, its :class:`SourceKind` plug-in and its
:class:`SourceEngine`.  Adding one = that module + one line here + one line in the source contract
suite (``tests/contract/kinds.py``); the README's *Development* section walks through it.
"""

from __future__ import annotations

from metabackup.registry import Registry
from metabackup.sources.base import Rebuilt, RestoreError, RestoreRequest, SourceEngine, SourceKind

KINDS = Registry("source kind", {
    "files": "metabackup.sources.files:KIND",
    "ldap": "metabackup.sources.ldap:KIND",
    "postgres": "metabackup.sources.postgres:KIND",
    "oms": "metabackup.sources.oms:KIND",
    "namenode": "metabackup.sources.namenode:KIND",
})


def source_kind(name: str) -> SourceKind:
    """The plug-in of kind ``name``."""
    return KINDS.get(name)


__all__ = ["KINDS", "Rebuilt", "RestoreError", "RestoreRequest", "SourceEngine", "SourceKind", "source_kind"]
