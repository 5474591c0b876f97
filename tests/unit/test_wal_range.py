"""read_wal_range: a WAL range that is only the padding after a switch (nothing written since the
parent's switch) reads as "no records", anything else without records is still refused.  pg_waldump
is stood in for by a script that prints what PostgreSQL 15's prints in each case."""

from __future__ import annotations

from pathlib import Path

import pytest

from metabackup.sources.postgres import PostgresSourceError, parse_lsn, read_wal_range

SEGMENT = 16 << 20


def fake_waldump(tmp_path: Path, stdout: str, stderr: str, code: int) -> str:
    script = tmp_path / "pg_waldump"
    script.write_text(f"#!/bin/sh\nprintf '%s' '{stdout}'\nprintf '%s' '{stderr}' >&2\nexit {code}\n")
    script.chmod(0o700)
    return str(script)


def test_the_padding_after_a_switch_reads_as_no_records(tmp_path):
    waldump = fake_waldump(tmp_path, "", "pg_waldump: error: could not find a valid record after 0/300A380\n", 1)
    read = read_wal_range(waldump, tmp_path, 1, "0/300A380", parse_lsn("0/4000000"), SEGMENT)
    assert read == {"last_record_lsn": None, "last_commit_time": None}


@pytest.mark.parametrize("start,end", [("0/300A380", "0/5000000"), ("0/300A380", "0/3FFFFFF")])
def test_no_records_over_more_than_that_padding_is_refused(tmp_path, start, end):
    waldump = fake_waldump(tmp_path, "", f"pg_waldump: error: could not find a valid record after {start}\n", 1)
    with pytest.raises(PostgresSourceError, match="does not read back"):
        read_wal_range(waldump, tmp_path, 1, start, parse_lsn(end), SEGMENT)


def test_another_error_is_refused(tmp_path):
    waldump = fake_waldump(tmp_path, "", "pg_waldump: error: incorrect resource manager data checksum\n", 1)
    with pytest.raises(PostgresSourceError, match="checksum"):
        read_wal_range(waldump, tmp_path, 1, "0/300A380", parse_lsn("0/4000000"), SEGMENT)


def test_records_are_read(tmp_path):
    line = ("rmgr: Transaction len (rec/tot): 34/34, tx: 740, lsn: 0/03000060, prev 0/03000028, desc: COMMIT "
            "2026-11-24 03:00:00.123456 UTC\n")
    waldump = fake_waldump(tmp_path, line, "", 0)
    read = read_wal_range(waldump, tmp_path, 1, "0/3000028", parse_lsn("0/4000000"), SEGMENT)
    assert read == {"last_record_lsn": "0/03000060", "last_commit_time": "2026-11-24T03:00:00.123456+00:00"}
