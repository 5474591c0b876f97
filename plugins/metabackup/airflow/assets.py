"""Lineage: each source is an inlet Asset, each backup location an outlet Asset."""

from __future__ import annotations

from airflow.sdk import Asset

from metabackup.naming import task_dir_name
from metabackup.spec import Source, TaskSpec


def source_assets(source: Source) -> list[Asset]:
    if source.kind == "files":
        return [Asset(uri=f"file://{path}", group="metabackup-source") for path in source.options["paths"]]
    raise ValueError(f"no lineage mapping for source kind {source.kind!r}")


def location_asset(spec: TaskSpec, source: Source) -> Asset:
    """The directory holding this task's sets at the source's target."""
    task_dir = task_dir_name(spec.name, spec.created, spec.timezone)
    target = source.target
    if target.type == "LocalDir":
        uri = f"file://{target.path.rstrip('/')}/{task_dir}"
    else:
        uri = f"hdfs://{target.nameservice}{target.path.rstrip('/')}/{task_dir}"
    return Asset(uri=uri, group="metabackup-location")
