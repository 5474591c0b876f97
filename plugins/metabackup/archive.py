"""Streaming tar.gz writing with the archive's SHA-256 and size computed as the bytes go out.

Memory stays bounded whatever the source size: tar runs in stream mode (``w|``), and every
member is copied in fixed-size chunks.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from metabackup.fsutil import atomic_writer

COMPRESS_LEVEL = 6  # gzip's (and so tar -czf's) default
COPY_BUFSIZE = 1 << 20


class HashingSink:
    """A write-only file object that hashes and counts what passes through to ``raw``."""

    def __init__(self, raw: BinaryIO):
        self.raw = raw
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.raw.write(data)
        self.digest.update(data)
        self.size += len(data)
        return len(data)

    def flush(self) -> None:
        self.raw.flush()

    def close(self) -> None:
        """Closing the sink leaves ``raw`` open (its owner closes it)."""


@dataclass
class WrittenArchive:
    path: Path
    size: int = 0  # the file as stored (encrypted, when sealed)
    sha256: str = ""
    plaintext: tuple[str, int] = ("", 0)  # SHA-256 and size of the .tar.gz itself


@contextlib.contextmanager
def write_tar_gz(final: str | Path, seal: tuple[bytes, str] | None = None) -> Iterator[tuple[tarfile.TarFile, WrittenArchive]]:
    """Yield ``(tar, result)``; on success ``final`` exists whole and ``result`` holds size and sha256.
    With ``seal`` (a data key and the set name) the ``.tar.gz`` is encrypted as it is written
    (:class:`metabackup.encryption.EncryptingWriter`)."""
    from metabackup.encryption import EncryptingWriter

    result = WrittenArchive(Path(final))
    with atomic_writer(final) as raw:
        stored = HashingSink(raw)
        encrypting = EncryptingWriter(stored, *seal) if seal else None
        plain = HashingSink(encrypting or stored)
        with gzip.GzipFile(fileobj=plain, mode="wb", compresslevel=COMPRESS_LEVEL, mtime=0) as gz:
            with tarfile.open(fileobj=gz, mode="w|", format=tarfile.PAX_FORMAT, copybufsize=COPY_BUFSIZE) as tar:
                yield tar, result
        if encrypting is not None:
            encrypting.close()
        result.size, result.sha256 = stored.size, stored.digest.hexdigest()
        result.plaintext = (plain.digest.hexdigest(), plain.size)


def open_tar_stream(stream: BinaryIO) -> tarfile.TarFile:
    return tarfile.open(fileobj=stream, mode="r|gz", copybufsize=COPY_BUFSIZE)


class MissingMember(LookupError):
    """The archive has no member of the name asked for."""


def find_member(tar: tarfile.TarFile, name: str) -> tarfile.TarInfo | None:
    """The first member called ``name``, or None.  In a stream-mode archive (:func:`open_tar_stream`)
    read it (``tar.extractfile``) before reading on."""
    for member in tar:
        if member.name == name:
            return member
    return None


def read_json_member(stream: BinaryIO, name: str) -> Any:
    """The JSON document stored as member ``name`` of the tar.gz ``stream``; :class:`MissingMember`
    when there is none."""
    with open_tar_stream(stream) as tar:
        member = find_member(tar, name)
        if member is None:
            raise MissingMember(name)
        return json.loads(tar.extractfile(member).read())
