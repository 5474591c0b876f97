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
from metabackup.sources.ldap.records import DYNAMIC_ATTRS

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
                 ) -> Iterator[list[tuple[str, dict[str, list[bytes]], bytes]]]:
    """The entries under ``base`` (subtree, ``*`` and ``+``), about ``page_size`` at a time, each as
    ``(dn, {attr: [values]} without the attributes a server generates on read, its LDIF record)``:
    the record as ldapsearch wrote it (unfolded, in the server's attribute order) less those
    attributes' lines."""
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
        rest = b""
        while block := proc.stdout.read(1 << 20):
            data = rest + block
            cut = data.rfind(b"\n\n")
            if cut < 0:
                rest = data
                continue
            rest = data[cut + 2:]
            page = _entries(data[:cut + 1])
            if page:
                yield page
        if rest.strip():
            page = _entries(rest.rstrip(b"\n") + b"\n")
            if page:
                yield page
        error = proc.stderr.read().decode("utf-8", "replace").strip()
        code = proc.wait()
        finished = True
        if code == NO_SUCH_OBJECT:
            raise LdapSourceError(f"base DN {base!r} does not exist on the server")
        if code != 0:
            raise LdapSourceError(f"LDAP connection {conn.conn_id!r} ({server_url(conn)}): ldapsearch of {base} failed "
                                  f"(result {code}): {error[-1500:]}")
    finally:
        password_file.unlink(missing_ok=True)
        if not finished:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()


_NAMES: dict[bytes, tuple[str, bool]] = {}  # attribute name -> (as text, generated on read: not kept)


def _entries(text: bytes) -> list[tuple[str, dict[str, list[bytes]], bytes]]:
    """The entry records of a run of whole ldapsearch LDIF records (unfolded)."""
    out = []
    names = _NAMES
    for record in text.split(b"\n\n"):
        record = record.strip(b"\n")
        lines = [line for line in record.split(b"\n") if line and line[:1] != b"#"] if b"\n#" in b"\n" + record \
            else record.split(b"\n")
        if not lines or not lines[0]:
            continue
        head, _, raw = lines[0].partition(b":")
        if head != b"dn":
            raise LdapSourceError(f"ldapsearch wrote a record that does not start with dn: {lines[0][:100]!r}")
        dn = _value(raw, "dn").decode("utf-8")
        kept = [lines[0]]
        entry: dict[str, list[bytes]] = {}
        for line in lines[1:]:
            attr, _, value = line.partition(b":")
            info = names.get(attr)
            if info is None:
                name = attr.decode("ascii")
                info = names[attr] = (name, name.lower() in DYNAMIC_ATTRS)
            if info[1]:
                continue
            kept.append(line)
            first = value[:1]
            if first == b" ":
                value = value[1:]
            elif first:
                value = _value(value, dn)
            values = entry.get(info[0])
            if values is None:
                entry[info[0]] = [value]
            else:
                values.append(value)
        out.append((dn, entry, b"\n".join(kept) + b"\n\n"))
    return out


def _value(raw: bytes, where: str) -> bytes:
    """The value of an LDIF line after its name's colon."""
    if raw[:1] == b":":
        try:
            return b64decode(raw[1:].lstrip(b" "), validate=True)
        except binascii.Error:
            raise LdapSourceError(f"ldapsearch wrote a malformed base64 value for {where}") from None
    if raw[:1] == b" " or not raw:
        return raw[1:]
    raise LdapSourceError(f"ldapsearch wrote a line this reader does not know for {where}: {raw[:100]!r}")
