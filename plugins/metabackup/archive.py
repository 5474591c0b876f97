"""Streaming tar archives, gzip (``.tar.gz``) or zstd (``.tar.zst``), with the archive's SHA-256 and
size computed as the bytes go out.

Writing is parallel and memory stays bounded whatever the source size:

* the kind's ``write_archive`` fills the tar stream in the calling thread (tar headers, and each
  member's bytes in fixed-size chunks, hashed as they are read);
* gzip (:class:`ParallelGzipWriter`): 1 MiB blocks deflated in one thread per core, each block
  primed with the previous block's last 32 KiB and ended on a sync flush (as pigz does), joined into
  ONE standard gzip member that ``gzip -d``, ``tar -xzf`` and Python's ``gzip``/``tarfile`` read.
  Each block goes through ISA-L (level 2: fast, and as good as zlib on data that hardly
  compresses); a block ISA-L shrinks to less than half is deflated again by zlib at level 4 and the
  smaller kept, which brings the output to within a few per cent of ``gzip -6``.  A writer thread
  hands the blocks, in order, to the sinks below;
* zstd: libzstd's worker threads compress one standard zstd frame (with its content checksum);
  a writer thread of ours takes the compressed bytes from the calling thread;
* the sinks, in that writer thread: SHA-256 and size of the compressed stream, then (with a data
  key) :class:`metabackup.encryption.EncryptingWriter` and the SHA-256 and size of the stored file.

Every queue between the threads holds a few blocks at most.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import queue
import struct
import tarfile
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from metabackup.fsutil import atomic_writer
from metabackup.naming import COMPRESSIONS, GZIP, ZSTD

GZIP_LEVEL = 2  # ISA-L's level 2 (of 0-3), the first pass over every block
ZLIB_LEVEL = 4  # zlib's level for blocks that compress well (see ParallelGzipWriter)
RECOMPRESS_BELOW = 0.5  # ISA-L output below this share of the block (text, mostly): try zlib too
DEFLATE_WINDOW = 1 << 15
GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"  # deflate, no name, mtime 0, OS unknown
ZSTD_LEVEL = 3  # zstd's default level, as zstd -T0 and tar --zstd
BLOCK_SIZE = 1 << 20  # what each compression thread takes at a time
COPY_BUFSIZE = 1 << 20
MAX_THREADS = 8
SINK_QUEUE = 8  # compressed blocks waiting for the writer thread at most (zstd)
GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def compression_threads() -> int:
    """One compression thread per core this process may run on (at most :data:`MAX_THREADS`)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, min(cores, MAX_THREADS))


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


class _BackgroundSink:
    """A write-only file object whose writes to ``raw`` happen in a thread of their own, through a
    queue of at most :data:`SINK_QUEUE` blocks.  An error of ``raw`` is raised by the next
    :meth:`write` or by :meth:`close` (after it, blocks are dropped until close)."""

    def __init__(self, raw: Any):
        self.raw = raw
        self.error: BaseException | None = None
        self._queue: queue.Queue[bytes | None] = queue.Queue(SINK_QUEUE)
        self._thread = threading.Thread(target=self._run, name="archive-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (block := self._queue.get()) is not None:
            if self.error is None:
                try:
                    self.raw.write(block)
                except BaseException as exc:  # noqa: BLE001 - handed to the writing thread
                    self.error = exc

    def write(self, data: bytes) -> int:
        if self.error is not None:
            raise self.error
        self._queue.put(bytes(data))
        return len(data)

    def flush(self) -> None:
        """Nothing to do: :meth:`close` waits for every block."""

    def close(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        if self.error is not None:
            raise self.error


def _deflate(block: bytes, zdict: bytes) -> bytes:
    """``block`` as raw deflate ending on a sync flush, primed with ``zdict`` (the 32 KiB before it)."""
    from isal import isal_zlib

    fast = isal_zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, -15, zdict=zdict) if zdict else \
        isal_zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, -15)
    out = fast.compress(block) + fast.flush(zlib.Z_SYNC_FLUSH)
    if len(out) < RECOMPRESS_BELOW * len(block):
        better = zlib.compressobj(ZLIB_LEVEL, zlib.DEFLATED, -15, zdict=zdict) if zdict else \
            zlib.compressobj(ZLIB_LEVEL, zlib.DEFLATED, -15)
        again = better.compress(block) + better.flush(zlib.Z_SYNC_FLUSH)
        if len(again) < len(out):
            out = again
    return out


class ParallelGzipWriter:
    """A write-only file object writing ONE standard gzip member to ``sink``, deflated on ``threads``
    threads in :data:`BLOCK_SIZE` blocks (see the module's docstring).  Block ``i`` goes to thread
    ``i % threads``; each thread's queues hold one block in and one out, and a writer thread takes
    the results in order, writes them to ``sink`` and combines their CRC-32s.  An error of a thread
    (or of ``sink``) is raised by the next :meth:`write` or by :meth:`close`; :meth:`abandon` stops
    every thread without finishing the member."""

    def __init__(self, sink: Any, threads: int):
        from isal import isal_zlib

        self.sink, self.threads = sink, max(1, threads)
        self.error: BaseException | None = None
        self._crc32, self._combine = isal_zlib.crc32, isal_zlib.crc32_combine
        self._buffer = bytearray()
        self._previous = b""
        self._count = 0
        self._crc = self._size = 0
        self._closed = False
        self._inputs: list[queue.Queue] = [queue.Queue(1) for _ in range(self.threads)]
        self._outputs: list[queue.Queue] = [queue.Queue(1) for _ in range(self.threads)]
        self._workers = [threading.Thread(target=self._compress, args=(i,), name=f"gzip-{i}", daemon=True)
                         for i in range(self.threads)]
        self._writer = threading.Thread(target=self._write, name="gzip-writer", daemon=True)
        sink.write(GZIP_HEADER)
        for thread in (*self._workers, self._writer):
            thread.start()

    def _compress(self, index: int) -> None:
        inputs, outputs = self._inputs[index], self._outputs[index]
        while (item := inputs.get()) is not None:
            block, zdict = item
            try:
                result = (_deflate(block, zdict), self._crc32(block), len(block))
            except BaseException as exc:  # noqa: BLE001 - handed to the writing thread
                self.error = self.error or exc
                result = (b"", 0, 0)
            outputs.put(result)
        outputs.put(None)  # after its last block: the writer stops when it reaches it

    def _write(self) -> None:
        n = 0
        while (item := self._outputs[n % self.threads].get()) is not None:
            compressed, crc, length = item
            if self.error is None:
                try:
                    self.sink.write(compressed)
                except BaseException as exc:  # noqa: BLE001 - handed to the writing thread
                    self.error = exc
            self._crc = self._combine(self._crc, crc, length)
            self._size += length
            n += 1

    def _submit(self, block: bytes) -> None:
        zdict = self._previous[-DEFLATE_WINDOW:]
        self._previous = block
        self._inputs[self._count % self.threads].put((block, zdict))
        self._count += 1

    def write(self, data: bytes) -> int:
        if self.error is not None:
            raise self.error
        self._buffer += data
        while len(self._buffer) >= BLOCK_SIZE:
            block = bytes(self._buffer[:BLOCK_SIZE])
            del self._buffer[:BLOCK_SIZE]
            self._submit(block)
        return len(data)

    def _stop(self) -> None:
        self._closed = True
        for inputs in self._inputs:
            inputs.put(None)
        for thread in (*self._workers, self._writer):
            thread.join()

    def close(self) -> None:
        """Deflate what is left, wait for every block to reach ``sink``, then end the member."""
        if self._closed:
            return
        if self._buffer and self.error is None:
            self._submit(bytes(self._buffer))
            self._buffer = bytearray()
        self._stop()
        if self.error is not None:
            raise self.error
        self.sink.write(zlib.compress(b"", wbits=-15) + struct.pack("<II", self._crc, self._size & 0xFFFFFFFF))

    def abandon(self) -> None:
        if not self._closed:
            self._stop()


class _TarOutput:
    """What tarfile writes to: forwards to the compressor, counts for ``tell`` and progress."""

    def __init__(self, compressor: Any, progress: Any = None):
        self.compressor, self.progress, self.position = compressor, progress, 0

    def write(self, data: bytes) -> int:
        self.compressor.write(data)
        self.position += len(data)
        if self.progress is not None:
            self.progress.add(len(data))
        return len(data)

    def tell(self) -> int:
        return self.position


class _Compressor:
    """The compressing writer of one archive: :meth:`write` takes tar bytes, :meth:`finish` ends the
    gzip member or zstd frame and waits for every byte to reach ``sink``; :meth:`abandon` (after an
    error) stops every thread without raising."""

    def __init__(self, sink: Any, compression: str, threads: int):
        self.compression = compression
        if compression == GZIP:
            self._background = None
            self._writer = ParallelGzipWriter(sink, threads)
        elif compression == ZSTD:
            import zstandard

            self._background = _BackgroundSink(sink)
            compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL, threads=threads, write_checksum=True)
            self._writer = compressor.stream_writer(self._background, closefd=False)
        else:
            raise ValueError(f"unknown compression {compression!r}; one of {', '.join(COMPRESSIONS)}")
        self.write = self._writer.write

    def finish(self) -> None:
        if self.compression == ZSTD:
            import zstandard

            self._writer.flush(zstandard.FLUSH_FRAME)
            self._writer.close()
            self._background.close()
        else:
            self._writer.close()

    def abandon(self) -> None:
        with contextlib.suppress(BaseException):
            self._writer.abandon() if self.compression == GZIP else self._writer.close()
        if self._background is not None:
            with contextlib.suppress(BaseException):
                self._background.close()


@dataclass
class WrittenArchive:
    path: Path
    size: int = 0  # the file as stored (encrypted, when sealed)
    sha256: str = ""
    plaintext: tuple[str, int] = ("", 0)  # SHA-256 and size of the compressed tar itself
    tar_bytes: int = 0  # the uncompressed tar stream


@contextlib.contextmanager
def write_tar(final: str | Path, seal: tuple[bytes, str] | None = None, compression: str = GZIP,
              progress: Any = None, threads: int | None = None) -> Iterator[tuple[tarfile.TarFile, WrittenArchive]]:
    """Yield ``(tar, result)``; on success ``final`` exists whole (0600) and ``result`` holds its size and
    SHA-256, and those of the compressed tar (the same unless sealed).  ``compression`` is ``gzip``
    (one standard gzip member) or ``zstd`` (one standard zstd frame).  With ``seal`` (a data key and
    the set name) the compressed tar is encrypted as it is written
    (:class:`metabackup.encryption.EncryptingWriter`).  ``progress`` (a
    :class:`metabackup.progress.Progress`) is given the tar bytes as they are written."""
    from metabackup.encryption import EncryptingWriter

    result = WrittenArchive(Path(final))
    with atomic_writer(final) as raw:
        stored = HashingSink(raw)
        encrypting = EncryptingWriter(stored, *seal) if seal else None
        plain = HashingSink(encrypting) if encrypting else stored  # unsealed: one digest serves both
        compressor = _Compressor(plain, compression, threads or compression_threads())
        output = _TarOutput(compressor, progress)
        try:
            # Not stream mode (w|): tarfile's stream writer re-slices its buffer every 10 KiB.
            with tarfile.open(fileobj=output, mode="w", format=tarfile.PAX_FORMAT, copybufsize=COPY_BUFSIZE) as tar:
                yield tar, result
            compressor.finish()
        except BaseException:
            compressor.abandon()
            raise
        if encrypting is not None:
            encrypting.close()
        result.size, result.sha256 = stored.size, stored.digest.hexdigest()
        result.plaintext = (plain.digest.hexdigest(), plain.size)
        result.tar_bytes = output.position


def write_tar_gz(final: str | Path, seal: tuple[bytes, str] | None = None, **kwargs: Any):
    """:func:`write_tar` with gzip."""
    return write_tar(final, seal, GZIP, **kwargs)


class _Prefixed:
    """``head`` (bytes already read from ``raw``), then the rest of ``raw``."""

    def __init__(self, head: bytes, raw: BinaryIO):
        self.head, self.raw = head, raw

    def read(self, size: int = -1) -> bytes:
        if self.head:
            if size is None or size < 0:
                data, self.head = self.head + self.raw.read(), b""
                return data
            data, self.head = self.head[:size], self.head[size:]
            return data
        return self.raw.read(size)


class _ZstdReader:
    """The tar stream inside a zstd stream (every frame in turn), read in bounded pieces; a damaged
    frame raises :class:`tarfile.ReadError` like a damaged gzip member does."""

    def __init__(self, raw: Any):
        import zstandard

        self._error = zstandard.ZstdError
        self._reader = zstandard.ZstdDecompressor().stream_reader(raw, read_size=COPY_BUFSIZE, read_across_frames=True,
                                                                  closefd=False)

    def read(self, size: int = -1) -> bytes:
        try:
            return self._reader.read(size)
        except self._error as exc:
            raise tarfile.ReadError(f"invalid zstd data: {exc}") from None


def _read_head(stream: BinaryIO, size: int) -> bytes:
    parts, wanted = [], size
    while wanted > 0 and (block := stream.read(wanted)):
        parts.append(block)
        wanted -= len(block)
    return b"".join(parts)


def open_tar_stream(stream: BinaryIO) -> tarfile.TarFile:
    """A set's archive (its compressed tar, decrypted when it was sealed) as a stream-mode tar; gzip
    or zstd, told by the stream's first bytes.  Read members in order (``tar.extractfile`` before
    reading on)."""
    head = _read_head(stream, len(ZSTD_MAGIC))
    joined = _Prefixed(head, stream)
    if head == ZSTD_MAGIC:
        return tarfile.open(fileobj=_ZstdReader(joined), mode="r|", copybufsize=COPY_BUFSIZE)
    return tarfile.open(fileobj=joined, mode="r|gz", copybufsize=COPY_BUFSIZE)


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
    """The JSON document stored as member ``name`` of the archive ``stream``; :class:`MissingMember`
    when there is none."""
    with open_tar_stream(stream) as tar:
        member = find_member(tar, name)
        if member is None:
            raise MissingMember(name)
        return json.loads(tar.extractfile(member).read())
