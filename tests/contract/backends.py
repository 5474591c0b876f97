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
from metabackup.targets.sftp import SFTPConfig


class Backend:
    id: str
    copies: tuple[str, ...] = ("primary",)
    #: free_bytes() may answer None ("cannot tell") only where this is False
    free_bytes_known: bool = True
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

    def make(self, tmp_path, request):
        cluster = request.getfixturevalue("hdfs_connected")  # the NameService hacluster's connection
        self.fs = WebHdfs(cluster.webhdfs_url())
        self.sandbox_dir = f"/contract-targets/{secrets.token_hex(4)}"
        self.fs.mkdirs(self.sandbox_dir)
        self.root = f"{self.sandbox_dir}/backups/meta"
        return LocalHDFSConfig(type="LocalHDFS", path=self.root, max_backups=5, nameservice="hacluster")

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
    SFTPBackend,
]
