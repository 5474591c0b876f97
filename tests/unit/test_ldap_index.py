"""The ldap source's fast LDIF entry writer and per-entry digest index (format version 2): the
same bytes and digests as before, a round trip, and every kind of tampering refused."""

from __future__ import annotations

import io
import json
import random

import ldif
import pytest

from metabackup.sources.ldap.index import (
    IndexRefused, IndexWriter, delta_header, read_index, read_legacy, whole_header,
)
from metabackup.sources.ldap.records import attribute_digests, entry_digests, entry_ldif

VALUE_PARTS = [b"a", b" ", b":", b"<", b"\x00", b"\n", b"\r", "é".encode(), b"x" * 30, b"=", b",", b"\x80", b"Z"]


def random_entry(r: random.Random) -> tuple[str, dict[str, list[bytes]]]:
    entry = {}
    for _ in range(r.randint(0, 6)):
        name = r.choice(["cn", "objectClass", "userPassword", "jpegPhoto", "description;lang-en", "Cn", "cnä",
                         "x-Long-Attribute-Name-" + "q" * r.randint(0, 80), "entryCSN", "createTimestamp"])
        entry[name] = [b"".join(r.choice(VALUE_PARTS) for _ in range(r.randint(0, 12))) for _ in range(r.randint(1, 3))]
    dn = r.choice(["uid=a,dc=x", " lead", "cn=café,dc=x", "cn=" + "y" * r.randint(60, 200), "", "cn=a:b"])
    return dn, entry


def test_entry_ldif_writes_what_python_ldap_writes_and_the_digests_are_the_same():
    r = random.Random(7)
    for _ in range(5000):
        dn, entry = random_entry(r)
        text = io.StringIO()
        ldif.LDIFWriter(text, cols=76).unparse(dn, entry)
        assert entry_ldif(dn, entry) == text.getvalue().encode(), (dn, entry)
        attrs, digests = entry_digests(entry)
        assert ";".join(f"{a}={digests[6 * i:6 * i + 6].hex()}" for i, a in enumerate(attrs)) == attribute_digests(entry)


ROWS = [
    ("dc=hadoop,dc=com", ("dc", "o", "objectClass"), bytes(range(18))),
    ("uid=user00001,ou=People,dc=hadoop,dc=com", ("cn", "mail", "uid"), bytes(range(1, 19))),
    ("uid=user00002,ou=People,dc=hadoop,dc=com", ("cn", "mail", "uid"), bytes(range(2, 20))),
    ('cn=café \\"x\\"\\, y,ou=People,dc=hadoop,dc=com', ("cn",), b"\xff" * 6),
    ("cn=empty,dc=hadoop,dc=com", (), b""),
]


def make(header, rows=ROWS, deleted=()) -> tuple[bytes, str]:
    out = io.BytesIO()
    writer = IndexWriter(out, header)
    for row in rows:
        writer.entry(*row)
    for dn in deleted:
        writer.deleted(dn)
    sha = writer.close()
    return out.getvalue(), sha


def test_whole_index_round_trip():
    data, sha = make(whole_header())
    index = read_index(io.BytesIO(data), "test")
    assert index.type == "whole" and index.sha256 == sha
    assert list(index.entries.values()) == ROWS
    assert "uid=user00001,ou=people,dc=hadoop,dc=com" in index.entries
    assert data.count(b'["a",') == 4, "attribute lists are written once each"


def test_delta_index_round_trip_with_its_reference():
    header = delta_header("3.1.0_LdapServer_20261124030000", "a" * 64, "b" * 64, 1234)
    data, sha = make(header, ROWS[1:3], deleted=["uid=gone,ou=People,dc=hadoop,dc=com"])
    index = read_index(io.BytesIO(data), "test")
    assert index.type == "delta" and index.sha256 == sha
    assert index.header["base"] == {"set": "3.1.0_LdapServer_20261124030000", "sha256": "a" * 64}
    assert index.header["whole"] == {"sha256": "b" * 64, "entries": 1234}
    assert list(index.entries.values()) == ROWS[1:3]
    assert index.deleted == {"uid=gone,ou=people,dc=hadoop,dc=com": "uid=gone,ou=People,dc=hadoop,dc=com"}


def lines(data: bytes) -> list[bytes]:
    return data.splitlines(keepends=True)


def tampered_variants() -> dict[str, bytes]:
    data, _ = make(whole_header())
    original = lines(data)
    entry_at = next(i for i, line in enumerate(original) if line.startswith(b'["e"'))
    header = json.loads(original[0])

    def replace(i, line):
        copy = list(original)
        copy[i] = line
        return b"".join(copy)

    return {
        "truncated (no end line)": b"".join(original[:-1]),
        "cut inside a line": data[:-5],
        "wrong end count": replace(len(original) - 1, b'["end",4,0]\n'),
        "data after the end": data + original[entry_at],
        "an entry listed twice": b"".join(original[:-1] + [original[entry_at], original[-1]]),
        "digests too short": replace(entry_at, original[entry_at][:-5] + b'"]\n'),
        "digests not hex": replace(entry_at, original[entry_at][:-4] + b'zz"]\n'),
        "undefined attribute list": replace(entry_at, original[entry_at].replace(b",0,", b",9,", 1)),
        "not a DN": replace(entry_at, b'["e","not a dn at all ,,=",0,"' + b"00" * 18 + b'"]\n'),
        "not JSON": replace(entry_at, b"garbage\n"),
        "unknown line": replace(entry_at, b'["x",1]\n'),
        "deletion in a whole index": replace(entry_at, b'["d","cn=x,dc=y"]\n'),
        "attribute list renumbered": replace(1, original[1].replace(b'["a",0,', b'["a",5,', 1)),
        "attribute named twice": replace(1, b'["a",0,["dc","DC","o"]]\n'),
        "bad attribute name": replace(1, b'["a",0,["dc","o","x y"]]\n'),
        "other format": replace(0, json.dumps({**header, "format": "other"}).encode() + b"\n"),
        "other version": replace(0, json.dumps({**header, "version": 3}).encode() + b"\n"),
        "extra header key": replace(0, json.dumps({**header, "x": 1}).encode() + b"\n"),
        "delta without reference": replace(0, json.dumps({**header, "type": "delta"}).encode() + b"\n"),
        "delta with a bad reference": replace(0, json.dumps({**header, **delta_header("../x y", "0" * 64, "1" * 64, 1)})
                                              .encode() + b"\n"),
        "overlong line": replace(entry_at, b'["e","cn=' + b"x" * (1 << 20) + b',dc=y",0,""]\n'),
        "empty": b"",
    }


@pytest.mark.parametrize("name", list(tampered_variants()))
def test_a_tampered_index_is_refused(name):
    data = tampered_variants()[name]
    with pytest.raises(IndexRefused, match="^test"):
        read_index(io.BytesIO(data), "test")


def test_legacy_index_is_read_and_checked():
    entries = {"uid=a,dc=x": ["uid=a,dc=x", "cn=0123456789ab;objectClass=ba9876543210"], "dc=x": ["dc=x", ""]}
    index = read_legacy(json.dumps({"entries": entries}).encode(), "old")
    assert index.type == "whole"
    assert index.entries["uid=a,dc=x"] == ("uid=a,dc=x", ("cn", "objectClass"), bytes.fromhex("0123456789abba9876543210"))
    bad = [
        {"entries": {"uid=b,dc=x": ["uid=a,dc=x", ""]}},          # filed under another DN
        {"entries": {"uid=a,dc=x": ["uid=a,dc=x", "cn=12"]}},      # short digest
        {"entries": {"uid=a,dc=x": ["uid=a,dc=x", "cn=0123456789ab;CN=0123456789ab"]}},
        {"entries": [1, 2]},
        {"entries": {"uid=a,dc=x": "x"}},
    ]
    for document in bad:
        with pytest.raises(IndexRefused, match="^old"):
            read_legacy(json.dumps(document).encode(), "old")
    with pytest.raises(IndexRefused, match="not JSON"):
        read_legacy(b"{", "old")


def test_ldapsearch_output_is_read_back_exactly():
    from metabackup.sources.ldap.ldapsearch import _entries

    text = (b"dn: uid=a,dc=x\nobjectClass: top\nobjectClass: person\nsn:: IGxlYWQ=\nentryDN: uid=a,dc=x\n"
            b"description:\ncn: a b\nhasSubordinates: FALSE\n\n# refldap://elsewhere/dc=y\n\n\ndn:: Y249w6k=\ncn: x\n")
    assert _entries(text) == [
        ("uid=a,dc=x", {"objectClass": [b"top", b"person"], "sn": [b" lead"], "description": [b""], "cn": [b"a b"]},
         b"dn: uid=a,dc=x\nobjectClass: top\nobjectClass: person\nsn:: IGxlYWQ=\ndescription:\ncn: a b\n\n"),
        ("cn=é", {"cn": [b"x"]}, b"dn:: Y249w6k=\ncn: x\n\n"),
    ]
    from metabackup.sources.ldap.client import LdapSourceError

    for bad in (b"cn: no dn first\n", b"dn: cn=x\ncn:< file:///etc/passwd\n", b"dn: cn=x\ncn:: !!!*\n"):
        with pytest.raises(LdapSourceError):
            _entries(bad)
