"""A set's archive as stored: read it as its ``.tar.gz`` whether or not it is encrypted, check every
chunk of an encrypted one, and change how it is stored (another key, or encrypted/unencrypted) for a
location that wants it otherwise.

Everything here takes the manifest as the description of the stored file and a
:class:`~metabackup.keys.KeyRing` for the keys it names; the format itself is
:mod:`metabackup.encryption`.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from metabackup import fsutil
from metabackup.archive import HashingSink
from metabackup.encryption import (
    ALGORITHM,
    CHUNK_SIZE,
    DecryptingReader,
    EncryptingWriter,
    drain,
    fingerprint,
    new_data_key,
    unwrap,
    wrap,
)
from metabackup.errors import BackupError
from metabackup.keys import KeyConfig, KeyRing
from metabackup.manifest import ArchiveInfo, EncryptionInfo, Manifest
from metabackup.naming import SetName, compression_of


def data_key(manifest: Manifest, keys: KeyRing) -> bytes:
    """The data key of an encrypted set, unwrapped with the key its manifest names (checked by fingerprint)."""
    info = manifest.encryption
    kek = keys.key(info.key_id, info.key_fingerprint, needed_for=f"set {manifest.set}")
    return unwrap(kek, info.key_id, info.wrapped_key, manifest.set)


def sealing_info(keys: KeyRing, config: KeyConfig, key: bytes, stem: str, plaintext: tuple[str, int]) -> EncryptionInfo:
    """The manifest's ``encryption`` for set ``stem`` whose data key is ``key``, wrapped by ``config``'s key."""
    kek = keys.key(config.key_id, needed_for=f"set {stem}")
    return EncryptionInfo(algorithm=ALGORITHM, chunk_size=CHUNK_SIZE, key_id=config.key_id,
                          key_fingerprint=fingerprint(kek), wrapped_key=wrap(kek, config.key_id, key, stem),
                          plaintext_sha256=plaintext[0], plaintext_size=plaintext[1])


def plain_reader(raw: BinaryIO, manifest: Manifest, keys: KeyRing, origin: str, digest: bool = False) -> BinaryIO:
    """``raw`` (the stored file, opened) as the set's ``.tar.gz``: decrypted and authenticated chunk by
    chunk when the set is encrypted (closing the reader closes ``raw``); its size is checked against
    the manifest, and with ``digest`` its SHA-256 too (the tags already prove every byte)."""
    if manifest.encryption is None:
        return raw
    try:
        key = data_key(manifest, keys)
    except BaseException:
        raw.close()
        raise
    sha, size = manifest.plaintext
    return DecryptingReader(raw, key, manifest.set, origin, expect=(sha if digest else None, size))


def open_plain(target, task_dir: str, manifest: Manifest, keys: KeyRing) -> BinaryIO:
    """The set's ``.tar.gz`` read from ``target``, decrypted when it is encrypted."""
    origin = f"{target.uri}/{task_dir}/{manifest.archive.name}"
    return plain_reader(target.open_read(task_dir, manifest.archive.name), manifest, keys, origin)


def check_decrypts(target, task_dir: str, manifest: Manifest, keys: KeyRing) -> None:
    """Decrypt an encrypted set to nowhere, checking every chunk's tag and the plaintext's SHA-256."""
    if manifest.encryption is not None:
        with open_plain(target, task_dir, manifest, keys) as reader:
            drain(reader)


def same_key(manifest: Manifest, config: KeyConfig | None) -> bool:
    """Whether the set is stored as a location with ``config`` wants it (unencrypted, or under that key)."""
    if config is None or manifest.encryption is None:
        return config is None and manifest.encryption is None
    return manifest.encryption.key_id == config.key_id


def rewrapped(manifest: Manifest, keys: KeyRing, config: KeyConfig) -> Manifest:
    """The manifest of an encrypted set with its data key wrapped by ``config``'s key instead (the
    archive is unchanged: rotation and copies under another key rewrite the manifest only)."""
    key = data_key(manifest, keys)
    info = sealing_info(keys, config, key, manifest.set, manifest.plaintext)
    return dataclasses.replace(manifest, encryption=info)


def transcoded(manifest: Manifest, open_plain_stream: Callable[[], BinaryIO], keys: KeyRing,
               config: KeyConfig | None, local: Path) -> Manifest:
    """Write the set's archive to ``local`` as a location with ``config`` wants it (encrypted under a
    new data key, or plain), from its ``.tar.gz`` (``open_plain_stream``, authenticated on the way);
    returns the manifest that describes ``local``."""
    key = new_data_key() if config is not None else None
    plain_digest, plain_size = hashlib.sha256(), 0
    with open_plain_stream() as source, fsutil.private_open(local) as raw:
        sink = HashingSink(raw)
        writer = EncryptingWriter(sink, key, manifest.set) if key is not None else sink
        while block := source.read(CHUNK_SIZE):
            plain_digest.update(block)
            plain_size += len(block)
            writer.write(block)
        writer.close()
    if (plain_digest.hexdigest(), plain_size) != manifest.plaintext:
        local.unlink(missing_ok=True)
        raise BackupError(f"set {manifest.set}: its archive does not match its manifest (sha256 "
                         f"{plain_digest.hexdigest()}, {plain_size} bytes); not copying a corrupt archive")
    name = SetName.parse(manifest.set).archive_name(encrypted=key is not None,
                                                    compression=compression_of(manifest.archive.name))
    info = sealing_info(keys, config, key, manifest.set, manifest.plaintext) if key is not None else None
    return dataclasses.replace(manifest, archive=ArchiveInfo(name=name, size=sink.size, sha256=sink.digest.hexdigest()),
                               encryption=info)

