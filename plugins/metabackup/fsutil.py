"""Owner-only, crash-safe local file writes: temp name, fsync, rename, fsync the directory."""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import IO, BinaryIO

from metabackup.naming import is_temp_name, temp_name

DIR_MODE = 0o700
FILE_MODE = 0o600
COPY_CHUNK = 1 << 20


# What a child process may inherit from the worker's environment: an allow-list, so Airflow's
# connection and variable secrets (AIRFLOW_CONN_*, AIRFLOW_VAR_*, ...) never reach a child.
CHILD_ENV_KEYS = ("PATH", "HOME", "LANG", "LANGUAGE", "LC_ALL", "LC_CTYPE", "LC_MESSAGES", "TZ", "TMPDIR",
                  "USER", "LOGNAME", "JAVA_HOME")


def child_env(extra: dict[str, str] | None = None, keep_prefixes: tuple[str, ...] = ()) -> dict[str, str]:
    """The environment for a child process: the allow-listed variables of ours, those starting
    with ``keep_prefixes`` (e.g. ``HADOOP_`` for the Hadoop client), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k in CHILD_ENV_KEYS or (keep_prefixes and k.startswith(keep_prefixes))}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env.update(extra or {})
    return env


def ensure_private_dir(path: str | Path) -> Path:
    """Create ``path`` and every missing parent owner-only (0700) whatever the umask; the last
    component is made 0700 even when it existed."""
    path = Path(path)
    missing = []
    probe = path
    while not probe.exists() and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):
            directory.mkdir(mode=DIR_MODE)
        os.chmod(directory, DIR_MODE)
    os.chmod(path, DIR_MODE)
    return path


def fsync_dir(path: str | Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_writer(final: str | Path) -> Iterator[BinaryIO]:
    """Yield a file to write; on success it appears at ``final`` whole, 0600, or not at all."""
    final = Path(final)
    ensure_private_dir(final.parent)
    tmp = final.parent / temp_name(final.name, secrets.token_hex(4))
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        _discard(tmp)
        raise
    _publish(tmp, final)


def _discard(tmp: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)


def _publish(tmp: Path, final: Path) -> None:
    """Rename the finished temp file over ``final`` and fsync the directory; on failure, remove it."""
    try:
        os.replace(tmp, final)
        fsync_dir(final.parent)
    except BaseException:
        _discard(tmp)
        raise


def link_atomically(source: str | Path, final: str | Path) -> bool:
    """Make ``final`` a hard link to ``source`` (an owner-only regular file of ours), atomically: a link
    under a hidden temp name, renamed over ``final``, then the directory fsync'd.  False, with nothing
    left behind, when it cannot be linked (another file system, or one without hard links, or
    ``source`` is not 0600 and ours): the caller copies instead."""
    source, final = Path(source), Path(final)
    st = os.lstat(source)
    if not stat.S_ISREG(st.st_mode) or stat.S_IMODE(st.st_mode) != FILE_MODE or st.st_uid != os.geteuid():
        return False
    ensure_private_dir(final.parent)
    tmp = final.parent / temp_name(final.name, secrets.token_hex(4))
    try:
        os.link(source, tmp)
    except OSError as exc:
        if exc.errno in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EACCES):
            return False
        raise
    _publish(tmp, final)
    return True


def write_private(final: str | Path, data: bytes | str) -> None:
    """Write a whole small file owner-only (0600) and atomically, whatever the umask."""
    with atomic_writer(final) as handle:
        handle.write(data.encode() if isinstance(data, str) else data)


@contextlib.contextmanager
def private_open(path: str | Path, mode: str = "wb") -> Iterator[IO]:
    """Open ``path`` for writing (``"wb"``, or ``"w"``: UTF-8 text with ``\\n`` line ends), truncated,
    owner-only (0600) whatever the umask: the mode is set again when the file already existed (a
    retry may find it made by someone else).  Not atomic: for scratch and work files; a file that
    must appear whole or not at all is written with :func:`atomic_writer`."""
    if mode not in ("wb", "w"):
        raise ValueError(f"private_open writes only, as 'wb' or 'w', not {mode!r}")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
    except BaseException:
        os.close(fd)
        raise
    text = {} if mode == "wb" else {"encoding": "utf-8", "newline": "\n"}
    with open(fd, mode, **text) as handle:
        yield handle


def remove_partials(directory: str | Path, final_name: str | None = None) -> list[str]:
    """Delete temp files left by killed writers (all, or those of one final name)."""
    removed = []
    directory = Path(directory)
    if not directory.is_dir():
        return removed
    for entry in directory.iterdir():
        if is_temp_name(entry.name) and (final_name is None or entry.name.startswith(f".{final_name}")):
            entry.unlink(missing_ok=True)
            removed.append(entry.name)
    return removed


def copy_stream(src: BinaryIO, dst: BinaryIO, on_chunk=None) -> int:
    total = 0
    while block := src.read(COPY_CHUNK):
        dst.write(block)
        total += len(block)
        if on_chunk:
            on_chunk(block)
    return total


def remove_tree(path: str | Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def chown_tree(path: str | Path, user: str) -> None:
    """Give ``path`` and everything below it (links themselves, not their targets) to ``user`` and
    its group; does nothing unless run as root."""
    if os.geteuid() != 0:
        return
    for root, dirs, files in os.walk(path):
        for name in [*dirs, *files]:
            shutil.chown(os.path.join(root, name), user, user)
    shutil.chown(path, user, user)
