"""RemoteHDFS: backup sets in a second cluster's HDFS (another NameService), through WebHDFS.

The target is LocalHDFS's (:class:`~metabackup.targets.localhdfs.LocalHDFSTarget`) pointed at the
remote NameService: the same partial-then-rename writes (length checked), 0600 files and 0700
directories, the same preflight (a NameNode reachable, the directory writable, the cluster's
remaining capacity and every quota on the way to the path) and the same upload again from the start
when a failover takes the active NameNode away mid-upload.  Its connection
(``webhdfs_<nameservice>`` unless ``conn_id`` names another) lists the remote NameNodes' HTTP
addresses, the active and the standby.  It adds ``bandwidth_mb_s``: a cap on the bytes per second
read from the staging file while uploading, so a backup does not fill the link between the clusters.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from io import BytesIO
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, Field

from metabackup.targets.localhdfs import HDFSTargetConfig, LocalHDFSTarget

MIB = 1024 * 1024  # one "MB" of bandwidth_mb_s, as distcp's -bandwidth counts it
CHUNK = 64 * 1024  # bytes read (and paced) at a time; also the bucket's burst


def _positive(value: int) -> int:
    if value < 1:
        raise ValueError(f"must be a positive number of MB/s, got {value}")
    return value


MegabytesPerSecond = Annotated[int, AfterValidator(_positive),
                               Field(description="the upload's cap in MB/s (1 MB = 1,048,576 bytes)",
                                     json_schema_extra={"minimum": 1})]


class RemoteHDFSConfig(HDFSTargetConfig):
    """``type: RemoteHDFS``: a directory in another cluster's NameService, written through WebHDFS."""

    off_cluster: ClassVar[bool] = True

    type: Literal["RemoteHDFS"]
    bandwidth_mb_s: MegabytesPerSecond | None = None

    def open(self, **kwargs: Any) -> RemoteHDFSTarget:
        return RemoteHDFSTarget(self, **kwargs)


class TokenBucket:
    """``rate`` tokens (bytes) a second, at most ``burst`` saved up; :meth:`take` sleeps off a debt."""

    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        self.rate, self.burst = rate, burst
        self._clock, self._sleep = clock, sleep
        self._tokens, self._stamp = burst, clock()

    def take(self, count: int) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate) - count
        self._stamp = now
        if self._tokens < 0:
            self._sleep(-self._tokens / self.rate)


class PacedReader:
    """A reader of ``size`` bytes from ``raw`` at most ``CHUNK`` at a time, paced by ``bucket``.

    ``len()`` is the size, so the HTTP client sends a Content-Length and reads through :meth:`read`.
    """

    def __init__(self, raw, size: int, bucket: TokenBucket):
        self._raw, self._size, self._bucket = raw, size, bucket

    def __len__(self) -> int:
        return self._size

    def read(self, size: int = -1) -> bytes:
        chunk = self._raw.read(CHUNK if size is None or size < 0 else min(size, CHUNK))
        if chunk:
            self._bucket.take(len(chunk))
        return chunk


class RemoteHDFSTarget(LocalHDFSTarget):
    type_name = "RemoteHDFS"

    def __init__(self, config: RemoteHDFSConfig, client_factory=None, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        super().__init__(config, client_factory)
        self.bytes_per_second = config.bandwidth_mb_s * MIB if config.bandwidth_mb_s else None
        self._clock, self._sleep = clock, sleep

    def _upload_data(self, data, size: int):
        if self.bytes_per_second is None:
            return data
        raw = BytesIO(data) if isinstance(data, bytes) else data
        return PacedReader(raw, size, TokenBucket(self.bytes_per_second, CHUNK, self._clock, self._sleep))
