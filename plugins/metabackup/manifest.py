"""The manifest: the JSON record beside each archive that makes a backup set a backup set.

It is written last, atomically, after the archive has been uploaded and its checksum verified at
the target, so a set without a manifest is by definition incomplete and is never in the catalog.
"""

from __future__ import annotations

import hashlib
import json
import platform
from dataclasses import asdict, dataclass, field
from typing import Any, BinaryIO

from metabackup import __version__

FORMAT_VERSION = 1
FULL = "full"
INCREMENTAL = "incremental"


@dataclass(frozen=True)
class ArchiveInfo:
    name: str
    size: int
    sha256: str


@dataclass(frozen=True)
class Manifest:
    set: str  # the set stem: <version>_<source>_<execution time>
    task: str
    task_dir: str
    source: str
    kind: str
    type: str  # full | incremental
    parent: str | None  # stem of the parent set (incrementals only)
    chain_root: str  # stem of the full this chain starts from (itself for a full)
    cluster_version: str
    executed_at: str  # the run's execution time, ISO-8601 UTC
    started_at: str
    finished_at: str
    archive: ArchiveInfo
    content: dict[str, Any]  # kind-specific counts: entries, bytes, ...
    position: dict[str, Any]  # the source position covered (file index digest, later LSN/CSN/txid)
    reason: str  # why this type was chosen
    tools: dict[str, str] = field(default_factory=dict)
    format: int = FORMAT_VERSION

    def to_json(self) -> bytes:
        return (json.dumps(asdict(self), indent=2, sort_keys=True) + "\n").encode()

    @classmethod
    def from_json(cls, data: bytes | str, origin: str = "<manifest>") -> Manifest:
        try:
            raw = json.loads(data)
            if raw.get("format") != FORMAT_VERSION:
                raise ValueError(f"unsupported manifest format {raw.get('format')!r}")
            raw["archive"] = ArchiveInfo(**raw["archive"])
            return cls(**raw)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise ValueError(f"{origin}: not a valid backup manifest ({exc})") from exc

    @property
    def is_full(self) -> bool:
        return self.type == FULL


def tool_versions(**extra: str) -> dict[str, str]:
    return {"metabackup": __version__, "python": platform.python_version(), **extra}


def sha256_of(stream: BinaryIO, chunk: int = 1 << 20) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    while block := stream.read(chunk):
        digest.update(block)
        size += len(block)
    return digest.hexdigest(), size
