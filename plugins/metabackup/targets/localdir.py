"""LocalDir: backup sets on the management node's local disk, with an optional standby copy.

Writes are atomic (hidden temp name, fsync, rename, fsync of the directory), files are 0600 and
directories 0700.  The standby mirror receives each file before the primary (so a name is listed only
once every copy is whole), and each copy is verified by comparing SHA-256 before it is renamed into
place.  A backup's upload from a staging area on the primary's file system stores the archive by a
hard link (same atomic temp-name-and-rename), not by a second copy of its bytes.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from metabackup import fsutil
from metabackup.fields import AbsolutePath, ProblemRow, data_path_of, inside, path_under, short
from metabackup.manifest import sha256_of
from metabackup.targets.base import BackupTarget, TargetConfig, TargetError, check_name, join_uri


class LocalDirConfig(TargetConfig):
    """``type: LocalDir``: a directory of the management node (relative paths are below the task's
    ``data_path``), and optionally a standby ``mirror`` directory that receives every file first."""

    type: Literal["LocalDir"]
    path: str = Field("LocalBackup", validate_default=True,
                      description="absolute, or relative to data_path (default <data_path>/LocalBackup)")
    mirror: AbsolutePath | None = Field(None, description="a standby copy's directory, outside path")
    require_mountpoint: bool = Field(False, description="refuse to write unless path is a mount point (an NFS or "
                                                        "CIFS share that is not mounted would fill the local disk)")

    @field_validator("path")
    @classmethod
    def _under_data_path(cls, value: str, info: ValidationInfo) -> str:
        return path_under(value, data_path_of(info))

    @model_validator(mode="after")
    def _mirror_apart(self) -> LocalDirConfig:
        if self.mirror and (inside(self.mirror, self.path) or inside(self.path, self.mirror)):
            raise ProblemRow("mirror", f"{short(self.mirror)} overlaps the primary path {short(self.path)}; "
                                       "the standby copy needs its own directory")
        return self

    def uri(self, task_dir: str = "") -> str:
        return join_uri(f"file://{self.path}", task_dir)

    def open(self, **kwargs: Any) -> LocalDirTarget:
        return LocalDirTarget(self)

    def mirror_location(self) -> LocalDirConfig | None:
        """The standby mirror as a target of its own (a restore falls back to it; it is written
        through the primary, never on its own)."""
        if not self.mirror:
            return None
        return LocalDirConfig(type="LocalDir", path=self.mirror, max_backups=self.max_backups)

    def local_dirs(self) -> list[tuple[str, str, str]]:
        note = "" if "path" in self.model_fields_set else " (the default, <data_path>/LocalBackup)"
        return [("path", self.path, note)] + ([("mirror", self.mirror, "")] if self.mirror else [])


class LocalDirTarget(BackupTarget):
    def __init__(self, config: LocalDirConfig):
        self.root = Path(config.path)
        self.mirror = Path(config.mirror) if config.mirror else None
        self.uri = config.uri()
        self.require_mountpoint = config.require_mountpoint

    def _dir(self, root: Path, task_dir: str) -> Path:
        check_name("task directory", task_dir)
        return root / task_dir

    def _file(self, root: Path, task_dir: str, name: str) -> Path:
        check_name("file", name)
        return self._dir(root, task_dir) / name

    def _roots(self) -> list[Path]:
        return [self.root] + ([self.mirror] if self.mirror else [])

    def _roots_primary_last(self) -> list[Path]:
        """Writes go to the mirror first: a name is visible (at the primary) only once every copy is whole."""
        return list(reversed(self._roots()))

    def ensure_writable(self, task_dir: str) -> None:
        if self.require_mountpoint and not os.path.ismount(self.root):
            raise TargetError(f"LocalDir {self.root} is not a mount point, and the spec says require_mountpoint: the "
                              "NFS/CIFS share it should hold is not mounted. Mount it (or fix path) and retry; "
                              "nothing was written to the local disk")
        for root in self._roots():
            directory = self._dir(root, task_dir)
            try:
                fsutil.ensure_private_dir(directory)
                probe = directory / f".write-probe-{os.getpid()}"
                probe.write_bytes(b"")
                probe.unlink()
            except OSError as exc:
                raise TargetError(f"LocalDir {directory} is not writable: {exc}") from exc

    def free_bytes(self) -> int | None:
        free = []
        for root in self._roots():
            probe = root
            while not probe.exists() and probe != probe.parent:
                probe = probe.parent
            free.append(shutil.disk_usage(probe).free)
        return min(free)

    def list_names(self, task_dir: str) -> list[str]:
        directory = self._dir(self.root, task_dir)
        return sorted(os.listdir(directory)) if directory.is_dir() else []

    def open_read(self, task_dir: str, name: str) -> BinaryIO:
        fd = os.open(self._file(self.root, task_dir, name), os.O_RDONLY | os.O_NOFOLLOW)
        return os.fdopen(fd, "rb")

    def put_file(self, local: Path, task_dir: str, name: str, may_link: bool = False,
                 on_bytes: Callable[[int], None] | None = None) -> None:
        """Store ``local`` at the mirror, then at the primary, each a copy checked against ``local``'s
        SHA-256; with ``may_link`` (the backup's own upload from its staging area) the primary gets a
        hard link instead when it is on ``local``'s file system: the same bytes, not a second copy,
        and ``local`` stays for the run's later steps.  The mirror and off-site copies are always
        copies (a standby copy that shared the primary's inode would share its damage too).
        ``on_bytes`` is told the bytes stored at the primary."""
        expected = None
        for root in self._roots_primary_last():
            final = self._file(root, task_dir, name)
            primary = root == self.root
            if primary and may_link and fsutil.link_atomically(local, final):
                if on_bytes is not None:
                    on_bytes(os.path.getsize(final))
                continue
            if expected is None:
                expected, _ = _file_sha256(local)
            digest = hashlib.sha256()

            def chunk(block: bytes, report: bool = primary) -> None:
                digest.update(block)
                if report and on_bytes is not None:
                    on_bytes(len(block))

            with open(local, "rb") as src, fsutil.atomic_writer(final) as dst:
                fsutil.copy_stream(src, dst, chunk)
                if digest.hexdigest() != expected:  # raising inside the writer discards the temp file
                    raise TargetError(f"copy to {final} does not match its source checksum")

    def put_file_reporting(self, local: Path, task_dir: str, name: str, on_bytes: Callable[[int], None]) -> None:
        self.put_file(local, task_dir, name, may_link=True, on_bytes=on_bytes)

    def put_bytes(self, data: bytes, task_dir: str, name: str) -> None:
        for root in self._roots_primary_last():
            with fsutil.atomic_writer(self._file(root, task_dir, name)) as dst:
                dst.write(data)

    def verify(self, task_dir: str, name: str, sha256: str, size: int) -> None:
        """Re-read the file at the primary and the mirror; raise unless both match."""
        for root in self._roots():
            path = self._file(root, task_dir, name)
            try:
                actual, actual_size = _file_sha256(path)
            except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
                raise TargetError(f"{path} is missing") from None
            if (actual, actual_size) != (sha256, size):
                raise TargetError(f"{path} has sha256 {actual} ({actual_size} bytes); expected {sha256} ({size} bytes)")

    def delete(self, task_dir: str, name: str) -> None:
        for root in self._roots():
            self._file(root, task_dir, name).unlink(missing_ok=True)

    def remove_partials(self, task_dir: str, name: str | None = None) -> list[str]:
        removed = []
        for root in self._roots():
            removed += fsutil.remove_partials(self._dir(root, task_dir), name)
        return removed


def _file_sha256(path: Path) -> tuple[str, int]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise TargetError(f"{path} is a symbolic link, not a stored file") from None
        raise
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise TargetError(f"{path} is not a regular file")
        return sha256_of(handle)
