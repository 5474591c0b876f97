"""The encrypted archive format: a set's ``.tar.gz`` sealed in authenticated chunks.

Each archive gets a random 256-bit *data key*; the data key is wrapped (AES-256-GCM) by the
*key-encryption key* (KEK) named by the spec's ``key_id`` and kept, wrapped, in the set's manifest.
Rotating the KEK therefore rewrites manifests only (:mod:`metabackup.rotation`), never archives.

File layout (all integers big-endian)::

    header  = magic "MBKENC\\r\\n" (8) | version (1) | chunk size (4) | nonce prefix (7)
              | set name length (2) | set name (UTF-8) | key commitment (32)
    chunk i = AES-256-GCM(data key, nonce = prefix | i (4) | last (1), plaintext chunk,
                          associated data = the whole header)        -> ciphertext | 16-byte tag

Every chunk but the last holds exactly ``chunk size`` plaintext bytes; the last holds 0 to ``chunk
size`` and is sealed with the last flag set, so truncation at a chunk boundary (the new last chunk
was sealed as "not last"), extension (the real last chunk is read as "not last"), reordering (the
counter is in the nonce) and any edit of the header (it is every chunk's associated data) fail
authentication.  The key commitment, HMAC-SHA256(data key, header before it), tells a wrong or
swapped data key from a damaged chunk before anything is decrypted, and binds the file to its set
name, so an archive moved under another set's name is refused too.

The wrapped data key is bound the same way: it is sealed with the set name and the key id as
associated data, so a wrapped key copied from another set's manifest does not unwrap.

Memory stays bounded: one chunk in, one chunk out.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import struct
from dataclasses import dataclass
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from metabackup.errors import MetabackupError

MAGIC = b"MBKENC\r\n"
VERSION = 1
ALGORITHM = "AES-256-GCM-chunked-v1"
CHUNK_SIZE = 1 << 20
MAX_CHUNK_SIZE = 1 << 24
TAG_SIZE = 16
KEY_SIZE = 32
PREFIX_SIZE = 7
_FIXED = struct.Struct(">8sBI7sH")
_COMMIT_SIZE = 32
_WRAP_NONCE = 12
_MAX_CHUNKS = 1 << 32


class EncryptionError(MetabackupError):
    """An encrypted archive cannot be read: damaged, tampered, or the key is wrong or missing."""


class TamperedArchive(EncryptionError):
    """An archive failed authentication: a byte changed, a chunk is missing, moved or added."""


class WrongKey(EncryptionError):
    """The key given is not the one a set was encrypted with, or the wrapped key is not the set's."""


class KeyUnavailable(EncryptionError):
    """The key-encryption key a set needs cannot be had (no connection, command failed, retired)."""


def new_data_key() -> bytes:
    return AESGCM.generate_key(bit_length=256)


def fingerprint(kek: bytes) -> str:
    """A public name of a key (32 hex digits): tells which key a set needs without revealing it."""
    return hmac.new(kek, b"metabackup key fingerprint v1", hashlib.sha256).hexdigest()[:32]


def _wrap_aad(stem: str, key_id: str) -> bytes:
    return b"metabackup data key v1\0" + stem.encode() + b"\0" + key_id.encode()


def wrap(kek: bytes, key_id: str, data_key: bytes, stem: str) -> str:
    """The data key of set ``stem`` sealed by ``kek`` (base64 text for the manifest)."""
    nonce = os.urandom(_WRAP_NONCE)
    return base64.b64encode(nonce + AESGCM(kek).encrypt(nonce, data_key, _wrap_aad(stem, key_id))).decode()


def unwrap(kek: bytes, key_id: str, wrapped: str, stem: str) -> bytes:
    """The data key of set ``stem``; :class:`WrongKey` when ``wrapped`` was not sealed by ``kek`` for
    this set and key id (the caller checks the key's fingerprint first to tell the two apart)."""
    try:
        raw = base64.b64decode(wrapped, validate=True)
    except ValueError:
        raise WrongKey(f"set {stem}: the wrapped data key in its manifest is not base64") from None
    if len(raw) != _WRAP_NONCE + KEY_SIZE + TAG_SIZE:
        raise WrongKey(f"set {stem}: the wrapped data key in its manifest has {len(raw)} bytes, not "
                       f"{_WRAP_NONCE + KEY_SIZE + TAG_SIZE}")
    try:
        return AESGCM(kek).decrypt(raw[:_WRAP_NONCE], raw[_WRAP_NONCE:], _wrap_aad(stem, key_id))
    except InvalidTag:
        raise WrongKey(f"set {stem}: the wrapped data key in its manifest was not sealed for this set under key "
                       f"{key_id!r} (copied from another set, or edited)") from None


@dataclass(frozen=True)
class Header:
    chunk_size: int
    prefix: bytes
    stem: str
    commitment: bytes
    raw: bytes  # the header's bytes: every chunk's associated data

    @classmethod
    def build(cls, data_key: bytes, stem: str, chunk_size: int = CHUNK_SIZE) -> Header:
        prefix = os.urandom(PREFIX_SIZE)
        name = stem.encode()
        body = _FIXED.pack(MAGIC, VERSION, chunk_size, prefix, len(name)) + name
        commitment = _commit(data_key, body)
        return cls(chunk_size, prefix, stem, commitment, body + commitment)

    @classmethod
    def read(cls, raw: BinaryIO, origin: str) -> Header:
        fixed = _read_exactly(raw, _FIXED.size)
        if len(fixed) < _FIXED.size or fixed[:8] != MAGIC:
            raise TamperedArchive(f"{origin}: not an encrypted metabackup archive (no header)")
        _, version, chunk_size, prefix, name_len = _FIXED.unpack(fixed)
        if version != VERSION:
            raise TamperedArchive(f"{origin}: encrypted archive format version {version}, this release reads {VERSION}")
        if not 1 <= chunk_size <= MAX_CHUNK_SIZE or not 1 <= name_len <= 200:
            raise TamperedArchive(f"{origin}: the header is damaged (chunk size {chunk_size}, name length {name_len})")
        rest = _read_exactly(raw, name_len + _COMMIT_SIZE)
        if len(rest) < name_len + _COMMIT_SIZE:
            raise TamperedArchive(f"{origin}: the header is cut short")
        try:
            stem = rest[:name_len].decode()
        except UnicodeDecodeError:
            raise TamperedArchive(f"{origin}: the header is damaged (set name)") from None
        return cls(chunk_size, prefix, stem, rest[name_len:], fixed + rest)

    def check(self, data_key: bytes, stem: str, origin: str) -> None:
        """Refuse a header made with another data key (or edited), or for another set."""
        if not hmac.compare_digest(_commit(data_key, self.raw[:-_COMMIT_SIZE]), self.commitment):
            raise TamperedArchive(f"{origin}: the header does not match the set's data key: the header was edited, "
                                  "or the manifest's wrapped key belongs to another archive")
        if self.stem != stem:
            raise TamperedArchive(f"{origin}: the archive was made for set {self.stem}, not {stem}")

    def nonce(self, counter: int, last: bool) -> bytes:
        if counter >= _MAX_CHUNKS:
            raise EncryptionError("an encrypted archive holds at most 2**32 chunks")
        return self.prefix + struct.pack(">IB", counter, 1 if last else 0)


def _commit(data_key: bytes, body: bytes) -> bytes:
    return hmac.new(data_key, b"metabackup header v1\0" + body, hashlib.sha256).digest()


def _read_exactly(raw: BinaryIO, size: int) -> bytes:
    parts, wanted = [], size
    while wanted > 0:
        block = raw.read(wanted)
        if not block:
            break
        parts.append(block)
        wanted -= len(block)
    return b"".join(parts)


class EncryptingWriter:
    """A write-only file object: what is written to it goes to ``raw`` sealed; :meth:`close` seals the
    last chunk (and does not close ``raw``)."""

    def __init__(self, raw: BinaryIO, data_key: bytes, stem: str, chunk_size: int = CHUNK_SIZE):
        self.raw = raw
        self.header = Header.build(data_key, stem, chunk_size)
        self._aead = AESGCM(data_key)
        self._buffer = bytearray()
        self._counter = 0
        self._closed = False
        raw.write(self.header.raw)

    def write(self, data: bytes) -> int:
        self._buffer += data
        size = self.header.chunk_size
        if len(self._buffer) > size:  # keep the last (possibly full) chunk until close
            whole = (len(self._buffer) - 1) // size * size
            view = memoryview(self._buffer)
            for start in range(0, whole, size):
                self._seal(view[start:start + size], last=False)
            view.release()
            del self._buffer[:whole]
        return len(data)

    def _seal(self, chunk: bytes | memoryview, last: bool) -> None:
        self.raw.write(self._aead.encrypt(self.header.nonce(self._counter, last), bytes(chunk), self.header.raw))
        self._counter += 1

    def flush(self) -> None:
        self.raw.flush()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._seal(self._buffer, last=True)
            self._buffer = bytearray()


class DecryptingReader:
    """A read-only file object over an encrypted archive: each chunk is authenticated before any of
    its bytes is returned; at the end the plaintext's size, and its SHA-256 when ``expect`` gives
    one, are checked against ``expect`` (from the manifest).  Raises :class:`TamperedArchive` naming
    ``origin``.  The tags already prove every byte; the SHA-256 (as slow as the decryption itself)
    is for whoever wants the manifest's plaintext digest confirmed too."""

    def __init__(self, raw: BinaryIO, data_key: bytes, stem: str, origin: str,
                 expect: tuple[str | None, int] | None = None):
        self.raw, self.origin, self.expect = raw, origin, expect
        self.header = Header.read(raw, origin)
        self.header.check(data_key, stem, origin)
        self._aead = AESGCM(data_key)
        self._span = self.header.chunk_size + TAG_SIZE
        # Two ciphertext buffers, read into and swapped: no new 1 MiB object per chunk read (a file
        # object without readinto, e.g. an object store's body, is read the plain way).
        self._buffers = [bytearray(self._span), bytearray(self._span)] if hasattr(raw, "readinto") else None
        self._next = self._read_chunk(0)
        self._counter = 0
        self._out = b""
        self._offset = 0
        self._done = False
        self._failed: TamperedArchive | None = None  # once refused, every later read is refused too
        self.digest = hashlib.sha256() if expect is not None and expect[0] is not None else None
        self.size = 0
        if len(self._next) == 0:
            raise TamperedArchive(f"{origin}: the archive ends after its header (truncated)")

    def _advance(self) -> None:
        if self._failed is not None:
            raise self._failed
        try:
            self._decrypt_next()
        except TamperedArchive as exc:
            self._failed = exc
            raise

    def _read_chunk(self, slot: int) -> bytes | memoryview:
        """The next chunk's ciphertext (shorter at the end of the file, empty after it)."""
        if self._buffers is None:
            return _read_exactly(self.raw, self._span)
        view = memoryview(self._buffers[slot])
        filled = 0
        while filled < self._span:
            got = self.raw.readinto(view[filled:])
            if not got:
                break
            filled += got
        return view[:filled]

    def _decrypt_next(self) -> None:
        current = self._next
        following = self._read_chunk((self._counter + 1) % 2) if len(current) == self._span else b""
        last = not len(following)
        if len(current) < TAG_SIZE:
            raise TamperedArchive(f"{self.origin}: truncated inside chunk {self._counter}")
        try:
            plain = self._aead.decrypt(self.header.nonce(self._counter, last), current, self.header.raw)
        except InvalidTag:
            raise TamperedArchive(
                f"{self.origin}: chunk {self._counter} failed authentication "
                + ("(the file was truncated, extended, or this chunk changed)" if last else
                   "(it was changed, moved, or the file was cut here)")) from None
        self._counter += 1
        self._next = following
        if self.digest is not None:
            self.digest.update(plain)
        self.size += len(plain)
        self._out, self._offset = plain, 0
        if last:
            self._done = True
            self._check_end()

    def _check_end(self) -> None:
        if self.expect is None:
            return
        expected_sha, expected_size = self.expect
        if self.size != expected_size:
            raise TamperedArchive(f"{self.origin}: decrypted to {self.size} bytes, the manifest says {expected_size}")
        if self.digest is not None and self.digest.hexdigest() != expected_sha:
            raise TamperedArchive(f"{self.origin}: decrypted to sha256 {self.digest.hexdigest()}, the manifest says "
                                  f"{expected_sha}")

    def read(self, size: int | None = -1) -> bytes:
        if self._failed is not None:
            raise self._failed
        if size is None or size < 0:
            parts = [self._out[self._offset:]]
            self._offset = len(self._out)
            while not self._done:
                self._advance()
                parts.append(self._out)
                self._offset = len(self._out)
            return b"".join(parts)
        while self._offset >= len(self._out) and not self._done:
            self._advance()
        block = self._out[self._offset:self._offset + size]
        self._offset += len(block)
        return block

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self.raw.close()

    def __enter__(self) -> DecryptingReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def drain(reader: BinaryIO, chunk: int = CHUNK_SIZE) -> None:
    """Read ``reader`` to its end, discarding: a :class:`DecryptingReader` checks every tag this way."""
    while reader.read(chunk):
        pass
