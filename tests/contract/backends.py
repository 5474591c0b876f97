"""One adapter per backup target for the target contract (tests/contract/test_target_contract.py).

An adapter makes a fresh target config (``make``: the spec's ``target`` model) and looks at what the target stored *without*
going through it (``raw_*``): every copy it keeps (``copies``: the primary, a LocalDir's standby
mirror), file and directory modes where the storage shows them, and the whole sandbox around the
target so a refused name can be shown to have written nothing anywhere.  A new target is tested
by writing its adapter and adding one line to ``BACKENDS``.
"""

from __future__ import annotations

import os
import posixpath
import secrets
import stat
from pathlib import Path

from hdfs_helpers import WebHdfs
from metabackup.targets.base import TargetConfig
from metabackup.targets.localdir import LocalDirConfig
from metabackup.targets.localhdfs import LocalHDFSConfig
from metabackup.targets.remotehdfs import RemoteHDFSConfig
from metabackup.targets.s3 import S3Config, partial_name
from metabackup.targets.sftp import SFTPConfig


class Backend:
    id: str
    copies: tuple[str, ...] = ("primary",)
    #: free_bytes() may answer None ("cannot tell") only where this is False
    free_bytes_known: bool = True
    #: False where the storage keeps no permission bits (file_mode and dir_modes answer None)
    posix_modes: bool = True
    #: the size of the file a killed writer copies: big enough to be caught mid-copy
    kill_size: int = 128 * 1024 * 1024

    def make(self, tmp_path: Path, request) -> TargetConfig:
        raise NotImplementedError

    def raw_names(self, copy: str, task_dir: str) -> list[str]:
        """Every name in the task directory of one copy, hidden ones included ([] if absent)."""
        raise NotImplementedError

    def raw_write(self, copy: str, task_dir: str, name: str, data: bytes) -> None:
        raise NotImplementedError

    def raw_read(self, copy: str, task_dir: str, name: str) -> bytes:
        raise NotImplementedError

    def file_mode(self, copy: str, task_dir: str, name: str) -> int | None:
        """The stored file's permission bits, or None where the storage has none."""
        raise NotImplementedError

    def dir_modes(self, copy: str, task_dir: str) -> dict[str, int] | None:
        """Permission bits of the target root and the task directory (both created by the target)."""
        raise NotImplementedError

    def sandbox(self) -> set[str]:
        """Every path below the folder holding the target's root(s)."""
        raise NotImplementedError


class LocalDirBackend(Backend):
    id = "LocalDir"

    def make(self, tmp_path, request):
        self.sandbox_dir = tmp_path / "sandbox"
        self.roots = {"primary": self.sandbox_dir / "backups" / "primary"}
        self.sandbox_dir.mkdir()
        return LocalDirConfig(type="LocalDir", path=str(self.roots["primary"]), max_backups=5)

    def _dir(self, copy, task_dir):
        return self.roots[copy] / task_dir

    def raw_names(self, copy, task_dir):
        try:
            return sorted(os.listdir(self._dir(copy, task_dir)))
        except FileNotFoundError:
            return []

    def raw_write(self, copy, task_dir, name, data):
        directory = self._dir(copy, task_dir)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / name).write_bytes(data)

    def raw_read(self, copy, task_dir, name):
        return (self._dir(copy, task_dir) / name).read_bytes()

    def file_mode(self, copy, task_dir, name):
        return os.stat(self._dir(copy, task_dir) / name).st_mode & 0o777

    def dir_modes(self, copy, task_dir):
        root = self.roots[copy]
        return {str(p): os.stat(p).st_mode & 0o777 for p in (root.parent, root, root / task_dir)}

    def sandbox(self):
        return {str(p.relative_to(self.sandbox_dir)) for p in self.sandbox_dir.rglob("*")}


class LocalDirMirrorBackend(LocalDirBackend):
    id = "LocalDir-mirror"
    copies = ("primary", "mirror")

    def make(self, tmp_path, request):
        target = super().make(tmp_path, request)
        self.roots["mirror"] = self.sandbox_dir / "standby" / "mirror"
        return LocalDirConfig(type="LocalDir", path=target.path, max_backups=5, mirror=str(self.roots["mirror"]))


class LocalHDFSBackend(Backend):
    id = "LocalHDFS"
    kill_size = 32 * 1024 * 1024
    #: the fixture giving the cluster, its NameService's connection set
    cluster_fixture = "hdfs_connected"  # the NameService hacluster

    def make(self, tmp_path, request):
        cluster = request.getfixturevalue(self.cluster_fixture)
        self.fs = WebHdfs(cluster.webhdfs_url())
        self.sandbox_dir = f"/contract-targets/{secrets.token_hex(4)}"
        self.fs.mkdirs(self.sandbox_dir)
        self.root = f"{self.sandbox_dir}/backups/meta"
        return self.config(self.root)

    def config(self, root: str) -> TargetConfig:
        return LocalHDFSConfig(type="LocalHDFS", path=root, max_backups=5, nameservice="hacluster")

    def _path(self, task_dir, name=None):
        return posixpath.join(self.root, task_dir, *([name] if name else []))

    def raw_names(self, copy, task_dir):
        if self.fs.status(self._path(task_dir)) is None:
            return []
        return self.fs.names(self._path(task_dir))

    def raw_write(self, copy, task_dir, name, data):
        self.fs.write(self._path(task_dir, name), data)

    def raw_read(self, copy, task_dir, name):
        return self.fs.read(self._path(task_dir, name))

    def file_mode(self, copy, task_dir, name):
        return int(self.fs.status(self._path(task_dir, name))["permission"], 8)

    def dir_modes(self, copy, task_dir):
        return {p: int(self.fs.status(p)["permission"], 8) for p in (posixpath.dirname(self.root), self.root,
                                                                      self._path(task_dir))}

    def sandbox(self):
        return {path.removeprefix(self.sandbox_dir + "/") for path in self.fs.tree(self.sandbox_dir)}


class RemoteHDFSBackend(LocalHDFSBackend):
    """A second HDFS standing for another cluster's NameService ``haclusterX`` (its connection
    ``webhdfs_haclusterX``), with a bandwidth cap high enough not to slow the suite down, so the
    paced upload is under the contract too."""

    id = "RemoteHDFS"
    cluster_fixture = "remote_hdfs_cluster"

    def config(self, root: str) -> TargetConfig:
        return RemoteHDFSConfig(type="RemoteHDFS", path=root, max_backups=5, nameservice="haclusterX",
                                bandwidth_mb_s=256)


class S3Backend(Backend):
    """A fresh bucket of the package's s3proxy per test, read through a boto3 client of its own.

    free_bytes_known is False: S3 has no notion of free space, the target answers None.
    posix_modes is False: objects have no permission bits (access is the bucket policy's).
    A partial is an unfinished multipart upload (an object appears only when complete), listed by
    raw_names under the name the target reports when it aborts it (``partial_name``).
    """

    id = "S3"
    free_bytes_known = False
    posix_modes = False
    kill_size = 64 * 1024 * 1024  # 4 parts of 16 MiB: the upload is caught between its parts

    def make(self, tmp_path, request):
        proxy = request.getfixturevalue("servers").s3proxy()  # the Airflow connection s3_contract
        self.s3 = proxy.client()
        self.bucket = proxy.create_bucket(f"contract-{secrets.token_hex(4)}")
        self.root = "backups/meta"
        return S3Config(type="S3", conn_id="s3_contract", bucket=self.bucket, prefix=self.root, max_backups=5)

    def _key(self, task_dir, name=""):
        return f"{self.root}/{task_dir}/{name}"

    def _objects(self, prefix):
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        return [item["Key"] for page in pages for item in page.get("Contents", [])]

    def _uploads(self, prefix):
        pages = self.s3.get_paginator("list_multipart_uploads").paginate(Bucket=self.bucket, Prefix=prefix)
        return [(u["Key"], u["UploadId"]) for page in pages for u in page.get("Uploads", [])]

    def raw_names(self, copy, task_dir):
        prefix = self._key(task_dir)
        names = [key[len(prefix):] for key in self._objects(prefix)]
        names += [partial_name(key[len(prefix):], upload_id) for key, upload_id in self._uploads(prefix)]
        return sorted(names)

    def raw_write(self, copy, task_dir, name, data):
        self.s3.put_object(Bucket=self.bucket, Key=self._key(task_dir, name), Body=data)

    def raw_read(self, copy, task_dir, name):
        return self.s3.get_object(Bucket=self.bucket, Key=self._key(task_dir, name))["Body"].read()

    def file_mode(self, copy, task_dir, name):
        return None

    def dir_modes(self, copy, task_dir):
        return None

    def sandbox(self):
        return set(self._objects("")) | {f"upload {key} {upload_id}" for key, upload_id in self._uploads("")}


class SFTPBackend(Backend):
    """A real OpenSSH sftp server (``harness.sshd``, connection ``sftp_contract``), looked at through
    a paramiko client of the adapter's own (the server's key pinned), never through the target."""

    id = "SFTP"
    kill_size = 32 * 1024 * 1024

    def make(self, tmp_path, request):
        server = request.getfixturevalue("servers").sshd()
        self.sftp = server.sftp_session()
        request.addfinalizer(self.sftp.get_channel().get_transport().close)
        self.sandbox_dir = f"{server.root}/contract-{secrets.token_hex(4)}"
        self.sftp.mkdir(self.sandbox_dir)
        self.root = f"{self.sandbox_dir}/backups/meta"
        return SFTPConfig(type="SFTP", conn_id="sftp_contract", path=self.root, max_backups=5)

    def _path(self, task_dir, name=None):
        return posixpath.join(self.root, task_dir, *([name] if name else []))

    def raw_names(self, copy, task_dir):
        try:
            return sorted(self.sftp.listdir(self._path(task_dir)))
        except FileNotFoundError:
            return []

    def raw_write(self, copy, task_dir, name, data):
        with self.sftp.open(self._path(task_dir, name), "wb") as handle:
            handle.write(data)

    def raw_read(self, copy, task_dir, name):
        with self.sftp.open(self._path(task_dir, name), "rb") as handle:
            return handle.read()

    def file_mode(self, copy, task_dir, name):
        return stat.S_IMODE(self.sftp.stat(self._path(task_dir, name)).st_mode)

    def dir_modes(self, copy, task_dir):
        return {p: stat.S_IMODE(self.sftp.stat(p).st_mode) for p in (posixpath.dirname(self.root), self.root,
                                                                      self._path(task_dir))}

    def sandbox(self):
        found, todo = set(), [self.sandbox_dir]
        while todo:
            directory = todo.pop()
            for entry in self.sftp.listdir_attr(directory):
                path = f"{directory}/{entry.filename}"
                found.add(path.removeprefix(self.sandbox_dir + "/"))
                if stat.S_ISDIR(entry.st_mode):
                    todo.append(path)
        return found


BACKENDS: list[type[Backend]] = [
    LocalDirBackend,
    LocalDirMirrorBackend,
    LocalHDFSBackend,
    RemoteHDFSBackend,
    S3Backend,
    SFTPBackend,
]
