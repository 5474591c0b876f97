"""The HDFS targets' upload without a cluster: the upload again after a failover, the RemoteHDFS
settings and its bandwidth cap, over a fake WebHDFS client."""

from __future__ import annotations

import io
import logging

import pytest
import requests
from hdfs import HdfsError
from pydantic import ValidationError

from metabackup.hdfs import is_failover_error
from metabackup.targets import TYPES, TargetError
from metabackup.targets.localhdfs import LocalHDFSConfig
from metabackup.targets.remotehdfs import CHUNK, MIB, PacedReader, RemoteHDFSConfig, TokenBucket

TD = "t_20261124000000"


class Renamed:
    status_code = 200


class Answer:
    def __init__(self, status_code: int):
        self.status_code = status_code


class FakeClient:
    """A namespace in a dict; ``failures`` are raised by the next writes, one each, after the
    partial file was created (as a DataNode fails a write once the NameNode went away); a failure
    given as ``(error, "nn2")`` makes nn2 the active NameNode first."""

    def __init__(self, cluster: Cluster):
        self.cluster, self.files, self.failures = cluster, cluster.files, cluster.failures
        self.urls = ["http://nn1:9870", "http://nn2:9870"]
        self.renames: list[tuple[str, str]] = []
        self._session = self

    def get(self, url, timeout=None):  # the session: /isActive answers 200 at the active NameNode, else 405
        return Answer(200 if url.startswith(f"http://{self.cluster.active}:") else 405)

    def status(self, path, strict=True):
        if path in self.files or any(p.startswith(path.rstrip("/") + "/") for p in self.files):
            kind = "FILE" if path in self.files else "DIRECTORY"
            return {"type": kind, "length": len(self.files.get(path, b"")), "permission": "700"}
        if strict:
            raise HdfsError(f"File does not exist: {path}", exception="FileNotFoundException")
        return None

    def makedirs(self, path, permission=None):
        pass

    def write(self, path, data=None, overwrite=False, permission=None):
        self.files[path] = b""
        if hasattr(data, "read"):
            chunks = []
            while chunk := data.read(100_000):
                chunks.append(chunk)
            data = b"".join(chunks)
        if self.failures:
            failure = self.failures.pop(0)
            if isinstance(failure, tuple):
                failure, self.cluster.active = failure
            raise failure
        self.files[path] = data

    def _rename(self, source, destination, renameoptions=None):
        self.renames.append((source, destination))
        self.files[destination] = self.files.pop(source)
        return Renamed()

    def delete(self, path):
        return self.files.pop(path, None) is not None

    def list(self, path):
        return [p.rsplit("/", 1)[1] for p in self.files if p.rsplit("/", 1)[0] == path]


class Cluster:
    """The client factory: each call is one asking of the NameNodes (a new client, same namespace)."""

    def __init__(self, failures=()):
        self.files: dict[str, bytes] = {}
        self.failures = list(failures)
        self.clients: list[FakeClient] = []
        self.active = "nn1"

    def __call__(self) -> FakeClient:
        self.clients.append(FakeClient(self))
        return self.clients[-1]

    def names(self, task_dir=TD) -> list[str]:
        return sorted(p.rsplit("/", 1)[1] for p in self.files if p.startswith(f"/backup/meta/{task_dir}/"))


def standby() -> HdfsError:
    return HdfsError("Operation category WRITE is not supported in state standby\n\tat org.apache...",
                     exception="StandbyException")


def remote(**settings) -> RemoteHDFSConfig:
    return RemoteHDFSConfig(type="RemoteHDFS", path="/backup/meta", nameservice="haclusterX", **settings)


def local() -> LocalHDFSConfig:
    return LocalHDFSConfig(type="LocalHDFS", path="/backup/meta")


@pytest.mark.parametrize("error", [
    standby(),
    HdfsError("End of File Exception between local host ...", exception="EOFException"),
    HdfsError("Call From x to y failed on connection exception", exception="ConnectException"),
    requests.ConnectionError("refused"),
    requests.exceptions.ChunkedEncodingError("cut"),
    requests.ReadTimeout("slow"),
    ConnectionResetError(104, "reset"),
])
def test_what_a_failover_causes_is_told_apart(error):
    assert is_failover_error(error)
    wrapped = TargetError("hdfs://x/b: writing y failed")
    wrapped.__cause__ = error
    assert is_failover_error(wrapped), "through the TargetError raised from it"


@pytest.mark.parametrize("error", [
    HdfsError("Permission denied: user=x", exception="AccessControlException"),
    HdfsError("The DiskSpace quota is exceeded", exception="DSQuotaExceededException"),
    TargetError("has 3 bytes after the upload; expected 4"),
    ValueError("no"),
    KeyboardInterrupt(),
])
def test_other_failures_are_not_taken_for_a_failover(error):
    assert not is_failover_error(error)


@pytest.mark.parametrize("config", [local, remote], ids=["LocalHDFS", "RemoteHDFS"])
def test_an_upload_cut_by_a_failover_is_done_again_from_the_start_under_a_fresh_partial(config, tmp_path, caplog):
    cluster = Cluster(failures=[standby(), HdfsError("EOF", exception="EOFException")])
    target = config().open(client_factory=cluster)
    target.RETRY_PAUSE = 0
    data = bytes(range(256)) * 1000
    (tmp_path / "a").write_bytes(data)
    with caplog.at_level(logging.WARNING, logger="metabackup"):
        target.put_file(tmp_path / "a", TD, "x.tar.gz")
    assert cluster.names() == ["x.tar.gz"], "committed, and no partial of any attempt left"
    assert cluster.files[f"/backup/meta/{TD}/x.tar.gz"] == data
    renames = [r for c in cluster.clients for r in c.renames]
    assert len(renames) == 1, "committed once"
    assert len(cluster.clients) == 3, "the NameNodes asked again before each further attempt"
    assert sum("uploading the file again from the start" in r.getMessage() for r in caplog.records) == 2
    assert "\tat org.apache" not in caplog.text, "the Java stack trace stays out of the log line"


def test_any_failure_after_which_another_namenode_is_active_is_taken_for_a_failover(tmp_path):
    """The DataNode's own write fails with a plain IOException when the NameNode is stopped under it."""
    bad = HdfsError("All datanodes [DatanodeInfoWithStorage[127.0.0.1:42919,DS-5f,DISK]] are bad. Aborting...",
                    exception="IOException")
    cluster = Cluster(failures=[(bad, "nn2")])
    target = local().open(client_factory=cluster)
    target.RETRY_PAUSE = 0
    target.put_bytes(b"{}", TD, "m.manifest.json")
    assert cluster.names() == ["m.manifest.json"] and len(cluster.clients) == 2
    same = Cluster(failures=[bad])  # the same failure, the same NameNode active: not a failover
    target = local().open(client_factory=same)
    with pytest.raises(TargetError, match="are bad"):
        target.put_bytes(b"{}", TD, "m.manifest.json")
    assert same.names() == [] and len(same.clients) == 1


def test_the_attempts_are_bounded_and_the_last_failure_is_raised(tmp_path):
    cluster = Cluster(failures=[standby() for _ in range(5)])
    target = remote().open(client_factory=cluster)
    target.RETRY_PAUSE = 0
    with pytest.raises(TargetError, match="writing .*failed: Operation category WRITE"):
        target.put_bytes(b"{}", TD, "m.manifest.json")
    assert len(cluster.failures) == 5 - target.UPLOAD_ATTEMPTS
    assert cluster.names() == [], "nothing committed, no partial left"


def test_a_failure_no_failover_explains_is_not_retried(tmp_path):
    cluster = Cluster(failures=[HdfsError("Permission denied", exception="AccessControlException")])
    target = remote().open(client_factory=cluster)
    with pytest.raises(TargetError, match="Permission denied"):
        target.put_bytes(b"{}", TD, "m.manifest.json")
    assert len(cluster.clients) == 1 and cluster.names() == []


def test_remotehdfs_settings():
    config = remote()
    assert TYPES.get("RemoteHDFS") is RemoteHDFSConfig
    assert config.uri() == "hdfs://haclusterX/backup/meta"
    assert config.uri("t_20261124000000") == "hdfs://haclusterX/backup/meta/t_20261124000000"
    assert config.webhdfs_conn_id == "webhdfs_haclusterX" and remote(conn_id="dr").webhdfs_conn_id == "dr"
    assert config.bandwidth_mb_s is None and remote(bandwidth_mb_s=20).bandwidth_mb_s == 20
    assert config.open(client_factory=Cluster()).type_name == "RemoteHDFS"
    with pytest.raises(ValidationError, match="nameservice"):
        RemoteHDFSConfig(type="RemoteHDFS", path="/backup/meta")
    with pytest.raises(ValidationError, match="must be a positive number of MB/s, got 0"):
        remote(bandwidth_mb_s=0)
    with pytest.raises(ValidationError, match="HDFS system directory"):
        RemoteHDFSConfig(type="RemoteHDFS", path="/tmp/meta", nameservice="haclusterX")


class FakeTime:
    def __init__(self):
        self.now = 100.0
        self.slept = 0.0

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept += seconds
        self.now += seconds


def test_the_token_bucket_holds_the_rate():
    time = FakeTime()
    bucket = TokenBucket(rate=1000, burst=100, clock=time.clock, sleep=time.sleep)
    for _ in range(50):
        bucket.take(100)  # 5000 bytes at once: the first 100 from the burst, the rest paid in time
    assert time.slept == pytest.approx(4.9)
    time.now += 10  # idle: the saving is capped at the burst
    before = time.slept
    bucket.take(1000)
    assert time.slept - before == pytest.approx(0.9)


def test_the_paced_reader_gives_every_byte_and_takes_size_over_rate():
    time = FakeTime()
    data = bytes(range(256)) * 40_000  # ~9.8 MiB
    reader = PacedReader(io.BytesIO(data), len(data), TokenBucket(2 * MIB, CHUNK, time.clock, time.sleep))
    assert len(reader) == len(data)
    out = []
    while chunk := reader.read(1 << 20):
        assert len(chunk) <= CHUNK
        out.append(chunk)
    assert b"".join(out) == data
    assert time.slept == pytest.approx((len(data) - CHUNK) / (2 * MIB))


def test_remotehdfs_paces_the_upload_only_with_a_cap(tmp_path):
    time = FakeTime()
    data = b"x" * (3 * MIB)
    (tmp_path / "a").write_bytes(data)
    for bandwidth, least in ((None, 0.0), (1, 3.0)):
        cluster = Cluster()
        target = remote(bandwidth_mb_s=bandwidth).open(client_factory=cluster, clock=time.clock, sleep=time.sleep)
        before = time.slept
        target.put_file(tmp_path / "a", TD, "x.tar.gz")
        assert cluster.files[f"/backup/meta/{TD}/x.tar.gz"] == data
        assert time.slept - before == pytest.approx(max(least - CHUNK / MIB, 0))
