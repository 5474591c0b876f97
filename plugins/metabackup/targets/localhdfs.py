"""LocalHDFS: backup sets in the cluster's own HDFS, through WebHDFS.

The NameService's Airflow connection (``webhdfs_<nameservice>`` unless the spec names another)
gives the client, through :func:`metabackup.connections.webhdfs_client` (the hdfs provider's
hook made HA-aware, built by the Airflow layer), unless a ``client_factory`` is passed.  Same contract as LocalDir: a file is written under a hidden ``.partial-``
name with permission 0600 and renamed into place only when whole (its length checked), task
directories are 0700, and the verify step re-reads every byte against the manifest's SHA-256.
When a failover takes the active NameNode away during an upload (a standby answer, a connection
lost, or any failure after which the NameNode that was active when the upload began no longer is),
the NameNodes are asked again which one is active and the file is uploaded again from the start
under a fresh partial name, a bounded number of times (:attr:`LocalHDFSTarget.UPLOAD_ATTEMPTS`).
The RemoteHDFS target (:mod:`metabackup.targets.remotehdfs`) is this target writing to another
cluster's NameService.
"""

from __future__ import annotations

import contextlib
import logging
import os
import posixpath
import secrets
import time
from pathlib import Path
from typing import Annotated, Any, BinaryIO, Literal

from pydantic import AfterValidator, Field

from metabackup.fields import ConnId, NameService, short, short_text
from metabackup.hdfs import active_namenode, is_failover_error
from metabackup.naming import is_temp_name, temp_name
from metabackup.targets.base import BackupTarget, StreamReader, TargetConfig, TargetError, join_uri

log = logging.getLogger(__name__)

FILE_PERMISSION = "600"
DIR_PERMISSION = "700"


DEFAULT_NAMESERVICE = "hacluster"
# HDFS locations a backup must never be written to (published in README).  The trees are owned by
# a service that cleans or rewrites them (HBase, YARN log aggregation, the MapReduce history server,
# tmp sweepers): nothing below them either.  The shared parents are refused only themselves, since
# /user/<name>/... and /apps/<name>/... are ordinary places of one's own.
HDFS_SYSTEM_TREES = ("/tmp", "/system", "/hbase", "/mr-history", "/app-logs")
HDFS_SYSTEM_DIRS = ("/", "/user", "/apps", *HDFS_SYSTEM_TREES)


def hdfs_backup_path(path: str) -> str:
    """An HDFS directory for backups: absolute, normalised, no hidden part, not a system directory."""
    if not path.startswith("/"):
        raise ValueError(f"must be an absolute HDFS path, got {short(path)}")
    parts = [p for p in path.split("/") if p]
    if ".." in parts or "." in parts or posixpath.normpath(path) != path.rstrip("/") and path != "/":
        raise ValueError(f"must be normalised (no '.', '..' or '//'): {short(path)}")
    hidden = [p for p in parts if p.startswith(".")]
    if hidden:
        raise ValueError(f"must not contain a hidden component such as {short(hidden[0])} (snapshot, trash and "
                         "reserved directories are not allowed)")
    norm = "/" + "/".join(parts)
    if norm in HDFS_SYSTEM_DIRS:
        raise ValueError(f"{short(norm)} is an HDFS system directory; choose a directory of its own, e.g. /backup/metadata")
    owner = next((tree for tree in HDFS_SYSTEM_TREES if norm.startswith(tree + "/")), None)
    if owner:
        raise ValueError(f"{short(norm)} lies inside the HDFS system directory {short(owner)}, whose service may clean "
                         "it; choose a directory of its own, e.g. /backup/metadata")
    return norm


HdfsBackupPath = Annotated[str, AfterValidator(hdfs_backup_path),
                           Field(description="an absolute HDFS directory of its own, e.g. /backup/metadata")]


class HDFSTargetConfig(TargetConfig):
    """What the HDFS target types share: a directory of a NameService, written through the
    NameService's WebHDFS connection."""

    path: HdfsBackupPath
    nameservice: NameService
    conn_id: ConnId | None = Field(None, description="the NameService's WebHDFS connection (default webhdfs_<nameservice>)")

    @property
    def webhdfs_conn_id(self) -> str:
        return self.conn_id or f"webhdfs_{self.nameservice}"

    @property
    def hdfs_nameservice(self) -> str:
        return self.nameservice

    def uri(self, task_dir: str = "") -> str:
        return join_uri(f"hdfs://{self.nameservice}{self.path.rstrip('/')}", task_dir)


class LocalHDFSConfig(HDFSTargetConfig):
    """``type: LocalHDFS``: a directory in the cluster's own HDFS, written through WebHDFS."""

    type: Literal["LocalHDFS"]
    nameservice: NameService = DEFAULT_NAMESERVICE

    def open(self, **kwargs: Any) -> LocalHDFSTarget:
        return LocalHDFSTarget(self, **kwargs)


class LocalHDFSTarget(BackupTarget):
    #: the type named in messages
    type_name = "LocalHDFS"
    #: uploads of one file when failovers interrupt it, each from the start under a fresh partial name
    UPLOAD_ATTEMPTS = 3
    #: seconds before the second attempt (doubled before each further one): a failover takes a moment
    RETRY_PAUSE = 2.0

    def __init__(self, config: HDFSTargetConfig, client_factory=None):
        self.root = config.path.rstrip("/") or "/"
        self.nameservice = config.nameservice
        self.conn_id = config.webhdfs_conn_id
        self.uri = config.uri()
        self._client_factory = client_factory or self._client_from_connection
        self._client = None

    # -- connection --------------------------------------------------------------------------

    def _client_from_connection(self):
        from metabackup.connections import webhdfs_client

        return webhdfs_client(self.conn_id)

    @property
    def client(self):
        if self._client is None:
            try:
                self._client = self._client_factory()
            except TargetError:
                raise
            except Exception as exc:  # missing connection, no NameNode answering
                raise TargetError(f"{self.uri}: cannot reach a NameNode of {self.nameservice} "
                                  f"(connection {self.conn_id!r}): {exc}") from exc
        return self._client

    def _call(self, what: str, func, *args, **kwargs):
        """Run one WebHDFS call; a failure becomes a TargetError naming the path and the cause."""
        from hdfs import HdfsError
        from requests import RequestException

        try:
            return func(*args, **kwargs)
        except (HdfsError, RequestException, OSError) as exc:
            raise TargetError(f"{self.uri}: {what} failed: {exc}") from exc

    def _dir(self, task_dir: str) -> str:
        if "/" in task_dir or task_dir in ("", ".", ".."):
            raise TargetError(f"bad task directory name {task_dir!r}")
        return posixpath.join(self.root, task_dir)

    def _path(self, task_dir: str, name: str) -> str:
        if "/" in name or name in ("", ".", ".."):
            raise TargetError(f"bad file name {name!r}")
        return posixpath.join(self._dir(task_dir), name)

    # -- BackupTarget ------------------------------------------------------------------------

    def ensure_writable(self, task_dir: str) -> None:
        directory = self._dir(task_dir)
        client = self.client
        status = self._call(f"status of {directory}", client.status, directory, strict=False)
        if status is None:
            self._call(f"creating {directory}", client.makedirs, directory, permission=DIR_PERMISSION)
        elif status["type"] != "DIRECTORY":
            raise TargetError(f"{self.uri}/{task_dir} exists and is not a directory")
        elif status["permission"] != DIR_PERMISSION:
            self._call(f"chmod {directory}", client.set_permission, directory, DIR_PERMISSION)
        probe = posixpath.join(directory, f".write-probe-{os.getpid()}-{secrets.token_hex(4)}")
        try:
            client.write(probe, data=b"", overwrite=True, permission=FILE_PERMISSION)
            client.delete(probe)
        except Exception as exc:
            raise TargetError(f"{self.type_name} {self.uri}/{task_dir} is not writable: {exc}") from exc

    def free_bytes(self) -> int | None:
        """The least of the cluster's remaining capacity and every quota on the way to the path."""
        limits = []
        capacity = self._capacity_remaining()
        if capacity is not None:
            limits.append(capacity)
        for directory in _ancestors(self.root):
            quota = self._quota_usage(directory)
            if quota is None:
                continue
            space_quota, consumed = quota.get("spaceQuota", -1), quota.get("spaceConsumed", 0)
            if space_quota is not None and space_quota >= 0:
                limits.append(max(space_quota - consumed, 0))
            if quota.get("quota", -1) >= 0 and quota.get("quota") - quota.get("fileAndDirectoryCount", 0) < 4:
                limits.append(0)  # the namespace quota cannot take a set's files
        return min(limits) if limits else None

    def _capacity_remaining(self) -> int | None:
        beans = self._namenode_json("/jmx?qry=Hadoop:service=NameNode,name=FSNamesystemState", "beans")
        if not beans:
            log.info("%s: cannot read the NameNode's remaining capacity; quotas still count", self.uri)
            return None
        return int(beans[0]["CapacityRemaining"])

    def _quota_usage(self, directory: str) -> dict[str, Any] | None:
        from urllib.parse import quote

        return self._namenode_json(f"/webhdfs/v1{quote(directory)}?op=GETQUOTAUSAGE", "QuotaUsage")

    def _namenode_json(self, path_and_query: str, key: str) -> Any:
        """GET from the first NameNode that answers (the client lists the active one first)."""
        client = self.client
        for url in getattr(client, "urls", [client.url]):
            try:
                response = client._session.get(url.rstrip("/") + path_and_query, timeout=30)
                if response.status_code == 200:
                    return response.json().get(key)
            except Exception as exc:  # an unreachable or standby NameNode: try the next
                log.debug("%s%s: %s", url, path_and_query, exc)
        return None

    def list_names(self, task_dir: str) -> list[str]:
        directory = self._dir(task_dir)
        status = self._call(f"status of {directory}", self.client.status, directory, strict=False)
        if status is None:
            return []
        return sorted(self._call(f"listing {directory}", self.client.list, directory))

    def open_read(self, task_dir: str, name: str) -> BinaryIO:
        path = self._path(task_dir, name)
        response = self._call(f"opening {path}", self.client._open, path, offset=0)
        return StreamReader(response.raw.read, response.close)  # type: ignore[return-value]  # closing frees the connection

    def put_file(self, local: Path, task_dir: str, name: str) -> None:
        self._put(lambda: open(local, "rb"), os.path.getsize(local), task_dir, name)

    def put_bytes(self, data: bytes, task_dir: str, name: str) -> None:
        self._put(lambda: contextlib.nullcontext(data), len(data), task_dir, name)

    def _put(self, open_data, size: int, task_dir: str, name: str) -> None:
        """Upload what ``open_data()`` gives (a context manager: a file from its start, or bytes)
        under a partial name, check its length, rename it over ``name``.  A failure a failover
        explains (:func:`~metabackup.hdfs.is_failover_error`, or the NameNode active when the
        attempt began is active no longer: the DataNode's own write then fails with a plain
        IOException) starts the upload again, from the start, under a fresh partial name, once the
        NameNodes were asked again which is active."""
        final = self._path(task_dir, name)
        directory = self._dir(task_dir)
        if self._call(f"status of {directory}", self.client.status, directory, strict=False) is None:
            # HDFS would create missing parents with the cluster's default permission (often 755)
            self._call(f"creating {directory}", self.client.makedirs, directory, permission=DIR_PERMISSION)
        partials: list[str] = []
        for attempt in range(1, self.UPLOAD_ATTEMPTS + 1):
            temp = self._path(task_dir, temp_name(name, secrets.token_hex(6)))
            partials.append(temp)
            active = self._active_namenode()
            try:
                with open_data() as data:
                    self._call(f"writing {temp}", self.client.write, temp, data=self._upload_data(data, size),
                               overwrite=True, permission=FILE_PERMISSION)
                written = self._call(f"status of {temp}", self.client.status, temp)["length"]
                if written != size:
                    raise TargetError(f"{self.uri}: {temp} has {written} bytes after the upload; expected {size}")
                self._rename_over(temp, final)
                partials.pop()
                break
            except BaseException as exc:
                partials = self._remove(partials)
                failover = is_failover_error(exc) or (isinstance(exc, Exception) and self._active_namenode() != active)
                if attempt == self.UPLOAD_ATTEMPTS or not failover:
                    if partials:  # the NameNode may be the reason we failed; preflight clears partials
                        log.warning("%s: could not remove the partial(s) %s; the next run removes them",
                                    self.uri, ", ".join(partials))
                    raise
                pause = self.RETRY_PAUSE * 2 ** (attempt - 1)
                log.warning("%s: the upload of %s was cut off by a NameNode failover (%s); asking the NameNodes "
                            "again which one is active, uploading the file again from the start in %.0f s "
                            "(attempt %d of %d)", self.uri, final, _first_line(exc), pause, attempt + 1,
                            self.UPLOAD_ATTEMPTS)
                time.sleep(pause)
                self._client = None  # the next call builds the client anew: the active NameNode first
        if self._remove(partials):  # an earlier attempt's partial the NameNode could not remove then
            log.warning("%s: could not remove an earlier attempt's partial; the next run removes it", self.uri)

    def _active_namenode(self) -> str | None:
        """The URL of the NameNode that says it is active now (None: none does, or none answers)."""
        try:
            client = self.client
            return active_namenode(getattr(client, "urls", None) or [client.url], client._session)
        except Exception as exc:  # no client to be had: no NameNode to call active
            log.debug("%s: asking which NameNode is active: %s", self.uri, exc)
            return None

    def _upload_data(self, data, size: int):
        """What the WebHDFS write sends: ``data`` itself (a subclass may wrap it, e.g. to pace it)."""
        return data

    def _remove(self, paths: list[str]) -> list[str]:
        """Delete each path (best effort); return those that could not be deleted."""
        left = []
        for path in paths:
            try:
                self.client.delete(path)
            except Exception as exc:
                log.debug("%s: removing %s: %s", self.uri, path, exc)
                left.append(path)
        return left

    def _rename_over(self, source: str, destination: str) -> None:
        """Atomic rename replacing ``destination`` (WebHDFS RENAME with ``renameoptions=OVERWRITE``)."""
        response = self._call(f"renaming {source} to {destination}", self.client._rename, source,
                              destination=destination, renameoptions="OVERWRITE")
        if response.status_code != 200:
            raise TargetError(f"{self.uri}: renaming {source} to {destination} failed: HTTP {response.status_code}")

    def delete(self, task_dir: str, name: str) -> None:
        path = self._path(task_dir, name)
        self._call(f"deleting {path}", self.client.delete, path)  # skips the trash: retention is final

    def remove_partials(self, task_dir: str, name: str | None = None) -> list[str]:
        removed = []
        for entry in self.list_names(task_dir):
            if is_temp_name(entry) and (name is None or entry.startswith(f".{name}")):
                self.delete(task_dir, entry)
                removed.append(entry)
        return removed


def _first_line(exc: BaseException) -> str:
    """An error's first line, short (a WebHDFS error carries the Java stack trace)."""
    text = str(exc).strip()
    return short_text(text.splitlines()[0] if text else type(exc).__name__)


def _ancestors(path: str) -> list[str]:
    """``/a/b/c`` → ``['/a/b/c', '/a/b', '/a']`` (the root's quota is the cluster's capacity)."""
    parts = [p for p in path.split("/") if p]
    return ["/" + "/".join(parts[:i]) for i in range(len(parts), 0, -1)]
