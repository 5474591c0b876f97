"""Lineage: each source is an inlet Asset, each backup location an outlet Asset."""

from __future__ import annotations

import dataclasses
from urllib.parse import quote

from airflow.sdk import Asset

from metabackup.spec import Source, TaskSpec


def source_assets(source: Source) -> list[Asset]:
    if source.kind == "files":
        return [Asset(uri=f"file://{path}", group="metabackup-source") for path in source.options["paths"]]
    if source.kind == "ldap":  # the host part names the Airflow connection: no lookup at parse time
        conn = source.options["conn_id"]
        return [Asset(uri=f"ldap://{conn}/{quote(base)}", group="metabackup-source") for base in source.options["base_dns"]]
    if source.kind == "postgres":  # a whole cluster: postgres:// URIs name one table, so an x- scheme
        return [Asset(uri=f"x-postgres-cluster://{source.options['conn_id']}", group="metabackup-source")]
    if source.kind == "namenode":  # the namespace of a NameService, named as HDFS clients name it
        return [Asset(uri=f"hdfs://{source.options['nameservice']}/", group="metabackup-source")]
    if source.kind == "oms":
        database = dataclasses.replace(source, kind="postgres", options=source.options["database"])
        files = dataclasses.replace(source, kind="files", options=source.options["files"])
        return source_assets(database) + source_assets(files)
    raise ValueError(f"no lineage mapping for source kind {source.kind!r}")


def location_asset(spec: TaskSpec, source: Source) -> Asset:
    """The directory holding this task's sets at the source's target."""
    task_dir = spec.task_dir
    target = source.target
    if target.type == "LocalDir":
        uri = f"file://{target.path.rstrip('/')}/{task_dir}"
    else:
        uri = f"hdfs://{target.nameservice}{target.path.rstrip('/')}/{task_dir}"
    return Asset(uri=uri, group="metabackup-location")
