"""The export's reader: OpenLDAP's ``ldapsearch`` in a child process, its LDIF parsed back into
entries a page at a time.

python-ldap turns each search result entry into Python objects at about 50 µs of CPU an entry
(it looks every attribute up again from the start of the entry): more than ``ldapsearch`` needs
for the whole search.  ``ldapsearch`` reads the same paged search with the same libldap and
writes unfolded LDIF (``-o ldif-wrap=no``) to a pipe; this module reads that pipe and yields the
entries, values exact (base64 values decoded), while the child keeps reading from the server.

The child is an argument list with only the allow-listed environment
(:func:`metabackup.fsutil.child_env`) plus the connection's TLS settings; the bind password goes
through a 0600 file (``-y``), never argv.  Without an ``ldapsearch`` on the PATH the export uses
python-ldap (:func:`metabackup.sources.ldap.client.search_pages`).
"""

from __future__ import annotations

import binascii
import shutil
import subprocess
from base64 import b64decode
from collections.abc import Iterator
from pathlib import Path

from metabackup.connections import ConnectionInfo
from metabackup.fsutil import child_env, write_private
from metabackup.sources.ldap.client import LdapSourceError, server_url

# ldapsearch's exit status is the LDAP result code
NO_SUCH_OBJECT = 32


def available() -> bool:
    return shutil.which("ldapsearch", path=child_env()["PATH"]) is not None


def ldapsearch_call(conn: ConnectionInfo, base: str, page_size: int, password_file: Path
                    ) -> tuple[list[str], dict[str, str]]:
    """argv and environment of the paged subtree search of ``base`` (every user and operational
    attribute) as unfolded LDIF on stdout."""
    timeout = int(float(conn.extra.get("timeout", 30)))
    argv = ["ldapsearch", "-x", "-H", server_url(conn), "-D", conn.login or "", "-y", str(password_file), "-LLL",
            "-o", "ldif-wrap=no", "-o", f"nettimeout={timeout}", "-E", f"pr={page_size}/noprompt", "-b", base,
            "-s", "sub", "(objectClass=*)", "*", "+"]
    if conn.extra.get("starttls"):
        argv.insert(1, "-ZZ")
    extra = {}
    if conn.extra.get("ca_file"):
        extra["LDAPTLS_CACERT"] = str(conn.extra["ca_file"])
    if conn.extra.get("tls_require_cert") == "never":
        extra["LDAPTLS_REQCERT"] = "never"
    return argv, child_env(extra)


def search_pages(conn: ConnectionInfo, base: str, page_size: int, scratch: Path
                 ) -> Iterator[list[tuple[str, dict[str, list[bytes]]]]]:
    """The entries under ``base`` (subtree, ``*`` and ``+``), ``page_size`` at a time."""
    password_file = scratch / ".ldapsearch-bind"
    write_private(password_file, conn.password or "")
    argv, env = ldapsearch_call(conn, base, page_size, password_file)
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env=env, bufsize=0)
    except OSError as exc:
        password_file.unlink(missing_ok=True)
        raise LdapSourceError(f"cannot run ldapsearch: {exc.strerror}") from None
    finished = False
    try:
        page: list[tuple[str, dict[str, list[bytes]]]] = []
        rest = b""
        names: dict[bytes, str] = {}
        while block := proc.stdout.read(1 << 20):
            records = (rest + block).split(b"\n\n")
            rest = records.pop()
            for record in records:
                if record:
                    parsed = _entry(record, names)
                    if parsed is not None:
                        page.append(parsed)
            if len(page) >= page_size:
                yield page
                page = []
        if rest.strip():
            parsed = _entry(rest.rstrip(b"\n"), names)
            if parsed is not None:
                page.append(parsed)
        error = proc.stderr.read().decode("utf-8", "replace").strip()
        code = proc.wait()
        finished = True
        if code == NO_SUCH_OBJECT:
            raise LdapSourceError(f"base DN {base!r} does not exist on the server")
        if code != 0:
            raise LdapSourceError(f"LDAP connection {conn.conn_id!r} ({server_url(conn)}): ldapsearch of {base} failed "
                                  f"(result {code}): {error[-1500:]}")
        if page:
            yield page
    finally:
        password_file.unlink(missing_ok=True)
        if not finished:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def _entry(record: bytes, names: dict[bytes, str]) -> tuple[str, dict[str, list[bytes]]] | None:
    """One LDIF record of ldapsearch (unfolded) as ``(dn, {attr: [values]})``; None for a comment
    (a search reference)."""
    lines = record.split(b"\n")
    if lines[0].startswith(b"#"):
        lines = [line for line in lines if not line.startswith(b"#")]
        if not lines:
            return None
    head, _, value = lines[0].partition(b":")
    if head != b"dn":
        raise LdapSourceError(f"ldapsearch wrote a record that does not start with dn: {lines[0][:100]!r}")
    dn = _value(value).decode("utf-8")
    entry: dict[str, list[bytes]] = {}
    for line in lines[1:]:
        attr, _, value = line.partition(b":")
        if value[:1] == b":":
            try:
                value = b64decode(value[1:])
            except binascii.Error:
                raise LdapSourceError(f"ldapsearch wrote a malformed base64 value for {dn}") from None
        elif value[:1] == b" ":
            value = value[1:]
        elif value:
            raise LdapSourceError(f"ldapsearch wrote a line this reader does not know for {dn}: {line[:100]!r}")
        name = names.get(attr)
        if name is None:
            name = names[attr] = attr.decode("ascii")
        values = entry.get(name)
        if values is None:
            entry[name] = [value]
        else:
            values.append(value)
    return dn, entry


def _value(raw: bytes) -> bytes:
    if raw[:1] == b":":
        return b64decode(raw[1:])
    return raw[1:] if raw[:1] == b" " else raw

