"""Source kinds by name."""

from __future__ import annotations

from metabackup.sources.base import RestoreError, SourceKind
from metabackup.sources.files import FilesSource

KINDS: dict[str, type[SourceKind]] = {FilesSource.kind: FilesSource}


def kind_class(kind: str) -> type[SourceKind]:
    try:
        return KINDS[kind]
    except KeyError:
        raise ValueError(f"unknown source kind {kind!r} (available: {', '.join(sorted(KINDS))})") from None


__all__ = ["KINDS", "RestoreError", "SourceKind", "kind_class"]
