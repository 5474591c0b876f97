"""LocalDir: backup sets on the management node's local disk, with an optional standby copy.

Writes are atomic (hidden temp name, fsync, rename, fsync of the directory), files are 0600 and
directories 0700.  The standby mirror receives each file before the primary (so a name is listed only
once every copy is whole), and each copy is verified by comparing SHA-256 before it is renamed into
place.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import shutil
from pathlib import Path
from typing import BinaryIO

from metabackup import fsutil
from metabackup.manifest import sha256_of
from metabackup.targets.base import BackupTarget, TargetError


class LocalDirTarget(BackupTarget):
    def __init__(self, path: str, mirror: str | None = None):
        self.root = Path(path)
        self.mirror = Path(mirror) if mirror else None
        self.uri = f"file://{self.root}"

    def _dir(self, root: Path, task_dir: str) -> Path:
        _check_name("task directory", task_dir)
        return root / task_dir

    def _file(self, root: Path, task_dir: str, name: str) -> Path:
        _check_name("file", name)
        return self._dir(root, task_dir) / name

    def _roots(self) -> list[Path]:
        return [self.root] + ([self.mirror] if self.mirror else [])

    def _roots_primary_last(self) -> list[Path]:
        """Writes go to the mirror first: a name is visible (at the primary) only once every copy is whole."""
        return list(reversed(self._roots()))

    def ensure_writable(self, task_dir: str) -> None:
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

    def put_file(self, local: Path, task_dir: str, name: str) -> None:
        expected, _ = _file_sha256(local)
        for root in self._roots_primary_last():
            final = self._file(root, task_dir, name)
            digest = hashlib.sha256()
            with open(local, "rb") as src, fsutil.atomic_writer(final) as dst:
                fsutil.copy_stream(src, dst, digest.update)
                if digest.hexdigest() != expected:  # raising inside the writer discards the temp file
                    raise TargetError(f"copy to {final} does not match its source checksum")

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


def _check_name(what: str, name: str) -> None:
    """A target stores flat names: never a separator, a parent reference or an empty name."""
    if not isinstance(name, str) or "/" in name or "\0" in name or name in ("", ".", ".."):
        raise TargetError(f"refusing {what} name {name!r}: a name at a target has no '/' and is not '.' or '..'")


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
