"""Lineage: each source is an inlet Asset, each backup location an outlet Asset.

The URIs come from the plug-ins: a source kind's ``asset_uris`` and a target's ``uri``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow.sdk import Asset

if TYPE_CHECKING:
    from metabackup.spec import Source, TaskSpec
    from metabackup.targets import TargetConfig


def source_assets(source: Source) -> list[Asset]:
    return [Asset(uri=uri, group="metabackup-source") for uri in source.plugin.asset_uris(source.options)]


def location_asset(spec: TaskSpec, source: Source, target: TargetConfig | None = None) -> Asset:
    """The directory holding this task's sets at the source's target (or at one of its copies)."""
    return Asset(uri=(target or source.target).uri(spec.task_dir), group="metabackup-location")
