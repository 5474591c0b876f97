"""Encrypted sets against whoever can write to the target but has no key: they edit the archive and
then rewrite the manifest's checksums to match (so only the encryption can tell), or swap the
wrapped data key for another set's.  Every case must be refused before the restore writes anything
(its destination is never created), and the untouched chain still restores afterwards."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import pendulum
import pytest
import yaml

from metabackup.encryption import CHUNK_SIZE, TAG_SIZE, Header
from metabackup.keys import generate_key
from metabackup.manifest import ArchiveInfo, Manifest
from metabackup.restore import RestoreError, restore_source
from metabackup.spec import load_spec

from conftest import backup_once

T0 = pendulum.datetime(2026, 11, 24, 3, tz="UTC")
SPAN = CHUNK_SIZE + TAG_SIZE


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """A files source with about 3.5 MiB of incompressible data, encrypted on LocalDir: a full and
    an incremental, each archive four chunks."""
    root = tmp_path_factory.mktemp("tamper")
    src = root / "src"
    src.mkdir()
    rng = __import__("random").Random(7)
    (src / "blob.bin").write_bytes(rng.randbytes(3 * CHUNK_SIZE + CHUNK_SIZE // 2))
    (src / "conf.xml").write_text("<conf/>\n")
    key = generate_key()
    os.environ["AIRFLOW_CONN_TAMPER_KEK"] = json.dumps({"conn_type": "generic", "password": key})
    spec_path = root / "tamper.yaml"
    spec_path.write_text(yaml.safe_dump({
        "name": "tamper", "created": "2026-11-24T00:00:00Z", "cluster_version": "3.1.0", "type": "manual",
        "policy": "full_then_incremental", "data_path": str(root / "data"),
        "encryption": {"key_id": "tamper_kek", "on_cluster": True},
        "sources": {"OMS": {"kind": "files", "paths": [str(src)], "target": {"type": "LocalDir", "path": str(root / "bk")}}},
    }))
    spec = load_spec(spec_path)
    full = backup_once(spec, "OMS", T0)
    (src / "conf.xml").write_text("<conf changed='1'/>\n")
    (src / "blob.bin").write_bytes(rng.randbytes(3 * CHUNK_SIZE + CHUNK_SIZE // 2))  # four chunks here too
    incremental = backup_once(spec, "OMS", T0.add(hours=1))
    assert incremental["type"] == "incremental"
    folder = root / "bk" / spec.task_dir
    yield {"spec": spec, "root": root, "folder": folder, "full": full["manifest"], "incremental": incremental["manifest"]}
    os.environ.pop("AIRFLOW_CONN_TAMPER_KEK", None)


def _chunks(data: bytes) -> tuple[bytes, list[bytes]]:
    import io

    header = Header.read(io.BytesIO(data), "test").raw
    body = data[len(header):]
    return header, [body[i:i + SPAN] for i in range(0, len(body), SPAN)]


def _flip(data: bytes, at: int) -> bytes:
    damaged = bytearray(data)
    damaged[at] ^= 0x01
    return bytes(damaged)


def _flip_in_chunk(data, n):
    header, chunks = _chunks(data)
    return _flip(data, len(header) + n * SPAN + 100)


def _flip_tag(data, n):
    header, chunks = _chunks(data)
    return _flip(data, len(header) + n * SPAN + len(chunks[n]) - 3)


def _truncate_at_boundary(data, n):
    header, chunks = _chunks(data)
    return data[:len(header) + n * SPAN]


def _swap(data, a, b):
    header, chunks = _chunks(data)
    chunks[a], chunks[b] = chunks[b], chunks[a]
    return header + b"".join(chunks)


def _append(data):
    header, chunks = _chunks(data)
    return data + chunks[0]


def _duplicate_last(data):
    header, chunks = _chunks(data)
    return data + chunks[-1]


ARCHIVE_EDITS: dict[str, Callable[[bytes], bytes]] = {
    "bit in chunk 0": lambda d: _flip_in_chunk(d, 0),
    "bit in chunk 2": lambda d: _flip_in_chunk(d, 2),
    "bit in the magic": lambda d: _flip(d, 2),
    "bit in the chunk size": lambda d: _flip(d, 11),
    "bit in the nonce prefix": lambda d: _flip(d, 14),
    "bit in the set name": lambda d: _flip(d, 25),
    "bit in the key commitment": lambda d: _flip(d, len(_chunks(d)[0]) - 1),
    "bit in a tag": lambda d: _flip_tag(d, 1),
    "bit in the last tag": lambda d: _flip(d, len(d) - 1),
    "truncated at a chunk boundary": lambda d: _truncate_at_boundary(d, 2),
    "truncated after the header": lambda d: _truncate_at_boundary(d, 0),
    "truncated mid-chunk": lambda d: d[:len(_chunks(d)[0]) + SPAN + SPAN // 2],
    "last chunk cut short": lambda d: d[:-5],
    "two chunks swapped": lambda d: _swap(d, 0, 1),
    "a chunk appended": _append,
    "the last chunk duplicated": _duplicate_last,
    "random bytes appended": lambda d: d + os.urandom(SPAN),
}


def _rewrite(folder: Path, manifest: Manifest, archive: bytes | None = None, **changes) -> None:
    """Store ``archive`` (if given) and a manifest with matching checksums (and ``changes``)."""
    if archive is not None:
        (folder / manifest.archive.name).write_bytes(archive)
        changes["archive"] = ArchiveInfo(name=manifest.archive.name, size=len(archive),
                                         sha256=hashlib.sha256(archive).hexdigest())
    updated = dataclasses.replace(manifest, **changes)
    (folder / (manifest.set + ".manifest.json")).write_bytes(updated.to_json())


@pytest.fixture()
def restore_refused(chain, tmp_path):
    """Restore the incremental (its chain reads both sets): must be refused, nothing written; the
    originals are put back afterwards and the chain restores again."""
    folder = chain["folder"]
    saved = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    dest = tmp_path / "restored"

    def attempt(match: str) -> str:
        with pytest.raises(RestoreError, match=match) as refused:
            restore_source(chain["spec"], "OMS", dest, chain["incremental"].set, location="primary")
        assert not dest.exists(), "a refused restore created its destination"
        return str(refused.value)

    yield attempt
    for name, data in saved.items():
        (folder / name).write_bytes(data)
    result = restore_source(chain["spec"], "OMS", tmp_path / "after", chain["incremental"].set, location="primary")
    assert result["set"] == chain["incremental"].set


@pytest.mark.parametrize("member", ["full", "incremental"])
@pytest.mark.parametrize("edit", list(ARCHIVE_EDITS), ids=list(ARCHIVE_EDITS))
def test_an_edited_archive_with_matching_checksums_is_refused(chain, restore_refused, member, edit):
    manifest = chain[member]
    original = (chain["folder"] / manifest.archive.name).read_bytes()
    damaged = ARCHIVE_EDITS[edit](original)
    assert damaged != original
    _rewrite(chain["folder"], manifest, damaged)
    message = restore_refused(f"chain member {manifest.set} failed verification")
    assert any(word in message for word in ("authentication", "header", "truncated", "not an encrypted", "version",
                                            "cut short", "made for set")), message


def test_the_wrapped_key_of_another_set_is_refused(chain, restore_refused):
    full, incremental = chain["full"], chain["incremental"]
    _rewrite(chain["folder"], incremental, encryption=dataclasses.replace(
        incremental.encryption, wrapped_key=full.encryption.wrapped_key))
    restore_refused(f"{incremental.set}.*not sealed for this set")


def test_another_sets_archive_under_this_name_is_refused(chain, restore_refused):
    """The full's archive and its wrapped key moved under the incremental's name: the header names its set."""
    full, incremental = chain["full"], chain["incremental"]
    data = (chain["folder"] / full.archive.name).read_bytes()
    _rewrite(chain["folder"], incremental, data, encryption=full.encryption)
    restore_refused(f"chain member {incremental.set} failed verification")


def test_an_edited_key_id_or_fingerprint_is_refused(chain, restore_refused):
    incremental = chain["incremental"]
    _rewrite(chain["folder"], incremental, encryption=dataclasses.replace(incremental.encryption,
                                                                          key_fingerprint="0" * 32))
    restore_refused("is not the key .* was encrypted with")


def test_a_wrong_key_is_named(chain, restore_refused, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_TAMPER_KEK", json.dumps({"conn_type": "generic", "password": generate_key()}))
    message = restore_refused("key 'tamper_kek' is not the key")
    assert "fingerprint" in message


def test_an_unencrypted_archive_passed_off_as_the_set_is_refused(chain, restore_refused):
    """The manifest's encryption block removed and a plain .tar.gz put under the set's name: the
    manifest no longer names the archive it had (an encrypted set's archive is .tar.gz.enc)."""
    incremental = chain["incremental"]
    raw = json.loads((chain["folder"] / (incremental.set + ".manifest.json")).read_text())
    del raw["encryption"]
    (chain["folder"] / (incremental.set + ".manifest.json")).write_text(json.dumps(raw))
    restore_refused(f"no committed backup set {incremental.set!r}|cannot be restored")
