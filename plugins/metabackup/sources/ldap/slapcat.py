"""``method: slapcat``: a full read from the database files of a slapd on the worker's own host.

``slapcat`` reads a back-mdb database consistently while slapd runs (an MDB read transaction),
at the speed of the disk: no protocol, no Python in the data path.  Other backends are refused
(back-bdb/hdb, for one, may read a torn state under a running server).  The command is an
argument list with only the allow-listed environment (:func:`metabackup.fsutil.child_env`),
never a shell; its LDIF goes straight to the work directory's 0600 file.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from ldap.filter import escape_filter_chars

from metabackup.fsutil import child_env, private_open
from metabackup.sources.ldap.client import LdapSourceError
from metabackup.sources.ldap.records import is_under, normalize_dn


def slapcat_call(slapd_conf: str | None, config_dir: str | None, base: str, suffix: str | None = None
                 ) -> tuple[list[str], dict[str, str]]:
    """argv and environment of the ``slapcat`` that writes the subtree ``base`` (of the database
    whose suffix is ``suffix``, default ``base`` itself) as LDIF to stdout.  A base below its
    database's suffix is selected by a filter (Debian's slapcat 2.5 crashes on ``-s``)."""
    where = ["-f", slapd_conf] if slapd_conf else ["-F", config_dir]
    argv = ["slapcat", *where, "-b", suffix or base]
    if suffix is not None and normalize_dn(suffix) != normalize_dn(base):
        argv += ["-a", f"(entryDN:dnSubtreeMatch:={escape_filter_chars(base)})"]
    return argv, child_env()


def databases(slapd_conf: str | None, config_dir: str | None) -> list[tuple[str, str]]:
    """``(backend type, suffix)`` of each database a slapd configuration declares."""
    found = []
    if slapd_conf:
        current = None
        with open(slapd_conf, encoding="utf-8") as handle:
            for line in handle:
                words = line.strip().split(None, 1)
                if len(words) == 2 and words[0].lower() == "database":
                    current = words[1].strip().lower()
                elif len(words) == 2 and words[0].lower() == "suffix" and current:
                    found.append((current, words[1].strip().strip('"')))
        return found
    for path in sorted((Path(config_dir) / "cn=config").glob("olcDatabase=*.ldif")):
        text = path.read_text(encoding="utf-8", errors="replace")
        kind = re.search(r"^olcDatabase:\s*(?:\{-?\d+\})?(\S+)", text, re.M | re.I)
        for suffix in re.findall(r"^olcSuffix:\s*(.+)$", text, re.M | re.I):
            found.append(((kind.group(1) if kind else "?").lower(), suffix.strip()))
    return found


def check_mdb(slapd_conf: str | None, config_dir: str | None, base: str) -> str:
    """The suffix of the back-mdb database that serves ``base``; refuse a base no such database serves."""
    where = slapd_conf or config_dir
    try:
        declared = databases(slapd_conf, config_dir)
    except OSError as exc:
        raise LdapSourceError(f"method slapcat: cannot read the slapd configuration {where}: {exc.strerror}") from None
    served = [(kind, suffix) for kind, suffix in declared if is_under(normalize_dn(base), [normalize_dn(suffix)])]
    if not served:
        raise LdapSourceError(f"method slapcat: no database of {where} serves {base} (suffixes: "
                              f"{', '.join(s for _, s in declared) or 'none'})")
    kind, suffix = max(served, key=lambda d: len(d[1]))
    if kind != "mdb":
        raise LdapSourceError(f"method slapcat: {base} is served by a {kind} database ({suffix}) in {where}; slapcat is "
                              "safe on a running server only for back-mdb: use method: protocol")
    return suffix


def export(slapd_conf: str | None, config_dir: str | None, base: str, path: Path) -> int:
    """Write the subtree ``base`` as LDIF to ``path`` (0600) with slapcat; return its entry count."""
    suffix = check_mdb(slapd_conf, config_dir, base)
    argv, env = slapcat_call(slapd_conf, config_dir, base, suffix)
    with private_open(path, "wb") as out:
        try:
            result = subprocess.run(argv, stdout=out, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env)
        except OSError as exc:
            raise LdapSourceError(f"method slapcat: cannot run slapcat: {exc.strerror}") from None
    if result.returncode != 0:
        error = result.stderr.decode("utf-8", "replace").strip()[-1500:]
        raise LdapSourceError(f"method slapcat: slapcat of {base} failed (exit {result.returncode}): {error}")
    return count_entries(path)


def count_entries(path: Path) -> int:
    """The records of an LDIF file: its ``dn:`` lines (a folded line starts with a space)."""
    count, tail = 0, b"\n"
    with open(path, "rb") as handle:
        while block := handle.read(1 << 22):
            data = tail + block
            count += data.count(b"\ndn:")
            tail = data[-3:]
    return count
