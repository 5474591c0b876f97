"""Archive names and formats: ``.tar.gz`` and ``.tar.zst`` (``.enc`` when encrypted) are the only
archive names a manifest may give its set; the writer's output is one standard gzip member or zstd
frame; the reader tells them apart by their first bytes, and a damaged zstd stream is a tar read error."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
import zlib

import pytest

from chains import full
from metabackup.archive import open_tar_stream, write_tar
from metabackup.manifest import Manifest, ManifestError
from metabackup.naming import SetName, archive_suffix, compression_of, split_archive_name

STEM = "3.5.0_OMS_20261124110000"


def test_archive_names_by_compression_and_encryption():
    name = SetName.parse(STEM)
    assert name.archive_name(False) == STEM + ".tar.gz"
    assert name.archive_name(True) == STEM + ".tar.gz.enc"
    assert name.archive_name(False, "zstd") == STEM + ".tar.zst"
    assert name.archive_name(True, "zstd") == STEM + ".tar.zst.enc"
    assert archive_suffix() == ".tar.gz"
    for compression in ("gzip", "zstd"):
        for encrypted in (False, True):
            assert split_archive_name(name.archive_name(encrypted, compression)) == (STEM, compression, encrypted)
            assert compression_of(name.archive_name(encrypted, compression)) == compression
    for other in (STEM + ".tar.bz2", STEM + ".manifest.json", ".tar.gz", STEM, STEM + ".tar.gz.partial-ab12"):
        assert split_archive_name(other) is None


def _with_archive_name(manifest: Manifest, name: str) -> bytes:
    data = json.loads(manifest.to_json())
    data["archive"]["name"] = name
    return json.dumps(data).encode()


@pytest.mark.parametrize("suffix", [".tar.gz", ".tar.zst"])
def test_a_manifest_may_name_a_gzip_or_zstd_archive_of_its_own_set(suffix):
    manifest = full(1)
    parsed = Manifest.from_json(_with_archive_name(manifest, manifest.set + suffix))
    assert parsed.archive.name == manifest.set + suffix


@pytest.mark.parametrize("name", ["{stem}.tar.bz2", "{stem}.tar.zst.enc", "{stem}.tar.gz.enc", "{stem}.zst",
                                  "other_OMS_20261124110000.tar.zst", "{stem}.tar.zst/../x"])
def test_a_manifest_naming_any_other_archive_is_refused(name):
    manifest = full(1)
    with pytest.raises(ManifestError, match="archive.name"):
        Manifest.from_json(_with_archive_name(manifest, name.format(stem=manifest.set)))


def _archive(tmp_path, compression: str, members: dict[str, bytes]) -> bytes:
    path = tmp_path / f"a.{compression}"
    with write_tar(path, compression=compression, threads=2) as (tar, written):
        for name, body in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    data = path.read_bytes()
    assert written.size == len(data) and written.plaintext == (written.sha256, written.size)
    return data


MEMBERS = {"a": b"x" * 3_000_000, "b": bytes(range(256)) * 9000, "c": b""}


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_what_is_written_reads_back_member_by_member(tmp_path, compression):
    data = _archive(tmp_path, compression, MEMBERS)
    with open_tar_stream(io.BytesIO(data)) as tar:
        assert {m.name: tar.extractfile(m).read() for m in tar} == MEMBERS


def test_the_gzip_archive_is_one_member_the_standard_library_reads(tmp_path):
    data = _archive(tmp_path, "gzip", MEMBERS)
    d = zlib.decompressobj(wbits=31)
    tar_bytes = d.decompress(data)
    assert d.eof and not d.unused_data  # one member, whole
    assert gzip.decompress(data) == tar_bytes
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        assert tar.getnames() == list(MEMBERS)


def test_a_damaged_zstd_archive_is_a_tar_read_error(tmp_path):
    """The zstd frame carries a content checksum.  (tarfile's stream reader does not check a gzip
    member's CRC, so a damaged gzip archive may read silently wrong: the manifest's SHA-256, checked
    before every restore, is what catches it for both formats.)"""
    data = bytearray(_archive(tmp_path, "zstd", {"a": bytes(range(256)) * 4000}))
    data[len(data) // 2] ^= 0xFF
    with pytest.raises((tarfile.TarError, zlib.error, EOFError, OSError)):
        with open_tar_stream(io.BytesIO(bytes(data))) as tar:
            for member in tar:
                tar.extractfile(member).read()


def test_an_unknown_compression_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(ValueError, match="compression"):
        with write_tar(tmp_path / "x", compression="bzip2"):
            pass
    assert list(tmp_path.iterdir()) == []
