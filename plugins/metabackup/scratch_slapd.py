"""A scratch OpenLDAP server (Debian's slapd) for the verification DAG's LDAP test restore.

Test-restoring an LDAP chain needs an empty directory server whose suffix is the backed-up base
DN.  :func:`scratch_slapd` starts one as the worker's user and throws it away afterwards::

    with scratch_slapd(directory, suffix) as server:     # ldap://127.0.0.1:<server.port>
        ...  # bind as server.admin_dn with server.password (the suffix's rootdn)
    # slapd stopped, ``directory`` removed

``directory`` (made 0700) holds a generated ``slapd.conf`` (0600): the core, cosine, nis and
inetorgperson schemas, the ppolicy module (whose schema backed-up entries may use) and one mdb
database for the suffix with a random root password.  slapd runs as an argv with the allow-listed
environment (:func:`metabackup.fsutil.child_env`), listens on a free port on 127.0.0.1 only, and
counts as up when that port accepts a connection.

The pieces are public because the test harness (``harness/slapd.py``, not shipped) builds its
throwaway servers on them.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from metabackup.errors import MetabackupError
from metabackup.fsutil import FILE_MODE, child_env, ensure_private_dir, write_private


class ScratchServerError(MetabackupError):
    """The scratch slapd did not start (the message holds its log's tail)."""

SCHEMAS = ("core", "cosine", "nis", "inetorgperson")
MODULES = ("back_mdb", "ppolicy")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """``count`` different TCP ports free on 127.0.0.1 right now (each socket is held until all
    are picked: the kernel may hand a port just released out again)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            sockets.append(s)
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def ssha(password: str) -> str:
    """``password`` as a salted SHA-1 ``rootpw`` / ``userPassword`` value."""
    salt = os.urandom(8)
    digest = hashlib.sha1(password.encode() + salt).digest()
    return "{SSHA}" + base64.b64encode(digest + salt).decode()


def check_suffix(suffix: str) -> str:
    """``suffix`` if it is a DN slapd can serve as a database suffix (and that cannot add lines
    to a slapd.conf), else ValueError."""
    import ldap.dn

    try:
        parts = ldap.dn.str2dn(suffix)
    except Exception:  # python-ldap raises DECODING_ERROR for malformed DNs
        parts = None
    if not parts or any(c in suffix for c in '"\n\r'):
        raise ValueError(f"suffix {suffix!r} is not a DN such as dc=hadoop,dc=com")
    return suffix


def global_section(directory: Path, modules: tuple[str, ...] = MODULES, extra: str = "") -> str:
    """slapd.conf's global part: schemas, modules, ``extra`` lines, pid/args files in ``directory``."""
    schema = "".join(f"include /etc/ldap/schema/{name}.schema\n" for name in SCHEMAS)
    loads = "".join(f"moduleload {name}\n" for name in modules)
    return (f"{schema}modulepath /usr/lib/ldap\n{loads}{extra}pidfile {directory}/slapd.pid\n"
            f"argsfile {directory}/slapd.args\nsizelimit unlimited\n")


def mdb_database(directory: Path, suffix: str, hashed_password: str) -> str:
    """An mdb database for ``suffix`` in ``directory/data``, rootdn ``cn=admin,<suffix>``."""
    return (f'database mdb\nsuffix "{check_suffix(suffix)}"\nrootdn "cn=admin,{suffix}"\nrootpw {hashed_password}\n'
            f"directory {directory}/data\nmaxsize 1073741824\n")


def launch(conf: Path, port: int, urls: str = "", timeout: float = 20) -> subprocess.Popen:
    """Run ``slapd -f conf`` in the foreground of a new session, logging to ``slapd.log`` beside
    ``conf`` (0600), listening on ``urls`` (default ``ldap://127.0.0.1:<port>/``); return once
    ``port`` accepts a connection.  :class:`ScratchServerError` (with the log's tail) if it exits or
    is not up within ``timeout`` seconds."""
    logfile = conf.parent / "slapd.log"
    fd = os.open(logfile, os.O_WRONLY | os.O_CREAT | os.O_APPEND, FILE_MODE)
    with os.fdopen(fd, "ab") as log:
        proc = subprocess.Popen(["slapd", "-f", str(conf), "-h", urls or f"ldap://127.0.0.1:{port}/", "-d", "0"],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=child_env(),
                                start_new_session=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ScratchServerError(f"slapd exited with {proc.returncode}: {_tail(logfile)}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    raise ScratchServerError(f"slapd did not listen on 127.0.0.1:{port} within {timeout}s: {_tail(logfile)}")


def _tail(logfile: Path, chars: int = 1500) -> str:
    try:
        return logfile.read_text(errors="replace").strip()[-chars:] or "(nothing logged)"
    except OSError:
        return "(no log)"


@dataclass
class ScratchSlapd:
    directory: Path
    port: int
    suffix: str
    admin_dn: str
    password: str

    @property
    def url(self) -> str:
        return f"ldap://127.0.0.1:{self.port}"


@contextlib.contextmanager
def scratch_slapd(directory: str | Path, suffix: str, timeout: float = 20) -> Iterator[ScratchSlapd]:
    """An empty slapd serving ``suffix`` from ``directory`` (which must not hold anything else)
    while the block runs; then it is stopped (SIGTERM, SIGKILL after ``timeout``) and
    ``directory`` removed."""
    check_suffix(suffix)
    directory = Path(directory).resolve()
    if directory.exists() and any(directory.iterdir()):
        raise ValueError(f"{directory} is not empty; a scratch slapd needs a directory of its own")
    try:
        ensure_private_dir(directory)
        ensure_private_dir(directory / "data")
        password = secrets.token_urlsafe(24)
        conf = directory / "slapd.conf"
        write_private(conf, f"# generated by metabackup.scratch_slapd\n{global_section(directory)}\n"
                            f"{mdb_database(directory, suffix, ssha(password))}")
        port = free_port()
        proc = launch(conf, port, timeout=timeout)
        try:
            yield ScratchSlapd(directory, port, suffix, f"cn=admin,{suffix}", password)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    finally:
        shutil.rmtree(directory, ignore_errors=True)
