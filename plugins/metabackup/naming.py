"""The output layout contract: directory and file names, and the one timestamp format.

    <target path>/<task name>_<task creation time>/<version>_<source>_<execution time>.tar.gz
                                                  /<version>_<source>_<execution time>.tar.gz.enc  (encrypted)
                                                  /<version>_<source>_<execution time>.manifest.json

Timestamps are ``YYYYMMDDHHmmss`` in the task spec's timezone.  The manifest beside each archive
records the exact instant in UTC as well, so a name is for humans and sorting, never the only
record of time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pendulum

TIMESTAMP_FORMAT = "YYYYMMDDHHmmss"
ARCHIVE_SUFFIX = ".tar.gz"
ENCRYPTED_SUFFIX = ".tar.gz.enc"  # an encrypted set's archive (see README, "Encryption")
MANIFEST_SUFFIX = ".manifest.json"
TEMP_MARKER = ".partial-"

_SET_NAME = re.compile(r"^(?P<version>[A-Za-z0-9.\-]+)_(?P<source>[A-Za-z0-9\-]+)_(?P<stamp>\d{14})$")


def format_timestamp(moment: pendulum.DateTime, timezone: str) -> str:
    if moment.tzinfo is None:
        raise ValueError(f"refusing to name a backup after a naive time: {moment!r}")
    return pendulum.instance(moment).in_timezone(timezone).format(TIMESTAMP_FORMAT)


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

    def archive_name(self, encrypted: bool) -> str:
        return self.stem + (ENCRYPTED_SUFFIX if encrypted else ARCHIVE_SUFFIX)

    @property
    def manifest(self) -> str:
        return self.stem + MANIFEST_SUFFIX

    def __str__(self) -> str:
        return self.stem


def temp_name(final_name: str, token: str) -> str:
    """A name no reader mistakes for a finished file: hidden, and marked partial."""
    return f".{final_name}{TEMP_MARKER}{token}"


def is_temp_name(name: str) -> bool:
    return name.startswith(".") and TEMP_MARKER in name
