"""Source kinds by name, imported on first use (DAG parsing never loads a kind's client library)."""

from __future__ import annotations

import importlib

from metabackup.sources.base import RestoreError, SourceKind

KINDS: dict[str, str] = {
    "files": "metabackup.sources.files:FilesSource",
    "ldap": "metabackup.sources.ldap:LdapSource",
    "postgres": "metabackup.sources.postgres:PostgresSource",
    "oms": "metabackup.sources.oms:OmsSource",
    "namenode": "metabackup.sources.namenode:NameNodeSource",
}


def kind_class(kind: str) -> type[SourceKind]:
    try:
        module, name = KINDS[kind].split(":")
    except KeyError:
        raise ValueError(f"unknown source kind {kind!r} (available: {', '.join(sorted(KINDS))})") from None
    return getattr(importlib.import_module(module), name)


__all__ = ["KINDS", "RestoreError", "SourceKind", "kind_class"]
