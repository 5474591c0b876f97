"""SFTP: backup sets in a directory of an SSH server, through the sftp provider's hook.

The spec names an Airflow ``sftp`` connection (host, port, login, password or key) and an absolute
directory on the server; nothing is looked up when the DAG is parsed.  The client comes from
:func:`metabackup.connections.sftp_client` (the sftp provider's hook, built by the Airflow layer)
unless a ``client_factory`` is passed, and the server's host key is verified before anything is
sent: the connection's extra ``host_key``, or the spec's ``known_hosts`` file.  An unknown or
changed key is refused, never accepted.

Same contract as LocalDir: a file is written under a hidden ``.partial-`` name, made 0600 before
its first byte, flushed to the server's disk (``fsync@openssh.com``), its size checked, and renamed
into place with ``posix-rename@openssh.com`` (atomic, replacing).  Directories the target creates
are 0700, and the task directory is made 0700 when it exists with another mode.  Free space is the
server's answer to ``statvfs@openssh.com`` for the target's directory.  Every failure on the way
is a TargetError naming ``sftp://<conn_id><path>`` and the cause.
"""

from __future__ import annotations

import io
import logging
import os
import posixpath
import secrets
import stat
import weakref
from pathlib import Path
from typing import Annotated, Any, BinaryIO, ClassVar, Literal

from pydantic import AfterValidator, Field

from metabackup.fields import AbsolutePath, ConnId, absolute_path
from metabackup.fsutil import COPY_CHUNK
from metabackup.naming import is_temp_name, temp_name
from metabackup.targets.base import BackupTarget, TargetConfig, TargetError, check_name, join_uri

log = logging.getLogger(__name__)

FILE_MODE = 0o600
DIR_MODE = 0o700
# SFTP protocol (draft-ietf-secsh-filexfer-02, as OpenSSH speaks it) and OpenSSH's extensions
_CMD_EXTENDED, _CMD_EXTENDED_REPLY = 200, 201
_STATVFS = "statvfs@openssh.com"
_FSYNC = "fsync@openssh.com"


def sftp_directory(value: str) -> str:
    """An absolute directory on the server, normalised, without '..', not the root itself."""
    path = "/" + absolute_path(value).lstrip("/")  # (normpath keeps a leading '//')
    if path == "/":
        raise ValueError("is the server's root directory; choose a directory of its own, e.g. /backup/metadata")
    return path


SftpDirectory = Annotated[str, AfterValidator(sftp_directory),
                          Field(description="an absolute directory on the SFTP server, e.g. /backup/metadata")]


class SFTPConfig(TargetConfig):
    """``type: SFTP``: a directory on an SSH server, reached through an Airflow ``sftp`` connection."""

    off_cluster: ClassVar[bool] = True

    type: Literal["SFTP"]
    conn_id: ConnId = Field(description="the Airflow sftp connection (host, port, login, password or key; "
                                        "extra host_key pins the server's key)")
    path: SftpDirectory
    known_hosts: AbsolutePath | None = Field(
        None, description="a known_hosts file of this machine listing the server's host key "
                          "(instead of, or beside, the connection's extra host_key)")

    def uri(self, task_dir: str = "") -> str:
        return join_uri(f"sftp://{self.conn_id}{self.path}", task_dir)

    def open(self, **kwargs: Any) -> SFTPTarget:
        return SFTPTarget(self, **kwargs)


class _Stream:
    """A file-like reader over a remote file; a failure while reading is a TargetError."""

    def __init__(self, handle, label: str):
        self._handle = handle
        self._label = label

    def read(self, size: int = -1) -> bytes:
        try:
            return self._handle.read(None if size is None or size < 0 else size)
        except Exception as exc:  # a dropped connection surfaces here mid-read
            raise TargetError(f"{self._label}: reading failed: {_cause(exc)}") from exc

    def close(self) -> None:
        try:
            self._handle.close()
        except Exception as exc:  # closing a handle on a dead connection: nothing to keep
            log.debug("%s: close: %s", self._label, exc)

    def __enter__(self) -> _Stream:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class SFTPTarget(BackupTarget):
    def __init__(self, config: SFTPConfig, client_factory=None):
        self.root = config.path
        self.conn_id = config.conn_id
        self.known_hosts = config.known_hosts
        self.uri = config.uri()
        self._client_factory = client_factory or self._client_from_connection
        self._sftp = None
        self._owner_pid = 0
        self._ready: set[str] = set()  # task directories checked (and made 0700) by this target

    # -- connection --------------------------------------------------------------------------

    def _client_from_connection(self):
        from metabackup.connections import sftp_client

        return sftp_client(self.conn_id, self.known_hosts)

    @property
    def sftp(self):
        """The SFTP session, opened on first use and again after the connection dropped."""
        if self._sftp is not None and (self._owner_pid != os.getpid() or not _active(self._sftp)):
            self._sftp = None  # a forked copy's or a dead session: never reused
            self._ready.clear()
        if self._sftp is None:
            try:
                client = self._client_factory()
            except TargetError:
                raise
            except Exception as exc:  # a missing connection, a refused host key, a login refused
                raise TargetError(f"{self.uri}: cannot open an SFTP session through connection "
                                  f"{self.conn_id!r}: {_cause(exc)}") from exc
            self._sftp, self._owner_pid = client, os.getpid()
            transport = client.get_channel().get_transport()
            weakref.finalize(self, transport.close)  # a dropped target closes its connection
        return self._sftp

    def close(self) -> None:
        """Close the connection (the next call opens a new one)."""
        if self._sftp is not None and self._owner_pid == os.getpid():
            self._sftp.get_channel().get_transport().close()
        self._sftp = None
        self._ready.clear()

    def _call(self, what: str, func, *args, **kwargs):
        """Run one SFTP request; a failure becomes a TargetError naming the path and the cause."""
        try:
            return func(*args, **kwargs)
        except TargetError:
            raise
        except Exception as exc:  # IOError from the server's status, SSHException/EOFError when the link dies
            raise TargetError(f"{self.uri}: {what} failed: {_cause(exc)}") from exc

    def _stat(self, path: str):
        """The path's attributes, or None if it does not exist."""
        sftp = self.sftp
        try:
            return sftp.stat(path)
        except FileNotFoundError:
            return None
        except Exception as exc:
            raise TargetError(f"{self.uri}: status of {path} failed: {_cause(exc)}") from exc

    # -- names -------------------------------------------------------------------------------

    def _dir(self, task_dir: str) -> str:
        check_name("task directory", task_dir)
        return posixpath.join(self.root, task_dir)

    def _path(self, task_dir: str, name: str) -> str:
        check_name("file", name)
        return posixpath.join(self._dir(task_dir), name)

    def _ensure_dir(self, task_dir: str) -> str:
        """The task directory, created with every missing parent 0700; made 0700 if it had another mode."""
        directory = self._dir(task_dir)
        if directory in self._ready:
            return directory
        parts = directory.strip("/").split("/")
        for depth in range(1, len(parts) + 1):
            path = "/" + "/".join(parts[:depth])
            attrs = self._stat(path)
            if attrs is None:
                sftp = self.sftp
                try:
                    sftp.mkdir(path, DIR_MODE)
                except Exception as exc:
                    attrs = self._stat(path)  # made by a concurrent writer meanwhile?
                    if attrs is None:
                        raise TargetError(f"{self.uri}: creating {path} failed: {_cause(exc)}") from exc
                else:
                    self._call(f"chmod {path}", self.sftp.chmod, path, DIR_MODE)  # whatever the server's umask
                    continue
            if not stat.S_ISDIR(attrs.st_mode or 0):
                raise TargetError(f"{self.uri}: {path} exists and is not a directory")
            if path == directory and stat.S_IMODE(attrs.st_mode) != DIR_MODE:
                self._call(f"chmod {path}", self.sftp.chmod, path, DIR_MODE)
        self._ready.add(directory)
        return directory

    # -- BackupTarget ------------------------------------------------------------------------

    def ensure_writable(self, task_dir: str) -> None:
        directory = self._ensure_dir(task_dir)
        probe = posixpath.join(directory, f".write-probe-{os.getpid()}-{secrets.token_hex(4)}")
        sftp = self.sftp
        try:
            with sftp.open(probe, "wx") as handle:
                handle.chmod(FILE_MODE)
            sftp.remove(probe)
        except Exception as exc:
            raise TargetError(f"SFTP {self.uri}/{task_dir} is not writable: {_cause(exc)}") from exc

    def free_bytes(self) -> int | None:
        """``statvfs@openssh.com`` of the target's directory (or its nearest existing parent):
        the blocks free to an unprivileged user.  None when the server does not offer the extension."""
        path = self.root
        while path != "/" and self._stat(path) is None:
            path = posixpath.dirname(path)
        sftp = self.sftp
        try:
            kind, msg = sftp._request(_CMD_EXTENDED, _STATVFS, path)
        except IOError as exc:
            if "unsupported" in str(exc).lower():
                log.info("%s: the server does not report free space (%s)", self.uri, exc)
                return None
            raise TargetError(f"{self.uri}: free space of {path} failed: {_cause(exc)}") from exc
        except Exception as exc:
            raise TargetError(f"{self.uri}: free space of {path} failed: {_cause(exc)}") from exc
        if kind != _CMD_EXTENDED_REPLY:
            raise TargetError(f"{self.uri}: free space of {path}: unexpected reply {kind} to {_STATVFS}")
        _bsize, frsize, _blocks, _bfree, bavail = (msg.get_int64() for _ in range(5))
        return bavail * frsize

    def list_names(self, task_dir: str) -> list[str]:
        """The finished names (partial uploads are not listed)."""
        return [name for name in self._listing(task_dir) if not is_temp_name(name)]

    def _listing(self, task_dir: str) -> list[str]:
        directory = self._dir(task_dir)
        try:
            try:
                return sorted(self.sftp.listdir(directory))
            except EOFError:
                # the connection dropped (e.g. under an upload that failed a moment ago) before its
                # transport noticed: a listing changes nothing, so list again on a new session
                self.close()
                return sorted(self.sftp.listdir(directory))
        except FileNotFoundError:
            return []
        except TargetError:
            raise
        except Exception as exc:
            raise TargetError(f"{self.uri}: listing {directory} failed: {_cause(exc)}") from exc

    def open_read(self, task_dir: str, name: str) -> BinaryIO:
        path = self._path(task_dir, name)
        handle = self._call(f"opening {path}", self.sftp.open, path, "rb")
        try:
            size = handle.stat().st_size
            handle.prefetch(size)  # pipelined reads: a large archive at the link's speed
        except Exception as exc:
            handle.close()
            raise TargetError(f"{self.uri}: opening {path} failed: {_cause(exc)}") from exc
        return _Stream(handle, f"{self.uri}/{task_dir}/{name}")  # type: ignore[return-value]

    def put_file(self, local: Path, task_dir: str, name: str) -> None:
        size = os.path.getsize(local)
        with open(local, "rb") as handle:
            self._put(handle, size, task_dir, name)

    def put_bytes(self, data: bytes, task_dir: str, name: str) -> None:
        self._put(io.BytesIO(data), len(data), task_dir, name)

    def _put(self, source: BinaryIO, size: int, task_dir: str, name: str) -> None:
        final = self._path(task_dir, name)
        directory = self._ensure_dir(task_dir)
        temp = posixpath.join(directory, temp_name(name, secrets.token_hex(6)))
        sftp = self.sftp
        try:
            handle = self._call(f"creating {temp}", sftp.open, temp, "wx")  # exclusive: never someone else's file
            with handle:
                self._call(f"chmod {temp}", handle.chmod, FILE_MODE)  # before the first byte
                handle.set_pipelined(True)
                while block := source.read(COPY_CHUNK):
                    self._call(f"writing {temp}", handle.write, block)
                self._call(f"writing {temp}", handle.flush)
                self._call(f"writing {temp}", _await_writes, handle)
                self._fsync(sftp, handle, temp)
            written = self._call(f"status of {temp}", sftp.stat, temp).st_size
            if written != size:
                raise TargetError(f"{self.uri}: {temp} has {written} bytes after the upload; expected {size}")
            self._call(f"renaming {temp} to {final}", sftp.posix_rename, temp, final)
        except BaseException:
            try:
                sftp.remove(temp)
            except Exception:  # the connection may be why we failed; preflight's sweep removes it
                log.warning("%s: could not remove the partial %s; the next run removes it", self.uri, temp)
            raise

    def _fsync(self, sftp, handle, path: str) -> None:
        """Ask the server to flush the file to its disk (``fsync@openssh.com``) before the rename."""
        try:
            sftp._request(_CMD_EXTENDED, _FSYNC, handle.handle)
        except IOError as exc:
            if "unsupported" in str(exc).lower():  # not OpenSSH: the rename still makes it whole or absent
                log.debug("%s: the server has no %s", self.uri, _FSYNC)
                return
            raise TargetError(f"{self.uri}: flushing {path} failed: {_cause(exc)}") from exc
        except Exception as exc:
            raise TargetError(f"{self.uri}: flushing {path} failed: {_cause(exc)}") from exc

    def delete(self, task_dir: str, name: str) -> None:
        path = self._path(task_dir, name)
        sftp = self.sftp
        try:
            sftp.remove(path)
        except FileNotFoundError:
            pass  # deleted already: idempotent
        except Exception as exc:
            raise TargetError(f"{self.uri}: deleting {path} failed: {_cause(exc)}") from exc

    def remove_partials(self, task_dir: str, name: str | None = None) -> list[str]:
        """Remove this target's partial uploads (all, or those of one final name)."""
        prefix = temp_name(name, "") if name is not None else None
        removed = []
        for entry in self._listing(task_dir):
            if is_temp_name(entry) and (prefix is None or entry.startswith(prefix)):
                self.delete(task_dir, entry)
                removed.append(entry)
        return removed


def _await_writes(handle) -> None:
    """Wait for the server's answer to every pipelined write of ``handle``; a failed one raises.

    paramiko checks a pipelined file's write answers only now and then while writing, and at close
    it reads the last ones without looking at them: a write the server refused there would leave a
    hole of zeros the size check cannot see.  Its queue of unanswered writes (``_reqs``) is read here.
    """
    pending = getattr(handle, "_reqs", None)
    while pending:
        handle.sftp._read_response(pending.popleft())  # raises IOError for a refused write


def _active(sftp) -> bool:
    transport = sftp.get_channel().get_transport()
    return transport is not None and transport.is_active()


def _cause(exc: BaseException) -> str:
    """An exception as a message's cause: its text, or its type when it has none (EOFError)."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else f"{type(exc).__name__} (the connection was closed)"

