"""The output layout contract: directory and file names, and the one timestamp format.

    <target path>/<task name>_<task creation time>/<version>_<source>_<execution time>.tar.gz
                                                  /<version>_<source>_<execution time>.tar.gz.enc  (encrypted)
                                                  /<version>_<source>_<execution time>.manifest.json

A task with ``compression: zstd`` names its archives ``.tar.zst`` (``.tar.zst.enc`` encrypted) instead.

Timestamps are ``YYYYMMDDHHmmss`` in the task spec's timezone.  The manifest beside each archive
records the exact instant in UTC as well, so a name is for humans and sorting, never the only
record of time.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

import pendulum

TIMESTAMP_FORMAT = "YYYYMMDDHHmmss"
ARCHIVE_SUFFIX = ".tar.gz"
ENCRYPTED_SUFFIX = ".tar.gz.enc"  # an encrypted set's archive (see README, "Encryption")
GZIP, ZSTD = "gzip", "zstd"
COMPRESSIONS = {GZIP: ARCHIVE_SUFFIX, ZSTD: ".tar.zst"}  # a task's ``compression``, and its archives' suffix
ENCRYPTED_MARK = ".enc"
MANIFEST_SUFFIX = ".manifest.json"
TEMP_MARKER = ".partial-"

_SET_NAME = re.compile(r"^(?P<version>[A-Za-z0-9.\-]+)_(?P<source>[A-Za-z0-9\-]+)_(?P<stamp>\d{14})$")


@functools.lru_cache(maxsize=64)
def zone(name: str) -> pendulum.Timezone:
    """``pendulum.timezone(name)``, loaded once per name (they are immutable)."""
    return pendulum.timezone(name)


def format_timestamp(moment: pendulum.DateTime, timezone: str) -> str:
    if moment.tzinfo is None:
        raise ValueError(f"refusing to name a backup after a naive time: {moment!r}")
    # strftime's "%Y%m%d%H%M%S" is TIMESTAMP_FORMAT (years 1000-9999), several times faster
    return pendulum.instance(moment).in_timezone(zone(timezone)).strftime("%Y%m%d%H%M%S")


def parse_timestamp(stamp: str, timezone: str) -> pendulum.DateTime:
    return pendulum.from_format(stamp, TIMESTAMP_FORMAT, tz=timezone)


def task_dir_name(task_name: str, created: pendulum.DateTime, timezone: str) -> str:
    return f"{task_name}_{format_timestamp(created, timezone)}"


@dataclass(frozen=True, order=True)
class SetName:
    """``<version>_<source>_<execution time>``: the stem shared by a set's archive and manifest."""

    stamp: str
    source: str
    version: str

    @classmethod
    def build(cls, version: str, source: str, executed: pendulum.DateTime, timezone: str) -> SetName:
        return cls(stamp=format_timestamp(executed, timezone), source=source, version=version)

    @classmethod
    def parse(cls, stem: str) -> SetName | None:
        match = _SET_NAME.fullmatch(stem) if isinstance(stem, str) else None
        if not match:
            return None
        return cls(stamp=match["stamp"], source=match["source"], version=match["version"])

    @property
    def stem(self) -> str:
        return f"{self.version}_{self.source}_{self.stamp}"

    @property
    def archive(self) -> str:
        return self.stem + ARCHIVE_SUFFIX

    def archive_name(self, encrypted: bool, compression: str = GZIP) -> str:
        return self.stem + archive_suffix(compression, encrypted)

    @property
    def manifest(self) -> str:
        return self.stem + MANIFEST_SUFFIX

    def __str__(self) -> str:
        return self.stem


def archive_suffix(compression: str = GZIP, encrypted: bool = False) -> str:
    """``.tar.gz``, ``.tar.zst``, and with ``encrypted`` the same with ``.enc``."""
    return COMPRESSIONS[compression] + (ENCRYPTED_MARK if encrypted else "")


def split_archive_name(name: str) -> tuple[str, str, bool] | None:
    """``(stem, compression, encrypted)`` of an archive's file name, or None when it is not one
    (the stem is not checked against the set grammar here)."""
    encrypted = name.endswith(ENCRYPTED_MARK)
    bare = name.removesuffix(ENCRYPTED_MARK) if encrypted else name
    for compression, suffix in COMPRESSIONS.items():
        if bare.endswith(suffix) and len(bare) > len(suffix):
            return bare.removesuffix(suffix), compression, encrypted
    return None


def compression_of(archive_name: str) -> str:
    """The compression of a set's archive, from its name (``gzip`` for anything not ``.tar.zst``)."""
    split = split_archive_name(archive_name)
    return split[1] if split else GZIP


def temp_name(final_name: str, token: str) -> str:
    """A name no reader mistakes for a finished file: hidden, and marked partial."""
    return f".{final_name}{TEMP_MARKER}{token}"


def is_temp_name(name: str) -> bool:
    return name.startswith(".") and TEMP_MARKER in name
