"""PostgreSQL incrementals never outgrow a full: the size rule of the decision (a pure function of
the WAL since the parent, the chain's full's sizes and ``max_incremental_fraction``), the full's
sizes read from its manifest, the option's validation, and the engine's blocker wiring (no server)."""

from __future__ import annotations

import dataclasses

import pytest
import yaml
from chains import catalog, full, inc, stem

from metabackup.sources.oms import OmsSource, component_view
from metabackup.sources.postgres import (
    DEFAULT_MAX_INCREMENTAL_FRACTION, WAL_COMPRESSION_BOUND, PostgresSource, counted_full_bytes, full_database_bytes,
    full_stored_bytes, wal_outgrows, wal_size_blocker,
)
from metabackup.spec import SpecError, load_spec

MiB = 2**20


# ---------------------------------------------------------------------------------------------
# The decision table
# ---------------------------------------------------------------------------------------------
# (WAL since the parent, the full uncompressed, the full compressed, fraction, a full?)
TABLE = [
    (0, 1000 * MiB, 600 * MiB, 0.5, False),  # nothing written since the parent
    (10 * MiB, 1000 * MiB, 600 * MiB, 0.5, False),  # a clustered change: 1 % of the full
    (500 * MiB, 1000 * MiB, 600 * MiB, 0.5, False),  # exactly the fraction: still an incremental
    (500 * MiB + 1, 1000 * MiB, 600 * MiB, 0.5, True),  # just over it: a full
    (600 * MiB, 1000 * MiB, 600 * MiB, 0.5, True),  # a scattered update: full-page images of most pages
    (1200 * MiB, 1000 * MiB, 600 * MiB, 1.0, True),  # more WAL than the whole full, at the largest fraction
    (1000 * MiB, 1000 * MiB, 600 * MiB, 1.0, False),
    (20 * MiB, 1000 * MiB, 600 * MiB, 0.01, True),  # a strict task
    # data that compresses far better than WAL (pgbench: 547 MiB in a 30.6 MiB archive): the full
    # counts as 4x its archive, 122.4 MiB
    (61 * MiB, 547 * MiB, 30.6 * MiB, 0.5, False),
    (62 * MiB, 547 * MiB, 30.6 * MiB, 0.5, True),
    (376 * MiB, 547 * MiB, 30.6 * MiB, 0.5, True),  # the benchmark's scattered 1 % update
    (36 * MiB, 547 * MiB, 30.6 * MiB, 0.5, False),  # the same with wal_compression = lz4
    (12 * MiB, 547 * MiB, 30.6 * MiB, 0.5, False),  # the benchmark's clustered 1 % update
    (30 * MiB, None, 10 * MiB, 0.5, True),  # only the compressed size known: 4x it
    (10**12, None, None, 0.5, False),  # the full's size is unknown: the rule does not apply
    (10, 0, 0, 0.5, False),  # nor with nonsensical sizes
]


@pytest.mark.parametrize(("wal", "raw", "stored", "fraction", "blocked"), TABLE,
                         ids=["nothing", "clustered", "at-the-fraction", "just-over", "scattered", "over-at-1", "at-1",
                              "strict", "compressible-under", "compressible-over", "bench-scattered", "bench-lz4",
                              "bench-clustered", "stored-only", "unknown-full", "zero-full"])
def test_the_size_rule_takes_a_full_only_above_the_fraction(wal, raw, stored, fraction, blocked):
    stored = int(stored) if stored is not None else None
    counted = counted_full_bytes(raw, stored)
    assert wal_outgrows(wal, counted, fraction) is blocked
    reason = wal_size_blocker(wal, raw, stored, fraction, stem(0, source="DBService"))
    assert (reason is not None) is blocked
    if blocked:
        assert reason.startswith("an incremental would outgrow a full")
        assert f"max_incremental_fraction {fraction:g}" in reason and stem(0, source="DBService") in reason
        assert f"{wal / MiB:.1f} MiB of WAL" in reason and f"({counted / MiB:.1f} MiB: " in reason
        assert f"are {wal / counted:.2f} of the chain's full" in reason
        if raw and counted == raw:
            assert "MiB: uncompressed)" in reason
        else:
            assert f"counted as {WAL_COMPRESSION_BOUND}x its {stored / MiB:.1f} MiB compressed" in reason


def test_a_full_counts_uncompressed_but_at_most_four_times_its_archive():
    assert WAL_COMPRESSION_BOUND == 4
    assert counted_full_bytes(100, 50) == 100  # compresses 2x: its uncompressed size
    assert counted_full_bytes(1000, 50) == 200  # compresses 20x: 4x its archive
    assert counted_full_bytes(None, 50) == 200 and counted_full_bytes(100, None) == 100
    assert counted_full_bytes(None, None) is None and counted_full_bytes(0, 0) is None


SEG = 16 * MiB


@pytest.mark.parametrize(("end", "current", "written"), [
    (3 * SEG + 0x100, 3 * SEG + 0x100, 0),  # nothing since the set
    (3 * SEG + 0x100, 4 * SEG, 0),  # the set's switch: the rest of its segment is padding
    (3 * SEG + 0x100, 4 * SEG + 5 * MiB, 5 * MiB),  # WAL after the switch
    (3 * SEG + 0x100, 3 * SEG + 0x100 + 4096, 4096),  # no switch seen yet: what follows the end counts
    (4 * SEG, 4 * SEG + 7 * MiB, 7 * MiB),  # a set ending on a segment boundary: no padding
    (3 * SEG + 0x100, 3 * SEG, 0),  # never negative
])
def test_the_wal_since_a_set_does_not_count_the_padding_of_its_last_segment(end, current, written):
    from metabackup.sources.postgres import wal_written_since

    assert wal_written_since(end, current, SEG) == written


@pytest.mark.parametrize(("at_end", "now", "written"), [
    (1000, 1000 + 3 * MiB, 3 * MiB),  # segments switched by archive_timeout: their padding is no WAL
    (1000, 1000 + 30 * MiB, 20 * MiB),  # never more than the LSNs say
    (5000, 1000, 20 * MiB),  # the statistics were reset (or lost in a crash): the LSNs alone
    (None, 1000, 20 * MiB), (1000, None, 20 * MiB),  # a set or a server without them
])
def test_the_servers_wal_statistics_leave_out_later_padding(at_end, now, written):
    from metabackup.sources.postgres import wal_written_since

    assert wal_written_since(3 * SEG + 0x100, 5 * SEG + 4 * MiB, SEG, at_end, now) == written


def test_the_default_fraction_is_a_half():
    assert DEFAULT_MAX_INCREMENTAL_FRACTION == 0.5


# ---------------------------------------------------------------------------------------------
# A full's size, from its manifest
# ---------------------------------------------------------------------------------------------
SEGMENT = 16 * MiB


def pg_full(t: int = 0, content: dict | None = None, bridge_segments: int = 0, kind: str = "postgres"):
    position = {"timeline": 1, "start_lsn": "0/2000028", "end_lsn": "0/2000100", "segment_size": SEGMENT,
                "system_identifier": "7", "server_version": 150000}
    if bridge_segments:
        position["bridge"] = {"start_lsn": "0/1000000", "end_lsn": "0/2000100",
                              "segments": [f"0000000100000000000000{n:02X}" for n in range(bridge_segments)]}
    manifest = full(t, source="DBService")
    if kind == "oms":
        return dataclasses.replace(manifest, kind="oms", position={"postgres": position, "files": {}},
                                   content={"postgres": content or {}, "files": {"entries": 3}})
    return dataclasses.replace(manifest, kind="postgres", position=position, content=content or {})


def test_a_full_counts_its_base_bytes():
    full_set = pg_full(content={"members": 3, "bytes": 900 * MiB, "base_bytes": 500 * MiB}, bridge_segments=25)
    assert full_database_bytes(full_set) == 500 * MiB
    # its archive in proportion: the bridge WAL counts out
    assert full_stored_bytes(full_set) == full_set.archive.size * 500 // 900
    assert full_stored_bytes(pg_full(content={"members": 3, "bytes": 900, "base_bytes": 900})) == full(0).archive.size


def test_an_encrypted_full_counts_its_plaintext_archive():
    from metabackup.manifest import EncryptionInfo

    sealed = dataclasses.replace(pg_full(content={"bytes": 900, "base_bytes": 900}), encryption=EncryptionInfo(
        algorithm="AES-256-GCM", chunk_size=1 << 20, key_id="k", key_fingerprint="f" * 64, wrapped_key="w",
        plaintext_sha256="0" * 64, plaintext_size=777))
    assert full_stored_bytes(sealed) == 777


def test_an_older_full_counts_its_members_without_the_bridge_segments():
    assert full_database_bytes(pg_full(content={"members": 6, "bytes": 100 * MiB}, bridge_segments=3)) == 52 * MiB
    assert full_database_bytes(pg_full(content={"members": 3, "bytes": 100 * MiB})) == 100 * MiB


def test_an_oms_full_counts_its_database_part_as_itself_or_as_its_postgres_view():
    oms = pg_full(content={"members": 3, "bytes": 70 * MiB, "base_bytes": 60 * MiB}, kind="oms")
    assert full_database_bytes(oms) == 60 * MiB
    assert full_database_bytes(component_view(oms, "postgres")) == 60 * MiB


@pytest.mark.parametrize("content", [{}, {"bytes": "many"}, {"bytes": True}, {"bytes": 0}, {"base_bytes": -1}])
def test_a_full_of_unknown_size_is_none(content):
    assert full_database_bytes(pg_full(content=content)) is None


# ---------------------------------------------------------------------------------------------
# The option
# ---------------------------------------------------------------------------------------------
def spec_with(tmp_path, value, kind="postgres"):
    block = {"conn_id": "pg_src"} if value is None else {"conn_id": "pg_src", "max_incremental_fraction": value}
    source = ({"kind": "postgres", **block} if kind == "postgres"
              else {"kind": "oms", "paths": ["/srv/BigData/om-server/conf"], "database": block})
    name = "DBService" if kind == "postgres" else "OMS"
    path = tmp_path / "pgfrac.yaml"
    path.write_text(yaml.safe_dump({
        "name": "pgfrac", "created": "2026-11-24T00:00:00Z", "cluster_version": "3.1.0", "type": "manual",
        "data_path": "/srv/BigData", "sources": {name: {**source, "target": {"type": "LocalDir", "max_backups": 5}}}}))
    return path, name


@pytest.mark.parametrize("kind", ["postgres", "oms"])
@pytest.mark.parametrize(("value", "expected"), [(None, 0.5), (0.25, 0.25), (1, 1.0), (0.001, 0.001)])
def test_max_incremental_fraction_is_read(tmp_path, kind, value, expected):
    path, name = spec_with(tmp_path, value, kind)
    options = load_spec(path).source(name).options
    assert (options.database if kind == "oms" else options).max_incremental_fraction == expected


@pytest.mark.parametrize("kind", ["postgres", "oms"])
@pytest.mark.parametrize(("value", "reason"), [
    (0, "must be more than 0 and at most 1, got 0"), (-0.5, "must be more than 0 and at most 1"),
    (1.5, "must be more than 0 and at most 1, got 1.5"), (".nan", "must be more than 0 and at most 1"),
    ("half", "must be a number"), (True, "must be a number"),
])
def test_a_bad_max_incremental_fraction_is_refused_naming_the_field(tmp_path, kind, value, reason):
    path, name = spec_with(tmp_path, value, kind)
    if value == ".nan":
        path.write_text(path.read_text().replace("'.nan'", ".nan"))
    with pytest.raises(SpecError) as refused:
        load_spec(path)
    field = f"sources.{name}.max_incremental_fraction" if kind == "postgres" else f"sources.{name}.database.max_incremental_fraction"
    assert any(fld == field and reason in why for _, fld, why in refused.value.problems), refused.value.problems


# ---------------------------------------------------------------------------------------------
# The engine's blocker: continuity first, then the size rule on the chain's full (no server)
# ---------------------------------------------------------------------------------------------
def engine(tmp_path, value=None, kind="postgres"):
    path, name = spec_with(tmp_path, value, kind)
    return load_spec(path).source(name).plugin.engine(load_spec(path).source(name), task="pgfrac")


def fake_server(monkeypatch, wal_bytes: int, broken: str | None = None):
    monkeypatch.setattr(PostgresSource, "_continuity", lambda self, parent: (broken, wal_bytes))


def sized(manifest, stored: int):
    return dataclasses.replace(manifest, archive=dataclasses.replace(manifest.archive, size=stored))


def test_the_blocker_applies_the_size_rule_to_a_full_parent(tmp_path, monkeypatch):
    parent = sized(pg_full(content={"members": 3, "bytes": 100 * MiB, "base_bytes": 100 * MiB}), 50 * MiB)
    fake_server(monkeypatch, 60 * MiB)
    assert "max_incremental_fraction 0.5" in engine(tmp_path).incremental_blocker(parent)
    assert engine(tmp_path, 0.75).incremental_blocker(parent) is None
    fake_server(monkeypatch, 40 * MiB)
    assert engine(tmp_path).incremental_blocker(parent) is None


def test_continuity_comes_before_size(tmp_path, monkeypatch):
    fake_server(monkeypatch, 10**12, broken="replication slot x no longer exists")
    assert engine(tmp_path).incremental_blocker(pg_full(content={"base_bytes": MiB})) == "replication slot x no longer exists"


def test_a_full_of_compressible_data_counts_four_times_its_archive(tmp_path, monkeypatch):
    parent = sized(pg_full(content={"members": 3, "bytes": 547 * MiB, "base_bytes": 547 * MiB}), 30 * MiB)
    fake_server(monkeypatch, 59 * MiB)  # more than half the archive, less than half of 4x it
    assert engine(tmp_path).incremental_blocker(parent) is None
    fake_server(monkeypatch, 61 * MiB)
    reason = engine(tmp_path).incremental_blocker(parent)
    assert "(120.0 MiB: 547.0 MiB uncompressed, counted as 4x its 30.0 MiB compressed)" in reason


def test_an_incremental_parent_is_measured_against_its_chains_full_from_the_catalog(tmp_path, monkeypatch):
    from metabackup.catalog import Catalog

    root = sized(pg_full(0, content={"members": 3, "bytes": 300 * MiB, "base_bytes": 200 * MiB}, bridge_segments=6),
                 150 * MiB)
    first = dataclasses.replace(inc(1, 0, source="DBService"), kind="postgres", position=root.position)
    parent = dataclasses.replace(inc(2, 1, source="DBService", chain_root=root.set), kind="postgres",
                                 position=root.position)
    reads = []

    def read(cls, target, task, task_dir, source, timezone=None):
        reads.append((task, task_dir, source))
        return catalog(root, first, parent)

    monkeypatch.setattr(Catalog, "read", classmethod(read))
    fake_server(monkeypatch, 120 * MiB)
    reason = engine(tmp_path).incremental_blocker(parent)
    assert reason and root.set in reason and "(200.0 MiB: uncompressed)" in reason and "are 0.60 of the" in reason
    assert reads == [("pgfrac", parent.task_dir, "DBService")]
    fake_server(monkeypatch, 90 * MiB)
    assert engine(tmp_path).incremental_blocker(parent) is None


def test_an_unreadable_catalog_skips_the_size_rule(tmp_path, monkeypatch):
    from metabackup.catalog import Catalog

    def read(cls, *args, **kwargs):
        raise OSError("target unreachable")

    monkeypatch.setattr(Catalog, "read", classmethod(read))
    fake_server(monkeypatch, 10**12)
    parent = dataclasses.replace(inc(2, 1, source="DBService", chain_root=stem(0, source="DBService")), kind="postgres")
    assert engine(tmp_path).incremental_blocker(parent) is None


def test_the_oms_kind_applies_its_databases_fraction_to_the_database_part(tmp_path, monkeypatch):
    oms_full = dataclasses.replace(sized(pg_full(content={"base_bytes": 100 * MiB}, kind="oms"), 60 * MiB),
                                   source="OMS", set=stem(0, source="OMS"), chain_root=stem(0, source="OMS"))
    fake_server(monkeypatch, 30 * MiB)
    source = engine(tmp_path, 0.2, kind="oms")
    assert isinstance(source, OmsSource)
    assert "max_incremental_fraction 0.2" in source.incremental_blocker(oms_full)
    assert engine(tmp_path, 0.5, kind="oms").incremental_blocker(oms_full) is None
