"""The encrypted archive format (metabackup.encryption): round trips, and a tamper matrix.

Every tamper case is read chunk by chunk with small reads, and the test checks the exact plaintext
handed out before the failure: nothing of the damaged chunk (nor of anything after it) is ever
returned.  Most cases use a 64-byte chunk size so a file has several chunks at little cost.
"""

from __future__ import annotations

import base64
import hashlib
import io
import random
import re

import pytest

from metabackup.encryption import (
    _FIXED,
    CHUNK_SIZE,
    MAGIC,
    TAG_SIZE,
    DecryptingReader,
    EncryptingWriter,
    Header,
    TamperedArchive,
    WrongKey,
    drain,
    fingerprint,
    new_data_key,
    unwrap,
    wrap,
)

CS = 64  # the small chunk size of most tests
SPAN = CS + TAG_SIZE
STEM = "3.5.0_OMS_20261124010000"
OTHER_STEM = "3.5.0_DBService_20261124010000"
ORIGIN = "sftp://off/nightly/3.5.0_OMS_20261124010000.tar.gz.enc"
KEY = bytes(range(32))
OTHER_KEY = bytes(range(100, 132))
HEADER_LEN = _FIXED.size + len(STEM.encode()) + 32


def data(size: int, seed: int = 7) -> bytes:
    return random.Random(seed).randbytes(size)


def seal(plain: bytes, key: bytes = KEY, stem: str = STEM, chunk_size: int | None = CS, pieces: int = 0) -> bytes:
    """``plain`` encrypted; written in one call, or in ``pieces``-byte writes."""
    out = io.BytesIO()
    writer = (EncryptingWriter(out, key, stem) if chunk_size is None
              else EncryptingWriter(out, key, stem, chunk_size=chunk_size))
    if pieces:
        for start in range(0, len(plain), pieces):
            writer.write(plain[start:start + pieces])
    else:
        writer.write(plain)
    writer.close()
    return out.getvalue()


def reader(blob: bytes, key: bytes = KEY, stem: str = STEM, expect=None) -> DecryptingReader:
    return DecryptingReader(io.BytesIO(blob), key, stem, ORIGIN, expect=expect)


def read_all(blob: bytes, size: int | None = -1, **kwargs) -> bytes:
    with reader(blob, **kwargs) as plain:
        if size is None or size < 0:
            return plain.read(size)
        parts = []
        while block := plain.read(size):
            assert len(block) <= size
            parts.append(block)
        return b"".join(parts)


def read_until_refused(blob: bytes, error=TamperedArchive, step: int = 7, **kwargs) -> tuple[bytes, Exception]:
    """Read ``blob`` ``step`` bytes at a time until it is refused: (plaintext handed out before, error)."""
    got = bytearray()
    with pytest.raises(error) as info:
        plain = reader(blob, **kwargs)
        while block := plain.read(step):
            got += block
    return bytes(got), info.value


def chunk_at(index: int) -> int:
    return HEADER_LEN + index * SPAN


def chunks(blob: bytes) -> list[bytes]:
    body = blob[HEADER_LEN:]
    return [body[i:i + SPAN] for i in range(0, len(body), SPAN)]


def flip(blob: bytes, offset: int, bit: int = 0) -> bytes:
    changed = bytearray(blob)
    changed[offset] ^= 1 << bit
    return bytes(changed)


def n_chunks(size: int, chunk_size: int = CS) -> int:
    return max(1, -(-size // chunk_size))


# ---------------------------------------------------------------------------------------------
# Round trips
# ---------------------------------------------------------------------------------------------
SIZES = [0, 1, CS - 1, CS, CS + 1, 2 * CS, 5 * CS + 10, 7 * CS]


@pytest.mark.parametrize("size", SIZES)
def test_round_trip(size):
    plain = data(size)
    blob = seal(plain)
    assert blob.startswith(MAGIC)
    assert len(blob) == HEADER_LEN + size + TAG_SIZE * n_chunks(size)
    assert read_all(blob) == plain
    with reader(blob, expect=(hashlib.sha256(plain).hexdigest(), size)) as plain_reader:
        assert plain_reader.read() == plain
        assert plain_reader.read() == b"" and plain_reader.read(10) == b""
        assert (plain_reader.size, plain_reader.digest.hexdigest()) == (size, hashlib.sha256(plain).hexdigest())


@pytest.mark.parametrize("size", [0, 1, CS, CS + 1, 5 * CS + 10])
@pytest.mark.parametrize("pieces", [1, 5, CS - 1, CS, CS + 1, 1000])
def test_writes_of_any_size_give_the_same_layout(size, pieces):
    plain = data(size)
    blob = seal(plain, pieces=pieces)
    assert len(blob) == HEADER_LEN + size + TAG_SIZE * n_chunks(size)
    assert read_all(blob) == plain


def test_no_write_at_all_is_the_empty_archive():
    out = io.BytesIO()
    writer = EncryptingWriter(out, KEY, STEM, chunk_size=CS)
    writer.close()
    writer.close()  # a second close seals nothing more
    assert len(out.getvalue()) == HEADER_LEN + TAG_SIZE
    assert read_all(out.getvalue()) == b""


def test_the_last_chunk_is_full_when_the_plaintext_fills_whole_chunks():
    blob = seal(data(3 * CS))
    assert [len(chunk) for chunk in chunks(blob)] == [SPAN, SPAN, SPAN]
    blob = seal(data(3 * CS + 1))
    assert [len(chunk) for chunk in chunks(blob)] == [SPAN, SPAN, SPAN, 1 + TAG_SIZE]


@pytest.mark.parametrize("size", [1, 2, 7, CS - 1, CS, CS + 1, 3 * CS, 10_000])
def test_read_n(size):
    plain = data(5 * CS + 10)
    assert read_all(seal(plain), size) == plain


@pytest.mark.parametrize("size", [-1, None])
def test_read_all_at_once(size):
    plain = data(5 * CS + 10)
    assert read_all(seal(plain), size) == plain


def test_read_some_then_the_rest():
    plain = data(5 * CS + 10)
    with reader(seal(plain)) as plain_reader:
        head = plain_reader.read(3) + plain_reader.read(CS)
        assert plain_reader.readable()
        assert head + plain_reader.read(-1) == plain
        assert plain_reader.read(-1) == b"" and plain_reader.read(1) == b""


def test_plaintext_is_not_in_the_file():
    plain = b"secret-password-in-a-config-file " * 8
    blob = seal(plain)
    assert b"secret-password" not in blob and STEM.encode() in blob


def test_the_same_plaintext_encrypts_differently_each_time():
    plain = data(3 * CS)
    assert seal(plain) != seal(plain)


def test_default_chunk_size_three_mebibytes():
    plain = data(3 * CHUNK_SIZE + 12345, seed=3)
    blob = seal(plain, chunk_size=None, pieces=100_003)
    header = Header.read(io.BytesIO(blob), ORIGIN)
    assert header.chunk_size == CHUNK_SIZE
    assert len(blob) == HEADER_LEN + len(plain) + 4 * TAG_SIZE
    assert read_all(blob) == plain
    assert read_all(blob, 65536) == plain
    digest = (hashlib.sha256(plain).hexdigest(), len(plain))
    with reader(blob, expect=digest) as plain_reader:
        drain(plain_reader)
        assert plain_reader.size == len(plain)


def test_the_reader_closes_the_raw_file():
    raw = io.BytesIO(seal(b"x"))
    with DecryptingReader(raw, KEY, STEM, ORIGIN) as plain_reader:
        assert plain_reader.read() == b"x"
    assert raw.closed


def test_the_writer_leaves_the_raw_file_open():
    raw = io.BytesIO()
    writer = EncryptingWriter(raw, KEY, STEM, chunk_size=CS)
    writer.write(b"abc")
    writer.flush()
    writer.close()
    assert not raw.closed


# ---------------------------------------------------------------------------------------------
# Plaintext check against the manifest (expect=)
# ---------------------------------------------------------------------------------------------
def test_expect_matches():
    plain = data(5 * CS + 10)
    assert read_all(seal(plain), 7, expect=(hashlib.sha256(plain).hexdigest(), len(plain))) == plain


@pytest.mark.parametrize("what", ["sha256", "size", "both"])
@pytest.mark.parametrize("size", [0, CS, 5 * CS + 10])
def test_expect_mismatch_is_refused_before_the_last_chunk_is_handed_out(what, size):
    plain = data(size)
    sha, length = hashlib.sha256(plain).hexdigest(), len(plain)
    expect = {"sha256": (hashlib.sha256(b"other").hexdigest(), length), "size": (sha, length + 1),
              "both": (hashlib.sha256(b"other").hexdigest(), length + 1)}[what]
    got, error = read_until_refused(seal(plain), expect=expect)
    assert got == plain[:(n_chunks(size) - 1) * CS]
    assert ORIGIN in str(error) and "the manifest says" in str(error)
    assert (sha in str(error)) if what == "sha256" else (f"{length} bytes" in str(error))


def test_without_an_expected_digest_only_the_size_is_checked():
    """The tags prove every byte; the SHA-256 (as slow as decryption) is checked only when asked for."""
    plain = data(2 * CS + 3)
    assert read_all(seal(plain), 7, expect=(None, len(plain))) == plain
    with pytest.raises(TamperedArchive, match="the manifest says"):
        read_all(seal(plain), 7, expect=(None, len(plain) + 1))


def test_expect_mismatch_with_read_all():
    plain = data(2 * CS)
    with pytest.raises(TamperedArchive, match="the manifest says"):
        read_all(seal(plain), expect=(hashlib.sha256(plain).hexdigest(), len(plain) - 1))


# ---------------------------------------------------------------------------------------------
# The tamper matrix
# ---------------------------------------------------------------------------------------------
PLAIN = data(5 * CS + 10)          # chunks 0-4 full, chunk 5 (the last) holds 10 bytes
EXACT = data(4 * CS, seed=11)      # chunks 0-3 full, chunk 3 is the last
BLOB = seal(PLAIN)
EXACT_BLOB = seal(EXACT)
LAST = 5


def test_the_fixtures_have_the_layout_the_matrix_assumes():
    assert [len(chunk) for chunk in chunks(BLOB)] == [SPAN] * 5 + [10 + TAG_SIZE]
    assert [len(chunk) for chunk in chunks(EXACT_BLOB)] == [SPAN] * 4
    assert read_all(BLOB) == PLAIN and read_all(EXACT_BLOB) == EXACT


@pytest.mark.parametrize("index", [0, 1, 3, LAST])
@pytest.mark.parametrize("where", ["first byte", "middle", "last ciphertext byte"])
def test_a_flipped_bit_in_a_chunks_ciphertext(index, where):
    size = len(chunks(BLOB)[index]) - TAG_SIZE
    offset = chunk_at(index) + {"first byte": 0, "middle": size // 2, "last ciphertext byte": size - 1}[where]
    got, error = read_until_refused(flip(BLOB, offset, bit=5))
    assert got == PLAIN[:index * CS]
    assert f"chunk {index} failed authentication" in str(error) and ORIGIN in str(error)


@pytest.mark.parametrize("index", [0, 2, LAST])
@pytest.mark.parametrize("tag_byte", [0, TAG_SIZE - 1])
def test_a_flipped_bit_in_a_tag(index, tag_byte):
    end = chunk_at(index) + len(chunks(BLOB)[index])
    got, error = read_until_refused(flip(BLOB, end - TAG_SIZE + tag_byte, bit=0))
    assert got == PLAIN[:index * CS]
    assert f"chunk {index} failed authentication" in str(error)


NAME_AT = _FIXED.size
HEADER_FIELDS = {  # field: (offset, bit, message)
    "magic": (0, 0, "not an encrypted metabackup archive"),
    "magic last byte": (7, 3, "not an encrypted metabackup archive"),
    "version": (8, 1, "format version 3"),
    "chunk size low bit": (12, 0, "does not match the set's data key"),
    "chunk size high bit": (9, 7, "the header is damaged"),
    "nonce prefix first": (13, 0, "does not match the set's data key"),
    "nonce prefix last": (19, 6, "does not match the set's data key"),
    "set name length": (21, 0, ""),
    "set name first": (NAME_AT, 0, "does not match the set's data key"),
    "set name last": (NAME_AT + len(STEM) - 1, 1, "does not match the set's data key"),
    "commitment first": (HEADER_LEN - 32, 0, "does not match the set's data key"),
    "commitment last": (HEADER_LEN - 1, 7, "does not match the set's data key"),
}


@pytest.mark.parametrize("field", list(HEADER_FIELDS))
def test_a_flipped_bit_in_the_header(field):
    offset, bit, message = HEADER_FIELDS[field]
    got, error = read_until_refused(flip(BLOB, offset, bit))
    assert got == b""
    assert message in str(error) and ORIGIN in str(error)


def test_every_bit_of_the_header_is_protected():
    for offset in range(HEADER_LEN):
        for bit in range(8):
            with pytest.raises(TamperedArchive):
                read_all(flip(BLOB, offset, bit))


def test_a_header_edited_back_to_valid_values_still_fails_on_the_chunks():
    """A header whose commitment is recomputed with the right key (an attacker with the data key)
    but another chunk size: the chunks' associated data differ, so chunk 0 fails."""
    import hmac

    header = Header.read(io.BytesIO(BLOB), ORIGIN)
    body = bytearray(header.raw[:-32])
    body[12] ^= 1  # chunk size 64 -> 65
    forged = bytes(body) + hmac.new(KEY, b"metabackup header v1\0" + bytes(body), hashlib.sha256).digest()
    got, error = read_until_refused(forged + BLOB[HEADER_LEN:])
    assert got == b"" and "chunk 0 failed authentication" in str(error)


@pytest.mark.parametrize("kept", [1, 2, 4])
def test_truncated_at_a_chunk_boundary(kept):
    """The new last chunk was sealed as "not last": it is refused, nothing of it handed out."""
    got, error = read_until_refused(BLOB[:chunk_at(kept)])
    assert got == PLAIN[:(kept - 1) * CS]
    assert f"chunk {kept - 1} failed authentication" in str(error)


def test_truncated_before_the_real_last_chunk_of_a_whole_chunk_file():
    got, error = read_until_refused(EXACT_BLOB[:chunk_at(3)])
    assert got == EXACT[:2 * CS] and "chunk 2 failed authentication" in str(error)


@pytest.mark.parametrize("cut", [1, TAG_SIZE, SPAN // 2, SPAN - 1])
@pytest.mark.parametrize("index", [0, 2, LAST])
def test_truncated_mid_chunk(index, cut):
    """``cut`` bytes of chunk ``index`` are kept (for the short last chunk: at most all but one)."""
    cut = min(cut, len(chunks(BLOB)[index]) - 1)
    got, error = read_until_refused(BLOB[:chunk_at(index) + cut])
    assert got == PLAIN[:index * CS]
    assert f"chunk {index}" in str(error) and ("truncated inside" in str(error) or "failed authentication" in str(error))


def test_last_byte_cut_off():
    got, _ = read_until_refused(BLOB[:-1])
    assert got == PLAIN[:LAST * CS]
    got, _ = read_until_refused(EXACT_BLOB[:-1])
    assert got == EXACT[:3 * CS]


def test_truncated_right_after_the_header():
    got, error = read_until_refused(BLOB[:HEADER_LEN])
    assert got == b"" and "ends after its header" in str(error)


@pytest.mark.parametrize("keep", [0, 1, 8, 12, NAME_AT + 3, HEADER_LEN - 1])
def test_truncated_inside_the_header(keep):
    got, error = read_until_refused(BLOB[:keep])
    assert got == b"" and ("no header" in str(error) or "cut short" in str(error))


@pytest.mark.parametrize("a,b", [(0, 1), (1, 2), (1, 4), (3, 4)])
def test_two_chunks_swapped(a, b):
    parts = chunks(BLOB)
    parts[a], parts[b] = parts[b], parts[a]
    got, error = read_until_refused(BLOB[:HEADER_LEN] + b"".join(parts))
    assert got == PLAIN[:a * CS] and f"chunk {a} failed authentication" in str(error)


def test_the_short_last_chunk_moved_forward():
    parts = chunks(BLOB)
    parts[4], parts[5] = parts[5], parts[4]
    got, _ = read_until_refused(BLOB[:HEADER_LEN] + b"".join(parts))
    assert got == PLAIN[:4 * CS]


@pytest.mark.parametrize("copied", [0, 1, 2])
def test_a_copy_of_another_chunk_appended(copied):
    got, _ = read_until_refused(BLOB + chunks(BLOB)[copied])
    assert got == PLAIN[:LAST * CS]  # the real last chunk's bytes are not handed out
    got, _ = read_until_refused(EXACT_BLOB + chunks(EXACT_BLOB)[copied])
    assert got == EXACT[:3 * CS]


@pytest.mark.parametrize("extra", [1, TAG_SIZE, SPAN, 3 * SPAN + 5])
def test_random_bytes_appended(extra):
    junk = data(extra, seed=99)
    got, _ = read_until_refused(BLOB + junk)
    assert got == PLAIN[:LAST * CS]
    got, _ = read_until_refused(EXACT_BLOB + junk)
    assert got == EXACT[:3 * CS]


def test_the_last_chunk_duplicated():
    got, error = read_until_refused(EXACT_BLOB + chunks(EXACT_BLOB)[-1])
    assert got == EXACT[:3 * CS] and "chunk 3 failed authentication" in str(error)
    got, _ = read_until_refused(BLOB + chunks(BLOB)[-1])
    assert got == PLAIN[:LAST * CS]


def test_a_chunk_dropped_from_the_middle():
    parts = chunks(BLOB)
    del parts[2]
    got, error = read_until_refused(BLOB[:HEADER_LEN] + b"".join(parts))
    assert got == PLAIN[:2 * CS] and "chunk 2 failed authentication" in str(error)


def test_the_header_of_another_file_with_the_same_key_and_set():
    other = seal(data(5 * CS + 10, seed=1))
    assert other[:HEADER_LEN] != BLOB[:HEADER_LEN]  # another random nonce prefix, another commitment
    got, error = read_until_refused(other[:HEADER_LEN] + BLOB[HEADER_LEN:])
    assert got == b"" and "chunk 0 failed authentication" in str(error)


def test_a_chunk_from_another_file_with_the_same_key_and_set():
    other = seal(data(5 * CS + 10, seed=1))
    parts = chunks(BLOB)
    parts[2] = chunks(other)[2]
    got, _ = read_until_refused(BLOB[:HEADER_LEN] + b"".join(parts))
    assert got == PLAIN[:2 * CS]


def test_decrypted_with_another_data_key():
    """The header's key commitment tells a wrong data key before any chunk is decrypted."""
    got, error = read_until_refused(BLOB, key=OTHER_KEY)
    assert got == b""
    assert "does not match the set's data key" in str(error) and ORIGIN in str(error)


def test_a_file_made_for_another_set():
    foreign = seal(PLAIN, stem=OTHER_STEM)
    got, error = read_until_refused(foreign, stem=STEM)
    assert got == b""
    assert f"made for set {OTHER_STEM}, not {STEM}" in str(error)


def test_a_file_renamed_to_another_set_by_editing_its_header():
    """The set name edited in the header (same length): the commitment no longer matches."""
    renamed = BLOB.replace(b"_OMS_", b"_OMX_", 1)
    got, error = read_until_refused(renamed, stem="3.5.0_OMX_20261124010000")
    assert got == b"" and "does not match the set's data key" in str(error)


def test_empty_and_garbage_files():
    for blob in (b"", b"PK\x03\x04 a zip file", b"\x1f\x8b\x08" + data(200)):
        got, error = read_until_refused(blob)
        assert got == b"" and "not an encrypted metabackup archive" in str(error)


def test_errors_are_metabackup_errors():
    from metabackup.encryption import EncryptionError, KeyUnavailable
    from metabackup.errors import MetabackupError

    assert issubclass(TamperedArchive, EncryptionError) and issubclass(WrongKey, EncryptionError)
    assert issubclass(KeyUnavailable, EncryptionError) and issubclass(EncryptionError, MetabackupError)


# Once a reader refused an archive, every later read is refused too: a caller that retries must not
# get the plaintext of a chunk that authenticates only because the reader's position moved on (an
# appended chunk makes the real last chunk look "last" on a second try).
def test_a_reader_that_refused_an_archive_refuses_every_later_read():
    extended = EXACT_BLOB + chunks(EXACT_BLOB)[0]
    plain_reader = reader(extended, expect=(hashlib.sha256(EXACT).hexdigest(), len(EXACT)))
    got = bytearray()
    with pytest.raises(TamperedArchive):
        while block := plain_reader.read(7):
            got += block
    assert got == EXACT[:3 * CS]
    with pytest.raises(TamperedArchive):
        plain_reader.read(7)  # BUG: returns the real last chunk's plaintext instead


# ---------------------------------------------------------------------------------------------
# Wrapping the data key
# ---------------------------------------------------------------------------------------------
KEK = bytes(range(200, 232))
OTHER_KEK = bytes(range(1, 33))


def test_wrap_round_trip():
    data_key = new_data_key()
    wrapped = wrap(KEK, "backup_key", data_key, STEM)
    base64.b64decode(wrapped, validate=True)
    assert unwrap(KEK, "backup_key", wrapped, STEM) == data_key
    assert wrap(KEK, "backup_key", data_key, STEM) != wrapped  # a fresh nonce each time
    assert base64.b64encode(data_key).decode() not in wrapped


def test_unwrap_with_a_wrong_kek():
    wrapped = wrap(KEK, "backup_key", new_data_key(), STEM)
    with pytest.raises(WrongKey, match=f"set {STEM}: .*not sealed for this set under key 'backup_key'"):
        unwrap(OTHER_KEK, "backup_key", wrapped, STEM)


def test_unwrap_a_wrapped_key_of_another_set():
    wrapped = wrap(KEK, "backup_key", new_data_key(), OTHER_STEM)
    with pytest.raises(WrongKey, match="copied from another set"):
        unwrap(KEK, "backup_key", wrapped, STEM)


def test_unwrap_under_another_key_id():
    wrapped = wrap(KEK, "backup_key", new_data_key(), STEM)
    with pytest.raises(WrongKey, match="'other_key'"):
        unwrap(KEK, "other_key", wrapped, STEM)


@pytest.mark.parametrize("wrapped", ["not base64!", "abc", "é" * 8, "Zm9v\nYmFy"])
def test_unwrap_non_base64(wrapped):
    with pytest.raises(WrongKey, match="not base64"):
        unwrap(KEK, "backup_key", wrapped, STEM)


@pytest.mark.parametrize("size", [0, 16, 59, 61, 100])
def test_unwrap_wrong_length(size):
    with pytest.raises(WrongKey, match=f"has {size} bytes, not 60"):
        unwrap(KEK, "backup_key", base64.b64encode(bytes(size)).decode(), STEM)


def test_unwrap_an_edited_wrapped_key():
    raw = bytearray(base64.b64decode(wrap(KEK, "backup_key", new_data_key(), STEM)))
    raw[20] ^= 1
    with pytest.raises(WrongKey):
        unwrap(KEK, "backup_key", base64.b64encode(bytes(raw)).decode(), STEM)


def test_fingerprint():
    first, second = fingerprint(KEK), fingerprint(OTHER_KEK)
    assert re.fullmatch(r"[0-9a-f]{32}", first) and re.fullmatch(r"[0-9a-f]{32}", second)
    assert first != second and fingerprint(KEK) == first
    assert first not in KEK.hex() and KEK.hex()[:32] != first
    assert len({fingerprint(new_data_key()) for _ in range(50)}) == 50


def test_new_data_keys_are_random_32_bytes():
    keys = {new_data_key() for _ in range(20)}
    assert len(keys) == 20 and all(len(key) == 32 for key in keys)
