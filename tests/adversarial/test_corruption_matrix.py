"""Archive-corruption matrix: every corrupted byte region of a backup set is detected before a
restore writes anything, and nothing outside the restore destination changes.

One real chain (a ``files`` source with a 300 KB random file, a symlink and nested directories; a
LocalDir target with a standby ``mirror``; a full, then changes, then an incremental) is built once
for the module by the pipeline, exactly as ``test_backup_store.py`` does.  Every case tampers with
it, checks the outcome, and puts every byte at the target back as it was.

1. Byte regions of each set's archive (gzip header, first deflate block, 16 offsets over the
   middle, the compressed region holding the file index, the gzip trailer; truncations and an
   appended byte), at the primary only, at primary and mirror, and at both with the manifest
   re-signed (``archive.size``/``archive.sha256`` rewritten to match the damaged bytes).  Damage at
   the primary only must be noticed and the chain read from the intact mirror instead (exactly the
   set's tree, the result saying ``mirror``); damage at both copies must be refused.
2. Manifests forged consistently (the archive's checksums still match): every field wrong-typed,
   and where it makes sense well-typed but wrong.
3. The archive's file index changed inside a consistently re-signed archive.

A pass means the case was refused (or, for a harmless well-typed value or an intact mirror, restored
exactly); a failure means it escaped.  ``tests/conftest.py`` counts them per class.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import os
import random
import tarfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pendulum
import pytest
import yaml

from metabackup import pipeline
from metabackup.catalog import Catalog
from metabackup.manifest import ManifestError
from metabackup.restore import RestoreError, restore_source
from metabackup.sources.files import INDEX_MEMBER, iter_tree
from metabackup.spec import load_spec
from metabackup.targets import TargetError
from metabackup.verification import VerificationFailed, read_record, verify_sets

T0 = pendulum.datetime(2026, 11, 24, 3, tz="UTC")
T1 = T0.add(hours=1)
SOURCE = "OMS"
FUTURE_STEM = "3.1.0_OMS_20991231235959"
PROJECT_ERRORS = (RestoreError, TargetError, ManifestError, VerificationFailed)


def snapshot(root: Path, skip: set[str] = frozenset()) -> dict[str, tuple]:
    """Every path below ``root`` (but ``skip``, relative paths) with type, mode, owner, size,
    content digest and link target (as test_backup_store.snapshot)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            if rel in skip:
                continue
            st = os.lstat(path)
            digest = None
            if os.path.isfile(path) and not os.path.islink(path):
                digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
            link = os.readlink(path) if os.path.islink(path) else None
            out[rel] = (st.st_mode, st.st_uid, st.st_gid, st.st_size, digest, link)
    return out


def all_paths(root: Path) -> set[str]:
    found = set()
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            found.add(os.path.relpath(os.path.join(dirpath, name), root))
    return found


@dataclass
class World:
    tmp: Path
    spec: Any
    src: Path
    folder: Path  # primary task directory
    mirror: Path  # mirror task directory
    task_dir: str
    full: str
    incr: str
    trees: dict[str, dict]  # set stem -> iter_tree of the source when the set was taken
    paths: dict[str, set]  # set stem -> every path below a restore destination
    pristine: dict[Path, bytes] = field(default_factory=dict)
    regions: dict[str, dict] = field(default_factory=dict)  # set stem -> archive geometry

    def stem(self, role: str) -> str:
        return self.full if role == "full" else self.incr

    def archive(self, stem: str, root: Path | None = None) -> Path:
        return (root or self.folder) / f"{stem}.tar.gz"

    def manifest_path(self, stem: str, root: Path | None = None) -> Path:
        return (root or self.folder) / f"{stem}.manifest.json"

    def catalog(self) -> Catalog:
        return Catalog.read(self.spec.sources[0].target.open(), self.spec.name, self.task_dir, SOURCE, self.spec.timezone)

    def reset(self) -> None:
        """Put the target (primary and mirror) back exactly as the pipeline left it."""
        for folder in (self.folder, self.mirror):
            for child in folder.iterdir():
                if child not in self.pristine:
                    child.unlink()
        for path, data in self.pristine.items():
            if not path.exists() or path.read_bytes() != data:
                path.write_bytes(data)
                os.chmod(path, 0o600)

    def outside(self, skip: set[Path] = frozenset()) -> dict[str, tuple]:
        """A snapshot of everything the restore must not touch: the source tree, the target
        (primary and mirror), the staging area and a precious directory; ``skip``: tampered files."""
        return snapshot(self.tmp, {os.path.relpath(p, self.tmp) for p in skip})


def _geometry(archive: Path) -> dict[str, int]:
    """Offsets in the compressed file: its length, and the compressed byte range whose inflation
    produces the index member (header and data), found by inflating byte by byte."""
    blob = archive.read_bytes()
    with tarfile.open(archive, "r:gz") as tar:
        index = next(m for m in tar.getmembers() if m.name == INDEX_MEMBER)
        start, end = index.offset, index.offset_data + index.size
    assert blob[:4] == b"\x1f\x8b\x08\x00"  # gzip, deflate, no optional fields: the deflate stream starts at 10
    inflater = zlib.decompressobj(wbits=-15)
    produced, c_start, c_end = 0, None, None
    for offset in range(10, len(blob)):
        produced += len(inflater.decompress(blob[offset:offset + 1]))
        if c_start is None and produced > start:
            c_start = offset
        if produced >= end:
            c_end = offset
            break
    assert c_start is not None and c_end is not None and c_start <= c_end < len(blob) - 8
    return {"length": len(blob), "index_start": c_start, "index_end": c_end}


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    tmp = tmp_path_factory.mktemp("corruption-world")
    src = tmp / "etc" / "oms"
    (src / "conf.d" / "nested" / "deeper").mkdir(parents=True)
    (src / "server.xml").write_text("<server port='8443'/>\n")
    (src / "conf.d" / "a.properties").write_text("a=1\nb=2\n")
    (src / "conf.d" / "nested" / "deeper" / "b.conf").write_text("deep=yes\n")
    (src / "blob.bin").write_bytes(random.Random(20261124).randbytes(300 * 1024))
    os.chmod(src / "blob.bin", 0o640)
    (src / "current").symlink_to("conf.d/a.properties")
    (src / "empty").mkdir()
    precious = tmp / "outside"
    precious.mkdir()
    (precious / "precious").write_text("do not touch\n")
    spec_path = tmp / "matrix.yaml"
    spec_path.write_text(yaml.safe_dump({
        "name": "matrix", "created": "2026-11-24T00:00:00Z", "cluster_version": "3.1.0", "type": "manual",
        "policy": "full_then_incremental", "data_path": str(tmp / "data"),
        "sources": {SOURCE: {"kind": "files", "paths": [str(src)],
                             "target": {"type": "LocalDir", "max_backups": 3, "mirror": str(tmp / "mirror")}}}}))
    spec = load_spec(spec_path)

    def backup(when) -> tuple[str, str]:
        run = pipeline.SetRun.of(spec, SOURCE, when)
        pipeline.preflight(spec, [SOURCE])
        decision = pipeline.decide(run)
        for step in (pipeline.snapshot, pipeline.archive, pipeline.upload, pipeline.verify, pipeline.retention):
            step(run)
        pipeline.record(spec, [SOURCE], when.isoformat())
        return run.name.stem, decision.type

    full, kind = backup(T0)
    assert kind == "full"
    tree_full = dict(iter_tree(src))
    (src / "server.xml").write_text("<server port='9443'/>\n")  # changed
    (src / "conf.d" / "new.properties").write_text("new=1\n")  # added
    (src / "conf.d" / "nested" / "deeper" / "b.conf").unlink()  # deleted
    (src / "current").unlink()
    (src / "current").symlink_to("server.xml")  # re-pointed
    incr, kind = backup(T1)
    assert kind == "incremental"
    tree_incr = dict(iter_tree(src))

    run = pipeline.SetRun.of(spec, SOURCE, T1)
    folder = Path(spec.sources[0].target.path) / run.task_dir
    w = World(tmp=tmp, spec=spec, src=src, folder=folder, mirror=tmp / "mirror" / run.task_dir, task_dir=run.task_dir,
              full=full, incr=incr, trees={full: tree_full, incr: tree_incr}, paths={})
    assert [m.set for m in w.catalog().sets] == [full, incr]
    # Reference restores of the intact chain: exactly the source as it was at each set.
    for stem in (full, incr):
        dest = tmp_path_factory.mktemp("reference") / "dest"
        restore_source(spec, SOURCE, dest, set_stem=stem)
        assert dict(iter_tree(dest / str(src).lstrip("/"))) == w.trees[stem]
        w.paths[stem] = all_paths(dest)
    for folder_ in (w.folder, w.mirror):
        for child in folder_.iterdir():
            if child.name.startswith(".metabackup-verification-"):
                child.unlink()
            else:
                w.pristine[child] = child.read_bytes()
    assert sum(1 for p in w.pristine if p.name.endswith(".tar.gz")) == 4  # two sets, primary and mirror
    w.regions = {stem: _geometry(w.archive(stem)) for stem in (full, incr)}
    assert w.regions[full]["length"] > 300 * 1024  # random bytes do not compress
    return w


@pytest.fixture()
def w(world):
    world.reset()
    yield world
    world.reset()


# ---------------------------------------------------------------------------------------------
# Outcomes
# ---------------------------------------------------------------------------------------------
def assert_refused(w: World, stem: str, dest: Path, skip: set[Path] = frozenset()) -> BaseException:
    """The restore of ``stem`` into the new directory ``dest`` raises one of the project's errors,
    ``dest`` does not exist afterwards and nothing else changed."""
    before = w.outside(skip)
    try:
        restore_source(w.spec, SOURCE, dest, set_stem=stem)
    except Exception as exc:  # noqa: BLE001 - the type is checked below, after the side effects
        error = exc
    else:
        untouched = w.outside(skip) == before
        pytest.fail(f"ESCAPED: the restore of {stem} succeeded (into {dest}); outside the destination "
                    f"{'nothing changed' if untouched else 'SOMETHING CHANGED'}")
    assert not os.path.lexists(dest), f"ESCAPED: refused ({error}), but {dest} was left behind"
    assert w.outside(skip) == before, "ESCAPED: the restore changed something outside its destination"
    assert isinstance(error, PROJECT_ERRORS), f"refused with a raw {type(error).__name__}: {error}"
    return error


def assert_restored_from_mirror(w: World, stem: str, dest: Path, skip: set[Path], damaged: str) -> None:
    """With the primary's copy of ``damaged`` corrupt and the mirror intact, the restore of ``stem``
    reads the whole chain from the mirror (so the primary's damage was detected), restores exactly
    the set's tree, says so, and changes nothing outside ``dest``."""
    before = w.outside(skip)
    result = restore_source(w.spec, SOURCE, dest, set_stem=stem)
    assert result["location"] == "mirror", f"ESCAPED: the damaged {damaged} was read from {result['location']}"
    assert w.outside(skip) == before, "ESCAPED: the restore changed something outside its destination"
    assert all_paths(dest) == w.paths[stem], "ESCAPED: the restore wrote other paths than the set holds"
    assert dict(iter_tree(dest / str(w.src).lstrip("/"))) == w.trees[stem], \
        f"ESCAPED: the restore of {stem} differs from the source tree it was taken from"


def assert_exact_or_refused(w: World, stem: str, dest: Path, skip: set[Path] = frozenset(),
                            any_error: bool = False) -> Exception | str:
    """A harmless change: the restore of ``stem`` either is refused (as :func:`assert_refused`;
    ``any_error``: whatever the exception's type) or produces exactly the source tree of that set,
    and nothing else.  Returns the refusal, or "restored"."""
    before = w.outside(skip)
    try:
        restore_source(w.spec, SOURCE, dest, set_stem=stem)
    except Exception as exc:  # noqa: BLE001
        assert not os.path.lexists(dest), f"ESCAPED: refused ({exc}), but {dest} was left behind"
        assert w.outside(skip) == before, "ESCAPED: the restore changed something outside its destination"
        assert any_error or isinstance(exc, PROJECT_ERRORS), f"refused with a raw {type(exc).__name__}: {exc}"
        return exc
    assert w.outside(skip) == before, "ESCAPED: the restore changed something outside its destination"
    assert all_paths(dest) == w.paths[stem], "ESCAPED: the restore wrote other paths than the set holds"
    assert dict(iter_tree(dest / str(w.src).lstrip("/"))) == w.trees[stem], \
        f"ESCAPED: the restore of {stem} differs from the source tree it was taken from"
    return "restored"


def dependants(w: World, stem: str) -> list[str]:
    """The sets whose restore reads ``stem``: itself, and for the full the incremental too."""
    return [w.full, w.incr] if stem == w.full else [w.incr]


# ---------------------------------------------------------------------------------------------
# 1. Byte-region matrix
# ---------------------------------------------------------------------------------------------
MIDDLE = 16
REGIONS: list[tuple[str, int]] = (
    [("gzip-header", i) for i in range(10)]  # magic, method, flags, mtime, xfl, os
    + [("first-deflate-block", i) for i in (0, 1, 5, 30)]  # from byte 10: block header, Huffman tables, data
    + [("middle", i) for i in range(MIDDLE)]
    + [("index-member", i) for i in range(4)]  # spread over the compressed bytes holding the index
    + [("gzip-trailer", i) for i in range(8)]  # CRC32 (4), ISIZE (4)
    + [("truncate-last-byte", 0), ("truncate-last-KiB", 0), ("truncate-to-half", 0), ("append-byte", 0)]
)
PLACES = ("primary", "primary+mirror", "both+resigned")


def damage(blob: bytes, region: str, i: int, geometry: dict[str, int]) -> bytes:
    n = len(blob)
    if region == "truncate-last-byte":
        return blob[:-1]
    if region == "truncate-last-KiB":
        return blob[:-1024]
    if region == "truncate-to-half":
        return blob[: n // 2]
    if region == "append-byte":
        return blob + b"\0"
    if region == "gzip-header":
        offset = i
    elif region == "first-deflate-block":
        offset = 10 + i
    elif region == "middle":
        offset = 10 + (n - 18) * (i + 1) // (MIDDLE + 1)
    elif region == "index-member":
        lo, hi = geometry["index_start"], geometry["index_end"]
        offset = lo + (hi - lo) * i // 3
    elif region == "gzip-trailer":
        offset = n - 8 + i
    else:
        raise AssertionError(region)
    flipped = bytearray(blob)
    flipped[offset] ^= 0xFF
    return bytes(flipped)


def resign(w: World, stem: str, blob: bytes) -> list[Path]:
    """Rewrite the set's manifest (primary and mirror) so its archive size and SHA-256 match ``blob``."""
    changed = []
    for root in (w.folder, w.mirror):
        path = w.manifest_path(stem, root)
        manifest = json.loads(path.read_text())
        manifest["archive"].update(size=len(blob), sha256=hashlib.sha256(blob).hexdigest())
        path.write_text(json.dumps(manifest))
        changed.append(path)
    return changed


BYTE_CASES = [(role, region, i, place) for place in PLACES for role in ("full", "incr") for region, i in REGIONS]


@pytest.mark.parametrize("role,region,i,place", BYTE_CASES,
                         ids=[f"{p}-{r}-{reg}-{i}" for r, reg, i, p in BYTE_CASES])
def test_byte_region(w, tmp_path, role, region, i, place):
    stem = w.stem(role)
    original = w.archive(stem).read_bytes()
    blob = damage(original, region, i, w.regions[stem])
    assert blob != original
    tampered = [w.archive(stem)] + ([w.archive(stem, w.mirror)] if place != "primary" else [])
    for path in tampered:
        path.write_bytes(blob)
    if place == "both+resigned":
        # The attacker (or a bug that re-hashed a damaged copy) made the checksums match: what is
        # left is the format itself (gzip, tar, the index, every file's SHA-256).  Refused whatever
        # the exception here; test_damaged_archive_refusals_name_the_set checks the messages.
        tampered += resign(w, stem, blob)
        for k, reader in enumerate(dependants(w, stem)):
            assert_exact_or_refused(w, reader, tmp_path / f"dest{k}", set(tampered), any_error=True)
        return
    for k, reader in enumerate(dependants(w, stem)):
        if place == "primary":  # the mirror is intact: the restore must notice and read it instead
            assert_restored_from_mirror(w, reader, tmp_path / f"dest{k}", set(tampered), stem)
            continue
        error = assert_refused(w, reader, tmp_path / f"dest{k}", set(tampered))
        assert stem in str(error) and "verification" in str(error)
    with pytest.raises(VerificationFailed, match=stem):
        verify_sets(w.spec, SOURCE)
    record = read_record(w.spec.sources[0].target.open(), w.task_dir, SOURCE)
    assert record["sets"][stem]["ok"] is False
    assert w.mirror.joinpath(w.archive(stem).name).read_bytes() == (original if place == "primary" else blob)


@pytest.mark.parametrize("role", ["full", "incr"])
def test_damaged_archive_refusals_name_the_set(w, tmp_path, role):
    """Every region of a re-signed damaged archive that is refused is refused with the project's
    error (naming what is wrong), not with a bare tarfile/zlib exception."""
    stem = w.stem(role)
    original, raw = w.archive(stem).read_bytes(), []
    for k, (region, i) in enumerate(REGIONS):
        w.reset()
        blob = damage(original, region, i, w.regions[stem])
        for root in (w.folder, w.mirror):
            w.archive(stem, root).write_bytes(blob)
        resign(w, stem, blob)
        try:
            restore_source(w.spec, SOURCE, tmp_path / f"dest{k}", set_stem=stem)
        except PROJECT_ERRORS:
            pass
        except Exception as exc:  # noqa: BLE001
            raw.append(f"{region}-{i}: {type(exc).__module__}.{type(exc).__name__}: {exc}")
    assert not raw, f"{len(raw)} of {len(REGIONS)} damaged archives refused with a bare library error:\n" + "\n".join(raw)


# ---------------------------------------------------------------------------------------------
# 2. Manifests forged consistently
# ---------------------------------------------------------------------------------------------
DELETE = object()


@dataclass(frozen=True)
class M:
    """One manifest forgery: set ``path`` (``a.b``) to ``value`` (or ``value(manifest, w)``);
    ``typed``: the value has the field's type (else the catalog must refuse it); ``names``: what
    the catalog's reason may name (the field, or the field it contradicts)."""

    path: str
    value: Any
    label: str
    typed: bool = False
    names: tuple[str, ...] = ()


def other_stem(manifest: dict, w: World) -> str:
    return w.incr if manifest["set"] == w.full else w.full


def flipped_type(manifest: dict, w: World) -> str:
    return "incremental" if manifest["type"] == "full" else "full"


def plus_one(manifest: dict, w: World) -> int:
    return manifest["archive"]["size"] + 1


HEX63, HEX65, OTHER_SHA = "a" * 63, "a" * 65, "ab" * 32
TIME_CASES = lambda f: [  # noqa: E731
    M(f, 1764000000, "number"), M(f, None, "null"), M(f, ["2026-11-24T03:00:00+00:00"], "list"),
    M(f, "yesterday", "words", typed=True), M(f, "2026-11-24T03:00:00", "no-offset", typed=True),
    M(f, "2099-12-31T23:59:59+00:00", "future", typed=True), M(f, "../2026-11-24T03:00:00+00:00", "dotdot", typed=True)]

MANIFEST_FORGERIES: list[M] = [
    M("set", 7, "number"), M("set", None, "null"), M("set", ["x"], "list"), M("set", DELETE, "missing"),
    M("set", FUTURE_STEM, "future-set", typed=True), M("set", other_stem, "other-set", typed=True),
    M("set", "../3.1.0_OMS_20261124030000", "dotdot", typed=True), M("set", "3.1.0_OMS/20261124030000", "slash", typed=True),
    M("task", 7, "number"), M("task", None, "null"), M("task", {"name": "matrix"}, "object"),
    M("task", "another", "other-task", typed=True), M("task", "../matrix", "dotdot", typed=True),
    M("task", "matrix/x", "slash", typed=True),
    M("task_dir", 7, "number"), M("task_dir", None, "null"), M("task_dir", ["matrix_20261124000000"], "list"),
    M("task_dir", "another_20261124000000", "other-task", typed=True),
    M("task_dir", "matrix_20991231235959", "future", typed=True),
    M("task_dir", "../matrix_20261124000000", "dotdot", typed=True),
    M("task_dir", "matrix_20261124000000/..", "slash", typed=True),
    M("source", 7, "number"), M("source", None, "null"), M("source", "DBService", "other-source", typed=True),
    M("source", "../OMS", "dotdot", typed=True), M("source", "OMS/x", "slash", typed=True),
    M("kind", 7, "number"), M("kind", None, "null"), M("kind", ["files"], "list"),
    M("kind", "postgres", "postgres", typed=True), M("kind", "ldap", "ldap", typed=True),
    M("kind", "namenode", "namenode", typed=True), M("kind", "oms", "oms", typed=True),
    M("kind", "../files", "dotdot", typed=True),
    M("type", 7, "number"), M("type", None, "null"), M("type", "snapshot", "unknown", typed=True),
    M("type", flipped_type, "flipped", typed=True),
    M("parent", 7, "number"), M("parent", ["x"], "list"),
    M("parent", lambda m, w: w.incr, "incremental", typed=True),  # the full gets a parent; the incremental itself
    M("parent", FUTURE_STEM, "future-set", typed=True), M("parent", "../x", "dotdot", typed=True),
    M("parent", "3.1.0_DBService_20261124030000", "other-source", typed=True),
    M("chain_root", 7, "number"), M("chain_root", None, "null"), M("chain_root", "../x", "dotdot", typed=True),
    M("chain_root", FUTURE_STEM, "future-set", typed=True),
    M("chain_root", "3.1.0_DBService_20261124030000", "other-source", typed=True),
    M("cluster_version", 3.1, "number"), M("cluster_version", None, "null"),
    M("cluster_version", "9.9.9", "other-version", typed=True), M("cluster_version", "3.1.0/..", "slash", typed=True),
    M("cluster_version", "3.1.0\nevil", "newline", typed=True),
    *TIME_CASES("executed_at"), *TIME_CASES("started_at"), *TIME_CASES("finished_at"),
    M("archive", None, "null"), M("archive", [], "list"), M("archive", "x.tar.gz", "string"),
    M("archive", {}, "empty-object"),
    M("archive.name", 7, "number"), M("archive.name", None, "null"),
    M("archive.name", "../outside/precious", "dotdot", typed=True), M("archive.name", "x/y.tar.gz", "slash", typed=True),
    M("archive.name", lambda m, w: other_stem(m, w) + ".tar.gz", "other-set", typed=True),
    M("archive.size", "big", "string"), M("archive.size", None, "null"), M("archive.size", 1.5, "float"),
    M("archive.size", True, "bool"), M("archive.size", -1, "negative"), M("archive.size", [1], "list"),
    M("archive.size", plus_one, "off-by-one", typed=True), M("archive.size", 0, "zero", typed=True),
    M("archive.sha256", 7, "number"), M("archive.sha256", None, "null"), M("archive.sha256", HEX63, "hex63", typed=True),
    M("archive.sha256", HEX65, "hex65", typed=True), M("archive.sha256", "A" * 64, "upper-hex", typed=True),
    M("archive.sha256", OTHER_SHA, "other-sha", typed=True),
    M("content", None, "null"), M("content", [], "list"), M("content", "x", "string"),
    M("content", {"entries": "many", "files": -1}, "odd-counts", typed=True),
    M("position", None, "null"), M("position", [], "list"), M("position", "x", "string"),
    M("position.file_index_sha256", 7, "number"), M("position.file_index_sha256", None, "null"),
    M("position.file_index_sha256", HEX63, "hex63", typed=True),
    M("position.file_index_sha256", OTHER_SHA, "other-sha", typed=True),
    M("position.entries", "3", "string"), M("position.entries", None, "null"), M("position.entries", -1, "negative"),
    M("position.entries", 10**6, "huge", typed=True),
    M("position.paths", "/etc", "string"), M("position.paths", None, "null"), M("position.paths", [7], "list-of-number"),
    M("position.paths", ["relative/dir"], "relative", typed=True), M("position.paths", ["/etc"], "other-dir", typed=True),
    M("position.paths", ["/../../etc"], "dotdot", typed=True),
    M("position.evil", {"paths": ["/"]}, "extra-field", typed=True),
    M("reason", 7, "number"), M("reason", None, "null"), M("reason", ["x"], "list"),
    M("reason", "x" * 100_000, "long", typed=True),
    M("tools", [], "list"), M("tools", "x", "string"), M("tools", None, "null"), M("tools", {"python": 3}, "number-value"),
    M("format", 2, "next-version", typed=True), M("format", "1", "string"), M("format", None, "null"),
    M("format", 1.0, "float"), M("format", True, "bool"), M("format", 0, "zero", typed=True),
    M("evil", 1, "unknown-field", names=("<manifest>",)),
]
# what else a reason may name when a value contradicts another field
RELATED = {"set": ("chain_root", "archive.name", "parent"), "task": ("task_dir",), "source": ("set",),
           "kind": ("position",), "type": ("parent", "chain_root"), "cluster_version": ("set",),
           "archive": ("archive",)}


def set_path(document: dict, path: str, value: Any) -> None:
    *parents, last = path.split(".")
    for key in parents:
        document = document[key]
    if value is DELETE:
        del document[last]
    else:
        document[last] = value


MANIFEST_CASES = [(role, m) for role in ("full", "incr") for m in MANIFEST_FORGERIES]


@pytest.mark.parametrize("role,m", MANIFEST_CASES, ids=[f"{r}-{m.path}-{m.label}" for r, m in MANIFEST_CASES])
def test_forged_manifest(w, tmp_path, role, m):
    stem = w.stem(role)
    tampered = []
    for root in (w.folder, w.mirror):  # the attacker rewrites every copy
        path = w.manifest_path(stem, root)
        manifest = json.loads(path.read_text())
        value = m.value(manifest, w) if callable(m.value) else m.value if m.value is DELETE else copy.deepcopy(m.value)
        set_path(manifest, m.path, value)
        path.write_text(json.dumps(manifest))
        tampered.append(path)
    catalog = w.catalog()
    invalid = [bad for bad in catalog.invalid if bad.name == w.manifest_path(stem).name]
    if not invalid:
        assert catalog.get(stem) is not None
        assert m.typed, f"ESCAPED: the catalog accepted {m.path} = {value!r} (wrong type)"
        for k, reader in enumerate(dependants(w, stem)):
            assert_exact_or_refused(w, reader, tmp_path / f"dest{k}", set(tampered))
        return
    assert catalog.get(stem) is None and len(invalid) == 1
    top = m.path.split(".")[0]
    names = m.names or (m.path,) + RELATED.get(top, ()) + ((top,) if "." in m.path else ())
    assert any(name in invalid[0].reason for name in names), f"the reason names none of {names}: {invalid[0].reason}"
    for k, reader in enumerate(dependants(w, stem)):
        error = assert_refused(w, reader, tmp_path / f"dest{k}", set(tampered))
        assert "no committed backup set" in str(error) or "chain" in str(error)


RENAMES = [FUTURE_STEM, "3.1.0_OMS_20261124030000\n"]


@pytest.mark.parametrize("role,new", [(r, n) for r in ("full", "incr") for n in RENAMES],
                         ids=[f"{r}-rename-{label}" for r in ("full", "incr") for label in ("future", "newline")])
def test_forged_consistent_rename(w, tmp_path, role, new):
    """The attacker renames a set everywhere (file names, ``set``, ``archive.name``, a full's
    ``chain_root``): a set the catalog may accept, which must restore exactly or be refused."""
    stem = w.stem(role)
    if role == "incr" and new.startswith("3.1.0_OMS_2026112403"):
        new = "3.1.0_OMS_20261124040000\n"
    tampered = []
    for root in (w.folder, w.mirror):
        manifest = json.loads(w.manifest_path(stem, root).read_text())
        manifest.update(set=new, archive={**manifest["archive"], "name": new + ".tar.gz"})
        if manifest["type"] == "full":
            manifest["chain_root"] = new
        w.manifest_path(stem, root).unlink()
        w.archive(stem, root).rename(root / (new + ".tar.gz"))
        (root / (new + ".manifest.json")).write_text(json.dumps(manifest))
        tampered += [w.manifest_path(stem, root), w.archive(stem, root), root / (new + ".tar.gz"),
                     root / (new + ".manifest.json")]
    w.paths[new], w.trees[new] = w.paths[stem], w.trees[stem]
    try:
        catalog = w.catalog()
        if catalog.get(new) is None:
            assert any(bad.name == new + ".manifest.json" for bad in catalog.invalid)
            assert_refused(w, new, tmp_path / "dest", set(tampered))
        else:
            assert_exact_or_refused(w, new, tmp_path / "dest", set(tampered))
    finally:
        del w.paths[new], w.trees[new]


# ---------------------------------------------------------------------------------------------
# 3. The file index inside a consistently re-signed archive
# ---------------------------------------------------------------------------------------------
def read_members(archive: Path) -> list[tuple[tarfile.TarInfo, bytes | None]]:
    with tarfile.open(archive, "r:gz") as tar:
        return [(m, tar.extractfile(m).read() if m.isreg() else None) for m in tar.getmembers()]


def forge_index(w: World, stem: str, mutate: Callable[[dict, World, str], None], position_too: bool) -> list[Path]:
    """Rewrite the set's archive with its index changed by ``mutate``, at primary and mirror, and
    its manifest so size and SHA-256 match; ``position_too``: also the recorded index digest and
    entry count (fully consistent)."""
    members, body = [], None
    for info, data in read_members(w.archive(stem)):
        if info.name == INDEX_MEMBER:
            document = json.loads(data)
            mutate(document["index"], w, stem)
            data = body = json.dumps(document, sort_keys=True).encode()
            info.size = len(data)
        members.append((info, data))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    blob = buf.getvalue()
    tampered = []
    for root in (w.folder, w.mirror):
        w.archive(stem, root).write_bytes(blob)
        tampered.append(w.archive(stem, root))
    tampered += resign(w, stem, blob)
    if position_too:
        for root in (w.folder, w.mirror):
            path = w.manifest_path(stem, root)
            manifest = json.loads(path.read_text())
            manifest["position"].update(file_index_sha256=hashlib.sha256(body).hexdigest(),
                                        entries=len(json.loads(body)["index"]))
            path.write_text(json.dumps(manifest))
    return tampered


def member(w: World, name: str) -> str:
    return str(w.src).lstrip("/") + "/" + name


def own_file(w: World, stem: str) -> str:
    """A file whose bytes this set's archive holds (the blob for the full, server.xml for the incremental)."""
    return member(w, "blob.bin" if stem == w.full else "server.xml")


def change_sha(index, w, stem):
    index[own_file(w, stem)]["sha256"] = hashlib.sha256(b"forged").hexdigest()


def change_parent_sha(index, w, stem):  # a file the incremental carries from the full
    index[member(w, "blob.bin" if stem == w.incr else "conf.d/a.properties")]["sha256"] = OTHER_SHA


def change_size(index, w, stem):
    index[own_file(w, stem)]["size"] += 1


def drop_file(index, w, stem):
    del index[own_file(w, stem)]


def outside_chain(index, w, stem):
    # the full's chain does not hold the incremental; nobody's chain holds a set that does not exist
    index[member(w, "injected.conf")] = {**index[own_file(w, stem)], "set": w.incr if stem == w.full else FUTURE_STEM}


def other_chain_member(index, w, stem):
    """Content claimed from a set of the chain whose archive lacks it (or holds other bytes)."""
    if stem == w.incr:  # server.xml's new bytes are in the incremental; the full holds the old ones
        index[own_file(w, stem)]["set"] = w.full
    else:  # a file the full's archive does not hold at all
        index[member(w, "conf.d/ghost.properties")] = {**index[own_file(w, stem)]}


def change_mode(index, w, stem):
    index[own_file(w, stem)]["mode"] = 0o6777


def change_link(index, w, stem):
    index[member(w, "current")]["target"] = str(w.tmp / "outside" / "precious")


# name -> (mutation, variants: False = archive re-signed, True = index digest and entry count in
# the manifest rewritten too).  Size, dropped entries, modes and link targets are only tried
# re-signed: the manifest's position.file_index_sha256 still tells the truth there, while a fully
# consistent rewrite of them is simply another valid backup (README "What is assumed").
INDEX_MUTATIONS = {
    "file-sha256": (change_sha, (False, True)),
    "carried-file-sha256": (change_parent_sha, (False, True)),
    "file-size": (change_size, (False,)),
    "drop-file-entry": (drop_file, (False,)),
    "entry-from-set-outside-chain": (outside_chain, (False, True)),
    "entry-member-missing": (other_chain_member, (False, True)),
    "file-mode": (change_mode, (False,)),
    "symlink-target": (change_link, (False,)),
}
INDEX_CASES = [(role, name, position_too) for role in ("full", "incr") for name, (_fn, variants) in INDEX_MUTATIONS.items()
               for position_too in variants]


@pytest.mark.parametrize("role,name,position_too", INDEX_CASES,
                         ids=[f"{r}-{n}-{'consistent' if p else 'resigned'}" for r, n, p in INDEX_CASES])
def test_forged_index(w, tmp_path, role, name, position_too):
    """``resigned``: archive rewritten and its size and SHA-256 in the manifest with it (the
    manifest still records the original index digest); ``consistent``: the recorded index digest
    and entry count rewritten too, so only the index's own content can give the forgery away."""
    stem = w.stem(role)
    tampered = forge_index(w, stem, INDEX_MUTATIONS[name][0], position_too)
    assert w.catalog().get(stem) is not None  # the forged set is accepted by the catalog...
    assert_refused(w, stem, tmp_path / "dest", set(tampered))  # ...but its restore is refused


# ---------------------------------------------------------------------------------------------
# The matrix cannot silently shrink
# ---------------------------------------------------------------------------------------------
def test_matrix_size(request):
    collected = [item for item in request.session.items
                 if item.module is request.module and getattr(item, "callspec", None) is not None]
    assert len(BYTE_CASES) == 2 * len(PLACES) * len(REGIONS) and len(REGIONS) >= 40
    assert {region for region, _ in REGIONS} >= {"gzip-header", "first-deflate-block", "middle", "index-member",
                                                  "gzip-trailer", "truncate-last-byte", "truncate-last-KiB",
                                                  "truncate-to-half", "append-byte"}
    assert len(MANIFEST_FORGERIES) >= 40 and len(INDEX_CASES) >= 8
    total = len(BYTE_CASES) + 2 + len(MANIFEST_CASES) + 4 + len(INDEX_CASES)
    assert total >= 40
    whole_module = not request.config.option.keyword and not any("::" in arg for arg in request.config.args)
    if whole_module:  # a selection (-k, a node id) runs fewer cases on purpose
        assert len(collected) == total
