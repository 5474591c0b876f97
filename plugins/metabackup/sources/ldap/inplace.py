"""In-place restore of the ``ldap`` source (see :mod:`metabackup.inplace` for the orchestration).

The chain's final state is computed offline, as LDIF, one file per base DN: the full's entries,
with each incremental's change records applied in order (as :func:`.restore.apply_change` applies
them over the protocol, idempotently).  Only the entries the changes touch (their DNs, the new
DNs of renames and everything below a renamed entry) are held in memory; the rest streams from
the full's LDIF to the output.  The operational attributes stay as the set holds them (entryUUID,
create/modify timestamps and names, entryCSN, structuralObjectClass).  Each suffix entry gets the
contextCSN its base had when the last set was taken (none if it had none), and an entry an
incremental modified without giving its new entryCSN (a digest incremental) gets the newest of
those CSNs (or, without one, a new CSN from ``slapadd``): so no entry is newer than the restored
contextCSN.

When the chain's sets carry per-entry digest indexes (a full over the protocol and digest
incrementals), the computed state is checked against them, entry by entry, before anything is
stopped: the newest whole index with the later deltas applied must list exactly the computed
entries with the same attribute digests.  A chain with an accesslog incremental (or a full by
slapcat) after its newest whole index has no such record; the report says ``checked_against``.

Each base is then loaded with ``slapadd -q`` (argv, allow-listed environment) into a fresh
database directory under the restore's scratch directory, through a COPY of the server's
configuration in which that database's directory is the fresh one: a ``slapd.conf`` with the
database's ``directory`` line rewritten, or a copy of the ``cn=config`` directory with the
database's ``olcDbDirectory`` changed (and its ``# CRC32`` line dropped, so slapd does not check a
sum that no longer matches).  The result is given to the service's ``owner`` and mapped to the live database directory.

With the option ``restore_config: true`` (it needs ``slapd_config_dir``), the server's cn=config
directory is replaced too: the cn=config the chain's full saved is loaded by ``slapadd -n0`` into a
new configuration directory beside the live one, the databases are loaded through a copy of that
restored configuration, and the configuration directory is swapped (and rolled back) with the
database directories; the started server must then serve every entry of that cn=config as saved
(when the connection can read cn=config).  Without it, the live configuration is kept.

The server's accesslog database (suffix ``accesslog_base``), if it has one, must be named last in
``data_dirs``: it is replaced by an empty directory (slapo-accesslog makes its root entry again),
since the writes it logged are undone by the restore and an accesslog incremental on a set taken
before the restore (the safety backup) would replay them.  The next backup then finds no parent's
watermark in the log and compares digests (or takes a full); the old log is kept beside it.

A base DN restored in place must be the suffix of its database (a database holding more than the
backed-up subtree would lose the rest), and the configuration's directory of that database must
be the ``service.data_dirs`` entry given for the base: both are checked before anything stops.
"""

from __future__ import annotations

import contextlib
import hashlib
import heapq
import io
import logging
import os
import pwd
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import ldap
import ldap.dn
import ldif

from metabackup.archive import open_tar_stream
from metabackup.connections import get_connection
from metabackup.fsutil import child_env, private_open
from metabackup.manifest import Manifest
from metabackup.sources.base import Rebuilt, RestoreError
from metabackup.sources.ldap.client import connect, ldap_message, paged_search, server_url
from metabackup.sources.ldap.records import (
    CHANGES_MEMBER, CONFIG_MEMBER, MEMBER_DIR, VOLATILE_ATTRS, Change, entry_digests, entry_ldif, is_under, iter_entries,
    normalize_dn, read_changes,
)
from metabackup.sources.ldap.restore import SERVER_COMPUTED_ON_ADD, parents_first

log = logging.getLogger(__package__)

SAMPLE = 50  # entries compared attribute by attribute once the service runs the restored data
#: added by slapadd when an entry lacks them: a started server may show them on an entry of the set
SLAPADD_FILLS = {"structuralobjectclass", "entryuuid", "creatorsname", "createtimestamp", "modifiersname",
                 "modifytimestamp"}


# ---------------------------------------------------------------------------------------------
# The server's configuration: its databases, and a copy pointing one database elsewhere
# ---------------------------------------------------------------------------------------------
def _conf_lines(slapd_conf: str) -> list[str]:
    """slapd.conf's logical lines (a line starting with white space continues the previous one)."""
    with open(slapd_conf, encoding="utf-8") as handle:
        raw = handle.read().splitlines()
    lines: list[str] = []
    for line in raw:
        if line[:1] in (" ", "\t") and lines and line.strip() and not lines[-1].lstrip().startswith("#"):
            lines[-1] += " " + line.strip()
        else:
            lines.append(line)
    return lines


def _unquote(value: str) -> str:
    value = value.strip()
    return value[1:-1] if len(value) >= 2 and value[0] == value[-1] == '"' else value


def conf_databases(slapd_conf: str) -> list[dict[str, Any]]:
    """Each ``database`` section of a slapd.conf: its type, suffixes, directory and line range."""
    lines = _conf_lines(slapd_conf)
    found: list[dict[str, Any]] = []
    for number, line in enumerate(lines):
        words = line.strip().split(None, 1)
        if not words or words[0].startswith("#"):
            continue
        key = words[0].lower()
        if key == "database":
            found.append({"type": words[1].strip().lower() if len(words) > 1 else "", "suffixes": [],
                          "directory": None, "directory_line": None})
        elif found and key == "suffix" and len(words) == 2:
            found[-1]["suffixes"].append(_unquote(words[1]))
        elif found and key == "directory" and len(words) == 2:
            found[-1]["directory"], found[-1]["directory_line"] = _unquote(words[1]), number
    return found


def _ldif_value(text: str, attr: str) -> list[str]:
    """The values of ``attr`` in a cn=config LDIF file's text (folded lines joined; base64 decoded)."""
    import base64

    unfolded = re.sub(r"\r?\n ", "", text)
    out = []
    for match in re.finditer(rf"^{attr}(::?)\s*(.*)$", unfolded, re.M | re.I):
        value = match.group(2).strip()
        out.append(base64.b64decode(value).decode("utf-8") if match.group(1) == "::" else value)
    return out


def dir_databases(config_dir: str) -> list[dict[str, Any]]:
    """Each database of a cn=config directory: its type, suffixes, directory and LDIF file."""
    found = []
    for path in sorted((Path(config_dir) / "cn=config").glob("olcDatabase=*.ldif")):
        text = path.read_text(encoding="utf-8")
        kind = re.sub(r"^\{-?\d+\}", "", (_ldif_value(text, "olcDatabase") or ["?"])[0]).lower()
        directory = _ldif_value(text, "olcDbDirectory")
        found.append({"type": kind, "suffixes": _ldif_value(text, "olcSuffix"),
                      "directory": directory[0] if directory else None, "file": path})
    return found


def databases(options: Any) -> list[dict[str, Any]]:
    where = options.slapd_conf or options.slapd_config_dir
    try:
        return conf_databases(options.slapd_conf) if options.slapd_conf else dir_databases(options.slapd_config_dir)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise RestoreError(f"in-place restore: cannot read the slapd configuration {where}: {exc}") from None


def database_of(options: Any, base: str, dbs: list[dict[str, Any]]) -> dict[str, Any]:
    """The database whose suffix is exactly ``base`` (refused: none, or one above it)."""
    where = options.slapd_conf or options.slapd_config_dir
    nbase = normalize_dn(base)
    for db in dbs:
        if any(normalize_dn(s) == nbase for s in db["suffixes"]):
            if db["directory"] is None:
                raise RestoreError(f"in-place restore: the database of {base} in {where} names no directory")
            return db
    above = [s for db in dbs for s in db["suffixes"] if is_under(nbase, [normalize_dn(s)])]
    if above:
        raise RestoreError(f"in-place restore: {base} is below the suffix {above[0]} of its database in {where}; "
                           "replacing that database would lose the entries outside the backed-up base DN. Back up "
                           f"the database's suffix ({above[0]}) to restore it in place")
    raise RestoreError(f"in-place restore: no database of {where} has the suffix {base} (suffixes: "
                       f"{', '.join(s for db in dbs for s in db['suffixes']) or 'none'})")


def config_copy(slapd_conf: str | None, config_dir: str | Path | None, db: dict[str, Any], new_directory: Path,
                into: Path) -> list[str]:
    """A copy of a slapd configuration (``slapd_conf`` or ``config_dir``) under ``into`` in which
    ``db`` keeps its data in ``new_directory``; the ``-f``/``-F`` arguments of the tools that use it."""
    if slapd_conf:
        lines = _conf_lines(slapd_conf)
        lines[db["directory_line"]] = f'directory "{new_directory}"'
        conf = into / "slapd.conf"
        with private_open(conf, "w") as out:
            out.write("\n".join(lines) + "\n")
        return ["-f", str(conf)]
    copy = into / "slapd.d"
    shutil.copytree(config_dir, copy, symlinks=True)
    os.chmod(copy, 0o700)
    target = copy / db["file"].relative_to(config_dir)
    text = target.read_text(encoding="utf-8")
    unfolded = re.sub(r"\r?\n ", "", text)
    lines = [line for line in unfolded.splitlines() if not line.startswith("# CRC32 ")]
    lines = [f"olcDbDirectory: {new_directory}" if re.match(r"olcDbDirectory::?", line, re.I) else line
             for line in lines]
    with private_open(target, "w") as out:
        out.write("\n".join(lines) + "\n")
    return ["-F", str(copy)]


# ---------------------------------------------------------------------------------------------
# The chain's final state, offline
# ---------------------------------------------------------------------------------------------
def _key(entry: dict[str, list[bytes]], attr: str) -> str | None:
    lower = attr.lower()
    return next((a for a in entry if a.lower() == lower), None)


def _modify(entry: dict[str, list[bytes]], change: Change, stamp: bytes | None) -> None:
    for op, attr, values in change.modlist:
        if attr.lower() in SERVER_COMPUTED_ON_ADD - {"entrycsn"}:
            continue
        key = _key(entry, attr)
        if op == ldap.MOD_ADD:
            if key is None:
                entry[attr] = list(values or [])
            else:
                entry[key] += [v for v in values or [] if v not in entry[key]]
        elif op == ldap.MOD_DELETE:
            if key is not None:
                if values:
                    entry[key] = [v for v in entry[key] if v not in values]
                else:
                    entry[key] = []
        elif op == ldap.MOD_REPLACE:
            if key is not None:
                del entry[key]
            if values:
                entry[attr] = list(values)
        elif op == ldap.MOD_INCREMENT:
            if key is None:
                raise RestoreError(f"replaying an increment of {attr} on {change.dn}: the entry has no {attr}")
            step = int(values[0]) if values else 1
            entry[key] = [str(int(v) + step).encode() for v in entry[key]]
        key = _key(entry, attr)
        if key is not None and not entry[key]:
            del entry[key]
    if not any(a.lower() == "entrycsn" for _, a, _ in change.modlist):
        # changed without its CSN (a digest incremental): the newest CSN its base had at the set
        # (no later than the change), or none and slapadd stamps one
        for key in [a for a in entry if a.lower() == "entrycsn"]:
            del entry[key]
        if stamp is not None:
            entry["entryCSN"] = [stamp]


def _rename(state: dict[str, tuple[str, dict[str, list[bytes]]]], change: Change) -> None:
    old = normalize_dn(change.dn)
    if old not in state:
        return  # already renamed (or deleted): as the online replay, nothing to do
    dn, entry = state.pop(old)
    old_parts = ldap.dn.str2dn(dn)
    new_rdn = ldap.dn.str2dn(change.newrdn)[0]
    superior = ldap.dn.str2dn(change.newsuperior) if change.newsuperior else old_parts[1:]
    new_dn = ldap.dn.dn2str([new_rdn, *superior])
    if change.deleteoldrdn:
        for attr, value, _ in old_parts[0]:
            if any(a.lower() == attr.lower() and v == value for a, v, _ in new_rdn):
                continue
            key = _key(entry, attr)
            if key is not None:
                entry[key] = [v for v in entry[key] if v != value.encode("utf-8")]
                if not entry[key]:
                    del entry[key]
    for attr, value, _ in new_rdn:
        key = _key(entry, attr) or attr
        if value.encode("utf-8") not in entry.get(key, []):
            entry.setdefault(key, []).append(value.encode("utf-8"))
    state[normalize_dn(new_dn)] = (new_dn, entry)
    depth = len(old_parts)
    for ndn in [n for n in state if n.endswith("," + old)]:
        child_dn, child = state.pop(ndn)
        parts = ldap.dn.str2dn(child_dn)
        moved = ldap.dn.dn2str(parts[:len(parts) - depth] + ldap.dn.str2dn(new_dn))
        state[normalize_dn(moved)] = (moved, child)


def apply_offline(state: dict[str, tuple[str, dict[str, list[bytes]]]], change: Change, set_name: str,
                  stamp: bytes | None = None) -> None:
    """Apply one change record to ``state`` ({normalized DN: (DN, entry)}) as the online replay
    would; ``stamp`` is the entryCSN of an entry modified without one."""
    ndn = normalize_dn(change.dn)
    if change.type == "add":
        if ndn in state:  # already there (added during the parent's export): make it equal
            entry = state[ndn][1]
            for attr, values in change.entry.items():
                if attr.lower() in VOLATILE_ATTRS | {"objectclass", "structuralobjectclass"}:
                    continue
                key = _key(entry, attr)
                if key is not None:
                    del entry[key]
                entry[attr] = list(values)
        else:
            state[ndn] = (change.dn, {a: list(v) for a, v in change.entry.items() if a.lower() != "contextcsn"})
    elif change.type == "delete":
        state.pop(ndn, None)
    elif change.type == "modrdn":
        _rename(state, change)
    else:
        if ndn not in state:
            raise RestoreError(f"replaying a modify of {change.dn} from {set_name}: no such entry in the chain")
        _modify(state[ndn][1], change, stamp)


def _changes(chain: list[Manifest], open_archive: Callable[[str], BinaryIO]) -> list[tuple[str, Change]]:
    out = []
    for manifest in chain[1:]:
        with open_archive(manifest.set) as stream, open_tar_stream(stream) as tar:
            for member in tar:
                if member.name == CHANGES_MEMBER and member.isfile():
                    data = tar.extractfile(member).read()
                    out += [(manifest.set, change) for change in read_changes(io.BytesIO(data))]
    return out


def chain_index(chain: list[Manifest], open_archive: Callable[[str], BinaryIO]) -> tuple[dict | None, str]:
    """The per-entry digest index of the state at ``chain[-1]`` ({normalized DN: (DN, attributes,
    digests)}): the newest whole index of the chain with the later sets' deltas applied; or None
    and why, when a set after the newest whole index has none (an accesslog incremental, a full by
    slapcat)."""
    from metabackup.sources.ldap.kind import read_set_index

    start = None
    for k in range(len(chain) - 1, -1, -1):
        position = chain[k].position
        if not position.get("index"):
            return None, f"{chain[k].set} has no per-entry index"
        if position.get("index_form", "whole") == "whole":
            start = k
            break
    if start is None:
        return None, "the chain has no whole per-entry index"
    entries: dict = {}
    for manifest in chain[start:]:
        with open_archive(manifest.set) as stream:
            index = read_set_index(stream, manifest.set)
        if index.type == "whole":
            entries = dict(index.entries)
        else:
            for ndn in index.deleted:
                entries.pop(ndn, None)
            entries.update(index.entries)
    return entries, f"the per-entry index of {chain[start].set}" + (
        f" with the deltas up to {chain[-1].set}" if start < len(chain) - 1 else "")


def final_state(chain: list[Manifest], open_archive: Callable[[str], BinaryIO], bases: list[str],
                scratch: Path) -> dict[str, Any]:
    """Write the state at ``chain[-1]`` as LDIF, parents first, to ``scratch/final-<i>.ldif`` (one
    file per base DN); return the entry count per base and a deterministic sample of entries
    (the ``SAMPLE`` whose normalized DN has the smallest SHA-256) as DN, attributes and digests."""
    full = chain[0]
    changes = _changes(chain, open_archive)
    touched: set[str] = set()
    renamed: list[str] = []
    for _, change in changes:
        touched.add(normalize_dn(change.dn))
        if change.type == "modrdn":
            renamed.append(normalize_dn(change.dn))
    nbases = [normalize_dn(b) for b in bases]
    # each base's contextCSN when the last set was taken: its suffix entry gets it back, and an
    # entry an incremental changed without giving its CSN gets the newest of them
    recorded = chain[-1].position.get("context_csn") or {}
    context = {normalize_dn(b): [c.encode() for c in recorded.get(b, []) if isinstance(c, str)] for b in bases}
    merged = [scratch / f"merged-{i}.ldif" for i in range(len(bases))]
    state: dict[str, tuple[str, dict[str, list[bytes]]]] = {}
    counts = [0] * len(bases)
    sample: list[tuple[int, str, str, tuple[str, ...], bytes]] = []  # a max-heap by the negated key
    # what the sets recorded of every entry: the offline replay must arrive at exactly that
    expected, checked_against = chain_index(chain, open_archive)
    differ: list[str] = []

    def keep(i: int, dn: str, entry: dict[str, list[bytes]], out: BinaryIO) -> None:
        ndn = normalize_dn(dn)
        if ndn == nbases[i]:
            for key in [a for a in entry if a.lower() == "contextcsn"]:
                del entry[key]
            if context[ndn]:
                entry["contextCSN"] = context[ndn]
        out.write(entry_ldif(dn, entry))
        counts[i] += 1
        attrs, digests = entry_digests(entry)
        if expected is not None:
            row = expected.pop(ndn, None)
            if row is None or tuple(a.lower() for a in row[1]) != tuple(a.lower() for a in attrs) or row[2] != digests:
                differ.append(dn)
        key = -int.from_bytes(hashlib.sha256(ndn.encode()).digest()[:8], "big")
        if len(sample) < SAMPLE:
            heapq.heappush(sample, (key, ndn, dn, attrs, digests))
        elif key > sample[0][0]:
            heapq.heapreplace(sample, (key, ndn, dn, attrs, digests))

    outs = [private_open(path, "wb") for path in merged]
    with contextlib.ExitStack() as stack:
        handles = [stack.enter_context(o) for o in outs]
        with open_archive(full.set) as stream, open_tar_stream(stream) as tar:
            for member in tar:
                match = re.fullmatch(rf"{MEMBER_DIR}/base-(\d+)\.ldif", member.name)
                if not match or not member.isfile():
                    continue
                i = int(match.group(1))
                if i >= len(bases):
                    raise RestoreError(f"{full.set} holds {member.name} but the set names {len(bases)} base DNs")
                for dn, entry in iter_entries(tar.extractfile(member)):
                    ndn = normalize_dn(dn)
                    if ndn in touched or (renamed and is_under(ndn, renamed)):
                        state[ndn] = (dn, entry)
                    else:
                        keep(i, dn, entry, handles[i])
        for set_name, change in changes:
            owner = max((b for b in nbases if is_under(normalize_dn(change.dn), [b])), key=len, default=None)
            apply_offline(state, change, set_name, max(context[owner]) if owner and context[owner] else None)
        for ndn, (dn, entry) in state.items():
            owners = [i for i, b in enumerate(nbases) if is_under(ndn, [b])]
            if not owners:
                raise RestoreError(f"the chain's changes leave {dn} outside the base DNs {', '.join(bases)}")
            i = max(owners, key=lambda k: len(nbases[k]))
            keep(i, dn, entry, handles[i])
    if expected is not None and (differ or expected):
        missing = [row[0] for row in expected.values()]
        raise RestoreError(
            f"the state computed from the chain up to {chain[-1].set} differs from {checked_against}: "
            f"{len(differ)} entries differ or are extra (e.g. {', '.join(differ[:3]) or '-'}), {len(missing)} are "
            f"missing (e.g. {', '.join(missing[:3]) or '-'}); nothing was stopped. Restore into a new server "
            "instead (a destination connection: the chain is replayed over the protocol)")
    for i, path in enumerate(merged):
        with private_open(scratch / f"final-{i}.ldif", "w") as out:
            parents_first(path, ldif.LDIFWriter(out, cols=76))
        path.unlink()
    picked = sorted(sample, key=lambda row: row[1])
    return {"entries": dict(zip(bases, counts)), "changes_replayed": len(changes),
            "checked_against": checked_against if expected is not None else f"nothing ({checked_against})",
            "sample": [{"dn": dn, "attrs": list(attrs), "digests": digests.hex()} for _, _, dn, attrs, digests in picked]}


# ---------------------------------------------------------------------------------------------
# Rebuild, validate, identify
# ---------------------------------------------------------------------------------------------
def _chown_tree(path: Path, owner: str | None) -> None:
    if owner is None:
        return
    user = pwd.getpwnam(owner)
    for root, dirs, files in os.walk(path):
        for name in [root, *(os.path.join(root, n) for n in dirs + files)]:
            os.lchown(name, user.pw_uid, user.pw_gid)


def _slapadd(argv: list[str], what: str, cwd: str | None = None) -> float:
    """Run one slapadd (argv, allow-listed environment); its seconds, or a RestoreError with its output."""
    began = time.monotonic()
    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, errors="replace",
                              env=child_env(), cwd=cwd)
    except OSError as exc:
        raise RestoreError(f"in-place restore: cannot run slapadd: {exc.strerror}") from None
    if done.returncode != 0:
        raise RestoreError(f"slapadd of {what} failed (exit {done.returncode}): "
                           f"{(done.stderr or done.stdout).strip()[-1500:] or 'no output'}")
    return round(time.monotonic() - began, 3)


def _fresh_dir(path: Path, like: str) -> Path:
    path.mkdir(mode=0o700)
    with contextlib.suppress(OSError):
        os.chmod(path, os.stat(like).st_mode & 0o7777)
    return path


def rebuild_config(full: Manifest, open_archive: Callable[[str], BinaryIO], live: str, scratch: Path) -> tuple[Path, dict]:
    """The cn=config ``full`` saved, loaded by ``slapadd -n0`` into a new configuration directory
    ``scratch/slapd.d``; with the DN, attributes and digests of each of its entries."""
    if not full.position.get("config_saved"):
        raise RestoreError(f"{full.set} holds no cn=config (include_config was false, or the connection could not "
                           "read cn=config when it was taken); restore_config needs a full that saved it")
    path = scratch / "config.ldif"
    with open_archive(full.set) as stream, open_tar_stream(stream) as tar:
        for member in tar:
            if member.name == CONFIG_MEMBER and member.isfile():
                with private_open(path, "wb") as out:
                    shutil.copyfileobj(tar.extractfile(member), out, 1 << 20)
                break
    if not path.exists():
        raise RestoreError(f"{full.set} says it saved cn=config but its archive has no {CONFIG_MEMBER}")
    rows = []
    with open(path, "rb") as stream:
        for dn, entry in iter_entries(stream):
            attrs, digests = entry_digests(entry)
            rows.append({"dn": dn, "attrs": list(attrs), "digests": digests.hex()})
    built = _fresh_dir(scratch / "slapd.d", live)
    seconds = _slapadd(["slapadd", "-n0", "-F", str(built), "-l", str(path)], f"the cn=config of {full.set}")
    return built, {"entries": len(rows), "from": full.set, "slapadd_s": seconds, "sample": rows}


def rebuild(chain: list[Manifest], open_archive: Callable[[str], BinaryIO], source: Any, scratch: Path) -> Rebuilt:
    """The state at ``chain[-1]`` loaded by slapadd into a fresh database directory per base DN
    under ``scratch``, owned by the service's owner; mapped to the live database directories.
    With ``restore_config``, the full's cn=config first, in a new configuration directory, and the
    databases are loaded through (a copy of) it."""
    options, service = source.options, source.service
    bases = list(options.base_dns)
    set_bases = [normalize_dn(b) for b in chain[0].position.get("base_dns", [])]
    if set_bases != [normalize_dn(b) for b in bases]:
        raise RestoreError(f"{chain[-1].set} holds the base DNs {chain[0].position.get('base_dns')}; the spec's "
                           f"sources.{source.name}.base_dns are {bases}: an in-place restore replaces exactly the "
                           "databases the set holds")
    dirs: dict[str, Path] = {}
    config_facts = None
    slapd_conf, config_dir = options.slapd_conf, options.slapd_config_dir
    where = slapd_conf or config_dir
    if options.restore_config:
        config_dir, config_facts = rebuild_config(chain[0], open_archive, options.slapd_config_dir, scratch)
        where = f"the cn=config of {chain[0].set}"
        dbs = dir_databases(str(config_dir))
        dirs[options.slapd_config_dir] = config_dir
    else:
        dbs = databases(options)
    chosen = []
    for i, base in enumerate(bases):
        db = database_of(options, base, dbs)
        live = service.data_dirs[i]
        if os.path.realpath(db["directory"]) != os.path.realpath(live):
            raise RestoreError(f"sources.{source.name}.service.data_dirs[{i}] is {live}, but {where} keeps the "
                               f"database of {base} in {db['directory']}; name that directory")
        if db["type"] != "mdb":
            log.warning("%s: the database of %s is %s, not mdb; slapadd loads it all the same", source.name, base,
                        db["type"])
        chosen.append(db)
    log_db = next((db for db in dbs if any(normalize_dn(x) == normalize_dn(options.accesslog_base)
                                           for x in db["suffixes"])), None)
    if log_db is not None and len(service.data_dirs) == len(bases):
        raise RestoreError(f"{where} has an accesslog database ({options.accesslog_base}, in {log_db['directory']}); "
                           f"add that directory to sources.{source.name}.service.data_dirs after the base DNs' "
                           "directories: the restore replaces it with an empty log, as the writes it logged are undone "
                           "(the next backup then compares digests or is a full, instead of replaying them)")
    if len(service.data_dirs) > len(bases):
        live_log = service.data_dirs[len(bases)]
        if log_db is None or os.path.realpath(log_db["directory"] or "") != os.path.realpath(live_log):
            raise RestoreError(f"sources.{source.name}.service.data_dirs[{len(bases)}] is {live_log}, but " + (
                f"{where} keeps the accesslog database ({options.accesslog_base}) in {log_db['directory']}"
                if log_db is not None else f"{where} has no accesslog database ({options.accesslog_base})") +
                "; after the base DNs' directories, data_dirs names only the accesslog database's directory")
        dirs[live_log] = _fresh_dir(scratch / "accesslog", live_log)
    began = time.monotonic()
    facts = final_state(chain, open_archive, bases, scratch)
    recorded = chain[-1].position.get("entries")
    total = sum(facts["entries"].values())
    if recorded is not None and total != recorded:
        raise RestoreError(f"the chain up to {chain[-1].set} yields {total} entries under {bases}, but the set "
                           f"recorded {recorded}; nothing was stopped")
    facts["compute_s"] = round(time.monotonic() - began, 3)
    for i, (base, db) in enumerate(zip(bases, chosen)):
        live = service.data_dirs[i]
        built = _fresh_dir(scratch / f"db-{i}", live)
        config = scratch / f"config-{i}"
        config.mkdir(mode=0o700)
        where_args = config_copy(slapd_conf, config_dir, db, built, config)
        argv = ["slapadd", "-q", *where_args, "-b", base, "-l", str(scratch / f"final-{i}.ldif")]
        facts.setdefault("slapadd_s", {})[base] = _slapadd(argv, f"{base} into a fresh database directory",
                                                          str(Path(slapd_conf).parent) if slapd_conf else None)
        dirs[live] = built
        log.info("%s: slapadd loaded %d entries of %s into %s", source.name, facts["entries"][base], base, built)
    for built in dirs.values():
        _chown_tree(built, service.owner)
    if config_facts is not None:
        facts["config"] = config_facts
    if len(service.data_dirs) > len(bases):
        facts["accesslog"] = f"{service.data_dirs[len(bases)]} replaced by an empty log"
    return Rebuilt(dirs, facts)


def _client(source: Any, wait: float = 15.0):
    conn = get_connection(source.options.conn_id)
    deadline = time.monotonic() + wait
    while True:
        try:
            return connect(conn)
        except Exception as exc:  # the service may still be opening its listener
            if time.monotonic() >= deadline:
                raise RestoreError(f"LDAP connection {conn.conn_id!r} ({server_url(conn)}): the started service does "
                                   f"not answer: {exc}") from None
            time.sleep(0.2)


def _count(client, base: str) -> int:
    try:
        return sum(1 for _ in paged_search(client, base, ldap.SCOPE_SUBTREE, "(objectClass=*)", ["1.1"]))
    except ldap.NO_SUCH_OBJECT:
        return 0


def _compare(client, rows: list[dict[str, Any]], what: str) -> None:
    """Each of ``rows`` (DN, attributes, digests of an entry of the set) is served with the same
    attributes and values (slapadd's additions to an entry that lacked them aside)."""
    for row in rows:
        try:
            [(_, entry)] = client.search_s(row["dn"], ldap.SCOPE_BASE, "(objectClass=*)", ["*", "+"])
        except ldap.NO_SUCH_OBJECT:
            raise RestoreError(f"the service has no entry {row['dn']}, which {what} holds") from None
        attrs, digests = entry_digests(entry)
        served = {a.lower(): digests[k * 6:(k + 1) * 6].hex() for k, a in enumerate(attrs)}
        wanted = {a.lower(): row["digests"][k * 12:(k + 1) * 12] for k, a in enumerate(row["attrs"])}
        differ = sorted(a for a in wanted if served.get(a) != wanted[a])
        extra = sorted(set(served) - set(wanted) - SLAPADD_FILLS)
        if differ or extra:
            raise RestoreError(f"the service's entry {row['dn']} differs from {what}'s: {', '.join(differ + extra)}")


def validate(source: Any, facts: dict[str, Any]) -> dict[str, Any]:
    """The started service answers, holds as many entries under each base DN as the set, and the
    sampled entries with the same attributes and values (slapadd's additions to an entry that
    lacked them aside; entryCSN, contextCSN and attributes the server computes are not compared).
    With a restored cn=config: every entry of it, as the connection reads cn=config."""
    client = _client(source)
    try:
        counts = {}
        for base in source.options.base_dns:  # the spec's bases, never a manifest's
            counts[base] = _count(client, base)
            if counts[base] != facts["entries"].get(base):
                raise RestoreError(f"the service holds {counts[base]} entries under {base}; the restored set has "
                                   f"{facts['entries'].get(base)}: it does not serve the restored data")
        _compare(client, facts["sample"], "the restored set")
        out: dict[str, Any] = {"entries": counts, "sampled": len(facts["sample"]), "answers": True}
        if "config" in facts:
            try:
                served = client.search_s("cn=config", ldap.SCOPE_SUBTREE, "(objectClass=*)", ["1.1"])
            except (ldap.NO_SUCH_OBJECT, ldap.INSUFFICIENT_ACCESS, ldap.UNWILLING_TO_PERFORM):
                served = []
            if not served:
                out["config_checked"] = "no: the connection cannot read cn=config"
            else:
                if len(served) != facts["config"]["entries"]:
                    raise RestoreError(f"the service's cn=config has {len(served)} entries; the restored one has "
                                       f"{facts['config']['entries']}: it does not run the restored configuration")
                _compare(client, facts["config"]["sample"], f"the cn=config of {facts['config']['from']}")
                out["config_checked"] = f"{len(served)} entries equal"
        return out
    except ldap.LDAPError as exc:
        raise RestoreError(f"checking the started service: {ldap_message(exc)}") from None
    finally:
        client.unbind_s()


def identity(source: Any) -> dict[str, Any]:
    """Each base DN's contextCSN and entry count on the running server."""
    client = _client(source, wait=5.0)
    try:
        out = {}
        for base in source.options.base_dns:
            csn: list[str] = []
            with contextlib.suppress(ldap.NO_SUCH_OBJECT):
                [(_, entry)] = client.search_s(base, ldap.SCOPE_BASE, "(objectClass=*)", ["contextCSN"])
                csn = sorted(v.decode() for v in entry.get("contextCSN", []))
            out[base] = {"context_csn": csn, "entries": _count(client, base)}
        return out
    finally:
        client.unbind_s()
