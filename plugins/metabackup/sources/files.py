"""The ``files`` source kind: configuration directories, backed up file by file.

Full: every file, directory and symlink under the configured paths, with mode, owner, mtime and
link target.  Incremental: the entries added or changed since the parent set (type, size, mode,
owner, mtime or link target differ), plus the list of paths deleted since.

Every archive ends with ``.metabackup-index.json``: the *cumulative* index of the source at that
set — one row per path with its metadata, its SHA-256, and the set whose archive holds its
content.  A restore therefore needs only the newest set's index to know the exact final tree,
and pulls each file's bytes from the one archive named for it.  Archive members are named by
absolute path without the leading slash (``etc/oms/server.xml``).
"""

from __future__ import annotations

import fnmatch
import functools
import grp
import hashlib
import json
import logging
import os
import pwd
import re
import shutil
import stat
import tarfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from pydantic import Field, field_validator

from metabackup.archive import find_member, open_tar_stream
from metabackup.fields import ProblemRow, SpecModel, TextList, absolute_path, inside, short
from metabackup.fsutil import COPY_CHUNK, FILE_MODE, ensure_private_dir, write_private
from metabackup.manifest import FULL, HEX64, Manifest, int_field, need, text_field
from metabackup.sources.base import ArchiveResult, BackupError, Rebuilt, RestoreError, SourceEngine, SourceKind
from metabackup.naming import SetName

if TYPE_CHECKING:  # the run's decision, only in annotations (the plug-in stays light)
    from metabackup.policy import Decision

log = logging.getLogger(__name__)

INDEX_MEMBER = ".metabackup-index.json"
PROGRESS_EVERY_BYTES = 256 << 20

Entry = dict[str, Any]  # {"type": "f"|"d"|"l", "mode", "uid", "gid", "user", "group", "mtime_ns", "size", "sha256", "target", "set"}
_COMPARED = ("type", "mode", "uid", "gid", "size", "mtime_ns", "target", "ctime_ns", "ino")
# ctime and inode cannot be set by users, so a rewrite that keeps size and mtime (cp -p, an
# editor restoring mtime, an atomic replace by rename) is still seen; a restore cannot (and
# need not) reproduce them, so they are left out of comparisons of restored trees.
_SOURCE_ONLY = ("ctime_ns", "ino")


@functools.lru_cache(maxsize=4096)
def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return ""


@functools.lru_cache(maxsize=4096)
def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return ""


def _owner_names(st: os.stat_result) -> tuple[str, str]:
    """Names as well as ids (cached: on a node whose accounts live in LDAP each lookup is a query)."""
    return _user_name(st.st_uid), _group_name(st.st_gid)


def _entry(path: str, st: os.stat_result) -> Entry | None:
    if stat.S_ISREG(st.st_mode):
        kind = "f"
    elif stat.S_ISDIR(st.st_mode):
        kind = "d"
    elif stat.S_ISLNK(st.st_mode):
        kind = "l"
    else:
        return None
    user, group = _owner_names(st)
    entry: Entry = {
        "type": kind, "mode": stat.S_IMODE(st.st_mode), "uid": st.st_uid, "gid": st.st_gid,
        "user": user, "group": group, "mtime_ns": st.st_mtime_ns,
        "size": st.st_size if kind == "f" else 0, "ctime_ns": st.st_ctime_ns, "ino": st.st_ino,
    }
    if kind == "l":
        entry["target"] = os.readlink(path)
    return entry


def scan(paths: list[str], exclude: list[str], never_enter: tuple[str, ...] = ()) -> dict[str, Entry]:
    """Walk the roots (not following symlinks) and return the index keyed by member name.
    Directories in ``never_enter`` (this source's own backup locations) are never entered."""
    index: dict[str, Entry] = {}
    for root in paths:
        if not os.path.isdir(root) or os.path.islink(root):
            raise FileNotFoundError(f"source directory {root!r} does not exist or is not a directory")
        for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
            kept_dirs = []
            for name in sorted(dirnames):
                full = os.path.join(dirpath, name)
                if _excluded(full, root, exclude) or full in never_enter:
                    continue
                if os.path.islink(full):
                    filenames.append(name)  # a symlink to a directory is recorded as a link
                else:
                    kept_dirs.append(name)
            dirnames[:] = kept_dirs
            names = [dirpath] + [os.path.join(dirpath, n) for n in sorted(filenames)]
            for full in names:
                if full != dirpath and _excluded(full, root, exclude):
                    continue
                st = os.lstat(full)
                entry = _entry(full, st)
                if entry is None:
                    log.warning("skipping %s: not a regular file, directory or symlink", full)
                    continue
                index[full.lstrip("/")] = entry
    return index


def _excluded(full: str, root: str, patterns: list[str]) -> bool:
    rel = os.path.relpath(full, root)
    name = os.path.basename(full)
    return any(fnmatch.fnmatch(rel, p) or fnmatch.fnmatch(name, p) for p in patterns)


def _changed(old: Entry | None, new: Entry) -> bool:
    return old is None or any(old.get(k) != new.get(k) for k in _COMPARED)


class FilesOptions(SpecModel):
    """``kind: files``: directories of this machine, with glob patterns to leave out."""

    paths: TextList = Field(description="absolute directories to back up, none inside another")
    exclude: TextList = Field((), description="glob patterns (of a path relative to its directory, or of a name) to leave out")

    @field_validator("paths")
    @classmethod
    def _distinct_absolute(cls, paths: tuple[str, ...]) -> tuple[str, ...]:
        if not paths:
            raise ValueError("must list at least one directory")
        clean: list[str] = []
        first: dict[str, int] = {}
        for i, given in enumerate(paths):
            try:
                path = absolute_path(given)
            except ValueError as exc:
                raise ProblemRow(f"[{i}]", str(exc)) from None
            if path in first:
                j = first[path]
                same = "" if given == paths[j] else f" once normalised to {short(path)}"
                raise ProblemRow(f"[{i}]", f"{short(given)} is the same directory as paths[{j}] {short(paths[j])}"
                                           f"{same}; list each directory once")
            first[path] = i
            clean.append(path)
        for a in clean:
            for b in clean:
                if a != b and inside(b, a):
                    raise ValueError(f"{short(b)} lies inside {short(a)}; list each directory once")
        return tuple(clean)


class FilesKind(SourceKind):
    name = "files"
    Options = FilesOptions
    engine_path = "metabackup.sources.files:FilesSource"
    in_place = True
    needs_service = False  # a service (e.g. the one reading the files) is optional
    live_dirs_hint = "a files source restores its paths"

    def check_position(self, pos: dict, at: str) -> None:
        """A set's position, read back from a target: its index digest, entry count and paths."""
        text_field(pos, f"{at}.file_index_sha256", HEX64, "a SHA-256 in hex")
        int_field(pos, f"{at}.entries")
        need(isinstance(pos.get("paths"), list) and all(isinstance(p, str) and p.startswith("/") for p in pos["paths"]),
             f"{at}.paths", pos.get("paths"), "a list of absolute paths")

    def validate_restored(self, chain: list[Manifest], source: Any, dest: Any, in_place: bool) -> dict[str, Any]:
        return validate_tree(chain[-1].position, source.options.paths, Path("/") if in_place else Path(dest))

    def asset_uris(self, options: FilesOptions) -> list[str]:
        return [f"file://{path}" for path in options.paths]

    def live_dirs(self, options: FilesOptions, service: Any) -> list[tuple[str, str]]:
        return self.backed_up_dirs(options)

    def service_problems(self, options: FilesOptions, service: Any) -> list[tuple[str, str]]:
        if service.data_dirs:
            return [("data_dirs", "a files source restores its paths in place; remove data_dirs")]
        return []

    def rebuild_beside(self, chain: list[Manifest], open_archive: Any, source: Any, scratch: Path,
                       request: Any) -> Rebuilt:
        """Each of the spec's paths (never a manifest's) that the set holds, rebuilt under ``scratch``;
        a path the set does not hold is left alone."""
        tree = scratch / "tree"
        result = self.restore(chain, open_archive, tree)
        dirs = {path: tree / path.lstrip("/") for path in source.options.paths if (tree / path.lstrip("/")).is_dir()}
        return Rebuilt(dirs, {"entries": result.get("entries")})

    def backed_up_dirs(self, options: FilesOptions) -> list[tuple[str, str]]:
        return [(f"paths[{i}]", path) for i, path in enumerate(options.paths)]


KIND = FilesKind()


def validate_tree(position: dict[str, Any], paths: tuple[str, ...], root: Path) -> dict[str, Any]:
    """The spec's ``paths`` restored under ``root`` hold as many entries as the set recorded."""
    count = 0
    for path in paths:
        top = root / path.lstrip("/")
        if not top.exists():
            raise RestoreError(f"{top} was not restored")
        count += 1  # the configured directory itself is an index entry
        for _dirpath, dirnames, filenames in os.walk(top):
            count += len(dirnames) + len(filenames)
    expected = position.get("entries")
    if expected is not None and count != expected:
        raise RestoreError(f"{count} entries restored under {root} for {list(paths)}; the set recorded {expected}")
    return {"entries": count}


class FilesSource(SourceEngine):
    def check(self) -> None:
        for path in self.options.paths:
            if not os.path.isdir(path) or os.path.islink(path):
                raise FileNotFoundError(f"{self.source.name}: source directory {path} does not exist or is not a directory")
            if not os.access(path, os.R_OK | os.X_OK):
                raise PermissionError(f"{self.source.name}: source directory {path} is not readable by this worker")

    def snapshot(self, workdir: Path, decision: Decision, parent: Manifest | None,
                 open_parent: Callable[[], BinaryIO] | None) -> dict[str, Any]:
        opts = self.options
        own = tuple(path for _, path, _ in self.source.target.local_dirs())
        current = scan(opts.paths, opts.exclude, own)
        parent_index: dict[str, Entry] = {}
        if decision.type != FULL:
            try:
                with open_parent() as stream:
                    parent_index = read_index(stream, parent)
            except RestoreError as exc:  # the parent's index is unreadable: this run cannot continue its chain
                raise BackupError(f"{self.source.name}: cannot take an incremental on {parent.set}: {exc}") from None
        include = sorted(p for p, e in current.items() if e["type"] == "f" and _changed(parent_index.get(p), e))
        deleted = sorted(set(parent_index) - set(current))
        for path, entry in current.items():  # carry content pointers and digests of unchanged files
            if entry["type"] == "f" and path not in include:
                entry["sha256"] = parent_index[path]["sha256"]
                entry["set"] = parent_index[path]["set"]
        plan = {"index": current, "include": include, "deleted": deleted}
        write_private(workdir / "files-plan.json", json.dumps(plan))
        changed_meta = sum(1 for p, e in current.items() if e["type"] != "f" and _changed(parent_index.get(p), e))
        log.info("scanned %d entries under %s: %d files to archive, %d deleted, %d directory/link changes",
                 len(current), ", ".join(opts.paths), len(include), len(deleted), changed_meta)
        return {"entries": len(current), "files_to_archive": len(include), "deleted": len(deleted),
                "bytes_to_archive": sum(current[p]["size"] for p in include)}

    def write_archive(self, workdir: Path, tar: tarfile.TarFile, set_stem: str) -> ArchiveResult:
        plan = json.loads((workdir / "files-plan.json").read_text())
        index: dict[str, Entry] = plan["index"]
        total_bytes, next_report, changed_during = 0, PROGRESS_EVERY_BYTES, []
        for member in plan["include"]:
            entry = index[member]
            path = "/" + member
            try:
                handle = open(path, "rb", buffering=0)  # noqa: SIM115 - closed below
            except FileNotFoundError:
                log.warning("%s vanished between scan and archive; recorded as deleted", path)
                del index[member]
                plan["deleted"].append(member)
                continue
            with handle:
                st = os.fstat(handle.fileno())
                fresh = _entry(path, st)
                if fresh is None or fresh["type"] != "f":
                    raise BackupError(f"{path} stopped being a regular file during the backup; retry the task")
                if fresh["size"] != entry["size"] or fresh["mtime_ns"] != entry["mtime_ns"]:
                    changed_during.append(path)
                    log.warning("%s changed between scan and archive; archiving its current content", path)
                fresh["set"] = set_stem
                info = _tarinfo(member, fresh)
                digest = hashlib.sha256()
                reader = _HashingReader(handle, digest, fresh["size"])
                tar.addfile(info, reader)
                if reader.short_by:
                    # the bytes in the archive are not a state the file ever had: fail, the retry rereads it
                    raise BackupError(f"{path} shrank by {reader.short_by} bytes while it was read; retry the task")
                after = os.fstat(handle.fileno())
                if (after.st_size, after.st_mtime_ns) != (st.st_size, st.st_mtime_ns):
                    changed_during.append(path)
                    log.warning("%s was written to while it was read; archived its first %d bytes", path, fresh["size"])
                fresh["sha256"] = digest.hexdigest()
                index[member] = fresh
            total_bytes += fresh["size"]
            if total_bytes >= next_report:
                log.info("archived %d MiB of %s so far", total_bytes >> 20, self.source.name)
                next_report += PROGRESS_EVERY_BYTES
        for member, entry in sorted(index.items()):
            if entry["type"] == "f" and "sha256" not in entry:  # never archived (vanished) - cannot happen otherwise
                raise BackupError(f"internal: /{member} has no content in this or any parent set")
        body = json.dumps({"index": index, "deleted": sorted(plan["deleted"]), "changed_during_backup": changed_during},
                          sort_keys=True).encode()
        info = tarfile.TarInfo(INDEX_MEMBER)
        info.size, info.mode, info.mtime = len(body), FILE_MODE, 0
        tar.addfile(info, _BytesReader(body))
        index_digest = hashlib.sha256(body).hexdigest()
        files = sum(1 for e in index.values() if e["type"] == "f")
        return ArchiveResult(
            content={"entries": len(index), "files": files, "files_archived": len(plan["include"]),
                     "bytes_archived": total_bytes, "deleted": len(plan["deleted"]),
                     "changed_during_backup": len(changed_during)},
            position={"file_index_sha256": index_digest, "entries": len(index), "paths": list(self.options.paths)},
        )

    @classmethod
    def restore(cls, chain: list[Manifest], open_archive: Callable[[str], BinaryIO], dest: str | Path) -> dict[str, Any]:
        return restore_chain(chain, open_archive, dest)


class _HashingReader:
    """Read exactly ``size`` bytes, hashing what is handed out; if the file ends early the rest is
    zero-padded (tar needs the announced size) and counted in ``short_by``."""

    def __init__(self, raw: BinaryIO, digest: Any, size: int):
        self.raw, self.digest, self.left = raw, digest, size
        self.short_by = 0  # bytes padded because the file ended early

    def read(self, n: int = -1) -> bytes:
        if self.left <= 0:
            return b""
        n = self.left if n is None or n < 0 else min(n, self.left)
        data = b""
        while len(data) < n:
            block = self.raw.read(n - len(data))
            if not block:
                self.short_by += n - len(data)
                data += b"\0" * (n - len(data))  # tar needs the announced size; the caller fails the set
                break
            data += block
        self.left -= len(data)
        self.digest.update(data)
        return data


class _BytesReader:
    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def read(self, n: int = -1) -> bytes:
        end = len(self.data) if n is None or n < 0 else self.pos + n
        chunk, self.pos = self.data[self.pos:end], min(end, len(self.data))
        return chunk


def _tarinfo(member: str, entry: Entry) -> tarfile.TarInfo:
    info = tarfile.TarInfo(member)
    info.type = tarfile.REGTYPE
    info.size, info.mode = entry["size"], entry["mode"]
    info.uid, info.gid, info.uname, info.gname = entry["uid"], entry["gid"], entry["user"], entry["group"]
    # whole seconds, as GNU tar writes them: a fractional mtime would cost every member an extra
    # 1 KiB PAX header (and 15 % of the archive step's time); a restore sets the index's mtime_ns
    info.mtime = entry["mtime_ns"] // 1_000_000_000
    return info


def read_index(stream: BinaryIO, manifest: Manifest | None = None) -> dict[str, Entry]:
    """The cumulative index stored at the end of a ``files`` archive (validated; checked against
    ``manifest``'s recorded index digest when given)."""
    return read_index_document(stream, manifest)["index"]


def read_index_document(stream: BinaryIO, manifest: Manifest | None = None) -> dict[str, Any]:
    """The index document of a ``files`` archive, validated by allow-list: an archive read back
    from a target is untrusted input (see :func:`validate_index`).  With ``manifest``, the body
    must have the SHA-256 and entry count the manifest recorded when the set was made."""
    where = f"archive of {manifest.set}" if manifest else "archive"
    try:
        with open_tar_stream(stream) as tar:
            member = find_member(tar, INDEX_MEMBER)
            if member is None:
                raise RestoreError(f"{where} has no file index: it is not a files backup or it is truncated")
            if not member.isreg():
                raise RestoreError(f"{where}: member {INDEX_MEMBER} is not a regular file")
            body = tar.extractfile(member).read()
    except (tarfile.TarError, zlib.error, EOFError, OSError) as exc:
        raise RestoreError(f"{where} cannot be read as a tar.gz ({type(exc).__name__}: {exc}); it is corrupt") from None
    if manifest is not None:
        recorded = manifest.position.get("file_index_sha256")
        if hashlib.sha256(body).hexdigest() != recorded:
            raise RestoreError(f"{where}: its file index does not match the SHA-256 its manifest recorded; the "
                               "archive was altered")
    try:
        document = json.loads(body)
    except ValueError as exc:
        raise RestoreError(f"{where}: the file index is not JSON: {exc}") from None
    validate_index(document)
    if manifest is not None and manifest.position.get("entries") not in (None, len(document["index"])):
        raise RestoreError(f"{where}: its file index holds {len(document['index'])} entries; the manifest recorded "
                           f"{manifest.position.get('entries')}")
    return document


_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_ENTRY_INTS = ("mode", "uid", "gid", "mtime_ns", "size")


def validate_index(document: Any) -> None:
    """Refuse an index that could make a restore write outside its destination or lie about types:
    member names relative and clean, entry types f/d/l, numbers numbers, modes within 07777, digests
    hex, content sets named by the set grammar, and no entry below a symbolic link."""
    def bad(why: str) -> RestoreError:
        return RestoreError(f"refusing the archive's file index: {why}")

    if not isinstance(document, dict) or not isinstance(document.get("index"), dict):
        raise bad("it is not an object with an 'index'")
    index = document["index"]
    if not isinstance(document.get("deleted", []), list):
        raise bad("'deleted' is not a list")
    links = set()
    for member, entry in index.items():
        _safe_member(member)
        if not isinstance(entry, dict) or entry.get("type") not in ("f", "d", "l"):
            raise bad(f"{member!r} has no entry type f, d or l")
        for key in _ENTRY_INTS:
            value = entry.get(key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise bad(f"{member!r}: {key} is not a whole number")
        if entry["mode"] > 0o7777:
            raise bad(f"{member!r}: mode {entry['mode']:o} is not a permission mode")
        if entry["type"] == "f" and not (isinstance(entry.get("sha256"), str) and _SHA256.fullmatch(entry["sha256"])
                                         and SetName.parse(entry.get("set")) is not None):
            raise bad(f"{member!r}: a file needs a SHA-256 and the set holding its content")
        if entry["type"] == "l":
            if not isinstance(entry.get("target"), str) or not entry["target"] or "\0" in entry["target"]:
                raise bad(f"{member!r}: a link needs a target")
            links.add(member)
    for member in index:
        parts = member.split("/")
        for depth in range(1, len(parts)):
            if "/".join(parts[:depth]) in links:
                raise bad(f"{member!r} lies below the symbolic link {'/'.join(parts[:depth])!r}")


# ---------------------------------------------------------------------------------------------
# Restore
# ---------------------------------------------------------------------------------------------
def _safe_member(name: str) -> str:
    parts = name.split("/") if isinstance(name, str) else [""]
    if not isinstance(name, str) or name.startswith("/") or "\0" in name or any(p in ("", ".", "..") for p in parts):
        raise RestoreError(f"refusing unsafe archive member name {name!r}")
    return name


def _dest_path(dest: Path, member: str) -> Path:
    return dest / _safe_member(member)


def restore_chain(chain: list[Manifest], open_archive: Callable[[str], BinaryIO], dest: str | Path) -> dict[str, Any]:
    """Rebuild the tree of ``chain[-1]`` under ``dest`` (which must be empty or absent).

    The caller has verified every archive's checksum against its manifest; the index is validated
    again here (types, names, no entry below a link), each file's content is taken from the set its
    index row names and checked against its SHA-256, and metadata is applied through descriptors
    opened without following links.  On failure whatever this restore created is removed.
    """
    dest = Path(dest)
    if dest.is_symlink():
        raise RestoreError(f"restore destination {dest} is a symbolic link; give the real directory")
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise RestoreError(f"restore destination {dest} is not empty; restore into a new directory")
    created = not dest.exists()
    ensure_private_dir(dest)
    try:
        return _restore_into(chain, open_archive, dest)
    except BaseException:
        if created:
            shutil.rmtree(dest, ignore_errors=True)
        else:
            for child in dest.iterdir():
                shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
        raise


def _restore_into(chain: list[Manifest], open_archive: Callable[[str], BinaryIO], dest: Path) -> dict[str, Any]:
    with open_archive(chain[-1].set) as stream:
        document = read_index_document(stream, chain[-1])
    index: dict[str, Entry] = document["index"]
    wanted: dict[str, set[str]] = {}
    for member, entry in index.items():
        if entry["type"] == "f":
            wanted.setdefault(entry["set"], set()).add(member)
    known = {m.set for m in chain}
    missing = set(wanted) - known
    if missing:
        raise RestoreError(f"index of {chain[-1].set} needs sets outside its chain: {sorted(missing)}")

    # Directories first (shallowest first), then file contents set by set, then links.
    for member in sorted((m for m, e in index.items() if e["type"] == "d"), key=lambda m: m.count("/")):
        ensure_private_dir(_dest_path(dest, member))  # its own mode is applied at the end
    restored = 0
    for manifest in chain:
        members = wanted.get(manifest.set)
        if not members:
            continue
        try:
            with open_archive(manifest.set) as stream, open_tar_stream(stream) as tar:
                for info in tar:
                    if info.name not in members:
                        continue
                    if not info.isreg():
                        raise RestoreError(f"archive {manifest.set}: member {info.name!r} is not a regular file")
                    entry = index[info.name]
                    target = _dest_path(dest, info.name)
                    _write_member(tar.extractfile(info), target, entry)
                    members.discard(info.name)
                    restored += 1
        except (tarfile.TarError, zlib.error, EOFError) as exc:
            raise RestoreError(f"archive of {manifest.set} cannot be read as a tar.gz ({type(exc).__name__}: {exc}); "
                               "it is corrupt") from None
        if members:
            raise RestoreError(f"archive {manifest.set} lacks {len(members)} members its index promises, e.g. {sorted(members)[0]}")
    for member, entry in index.items():
        if entry["type"] == "l":
            target = _dest_path(dest, member)
            if not target.parent.is_dir():
                ensure_private_dir(target.parent)
            os.symlink(entry["target"], target)
    # Metadata last, deepest first, so setting a directory's mtime is not undone by its children;
    # through a descriptor opened with O_NOFOLLOW, so nothing outside ``dest`` is ever touched.
    is_root = os.geteuid() == 0
    for member in sorted(index, key=lambda m: m.count("/"), reverse=True):
        entry = index[member]
        target = _dest_path(dest, member)
        if entry["type"] == "l":
            if is_root:
                os.lchown(target, entry["uid"], entry["gid"])
            os.utime(target, ns=(entry["mtime_ns"], entry["mtime_ns"]), follow_symlinks=False)
            continue
        fd = os.open(target, os.O_RDONLY | os.O_NOFOLLOW | (os.O_DIRECTORY if entry["type"] == "d" else 0))
        try:
            kind = os.fstat(fd).st_mode
            if (entry["type"] == "d") != stat.S_ISDIR(kind) or (entry["type"] == "f" and not stat.S_ISREG(kind)):
                raise RestoreError(f"{target} is not the {entry['type']} entry the index records")
            if is_root:
                os.fchown(fd, entry["uid"], entry["gid"])
            os.fchmod(fd, entry["mode"])
            os.utime(fd, ns=(entry["mtime_ns"], entry["mtime_ns"]))
        finally:
            os.close(fd)
    return {"entries": len(index), "files_restored": restored, "owners_restored": is_root}


def _write_member(source: BinaryIO, target: Path, entry: Entry) -> None:
    if not target.parent.is_dir():
        ensure_private_dir(target.parent)
    digest = hashlib.sha256()
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as out:
        while block := source.read(COPY_CHUNK):
            digest.update(block)
            out.write(block)
    if digest.hexdigest() != entry["sha256"]:
        raise RestoreError(f"content of {target} does not match its recorded SHA-256; the archive is corrupt")


def iter_tree(root: str | Path) -> Iterator[tuple[str, Entry]]:
    """(relative path, entry) for a tree, for comparing a restore with its source: type, mode,
    owner, mtime, size, SHA-256 and link target."""
    root = str(root)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            full = os.path.join(dirpath, name)
            entry = _entry(full, os.lstat(full))
            if entry is None:
                continue
            for key in _SOURCE_ONLY:
                del entry[key]
            if entry["type"] == "f":
                with open(full, "rb") as handle:
                    entry["sha256"] = hashlib.file_digest(handle, "sha256").hexdigest()
            yield os.path.relpath(full, root), entry
